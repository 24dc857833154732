"""TFX ``Examples`` (gzipped TFRecords of tf.Example under ``Split-<name>/``) to tf.data and numpy.

A :class:`DataConfig` names the label and which features feed which model inputs. Models the
default mapping cannot feed may be served by a user module file exposing
``input_fn(file_paths, batch_size, split) -> tf.data.Dataset`` of ``(features, labels)``, as the
TFX Trainer takes a ``module_file``.
"""

from __future__ import annotations

import importlib.util
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import pydantic

from components.common import tasks as tasks_lib
from components.common.config import StrictModel
from components.common.errors import DataError
from components.common.metrics import Task


class DataConfig(StrictModel):
    """How Examples feed a model."""

    label_key: str = pydantic.Field(
        "label",
        min_length=1,
        description="Feature holding the label: a class id, 0/1 value(s), float target(s) or "
        "one class id per output position.",
    )
    feature_keys: list[str] | None = pydantic.Field(
        None,
        description="Features fed to the model inputs: matched to the inputs by name when they "
        "are the inputs' names, else in the model's input order. Default: the features named "
        "like the inputs, else every feature but the label (one per model input).",
    )
    task: Literal["auto", "multiclass", "binary", "multilabel", "regression", "dense"] = (
        pydantic.Field(
            "auto",
            description="What the model predicts (components/common/metrics.py); auto: "
            "inferred from the model's output and the label feature.",
        )
    )
    train_split: str = pydantic.Field("train", min_length=1)
    eval_split: str = pydantic.Field("eval", min_length=1)
    module_file: str | None = pydantic.Field(
        None,
        description="Python file with input_fn(file_paths, batch_size, split) for custom models, "
        "and/or serving_signatures(model) -> {key: tf.function} rebuilding serving signatures "
        "that wrap the model (as a TFX Trainer module file exports them).",
    )
    image_scale: float | None = pydantic.Field(
        1 / 255,
        gt=0,
        description="Encoded images (a bytes feature of PNG/JPEG/GIF/BMP, e.g. image/encoded, "
        "feeding a float (height, width, channels) input) are decoded and multiplied by this "
        "(default 1/255: pixels in [0, 1]); null: raw 0-255 values. The serving signature that "
        "decodes them is rebuilt with the same decoding.",
    )
    raw_examples: str | None = pydantic.Field(
        None,
        min_length=1,
        description="A TFX pipeline with a Transform: the raw Examples the Transform read "
        "(ExampleGen's output, Split-<eval_split>/), when the Examples given are its "
        "transformed_examples. A serving signature that applies the Transform graph to raw "
        "tf.Examples is verified and timed on these, as TF Serving receives them.",
    )
    transform_graph: str | None = pydantic.Field(
        None,
        min_length=1,
        description="The Transform component's transform_graph output (transform_fn/, "
        "transformed_metadata/): the Transform graph a serving signature that applies one is "
        "rebuilt with. Default: the graph the model's SavedModel embeds (model.tft_layer, as "
        "TFX's templates export it).",
    )
    tflite_batch_size: int | None = pydantic.Field(
        1,
        ge=1,
        le=4096,
        description="The static batch every TFLite flatbuffer is converted with (what a device "
        "runs per call: whole-graph XNNPACK delegation, fused LSTM kernels); null: a dynamic "
        "batch, for devices that batch. An input with a variable dimension stays dynamic, with "
        "the reason recorded.",
    )


@dataclass(frozen=True)
class FeatureInfo:
    """What the first record of a split says about one feature."""

    name: str
    kind: str  # "float", "int64" or "bytes"
    length: int


def split_files(examples_uri: str, split: str) -> list[str]:
    """The record files of one split, sorted; raises DataError when there are none."""
    import tensorflow as tf

    directory = os.path.join(examples_uri, f"Split-{split}")
    if not tf.io.gfile.isdir(directory):
        available = []
        if tf.io.gfile.isdir(examples_uri):
            available = sorted(
                d.rstrip("/")[len("Split-") :]
                for d in tf.io.gfile.listdir(examples_uri)
                if d.startswith("Split-")
            )
        raise DataError(
            f"Examples at {examples_uri!r} have no split {split!r} (no {directory}); "
            f"splits found: {available or 'none'}. Point to a TFX Examples directory with "
            "Split-train/ and Split-eval/, or set data.train_split / data.eval_split."
        )
    files = sorted(
        os.path.join(directory, name)
        for name in tf.io.gfile.listdir(directory)
        if not name.startswith(".")
    )
    files = [f for f in files if tf.io.gfile.stat(f).length > 0]
    if not files:
        raise DataError(f"split {split!r} of Examples at {examples_uri!r} is empty ({directory}).")
    return files


def compression(path: str) -> str:
    """The TFRecord compression of a record file by its name: GZIP for .gz, else none."""
    return "GZIP" if path.endswith(".gz") else ""


def iter_serialized(files: list[str]) -> Iterator[bytes]:
    """Yields serialized tf.Example records from record files, streaming."""
    import tensorflow as tf

    for path in files:
        for record in tf.data.TFRecordDataset(path, compression_type=compression(path)):
            yield record.numpy()


# What a step learns by reading a split (its features, a label sample, its size) is read again by
# the next steps of the same process (each checks the data before it trains): kept here, keyed by
# every record file's path, size and modification time, so a rewritten file is read afresh.
_FACTS_KEPT = 64
_facts: OrderedDict[tuple, object] = OrderedDict()
_facts_lock = threading.Lock()


def _remembered(what: tuple, files: list[str], compute: Callable[[], object]):
    import tensorflow as tf

    stats = tuple((f, st.length, st.mtime_nsec) for f in files for st in [tf.io.gfile.stat(f)])
    key = (*what, stats)
    with _facts_lock:
        if key in _facts:
            _facts.move_to_end(key)
            return _facts[key]
    value = compute()
    with _facts_lock:
        _facts[key] = value
        while len(_facts) > _FACTS_KEPT:
            _facts.popitem(last=False)
    return value


def inspect_features(files: list[str]) -> dict[str, FeatureInfo]:
    """Reads the first record of a split and describes its features."""
    return dict(_remembered(("features",), files, lambda: _inspect_features(files)))


def _inspect_features(files: list[str]) -> dict[str, FeatureInfo]:
    import tensorflow as tf

    first = next(iter_serialized(files), None)
    if first is None:
        raise DataError(f"no records in {files[0]!r} and the other files of its split.")
    example = tf.train.Example.FromString(first)
    infos = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        if kind is None:
            raise DataError(f"feature {name!r} of the first example holds no values.")
        kind_name = {"float_list": "float", "int64_list": "int64", "bytes_list": "bytes"}[kind]
        infos[name] = FeatureInfo(name, kind_name, len(getattr(feature, kind).value))
    return infos


def input_specs(model) -> list[tuple[str, tuple[int, ...]]]:
    """(name, per-example shape) of each model input, in the model's order."""
    from components.common.conversion import input_names

    return [
        (name, tuple(int(d) if d is not None else -1 for d in tensor.shape[1:]))
        for name, tensor in zip(input_names(model), model.inputs, strict=True)
    ]


def is_image_input(kind: str, dtype: str, shape) -> bool:
    """A bytes feature feeding a numeric (height, width, channels) input: encoded images."""
    return kind == "bytes" and dtype != "string" and len(shape) == 3 and shape[-1] in (1, 3, 4)


def decode_images(encoded, shape, dtype, scale: float | None):
    """Encoded images (a string tensor, one per example) -> a batch of ``shape`` pixels in
    ``dtype``, multiplied by ``scale`` (TensorFlow ops: tf.data maps, serving signatures)."""
    import tensorflow as tf

    height, width, channels = (int(d) for d in shape)

    def one(data):
        image = tf.io.decode_image(data, channels=channels, expand_animations=False)
        return tf.ensure_shape(image, [height, width, channels])

    images = tf.map_fn(one, tf.reshape(encoded, [-1]), fn_output_signature=tf.uint8)
    images = tf.cast(images, dtype)
    return images * tf.cast(scale, dtype) if scale is not None else images


def input_dtypes(model) -> list[str]:
    """The dtype name of each model input (float32, int64, int32, string, ...), in order."""
    return [tensor.dtype.name for tensor in model.inputs]


@dataclass(frozen=True)
class FeatureMapping:
    """Resolved mapping: which feature feeds which model input, with what shape; the label."""

    label_key: str
    feature_keys: tuple[str, ...]
    input_shapes: tuple[tuple[int, ...], ...]
    infos: dict
    task: Task
    label_kind: str = "int64"
    label_length: int = 1
    matched_by: str = "order"  # "name" or "order"
    input_dtypes: tuple[str, ...] = ()  # each input's dtype (default: float32)
    image_scale: float | None = 1 / 255  # encoded images: decoded pixels times this
    transform_graph: str | None = None  # raw Examples: transformed by this graph first

    def parse_fn(self):
        """A tf function turning a serialized batch into (inputs, labels): each input in the
        model input's own dtype (int64 token ids stay integers, strings stay strings)."""
        import tensorflow as tf

        dtypes = {"float": tf.float32, "int64": tf.int64, "bytes": tf.string}
        cast_to = [tf.as_dtype(d) for d in self.input_dtypes] or [tf.float32] * len(
            self.feature_keys
        )
        spec = {
            key: tf.io.FixedLenFeature([self.infos[key].length], dtypes[self.infos[key].kind])
            for key in self.feature_keys
        }
        spec[self.label_key] = tf.io.FixedLenFeature([self.label_length], dtypes[self.label_kind])
        label_dtype = tf.float32 if self.task.float_labels else tf.int64
        label_shape = [-1, *self.task.label_shape]
        transform = None
        if self.transform_graph:
            from components.common import transform as transform_lib

            spec, transform = transform_lib.raw_parser(self.transform_graph)

        def parse(serialized):
            parsed = tf.io.parse_example(serialized, spec)
            if transform is not None:
                parsed = transform(parsed)
            inputs = [
                decode_images(parsed[key], shape, dtype, self.image_scale)
                if is_image_input(self.infos[key].kind, dtype.name, shape)
                else tf.reshape(
                    parsed[key] if dtype == tf.string else tf.cast(parsed[key], dtype),
                    [-1, *shape],
                )
                for key, shape, dtype in zip(
                    self.feature_keys, self.input_shapes, cast_to, strict=True
                )
            ]
            labels = tf.reshape(tf.cast(parsed[self.label_key], label_dtype), label_shape)
            return (inputs[0] if len(inputs) == 1 else tuple(inputs)), labels

        return parse


# Label values read at preflight to tell 0/1 labels from class ids and targets.
LABEL_SAMPLE = 256


def label_sample(files: list[str], key: str, limit: int = LABEL_SAMPLE) -> list[float]:
    """Values of the label feature in the first ``limit`` records (streamed)."""
    values = _remembered(("labels", key, limit), files, lambda: _label_sample(files, key, limit))
    return list(values)


def _label_sample(files: list[str], key: str, limit: int) -> tuple[float, ...]:
    import tensorflow as tf

    values: list[float] = []
    for i, record in enumerate(iter_serialized(files)):
        if i >= limit:
            break
        feature = tf.train.Example.FromString(record).features.feature.get(key)
        kind = feature.WhichOneof("kind") if feature is not None else None
        if kind in ("int64_list", "float_list"):
            values.extend(getattr(feature, kind).value)
    return tuple(values)


def _label_info(files: list[str], key: str, infos: dict) -> tasks_lib.LabelInfo:
    info = infos[key]
    values = label_sample(files, key) if info.kind != "bytes" else []
    return tasks_lib.label_info(key, info.kind, info.length, values)


def _describe_features(infos: dict, keys) -> str:
    return ", ".join(f"{k} ({infos[k].length} {infos[k].kind})" for k in keys)


def _describe_inputs(shapes) -> str:
    return ", ".join(f"{name} {shape}" for name, shape in shapes)


def match_features(data: DataConfig, infos: dict, shapes) -> tuple[list[str], str]:
    """The feature feeding each model input, in input order, and how they matched.

    By name when the features (data.feature_keys, or the Examples' features) include every
    input's name; otherwise by order (data.feature_keys, or every feature but the label, sorted).

    Raises:
      DataError: listing both sides when neither works.
    """
    names = [name for name, _ in shapes]
    candidates = data.feature_keys if data.feature_keys is not None else list(infos)
    if set(names) <= set(candidates) - {data.label_key} and (
        data.feature_keys is None or len(data.feature_keys) == len(names)
    ):
        return names, "name"
    keys = list(data.feature_keys or [k for k in sorted(infos) if k != data.label_key])
    missing = [k for k in keys if k not in infos]
    if missing:
        raise DataError(
            f"data.feature_keys names {missing}, not features of the Examples (features: "
            f"{_describe_features(infos, sorted(infos))})."
        )
    if len(keys) != len(shapes):
        raise DataError(
            f"the model's {len(shapes)} input(s) [{_describe_inputs(shapes)}] cannot be fed from "
            f"the feature(s) {keys} (the Examples hold [{_describe_features(infos, sorted(infos))}"
            "]): no feature is named like each input, and the counts differ for matching by order. Name the features like the "
            "inputs, set data.feature_keys (one per model input, in order) or data.module_file "
            "with an input_fn."
        )
    return keys, "order"


def _check_feature(
    key: str, info, input_name: str, shape, infos, shapes, matched_by: str, dtype: str = "float32"
):
    if is_image_input(info.kind, dtype, shape):
        if info.length != 1:
            raise DataError(
                f"feature {key!r} holds {info.length} byte strings per example; an encoded image "
                f"feeding model input {input_name!r} {shape} is one PNG/JPEG per example."
            )
        return
    if (info.kind == "bytes") != (dtype == "string"):
        if info.kind == "bytes":
            raise DataError(
                f"feature {key!r} holds bytes but model input {input_name!r} takes {dtype} "
                f"{shape}; the default input mapping decodes bytes as images only for a "
                "(height, width, channels) input with 1, 3 or 4 channels, and feeds other bytes "
                "to string inputs only. Provide data.module_file with an input_fn."
            )
        raise DataError(
            f"model input {input_name!r} takes strings but feature {key!r} holds {info.kind} "
            "values. Feed it a bytes feature (set data.feature_keys) or provide "
            "data.module_file with an input_fn."
        )
    if -1 in shape:
        raise DataError(
            f"model input {input_name!r} has an unknown dimension {shape}; the default "
            "mapping needs a fixed input shape. Provide data.module_file with an input_fn."
        )
    if math.prod(shape) != info.length:
        raise DataError(
            f"feature {key!r} has {info.length} values per example but model input "
            f"{input_name!r} expects shape {shape} ({math.prod(shape)} values); features were "
            f"matched to inputs by {matched_by}. Model inputs: [{_describe_inputs(shapes)}]; "
            f"features: [{_describe_features(infos, sorted(infos))}]. Name the features like "
            "the inputs or set data.feature_keys in the inputs' order."
        )


def resolve_mapping(examples_uri: str, split: str, data: DataConfig, model) -> FeatureMapping:
    """Checks the Examples against the data config and the model; raises DataError naming the problem.

    Also settles the task (data.task, or inferred from the model's output and the label).
    """
    files = split_files(examples_uri, split)
    infos = inspect_features(files)
    transform_graph = None
    if data.transform_graph and not {name for name, _ in input_specs(model)} <= set(infos):
        # Raw Examples: the model takes what the Transform graph writes from them.
        from components.common import transform as transform_lib

        transform_graph = data.transform_graph
        written = transform_lib.transformed_features(transform_graph)
        infos = {
            **infos,
            **{k: FeatureInfo(k, kind, n) for k, (kind, n) in written.items()},
        }
    if data.label_key not in infos:
        raise DataError(
            f"label key {data.label_key!r} is not a feature of the Examples at {examples_uri!r} "
            f"(features: {sorted(infos)}). Set data.label_key to the feature holding the label."
        )
    label = infos[data.label_key]
    task = tasks_lib.infer(model, _label_info(files, data.label_key, infos), data.task)
    shapes = input_specs(model)
    dtypes = input_dtypes(model)
    try:
        keys, matched_by = match_features(data, infos, shapes)
        for key, (input_name, shape), dtype in zip(keys, shapes, dtypes, strict=True):
            _check_feature(key, infos[key], input_name, shape, infos, shapes, matched_by, dtype)
    except DataError as e:
        if data.transform_graph or data.feature_keys or any(n in infos for n, _ in shapes):
            raise
        raise DataError(
            f"{e} If these are the raw Examples of a model trained on a TFX Transform's output, "
            "set data.transform_graph to the Transform's transform_graph output (or pass its "
            "transformed_examples)."
        ) from None
    return FeatureMapping(
        data.label_key,
        tuple(keys),
        tuple(s for _, s in shapes),
        {k: infos[k] for k in keys},
        task,
        label.kind,
        label.length,
        matched_by,
        tuple(dtypes),
        data.image_scale,
        transform_graph,
    )


def resolve_task(examples_uri: str, data: DataConfig, model) -> Task:
    """The task of ``model`` on these Examples (train split); with a module_file input_fn and no
    label feature, from the model (and data.task) alone."""
    files = split_files(examples_uri, data.train_split)
    infos = inspect_features(files)
    if data.label_key not in infos:
        if data.module_file:
            return tasks_lib.infer(model, None, data.task)
        return resolve_mapping(examples_uri, data.train_split, data, model).task  # raises
    return tasks_lib.infer(model, _label_info(files, data.label_key, infos), data.task)


def _load_module_input_fn(module_file: str):
    if not os.path.isfile(module_file):
        raise DataError(f"data.module_file {module_file!r} does not exist.")
    spec = importlib.util.spec_from_file_location("tfxopt_user_module", module_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fn = getattr(module, "input_fn", None)
    if fn is None:
        raise DataError(
            f"data.module_file {module_file!r} defines no input_fn(file_paths, batch_size, split)."
        )
    return fn


def make_dataset(
    examples_uri: str,
    split: str,
    data: DataConfig,
    model,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    limit: int | None = None,
):
    """A batched tf.data.Dataset of (inputs, labels) for ``model`` from one split, streamed from disk."""
    import tensorflow as tf

    files = split_files(examples_uri, split)
    if data.module_file:
        dataset = _load_module_input_fn(data.module_file)(files, batch_size, split)
        return dataset.take(math.ceil(limit / batch_size)) if limit else dataset
    mapping = resolve_mapping(examples_uri, split, data, model)
    dataset = tf.data.TFRecordDataset(files, compression_type=compression(files[0]))
    if limit:
        dataset = dataset.take(limit)
    if shuffle:
        dataset = dataset.shuffle(10_000, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size).map(mapping.parse_fn()).prefetch(tf.data.AUTOTUNE)
    # Across workers (multi_worker_mirrored) each takes every N-th batch of the same seeded order:
    # sharding by file fails when a split has fewer files than workers, as TFX splits often do.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def load_arrays(examples_uri: str, split: str, data: DataConfig, model, limit: int | None = None):
    """The split as numpy (inputs, labels); for small splits and calibration samples only."""
    import numpy as np

    xs, ys = [], []
    for x, y in make_dataset(examples_uri, split, data, model, batch_size=256, limit=limit):
        xs.append(x.numpy() if not isinstance(x, tuple) else tuple(t.numpy() for t in x))
        ys.append(y.numpy())
    if not ys:
        raise DataError(f"split {split!r} of Examples at {examples_uri!r} has no examples.")
    if isinstance(xs[0], tuple):
        inputs = tuple(np.concatenate([b[i] for b in xs]) for i in range(len(xs[0])))
    else:
        inputs = np.concatenate(xs)
    return inputs, np.concatenate(ys)


def count_examples(examples_uri: str, split: str, limit: int | None = None) -> int:
    """Number of records in a split, or ``limit`` when it holds more (counted in TensorFlow)."""
    files = split_files(examples_uri, split)
    return _remembered(("count", limit), files, lambda: _count_records(files, limit))


def _count_records(files: list[str], limit: int | None) -> int:
    import numpy as np
    import tensorflow as tf

    count = 0
    for path in files:
        dataset = tf.data.TFRecordDataset(path, compression_type=compression(path))
        if limit is not None:
            dataset = dataset.take(limit - count)
        count += int(dataset.reduce(np.int64(0), lambda n, _: n + 1))
        if limit is not None and count >= limit:
            break
    return count
