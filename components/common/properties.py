"""Writing key numbers as artifact custom properties, so MLMD and the KFP UI show them."""

from __future__ import annotations

import json
import math
import os


def set_properties(artifact, values: dict) -> None:
    """Sets int, float and string custom properties; None and NaN values are left out."""
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool):
            artifact.set_int_custom_property(key, int(value))
        elif isinstance(value, int):
            artifact.set_int_custom_property(key, value)
        elif isinstance(value, float):
            if math.isnan(value):
                continue
            artifact.set_float_custom_property(key, value)
        elif isinstance(value, str):
            artifact.set_string_custom_property(key, value)
        else:
            artifact.set_string_custom_property(key, json.dumps(value, sort_keys=True))


def write_json(directory: str, name: str, record: dict) -> str:
    """Writes ``record`` as pretty JSON into an artifact directory; returns the path."""
    import tensorflow as tf

    tf.io.gfile.makedirs(directory)
    path = os.path.join(directory, name)
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(json.dumps(record, indent=2, sort_keys=True, default=_default))
    return path


def read_json(directory: str, name: str) -> dict:
    import tensorflow as tf

    with tf.io.gfile.GFile(os.path.join(directory, name)) as f:
        return json.load(f)


def _default(value):
    import numpy as np

    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
