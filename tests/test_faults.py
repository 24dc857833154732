"""Faults: SIGKILL mid-step and rerun, concurrent pushes, a destination that fails mid-push.

The pipeline runs as a child process (``python -m tests.fault_driver run``) that stalls at a named
point inside a step (see tests/fault_driver.py) and is then killed with SIGKILL from here, after ML
Metadata shows the step's execution RUNNING. The rerun, with caching on, must reuse every finished
step, run the killed step again, and end where an uninterrupted run ends: the same blessing
decision, one serving version, an OTA manifest that verifies. Whatever a reader could see at the
moment of the kill (served versions, the live manifest) must be complete and verify.

A tiny classifier on small synthetic Examples keeps each run short; one uninterrupted run is shared
by every comparison.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.e2e

PIPELINE = "faults"
MODEL_NAME = "tiny"
CHANNEL = "canary"
STALL_TIMEOUT_S = 900.0
RUNNING = 2  # ml_metadata Execution.State.RUNNING


def _config(key_path: str) -> dict:
    """The chain, cut to what is quick: 1 epoch of pruning, two cheap quantization modes."""
    return {
        "pipeline_name": PIPELINE,
        "profiler": {
            "warmup_runs": 2,
            "timed_runs": 10,
            "throughput_runs": 1,
            "measure_memory": False,
        },
        "profile_candidates": False,
        "pruner": {
            "target_sparsity": 0.5,
            "fine_tuning": {"epochs": 1},
            "schedule": {"frequency_steps": 4},
        },
        "quantization": [{"mode": "none", "name": "float32"}, {"mode": "dynamic_range"}],
        "evaluator": {
            "objective": "smallest",
            "rules": {"max_accuracy_drop_points": 25.0},
            "latency": {"measure": False},
        },
        "pusher": {
            "model_name": MODEL_NAME,
            "serving": [{"base_directory": "serving"}],
            "ota": [{"base_directory": "ota", "channel": CHANNEL, "signing_key_path": key_path}],
        },
    }


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A small trained classifier (64 inputs, 10 classes), its Examples and an OTA signing key."""
    from components.pusher import signing
    from tests.small_inputs import train_small_classifier, write_learnable_examples

    root = tmp_path_factory.mktemp("fault-inputs")
    x_train, y_train = write_learnable_examples(str(root / "examples"))
    train_small_classifier(str(root / "model"), x_train, y_train, seed=1)
    key = str(root / "keys" / "ota.pem")
    signing.write_keypair(key)
    config = _config(key)
    config_path = root / "config.json"
    config_path.write_text(json.dumps(config))
    return {
        "model": str(root / "model"),
        "examples": str(root / "examples"),
        "key": key,
        "config": config,
        "config_path": str(config_path),
    }


def _trusted(inputs) -> dict:
    from components.pusher import signing

    return signing.trusted_keys([signing.load_public_key(inputs["key"] + ".pub")])


def _run_in_process(inputs, output_dir: str):
    from pipelines.config import PipelineConfig
    from pipelines.local.runner import run_local

    config = PipelineConfig.parse(inputs["config"])
    return run_local(config, inputs["model"], inputs["examples"], output_dir)


def _outcome(run, inputs) -> dict:
    """What a run ended with: the gate's decision and accuracies, what the destinations serve."""
    from pipelines.report import console

    evaluation = console.evaluation_record(run)
    destinations = _destinations(run.output_dir, inputs)
    return {
        "blessed": evaluation["decision"]["blessed"],
        "selected": evaluation["decision"]["selected"],
        "accuracy": {
            c["name"]: round(c["accuracy"]["top1_accuracy"], 6) for c in evaluation["candidates"]
        },
        **destinations,
    }


def _destinations(output_dir: str, inputs) -> dict:
    """What a reader (TF Serving, a device) sees now; fails if any of it is partial or unsigned.

    Every version ``models.config`` lists has its push record and exactly the bytes the record's
    digest names; a version directory without a record (an interrupted push) is never listed; the
    OTA manifest, when there is one, verifies against the trusted key and its files' sha256.
    """
    from components.pusher import ota, serving, storage

    base = os.path.join(output_dir, "serving")
    repo = serving.Repository(base, MODEL_NAME)
    listed = []
    config_path = os.path.join(base, serving.MODEL_CONFIG_FILE)
    if os.path.exists(config_path):
        for entry in serving.read_model_config(config_path).model_config_list.config:
            if entry.name == MODEL_NAME:
                listed = sorted(entry.model_version_policy.specific.versions)
    complete = repo.versions()
    for version in listed:
        assert version in complete, f"models.config lists version {version}, which is incomplete"
        digest, _ = serving.saved_model_digest(repo.version_dir(version))
        assert digest == repo.record(version)["digest"], (
            f"version {version} differs from its record"
        )
    orphans = repo.orphans()
    assert not set(orphans) & set(listed)
    temporaries = [n for n in storage.listdir(repo.model_dir) if n.startswith(storage.TMP_PREFIX)]
    channel_dir = os.path.join(output_dir, "ota", MODEL_NAME, CHANNEL)
    manifest = None
    if os.path.exists(os.path.join(output_dir, "ota", "metadata", "timestamp.json")):
        manifest = ota.verify_channel(channel_dir, _trusted(inputs))
    return {
        "served": listed,
        "versions": complete,
        "orphans": orphans,
        "temporaries": temporaries,
        "digests": {v: repo.record(v)["digest"] for v in complete},
        "manifest": None
        if manifest is None
        else {
            "sequence": manifest["sequence"],
            "model_version": manifest["model_version"],
            "sha256": [f["sha256"] for f in manifest["files"]],
        },
    }


@pytest.fixture(scope="module")
def baseline(inputs, tmp_path_factory):
    """One uninterrupted run: what every interrupted-and-rerun run must end with."""
    out = str(tmp_path_factory.mktemp("uninterrupted"))
    run = _run_in_process(inputs, out)
    assert all(s.state == "COMPLETE" for s in run.steps), [(s.node_id, s.state) for s in run.steps]
    outcome = _outcome(run, inputs)
    assert outcome["blessed"] is True, outcome
    assert outcome["served"] == [1] and outcome["manifest"]["sequence"] == 1, outcome
    return {"output": out, "outcome": outcome}


# ----------------------------------------------------------------------------- kill helpers


class Driver:
    """Starts stalling pipeline runs in child processes and kills them (all of them, at the end)."""

    def __init__(self, inputs, output_dir: str):
        self.inputs = inputs
        self.output_dir = output_dir
        self.processes: list[subprocess.Popen] = []

    def start(self, stall: str) -> tuple[subprocess.Popen, str]:
        marker = os.path.join(self.output_dir, f".stalled-{stall}")
        log = open(os.path.join(self.output_dir, f".log-{stall}"), "w")  # noqa: SIM115
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.fault_driver",
                "run",
                "--config",
                self.inputs["config_path"],
                "--model",
                self.inputs["model"],
                "--examples",
                self.inputs["examples"],
                "--output",
                self.output_dir,
                "--stall",
                stall,
                "--marker",
                marker,
            ],
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: SIGKILL reaches every thread and child
        )
        log.close()
        self.processes.append(process)
        return process, marker

    def wait_stalled(self, process, marker: str, node: str) -> None:
        """Waits until the run stalls at its point with ``node``'s execution RUNNING in MLMD."""
        deadline = time.monotonic() + STALL_TIMEOUT_S
        while not os.path.exists(marker):
            if process.poll() is not None:
                pytest.fail(f"the run ended ({process.returncode}) before stalling:\n{self.log()}")
            if time.monotonic() > deadline:
                pytest.fail(f"the run did not reach its stall point:\n{self.log()}")
            time.sleep(0.2)
        assert running_nodes(self.output_dir) == [node]

    def kill(self, process) -> None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
        assert process.returncode == -signal.SIGKILL

    def log(self) -> str:
        tails = []
        for name in sorted(os.listdir(self.output_dir)):
            if name.startswith(".log-"):
                with open(os.path.join(self.output_dir, name), errors="replace") as f:
                    tails.append(f"--- {name}\n" + f.read()[-4000:])
        return "\n".join(tails)

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=60)


@pytest.fixture
def driver(inputs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    d = Driver(inputs, str(out))
    yield d
    d.close()


def running_nodes(output_dir: str) -> list[str]:
    """Nodes whose latest execution ML Metadata records as RUNNING (read-only, straight SQL)."""
    db = sqlite3.connect(f"file:{os.path.join(output_dir, 'metadata.sqlite')}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT c.name, e.last_known_state FROM Execution e "
            "JOIN Association a ON a.execution_id = e.id JOIN Context c ON c.id = a.context_id "
            "WHERE c.name LIKE ? ORDER BY e.id",
            (f"{PIPELINE}.%",),
        ).fetchall()
    finally:
        db.close()
    latest = {}
    for name, state in rows:
        latest[name[len(PIPELINE) + 1 :]] = state
    return sorted(node for node, state in latest.items() if state == RUNNING)


def _states(run) -> dict:
    return {s.node_id: s.state for s in run.steps}


def _assert_same_result(outcome: dict, baseline: dict) -> None:
    expected = baseline["outcome"]
    for key in ("blessed", "selected", "accuracy", "served", "versions"):
        assert outcome[key] == expected[key], (key, outcome[key], expected[key])
    assert outcome["orphans"] == [] and outcome["temporaries"] == [], outcome
    # the flatbuffer devices get is byte-identical (fine-tuning and conversion are seeded)
    assert outcome["manifest"]["model_version"] == expected["manifest"]["model_version"] == 1
    assert outcome["manifest"]["sha256"] == expected["manifest"]["sha256"]


def _rerun_pushes_only(inputs, output_dir: str, baseline: dict) -> dict:
    """The last, uninterrupted rerun: every step CACHED but the Pusher, the baseline's result."""
    run = _run_in_process(inputs, output_dir)
    states = _states(run)
    assert states.pop("Pusher") == "COMPLETE"
    assert set(states.values()) == {"CACHED"}, states
    outcome = _outcome(run, inputs)
    _assert_same_result(outcome, baseline)
    return outcome


# ----------------------------------------------------------------------------- kill and rerun


def _latest_states(output_dir: str) -> dict:
    """Each node's state in the newest run ML Metadata holds (also while that run is alive)."""
    from pipelines.metadata import reader

    connection = reader.sqlite_connection_config(os.path.join(output_dir, "metadata.sqlite"))
    _, steps = reader.latest_run(connection, PIPELINE)
    return {s.node_id: s.state for s in steps}


def test_sigkill_in_fine_tuning_and_push_then_rerun_resumes(inputs, baseline, driver):
    """One unattended run killed three times: in the Pruner's fine-tuning and twice in the push.

    Each rerun reuses what finished, runs the killed step again, and is killed at the next point;
    the last one completes. At every kill, what TF Serving and devices could read is complete.
    """
    from components.pusher import serving
    from pipelines.pipeline import PRUNER_ID

    out = driver.output_dir
    cached_before_pruner = (
        "ExampleGen",
        "CheckpointImporter",
        "ModelImporter",
        "BaselineProfiler",
    )
    after_pruner = (PRUNER_ID, "Quantizer_float32", "Quantizer_dynamic_range", "Evaluator")

    # 1. in the middle of fine-tuning
    process, marker = driver.start("pruner.fine_tuning")
    driver.wait_stalled(process, marker, PRUNER_ID)
    driver.kill(process)
    assert running_nodes(out) == [PRUNER_ID]  # MLMD still says RUNNING: nobody marked it
    pruned = os.path.join(out, "pipeline-root", PRUNER_ID, "optimized_model")
    assert not any(os.listdir(os.path.join(pruned, d)) for d in os.listdir(pruned))
    assert not os.path.exists(os.path.join(out, "serving"))  # nothing reached a destination
    assert not os.path.exists(os.path.join(out, "ota"))

    # 2. rerun: resumes at the Pruner; killed half-way through a file of the new serving version
    process, marker = driver.start("pusher.serving.mid_file")
    driver.wait_stalled(process, marker, "Pusher")
    states = _latest_states(out)
    assert all(states[n] == "CACHED" for n in cached_before_pruner), states
    assert all(states[n] == "COMPLETE" for n in after_pruner), states
    seen = _destinations(out, inputs)
    assert seen["served"] == [] and seen["versions"] == [] and seen["orphans"] == [], seen
    assert len(seen["temporaries"]) == 1  # the half-written copy, under a hidden name
    driver.kill(process)

    # 3. the version directory published, its push record not yet written
    process, marker = driver.start("pusher.serving.before_record")
    driver.wait_stalled(process, marker, "Pusher")
    states = _latest_states(out)
    assert states.pop("Pusher") == "RUNNING" and set(states.values()) == {"CACHED"}, states
    seen = _destinations(out, inputs)
    assert seen["served"] == [] and seen["orphans"] == [1] and seen["temporaries"] == [], seen
    driver.kill(process)

    outcome = _rerun_pushes_only(inputs, out, baseline)
    # the push interrupted after its directory was published was completed, not copied again
    base = os.path.join(out, "serving")
    assert sorted(n for n in os.listdir(os.path.join(base, MODEL_NAME)) if n.isdigit()) == ["1"]
    assert serving.Repository(base, MODEL_NAME).record(1)["source"]["model_artifact_id"] > 0
    assert outcome["manifest"]["sequence"] == 1


def test_sigkill_in_conversion_evaluation_and_ota_publish_then_rerun_resumes(
    inputs, baseline, driver
):
    from pipelines.pipeline import EVALUATOR_ID, PRUNER_ID, quantizer_id

    out = driver.output_dir
    process, marker = driver.start("quantizer.convert")
    driver.wait_stalled(process, marker, quantizer_id("dynamic_range"))
    driver.kill(process)
    assert not os.path.exists(os.path.join(out, "serving"))

    process, marker = driver.start("evaluator.accuracy")
    driver.wait_stalled(process, marker, EVALUATOR_ID)
    states = _latest_states(out)
    assert states[PRUNER_ID] == "CACHED", states
    assert states[quantizer_id("dynamic_range")] == "COMPLETE", states  # the killed one, again
    driver.kill(process)
    assert not os.path.exists(os.path.join(out, "serving"))

    # serving done; OTA files, model role and snapshot written, the timestamp not yet
    process, marker = driver.start("pusher.ota.before_manifest")
    driver.wait_stalled(process, marker, "Pusher")
    assert _latest_states(out)[EVALUATOR_ID] == "COMPLETE"
    seen = _destinations(out, inputs)
    assert seen["served"] == [1] and seen["orphans"] == [], seen
    assert seen["manifest"] is None  # a device still sees no release, not a partial one
    driver.kill(process)

    outcome = _rerun_pushes_only(inputs, out, baseline)
    # the signed-but-never-published release keeps its sequence number: numbers are never reused
    assert outcome["manifest"]["sequence"] == 2


# ----------------------------------------------------------------------------- concurrent pushes


@pytest.fixture(scope="module")
def push_models(tmp_path_factory):
    """Four different small models, each with a SavedModel and a TFLite flavour."""
    import tf_keras

    from components.common import model_io, tflite

    root = tmp_path_factory.mktemp("push-models")
    uris = []
    for seed in range(4):
        tf_keras.utils.set_random_seed(seed)
        model = tf_keras.Sequential(
            [
                tf_keras.layers.Input(shape=(64,), name="image"),
                tf_keras.layers.Dense(8, activation="relu"),
                tf_keras.layers.Dense(10, activation="softmax"),
            ]
        )
        uri = str(root / f"model-{seed}")
        saved = model_io.save_keras_model(model, uri)
        model_io.write_tflite(tflite.convert_float32(saved), uri)
        uris.append(uri)
    return uris


def _pusher_config(path, model_name: str, base: str, key: str | None) -> str:
    config = {
        "model_name": model_name,
        "serving": [{"base_directory": os.path.join(base, "serving"), "keep_last": None}],
    }
    if key:
        config["ota"] = [
            {
                "base_directory": os.path.join(base, "ota"),
                "channel": CHANNEL,
                "signing_key_path": key,
            }
        ]
    path.write_text(json.dumps(config))
    return str(path)


def test_concurrent_pushes_keep_versions_unique_and_every_manifest_valid(
    push_models, inputs, tmp_path
):
    """Two processes push different models to the same destinations at the same moment.

    Both push to model ``tiny`` (serving + OTA), and each to a model of its own in the same serving
    repository, whose shared ``models.config`` is written slowly to widen the race.
    """
    from components.common import model_io
    from components.pusher import ota, serving, storage

    base = str(tmp_path / "dest")
    shared = _pusher_config(tmp_path / "shared.json", MODEL_NAME, base, inputs["key"])
    own = {
        name: _pusher_config(tmp_path / f"{name}.json", name, base, None)
        for name in ("alpha", "beta")
    }
    go = tmp_path / "GO"
    processes, reports = [], []
    try:
        for name, models in (("alpha", push_models[:2]), ("beta", push_models[2:])):
            report = tmp_path / f"{name}-report.json"
            reports.append(report)
            processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "tests.fault_driver",
                        "push",
                        "--config",
                        shared,
                        own[name],
                        "--models",
                        *models,
                        "--times",
                        "2",
                        "--report",
                        str(report),
                        "--ready",
                        str(tmp_path / f"{name}.ready"),
                        "--go",
                        str(go),
                        "--slow-config-write",
                        "0.3",
                    ],
                    cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    start_new_session=True,
                )
            )
        deadline = time.monotonic() + 600
        while not all((tmp_path / f"{n}.ready").exists() for n in ("alpha", "beta")):
            assert all(p.poll() is None for p in processes), [p.communicate() for p in processes]
            assert time.monotonic() < deadline
            time.sleep(0.1)
        go.write_text("go")
        for process in processes:
            output, _ = process.communicate(timeout=600)
            assert process.returncode == 0, output[-4000:]
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    digest_of = {
        uri: serving.saved_model_digest(model_io.serving_model_dir(uri))[0] for uri in push_models
    }
    sha_of = {uri: storage.file_sha256(model_io.tflite_path(uri))[0] for uri in push_models}
    created_versions, created_sequences = [], []
    for report in reports:
        results = [r for r in json.loads(report.read_text()) if r["model_name"] == MODEL_NAME]
        mine_v = [r["serving"][0]["version"] for r in results if r["serving"][0]["created"]]
        mine_s = [r["ota"][0]["sequence"] for r in results if r["ota"][0]["created"]]
        assert mine_v == sorted(mine_v) and mine_s == sorted(mine_s)  # monotonic per writer
        created_versions += mine_v
        created_sequences += mine_s
        for r in results:  # each push reports the version / release holding its own bytes
            assert r["serving"][0]["digest"] == digest_of[r["model_uri"]]
            assert r["ota"][0]["files"][0]["sha256"] == sha_of[r["model_uri"]]
    # unique: no version or sequence was made by two pushes
    assert len(set(created_versions)) == len(created_versions) >= 2
    assert len(set(created_sequences)) == len(created_sequences) >= 2

    repo = serving.Repository(os.path.join(base, "serving"), MODEL_NAME)
    assert repo.versions() == sorted(created_versions) and repo.orphans() == []
    for version in repo.versions():  # nothing overwritten: every version holds its record's bytes
        digest, _ = serving.saved_model_digest(repo.version_dir(version))
        assert digest == repo.record(version)["digest"]
    config = serving.read_model_config(os.path.join(base, "serving", "models.config"))
    entries = {e.name: e for e in config.model_config_list.config}
    assert sorted(entries) == ["alpha", "beta", MODEL_NAME]  # no model's entry was lost
    for name, entry in entries.items():
        latest = serving.Repository(os.path.join(base, "serving"), name).versions()[-1]
        assert latest in entry.model_version_policy.specific.versions, name

    trusted = _trusted(inputs)
    channel_dir = os.path.join(base, "ota", MODEL_NAME, CHANNEL)
    live = ota.verify_channel(channel_dir, trusted)
    assert live["sequence"] == max(created_sequences)
    history = {
        h["sequence"]: h
        for h in ota.channel_history(os.path.join(base, "ota"), MODEL_NAME, CHANNEL)
    }
    for sequence in created_sequences:  # every release ever published still verifies
        entry = history[sequence]
        for f in entry["files"]:
            assert storage.file_sha256(os.path.join(channel_dir, f["path"]))[0] == f["sha256"]
    releases = os.path.join(base, "ota", MODEL_NAME, ota.RELEASES_DIR)
    by_sha = {}
    for name in os.listdir(releases):
        with open(os.path.join(releases, name)) as f:
            record = json.load(f)
        by_sha.setdefault(record["files"][0]["sha256"], []).append(record["model_version"])
    assert all(len(v) == 1 for v in by_sha.values()), by_sha  # one model version per model


# ----------------------------------------------------------------------------- disk full


def _enospc(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _pusher(base: str, key: str):
    from components.pusher.config import PusherConfig

    return PusherConfig.parse(
        {
            "model_name": MODEL_NAME,
            "serving": [{"base_directory": os.path.join(base, "serving")}],
            "ota": [
                {
                    "base_directory": os.path.join(base, "ota"),
                    "channel": CHANNEL,
                    "signing_key_path": key,
                }
            ],
        }
    )


def _snapshot(base: str) -> dict:
    """Every file under ``base`` and its bytes."""
    files = {}
    for directory, _, names in os.walk(base):
        for name in names:
            path = os.path.join(directory, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, base)] = f.read()
    return files


def test_disk_full_mid_serving_copy_leaves_the_previous_release(
    push_models, inputs, tmp_path, monkeypatch
):
    from components.pusher import push, serving, storage

    base = str(tmp_path / "dest")
    config = _pusher(base, inputs["key"])
    push.push_model(push_models[0], config)
    before = _snapshot(base)

    real_copy = storage.copy_file
    calls = []

    def copy_file(src, dst, atomic=True):
        calls.append(dst)
        if len(calls) == 2:  # half the file reaches the disk, then it is full
            with open(src, "rb") as f:
                data = f.read()
            with open(dst, "wb") as f:
                f.write(data[: len(data) // 2])
            _enospc()
        return real_copy(src, dst, atomic=atomic)

    monkeypatch.setattr(storage, "copy_file", copy_file)
    with pytest.raises(OSError) as failure:
        push.push_model(push_models[1], config)
    assert failure.value.errno == errno.ENOSPC  # reported, not swallowed
    assert os.path.basename(os.path.dirname(calls[1])).startswith(storage.TMP_PREFIX)
    monkeypatch.setattr(storage, "copy_file", real_copy)

    after = _snapshot(base)
    assert after == before  # nothing half-written stays, nothing of the old release changed
    repo = serving.Repository(os.path.join(base, "serving"), MODEL_NAME)
    assert repo.versions() == [1] and repo.orphans() == []
    assert _destinations(base, inputs)["manifest"]["sequence"] == 1  # still verifies

    result = push.push_model(push_models[1], config)  # space again: the push completes
    assert result["serving"][0]["version"] == 2 and result["ota"][0]["sequence"] == 2


def test_disk_full_while_publishing_the_manifest_keeps_the_old_one(
    push_models, inputs, tmp_path, monkeypatch
):
    from components.pusher import push, storage

    base = str(tmp_path / "dest")
    config = _pusher(base, inputs["key"])
    push.push_model(push_models[0], config)
    timestamp = os.path.join(base, "ota", "metadata", "timestamp.json")
    with open(timestamp, "rb") as f:
        old_manifest = f.read()

    # The TUF timestamp (written last) goes to a temporary sibling; fsync reports the disk full
    # (as it does on filesystems that allocate late), so the replace never happens.
    real_fsync = os.fsync

    def fsync(fd):
        if "/.tmp-timestamp.json-" in os.readlink(f"/proc/self/fd/{fd}"):
            _enospc()
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError) as failure:
        push.push_model(push_models[1], config)
    assert failure.value.errno == errno.ENOSPC
    monkeypatch.setattr(os, "fsync", real_fsync)

    with open(timestamp, "rb") as f:
        assert f.read() == old_manifest
    seen = _destinations(base, inputs)  # the old release still verifies
    assert seen["manifest"]["sequence"] == 1
    leftovers = [
        os.path.join(d, n)
        for d, _, names in os.walk(base)
        for n in names
        if n.startswith(storage.TMP_PREFIX)
    ]
    assert leftovers == []
    # the serving push before it completed (version 2); a rerun publishes the OTA release
    assert seen["served"][-1] == 2
    result = push.push_model(push_models[1], config)
    assert result["serving"][0]["created"] is False  # idempotent: no third version
    assert _destinations(base, inputs)["manifest"]["sequence"] > 1
