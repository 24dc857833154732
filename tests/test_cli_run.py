"""`tfxopt run` through the command line, as a user runs it: a subprocess, its exit status and output.

One module-scoped output directory carries a short story, each test one chapter of it (they run
in file order and share the runs, so the whole module costs four small pipeline runs):

1. the first run succeeds: exit 0, the summary printed, ``report.html`` and ``summary.json``
   written and consistent with what ML Metadata recorded, one serving version, a signed release;
2. an identical second run reuses EVERY step (state ``CACHED``) and pushes nothing new;
3. a new checkpoint whose push destination refuses writes (permission denied): exit 1, one
   ``tfxopt: error:`` line naming the path, no traceback, the previous release intact;
4. the next run, with the destination writable again, completes that push (and only the Pusher
   runs again: every other step is served from the cache);
5. ``tfxopt report --run-id`` rebuilds the report of the first run, not the newest;
6. a gate nothing can pass, run as CI runs it (``--json --require-blessing``): exit 3, stdout one
   JSON document (the summary), progress on stderr, nothing pushed.

The inputs are a small two-layer classifier on 64 synthetic features (two checkpoints, two seeds),
so a run is seconds of TensorFlow, not minutes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

pytestmark = pytest.mark.e2e

PIPELINE = "cli"
MODEL_NAME = "tiny"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = {
    "pipeline_name": PIPELINE,
    "profiler": {"warmup_runs": 2, "timed_runs": 10, "throughput_runs": 1, "measure_memory": False},
    "profile_candidates": False,
    "quantization": [{"mode": "none", "name": "float32"}],
    "evaluator": {"rules": {"max_accuracy_drop_points": 25.0}, "latency": {"measure": False}},
    "pusher": {
        "model_name": MODEL_NAME,
        "serving": [{"base_directory": "serving"}],
        "ota": [{"base_directory": "ota", "channel": "canary", "signing_key_path": "keys/ota.pem"}],
    },
}


@pytest.fixture(scope="module")
def story(tmp_path_factory):
    """The inputs (two checkpoints, Examples, config, signing key) and the shared output dir."""
    from components.pusher import signing
    from tests.small_inputs import train_small_classifier, write_learnable_examples

    root = tmp_path_factory.mktemp("cli-run")
    x_train, y_train = write_learnable_examples(str(root / "examples"))
    output = root / "out"
    signing.write_keypair(str(output / "keys" / "ota.pem"))
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    return {
        "models": [
            train_small_classifier(str(root / f"model-{seed}"), x_train, y_train, seed)
            for seed in (1, 2)
        ],
        "examples": str(root / "examples"),
        "config": str(config),
        "output": output,
        "runs": [],
    }


def _tfxopt(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": REPO_ROOT, "TF_USE_LEGACY_KERAS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *argv],
        capture_output=True, text=True, env=env, timeout=900, check=False,
    )  # fmt: skip


def _tfxopt_run(story, model: str, *flags: str, config: str | None = None):
    done = _tfxopt(
        "run", "--model", model, "--examples", story["examples"],
        "--config", config or story["config"], "--output", str(story["output"]), *flags,
    )  # fmt: skip
    story["runs"].append(done)
    return done


def _recorded(story):
    """The newest run of the pipeline as ML Metadata holds it: (run id, {node: state})."""
    from pipelines.metadata import reader

    connection = reader.sqlite_connection_config(str(story["output"] / "metadata.sqlite"))
    run_id, steps = reader.latest_run(connection, PIPELINE)
    return run_id, {s.node_id: s.state for s in steps}, steps


def _summary(story) -> dict:
    with open(story["output"] / "summary.json") as f:
        return json.load(f)


def _release(story) -> dict:
    """What readers see: served versions with their digests, and the verified OTA manifest."""
    from components.pusher import ota, serving, signing

    base = str(story["output"] / "serving")
    repo = serving.Repository(base, MODEL_NAME)
    config = serving.read_model_config(os.path.join(base, serving.MODEL_CONFIG_FILE))
    (entry,) = config.model_config_list.config
    listed = sorted(entry.model_version_policy.specific.versions)
    for version in listed:  # each listed version holds exactly its record's bytes
        digest, _ = serving.saved_model_digest(repo.version_dir(version))
        assert digest == repo.record(version)["digest"], version
    trusted = signing.trusted_keys(
        [signing.load_public_key(str(story["output"] / "keys" / "ota.pem.pub"))]
    )
    manifest = ota.verify_channel(str(story["output"] / "ota" / MODEL_NAME / "canary"), trusted)
    return {
        "served": listed,
        "versions": repo.versions(),
        "orphans": repo.orphans(),
        "digests": {v: repo.record(v)["digest"] for v in repo.versions()},
        "manifest": manifest,
    }


def test_run_succeeds_prints_the_summary_and_writes_a_report_consistent_with_mlmd(story):
    done = _tfxopt_run(story, story["models"][0])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    out = done.stdout
    assert f"tfxopt: running pipeline '{PIPELINE}' locally" in out
    assert "decision: BLESSED" in out and "version 1 (new version" in out, out
    html = story["output"] / "report.html"
    assert f"report:  {html}" in out and f"summary: {story['output'] / 'summary.json'}" in out

    run_id, states, steps = _recorded(story)
    assert set(states.values()) == {"COMPLETE"}, states
    summary = _summary(story)
    assert summary["run_id"] == run_id and summary["pipeline_name"] == PIPELINE
    assert {s["node_id"]: s["state"] for s in summary["steps"]} == states
    assert summary["failed_steps"] == []
    for step in steps:  # the printed summary names every step ML Metadata recorded
        assert step.node_id in out, step.node_id
    (blessing,) = next(s for s in steps if s.node_id == "Evaluator").outputs["blessing"]
    assert summary["gate"]["blessed"] is bool(blessing.custom_properties["blessed"].int_value)
    assert summary["gate"]["blessed"] is True
    (pushed,) = next(s for s in steps if s.node_id == "Pusher").outputs["pushed_model"]
    assert pushed.custom_properties["pushed"].int_value == 1
    assert pushed.custom_properties["pushed_version"].string_value == "1"
    release = _release(story)
    assert release["served"] == [1] and release["manifest"]["sequence"] == 1
    text = html.read_text()
    assert run_id in text and summary["gate"]["selected"] in text
    story["release"] = release
    story["first_run_id"] = run_id


def test_identical_second_run_reuses_every_step_and_pushes_nothing(story):
    assert story.get("release"), "needs the first run (test above)"
    first_id = _summary(story)["run_id"]
    done = _tfxopt_run(story, story["models"][0])
    assert done.returncode == 0, done.stderr[-3000:]
    run_id, states, _ = _recorded(story)
    assert run_id != first_id
    assert set(states.values()) == {"CACHED"}, states  # every step, not a sample of them
    assert _summary(story)["run_id"] == run_id
    assert _release(story) == story["release"]


def test_push_to_a_destination_that_refuses_writes_fails_cleanly_and_the_next_run_pushes(story):
    assert story.get("release"), "needs the first run"
    model_dir = story["output"] / "serving" / MODEL_NAME
    before = _snapshot(story["output"], ("serving", "ota"))
    with _unwritable(model_dir) as refusal:
        done = _tfxopt_run(story, story["models"][1])
    assert done.returncode == 1, (done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("tfxopt: error:")]
    assert len(errors) == 1, done.stderr[-3000:]
    assert errors[0].startswith("tfxopt: error: Pusher: PermissionError"), errors
    assert refusal in errors[0] and str(model_dir) in errors[0], errors
    _, states, _ = _recorded(story)
    assert states["Pusher"] == "FAILED", states
    # the previous release: byte-for-byte as it was (nothing half-written left), and verifying
    assert _snapshot(story["output"], ("serving", "ota")) == before
    assert _release(story) == story["release"]

    again = _tfxopt_run(story, story["models"][1])
    assert again.returncode == 0, again.stderr[-3000:]
    _, states, _ = _recorded(story)
    assert states.pop("Pusher") == "COMPLETE"
    assert set(states.values()) == {"CACHED"}, states  # only the failed step ran again
    release = _release(story)
    assert release["served"][-1] == 2 and release["manifest"]["sequence"] == 2
    assert release["digests"][1] == story["release"]["digests"][1]
    assert release["orphans"] == []


def test_report_of_an_earlier_run_by_its_id(story, tmp_path):
    assert story.get("first_run_id"), "needs the first run"
    newest = _summary(story)["run_id"]
    assert newest != story["first_run_id"]
    out = tmp_path / "first" / "report.html"
    done = _tfxopt(
        "report", str(story["output"]), "--run-id", story["first_run_id"], "--out", str(out),
        "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["run_id"] == story["first_run_id"] and summary["exit_status"] == 0
    with open(tmp_path / "first" / "summary.json") as f:
        written = json.load(f)
    assert written["run_id"] == story["first_run_id"]
    # the first run ran every step; the newest ran only the Pusher (the rest cached)
    assert {s["state"] for s in written["steps"]} == {"COMPLETE"}
    assert _summary(story)["run_id"] == newest  # the run's own summary.json is left alone

    unknown = _tfxopt("report", str(story["output"]), "--run-id", "no-such-run")
    assert unknown.returncode == 2
    assert "no run 'no-such-run'" in unknown.stderr, unknown.stderr[-2000:]


def test_require_blessing_exits_3_and_json_is_the_only_stdout(story, tmp_path):
    assert story.get("release"), "needs the earlier runs"
    before = _release(story)
    config = dict(CONFIG, evaluator={**CONFIG["evaluator"], "rules": {"max_size_bytes": 1}})
    path = tmp_path / "impossible.yaml"
    path.write_text(yaml.safe_dump(config))
    done = _tfxopt_run(story, story["models"][1], "--json", "--require-blessing", config=str(path))
    assert done.returncode == 3, (done.returncode, done.stderr[-3000:])
    summary = json.loads(done.stdout)  # all of stdout: one JSON document
    assert summary["exit_status"] == 3
    assert summary["gate"]["blessed"] is False and summary["gate"]["selected"] is None
    assert summary["run_id"] == _summary(story)["run_id"]
    assert "not blessed (--require-blessing)" in summary["error"]
    # what a person reads went to stderr: the progress, the gate table, the verdict
    assert f"tfxopt: running pipeline '{PIPELINE}' locally" in done.stderr
    assert "decision: NOT BLESSED" in done.stderr, done.stderr[-3000:]
    assert "tfxopt: error: not blessed (--require-blessing)" in done.stderr
    assert _release(story) == before  # nothing pushed


def _snapshot(root, subdirs) -> dict:
    """Every file under ``root/<subdir>`` and its bytes."""
    files = {}
    for subdir in subdirs:
        for directory, _, names in os.walk(os.path.join(root, subdir)):
            for name in names:
                path = os.path.join(directory, name)
                with open(path, "rb") as f:
                    files[os.path.relpath(path, root)] = f.read()
    return files


class _unwritable:
    """``path`` refuses new entries: chmod 0555 for a normal user, ``chattr +i`` for root.

    Root ignores permission bits, so as root the directory is made immutable instead (ext4, xfs,
    btrfs); the error is EACCES ("Permission denied") or EPERM ("Operation not permitted").
    Entering yields the words of the error the test expects to see.
    """

    def __init__(self, path):
        self.path = str(path)

    def __enter__(self) -> str:
        if os.geteuid() != 0:
            os.chmod(self.path, 0o555)
            return "Permission denied"
        done = subprocess.run(["chattr", "+i", self.path], capture_output=True, text=True)
        assert done.returncode == 0, (
            f"chattr +i {self.path} failed ({done.stderr.strip()}): as root this test needs a "
            "filesystem with the immutable attribute (ext4, xfs, btrfs) under pytest's tmp dir"
        )
        return "Operation not permitted"

    def __exit__(self, *exc):
        if os.geteuid() != 0:
            os.chmod(self.path, 0o755)
        else:
            subprocess.run(["chattr", "-i", self.path], check=True)
        return False
