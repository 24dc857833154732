"""The tfx-optimize pipeline factory, its config schema, runners and the ``tfxopt`` CLI."""

from components.common import legacy_keras

legacy_keras.pin()
