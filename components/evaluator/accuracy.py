"""Accuracy of the baseline and every candidate on the eval split, as an Apache Beam pipeline.

The split's record files are spread over the workers; TensorFlow reads and parses each in batches
(one Beam element per batch) for one DoFn that loads every model once per worker (``setup``) and
runs each batch through all of them, so each example's outcomes for all models sit in one batch
element: pairing baseline and candidate per example needs no shuffle. Outcomes travel as columns
(one array per field and model, per batch) and are combined with numpy into per-model sums and
paired 2x2 tables (what the paired confidence intervals need) and, when asked, written out as one
JSON line of columns per batch, each example keyed by a digest of its serialized bytes (the
outcomes, sums and JSON lines themselves: :mod:`components.evaluator.outcomes`).
The same code runs on the DirectRunner here and on Dataflow, Flink or Spark
through ``beam_pipeline_args``; model paths must then be readable by the workers.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from components.common import examples as examples_lib
from components.common import metrics as metrics_lib
from components.common.errors import DataError
from components.common.examples import DataConfig
from components.evaluator import outcomes as outcomes_lib
from components.evaluator.models import BASELINE, PreparedModel
from components.evaluator.outcomes import (
    AccuracySettings,
    add_batch,
    batch_to_json,
    example_key,
    finalize,
    merge,
    rows_of_batch,
)

METRICS_FILE = "accuracy_metrics.json"
PER_EXAMPLE_DIR = "per_example"
DEFAULT_BEAM_ARGS = ("--direct_running_mode=in_memory", "--direct_num_workers=1")
# Worker processes on one machine, as a distributed runner's workers (pickled DoFns, own setup).
PARALLEL_BEAM_ARGS = ("--direct_running_mode=multi_processing", "--direct_num_workers=2")
DEFAULT_BATCH_SIZE = 256


@dataclass(frozen=True)
class EvalInputs:
    """How serialized eval examples become model inputs and labels (plain data, picklable)."""

    label_key: str
    label_kind: str  # "int64" or "float"
    feature_keys: tuple[str, ...]
    feature_kinds: tuple[str, ...]
    feature_lengths: tuple[int, ...]
    input_shapes: tuple[tuple[int, ...], ...]
    label_length: int = 1
    input_dtypes: tuple[str, ...] = ()  # each model input's dtype (default: float32)
    image_scale: float | None = 1 / 255  # encoded images: decoded pixels times this
    transform_graph: str | None = None  # raw examples: transformed by this graph first


def resolve_inputs(
    examples_uri: str,
    split: str,
    data: DataConfig,
    input_shapes: tuple[tuple[int, ...], ...],
    task: str,
) -> EvalInputs:
    """Checks the eval split against the data config and the models' input shapes.

    Raises:
      DataError: naming the split, key or shape that does not fit.
    """
    if data.module_file:
        raise DataError(
            "data.module_file: the Evaluator streams serialized examples through Beam and feeds "
            "them with the default feature mapping; a module_file input_fn is not supported here. "
            "Use data.feature_keys (one numeric feature per model input) instead."
        )
    files = examples_lib.split_files(examples_uri, split)
    infos = examples_lib.inspect_features(files)
    if data.label_key not in infos:
        raise DataError(
            f"label key {data.label_key!r} is not a feature of the Examples at {examples_uri!r} "
            f"(features: {sorted(infos)}). Set data.label_key."
        )
    label = infos[data.label_key]
    allowed = ("int64",) if task == "classification" else ("int64", "float")
    if label.kind not in allowed or label.length != 1:
        what = "class id (int64)" if task == "classification" else "number (int64 or float)"
        raise DataError(
            f"label {data.label_key!r} must be a single {what} per example, found "
            f"{label.length} {label.kind} value(s)."
        )
    # No Keras model here (a TFLite-only baseline): its inputs have no names to match, so the
    # shared rule falls back to feature order (data.feature_keys, or all but the label, sorted).
    keys, _ = examples_lib.match_features(
        data, infos, [(f"input {i}", shape) for i, shape in enumerate(input_shapes)]
    )
    for key, shape in zip(keys, input_shapes, strict=True):
        info = infos[key]
        if info.kind == "bytes":
            raise DataError(f"feature {key!r} holds bytes; the Evaluator feeds numeric features.")
        if any(d < 0 for d in shape) or math.prod(shape) != info.length:
            raise DataError(
                f"feature {key!r} has {info.length} values per example but the model input "
                f"expects shape {shape}. Check data.feature_keys or the model."
            )
    return EvalInputs(
        data.label_key,
        label.kind,
        tuple(keys),
        tuple(infos[k].kind for k in keys),
        tuple(infos[k].length for k in keys),
        tuple(input_shapes),
    )


def inputs_from_mapping(mapping: examples_lib.FeatureMapping) -> EvalInputs:
    """EvalInputs from a mapping resolved against the baseline Keras model (features by name)."""
    keys = mapping.feature_keys
    return EvalInputs(
        mapping.label_key,
        mapping.label_kind,
        tuple(keys),
        tuple(mapping.infos[k].kind for k in keys),
        tuple(mapping.infos[k].length for k in keys),
        tuple(mapping.input_shapes),
        mapping.label_length,
        tuple(mapping.input_dtypes),
        mapping.image_scale,
        mapping.transform_graph,
    )


def _feature_spec(inputs: EvalInputs) -> dict:
    import tensorflow as tf

    dtypes = {"float": tf.float32, "int64": tf.int64, "bytes": tf.string}
    spec = {
        key: tf.io.FixedLenFeature([length], dtypes[kind])
        for key, kind, length in zip(
            inputs.feature_keys, inputs.feature_kinds, inputs.feature_lengths, strict=True
        )
    }
    spec[inputs.label_key] = tf.io.FixedLenFeature([inputs.label_length], dtypes[inputs.label_kind])
    return spec


def _parser(inputs: EvalInputs):
    """serialized examples (a string tensor) -> parsed features (with the Transform graph
    applied to raw examples when there is one)."""
    import tensorflow as tf

    if inputs.transform_graph:
        from components.common import transform as transform_lib

        spec, apply = transform_lib.raw_parser(inputs.transform_graph)
        return lambda serialized: apply(tf.io.parse_example(serialized, spec))
    spec = _feature_spec(inputs)
    return lambda serialized: tf.io.parse_example(serialized, spec)


def _decode(inputs: EvalInputs, parsed: dict) -> dict:
    """Parsed features with encoded images decoded (TensorFlow ops, in the tf.data map)."""
    dtypes = inputs.input_dtypes or ("float32",) * len(inputs.feature_keys)
    decoded = dict(parsed)
    for key, kind, shape, dtype in zip(
        inputs.feature_keys, inputs.feature_kinds, inputs.input_shapes, dtypes, strict=True
    ):
        if examples_lib.is_image_input(kind, dtype, shape):
            decoded[key] = examples_lib.decode_images(parsed[key], shape, dtype, inputs.image_scale)
    return decoded


def _to_arrays(inputs: EvalInputs, parsed: dict) -> tuple:
    """Parsed feature tensors -> (model inputs in their dtypes as numpy, labels as numpy)."""
    dtypes = inputs.input_dtypes or ("float32",) * len(inputs.feature_keys)
    arrays = tuple(
        np.asarray(parsed[key], dtype=object if dtype == "string" else dtype).reshape([-1, *shape])
        for key, shape, dtype in zip(inputs.feature_keys, inputs.input_shapes, dtypes, strict=True)
    )
    labels = np.asarray(parsed[inputs.label_key])
    labels = labels.reshape([-1]) if inputs.label_length == 1 else labels
    return (arrays[0] if len(arrays) == 1 else arrays), labels


def make_parser(inputs: EvalInputs) -> Callable[[list[bytes]], tuple]:
    """A function: serialized examples -> (model inputs as numpy, labels as numpy)."""
    import tensorflow as tf

    parse_batch = _parser(inputs)

    def parse(serialized: list[bytes]):
        parsed = _decode(inputs, parse_batch(tf.constant(serialized)))
        return _to_arrays(inputs, {key: value.numpy() for key, value in parsed.items()})

    return parse


def read_batches(path: str, batch_size: int, inputs: EvalInputs):
    """Yields ``(serialized examples, model inputs, labels)`` of one TFRecord file, per batch.

    TensorFlow reads (decompression, framing, checksums) and parses with the feature spec once
    per batch, in tf.data's own threads and a batch ahead, so this overlaps the models' work
    on the previous batch; any ``tf.io.gfile`` filesystem.
    """
    import tensorflow as tf

    parse = _parser(inputs)
    dataset = tf.data.TFRecordDataset(path, compression_type=examples_lib.compression(path))
    dataset = dataset.batch(batch_size).map(
        lambda serialized: (serialized, _decode(inputs, parse(serialized))),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    for serialized, parsed in dataset.prefetch(2).as_numpy_iterator():
        x, labels = _to_arrays(inputs, parsed)
        yield list(serialized), x, labels


def _beam_transforms():
    """Beam classes, defined lazily so importing this module does not import Beam."""
    import apache_beam as beam

    class ReadBatchesFn(beam.DoFn):
        """A record file -> (serialized, inputs, labels) per batch (one element per batch)."""

        def __init__(self, batch_size: int, inputs: EvalInputs):
            self._batch_size = batch_size
            self._inputs = inputs

        def setup(self):
            import components  # noqa: F401 - pins tf_keras on the worker before TF loads

        def process(self, path):
            yield from read_batches(path, self._batch_size, self._inputs)

    class PredictFn(beam.DoFn):
        """Runs every model on a batch of serialized examples; one element per batch.

        Parsing and inference are per batch, and so are the outcomes: each model's per-example
        outcomes (what the paired intervals need) travel as columns, one array per field, so
        Beam's per-element cost and the sums' cost are paid once per batch, not per example.
        """

        def __init__(self, models, inputs: EvalInputs, settings: AccuracySettings):
            self._models = list(models)
            self._inputs = inputs
            self._settings = settings

        def setup(self):
            import components  # noqa: F401 - pins tf_keras on the worker before TF loads
            from components.evaluator.models import Predictor, available_cpus

            threads = self._settings.num_threads or available_cpus()

            self._predictors = {}
            self._load_errors = {}
            for model in self._models:
                try:
                    self._predictors[model.name] = Predictor(model, num_threads=threads)
                except Exception as e:  # noqa: BLE001 - reported per model, fails it closed
                    self._load_errors[model.name] = f"does not load: {e}"[:300]

        def _columns(self, model, x, labels) -> dict:
            if model.name in self._load_errors:
                return {"error": self._load_errors[model.name]}
            try:
                preds = self._predictors[model.name].predict(x)
                return outcomes_lib.outcome_columns(preds, labels, self._settings)
            except Exception as e:  # noqa: BLE001 - recorded per model: it fails closed
                return {"error": f"{type(e).__name__}: {e}"[:300]}

        def process(self, element):
            batch, x, labels = element
            yield {
                "keys": [example_key(serialized) for serialized in batch],
                "labels": labels,
                "outcomes": {m.name: self._columns(m, x, labels) for m in self._models},
            }

    class SumsFn(beam.CombineFn):
        """Per-model sums and paired tables over batches of outcome columns."""

        def create_accumulator(self):
            return {"examples": 0, "models": {}, "paired": {}}

        def add_input(self, accumulator, batch):
            return add_batch(accumulator, batch)

        def merge_accumulators(self, accumulators):
            return merge(accumulators)

        def extract_output(self, accumulator):
            return accumulator

    return beam, ReadBatchesFn, PredictFn, SumsFn


def run_accuracy(
    models: list[PreparedModel],
    examples_uri: str,
    split: str,
    inputs: EvalInputs,
    settings: AccuracySettings,
    output_dir: str,
    batch_size: int = DEFAULT_BATCH_SIZE,
    write_per_example: bool = True,
    make_pipeline: Callable | None = None,
    beam_pipeline_args: list[str] | None = None,
) -> dict:
    """Runs the Beam accuracy pipeline and returns per-model metrics and paired tables.

    The record files are spread over the workers (``Reshuffle`` of their names: a gzipped file is
    read by one worker, as Beam's own TFRecord source does); each is read and parsed in batches
    of ``batch_size`` by TensorFlow, a batch ahead of the models, and each batch runs through every
    model at once.

    Args:
      models: the prepared models; the baseline is named ``baseline``.
      output_dir: where the combined metrics (and per-example rows) are written.
      batch_size: examples per batch fed to the models (TFLite inputs are resized to it).
      make_pipeline: a factory of ``beam.Pipeline`` (the TFX executor's, carrying the pipeline's
        ``beam_pipeline_args``); default: ``beam.Pipeline(argv=beam_pipeline_args)``.
    Returns:
      ``{"examples", "models": {name: metrics}, "paired": {name: 2x2 table}, "per_example_dir"}``.
    """
    import tensorflow as tf

    beam, read_fn, predict_fn, sums_fn = _beam_transforms()
    files = examples_lib.split_files(examples_uri, split)
    tf.io.gfile.makedirs(output_dir)
    metrics_prefix = os.path.join(output_dir, METRICS_FILE)
    per_example_dir = os.path.join(output_dir, PER_EXAMPLE_DIR)
    if make_pipeline is None:
        args = list(beam_pipeline_args or DEFAULT_BEAM_ARGS)

        def make_pipeline():
            return beam.Pipeline(argv=args)

    with make_pipeline() as pipeline:
        rows = (
            pipeline
            | "Files" >> beam.Create(files)
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadBatches" >> beam.ParDo(read_fn(batch_size, inputs))
            | "Predict" >> beam.ParDo(predict_fn(models, inputs, settings))
        )
        (
            rows
            | "Sum" >> beam.CombineGlobally(sums_fn())
            | "SumsToJson" >> beam.Map(lambda acc: json.dumps(acc, sort_keys=True))
            | "WriteSums" >> beam.io.WriteToText(metrics_prefix, shard_name_template="")
        )
        if write_per_example:
            (
                rows
                | "BatchesToJson" >> beam.Map(batch_to_json)
                | "WriteRows"
                >> beam.io.WriteToText(
                    os.path.join(per_example_dir, "part"), file_name_suffix=".jsonl"
                )
            )
    with tf.io.gfile.GFile(metrics_prefix) as f:
        acc = json.loads(f.read())
    result = finalize(acc, settings)
    result["per_example_dir"] = per_example_dir if write_per_example else None
    return result


def read_per_example(per_example_dir: str):
    """Yields the per-example rows the pipeline wrote (one JSON line per batch of columns)."""
    import tensorflow as tf

    for path in sorted(tf.io.gfile.glob(os.path.join(per_example_dir, "part*"))):
        with tf.io.gfile.GFile(path) as f:
            for line in f:
                if line.strip():
                    yield from rows_of_batch(json.loads(line))


def paired_errors(per_example_dir: str, candidate: str, key: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-example ``key`` values (``abs_err`` / ``sq_err`` / ``score``) of the baseline and one
    candidate, over the examples both were evaluated on, in the same order."""
    base, cand = [], []
    for row in read_per_example(per_example_dir):
        outs = row["outcomes"]
        if key in outs.get(BASELINE, {}) and key in outs.get(candidate, {}):
            base.append(outs[BASELINE][key])
            cand.append(outs[candidate][key])
    return np.asarray(base, dtype=np.float64), np.asarray(cand, dtype=np.float64)


def binary_auc(per_example_dir: str, name: str) -> float:
    """ROC AUC of one model of a binary task, from the per-example rows (label and ``p``)."""
    scores, truth = [], []
    for row in read_per_example(per_example_dir):
        out = row["outcomes"].get(name, {})
        if "p" in out:
            label = row["label"]
            scores.append(out["p"])
            truth.append(label[0] if isinstance(label, list) else label)
    return metrics_lib.auc(np.asarray(scores), np.asarray(truth))
