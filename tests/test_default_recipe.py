"""`tfxopt run` without --config: the default recipe (pipelines/configs/default.yaml)."""

from __future__ import annotations

import os

import pytest

from pipelines.config import DEFAULT_CONFIG, default_run_config


def test_default_recipe_covers_size_and_speed_with_a_documented_gate():
    config = default_run_config("/models/digits")
    plan = config.plan()
    assert 2 <= len(plan.candidates) <= 4
    kinds = {node.kind for node in plan.stages}
    assert {"pruner", "clusterer", "structured", "quantization"} <= kinds  # size and speed
    rules = config.evaluator.rules
    assert rules.max_accuracy_drop_points == 1.0 and rules.min_speedup == 1.0
    assert config.evaluator.objective == "smallest"
    assert config.pusher is None  # no destination given: nothing is pushed
    with open(DEFAULT_CONFIG) as f:
        assert "names:" not in f.read()  # no layer names: any classifier


@pytest.mark.parametrize(
    ("model", "name"),
    [("/m/digits", "digits"), ("/m/run 7/Format-Serving/", "run_7"), ("/m/.x", "x")],
)
def test_serving_destination_names_the_model_after_its_directory(tmp_path, model, name):
    config = default_run_config(model, "serving")
    assert config.pusher.model_name == name
    [destination] = config.pusher.serving
    assert destination.base_directory == os.path.abspath("serving")


def test_default_recipe_text_and_choice_text():
    from pipelines.report import console

    text = console.default_recipe_text(default_run_config("/m/digits"))
    assert "small: structured 50% -> cluster 16 -> full_int8" in text
    assert "pruned_int8: prune 80% -> cluster 16 -> full_int8" in text
    assert "fast_float32: structured 50% -> float32" in text
    assert "accuracy drop <= 1 point(s)" in text and "push: none" in text
    evaluation = {
        "decision": {
            "blessed": True,
            "selected": "fast_float32",
            "reason": "'fast_float32' passed every rule and is smallest",
            "ranking": ["fast_float32", "fast_int8"],
        },
        "candidates": [
            {"name": "small", "rejected_because": ["p50 speed-up 0.8 < 1.0"]},
            {"name": "fast_float32", "rejected_because": []},
            {"name": "fast_int8", "rejected_because": []},
        ],
    }
    assert console.choice_text(evaluation).splitlines() == [
        "chose 'fast_float32': 'fast_float32' passed every rule and is smallest",
        "  small: rejected: p50 speed-up 0.8 < 1.0",
        "  fast_int8: passed, ranked 2 of 2",
    ]


def test_serving_flag_with_a_config_that_makes_no_candidate_is_refused(tmp_path, capsys):
    """--serving goes with --config too (tests/test_cli.py); a config with nothing to push is
    refused before any work, naming why."""
    from pipelines import cli

    config = tmp_path / "c.yaml"
    config.write_text("pipeline_name: x\n")
    argv = ["run", "--model", "m", "--examples", "e", "--config", str(config)]
    assert cli.main([*argv, "--serving", str(tmp_path / "s")]) == 2
    assert "--serving: the config makes no candidate" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
@pytest.mark.e2e
def test_tfxopt_run_without_config_runs_the_default_recipe(tmp_path, reference_data, capsys):
    from pipelines import cli

    out, serving = tmp_path / "out", tmp_path / "serving"
    argv = ["run", "--model", reference_data["model"], "--examples", reference_data["examples"]]
    assert cli.main([*argv, "--output", str(out), "--serving", str(serving)]) == 0
    printed = capsys.readouterr().out
    assert "no --config: the default recipe" in printed
    for node in ("Pruner_s80", "StructuredPruner_f50", "Clusterer_f50_c16", "Evaluator"):
        assert f"  {node} " in printed and "FAILED" not in printed
    [choice] = [line for line in printed.splitlines() if line.startswith("chose ")]
    if choice.startswith("chose nothing"):
        assert not serving.exists()
    else:
        assert os.listdir(serving / "model") != []
        assert "Pusher" in printed
