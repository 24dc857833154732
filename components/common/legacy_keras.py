"""Keeps TensorFlow on Keras 2 (``tf_keras``): tensorflow-model-optimization rejects Keras 3."""

import os
import sys

ENV_VAR = "TF_USE_LEGACY_KERAS"


def pin() -> None:
    """Sets ``TF_USE_LEGACY_KERAS=1`` for this process and every subprocess it starts.

    TensorFlow reads the variable when ``tf.keras`` is first resolved, so this must run before
    that; our packages call it on import, before any TensorFlow import of ours.
    """
    os.environ[ENV_VAR] = "1"


def check() -> None:
    """Raises if TensorFlow already resolved ``tf.keras`` to Keras 3 in this process."""
    pin()
    tf = sys.modules.get("tensorflow")
    if tf is None:
        return
    keras_module = getattr(tf, "keras", None)
    name = getattr(keras_module, "__name__", "")
    if name and not name.startswith("tf_keras") and "keras.api._v2" not in name:
        version = getattr(keras_module, "__version__", "?")
        if version.startswith("3"):
            raise RuntimeError(
                "TensorFlow was imported with Keras 3 as tf.keras before tfx-optimize could set "
                f"{ENV_VAR}=1. Set {ENV_VAR}=1 in the environment (or import `components` before "
                "tensorflow)."
            )


def skip_autograph_for_tf_keras() -> None:
    """Stops AutoGraph from re-transpiling tf_keras' own code on every first trace (idempotent).

    TensorFlow's AutoGraph leaves the ``keras`` package alone but not ``tf_keras`` (the same code
    under another name), so the first ``fit`` of a process spends 20-30 s converting hundreds of
    Keras internals; with this rule it takes about a second. User layers and the optimisation
    wrappers (tensorflow-model-optimization) are still converted as before.
    """
    from tensorflow.python.autograph.core import config as autograph_config

    rules = autograph_config.CONVERSION_RULES
    if not any(getattr(rule, "_prefix", None) == "tf_keras" for rule in rules):
        autograph_config.CONVERSION_RULES = (autograph_config.DoNotConvert("tf_keras"), *rules)
