"""The Evaluator's Beam accuracy pass on parallel worker processes gives the in-memory result.

``--direct_running_mode=multi_processing`` runs the DoFns in separate Python processes, as
Dataflow, Flink or Spark workers do: the transforms are pickled, every worker loads the models
in ``setup``, and the per-model sums and paired tables are merged by the combiner (issue 22).
"""

import os

import pytest

from components.evaluator.accuracy import PARALLEL_BEAM_ARGS


def _rows(per_example_dir) -> dict:
    """{example key: (label, {model: (correct, top_k, loss)})} of the per-example rows."""
    from components.evaluator.accuracy import read_per_example

    return {
        row["key"]: (
            row["label"],
            {m: (o["correct"], o["top_k"], o["loss"]) for m, o in row["outcomes"].items()},
        )
        for row in read_per_example(per_example_dir)
    }


def _split_into_files(examples: str, out: str, files: int) -> str:
    """The eval split copied into ``files`` gzipped record files (round robin), as ExampleGen
    shards a large split; the runner spreads whole files over its workers."""
    import tensorflow as tf

    from components.common import examples as examples_lib

    records = list(examples_lib.iter_serialized(examples_lib.split_files(examples, "eval")))
    os.makedirs(os.path.join(out, "Split-eval"))
    for shard in range(files):
        path = os.path.join(out, "Split-eval", f"data-{shard:05d}-of-{files:05d}.gz")
        with tf.io.TFRecordWriter(path, options="GZIP") as writer:
            for record in records[shard::files]:
                writer.write(record)
    return out


def test_multi_processing_workers_match_in_memory(tmp_path, reference_data):
    from components.common.examples import DataConfig
    from components.evaluator import accuracy
    from components.evaluator.models import ModelRef, prepare

    model = reference_data["model"]
    examples = _split_into_files(reference_data["examples"], str(tmp_path / "examples"), 4)
    prepared = [
        prepare(ModelRef("baseline", model), "tflite", str(tmp_path / "work")),
        prepare(ModelRef("saved_model", model), "saved_model"),
    ]
    inputs = accuracy.resolve_inputs(
        examples, "eval", DataConfig(), prepared[0].input_shapes, "classification"
    )
    settings = accuracy.AccuracySettings(top_k=3, compute_loss=True)
    results = {}
    for mode, args in (
        ("in_memory", ["--direct_running_mode=in_memory", "--direct_num_workers=1"]),
        ("parallel", list(PARALLEL_BEAM_ARGS)),
    ):
        results[mode] = accuracy.run_accuracy(
            prepared,
            examples,
            "eval",
            inputs,
            settings,
            str(tmp_path / mode),
            batch_size=32,  # several batches per file, the last one short
            beam_pipeline_args=args,
        )
    serial, parallel = results["in_memory"], results["parallel"]
    assert parallel["examples"] == serial["examples"] == reference_data["eval_examples"]
    assert parallel["paired"] == serial["paired"]
    for name, metrics in serial["models"].items():
        other = parallel["models"][name]
        assert other["examples"] == metrics["examples"] and other["failed_examples"] == 0
        assert other["top1_accuracy"] == metrics["top1_accuracy"]
        assert other["top_k_accuracy"] == metrics["top_k_accuracy"]
        # Sums in another order: equal to float rounding.
        assert other["loss"] == pytest.approx(metrics["loss"], rel=1e-6)
    rows, expected = _rows(parallel["per_example_dir"]), _rows(serial["per_example_dir"])
    assert rows.keys() == expected.keys()
    for key, (label, outcomes) in expected.items():
        assert rows[key][0] == label
        for name, (correct, top_k, loss) in outcomes.items():
            assert rows[key][1][name][:2] == (correct, top_k)
            assert rows[key][1][name][2] == pytest.approx(loss, rel=1e-5, abs=1e-6)
