"""Which flavour of each model is judged, and running it: TFLite flatbuffer or tf_keras SavedModel.

A candidate is judged on its TFLite flavour when it has one (that is what ships to devices),
otherwise on its SavedModel. The baseline is judged as configured (``baseline_flavour``): its own
TFLite flavour, else a float32 conversion of its SavedModel, or the SavedModel itself.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import numpy as np

from components.common import measure, model_io, tflite
from components.common.errors import ModelInputError
from components.common.keys import BASELINE  # noqa: F401 (the Evaluator reads it from here)
from components.common.measure import available_cpus  # noqa: F401 (read from here too)

TFLITE = "tflite"
SAVED_MODEL = "saved_model"
# The batch the TFLite interpreter runs: larger input batches are fed in slices of it, since on
# one CPU thread larger batches run slower per example (the activations no longer fit in the cache).
TFLITE_BATCH = 32
# With several threads the interpreter splits each op across them, and larger slices give every
# thread enough work: on the reference CNN (2 cores) 11.8k examples/s at 1 thread and batch 32,
# 12.3k at 2 threads and batch 32, 17.1k at 2 threads and batch 256.
TFLITE_BATCH_THREADED = 256


@dataclass(frozen=True)
class ModelRef:
    """A model artifact to judge: its report name and URI (plus its ModelProfile, if any)."""

    name: str
    uri: str
    profile_uri: str | None = None
    artifact_id: int | None = None


@dataclass(frozen=True)
class PreparedModel:
    """The flavour of a model that is judged: a flatbuffer file or a SavedModel directory.

    Plain data, so it travels to Beam workers; ``path`` must be readable there (the converted
    baseline flatbuffer is written into the evaluation artifact for that reason).
    """

    name: str
    uri: str
    flavour: str  # TFLITE or SAVED_MODEL
    path: str
    source: str  # "artifact" or "float32 conversion"
    input_shapes: tuple[tuple[int, ...], ...]
    sha256: str


def _read(path: str) -> bytes:
    import tensorflow as tf

    with tf.io.gfile.GFile(path, "rb") as f:
        return f.read()


def _dir_digest(path: str) -> str:
    import tensorflow as tf

    digest = hashlib.sha256()
    for root, _, files in sorted(tf.io.gfile.walk(path)):
        for name in sorted(files):
            full = os.path.join(root, name)
            digest.update(os.path.relpath(full, path).encode())
            digest.update(_read(full))
    return digest.hexdigest()


def prepare(
    ref: ModelRef, flavour: str = "auto", work_dir: str | None = None, batch_size: int | None = 1
) -> PreparedModel:
    """Chooses (and if needed converts) the flavour of ``ref`` to judge and checks it loads.

    Args:
      flavour: ``auto`` (TFLite flavour when present, else SavedModel), ``tflite`` (TFLite
        flavour, else a float32 conversion written to ``work_dir``) or ``saved_model``.
      batch_size: the static batch of that float32 conversion (``data.tflite_batch_size``: the
        candidates' flatbuffers are converted with the same one).
    Raises:
      ModelInputError: the model is missing, unreadable or cannot be converted.
    """
    existing = model_io.tflite_path(ref.uri)
    if flavour in ("auto", TFLITE) and existing:
        data = _read(existing)
        runner = _tflite_runner(data, ref.uri)
        return PreparedModel(
            ref.name,
            ref.uri,
            TFLITE,
            existing,
            "artifact",
            _tflite_shapes(runner),
            hashlib.sha256(data).hexdigest(),
        )
    # Converting needs no Keras; running the SavedModel here does (tf_keras load).
    saved_model_dir = model_io.validate_saved_model(ref.uri, require_keras=flavour != TFLITE)
    if flavour == TFLITE:
        data = tflite.convert_float32(saved_model_dir, batch_size)
        runner = _tflite_runner(data, ref.uri)
        if work_dir is None:
            raise ValueError("work_dir is needed to convert the baseline to TFLite")
        import tensorflow as tf

        tf.io.gfile.makedirs(work_dir)
        path = os.path.join(work_dir, f"{ref.name}_float32.tflite")
        with tf.io.gfile.GFile(path, "wb") as f:
            f.write(data)
        return PreparedModel(
            ref.name,
            ref.uri,
            TFLITE,
            path,
            "float32 conversion",
            _tflite_shapes(runner),
            hashlib.sha256(data).hexdigest(),
        )
    keras_model = model_io.load_keras_model(ref.uri)
    from components.common.examples import input_specs

    shapes = tuple(shape for _, shape in input_specs(keras_model))
    return PreparedModel(
        ref.name,
        ref.uri,
        SAVED_MODEL,
        saved_model_dir,
        "artifact",
        shapes,
        _dir_digest(saved_model_dir),
    )


def has_saved_model(uri: str) -> bool:
    """True when the artifact holds a SavedModel (what TF Serving and the standard Pusher take)."""
    try:
        model_io.serving_model_dir(uri)
        return True
    except ModelInputError:
        return False


def _tflite_runner(data: bytes, uri: str) -> tflite.TFLiteModel:
    try:
        return tflite.TFLiteModel(data)
    except Exception as e:  # noqa: BLE001 - the interpreter raises ValueError/RuntimeError
        raise ModelInputError(f"the TFLite flavour of {uri!r} does not load: {e}") from None


def _tflite_shapes(runner: tflite.TFLiteModel) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(int(d) for d in detail["shape"][1:]) for detail in runner.input_details)


def sizes(model: PreparedModel) -> dict:
    """Raw and gzipped bytes of the judged flavour (flatbuffer file or SavedModel directory)."""
    if model.flavour == TFLITE:
        data = _read(model.path)
        return {"raw_bytes": len(data), "gzip_bytes": measure.gzipped_bytes(data)}
    return {
        "raw_bytes": measure.dir_bytes(model.path),
        "gzip_bytes": measure.gzipped_dir_bytes(model.path),
    }


class Predictor:
    """Runs one prepared model on float input batches; returns the first output as numpy."""

    def __init__(self, model: PreparedModel, num_threads: int = 1):
        self.model = model
        self._per_example = False
        if model.flavour == TFLITE:
            self._runner = tflite.TFLiteModel(_read(model.path), num_threads=num_threads)
            self._slice = TFLITE_BATCH if num_threads <= 1 else TFLITE_BATCH_THREADED
            self._keras = None
        else:
            import tf_keras

            self._runner = None
            self._keras = tf_keras.models.load_model(model.path, compile=False)

    def predict(self, inputs) -> np.ndarray:
        """Predictions for a batch (TFLite: in slices of ``TFLITE_BATCH``, or
        ``TFLITE_BATCH_THREADED`` with several threads; one by one for a flatbuffer frozen to
        batch 1)."""
        if self._keras is not None:
            out = self._keras(inputs, training=False)
            out = out[0] if isinstance(out, list | tuple) else out
            return np.asarray(out, dtype=np.float32)
        if not self._per_example:
            try:
                return self._runner.predict_each(inputs, batch_size=self._slice)
            except (ValueError, RuntimeError):
                # A flatbuffer converted with a fixed batch of 1 cannot be resized.
                self._per_example = True
        return self._runner.predict_each(inputs, batch_size=1)

    def batch1_call(self, inputs):
        """A zero-argument function running one batch-1 inference on ``inputs`` (for timing)."""
        if self._keras is not None:
            import tensorflow as tf

            # The serving signature is what TF Serving runs; Keras call overhead is not shipped.
            from components.common import signatures

            loaded = model_io.load_saved_model(self.model.path)
            fn = loaded.signatures["serving_default"]
            feeder = signatures.serving_feeder(fn, self._keras)
            if feeder is None:  # a custom signature: the model's call is what is timed
                call = tf.function(lambda *xs: self._keras(list(xs) if len(xs) > 1 else xs[0]))
                arrays = inputs if isinstance(inputs, tuple | list) else (inputs,)
                return lambda: call(*arrays)
            feeds = feeder(inputs)
            self._loaded = loaded  # keep the trackable alive while the function is timed
            return lambda: fn(**feeds)
        self._runner.set_inputs(inputs)
        return self._runner.invoke
