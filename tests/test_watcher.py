"""``tfxopt watch`` on a local directory: new, partial, half-written and duplicate checkpoints.

Checkpoints are real tf_keras SavedModels (copied from one saved once); time is a controllable clock
so the stability window is tested without sleeping. The submitter is the watcher's plug-in point: a
recording one here, the local runner and the KFP one in the last tests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest

from components.common.errors import ConfigError
from pipelines import watcher as w
from tests.fake_kfp import FakeKfp

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN_PACKAGE = os.path.join(REPO_ROOT, "tests", "golden", "kfp_pipeline.yaml")


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    """Records each submission; thread-safe; can be told to fail."""

    def __init__(self, fail_times: int = 0):
        self.calls: list[str] = []
        self.fail_times = fail_times
        self._lock = threading.Lock()

    def __call__(self, uri: str, key: str) -> str:
        with self._lock:
            if self.fail_times:
                self.fail_times -= 1
                raise RuntimeError("cluster said no")
            self.calls.append(uri)
            return f"run-{len(self.calls)}"


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """One real SavedModel, written once by tf_keras."""
    import tf_keras

    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential(
        [tf_keras.layers.Input(shape=(64,), name="image"), tf_keras.layers.Dense(10, name="out")]
    )
    path = str(tmp_path_factory.mktemp("model") / "model")
    model.save(path)
    assert os.path.exists(os.path.join(path, w.SAVED_MODEL_PB))
    return path


def _checkpoint(saved_model: str, prefix, name: str) -> str:
    path = os.path.join(str(prefix), name)
    shutil.copytree(saved_model, path)
    return path


def _watcher(prefix, tmp_path, submitter, clock=None, **kwargs) -> w.Watcher:
    kwargs.setdefault("stable_seconds", 30)
    return w.Watcher(
        str(prefix),
        submitter,
        w.StateStore(str(tmp_path / "state")),
        clock=clock or Clock(),
        **kwargs,
    )


def test_a_new_checkpoint_is_submitted_once_after_it_is_stable(tmp_path, saved_model):
    prefix = tmp_path / "exports"
    prefix.mkdir()
    clock, submit = Clock(), Recorder()
    watch = _watcher(prefix, tmp_path, submit, clock)
    assert watch.poll_once() == []  # nothing there yet
    first = _checkpoint(saved_model, prefix, "1700000001")
    assert watch.poll_once() == []  # first seen: not yet known to be finished
    clock.now += 29
    assert watch.poll_once() == []
    clock.now += 2
    (record,) = watch.poll_once()
    assert record["checkpoint"] == first and record["run_id"] == "run-1"
    assert record["status"] == w.SUBMITTED
    clock.now += 100
    assert watch.poll_once() == []  # duplicate: already submitted
    second = _checkpoint(saved_model, prefix, "1700000002")
    watch.poll_once()
    clock.now += 31
    assert [r["checkpoint"] for r in watch.poll_once()] == [second]
    assert submit.calls == [first, second]


def test_one_scan_judges_a_checkpoint_by_the_age_of_its_newest_file(tmp_path, saved_model):
    """`watch --once` has no earlier listing: files unchanged for stable_seconds mean complete."""
    prefix = tmp_path / "exports"
    prefix.mkdir()
    old = _checkpoint(saved_model, prefix, "1700000001")
    fresh = _checkpoint(saved_model, prefix, "1700000002")
    now = time.time()
    for directory, _, files in os.walk(old):
        for name in files:
            os.utime(os.path.join(directory, name), (now - 31, now - 31))
    submit = Recorder()
    watch = _watcher(prefix, tmp_path, submit, clock=time.time, judge_by_mtime=True)
    assert [r["checkpoint"] for r in watch.poll_once()] == [old]
    # the fresh one (written just now) is not known to be finished: not submitted
    assert submit.calls == [old] and fresh not in submit.calls
    # without judge_by_mtime one scan submits nothing, however old the files
    assert _watcher(prefix, tmp_path / "b", Recorder(), clock=time.time).poll_once() == []


def test_partial_and_half_written_checkpoints_are_skipped(tmp_path, saved_model):
    prefix = tmp_path / "exports"
    prefix.mkdir()
    clock, submit = Clock(), Recorder()
    watch = _watcher(prefix, tmp_path, submit, clock)
    # Variables written, saved_model.pb not yet: not a SavedModel.
    partial = prefix / "partial"
    shutil.copytree(os.path.join(saved_model, "variables"), partial / "variables")
    # Work-in-progress names writers use before renaming.
    _checkpoint(saved_model, prefix, "temp-1700000009")
    _checkpoint(saved_model, prefix, ".staging")
    # saved_model.pb is there but files keep arriving: not finished until they stop.
    growing = _checkpoint(saved_model, prefix, "growing")
    for step in range(4):
        watch.poll_once()
        with open(os.path.join(growing, "assets.extra"), "a") as f:
            f.write("x" * (step + 1))
        clock.now += 20
    watch.poll_once()  # sees the last write
    assert submit.calls == []
    clock.now += 20  # unchanged for 20 s: not yet
    watch.poll_once()
    assert submit.calls == []
    clock.now += 15
    watch.poll_once()
    assert submit.calls == [growing]
    clock.now += 1000
    watch.poll_once()
    assert submit.calls == [growing]  # partial and in-progress ones never went


def test_marker_file_means_complete(tmp_path, saved_model, caplog):
    prefix = tmp_path / "exports"
    prefix.mkdir()
    clock, submit = Clock(), Recorder()
    watch = _watcher(prefix, tmp_path, submit, clock, marker="_DONE", stable_seconds=3600)
    ready = _checkpoint(saved_model, prefix, "a")
    assert watch.poll_once() == []  # no marker yet
    open(os.path.join(ready, "_DONE"), "w").close()
    assert [r["checkpoint"] for r in watch.poll_once()] == [ready]  # no waiting with a marker
    not_a_model = prefix / "b"
    not_a_model.mkdir()
    (not_a_model / "_DONE").write_text("")
    with caplog.at_level("WARNING"):
        assert watch.poll_once() == []
    assert "has the marker _DONE but no saved_model.pb" in caplog.text
    assert submit.calls == [ready]


def test_a_restarted_watcher_does_not_submit_again(tmp_path, saved_model):
    prefix = tmp_path / "exports"
    prefix.mkdir()
    ckpt = _checkpoint(saved_model, prefix, "1")
    submit = Recorder()
    first = _watcher(prefix, tmp_path, submit, stable_seconds=0)
    assert len(first.poll_once()) == 1
    again = _watcher(prefix, tmp_path, submit, stable_seconds=0)  # same state dir, new process
    assert again.poll_once() == [] and again.run(max_polls=3, sleep=lambda s: None) == []
    assert submit.calls == [ckpt]
    with open(w.StateStore(str(tmp_path / "state")).path(ckpt)) as f:
        stored = json.load(f)
    assert stored["checkpoint"] == ckpt and stored["run_id"] == "run-1"


def test_a_failed_submission_is_retried_and_then_recorded_once(tmp_path, saved_model, caplog):
    prefix = tmp_path / "exports"
    prefix.mkdir()
    ckpt = _checkpoint(saved_model, prefix, "1")
    submit = Recorder(fail_times=1)
    watch = _watcher(prefix, tmp_path, submit, stable_seconds=0)
    with caplog.at_level("ERROR"):
        assert watch.poll_once() == []
    assert "will be retried" in caplog.text
    assert watch.state.get(ckpt) is None  # claim released
    assert [r["run_id"] for r in watch.poll_once()] == ["run-1"]
    assert watch.poll_once() == [] and submit.calls == [ckpt]


def test_a_claim_left_by_a_dead_watcher_is_reported_not_resubmitted(tmp_path, saved_model, caplog):
    prefix = tmp_path / "exports"
    prefix.mkdir()
    ckpt = _checkpoint(saved_model, prefix, "1")
    state = w.StateStore(str(tmp_path / "state"))
    assert state.claim(ckpt, "pod-that-died")  # claimed, then the pod was killed mid-submit
    submit = Recorder()
    watch = w.Watcher(str(prefix), submit, state, stable_seconds=0)
    with caplog.at_level("WARNING"):
        assert watch.run(max_polls=2, sleep=lambda s: None) == []
    assert "never recorded as submitted" in caplog.text and "pod-that-died" in caplog.text
    assert submit.calls == []


def test_two_watchers_never_submit_the_same_checkpoint_twice(tmp_path, saved_model):
    prefix = tmp_path / "exports"
    prefix.mkdir()
    ckpts = [_checkpoint(saved_model, prefix, f"ckpt-{i:02d}") for i in range(12)]
    submit = Recorder()
    watchers = [
        _watcher(prefix, tmp_path, submit, stable_seconds=0, owner=f"watcher-{i}") for i in range(4)
    ]
    barrier = threading.Barrier(len(watchers))
    results: dict[int, list] = {}

    def run(i: int):
        barrier.wait()  # all scan at the same moment
        results[i] = watchers[i].poll_once()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(watchers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(submit.calls) == ckpts  # each exactly once
    owners = {r["checkpoint"]: r["owner"] for rs in results.values() for r in rs}
    assert sorted(owners) == ckpts
    stored = w.StateStore(str(tmp_path / "state")).records()
    assert sorted(r["checkpoint"] for r in stored) == ckpts
    assert all(r["status"] == w.SUBMITTED for r in stored)


def test_two_watcher_processes_never_submit_the_same_checkpoint_twice(tmp_path, saved_model):
    prefix = tmp_path / "exports"
    prefix.mkdir()
    ckpts = [_checkpoint(saved_model, prefix, f"ckpt-{i}") for i in range(6)]
    log = tmp_path / "submissions.log"
    go = tmp_path / "go"
    script = f"""
import os, time
from pipelines import watcher as w
def submit(uri, key):
    with open({str(log)!r}, "a") as f:
        f.write(uri + "\\n")
    return "run-" + key
watch = w.Watcher({str(prefix)!r}, submit, w.StateStore({str(tmp_path / "state")!r}), stable_seconds=0)
watch.candidates()  # TensorFlow imported before the start line
open({str(tmp_path)!r} + "/ready-" + str(os.getpid()), "w").close()
while not os.path.exists({str(go)!r}):
    time.sleep(0.01)
watch.poll_once()
"""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    procs = [
        subprocess.Popen([sys.executable, "-c", script], cwd=REPO_ROOT, env=env) for _ in range(2)
    ]
    import time

    deadline = time.time() + 120
    while len(list(tmp_path.glob("ready-*"))) < 2 and time.time() < deadline:
        time.sleep(0.05)  # both have imported TensorFlow and scanned once
    go.write_text("")
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert sorted(log.read_text().split()) == ckpts


def test_a_service_watcher_survives_a_missing_prefix(tmp_path, saved_model, caplog):
    """Forever mode keeps polling through scan errors (the prefix may appear later)."""
    prefix = tmp_path / "exports"
    submit = Recorder()
    watch = _watcher(prefix, tmp_path, submit, stable_seconds=0)
    sleeps = []

    class Stop(Exception):
        pass

    def sleep(seconds):
        sleeps.append(seconds)
        if len(sleeps) == 1:
            prefix.mkdir()
            _checkpoint(saved_model, prefix, "1")
        if len(sleeps) == 2:
            raise Stop

    with caplog.at_level("ERROR"), pytest.raises(Stop):
        watch.run(poll_seconds=5, sleep=sleep)
    assert "is not a directory" in caplog.text and "retrying in 5s" in caplog.text
    assert submit.calls == [str(prefix / "1")]


def test_state_dir_must_be_local_and_bad_settings_fail(tmp_path):
    with pytest.raises(ConfigError, match="local or mounted"):
        w.StateStore("gs://bucket/state")
    state = w.StateStore(str(tmp_path / "s"))
    with pytest.raises(ConfigError, match="plain file name"):
        w.Watcher(str(tmp_path), Recorder(), state, marker="a/b")
    with pytest.raises(ConfigError, match="is not a directory"):
        w.Watcher(str(tmp_path / "missing"), Recorder(), state).poll_once()
    assert w.checkpoint_key("gs://b/x/1/") == w.checkpoint_key("gs://b/x/1")
    assert w.checkpoint_key("gs://b/x/1") != w.checkpoint_key("gs://c/x/1")


def test_kfp_submitter_sends_one_run_per_checkpoint(tmp_path, saved_model, monkeypatch):
    """The Kubernetes workload's path: watch -> kfp.Client run with model_uri = the checkpoint."""
    monkeypatch.setenv("HOME", str(tmp_path))
    prefix = tmp_path / "exports"
    prefix.mkdir()
    ckpt = _checkpoint(saved_model, prefix, "1700000001")
    server = FakeKfp()
    try:
        submitter = w.KfpSubmitter(
            GOLDEN_PACKAGE, host=server.host, pipeline_root="gs://b/root", experiment="watch"
        )
        watch = _watcher(prefix, tmp_path, submitter, stable_seconds=0)
        (record,) = watch.poll_once()
        assert watch.poll_once() == []
        (run,) = server.posted("/apis/v2beta1/runs")
    finally:
        server.close()
    assert server.errors == []  # every request matched kfp_server_api's models
    assert record["run_id"] == "run-42"
    assert run["runtime_config"]["parameters"] == {"model_uri": ckpt}
    assert run["runtime_config"]["pipeline_root"] == "gs://b/root"
    assert run["display_name"] == f"checkpoint {w.checkpoint_key(ckpt)}"


@pytest.mark.e2e
def test_local_submitter_runs_the_pipeline_for_a_new_checkpoint(
    tmp_path, saved_model, tiny_examples
):
    from pipelines.config import PipelineConfig

    prefix = tmp_path / "exports"
    prefix.mkdir()
    ckpt = _checkpoint(saved_model, prefix, "1")
    config = PipelineConfig.parse(
        {
            "pipeline_name": "watch-local",
            "profiler": {
                "warmup_runs": 1,
                "timed_runs": 5,
                "throughput_runs": 1,
                "measure_memory": False,
            },
        }
    )
    submitter = w.LocalSubmitter(config, tiny_examples, str(tmp_path / "runs"))
    watch = _watcher(prefix, tmp_path, submitter, stable_seconds=0)
    (record,) = watch.poll_once()
    run_dir = tmp_path / "runs" / w.checkpoint_key(ckpt)
    assert (run_dir / "metadata.sqlite").exists()
    profiles = list(run_dir.glob("pipeline-root/BaselineProfiler/profile/*/profile.json"))
    assert len(profiles) == 1
    # The baseline is the ModelImporter's copy of the new checkpoint.
    [imported] = run_dir.glob("pipeline-root/ModelImporter/imported_model/*/import.json")
    assert json.loads(imported.read_text())["source_uri"].startswith(ckpt)
    assert json.loads(profiles[0].read_text())["model_uri"] == str(imported.parent)
    assert record["run_id"] and watch.poll_once() == []
