"""The model zoo end to end: each model through ``tfxopt run`` (the local pipeline) to a decision.

One generic config for all (prune 0.6, cluster 16 with sparsity kept, float32 / dynamic-range /
full-int8 candidates, a 2-point drop gate or the task's equivalent, a serving push); only the
label key changes per model, the regression model's gate uses the task's equivalent rule (MAE at
most 10% worse), and the text model's full_int8 candidate leaves its embedding in float, as the
quantizer's error tells a user to. Each run must end
with the task inferred as expected, every step complete and a gate decision; a multi-output model
must fail at preflight with a clear message. The TFX Transform model runs twice: on the
transformed examples with ``data.raw_examples`` (``tfx_transform_mlp``) and on the raw examples
with ``data.transform_graph`` (``tfx_transform_raw``); pushed, it answers raw tf.Example requests.
With ``TFXOPT_ZOO_REPORT=path`` each run's task,
metric before/after and decision are appended there as JSON lines.
"""

from __future__ import annotations

import json
import math
import os

import pytest
import yaml

from tests import zoo

pytestmark = pytest.mark.e2e

GENERIC = {
    "pipeline_name": "zoo",
    "enable_cache": False,
    "profile_candidates": False,
    "profiler": {
        "warmup_runs": 2,
        "timed_runs": 10,
        "throughput_runs": 2,
        "measure_memory": False,
    },
    "pruner": {
        "target_sparsity": 0.6,
        "schedule": {"kind": "constant", "frequency_steps": 2},
        "fine_tuning": {"epochs": 2, "batch_size": 32, "learning_rate": 2e-3},
    },
    "clusterer": {
        "number_of_clusters": 16,
        "preserve_sparsity": True,
        "fine_tuning": {"epochs": 1, "batch_size": 32, "learning_rate": 1e-3},
    },
    "quantization": [
        {"mode": "none", "name": "float32"},
        {"mode": "dynamic_range"},
        {"mode": "full_int8", "representative_samples": 64},
    ],
    "evaluator": {
        "rules": {"max_accuracy_drop_points": 2.0},
        "latency": {"warmup_runs": 2, "timed_runs": 10},
        "confidence": {"resamples": 200},
    },
    "pusher": {"model_name": "zoo", "serving": [{"base_directory": "serving"}]},
}
# How each model's serving_default is rebuilt (any other: the model's call).
SIGNATURE_KINDS = {
    "tfx_template_cnn": "parse_example",
    "encoded_images": "parse_example",
    "tfx_transform_mlp": "transform",
    "tfx_transform_raw": "transform",
}
# The task's equivalent of a 2-point drop for a regression model: MAE at most 10% worse.
REGRESSION_RULES = {"max_relative_error_increase": 0.1}


def _config(case: zoo.ZooCase) -> dict:
    config = json.loads(json.dumps(GENERIC))
    for section, values in case.config.items():
        config[section] = {**config.get(section, {}), **values}
    if case.task == "regression":
        config["evaluator"]["rules"] = REGRESSION_RULES
    for candidate in config["quantization"]:
        if candidate["mode"] == "full_int8" and case.int8_exclude:
            candidate["exclude_layers"] = case.int8_exclude
    return config


def _run(case: zoo.ZooCase, tmp_path, capsys) -> tuple[int, str, str]:
    from pipelines import cli

    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(_config(case)))
    output = tmp_path / "out"
    rc = cli.main(
        [
            "run",
            "--model",
            case.model_dir,
            "--examples",
            case.examples_dir,
            "--config",
            str(config_path),
            "--output",
            str(output),
        ]
    )
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _record(case: zoo.ZooCase, summary: dict) -> dict:
    models = {m["name"]: m for m in summary["models"]}
    gate = summary["gate"]
    chosen = models.get(gate["selected"] or "")
    best = chosen or min(
        (m for m in models.values() if m["role"] == "candidate"),
        key=lambda m: m["name"],
    )
    return {
        "model": case.name,
        "task": summary["task"]["kind"],
        "metric": summary["task"]["metric"],
        "before": models["baseline"]["accuracy"],
        "after": best["accuracy"],
        "after_candidate": best["name"],
        "blessed": gate["blessed"],
        "decision": gate["reason"],
    }


@pytest.mark.parametrize("name", list(zoo.BUILDERS))
def test_zoo_model_runs_end_to_end_to_a_decision(name, tmp_path, capsys):
    case = zoo.BUILDERS[name](str(tmp_path / "case"))
    rc, out, err = _run(case, tmp_path, capsys)
    assert "Traceback" not in out + err
    if case.expect_error:
        assert rc == 2, out + err
        assert "tfxopt: error:" in err and case.expect_error in err
        return
    assert rc == 0, out + err
    assert f"tfxopt: task: {case.task}" in out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["task"]["kind"] == case.task
    assert not summary["failed_steps"]
    gate = summary["gate"]
    assert isinstance(gate["blessed"], bool) and gate["reason"]
    candidates = [m for m in summary["models"] if m["role"] == "candidate"]
    assert len(candidates) == 3
    # Every model was measured, but a candidate its own step rejected (with the reason).
    values = [m["accuracy"] for m in summary["models"] if not m.get("failure")]
    assert all(isinstance(v, float) and math.isfinite(v) for v in values), values
    assert all(m["failure"] for m in candidates if m["accuracy"] is None)
    assert len(values) >= len(summary["models"]) - 1
    _check_decision_follows_the_rules(case, summary)
    _check_no_candidate_lost_to_verification_within_the_rule(case, summary)
    kinds = {sig["key"]: sig["kind"] for sig in summary["serving_signatures"]}
    assert kinds == {"serving_default": SIGNATURE_KINDS.get(case.name, "model_call")}
    assert "Serving signatures kept in every candidate: serving_default" in out
    serving = tmp_path / "out" / "serving" / "zoo"
    if gate["blessed"]:
        assert serving.is_dir()
        if case.name == "tfx_template_cnn":
            _check_pushed_answers_tf_examples(case, serving)
        if case.name in ("tfx_transform_mlp", "tfx_transform_raw"):
            _check_pushed_answers_raw_tf_examples(case, serving)
    else:  # an unblessed run pushes nothing
        assert not serving.exists() or not any(serving.iterdir())
        assert not summary["push"] or not summary["push"].get("pushed")
    record = _record(case, summary)
    report = os.environ.get("TFXOPT_ZOO_REPORT")
    if report:
        with open(report, "a") as f:
            f.write(json.dumps(record) + "\n")


def _check_decision_follows_the_rules(case: zoo.ZooCase, summary: dict) -> None:
    """The gate's verdict, worked out again here from the rules table and each model's metric:
    a candidate passes when its drop (or, for regression, its relative error increase) is within
    the configured bound; the run is blessed iff one passes, and the chosen one is the smallest
    (gzipped flatbuffer) of those that pass."""
    models = {m["name"]: m for m in summary["models"]}
    baseline = models["baseline"]["accuracy"]
    passing = {}
    for model in models.values():
        if model["role"] != "candidate" or model.get("failure"):
            continue
        value = model["accuracy"]
        if case.task == "regression":  # MAE: lower is better, at most 10% worse
            ok = value <= baseline * (1 + REGRESSION_RULES["max_relative_error_increase"]) + 1e-12
        else:
            ok = (baseline - value) * 100 <= GENERIC["evaluator"]["rules"][
                "max_accuracy_drop_points"
            ] + 1e-9
        assert model["passed_all"] == ok, (model["name"], value, baseline, model["rules"])
        if ok:
            passing[model["name"]] = model["metrics"]["size_bytes"]
    gate = summary["gate"]
    assert gate["blessed"] == bool(passing), (gate, passing)
    if passing:
        assert gate["selected"] == min(passing, key=passing.get), (gate["selected"], passing)


def _check_no_candidate_lost_to_verification_within_the_rule(case, summary: dict) -> None:
    """Verification catches broken conversions, not candidates the gate would pass (issue 29): a
    candidate rejected there must have scored outside the gate's rule (its metric is in the
    reason: "Its <metric> on the eval split: <value>")."""
    import re

    baseline = {m["name"]: m for m in summary["models"]}["baseline"]["accuracy"]
    for model in summary["models"]:
        failure = model.get("failure") or {}
        if failure.get("step") != "verification":
            continue
        found = re.search(r"on the eval split: ([0-9.e+-]+)", failure.get("reason", ""))
        assert found, failure  # verification always says what the gate would have seen
        value = float(found.group(1))
        if case.task == "regression":
            within = value <= baseline * (1 + REGRESSION_RULES["max_relative_error_increase"])
        else:
            rule = GENERIC["evaluator"]["rules"]["max_accuracy_drop_points"]
            within = (baseline - value) * 100 <= rule
        assert not within, (model["name"], value, baseline, failure["summary"])


def test_default_recipe_keeps_the_mobilenet_style_int8_candidate_within_the_rule(tmp_path, capsys):
    """``tfxopt run --model M --examples E`` (the default recipe) on the depthwise/BatchNorm
    model: the int8 candidate with accuracy control keeps within the 1-point rule (issue 29's
    target), so it passes every accuracy rule; whether it is blessed then rests on the latency rule
    alone (``min_speedup`` against the float32 baseline), which depends on the processor (int8
    is faster than float32 with VNNI, not always on AVX2-only CPUs). The verdict is worked out
    here from the rules table: blessed iff a candidate passed every rule, the smallest of them."""
    from pipelines import cli

    case = zoo.BUILDERS["mobilenet_block"](str(tmp_path / "case"))
    output = tmp_path / "out"
    rc = cli.main(
        ["run", "--model", case.model_dir, "--examples", case.examples_dir, "--output", str(output)]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    summary = json.loads((output / "summary.json").read_text())
    models = {m["name"]: m for m in summary["models"]}
    baseline = models["baseline"]["accuracy"]
    int8 = models["int8"]
    assert not int8.get("failure"), int8.get("failure")
    # Worked out here from the metrics: the int8 candidate is within 1 point ...
    assert (baseline - int8["accuracy"]) * 100 <= 1.0 + 1e-9
    rules = {r["rule"]: r for r in int8["rules"]}
    assert rules["max_accuracy_drop_points"]["passed"], rules
    # ... so only a rule that is not about accuracy can reject it: the processor-bound latency.
    failed = sorted(name for name, r in rules.items() if not r["passed"])
    assert set(failed) <= {"min_speedup", "max_latency_ms"}, failed
    assert int8["passed_all"] == (not failed), (int8["passed_all"], failed)
    passing = {
        name: m["metrics"]["size_bytes"]
        for name, m in models.items()
        if m["role"] == "candidate" and m.get("passed_all")
    }
    gate = summary["gate"]
    assert gate["blessed"] == bool(passing), (gate, passing)
    if passing:
        assert gate["selected"] == min(passing, key=passing.get), (gate["selected"], passing)
    steps = output.glob("pipeline-root/Quantizer_*/*/*/quantization.json")
    records = [json.loads(p.read_text()) for p in steps]
    controlled = [r for r in records if "accuracy_control" in r]
    assert len(controlled) == 1 and controlled[0]["accuracy_control"]["within_budget"]
    print(
        f"mobilenet_block default recipe: int8 drop {(baseline - int8['accuracy']) * 100:.2f} "
        f"points, speedup {rules['min_speedup']['value']:.3f}, rules failed {failed or 'none'}, "
        f"decision {gate.get('selected') or 'NOT BLESSED'}"
    )


def _check_pushed_answers_tf_examples(case: zoo.ZooCase, serving) -> None:
    """The pushed version of the TFX-template model answers a tf.Example request as TF Serving
    runs it (a session fed by the SignatureDef's tensor names), with the baseline's signature,
    and its top-1 on the eval examples is the pushed Keras model's and within the gate's bound
    of the baseline's."""
    import numpy as np

    from components.common import examples as examples_lib
    from components.common import model_io
    from components.common.examples import DataConfig
    from tests.test_signatures import tf_serving_predict

    versions = sorted(p for p in serving.iterdir() if p.name.isdigit())
    pushed = str(versions[-1])
    files = examples_lib.split_files(case.examples_dir, "eval")
    serialized = list(examples_lib.iter_serialized(files))
    x, labels = examples_lib.load_arrays(
        case.examples_dir, "eval", DataConfig(), model_io.load_keras_model(case.model_dir)
    )
    before, before_sig = tf_serving_predict(case.model_dir, serialized)
    after, after_sig = tf_serving_predict(pushed, serialized)
    assert list(after_sig.inputs) == list(before_sig.inputs) == ["examples"]
    assert sorted(after_sig.outputs) == sorted(before_sig.outputs) == ["outputs"]
    assert after["outputs"].shape == before["outputs"].shape
    keras_top1 = np.argmax(model_io.load_keras_model(pushed).predict(x, verbose=0), axis=1)
    np.testing.assert_array_equal(np.argmax(after["outputs"], axis=1), keras_top1)
    drop = np.mean(np.argmax(before["outputs"], 1) == labels) - np.mean(keras_top1 == labels)
    assert drop * 100 <= GENERIC["evaluator"]["rules"]["max_accuracy_drop_points"] + 1e-9


def _check_pushed_answers_raw_tf_examples(case: zoo.ZooCase, serving) -> None:
    """The pushed version of the Transform model answers a raw tf.Example request as TF Serving
    runs it (raw features in: the Transform graph travelled with it), with the baseline's
    signature; its top-1 on the raw eval examples is the pushed Keras model's on the transformed
    features of the same examples, and within the gate's bound of the baseline's on the
    labels."""
    import numpy as np

    from components.common import examples as examples_lib
    from components.common import model_io
    from components.common.examples import DataConfig
    from tests.test_signatures import tf_serving_predict

    versions = sorted(p for p in serving.iterdir() if p.name.isdigit())
    pushed = str(versions[-1])
    data = DataConfig(**case.config["data"])
    raw_dir = data.raw_examples or case.examples_dir
    serialized = list(examples_lib.iter_serialized(examples_lib.split_files(raw_dir, "eval")))
    x, labels = examples_lib.load_arrays(
        case.examples_dir, "eval", data, model_io.load_keras_model(case.model_dir)
    )
    assert len(serialized) == len(labels)
    before, before_sig = tf_serving_predict(case.model_dir, serialized)
    after, after_sig = tf_serving_predict(pushed, serialized)
    assert list(after_sig.inputs) == list(before_sig.inputs) == ["examples"]
    assert sorted(after_sig.outputs) == sorted(before_sig.outputs) == ["outputs"]
    assert after["outputs"].shape == before["outputs"].shape == (len(labels), 3)
    keras_top1 = np.argmax(model_io.load_keras_model(pushed).predict(x, verbose=0), axis=1)
    np.testing.assert_array_equal(np.argmax(after["outputs"], axis=1), keras_top1)
    drop = np.mean(np.argmax(before["outputs"], 1) == labels) - np.mean(keras_top1 == labels)
    assert drop * 100 <= GENERIC["evaluator"]["rules"]["max_accuracy_drop_points"] + 1e-9
