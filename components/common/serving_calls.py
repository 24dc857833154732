"""Calling serving signatures: the serialized examples they are verified and timed on, feeds
built from model inputs, and their outputs compared (:mod:`components.common.signatures`)."""

from __future__ import annotations

import numpy as np

from components.common.errors import ModelInputError

# Signatures the wrapper check and the candidate check call (serialized eval examples).
VERIFY_EXAMPLES = 32


def _eval_records(examples_uri: str, data, limit: int = VERIFY_EXAMPLES) -> list[bytes]:
    from components.common import examples as examples_lib

    files = examples_lib.split_files(examples_uri, data.eval_split)
    return [r for _, r in zip(range(limit), examples_lib.iter_serialized(files), strict=False)]


def serving_records(examples_uri: str, data, limit: int = VERIFY_EXAMPLES) -> list[bytes]:
    """Serialized eval examples as TF Serving receives them: from ``data.raw_examples`` (the raw
    Examples a Transform read) when it is set, else from the Examples."""
    return _eval_records(data.raw_examples or examples_uri, data, limit)


def _outputs(function, feeds: dict, key: str = "serving_default") -> dict:
    """A signature's outputs on the feeds, as numpy.

    Raises:
      ModelInputError: the signature fails on the eval examples (they are not what it parses).
    """
    import tensorflow as tf

    try:
        result = function(**feeds)
    except (tf.errors.InvalidArgumentError, ValueError, TypeError) as e:
        first = " ".join(str(e).split())[:300]
        raise ModelInputError(
            f"serving signature {key!r} fails on the eval examples ({first}). The Examples must "
            "hold the features the signature parses (raw tf.Examples as TF Serving receives "
            "them), or define serving_signatures(model) in data.module_file."
        ) from None
    return {k: np.asarray(v) for k, v in result.items()}


def _layout(outputs: dict) -> str:
    return ", ".join(f"{k}: {v.dtype} {list(v.shape)}" for k, v in sorted(outputs.items()))


def _compare(expected: dict, got: dict) -> float | None:
    """Max abs difference, or None when the keys, dtypes or shapes differ."""
    if sorted(expected) != sorted(got):
        return None
    diff = 0.0
    for key, value in expected.items():
        other = got[key]
        if value.dtype != other.dtype or value.shape != other.shape:
            return None
        if np.issubdtype(value.dtype, np.number):
            diff = (
                max(diff, float(np.max(np.abs(value.astype(np.float64) - other))))
                if value.size
                else diff
            )
        elif not np.array_equal(value, other):
            return float("inf")
    return diff


def _scale(outputs: dict) -> float:
    values = [
        float(np.max(np.abs(v)))
        for v in outputs.values()
        if v.size and np.issubdtype(v.dtype, np.number)
    ]
    return max(values, default=1.0)


def serialize_inputs(model, spec: dict, arrays, image_scale: float | None = 1 / 255) -> list[bytes]:
    """Serialized tf.Examples carrying model inputs under the features a parse signature reads
    (by input name, or the one feature for the one input; pixels of an image input as PNG):
    what a TF Serving client sends."""
    import tensorflow as tf

    from components.common.serving_specs import model_inputs as _model_inputs

    arrays = arrays if isinstance(arrays, tuple | list) else (arrays,)
    inputs = _model_inputs(model)
    keys = [t.name for t in inputs] if all(t.name in spec for t in inputs) else list(spec)
    records = []
    for i in range(int(arrays[0].shape[0])):
        feature = {}
        for key, array in zip(keys, arrays, strict=True):
            values = np.asarray(array[i]).reshape(-1)
            dtype = spec[key][0]
            if dtype == "string" and np.asarray(array).ndim == 4:  # pixels of an encoded image
                pixels = np.asarray(array[i]) / (image_scale or 1.0)
                png = tf.io.encode_png(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))
                feature[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[png.numpy()]))
            elif dtype == "string":
                feature[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))
            elif dtype.startswith("int"):
                feature[key] = tf.train.Feature(
                    int64_list=tf.train.Int64List(value=values.astype(np.int64).tolist())
                )
            else:
                feature[key] = tf.train.Feature(
                    float_list=tf.train.FloatList(value=values.astype(np.float32).tolist())
                )
        example = tf.train.Example(features=tf.train.Features(feature=feature))
        records.append(example.SerializeToString())
    return records


def serving_feeder(
    function, model, image_scale: float | None = 1 / 255, raw_records: list | None = None
):
    """How to feed a loaded serving signature model inputs (numpy arrays, batch first):
    ``feeds(arrays) -> {input name: tensor}``. A signature that takes serialized tf.Examples gets
    them built from the arrays (its parse spec read from its graph), or, when the model's inputs
    are not what it parses (a Transform in between), as many of ``raw_records`` as the batch
    holds (cycled). None when neither works."""
    import tensorflow as tf

    from components.common.serving_specs import model_inputs as _model_inputs
    from components.common.serving_specs import read_parse_spec
    from components.common.serving_specs import spec_problem as _spec_problem

    _, kwargs = function.structured_input_signature
    names = list(kwargs)
    model_names = [t.name for t in _model_inputs(model)]
    string_input = len(kwargs) == 1 and next(iter(kwargs.values())).dtype == tf.string
    if string_input and not (len(model_names) == 1 and model.inputs[0].dtype == tf.string):
        spec = read_parse_spec(function)
        (name,) = names
        if spec is None or _spec_problem(spec, model) is not None:
            if not raw_records:
                return None

            def feeds_raw(arrays):
                arrays = arrays if isinstance(arrays, tuple | list) else (arrays,)
                n = int(arrays[0].shape[0])
                picked = [raw_records[i % len(raw_records)] for i in range(n)]
                return {name: tf.constant(picked)}

            return feeds_raw

        def feeds_examples(arrays):
            return {name: tf.constant(serialize_inputs(model, spec, arrays, image_scale))}

        return feeds_examples
    ordered = [n for n in model_names if n in kwargs] or names

    def feeds(arrays):
        arrays = arrays if isinstance(arrays, tuple | list) else (arrays,)
        return {n: tf.constant(a) for n, a in zip(ordered, arrays, strict=True)}

    return feeds
