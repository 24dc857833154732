"""Serving repository pushes: read back as TF Serving reads them, atomic, idempotent, labelled.

No model server runs here: TF Serving ships as a binary or a container image, neither of which
this project's registries (PyPI, Debian, npm) carry. What the tests do instead is what TF
Serving's own loading amounts to: ``models.config`` parsed as its ``ModelServerConfig`` proto, and
the version loaded by tag ``serve`` into a TF1 session (SavedModelBundle's path) and run by the
tensor names of its ``serving_default`` SignatureDef, as a Predict request is.
"""

from __future__ import annotations

import json
import os
import shutil
import threading

import numpy as np
import pytest

from components.common.errors import TfxOptError
from components.pusher import serving, storage
from components.pusher.config import ServingDestination

MODEL = "digits"


@pytest.fixture
def saved_model(tmp_path, tiny_model):
    """A tf_keras SavedModel directory of the tiny classifier."""
    from components.common import model_io

    return model_io.save_keras_model(tiny_model, str(tmp_path / "model"))


def _variant(saved_model: str, tmp_path, n: int) -> str:
    """A distinct SavedModel (same graph, one extra asset file): different bytes, cheap to make."""
    path = str(tmp_path / f"variant-{n}")
    shutil.copytree(saved_model, path)
    os.makedirs(os.path.join(path, "assets"), exist_ok=True)
    with open(os.path.join(path, "assets", "variant.txt"), "w") as f:
        f.write(str(n))
    return path


def _labels(config, name=MODEL) -> tuple[list[int], dict]:
    entry = next(c for c in config.model_config_list.config if c.name == name)
    return list(entry.model_version_policy.specific.versions), dict(entry.version_labels)


def _run_like_tf_serving(version_dir: str, x: np.ndarray) -> np.ndarray:
    """The version loaded by tag ``serve`` into a TF1 session, run by its SignatureDef's tensors."""
    import tensorflow as tf

    with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], version_dir)
        signature = meta_graph.signature_def["serving_default"]
        (input_info,) = signature.inputs.values()
        (output_info,) = signature.outputs.values()
        return session.run(output_info.name, {input_info.name: x})


def test_push_runs_by_signature_def_in_a_tf1_session_and_config_parses(
    tmp_path, saved_model, tiny_model
):
    base = str(tmp_path / "serving")
    destination = ServingDestination(base_directory=base, server_base_directory="/models")
    metrics = {"accuracy": 0.97, "latency_p95_ms": 0.31, "size_bytes": 12345}
    result = serving.push_saved_model(saved_model, MODEL, destination, metrics, {"run": "r1"})
    assert (result.version, result.created) == (1, True)
    assert result.path == os.path.join(base, MODEL, "1")

    x = np.random.default_rng(0).random((4, 64), dtype=np.float32)
    out = _run_like_tf_serving(result.path, x)
    np.testing.assert_allclose(out, tiny_model.predict(x, verbose=0), atol=1e-6)

    config = serving.read_model_config(os.path.join(base, "models.config"))
    entry = config.model_config_list.config[0]
    assert (entry.name, entry.base_path, entry.model_platform) == (
        MODEL,
        "/models/digits",
        "tensorflow",
    )
    assert _labels(config) == ([1], {"canary": 1, "stable": 1})  # first push bootstraps stable

    production = json.load(open(os.path.join(base, MODEL, "production.json")))
    assert production["version"] == 1 and production["accuracy"] == 0.97
    assert production["latency_p95_ms"] == 0.31 and production["size_bytes"] == 12345
    record = json.load(open(os.path.join(base, MODEL, "versions", "1.json")))
    assert record["digest"] == result.digest and record["source"] == {"run": "r1"}
    assert record["saved_model_bytes"] == sum(
        os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(saved_model) for f in fs
    )


def test_same_bytes_twice_make_one_version(tmp_path, saved_model):
    base = str(tmp_path / "serving")
    destination = ServingDestination(base_directory=base)
    first = serving.push_saved_model(saved_model, MODEL, destination)
    copy = str(tmp_path / "copy")
    shutil.copytree(saved_model, copy)  # another directory, identical bytes
    second = serving.push_saved_model(copy, MODEL, destination)
    assert first.digest == second.digest
    assert (second.version, second.created) == (1, False)
    assert sorted(n for n in os.listdir(os.path.join(base, MODEL)) if n.isdigit()) == ["1"]


def test_labels_promote_rollback_and_retention(tmp_path, saved_model):
    base = str(tmp_path / "serving")
    destination = ServingDestination(base_directory=base, labels=["canary"], keep_last=2)
    config_path = os.path.join(base, "models.config")
    serving.push_saved_model(saved_model, MODEL, destination, {"accuracy": 0.9})
    second = serving.push_saved_model(
        _variant(saved_model, tmp_path, 2), MODEL, destination, {"accuracy": 0.95}
    )
    assert (second.version, second.labels) == (2, {"canary": 2, "stable": 1})
    assert _labels(serving.read_model_config(config_path)) == ([1, 2], {"canary": 2, "stable": 1})
    assert json.load(open(os.path.join(base, MODEL, "production.json")))["version"] == 1

    assert serving.promote_label(base, MODEL, "canary", "stable") == 2
    production = json.load(open(os.path.join(base, MODEL, "production.json")))
    assert (production["version"], production["accuracy"]) == (2, 0.95)
    assert serving.rollback_label(base, MODEL, "stable") == 1
    assert _labels(serving.read_model_config(config_path)) == ([1, 2], {"canary": 2, "stable": 1})
    assert serving.promote_label(base, MODEL, "canary", "stable") == 2

    for n in (3, 4, 5):
        serving.push_saved_model(_variant(saved_model, tmp_path, n), MODEL, destination)
    on_disk = sorted(int(n) for n in os.listdir(os.path.join(base, MODEL)) if n.isdigit())
    # keep_last=2 keeps 4, 5; `stable` (2) and its rollback target (1) stay too; 3 goes.
    assert on_disk == [1, 2, 4, 5]
    assert _labels(serving.read_model_config(config_path)) == ([2, 5], {"canary": 5, "stable": 2})
    assert json.load(open(os.path.join(base, MODEL, "versions", "3.json")))["removed_at"]
    after = serving.push_saved_model(_variant(saved_model, tmp_path, 6), MODEL, destination)
    assert after.version == 6  # versions only grow, even past removed ones
    with pytest.raises(TfxOptError, match="no version is labelled 'beta'"):
        serving.promote_label(base, MODEL, "beta", "stable")


def test_push_failing_midway_leaves_previous_version_intact(tmp_path, saved_model, monkeypatch):
    import tensorflow as tf

    base = str(tmp_path / "serving")
    destination = ServingDestination(base_directory=base)
    serving.push_saved_model(saved_model, MODEL, destination)
    config_before = open(os.path.join(base, "models.config")).read()
    real_copy = storage.copy_file
    copied = []

    def fail_after_two(src, dst, atomic=True):
        if len(copied) == 2:
            raise OSError(28, "No space left on device")
        copied.append(dst)
        return real_copy(src, dst, atomic)

    variant = _variant(saved_model, tmp_path, 2)
    monkeypatch.setattr(storage, "copy_file", fail_after_two)
    with pytest.raises(OSError, match="No space"):
        serving.push_saved_model(variant, MODEL, destination)
    monkeypatch.setattr(storage, "copy_file", real_copy)

    assert len(copied) == 2
    names = os.listdir(os.path.join(base, MODEL))
    assert sorted(n for n in names if n.isdigit()) == ["1"]
    assert not [n for n in names if n.startswith(storage.TMP_PREFIX)]
    assert open(os.path.join(base, "models.config")).read() == config_before
    assert "serving_default" in tf.saved_model.load(os.path.join(base, MODEL, "1")).signatures
    # A killed push (no except clause ran) leaves temporaries; the next push clears them.
    model_dir = os.path.join(base, MODEL)
    os.makedirs(os.path.join(model_dir, ".tmp-2-dead", "variables"))
    open(os.path.join(model_dir, ".tmp-repository.json-dead"), "w").write("{")
    assert serving.push_saved_model(variant, MODEL, destination).version == 2
    assert not [n for n in os.listdir(model_dir) if n.startswith(storage.TMP_PREFIX)]


def test_object_store_path_writes_in_place_with_record_last(tmp_path, saved_model, monkeypatch):
    base = f"ram://serving-{os.getpid()}-{id(tmp_path)}"
    destination = ServingDestination(base_directory=base)
    assert serving.push_saved_model(saved_model, MODEL, destination).version == 1
    real_copy = storage.copy_file

    def fail_on_pb(src, dst, atomic=True):
        if dst.endswith("saved_model.pb"):
            raise OSError(5, "connection reset")
        return real_copy(src, dst, atomic)

    variant = _variant(saved_model, tmp_path, 2)
    monkeypatch.setattr(storage, "copy_file", fail_on_pb)
    with pytest.raises(OSError):
        serving.push_saved_model(variant, MODEL, destination)
    monkeypatch.setattr(storage, "copy_file", real_copy)
    # The partial version 2 stays (no rename on object stores) but has no record: never served.
    assert storage.exists(storage.join(base, MODEL, "2", "variables"))
    assert not storage.exists(storage.join(base, MODEL, "versions", "2.json"))
    config = serving.read_model_config(storage.join(base, "models.config"))
    assert _labels(config)[0] == [1]
    third = serving.push_saved_model(variant, MODEL, destination)
    assert third.version == 3  # the half-written number is never reused
    assert _labels(serving.read_model_config(storage.join(base, "models.config")))[0] == [1, 3]
    assert storage.exists(storage.join(base, MODEL, "3", "saved_model.pb"))


def test_other_models_in_the_config_are_kept_and_bad_config_refused(tmp_path, saved_model):
    base = tmp_path / "serving"
    base.mkdir()
    (base / "models.config").write_text(
        'model_config_list { config { name: "other" base_path: "/models/other" '
        'model_platform: "tensorflow" } }\n'
    )
    serving.push_saved_model(saved_model, MODEL, ServingDestination(base_directory=str(base)))
    config = serving.read_model_config(str(base / "models.config"))
    assert [c.name for c in config.model_config_list.config] == ["other", MODEL]
    (base / "models.config").write_text("this is { not a proto")
    with pytest.raises(TfxOptError, match="not a ModelServerConfig"):
        serving.push_saved_model(
            _variant(saved_model, tmp_path, 2), MODEL, ServingDestination(base_directory=str(base))
        )


def test_concurrent_pushes_get_unique_growing_versions(tmp_path, saved_model):
    base = str(tmp_path / "serving")
    destination = ServingDestination(base_directory=base, keep_last=None)
    variants = [_variant(saved_model, tmp_path, n) for n in range(4)]
    results, errors = [], []

    def push(path):
        try:
            results.append(serving.push_saved_model(path, MODEL, destination).version)
        except Exception as e:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=push, args=(v,)) for v in variants]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(results) == [1, 2, 3, 4]
    repo = serving.Repository(base, MODEL)
    digests = {repo.record(v)["digest"] for v in repo.versions()}
    assert len(digests) == 4
