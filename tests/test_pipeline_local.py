"""End to end: the local pipeline (LocalDagRunner, SQLite MLMD, Beam DirectRunner) on the reference inputs."""

import pytest

from pipelines.config import PipelineConfig

pytestmark = pytest.mark.e2e

FAST_PROFILER = {"warmup_runs": 5, "timed_runs": 50, "throughput_runs": 3, "measure_memory": False}


def test_local_run_profiles_the_baseline_and_second_run_is_cached(tmp_path, reference_data):
    from pipelines.local.runner import run_local
    from pipelines.pipeline import BASELINE_PROFILER_ID
    from pipelines.report import console

    config = PipelineConfig.parse({"pipeline_name": "e2e", "profiler": FAST_PROFILER})
    run = run_local(
        config, reference_data["model"], reference_data["examples"], str(tmp_path / "out")
    )
    states = {s.node_id: s.state for s in run.steps}
    assert states == {
        "ExampleGen": "COMPLETE",
        "CheckpointImporter": "COMPLETE",
        "ModelImporter": "COMPLETE",
        BASELINE_PROFILER_ID: "COMPLETE",
    }
    [profile] = run.outputs_of(BASELINE_PROFILER_ID, "profile")
    accuracy = profile.custom_properties["accuracy"].double_value
    assert accuracy == pytest.approx(reference_data["eval_accuracy"], abs=1e-6)
    assert profile.custom_properties["tflite_bytes"].int_value > 100_000
    assert profile.custom_properties["eval_examples"].int_value == 360
    text = console.render(run)
    # The printed accuracy is the recorded one (its digits move with the processor).
    assert "TFLite p50/p95/p99 ms" in text and f"{100 * accuracy:.2f}%" in text

    again = run_local(
        config, reference_data["model"], reference_data["examples"], str(tmp_path / "out")
    )
    assert again.run_id != run.run_id
    states = {s.node_id: s.state for s in again.steps}
    assert set(states.values()) == {"CACHED"}, states  # every step, not a sample of them
    [cached] = again.outputs_of(BASELINE_PROFILER_ID, "profile")
    assert cached.id == profile.id


def test_bad_inputs_fail_before_the_pipeline_starts(tmp_path, reference_data):
    import os

    from components.common.errors import DataError, ModelInputError
    from pipelines.local.runner import run_local

    out = tmp_path / "out"
    config = PipelineConfig.parse({"data": {"label_key": "digit"}})
    with pytest.raises(DataError, match="label key 'digit'"):
        run_local(config, reference_data["model"], reference_data["examples"], str(out))
    with pytest.raises(ModelInputError, match="does not exist"):
        run_local(PipelineConfig(), str(tmp_path / "nope"), reference_data["examples"], str(out))
    assert not os.path.exists(out / "metadata.sqlite")


def test_cli_run_reports_errors_without_traceback(tmp_path, reference_data):
    from tests.small_inputs import tfxopt_run

    bad = tmp_path / "bad.yaml"
    bad.write_text("profiler:\n  timed_runs: -1\n")
    done = tfxopt_run(reference_data["model"], reference_data["examples"], bad, tmp_path / "o")
    assert done.returncode == 2
    assert "profiler.timed_runs" in done.stderr and "Traceback" not in done.stderr
