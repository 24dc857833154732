"""The ExampleGen step: TFX Examples files copied into the pipeline root (default) or re-encoded by
TFX's ImportExampleGen (``example_gen: beam``): the same records, the same caching."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from components.common.errors import DataError
from pipelines.reference_data import write_examples


def _records(directory: str) -> list[bytes]:
    import tensorflow as tf

    out = []
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        compression = "GZIP" if name.endswith(".gz") else ""
        out += [r.numpy() for r in tf.data.TFRecordDataset(path, compression_type=compression)]
    return out


def _do(input_base: str, output_uri: str, splits=("train", "eval")):
    from google.protobuf import json_format
    from tfx.proto import example_gen_pb2
    from tfx.types import standard_artifacts

    from components.example_gen.executor import Executor

    examples = standard_artifacts.Examples()
    examples.uri = output_uri
    input_config = example_gen_pb2.Input(
        splits=[example_gen_pb2.Input.Split(name=s, pattern=f"Split-{s}/*") for s in splits]
    )
    Executor().Do(
        {},
        {"examples": [examples]},
        {"input_base": input_base, "input_config": json_format.MessageToJson(input_config)},
    )
    return examples


def _write_plain(path: str, records: list[bytes]) -> None:
    import tensorflow as tf

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for record in records:
            writer.write(record)


def test_copy_keeps_every_record_gzips_plain_files_and_records_the_counts(tmp_path):
    rng = np.random.default_rng(0)
    base = tmp_path / "in"
    write_examples(str(base / "Split-train" / "a.gz"), rng.random((5, 4)), np.arange(5))
    write_examples(str(base / "Split-train" / "b.gz"), rng.random((3, 4)), np.arange(3))
    eval_records = _records(str(base / "Split-train"))[:4]
    _write_plain(str(base / "Split-eval" / "plain.tfrecord"), eval_records)  # not gzipped

    examples = _do(str(base), str(tmp_path / "out"))

    from tfx.components.util import examples_utils

    assert json.loads(examples.split_names) == ["train", "eval"]
    assert examples_utils.get_file_format(examples) == "tfrecords_gzip"
    assert examples_utils.get_payload_format(examples) == 6  # FORMAT_TF_EXAMPLE
    assert examples.get_json_value_custom_property("num_examples") == {"train": 8, "eval": 4}
    out_train = tmp_path / "out" / "Split-train"
    assert sorted(os.listdir(out_train)) == [
        "data_tfrecord-00000-of-00002.gz",
        "data_tfrecord-00001-of-00002.gz",
    ]
    # gzipped inputs are copied byte for byte; the plain one is gzipped on the way
    assert (out_train / "data_tfrecord-00000-of-00002.gz").read_bytes() == (
        base / "Split-train" / "a.gz"
    ).read_bytes()
    [eval_file] = os.listdir(tmp_path / "out" / "Split-eval")
    assert (tmp_path / "out" / "Split-eval" / eval_file).read_bytes()[:2] == b"\x1f\x8b"
    assert _records(str(tmp_path / "out" / "Split-eval")) == eval_records
    assert _records(str(out_train)) == _records(str(base / "Split-train"))


def test_a_truncated_file_fails_naming_it(tmp_path):
    rng = np.random.default_rng(0)
    base = tmp_path / "in"
    write_examples(str(base / "Split-train" / "a.gz"), rng.random((50, 4)), np.arange(50))
    write_examples(str(base / "Split-eval" / "a.gz"), rng.random((5, 4)), np.arange(5))
    path = base / "Split-train" / "a.gz"
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(DataError, match=r"Split-train/a\.gz is not a readable TFRecord file"):
        _do(str(base), str(tmp_path / "out"))


def test_a_split_without_files_fails_naming_it(tmp_path):
    rng = np.random.default_rng(0)
    write_examples(str(tmp_path / "in" / "Split-train" / "a.gz"), rng.random((5, 4)), np.arange(5))
    (tmp_path / "in" / "Split-eval").mkdir()
    with pytest.raises(DataError, match=r"split 'eval': no files match .*Split-eval/\*"):
        _do(str(tmp_path / "in"), str(tmp_path / "out"))


@pytest.mark.e2e
def test_copy_and_beam_give_the_same_examples_and_new_data_reruns_the_step(
    tmp_path, reference_data
):
    from pipelines.config import PipelineConfig
    from pipelines.local.runner import run_local
    from pipelines.pipeline import EXAMPLE_GEN_ID

    fast = {"warmup_runs": 2, "timed_runs": 10, "throughput_runs": 1, "measure_memory": False}
    examples_dir = str(tmp_path / "examples")
    shutil.copytree(reference_data["examples"], examples_dir)
    outputs = {}
    for mode in ("beam", "copy"):
        config = PipelineConfig.parse(
            {"pipeline_name": f"eg-{mode}", "example_gen": mode, "profiler": fast}
        )
        run = run_local(config, reference_data["model"], examples_dir, str(tmp_path / mode))
        [examples] = run.outputs_of(EXAMPLE_GEN_ID, "examples")
        outputs[mode] = (run, examples)
    for split in ("train", "eval"):
        copied = _records(os.path.join(outputs["copy"][1].uri, f"Split-{split}"))
        encoded = _records(os.path.join(outputs["beam"][1].uri, f"Split-{split}"))
        assert len(copied) == {"train": 1437, "eval": 360}[split]
        assert sorted(copied) == sorted(encoded)  # Beam may write them in another order

    # New data under the same path: the input fingerprint changes, so the step runs again.
    rng = np.random.default_rng(0)
    write_examples(
        os.path.join(examples_dir, "Split-train", "more.gz"), rng.random((7, 64)), np.arange(7)
    )
    config = PipelineConfig.parse({"pipeline_name": "eg-copy", "profiler": fast})
    again = run_local(config, reference_data["model"], examples_dir, str(tmp_path / "copy"))
    states = {s.node_id: s.state for s in again.steps}
    assert states[EXAMPLE_GEN_ID] == "COMPLETE", states
    [examples] = again.outputs_of(EXAMPLE_GEN_ID, "examples")
    assert examples.id != outputs["copy"][1].id
    counts = _records(os.path.join(examples.uri, "Split-train"))
    assert len(counts) == 1437 + 7


def test_a_failure_leaves_no_split_behind(tmp_path):
    """A bad file in the second split: the first split's copy is removed too (nothing half-written)."""
    rng = np.random.default_rng(0)
    base = tmp_path / "in"
    write_examples(str(base / "Split-train" / "a.gz"), rng.random((50, 4)), np.arange(50))
    write_examples(str(base / "Split-eval" / "a.gz"), rng.random((50, 4)), np.arange(50))
    path = base / "Split-eval" / "a.gz"
    path.write_bytes(path.read_bytes()[:-40])
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"Split-eval/a\.gz"):
        _do(str(base), str(out))
    assert not out.exists() or os.listdir(out) == []
