"""The TFLite file an OTA channel ships: the artifact's own, or a float32 conversion."""

from __future__ import annotations

import os
import tempfile

from components.common.errors import ConfigError
from components.common.keys import TFLITE_FILE
from components.pusher import storage


def resolve_tflite(model_uri: str, missing_tflite: str) -> tuple[str, str, str | None]:
    """The TFLite file to ship for a model artifact.

    Returns:
      (path, how: "artifact" | "converted_float32", temporary directory to remove or None).
    Raises:
      ConfigError: when the model has no TFLite flavour and ``missing_tflite`` is "refuse".
    """
    from components.common import model_io

    path = model_io.tflite_path(model_uri)
    if path:
        return path, "artifact", None
    if missing_tflite == "refuse":
        raise ConfigError(
            f"ota: the model at {model_uri!r} has no {model_io.TFLITE_DIR}/{model_io.TFLITE_FILE} "
            "and missing_tflite is 'refuse': add a Quantizer/converter step before the Pusher or "
            "set missing_tflite: convert_float32."
        )
    from components.common import tflite

    flatbuffer = tflite.convert_float32(model_io.serving_model_dir(model_uri))
    tmp = tempfile.mkdtemp(prefix="tfxopt-ota-")
    out = os.path.join(tmp, TFLITE_FILE)
    with open(out, "wb") as f:
        f.write(flatbuffer)
    return out, "converted_float32", tmp


def input_plan(tflite_path: str) -> dict | None:
    """What the flatbuffer's inputs were fixed to (static batch, names, shapes, dtypes) and
    whether the caller must reset its state tensors before each call: what a device app needs to
    call it, published in the manifest. None for a file the interpreter cannot read (the channel
    ships bytes; the gate, not the pusher, judges a model)."""
    from components.common import conversion

    with storage.open_read(tflite_path) as f:
        data = f.read()
    try:
        return conversion.flatbuffer_plan(data)
    except Exception:  # noqa: BLE001 - any unreadable file: no plan to publish
        return None
