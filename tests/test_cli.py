"""The ``tfxopt`` command line as CI uses it: version, global flags, exit statuses, ``--json``,
``--config`` with ``--serving``. Fast: nothing here runs a pipeline (tests/test_cli_run.py does)."""

from __future__ import annotations

import json
import os
import re

import pytest
import yaml

from components.common.errors import ConfigError
from pipelines import cli
from pipelines.config import PipelineConfig, with_serving

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pyproject_version() -> str:
    with open(os.path.join(REPO_ROOT, "pyproject.toml")) as f:
        return re.search(r'^version = "([^"]+)"', f.read(), re.M).group(1)


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"tfxopt {_pyproject_version()}"


@pytest.mark.parametrize(
    "argv",
    [
        ["report", "out"],
        ["compile", "--output", "p.yaml"],
        ["watch", "--checkpoints", "gs://b/exports", "--once"],
        ["ota-keygen", "k.pem"],
        ["run", "--model", "m", "--examples", "e"],
    ],
)
def test_verbose_is_accepted_before_or_after_every_subcommand(argv):
    parser = cli.build_parser()
    assert parser.parse_args(argv).verbose is False
    assert parser.parse_args(["-v", *argv]).verbose is True
    assert parser.parse_args([*argv, "-v"]).verbose is True
    assert parser.parse_args([argv[0], "--verbose", *argv[1:]]).verbose is True


def test_every_subcommand_takes_the_global_flags():
    parser = cli.build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    assert {"run", "report", "compile", "submit", "schedule", "watch", "ota-keygen"} <= set(
        sub.choices
    )
    for name, command in sub.choices.items():
        flags = {flag for action in command._actions for flag in action.option_strings}
        assert {"-v", "--verbose"} <= flags, name


@pytest.mark.parametrize(
    "summary, require, all_failed, status",
    [
        ({"gate": {"blessed": True}}, False, False, 0),
        ({"gate": {"blessed": True}}, True, False, 0),
        ({"gate": {"blessed": False}}, False, False, 0),  # a verdict, not a failure
        ({"gate": {"blessed": False}}, True, False, 3),
        ({}, True, False, 3),  # no gate: nothing was blessed
        ({"gate": {"blessed": False}}, True, True, 1),  # no candidate built: a failed run
        ({"gate": {"blessed": True}}, False, True, 1),
    ],
)
def test_exit_status_of_a_finished_run(summary, require, all_failed, status):
    assert cli.outcome_status(summary, require, all_failed=all_failed) == status


def test_bad_input_exits_2_and_json_prints_one_document_on_stdout(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    status = cli.main(
        ["run", "--model", "m", "--examples", "e", "--config", str(missing), "--json"]
    )
    assert status == cli.EXIT_BAD_INPUT
    out, err = capsys.readouterr()
    document = json.loads(out)  # the whole of stdout is one JSON document
    assert document["exit_status"] == 2
    assert str(missing) in document["error"]
    assert f"tfxopt: error: config file {str(missing)!r} does not exist" in err


def test_without_json_the_error_goes_to_stderr_only(tmp_path, capsys):
    status = cli.main(["run", "--model", "m", "--examples", "e", "--config", str(tmp_path / "x")])
    assert status == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("tfxopt: error: config file")


def test_argparse_errors_exit_2():
    with pytest.raises(SystemExit) as done:
        cli.main(["run", "--model", "m"])  # --examples missing
    assert done.value.code == 2


def test_report_needs_a_directory_or_a_kubeflow_run(capsys):
    assert cli.main(["report"]) == 2
    assert "give the --output directory" in capsys.readouterr().err
    assert cli.main(["report", "--kubeflow", "run-1"]) == 2
    assert "--metadata" in capsys.readouterr().err


def test_report_of_a_directory_without_a_store_exits_2(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path), "--json"]) == 2
    document = json.loads(capsys.readouterr().out)
    assert document["exit_status"] == 2 and "no ML Metadata store" in document["error"]


# -- --config with --serving --------------------------------------------------------------------
def _config(pusher=None) -> PipelineConfig:
    data = {"quantization": [{"mode": "dynamic_range"}]}
    if pusher:
        data["pusher"] = pusher
    return PipelineConfig.parse(data)


def test_serving_replaces_the_configs_serving_and_keeps_its_ota(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = _config(
        {
            "model_name": "digits",
            "serving": [{"base_directory": "/srv/old", "labels": ["stable"], "keep_last": 2}],
            "ota": [{"base_directory": "/srv/ota", "signing_key_path": "/k/ota.pem"}],
        }
    )
    pushed = with_serving(config, "/models/7", "repo")
    (serving,) = pushed.pusher.serving
    assert serving.base_directory == str(tmp_path / "repo")  # relative to where it was typed
    assert (serving.labels, serving.keep_last) == (["stable"], 2)  # the config's settings kept
    assert pushed.pusher.model_name == "digits"
    assert [o.base_directory for o in pushed.pusher.ota] == ["/srv/ota"]


def test_serving_gives_a_config_without_pusher_one_named_after_the_checkpoint(tmp_path):
    pushed = with_serving(_config(), str(tmp_path / "exports" / "my model"), "/srv/repo")
    assert pushed.pusher.model_name == "my_model"
    assert [s.base_directory for s in pushed.pusher.serving] == ["/srv/repo"]
    assert pushed.pusher.ota == []


def test_serving_with_a_config_that_makes_no_candidate_is_refused():
    with pytest.raises(ConfigError, match="--serving: the config makes no candidate"):
        with_serving(PipelineConfig(), "/models/7", "/srv/repo")


def test_run_accepts_config_with_serving_on_the_command_line(tmp_path, capsys):
    """The command line combines them (it used to refuse); bad inputs still fail first."""
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"quantization": [{"mode": "dynamic_range"}]}))
    status = cli.main(
        ["run", "--model", str(tmp_path / "absent"), "--examples", "e", "--config", str(config),
         "--serving", str(tmp_path / "srv")]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert status == 2 and "--serving goes with the default recipe" not in err
    assert "absent" in err  # refused for the missing model, after the config was combined
    assert not (tmp_path / "srv").exists()
