"""The model zoo end to end: each model through ``tfxopt run`` (the local pipeline) to a decision.

One generic config for all (prune 0.6, cluster 16 with sparsity kept, float32 / dynamic-range /
full-int8 candidates, a 2-point drop gate or the task's equivalent, a serving push); only the
label key changes per model, the regression model's gate uses the task's equivalent rule (MAE at
most 10% worse), and the text model's full_int8 candidate leaves its embedding in float, as the
quantizer's error tells a user to. Each run must end
with the task inferred as expected, every step complete and a gate decision; a multi-output model
must fail at preflight with a clear message. With ``TFXOPT_ZOO_REPORT=path`` each run's task,
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
    values = [m["accuracy"] for m in summary["models"]]
    assert all(isinstance(v, float) and math.isfinite(v) for v in values), values
    if gate["blessed"]:
        assert (tmp_path / "out" / "serving" / "zoo").is_dir()
    record = _record(case, summary)
    report = os.environ.get("TFXOPT_ZOO_REPORT")
    if report:
        with open(report, "a") as f:
            f.write(json.dumps(record) + "\n")
