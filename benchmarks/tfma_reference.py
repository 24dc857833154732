"""TensorFlow Model Analysis (the standard TFX Evaluator's engine) on the same model and examples.

The reference our Evaluator's accuracy is checked against (``tests/test_tfma_parity.py``) and
timed against (``benchmarks/evaluator_throughput.py``). TFMA reads the split through tfx-bsl's
``TFExampleRecord`` with a schema declaring every feature fixed-length (as a TFX pipeline's
SchemaGen would), feeds the SavedModel's serving signature and computes
``SparseCategoricalAccuracy`` and ``ExampleCount`` over the overall slice.
"""

from __future__ import annotations

import os

from components.common import examples as examples_lib


def schema_for(examples_uri: str, split: str, label_key: str, feature_keys: list[str]):
    """A ``tensorflow_metadata`` schema of fixed-length features, read from the split's first record."""
    from tensorflow_metadata.proto.v0 import schema_pb2

    infos = examples_lib.inspect_features(examples_lib.split_files(examples_uri, split))
    kinds = {"float": schema_pb2.FLOAT, "int64": schema_pb2.INT, "bytes": schema_pb2.BYTES}
    schema = schema_pb2.Schema()
    for key in [*feature_keys, label_key]:
        feature = schema.feature.add(name=key, type=kinds[infos[key].kind])
        feature.shape.dim.add(size=infos[key].length)
        feature.presence.min_fraction = 1.0
    return schema


def tfma_accuracy(
    model_uri: str,
    examples_uri: str,
    split: str,
    output_path: str,
    label_key: str = "label",
    feature_keys: tuple[str, ...] = ("image",),
    beam_pipeline_args: list[str] | None = None,
) -> dict:
    """Runs TFMA's ``ExtractEvaluateAndWriteResults`` and returns ``{"accuracy", "examples"}``.

    Args:
      model_uri: a SavedModel directory or a model artifact with ``Format-Serving/``.
      beam_pipeline_args: default: the DirectRunner in memory, one worker (ours's default).
    """
    import apache_beam as beam
    import tensorflow_model_analysis as tfma
    from tfx_bsl.public import tfxio
    from tfx_bsl.tfxio.tensor_adapter import TensorAdapterConfig

    from components.common import model_io

    files = examples_lib.split_files(examples_uri, split)
    schema = schema_for(examples_uri, split, label_key, list(feature_keys))
    source = tfxio.TFExampleRecord(
        file_pattern=files, schema=schema, raw_record_column_name=tfma.ARROW_INPUT_COLUMN
    )
    eval_config = tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(label_key=label_key)],
        metrics_specs=[
            tfma.MetricsSpec(
                metrics=[
                    tfma.MetricConfig(class_name="SparseCategoricalAccuracy"),
                    tfma.MetricConfig(class_name="ExampleCount"),
                ]
            )
        ],
        slicing_specs=[tfma.SlicingSpec()],
    )
    shared = tfma.default_eval_shared_model(
        eval_saved_model_path=model_io.serving_model_dir(model_uri), eval_config=eval_config
    )
    adapter = TensorAdapterConfig(
        arrow_schema=source.ArrowSchema(), tensor_representations=source.TensorRepresentations()
    )
    args = beam_pipeline_args or ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
    with beam.Pipeline(argv=list(args)) as pipeline:
        _ = (
            pipeline
            | "Read" >> source.BeamSource()
            | "TFMA"
            >> tfma.ExtractEvaluateAndWriteResults(
                eval_shared_model=shared,
                eval_config=eval_config,
                output_path=output_path,
                tensor_adapter_config=adapter,
            )
        )
    [(_, metrics)] = tfma.load_eval_result(os.fspath(output_path)).slicing_metrics
    overall = metrics[""][""]
    return {
        "accuracy": overall["sparse_categorical_accuracy"]["doubleValue"],
        "examples": int(overall["example_count"]["doubleValue"]),
    }
