"""TFX artifacts for the executor tests, a model-in/model-out executor run as TFX runs it, and the
small seeded models several test files build."""

from __future__ import annotations

import json
import os

from components.common import keys


def artifact(cls, uri):
    """A ``cls`` artifact at ``uri`` (the directory is created)."""
    result = cls()
    result.uri = str(uri)
    os.makedirs(result.uri, exist_ok=True)
    return result


def model_artifact(uri):
    """A standard ``Model`` artifact at ``uri``."""
    from tfx.types import standard_artifacts

    return artifact(standard_artifacts.Model, uri)


def examples_artifact(uri):
    """A standard ``Examples`` artifact at ``uri`` with the train and eval splits."""
    from tfx.types import artifact_utils, standard_artifacts

    examples = artifact(standard_artifacts.Examples, uri)
    examples.split_names = artifact_utils.encode_split_names(["train", "eval"])
    return examples


def _as_json(value) -> str:
    """A config (pydantic model, dict, None or already JSON) as the exec property's JSON string."""
    if isinstance(value, str):
        return value
    if hasattr(value, "model_dump_json"):
        return value.model_dump_json()
    return json.dumps(value or {})


def run_model_step(executor_class, model, examples_uri, out_dir, config, data=None, **exec_props):
    """Runs a model-in/model-out executor as TFX does; returns its output Model artifact.

    ``model`` is a Model artifact or its uri; ``config`` and ``data`` a pydantic config, a dict or
    JSON; ``exec_props`` further exec properties (e.g. ``isolate_failures``).
    """
    if isinstance(model, str | os.PathLike):
        model = model_artifact(model)
    output = model_artifact(out_dir)
    executor_class().Do(
        {keys.MODEL_KEY: [model], keys.EXAMPLES_KEY: [examples_artifact(examples_uri)]},
        {executor_class.OUTPUT_KEY: [output]},
        {"config": _as_json(config), "data_config": _as_json(data), **exec_props},
    )
    return output


def tiny_classifier():
    """A random-weight (seed 1) 64 -> 16 -> 10 tf_keras classifier: seconds to build and convert."""
    import tf_keras

    tf_keras.utils.set_random_seed(1)
    return tf_keras.Sequential(
        [
            tf_keras.layers.Input(shape=(64,), name="image"),
            tf_keras.layers.Dense(16, activation="relu", name="hidden"),
            tf_keras.layers.Dense(10, activation="softmax", name="out"),
        ]
    )


def conv_classifier():
    """A random-weight (seed 3) 8x8x1 -> Conv2D(8) -> Dense(16) -> 10 tf_keras classifier."""
    import tf_keras

    tf_keras.utils.set_random_seed(3)
    layers = tf_keras.layers
    return tf_keras.Sequential(
        [
            layers.Input((8, 8, 1), name="image"),
            layers.Conv2D(8, 3, activation="relu", name="conv"),
            layers.Flatten(name="flatten"),
            layers.Dense(16, activation="relu", name="hidden"),
            layers.Dense(10, activation="softmax", name="out"),
        ]
    )
