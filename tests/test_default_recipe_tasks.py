"""`tfxopt run` without --config on models of every task: the default recipe (
pipelines/configs/default.yaml) picks recipes and a gate rule that fit the model's task, and finds
a label that is not called `label`.

The zoo's binary, multi-label, regression and segmentation models (tests/zoo.py) each pass
preflight with the recipe chosen for their task (no structured pruning, which scores multiclass
classifiers only; a drop rule in the task's metric); the binary one runs end to end through the
CLI to a gate decision that agrees with its rules; residual_bn's label is `target`, found without
a flag; Examples with two features the model does not take are refused in one line.
"""

from __future__ import annotations

import json
import operator
import os

import numpy as np
import pytest

from components.common.errors import ConfigError
from components.common.metrics import TASKS
from pipelines.config import default_config_for_task, default_run_config

NON_MULTICLASS = {
    "binary": ("binary_sigmoid", "label"),
    "multilabel": ("multilabel_sigmoid", "tags"),
    "regression": ("regression_linear", "value"),
    "dense": ("unet_segmentation", "mask"),
}


def _stage_kinds(config) -> set[str]:
    return {node.kind for node in config.plan().stages}


@pytest.fixture(scope="module")
def zoo_cases(tmp_path_factory):
    """name -> ZooCase, built on first use (each trains a small model for a few seconds)."""
    from tests import zoo

    root = tmp_path_factory.mktemp("zoo")
    built = {}

    def case(name: str):
        if name not in built:
            built[name] = zoo.BUILDERS[name](str(root / name))
        return built[name]

    return case


# ----------------------------------------------------------------------------- the recipe book


@pytest.mark.parametrize("task", TASKS)
def test_every_task_has_recipes_and_a_gate_rule_that_fit_it(task):
    config = default_run_config("/m/model", task=task)
    assert 3 <= len(config.plan().candidates) <= 4
    kinds = _stage_kinds(config)
    assert ("structured" in kinds) == (task == "multiclass")  # structured: multiclass only
    assert {"pruner", "clusterer", "quantization"} <= kinds
    evaluator = config.evaluator
    assert evaluator.rule_problems(task) == []
    rules = evaluator.rules
    if task == "regression":
        assert rules.max_accuracy_drop_points is None
        assert rules.max_relative_error_increase == 0.05
    else:
        assert rules.max_accuracy_drop_points == 1.0
        assert rules.max_relative_error_increase is None
    # The int8 candidate of the model as it is spares layers until it fits the gate's own rule.
    control = config.candidates["int8"].quantization.accuracy_control
    if task == "regression":
        assert control.max_relative_error_increase == rules.max_relative_error_increase
    else:
        assert control.max_drop_points == rules.max_accuracy_drop_points
    # common to every task
    assert rules.min_speedup == 1.0 and rules.latency_statistic == "p50"
    assert evaluator.objective == "smallest" and evaluator.latency.timed_runs == 500
    assert config.data.label_key == "label" and config.pusher is None


def test_the_task_recipe_keeps_the_label_key_and_the_push_and_replaces_candidates_and_gate():
    multiclass = default_run_config("/m/digits", "serving", label_key="target")
    regression = default_config_for_task(multiclass, "regression")
    assert regression.data.label_key == "target"
    assert regression.pusher.model_name == "digits"
    assert "structured" not in _stage_kinds(regression)
    assert regression.evaluator.rules.max_accuracy_drop_points is None
    assert default_config_for_task(regression, "multiclass") == multiclass


@pytest.mark.parametrize("task", ["binary", "regression"])
def test_recipe_text_shows_what_runs_for_the_task(task):
    from pipelines.report import console

    text = console.default_recipe_text(default_run_config("/m/x", task=task), task)
    assert f"the default recipe for a {task} model" in text and f"tasks.{task}" in text
    assert "small: prune 80% -> cluster 16 -> full_int8" in text
    assert "pruned50_int8: prune 50% -> full_int8" in text and "structured" not in text
    if task == "regression":
        assert "MAE increase <= 5% of the baseline's" in text and "accuracy" not in text
    else:
        assert "accuracy drop <= 1 point(s)" in text
    assert "p50 latency speed-up >= 1x" in text


def test_a_recipe_book_without_a_task_fails_naming_it(tmp_path, monkeypatch):
    import yaml

    from pipelines import config as config_lib

    with open(config_lib.DEFAULT_CONFIG) as f:
        book = yaml.safe_load(f)
    del book["tasks"]["dense"]
    path = tmp_path / "default.yaml"
    path.write_text(yaml.safe_dump(book))
    monkeypatch.setattr(config_lib, "DEFAULT_CONFIG", str(path))
    with pytest.raises(ConfigError, match="tasks.dense.candidates is missing"):
        default_run_config("/m/x", task="binary")


# ----------------------------------------------------------------------------- preflight


@pytest.mark.parametrize("task", list(NON_MULTICLASS))
def test_the_task_recipe_passes_preflight_where_the_multiclass_one_is_refused(task, zoo_cases):
    from pipelines.local import preflight

    name, label = NON_MULTICLASS[task]
    case = zoo_cases(name)
    base = default_run_config(case.model_dir)
    label_key, found = preflight.task_for_default_recipe(
        base, case.model_dir, case.examples_dir, label_key_given=False
    )
    assert (label_key, found.kind) == (label, task)
    base = default_run_config(case.model_dir, label_key=label_key)
    refused = "does not fit task regression" if task == "regression" else "structured pruning"
    with pytest.raises(ConfigError, match=refused):  # the multiclass recipe, the old default
        preflight.check_inputs(base, case.model_dir, case.examples_dir)
    config = default_config_for_task(base, task)
    assert "structured" not in _stage_kinds(config)
    assert config.evaluator.rule_problems(task) == []
    assert preflight.check_inputs(config, case.model_dir, case.examples_dir).kind == task


# ----------------------------------------------------------------------------- the label key


@pytest.mark.parametrize(
    ("features", "expected"),
    [
        (["image", "target"], ["target"]),  # the input's feature is taken by name
        (["image", "weight", "y"], ["weight", "y"]),
        (["image"], []),
        (["pixels", "y"], ["pixels", "y"]),  # not named like the input: fed in order
        (["pixels"], []),
    ],
)
def test_label_candidates_are_the_features_no_input_takes(features, expected):
    import tf_keras

    from pipelines.local import preflight

    inputs = tf_keras.layers.Input((4,), name="image")
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(1)(inputs))
    assert preflight.label_candidates(dict.fromkeys(features), model) == expected


def _run_until_the_pipeline(monkeypatch, argv) -> tuple[int, dict]:
    """``cli.main(argv)`` up to the pipeline: run_local records the config it is given and stops."""
    from components.common.errors import TfxOptError
    from pipelines import cli
    from pipelines.local import runner

    seen = {}

    def stop(config, model, examples, output):
        seen["config"] = config
        raise TfxOptError("stopped before the pipeline")

    monkeypatch.setattr(runner, "run_local", stop)
    return cli.main(argv), seen


def test_a_label_not_called_label_is_found(zoo_cases, tmp_path, monkeypatch, capsys):
    case = zoo_cases("residual_bn")
    argv = ["run", "--model", case.model_dir, "--examples", case.examples_dir]
    rc, seen = _run_until_the_pipeline(monkeypatch, [*argv, "--output", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert rc == 2 and seen["config"].data.label_key == "target"
    assert "tfxopt: label: 'target'" in out and "--label-key" in out
    assert "the default recipe for a multiclass model" in out
    assert "small: structured 50% -> cluster 16 -> full_int8" in out  # multiclass: structured


def test_label_key_flag(zoo_cases, tmp_path, monkeypatch, capsys):
    case = zoo_cases("residual_bn")
    argv = ["run", "--model", case.model_dir, "--examples", case.examples_dir]
    argv += ["--output", str(tmp_path / "out")]
    rc, seen = _run_until_the_pipeline(monkeypatch, [*argv, "--label-key", "target"])
    captured = capsys.readouterr()
    assert rc == 2 and seen["config"].data.label_key == "target"
    assert "tfxopt: label:" not in captured.out  # given, not inferred
    seen.clear()
    rc, seen = _run_until_the_pipeline(monkeypatch, [*argv, "--label-key", "digit"])
    err = capsys.readouterr().err
    assert rc == 2 and not seen
    assert "tfxopt: error: --label-key 'digit' is not a feature" in err and "'target'" in err
    assert not (tmp_path / "out").exists()


def test_label_key_flag_overrides_a_config(zoo_cases, tmp_path, monkeypatch):
    case = zoo_cases("residual_bn")
    config = tmp_path / "c.yaml"
    config.write_text("pipeline_name: x\nquantization: [{mode: none}]\n")
    argv = ["run", "--model", case.model_dir, "--examples", case.examples_dir]
    argv += ["--config", str(config), "--label-key", "target", "--output", str(tmp_path / "o")]
    _, seen = _run_until_the_pipeline(monkeypatch, argv)
    assert seen["config"].data.label_key == "target"


def _examples_with(root, case, extra: dict) -> str:
    """The case's Examples again, with ``extra`` features (name -> values per example)."""
    import tensorflow as tf

    from tests import zoo

    for split in ("train", "eval"):
        files = tf.io.gfile.glob(os.path.join(case.examples_dir, f"Split-{split}", "*"))
        records = [
            tf.train.Example.FromString(r.numpy())
            for r in tf.data.TFRecordDataset(files, compression_type="GZIP")
        ]
        features = {
            name: np.array([list(getattr(e.features.feature[name], kind).value) for e in records])
            for name, kind in (("image", "float_list"), ("label", "int64_list"))
        }
        features = {"image": features["image"], "y": features["label"][:, 0]}
        features.update({k: v(len(records)) for k, v in extra.items()})
        zoo.write_split(os.path.join(root, f"Split-{split}", "data.gz"), features)
    return root


def test_two_features_that_could_be_the_label_fail_in_one_line(
    zoo_cases, tmp_path, capsys, monkeypatch
):
    case = zoo_cases("binary_sigmoid")
    weights = {"weight": lambda n: np.ones(n, dtype=np.float32)}
    examples = _examples_with(str(tmp_path / "examples"), case, weights)
    out = tmp_path / "out"
    argv = ["run", "--model", case.model_dir, "--examples", examples, "--output", str(out)]
    rc, seen = _run_until_the_pipeline(monkeypatch, argv)
    captured = capsys.readouterr()
    assert rc == 2 and not seen
    [line] = [x for x in captured.err.splitlines() if x.startswith("tfxopt: error:")]
    assert captured.err.strip().endswith(line)
    assert "2 features could be the label: 'weight', 'y'" in line
    assert "the model's inputs: image" in line and "--label-key" in line
    assert "Traceback" not in captured.out + captured.err
    assert not out.exists()  # nothing written
    # the flag settles it
    rc, seen = _run_until_the_pipeline(monkeypatch, [*argv, "--label-key", "y"])
    assert seen["config"].data.label_key == "y"
    assert "the default recipe for a binary model" in capsys.readouterr().out


# ----------------------------------------------------------------------------- end to end

_OPS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}


@pytest.mark.e2e
def test_binary_model_runs_the_default_recipe_to_a_decision_its_rules_explain(
    zoo_cases, tmp_path, capsys
):
    from pipelines import cli

    case = zoo_cases("binary_sigmoid")
    out = tmp_path / "out"
    argv = ["run", "--model", case.model_dir, "--examples", case.examples_dir]
    assert cli.main([*argv, "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "the default recipe for a binary model" in printed and "FAILED" not in printed
    for node in ("Pruner_s80", "Pruner_s50", "Quantizer_int8", "Evaluator"):
        assert f"  {node} " in printed
    assert "StructuredPruner" not in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"]["kind"] == "binary" and not summary["failed_steps"]
    gate = summary["gate"]
    assert gate["rules"]["max_accuracy_drop_points"] == 1.0 and gate["rules"]["min_speedup"] == 1.0
    candidates = [m for m in summary["models"] if m["role"] == "candidate"]
    assert {m["name"] for m in candidates} == {"small", "pruned50_int8", "int8", "dynamic_range"}
    passing = []
    for model in candidates:
        rules = {r["rule"]: r for r in model["rules"]}
        assert set(rules) == {"max_accuracy_drop_points", "min_speedup"}, model["name"]
        for rule in rules.values():  # each verdict is its value against its threshold
            assert rule["passed"] == _OPS[rule["op"]](rule["value"], rule["threshold"]), rule
        assert model["passed_all"] == all(r["passed"] for r in rules.values())
        assert bool(model["rejected_because"]) != model["passed_all"]
        if model["passed_all"]:
            passing.append(model)
    assert gate["blessed"] == bool(passing), gate["reason"]
    if passing:  # the smallest (gzip) of those that passed every rule
        smallest = min(passing, key=lambda m: (m["size"]["gzip_bytes"], m["name"]))
        assert gate["selected"] == smallest["name"]
        assert f"chose {smallest['name']!r}" in printed
    else:
        assert gate["selected"] is None and "chose nothing" in printed


def test_task_flag_overrides_the_inferred_task_before_any_step(zoo_cases, tmp_path, capsys):
    """``--task`` sets data.task: a binary model run as ``dense`` is refused by the task check at
    preflight (nothing written), and an unknown task is refused by the parser."""
    from pipelines import cli

    case = zoo_cases("binary_sigmoid")
    out = tmp_path / "out"
    argv = ["run", "--model", case.model_dir, "--examples", case.examples_dir]
    assert cli.main([*argv, "--task", "dense", "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "tfxopt: error:" in err and "dense" in err
    assert not (out / "pipeline-root").exists()
    with pytest.raises(SystemExit) as parsed:
        cli.main([*argv, "--task", "ordinal", "--output", str(out)])
    assert parsed.value.code == 2
    assert "invalid choice: 'ordinal'" in capsys.readouterr().err
