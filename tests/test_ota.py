"""OTA channels (TUF repository + OMS bundles) and the device client, over HTTP on 127.0.0.1."""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import os

import numpy as np
import pytest

from components.common.errors import ConfigError, TfxOptError
from components.pusher import commands, ota, storage, tuf_repo
from components.pusher import signing as signing_lib
from components.pusher.config import OtaDestination
from components.pusher.ota_client import (
    NOT_ELIGIBLE,
    REJECTED,
    UP_TO_DATE,
    UPDATED,
    DeviceClient,
    in_rollout,
    rollout_bucket,
    safe_relative_path,
)
from tests.ota_helpers import StaticServer, device_tree, repo_tree

MODEL = "digits"


@pytest.fixture
def http_base(tmp_path):
    """(base directory, base URL): a threaded HTTP server serving the OTA base directory."""
    base = tmp_path / "ota"
    base.mkdir()
    server = StaticServer(str(base))
    try:
        yield str(base), server.url
    finally:
        server.close()


@pytest.fixture
def signing(tmp_path):
    """A key pair on disk: (private key, public key, private path, public path)."""
    private_path = str(tmp_path / "keys" / "ota.pem")
    signing_lib.write_keypair(private_path)
    private = signing_lib.load_private_key(path=private_path)
    return private, private.public_key(), private_path, private_path + ".pub"


def _model_file(tmp_path, name: str, payload: bytes) -> str:
    path = tmp_path / "models" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return str(path)


def _destination(base, key_path, channel="canary", **kw) -> OtaDestination:
    return OtaDestination(base_directory=base, channel=channel, signing_key_path=key_path, **kw)


def _device(tmp_path, public, name="device", **kw) -> DeviceClient:
    return DeviceClient(str(tmp_path / name), [public], device_id=kw.pop("device_id", "d-1"), **kw)


def _live_file(base: str, public, channel: str = "canary") -> str:
    release = ota.verify_channel(
        os.path.join(base, MODEL, channel), signing_lib.trusted_keys([public])
    )
    return os.path.join(base, MODEL, channel, release["files"][0]["path"])


def test_push_and_device_update_over_http_with_a_real_tflite(
    tmp_path, http_base, signing, tiny_model
):
    from components.common import model_io, tflite

    base, url = http_base
    private, public, key_path, _ = signing
    artifact = str(tmp_path / "model")
    saved = model_io.save_keras_model(tiny_model, artifact)
    model_io.write_tflite(tflite.convert_float32(saved), artifact)

    result = ota.push_tflite(
        model_io.tflite_path(artifact),
        MODEL,
        _destination(base, key_path),
        metrics={"accuracy": 0.97, "latency_p50_ms": 0.1, "candidate": "float32"},
    )
    assert (result.sequence, result.model_version, result.created) == (1, 1, True)
    release = ota.verify_channel(
        os.path.join(base, MODEL, "canary"), signing_lib.trusted_keys([public])
    )
    assert release["metrics"]["accuracy"] == 0.97
    assert release["previous_release"] is None
    assert release["files"][0]["length"] == os.path.getsize(model_io.tflite_path(artifact))
    assert release["inputs"]["inputs"][0]["shape"] == [1, 64]  # the input plan, signed

    client = _device(tmp_path, public, model_name=MODEL)
    check = client.check(f"{url}/{MODEL}/canary")
    assert check.status == UPDATED, check.reason
    # The gate's verdict arrives inside the OMS statement the device verified.
    assert check.gate == {
        "blessed": True,
        "accuracy": 0.97,
        "latency_p50_ms": 0.1,
        "candidate": "float32",
    }
    shipped = open(model_io.tflite_path(artifact), "rb").read()
    assert open(client.current_model_path(), "rb").read() == shipped
    runner = tflite.TFLiteModel(open(client.current_model_path(), "rb").read())
    x = np.random.default_rng(0).random((3, 64), dtype=np.float32)
    assert abs(runner.predict(x) - tiny_model.predict(x, verbose=0)).max() < 1e-5
    assert client.check(f"{url}/{MODEL}/canary").status == UP_TO_DATE


def test_same_bytes_twice_is_one_release_and_one_sequence(tmp_path, signing):
    base = str(tmp_path / "ota")
    _, _, key_path, _ = signing
    model = _model_file(tmp_path, "a.tflite", b"model-a" * 100)
    first = ota.push_tflite(model, MODEL, _destination(base, key_path))
    before = repo_tree(base)
    second = ota.push_tflite(model, MODEL, _destination(base, key_path))
    assert first.created and not second.created
    assert (second.sequence, second.model_version) == (1, 1)
    assert repo_tree(base) == before  # no new metadata, bundle or file
    assert os.listdir(os.path.join(base, MODEL, "releases")) == ["1.json"]
    beta = ota.push_tflite(model, MODEL, _destination(base, key_path, channel="beta"))
    assert (beta.sequence, beta.model_version) == (1, 1)  # same bytes, same model version


@pytest.fixture
def two_releases(tmp_path, http_base, signing):
    """Device on release 1 (sequence 1); the channel then carries release 2 (sequence 2)."""
    base, url = http_base
    private, public, key_path, _ = signing
    ota.push_tflite(
        _model_file(tmp_path, "a.tflite", b"A" * 1000), MODEL, _destination(base, key_path)
    )
    client = _device(tmp_path, public)
    assert client.check(f"{url}/{MODEL}/canary").status == UPDATED
    ota.push_tflite(
        _model_file(tmp_path, "b.tflite", b"B" * 1200), MODEL, _destination(base, key_path)
    )
    return client, f"{url}/{MODEL}/canary", base, private, public


def _rejected_unchanged(client, location, expect_in_reason, **kw):
    before = device_tree(client.device_dir)
    result = client.check(location, **kw)
    assert result.status == REJECTED, result
    assert expect_in_reason in result.reason, result.reason
    assert device_tree(client.device_dir) == before
    return result


def test_tampered_model_bytes_rejected(two_releases):
    client, location, base, _, public = two_releases
    blob = _live_file(base, public)
    data = bytearray(open(blob, "rb").read())
    data[10] ^= 0xFF
    open(blob, "wb").write(bytes(data))
    _rejected_unchanged(client, location, "LengthOrHashMismatchError")
    data[10] ^= 0xFF
    open(blob, "wb").write(bytes(data) + b"extra")
    _rejected_unchanged(client, location, "DownloadLengthMismatchError")


def test_tampered_and_unsigned_metadata_rejected(two_releases):
    client, location, base, _, _ = two_releases
    meta = os.path.join(base, "metadata")
    version = max(tuf_repo.Repository(base).versions_on_disk(MODEL))
    role_path = os.path.join(meta, f"{version}.{MODEL}.json")
    original = open(role_path, "rb").read()
    role = json.loads(original)
    role["signed"]["targets"][f"{MODEL}/canary/model.tflite"]["custom"]["min_app_version"] = "0.0"
    open(role_path, "w").write(json.dumps(role))
    _rejected_unchanged(client, location, "LengthOrHashMismatchError")  # snapshot pins it
    open(role_path, "wb").write(original)
    timestamp = json.load(open(os.path.join(meta, "timestamp.json")))
    timestamp["signatures"] = []
    open(os.path.join(meta, "timestamp.json"), "w").write(json.dumps(timestamp))
    _rejected_unchanged(client, location, "UnsignedMetadataError")


def test_expired_metadata_rejected(tmp_path, http_base, signing):
    base, url = http_base
    _, public, key_path, _ = signing
    long_ago = tuf_repo.utcnow() - datetime.timedelta(days=31)  # 30-day expiry: over yesterday
    dest = _destination(base, key_path)
    ota.push_tflite(_model_file(tmp_path, "a.tflite", b"A" * 10), MODEL, dest, now=long_ago)
    client = _device(tmp_path, public)
    _rejected_unchanged(client, f"{url}/{MODEL}/canary", "ExpiredMetadataError")
    assert client.current_model_path() is None
    with pytest.raises(signing_lib.SignatureVerificationError, match="expired"):
        ota.verify_channel(os.path.join(base, MODEL, "canary"), signing_lib.trusted_keys([public]))


def test_replayed_metadata_and_an_older_signed_sequence_rejected(tmp_path, two_releases, signing):
    client, location, base, private, _ = two_releases
    timestamp = os.path.join(base, "metadata", "timestamp.json")
    assert client.check(location).status == UPDATED  # sequence 2
    old_timestamp = open(timestamp, "rb").read()
    ota.push_tflite(
        _model_file(tmp_path, "c.tflite", b"C" * 900), MODEL, _destination(base, signing[2])
    )
    assert client.check(location).status == UPDATED  # sequence 3
    new_timestamp = open(timestamp, "rb").read()
    open(timestamp, "wb").write(old_timestamp)  # a replay of validly signed, older metadata
    _rejected_unchanged(client, location, "BadVersionNumberError")
    open(timestamp, "wb").write(new_timestamp)
    # The key holder re-signs sequence 1 under newer metadata: the device's sequence check refuses.
    repo = tuf_repo.Repository(base)
    state = repo.load()
    repo.release(state, MODEL, "canary").custom["sequence"] = 1
    repo.commit(state, {MODEL}, [tuf_repo.signer_for(private)], 30)
    _rejected_unchanged(client, location, "older than the accepted 3")


def _write(path: str, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return path


def test_wrong_key_rejected(tmp_path, two_releases):
    _, location, _, _, _ = two_releases
    stranger = signing_lib.generate_private_key().public_key()
    other = _device(tmp_path, stranger, name="other-device")
    result = other.check(location)
    assert result.status == REJECTED and "untrusted key" in result.reason
    assert other.current_model_path() is None


def test_symlink_out_of_a_local_repository_rejected(tmp_path, signing):
    base = str(tmp_path / "ota")
    _, public, key_path, _ = signing
    ota.push_tflite(
        _model_file(tmp_path, "a.tflite", b"A" * 10), MODEL, _destination(base, key_path)
    )
    blob = _live_file(base, public)
    outside = _model_file(tmp_path, "outside.tflite", b"A" * 10)
    os.remove(blob)
    os.symlink(outside, blob)
    client = _device(tmp_path, public)
    result = client.check(os.path.join(base, MODEL, "canary"))
    assert result.status == REJECTED and "outside the channel" in result.reason, result
    assert client.current_model_path() is None
    with pytest.raises(signing_lib.SignatureVerificationError):
        safe_relative_path("files\\..\\x")


def test_rollout_bucket_and_min_app_version(tmp_path, http_base, signing):
    base, url = http_base
    _, public, key_path, _ = signing
    ids = [f"device-{i}" for i in range(400)]
    inside = [d for d in ids if in_rollout(d, MODEL, 25)]
    assert 60 < len(inside) < 140  # about a quarter, from a stable hash
    assert all(in_rollout(d, MODEL, 50) for d in inside)  # raising the share only adds devices
    assert rollout_bucket("device-1", MODEL) == rollout_bucket("device-1", MODEL)
    outside = next(d for d in ids if not in_rollout(d, MODEL, 25))
    dest = _destination(base, key_path, rollout_percentage=25, min_app_version="2.1")
    ota.push_tflite(_model_file(tmp_path, "a.tflite", b"A" * 10), MODEL, dest)
    location = f"{url}/{MODEL}/canary"
    out = _device(tmp_path, public, name="out", device_id=outside, app_version="3")
    before = device_tree(out.device_dir)
    assert out.check(location).status == NOT_ELIGIBLE
    assert device_tree(out.device_dir) == before  # nothing kept, not even metadata
    old_app = _device(tmp_path, public, name="old", device_id=inside[0], app_version="2.0.9")
    result = old_app.check(location)
    assert result.status == NOT_ELIGIBLE and "older than the required 2.1" in result.reason
    ok = _device(tmp_path, public, name="ok", device_id=inside[0], app_version="2.10")
    assert ok.check(location).status == UPDATED


def test_failed_push_leaves_the_published_release(tmp_path, http_base, signing, monkeypatch):
    base, url = http_base
    _, public, key_path, _ = signing
    ota.push_tflite(
        _model_file(tmp_path, "a.tflite", b"A" * 500), MODEL, _destination(base, key_path)
    )
    published = repo_tree(base)
    real_write = storage.atomic_write

    def fail_on_timestamp(path, data):  # dies after files, role and snapshot were written
        if path.endswith(os.sep + "timestamp.json"):
            raise OSError(28, "No space left on device")
        real_write(path, data)

    monkeypatch.setattr(storage, "atomic_write", fail_on_timestamp)
    with pytest.raises(OSError, match="No space"):
        ota.push_tflite(
            _model_file(tmp_path, "b.tflite", b"B" * 500), MODEL, _destination(base, key_path)
        )
    monkeypatch.setattr(storage, "atomic_write", real_write)

    def fail_copy(src, dst, atomic=True):
        raise OSError(13, "Permission denied")

    monkeypatch.setattr(storage, "copy_file", fail_copy)
    with pytest.raises(OSError, match="Permission"):
        ota.push_tflite(
            _model_file(tmp_path, "c.tflite", b"C" * 500), MODEL, _destination(base, key_path)
        )
    monkeypatch.undo()

    after = repo_tree(base)
    assert {k: after[k] for k in published} == published  # nothing published was touched
    release = ota.verify_channel(
        os.path.join(base, MODEL, "canary"), signing_lib.trusted_keys([public])
    )
    assert release["sequence"] == 1
    client = _device(tmp_path, public)
    assert client.check(f"{url}/{MODEL}/canary").status == UPDATED
    assert open(client.current_model_path(), "rb").read() == b"A" * 500
    again = ota.push_tflite(
        _model_file(tmp_path, "b.tflite", b"B" * 500), MODEL, _destination(base, key_path)
    )
    assert again.sequence == 3  # sequence 2 was written by the interrupted push: never reused
    assert client.check(f"{url}/{MODEL}/canary").status == UPDATED
    assert open(client.current_model_path(), "rb").read() == b"B" * 500


def test_promote_and_rollback_sequences_and_device_follows(tmp_path, http_base, signing):
    base, url = http_base
    private, public, key_path, _ = signing
    trusted = signing_lib.trusted_keys([public])
    canary = _destination(base, key_path)
    for i, payload in enumerate((b"1" * 300, b"2" * 300, b"3" * 300)):
        ota.push_tflite(_model_file(tmp_path, f"m{i}.tflite", payload), MODEL, canary)
        promoted = ota.promote(base, MODEL, "canary", "stable", private)
        assert promoted.sequence == i + 1 and promoted.model_version == i + 1
    stable_dir = os.path.join(base, MODEL, "stable")
    assert ota.verify_channel(stable_dir, trusted)["source"]["promoted_from"] == "canary"
    same = ota.promote(base, MODEL, "canary", "stable", private)
    assert not same.created and same.sequence == 3

    client = _device(tmp_path, public)
    location = f"{url}/{MODEL}/stable"
    assert client.check(location).status == UPDATED
    assert open(client.current_model_path(), "rb").read() == b"3" * 300

    back = ota.rollback(base, MODEL, "stable", private)
    assert (back.sequence, back.model_version) == (4, 2)
    live = json.load(open(os.path.join(stable_dir, "metrics.json")))
    assert (live["sequence"], live["model_version"], live["size_bytes"]) == (4, 2, 300)
    assert client.check(location).status == UPDATED  # a rollback is a newer sequence
    assert open(client.current_model_path(), "rb").read() == b"2" * 300
    assert (
        open(os.path.join(client.previous_model_dir(), "model.tflite"), "rb").read() == b"3" * 300
    )
    back = ota.rollback(base, MODEL, "stable", private)
    assert (back.sequence, back.model_version) == (5, 1)
    with pytest.raises(TfxOptError, match="no previous release"):
        ota.rollback(base, MODEL, "stable", private)
    release = ota.verify_channel(stable_dir, trusted)
    assert release["sequence"] == 5 and release["previous_release"] is None
    assert client.check(location).status == UPDATED
    assert open(client.current_model_path(), "rb").read() == b"1" * 300
    history = ota.channel_history(base, MODEL, "stable")
    assert [h["sequence"] for h in history] == [1, 2, 3, 4, 5]
    assert [h["model_version"] for h in history] == [1, 2, 3, 2, 1]

    # A staged promote: 10 % first, then everyone, same release, new sequences.
    staged = ota.promote(base, MODEL, "canary", "beta", private, rollout_percentage=10)
    full = ota.promote(base, MODEL, "canary", "beta", private, rollout_percentage=100)
    assert (staged.sequence, full.sequence) == (1, 2)
    beta = ota.verify_channel(os.path.join(base, MODEL, "beta"), trusted)
    assert (beta["rollout_basis_points"], beta["rollout_percentage"]) == (10000, 100)


def test_key_rotation_devices_follow_and_the_old_key_is_refused(
    tmp_path, http_base, signing, capsys
):
    base, url = http_base
    _, old_public, old_path, _ = signing
    ota.push_tflite(
        _model_file(tmp_path, "a.tflite", b"A" * 10), MODEL, _destination(base, old_path)
    )
    device = _device(tmp_path, old_public)
    assert device.check(f"{url}/{MODEL}/canary").status == UPDATED
    new_path = str(tmp_path / "keys" / "new.pem")
    signing_lib.write_keypair(new_path)
    new_private = signing_lib.load_private_key(path=new_path)
    argv = ["ota-rotate-key", base, "--signing-key-path", old_path]
    assert _cli([*argv, "--new-signing-key-path", new_path]) == 0
    assert "root version 2 trusts key" in capsys.readouterr().out
    before = repo_tree(base)
    with pytest.raises(ConfigError, match="rotate them with `tfxopt ota-rotate-key`"):
        ota.push_tflite(
            _model_file(tmp_path, "b.tflite", b"B" * 10), MODEL, _destination(base, old_path)
        )
    assert repo_tree(base) == before  # refused before anything was written
    result = ota.push_tflite(
        _model_file(tmp_path, "b.tflite", b"B" * 10), MODEL, _destination(base, new_path)
    )
    assert result.sequence == 2 and result.created
    # The device that trusted the old root follows the rotation (root 2 signed by both keys).
    assert device.check(f"{url}/{MODEL}/canary").status == UPDATED
    assert open(device.current_model_path(), "rb").read() == b"B" * 10
    fresh = _device(tmp_path, new_private.public_key(), name="fresh")
    assert fresh.check(f"{url}/{MODEL}/canary").status == UPDATED
    new_trusted = signing_lib.trusted_keys([new_private.public_key()])
    assert ota.verify_channel(os.path.join(base, MODEL, "canary"), new_trusted)["sequence"] == 2


def test_promote_refuses_a_tampered_source(tmp_path, signing):
    base = str(tmp_path / "ota")
    private, _, key_path, _ = signing
    ota.push_tflite(
        _model_file(tmp_path, "a.tflite", b"A" * 10), MODEL, _destination(base, key_path)
    )
    path = os.path.join(base, "metadata", f"1.{MODEL}.json")
    role = json.load(open(path))
    role["signed"]["targets"][f"{MODEL}/canary/model.tflite"]["custom"]["rollout_basis_points"] = 1
    open(path, "w").write(json.dumps(role))
    before = repo_tree(base)
    with pytest.raises(signing_lib.SignatureVerificationError, match="digits"):
        ota.promote(base, MODEL, "canary", "stable", private)
    assert repo_tree(base) == before
    assert not os.path.exists(os.path.join(base, MODEL, "stable"))


def test_promote_and_the_client_refuse_hostile_metadata(tmp_path, signing):
    base = str(tmp_path / "ota")
    private, public, key_path, _ = signing
    ota.push_tflite(
        _model_file(tmp_path, "a.tflite", b"A" * 10), MODEL, _destination(base, key_path)
    )
    with open(os.path.join(base, "metadata", "timestamp.json"), "wb") as f:
        f.write(b'{"signed": ' + b"[" * 50_000 + b"]" * 50_000 + b"}")  # RecursionError bait
    with pytest.raises(signing_lib.SignatureVerificationError, match="cannot be read as TUF"):
        ota.promote(base, MODEL, "canary", "stable", private)
    client = _device(tmp_path, public)
    result = client.check(os.path.join(base, MODEL, "canary"))
    assert result.status == REJECTED and "nests deeper than 32 levels" in result.reason


def test_signing_key_errors_name_the_source(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="signing_key_path .*cannot be read"):
        signing_lib.load_private_key(path=str(tmp_path / "missing.pem"))
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    with pytest.raises(ConfigError, match="not an Ed25519 private key"):
        signing_lib.load_private_key(path=str(bad))
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(ConfigError, match="NO_SUCH_KEY_VAR is not set"):
        signing_lib.load_private_key(env="NO_SUCH_KEY_VAR")
    seed = signing_lib.generate_private_key()
    raw = seed.private_bytes_raw()
    monkeypatch.setenv("OTA_KEY_B64", base64.b64encode(raw).decode())
    loaded = signing_lib.load_private_key(env="OTA_KEY_B64")
    assert signing_lib.key_id(loaded.public_key()) == signing_lib.key_id(seed.public_key())
    with pytest.raises(ConfigError, match="exactly one of signing_key_path or signing_key_env"):
        OtaDestination.parse({"base_directory": "x"}, where="pusher.ota.0")


def _place(base: str, model: str, payload: bytes, oms_key) -> tuple[dict, dict, dict]:
    """A model file and its OMS bundle under their TUF names: (model entry, bundle entry, oms)."""
    import hashlib

    from components.pusher import oms

    sha = hashlib.sha256(payload).hexdigest()
    channel_dir = os.path.join(base, model, "canary")
    os.makedirs(channel_dir, exist_ok=True)
    _write(os.path.join(channel_dir, f"{sha}.model.tflite"), payload)
    bundle = oms.sign_file(oms_key, "model.tflite", sha)
    bundle_sha = hashlib.sha256(bundle).hexdigest()
    _write(os.path.join(channel_dir, f"{bundle_sha}.model.sig"), bundle)
    fields = {
        "target": f"{model}/canary/model.sig",
        "sha256": bundle_sha,
        "length": len(bundle),
        "public_key": oms.public_key_pem(oms_key.public_key()).decode(),
    }
    return (
        {"sha256": sha, "length": len(payload)},
        {"sha256": bundle_sha, "length": len(bundle)},
        fields,
    )


def _custom(model: str, sequence: int, model_entry: dict, oms_fields: dict) -> dict:
    return {
        "format": tuf_repo.RELEASE_FORMAT,
        "model_name": model,
        "channel": "canary",
        "sequence": sequence,
        "model_version": sequence,
        "file": model_entry,
        "min_app_version": "0",
        "rollout_basis_points": 10000,
        "oms": oms_fields,
    }


def test_a_models_key_cannot_publish_another_model(tmp_path, http_base):
    """Per-model delegated roles: whoever holds `other`'s key, and even the snapshot and
    timestamp keys, cannot make a device take a `digits` release."""
    from components.pusher import oms

    base, url = http_base
    top_key, digits_key, other_key = (signing_lib.generate_private_key() for _ in range(3))
    top, digits, other = map(tuf_repo.signer_for, (top_key, digits_key, other_key))
    oms_key = oms.derive_signing_key(top_key)
    repo = tuf_repo.Repository(base)
    state = repo.create([top])
    for name, signer, payload in (("digits", digits, b"D" * 50), ("other", other, b"O" * 50)):
        model_entry, bundle_entry, fields = _place(base, name, payload, oms_key)
        custom = _custom(name, 1, model_entry, fields)
        repo.set_channel(state, name, "canary", model_entry, bundle_entry, custom, [signer])
    by_role = {"digits": [digits], "other": [other]}
    repo.commit(state, {"digits", "other"}, [top], 30, role_signers=by_role)
    client = DeviceClient(str(tmp_path / "dev"), [top_key.public_key()], device_id="d")
    assert client.check(f"{url}/digits/canary").status == UPDATED
    installed = open(client.current_model_path(), "rb").read()
    # `other`'s key signs a digits release (sequence 9) into its own role; snapshot and
    # timestamp (the top key) list it.
    model_entry, bundle_entry, fields = _place(base, "digits", b"E" * 50, oms_key)
    repo.set_channel(
        state,
        "other",
        "canary",
        model_entry,
        bundle_entry,
        _custom("digits", 9, model_entry, fields),
        [other],
    )
    targets = state.roles["other"].signed.targets
    for name in ("model.tflite", "model.sig"):
        entry = targets.pop(f"other/canary/{name}")
        entry.path = f"digits/canary/{name}"
        targets[entry.path] = entry
    repo.commit(state, {"other"}, [top], 30, role_signers={"other": [other]})
    result = client.check(f"{url}/digits/canary")
    assert result.status == UP_TO_DATE and result.sequence == 1, result  # other/*/* only
    assert open(client.current_model_path(), "rb").read() == installed == b"D" * 50
    # And digits' own role signed by `other`'s key is refused outright.
    repo.commit(state, {"digits"}, [top], 30, role_signers={"digits": [other]})
    _rejected_unchanged(client, f"{url}/digits/canary", "UnsignedMetadataError")


def test_location_names_the_model_and_channel_or_they_are_given(tmp_path, http_base, signing):
    base, url = http_base
    _, public, key_path, _ = signing
    ota.push_tflite(
        _model_file(tmp_path, "a.tflite", b"A" * 70), MODEL, _destination(base, key_path)
    )
    client = _device(tmp_path, public)
    before = device_tree(client.device_dir)
    for location, missing in ((f"{url}/canary", "pass --model-name"), (f"{url}/", "--channel")):
        result = client.check(location)
        assert result.status == REJECTED and missing in result.reason, result
        assert "does not end in .../<model>/<channel>" in result.reason
    assert device_tree(client.device_dir) == before
    # Another model's channel at this repository: no such release for the expected model.
    result = client.check(f"{url}/other/canary")
    assert result.status == REJECTED
    assert "no release of model 'other' on channel 'canary'" in result.reason
    assert device_tree(client.device_dir) == before
    # With both names given, the location is the repository itself.
    named = _device(tmp_path, public, name="named", model_name=MODEL)
    assert named.check(url, channel="canary").status == UPDATED
    assert named.check(base, channel="canary").status == UP_TO_DATE  # the directory source
    assert list(named.state()["accepted"]) == ["digits/canary"]
    with pytest.raises(ConfigError, match="model_name"):
        _device(tmp_path, public, name="bad", model_name="../x")


def _cli(argv):
    parser = argparse.ArgumentParser(prog="tfxopt")
    commands.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_keygen_promote_rollback_ota_check(tmp_path, http_base, capsys, monkeypatch):
    base, url = http_base
    key = str(tmp_path / "k" / "ota.pem")
    assert _cli(["ota-keygen", key]) == 0
    assert oct(os.stat(key).st_mode & 0o777) == "0o600"
    assert "BEGIN PUBLIC KEY" in open(key + ".oms.pub").read()
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        _cli(["ota-keygen", key])
    for payload in (b"x" * 64, b"y" * 64):
        ota.push_tflite(_model_file(tmp_path, "m.tflite", payload), MODEL, _destination(base, key))
        argv = ["promote", base, MODEL, "--from", "canary", "--to", "stable"]
        assert _cli([*argv, "--signing-key-path", key]) == 0
    monkeypatch.setenv("TFXOPT_OTA_SIGNING_KEY", open(key).read())
    assert _cli(["rollback", base, MODEL, "--channel", "stable"]) == 0  # key from the default env
    out = capsys.readouterr().out
    assert "rollback: digits/stable sequence 3, model version 1" in out
    device = str(tmp_path / "dev")
    argv = ["ota-check", f"{url}/{MODEL}/stable", "--public-key", key + ".pub"]
    argv += ["--device-dir", device]
    assert _cli(argv) == 0
    out = capsys.readouterr().out
    assert "ota-check: updated" in out and "gate verdict (OMS-signed)" in out
    stranger = str(tmp_path / "stranger.pem")
    signing_lib.write_keypair(stranger)
    other_device = ["--device-dir", str(tmp_path / "dev2")]  # the pin counts on first contact
    assert _cli([*argv[:3], stranger + ".pub", *other_device]) == 1
    out = capsys.readouterr().out
    assert out.startswith("ota-check: rejected: ") and "untrusted key" in out
    assert out.count("\n") == 1  # one line
    assert _cli([*argv, "--model-name", "other"]) == 1
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "no release of model 'other'" in out
    assert _cli(["ota-check", f"{url}/{MODEL}/stable", "--device-dir", device]) == 1
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "no trust anchor" in out
