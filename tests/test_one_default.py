"""One default everywhere: ``run``, ``compile`` and ``watch`` without ``--config`` use the default
recipe (``pipelines/configs/default.yaml``), and an absent ``evaluator`` means the same thing in the
config schema and in the Evaluator's warning."""

from __future__ import annotations

import logging
import os

import pytest

from pipelines import cli
from pipelines.config import (
    PipelineConfig,
    default_config,
    default_config_for_task,
    default_run_config,
)
from pipelines.kubeflow import commands as kubeflow_commands


def _args(*argv: str):
    return cli.build_parser().parse_args(list(argv))


def _stages(config: PipelineConfig) -> list[str]:
    return sorted(node.node_id for node in config.plan().stages)


def test_the_default_recipe_is_what_run_runs_for_its_task():
    run_config = default_run_config("/models/digits")  # run, task multiclass, nothing pushed
    assert default_config("multiclass") == run_config
    assert run_config.pusher is None and run_config.candidates and run_config.evaluator
    # the task picks the recipe: the multiclass one uses structured pruning, regression's not
    assert any(n.startswith("StructuredPruner") for n in _stages(run_config))
    assert not any(n.startswith("StructuredPruner") for n in _stages(default_config("regression")))


@pytest.mark.parametrize("command", ["compile --output p.yaml", "watch --checkpoints gs://b/x"])
def test_compile_and_watch_without_config_take_the_default_recipe(command, capsys):
    args = _args(*command.split())
    config, kubeflow = kubeflow_commands.configs_or_default(args)
    assert config == default_config("multiclass")
    assert kubeflow == config.kubeflow
    assert "no --config: the default recipe (pipelines/configs/default.yaml) for task " \
        "multiclass" in capsys.readouterr().err  # fmt: skip

    regression, _ = kubeflow_commands.configs_or_default(_args(*command.split(), "--task",
                                                               "regression"))  # fmt: skip
    assert regression == default_config("regression") != config


def test_task_with_config_is_refused(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("pipeline_name: mine\n")
    status = cli.main(["compile", "--config", str(path), "--task", "binary"])
    assert status == 2
    assert "with --config, set data.task" in capsys.readouterr().err


def test_compile_without_config_compiles_the_default_recipe(tmp_path, capsys):
    package = tmp_path / "pipeline.yaml"
    assert cli.main(["compile", "--output", str(package)]) == 0
    from pipelines.kubeflow.runner import load_package

    tasks = set(load_package(str(package)).pipeline_spec.root.dag.tasks)
    assert set(_stages(default_config("multiclass"))) <= tasks
    assert {"Evaluator", "BaselineProfiler"} <= tasks
    assert "Pusher" not in tasks  # the default recipe pushes nothing unless told where


def test_watch_kfp_without_config_compiles_the_default_recipe(tmp_path):
    from pipelines.kubeflow.runner import load_package

    (tmp_path / "exports").mkdir()
    status = cli.main(
        ["watch", "--checkpoints", str(tmp_path / "exports"), "--submitter", "kfp", "--once",
         "--state-dir", str(tmp_path / "state"), "--host", "http://127.0.0.1:9",
         "--examples", "gs://b/examples"]
    )  # fmt: skip
    assert status == 0  # an empty prefix: nothing submitted, the host never contacted
    tasks = set(
        load_package(str(tmp_path / "state" / "pipeline.yaml")).pipeline_spec.root.dag.tasks
    )
    assert set(_stages(default_config("multiclass"))) | {"Evaluator"} <= tasks


@pytest.mark.e2e
def test_watch_local_without_config_fits_the_default_recipe_to_each_checkpoint(reference_data):
    from pipelines import watcher

    submitter = watcher.LocalSubmitter(None, reference_data["examples"], "/unused")
    config = submitter.config_for(reference_data["model"])
    expected = default_config_for_task(default_run_config(reference_data["model"]), "multiclass")
    assert config == expected


def test_absent_evaluator_means_the_same_in_the_schema_and_the_evaluator(caplog, tmp_path):
    """The schema's words for an absent evaluator are the Evaluator's warning when it is built."""
    from components.evaluator.constants import NO_RULES_MEANING
    from pipelines.pipeline import create_pipeline

    description = PipelineConfig.model_fields["evaluator"].description
    assert NO_RULES_MEANING in description and "blesses nothing" in description
    config = PipelineConfig.parse({"quantization": [{"mode": "dynamic_range"}]})
    assert config.evaluator is None
    with caplog.at_level(logging.WARNING):
        create_pipeline(config, "/m", "/e", str(tmp_path))
    warnings = [r.getMessage() for r in caplog.records if "blesses nothing" in r.getMessage()]
    assert warnings == [f"evaluator: {NO_RULES_MEANING}"]
    # and a config that sets a rule is not warned about
    caplog.clear()
    ruled = PipelineConfig.parse(
        {**config.model_dump(exclude={"evaluator"}), "evaluator": {"rules": {"min_speedup": 1}}}
    )
    with caplog.at_level(logging.WARNING):
        create_pipeline(ruled, "/m", "/e", str(tmp_path))
    assert not [r for r in caplog.records if "blesses nothing" in r.getMessage()]


def test_default_yaml_has_a_gate_for_every_task():
    for task in ("multiclass", "binary", "multilabel", "regression", "dense"):
        rules = default_config(task).evaluator.rules
        assert rules.configured(), task  # never the bless-nothing gate
        assert rules.min_speedup == 1.0  # latency judged relative to the baseline
    assert os.path.isfile(os.path.join(os.path.dirname(cli.__file__), "configs", "default.yaml"))
