"""Candidate isolation: a candidate whose own step fails is a rejected candidate, not a failed run.

One test per failure point on the executors (the Quantizer's verification on the reference model,
TFLite conversion of a mode the model cannot take, the candidate's Profiler, the Evaluator's
latency measurement), the pass-through and the gate; then the local pipeline end to end: one
candidate fails verification and another is blessed and pushed, a rerun is fully cached, a changed
configuration reruns the failed branch; and a run where every candidate fails exits 1.
"""

import json
import os

import pytest

from components.common import candidate, keys, model_io, properties
from components.common.errors import ConfigError, MeasurementError
from components.common.examples import DataConfig
from components.quantizer.config import QuantizerConfig
from tests.artifacts import artifact, examples_artifact, model_artifact, run_model_step

DATA = DataConfig()
BEAM_ARGS = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
FAST_PROFILER = {
    "warmup_runs": 2,
    "timed_runs": 20,
    "throughput_runs": 2,
    "measure_memory": False,
    "max_eval_examples": 100,
}
SUMMARY = r"failed: verification, mean abs diff [0-9.e+-]+ > [0-9.e+-]+"


# --------------------------------------------------------------------------- helpers


def _quantize(model_uri, examples_uri, out, isolate=True, **config):
    """Runs the Quantizer executor as TFX does; returns its output Model artifact."""
    from components.quantizer.executor import Executor

    config = QuantizerConfig(**config)
    isolate_failures = 1 if isolate else None
    return run_model_step(
        Executor, model_uri, examples_uri, out, config, DATA, isolate_failures=isolate_failures
    )


def _profile(model, examples_uri, out, isolate=True):
    """Runs the Profiler executor as TFX does; returns its output ModelProfile artifact."""
    from components.common.types import ModelProfile
    from components.profiler import executor
    from components.profiler.config import ProfilerConfig

    output = artifact(ModelProfile, out)
    executor.Executor().Do(
        {"model": [model], "examples": [examples_artifact(examples_uri)]},
        {"profile": [output]},
        {
            "config": ProfilerConfig(**FAST_PROFILER).model_dump_json(),
            "data_config": DATA.model_dump_json(),
            keys.ISOLATE_FAILURES_KEY: 1 if isolate else None,
        },
    )
    return output


def _props(artifact) -> dict:
    out = {}
    for key, value in artifact.mlmd_artifact.custom_properties.items():
        out[key] = getattr(value, value.WhichOneof("value"))
    return out


def _assert_marked_failed(artifact, step: str, record_file: str) -> dict:
    """The artifact holds the failure record (and the step's own record) and nothing else."""
    assert sorted(os.listdir(artifact.uri)) == sorted({keys.CANDIDATE_FAILURE_FILE, record_file})
    record = candidate.read_failure(artifact.uri)
    assert record == properties.read_json(artifact.uri, record_file)
    props = _props(artifact)
    assert props[keys.FAILED_PROPERTY] == 1
    assert props[keys.FAILURE_STEP_PROPERTY] == record["step"] == step
    assert props[keys.FAILURE_SUMMARY_PROPERTY] == record["summary"]
    assert record["summary"].startswith(f"failed: {step}, ")
    assert props[keys.FAILURE_REASON_PROPERTY] == record["reason"][: candidate.MAX_REASON_CHARS]
    return record


def _sine(t):
    import tensorflow as tf

    return tf.math.sin(t)


def _sine_model_uri(root) -> str:
    """A model with a SIN op: TFLite has a float kernel for it, but no 16x8-bit one."""
    import tf_keras

    tf_keras.utils.set_random_seed(3)
    inputs = tf_keras.layers.Input(shape=(64,), name="image")
    hidden = tf_keras.layers.Dense(16, name="hidden")(inputs)
    sine = tf_keras.layers.Lambda(_sine, name="sine")(hidden)
    outputs = tf_keras.layers.Dense(10, activation="softmax", name="out")(sine)
    uri = str(root / "sine")
    model_io.save_keras_model(tf_keras.Model(inputs, outputs), uri)
    return uri


# --------------------------------------------------------------------------- the failure points


def test_quantizer_verification_failure_is_recorded_and_the_profiler_passes_it_on(
    reference_data, tmp_path, monkeypatch
):
    """A tiny verify_tolerance on the reference CNN: the step succeeds, its output marked failed."""
    from components.common.keys import QUANTIZATION_RECORD_FILE as RECORD_FILE
    from components.profiler import profiler
    from components.profiler.executor import PROFILE_FILE
    from components.quantizer import conversion

    strict = {"mode": "full_int8", "verify_tolerance": 1e-6, "representative_samples": 32}
    with pytest.raises(
        conversion.ConversionVerificationError, match="differs from the Keras model"
    ):
        _quantize(
            reference_data["model"], reference_data["examples"], tmp_path / "q0", False, **strict
        )
    assert not os.listdir(tmp_path / "q0")  # not isolated: the step fails, nothing written

    output = _quantize(
        reference_data["model"], reference_data["examples"], tmp_path / "q", **strict
    )
    record = _assert_marked_failed(output, "verification", RECORD_FILE)
    assert (
        record["component"] == "Quantizer" and record["error_type"] == "ConversionVerificationError"
    )
    assert "verify_tolerance" in record["reason"]  # the full message keeps the advice
    diff, allowed = (float(v) for v in record["detail"].split("diff ")[1].split(" > "))
    assert diff > allowed > 0
    assert _props(output)["mode"] == "full_int8"

    # Downstream, the candidate's Profiler loads nothing: it passes the failure on.
    def must_not_run(*args, **kwargs):
        raise AssertionError("the Profiler loaded a model marked failed")

    monkeypatch.setattr(profiler, "profile_model", must_not_run)
    profile = _profile(output, reference_data["examples"], tmp_path / "p", isolate=False)
    passed = _assert_marked_failed(profile, "verification", PROFILE_FILE)
    assert passed["note"] == "not profiled: upstream failed"
    assert passed["summary"] == record["summary"]
    assert passed["upstream"] == {"component": "Quantizer", "uri": output.uri}
    assert _props(profile)[keys.UPSTREAM_FAILED_PROPERTY] == 1
    assert profiler.key_numbers(passed)["failed"] == 1


def test_conversion_failure_of_one_mode_fails_only_that_candidate(tmp_path, tiny_examples):
    """int16x8 has no 16x8-bit SIN kernel: that candidate fails conversion, dynamic_range works;
    a bad configuration still fails the step (it is no verdict on the candidate)."""
    from components.common.keys import QUANTIZATION_RECORD_FILE as RECORD_FILE

    model_uri = _sine_model_uri(tmp_path)
    failed = _quantize(model_uri, tiny_examples, tmp_path / "int16x8", mode="int16x8")
    record = _assert_marked_failed(failed, "conversion", RECORD_FILE)
    assert record["error_type"] == "ConversionError"
    assert "SIN" in record["summary"] and "exclude_layers" in record["reason"]

    works = _quantize(model_uri, tiny_examples, tmp_path / "dynamic", mode="dynamic_range")
    assert candidate.read_failure(works.uri) is None
    assert model_io.tflite_path(works.uri)
    assert keys.FAILED_PROPERTY not in _props(works)

    with pytest.raises(ConfigError, match="exclude_layers names"):
        _quantize(
            model_uri, tiny_examples, tmp_path / "bad", mode="full_int8", exclude_layers=["x"]
        )
    assert not os.listdir(tmp_path / "bad")


def test_candidate_profiler_failure_is_recorded(tmp_path, tiny_model, tiny_examples):
    """A candidate whose flatbuffer does not load: its Profiler records the failure."""
    from components.profiler.executor import PROFILE_FILE

    uri = str(tmp_path / "corrupt")
    model_io.save_keras_model(tiny_model, uri)
    model_io.write_tflite(b"not a flatbuffer " * 8, uri)
    with pytest.raises(MeasurementError, match="does not load"):
        _profile(model_artifact(uri), tiny_examples, tmp_path / "p0", isolate=False)

    profile = _profile(model_artifact(uri), tiny_examples, tmp_path / "p")
    record = _assert_marked_failed(profile, "profiling", PROFILE_FILE)
    assert record["component"] == "Profiler"
    assert "does not load: The model is not a valid Flatbuffer" in record["summary"]


# --------------------------------------------------------------------------- the gate


def _run_evaluator(tmp_path, baseline_uri, candidates: dict, examples_uri, profiles=None):
    """Runs the Evaluator executor; returns its evaluation record and the blessing's properties."""
    from tfx.dsl.components.base import base_beam_executor
    from tfx.types import standard_artifacts

    from components.common.types import EvaluationReport, ModelProfile
    from components.evaluator import constants as c
    from components.evaluator.executor import Executor

    input_dict = {
        c.BASELINE_MODEL_KEY: [model_artifact(baseline_uri)],
        c.EXAMPLES_KEY: [examples_artifact(examples_uri)],
    }
    for i, (name, uri) in enumerate(candidates.items()):
        input_dict[c.candidate_key(i)] = [model_artifact(uri)]
        if name in (profiles or {}):
            input_dict[c.candidate_profile_key(i)] = [artifact(ModelProfile, profiles[name])]
    out = tmp_path / "gate"
    blessing = artifact(standard_artifacts.ModelBlessing, out / "blessing")
    model = model_artifact(out / "model")
    evaluation = artifact(EvaluationReport, out / "evaluation")
    context = base_beam_executor.BaseBeamExecutor.Context(
        beam_pipeline_args=BEAM_ARGS, tmp_dir=str(tmp_path / "tmp")
    )
    config = {
        "rules": {"max_accuracy_drop_points": 100.0},  # random weights: the rule is not the point
        "latency": {"warmup_runs": 2, "timed_runs": 10},
    }
    Executor(context).Do(
        input_dict,
        {c.BLESSING_KEY: [blessing], c.MODEL_KEY: [model], c.EVALUATION_KEY: [evaluation]},
        {
            "config": json.dumps(config),
            "data_config": DATA.model_dump_json(),
            c.CANDIDATE_NAMES_KEY: json.dumps(list(candidates)),
        },
    )
    return properties.read_json(evaluation.uri, c.EVALUATION_FILE), _props(blessing)


def test_gate_rejects_each_failed_candidate_with_its_reason_and_blesses_the_healthy_one(
    tmp_path, tiny_model, tiny_examples
):
    """Failed verification, a failed Profiler, and a model that cannot run at batch 1 for its
    latency (a SavedModel without a serving signature) are rejected; the float candidate wins."""
    from components.evaluator.evaluator import rules_table

    baseline = str(tmp_path / "baseline")
    model_io.save_keras_model(tiny_model, baseline)
    healthy = _quantize(baseline, tiny_examples, tmp_path / "float32", mode="none")
    strict = _quantize(
        baseline, tiny_examples, tmp_path / "strict", mode="full_int8", verify_tolerance=1e-9
    )
    corrupt = str(tmp_path / "corrupt")
    model_io.save_keras_model(tiny_model, corrupt)
    model_io.write_tflite(b"not a flatbuffer " * 8, corrupt)
    corrupt_profile = _profile(model_artifact(corrupt), tiny_examples, tmp_path / "corrupt_profile")
    unsigned = str(tmp_path / "unsigned")
    tiny_model.save(os.path.join(unsigned, model_io.SERVING_DIR), save_format="tf", signatures={})

    candidates = {
        "float32": healthy.uri,
        "strict": strict.uri,
        "corrupt": corrupt,
        "unsigned": unsigned,
    }
    record, blessing = _run_evaluator(
        tmp_path, baseline, candidates, tiny_examples, {"corrupt": corrupt_profile.uri}
    )
    assert record["decision"]["selected"] == "float32" and blessing["blessed"] == 1
    assert blessing["failed_candidates"] == 3 and blessing["all_candidates_failed"] == 0
    by_name = {c["name"]: c for c in record["candidates"]}
    steps = {name: (by_name[name].get("failure") or {}).get("step") for name in candidates}
    assert steps == {
        "float32": None,
        "strict": "verification",
        "corrupt": "profiling",
        "unsigned": "latency",
    }
    table = rules_table(record)
    print("\n" + table)
    for name in ("strict", "corrupt", "unsigned"):
        entry = by_name[name]
        assert entry["eligible"] is False and entry["rules"] == []
        assert entry["rejected_because"] == [entry["failure"]["summary"]]
        [line] = [row for row in table.splitlines() if row.startswith(f"{name} ")]
        assert line.endswith(f"FAIL  {entry['failure']['summary']}")
    assert "serving_default" in by_name["unsigned"]["failure"]["summary"]


def test_gate_when_every_candidate_failed(tmp_path, tiny_model, tiny_examples):
    baseline = str(tmp_path / "baseline")
    model_io.save_keras_model(tiny_model, baseline)
    strict = _quantize(
        baseline, tiny_examples, tmp_path / "strict", mode="full_int8", verify_tolerance=1e-9
    )
    record, blessing = _run_evaluator(tmp_path, baseline, {"strict": strict.uri}, tiny_examples)
    decision = record["decision"]
    assert decision["blessed"] is False and decision["all_candidates_failed"] is True
    assert decision["reason"].startswith("every candidate failed before it could be judged")
    assert "strict: failed: verification, mean abs diff" in decision["reason"]
    assert blessing["blessed"] == 0 and blessing["all_candidates_failed"] == 1
    assert record["baseline"]["accuracy"]["top1_accuracy"] is not None  # judged all the same


# --------------------------------------------------------------------------- the local pipeline


def _pipeline_config(tmp_path, strict_tolerance, pusher=True) -> dict:
    config = {
        "pipeline_name": "isolation",
        "profiler": FAST_PROFILER,
        "quantization": [
            {
                "mode": "full_int8",
                "name": "int8_strict",
                "verify_tolerance": strict_tolerance,
                "representative_samples": 32,
            },
            {"mode": "dynamic_range"},
        ],
        "evaluator": {
            "rules": {"max_accuracy_drop_points": 2.0},
            "latency": {"warmup_runs": 2, "timed_runs": 20},
        },
    }
    if pusher:
        config["pusher"] = {
            "model_name": "digits",
            "serving": [{"base_directory": str(tmp_path / "serving")}],
        }
    return config


def _states(run) -> dict:
    return {s.node_id: s.state for s in run.steps}


def _output(run, node, key):
    [artifact] = run.outputs_of(node, key)
    return artifact


@pytest.mark.e2e
def test_local_run_rejects_the_failed_candidate_pushes_the_other_and_reruns_from_cache(
    tmp_path, reference_data
):
    from pipelines.config import PipelineConfig
    from pipelines.local.runner import run_local
    from pipelines.report import console
    from pipelines.report.writer import write_report

    def run(tolerance):
        config = PipelineConfig.parse(_pipeline_config(tmp_path, tolerance))
        return run_local(
            config, reference_data["model"], reference_data["examples"], str(tmp_path / "out")
        )

    first = run(1e-6)
    assert set(_states(first).values()) == {"COMPLETE"}, _states(first)
    failed = _output(first, "Quantizer_int8_strict", "optimized_model")
    assert failed.custom_properties["failed"].int_value == 1
    assert failed.custom_properties["failure_step"].string_value == "verification"
    profile = _output(first, "Profiler_int8_strict", "profile")
    assert profile.custom_properties["upstream_failed"].int_value == 1
    blessing = _output(first, "Evaluator", "blessing")
    assert blessing.custom_properties["blessed"].int_value == 1
    assert blessing.custom_properties["selected_candidate"].string_value == "dynamic_range"
    assert blessing.custom_properties["failed_candidates"].int_value == 1
    pushed = _output(first, "Pusher", "pushed_model")
    assert pushed.custom_properties["pushed"].int_value == 1
    text = console.render(first)
    print("\n" + text)
    [row] = [line for line in text.splitlines() if line.startswith("int8_strict ")]
    assert row.split("FAIL  ")[1].startswith("failed: verification, mean abs diff")
    assert "not profiled: upstream failed" in text

    html_path, summary_path = write_report(first)
    with open(summary_path) as f:
        models = {m["name"]: m for m in json.load(f)["models"]}
    reason = models["int8_strict"]["failure"]["summary"]
    assert models["int8_strict"]["rejected_because"] == [reason]
    with open(html_path) as f:
        assert reason.replace(">", "&gt;") in f.read()

    # Same inputs and configuration: every step is reused, the failure included.
    again = run(1e-6)
    assert set(_states(again).values()) == {"CACHED"}, _states(again)
    assert _output(again, "Quantizer_int8_strict", "optimized_model").id == failed.id

    # A changed configuration of the failed candidate reruns that branch, and only it.
    fixed = run(None)
    states = _states(fixed)
    assert states["Quantizer_int8_strict"] == "COMPLETE"
    assert states["Quantizer_dynamic_range"] == states["Profiler_dynamic_range"] == "CACHED"
    redone = _output(fixed, "Quantizer_int8_strict", "optimized_model")
    assert "failed" not in redone.custom_properties
    assert model_io.tflite_path(redone.uri)


@pytest.mark.e2e
def test_local_run_where_every_candidate_fails_exits_1(tmp_path, reference_data, capsys):
    import yaml

    from pipelines import cli
    from pipelines.metadata.reader import load_run

    config = _pipeline_config(tmp_path, 1e-6, pusher=False)
    config.update(profile_candidates=False, quantization=config["quantization"][:1])
    path = tmp_path / "all_fail.yaml"
    path.write_text(yaml.safe_dump(config))
    argv = ["run", "--model", reference_data["model"], "--examples", reference_data["examples"]]
    status = cli.main([*argv, "--config", str(path), "--output", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert status == 1, captured.err[-2000:]
    [line] = [x for x in captured.err.splitlines() if x.startswith("tfxopt: error:")]
    assert "no candidate could be built: every candidate failed before it could be judged" in line
    assert "int8_strict: failed: verification" in line
    assert "NOT BLESSED" in captured.out  # the summary and the report came first
    assert os.path.exists(tmp_path / "out" / "report.html")
    # Every step itself succeeded: the failure is the candidate's, recorded, not the step's.
    run = load_run(str(tmp_path / "out"))
    assert {s.state for s in run.steps} == {"COMPLETE"}
