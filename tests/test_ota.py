"""OTA channels and the device client, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import argparse
import base64
import datetime
import functools
import hashlib
import http.server
import json
import os
import shutil
import threading

import numpy as np
import pytest

from components.common.errors import ConfigError, TfxOptError
from components.pusher import commands, ota, storage
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
from tests.ota_helpers import device_tree, serve_release_of

MODEL = "digits"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output readable
        pass


@pytest.fixture
def http_base(tmp_path):
    """(base directory, base URL): a threaded HTTP server serving the OTA base directory."""
    base = tmp_path / "ota"
    base.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(base))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield str(base), f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


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


def _snapshot(client: DeviceClient):
    path = client.current_model_path()
    data = open(path, "rb").read() if path else None
    return path, data, client.state()


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
        metrics={"accuracy": 0.97, "latency_p95_ms": 0.2},
    )
    assert (result.sequence, result.model_version, result.created) == (1, 1, True)
    manifest = ota.verify_channel(
        os.path.join(base, MODEL, "canary"), signing_lib.trusted_keys([public])
    )
    assert manifest["metrics"]["accuracy"] == 0.97
    assert manifest["previous_release"] is None
    assert manifest["files"][0]["length"] == os.path.getsize(model_io.tflite_path(artifact))

    client = _device(tmp_path, public, model_name=MODEL)
    check = client.check(f"{url}/{MODEL}/canary")
    assert check.status == UPDATED, check.reason
    assert (
        open(client.current_model_path(), "rb").read()
        == open(model_io.tflite_path(artifact), "rb").read()
    )
    runner = tflite.TFLiteModel(open(client.current_model_path(), "rb").read())
    x = np.random.default_rng(0).random((3, 64), dtype=np.float32)
    assert abs(runner.predict(x) - tiny_model.predict(x, verbose=0)).max() < 1e-5
    again = client.check(f"{url}/{MODEL}/canary")
    assert again.status == UP_TO_DATE


def test_same_bytes_twice_is_one_release_and_one_sequence(tmp_path, signing):
    base = str(tmp_path / "ota")
    _, _, key_path, _ = signing
    model = _model_file(tmp_path, "a.tflite", b"model-a" * 100)
    first = ota.push_tflite(model, MODEL, _destination(base, key_path))
    second = ota.push_tflite(model, MODEL, _destination(base, key_path))
    assert first.created and not second.created
    assert (second.sequence, second.model_version) == (1, 1)
    assert os.listdir(os.path.join(base, MODEL, "releases")) == ["1.json"]
    # Same bytes on another channel keep their model version.
    beta = ota.push_tflite(model, MODEL, _destination(base, key_path, channel="beta"))
    assert (beta.sequence, beta.model_version) == (1, 1)


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
    channel_dir = os.path.join(base, MODEL, "canary")
    return client, f"{url}/{MODEL}/canary", channel_dir, private, public


def _rejected_unchanged(client, location, expect_in_reason, **kw):
    before = _snapshot(client)
    result = client.check(location, **kw)
    assert result.status == REJECTED, result
    assert expect_in_reason in result.reason
    assert _snapshot(client) == before
    assert not [n for n in os.listdir(client.device_dir) if n.startswith(".incoming")]
    return result


def test_tampered_model_bytes_rejected(two_releases):
    client, location, channel_dir, _, _ = two_releases
    manifest = json.load(open(os.path.join(channel_dir, "manifest.json")))
    blob = os.path.join(channel_dir, manifest["files"][0]["path"])
    data = bytearray(open(blob, "rb").read())
    data[10] ^= 0xFF
    open(blob, "wb").write(bytes(data))
    _rejected_unchanged(client, location, "sha256 does not match")
    open(blob, "ab").write(b"extra")
    _rejected_unchanged(client, location, "longer than the manifest")


def test_tampered_and_unsigned_manifest_rejected(two_releases):
    client, location, channel_dir, _, _ = two_releases
    path = os.path.join(channel_dir, "manifest.json")
    original = open(path, "rb").read()
    manifest = json.loads(original)
    manifest["rollout_percentage"] = 100.0
    manifest["min_app_version"] = "0.0"  # any byte change breaks the signature
    open(path, "w").write(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    _rejected_unchanged(client, location, "altered")
    open(path, "wb").write(original)
    os.remove(os.path.join(channel_dir, "manifest.json.sig"))
    _rejected_unchanged(client, location, "unsigned")


def test_expired_manifest_rejected(two_releases):
    client, location, _, _, _ = two_releases
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=31)
    _rejected_unchanged(client, location, "expired", now=later)


def test_older_sequence_rejected(two_releases):
    client, location, channel_dir, _, _ = two_releases
    assert client.check(location).status == UPDATED  # now on sequence 2
    for suffix in ("", ".sig"):  # a replay of the (validly signed) sequence-1 manifest
        shutil.copy(
            os.path.join(channel_dir, "history", f"1.json{suffix}"),
            os.path.join(channel_dir, f"manifest.json{suffix}"),
        )
    _rejected_unchanged(client, location, "older than the accepted 2")


def test_wrong_key_rejected(tmp_path, two_releases):
    _, location, _, _, _ = two_releases
    stranger = signing_lib.generate_private_key().public_key()
    other = _device(tmp_path, stranger, name="other-device")
    result = other.check(location)
    assert result.status == REJECTED and "untrusted key" in result.reason
    assert other.current_model_path() is None


def test_path_escaping_the_channel_rejected_even_when_signed(tmp_path, http_base, signing):
    base, url = http_base
    private, public, key_path, _ = signing
    secret = os.path.join(base, MODEL, "secret.bin")
    os.makedirs(os.path.dirname(secret), exist_ok=True)
    open(secret, "wb").write(b"S" * 10)
    ota.push_tflite(
        _model_file(tmp_path, "a.tflite", b"A" * 10), MODEL, _destination(base, key_path)
    )
    client = _device(tmp_path, public)
    assert client.check(f"{url}/{MODEL}/canary").status == UPDATED
    channel_dir = os.path.join(base, MODEL, "canary")
    for bad in ("../secret.bin", "files/../../secret.bin", "/etc/passwd", "%2e%2e/secret.bin"):
        manifest = json.load(open(os.path.join(channel_dir, "manifest.json")))
        manifest["sequence"] += 1
        manifest["files"][0].update(path=bad, sha256=hashlib.sha256(b"S" * 10).hexdigest())
        manifest["files"][0]["length"] = 10
        data = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
        entry = signing_lib.signature_entry(private, data, manifest["sequence"])
        open(os.path.join(channel_dir, "manifest.json"), "wb").write(data)
        sig = {"algorithm": "ed25519", "signatures": [entry]}
        open(os.path.join(channel_dir, "manifest.json.sig"), "w").write(json.dumps(sig))
        _rejected_unchanged(client, f"{url}/{MODEL}/canary", "escapes")
        _rejected_unchanged(client, channel_dir, "escapes")  # the path source too
    with pytest.raises(signing_lib.SignatureVerificationError):
        safe_relative_path("files\\..\\x")


def test_symlink_out_of_a_local_channel_rejected(tmp_path, signing):
    base = str(tmp_path / "ota")
    _, public, key_path, _ = signing
    ota.push_tflite(
        _model_file(tmp_path, "a.tflite", b"A" * 10), MODEL, _destination(base, key_path)
    )
    channel_dir = os.path.join(base, MODEL, "canary")
    manifest = json.load(open(os.path.join(channel_dir, "manifest.json")))
    blob = os.path.join(channel_dir, manifest["files"][0]["path"])
    outside = _model_file(tmp_path, "outside.tflite", b"A" * 10)
    os.remove(blob)
    os.symlink(outside, blob)
    client = _device(tmp_path, public)
    result = client.check(channel_dir)
    assert result.status == REJECTED and "outside the channel" in result.reason
    assert client.current_model_path() is None


def test_rollout_bucket_and_min_app_version(tmp_path, http_base, signing):
    base, url = http_base
    _, public, key_path, _ = signing
    ids = [f"device-{i}" for i in range(400)]
    inside = [d for d in ids if in_rollout(d, MODEL, 25)]
    assert 60 < len(inside) < 140  # about a quarter, from a stable hash
    assert all(in_rollout(d, MODEL, 50) for d in inside)  # raising the percentage only adds
    assert rollout_bucket("device-1", MODEL) == rollout_bucket("device-1", MODEL)
    outside = next(d for d in ids if not in_rollout(d, MODEL, 25))
    dest = _destination(base, key_path, rollout_percentage=25, min_app_version="2.1")
    ota.push_tflite(_model_file(tmp_path, "a.tflite", b"A" * 10), MODEL, dest)
    location = f"{url}/{MODEL}/canary"
    out = _device(tmp_path, public, name="out", device_id=outside, app_version="3")
    assert out.check(location).status == NOT_ELIGIBLE
    assert out.current_model_path() is None and out.state()["accepted"] == {}
    old_app = _device(tmp_path, public, name="old", device_id=inside[0], app_version="2.0.9")
    result = old_app.check(location)
    assert result.status == NOT_ELIGIBLE and "older than the required 2.1" in result.reason
    ok = _device(tmp_path, public, name="ok", device_id=inside[0], app_version="2.10")
    assert ok.check(location).status == UPDATED


def test_failed_push_leaves_previous_release_verifiable(tmp_path, http_base, signing, monkeypatch):
    base, url = http_base
    _, public, key_path, _ = signing
    ota.push_tflite(
        _model_file(tmp_path, "a.tflite", b"A" * 500), MODEL, _destination(base, key_path)
    )
    channel_dir = os.path.join(base, MODEL, "canary")
    before = open(os.path.join(channel_dir, "manifest.json"), "rb").read()
    real_write = storage.atomic_write

    def fail_on_manifest(path, data):  # dies after files, history and signatures were written
        if path.endswith(os.sep + "manifest.json"):
            raise OSError(28, "No space left on device")
        real_write(path, data)

    monkeypatch.setattr(storage, "atomic_write", fail_on_manifest)
    with pytest.raises(OSError, match="No space"):
        ota.push_tflite(
            _model_file(tmp_path, "b.tflite", b"B" * 500), MODEL, _destination(base, key_path)
        )
    real_copy = storage.copy_file

    def fail_copy(src, dst, atomic=True):
        raise OSError(13, "Permission denied")

    monkeypatch.setattr(storage, "copy_file", fail_copy)
    with pytest.raises(OSError, match="Permission"):
        ota.push_tflite(
            _model_file(tmp_path, "c.tflite", b"C" * 500), MODEL, _destination(base, key_path)
        )
    monkeypatch.setattr(storage, "atomic_write", real_write)
    monkeypatch.setattr(storage, "copy_file", real_copy)

    assert open(os.path.join(channel_dir, "manifest.json"), "rb").read() == before
    manifest = ota.verify_channel(channel_dir, signing_lib.trusted_keys([public]))
    assert manifest["sequence"] == 1
    client = _device(tmp_path, public)
    assert client.check(f"{url}/{MODEL}/canary").status == UPDATED
    assert open(client.current_model_path(), "rb").read() == b"A" * 500
    again = ota.push_tflite(
        _model_file(tmp_path, "b.tflite", b"B" * 500), MODEL, _destination(base, key_path)
    )
    assert (
        again.sequence == 3
    )  # sequence 2 was used by the interrupted push's history: never reused
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
    manifest = ota.verify_channel(stable_dir, trusted)
    assert manifest["sequence"] == 5 and manifest["previous_release"] is None
    assert client.check(location).status == UPDATED
    assert open(client.current_model_path(), "rb").read() == b"1" * 300

    # A staged promote: 10 % first, then everyone, same release, new sequences.
    staged = ota.promote(base, MODEL, "canary", "beta", private, rollout_percentage=10)
    full = ota.promote(base, MODEL, "canary", "beta", private, rollout_percentage=100)
    assert (staged.sequence, full.sequence) == (1, 2)
    assert (
        ota.verify_channel(os.path.join(base, MODEL, "beta"), trusted)["rollout_percentage"] == 100
    )


def test_push_after_key_rotation_replaces_the_unverifiable_manifest(tmp_path, signing):
    base = str(tmp_path / "ota")
    _, old_public, old_path, _ = signing
    ota.push_tflite(
        _model_file(tmp_path, "a.tflite", b"A" * 10), MODEL, _destination(base, old_path)
    )
    new_path = str(tmp_path / "keys" / "new.pem")
    signing_lib.write_keypair(new_path)
    result = ota.push_tflite(
        _model_file(tmp_path, "b.tflite", b"B" * 10), MODEL, _destination(base, new_path)
    )
    assert result.sequence == 2 and result.created
    new_public = signing_lib.load_public_key(new_path + ".pub")
    channel_dir = os.path.join(base, MODEL, "canary")
    assert (
        ota.verify_channel(channel_dir, signing_lib.trusted_keys([new_public]))["model_version"]
        == 2
    )
    with pytest.raises(signing_lib.SignatureVerificationError, match="untrusted"):
        ota.verify_channel(channel_dir, signing_lib.trusted_keys([old_public]))


def test_promote_refuses_a_tampered_source(tmp_path, signing):
    base = str(tmp_path / "ota")
    private, _, key_path, _ = signing
    ota.push_tflite(
        _model_file(tmp_path, "a.tflite", b"A" * 10), MODEL, _destination(base, key_path)
    )
    path = os.path.join(base, MODEL, "canary", "manifest.json")
    manifest = json.load(open(path))
    manifest["rollout_percentage"] = 50.0
    open(path, "w").write(json.dumps(manifest))
    with pytest.raises(signing_lib.SignatureVerificationError):
        ota.promote(base, MODEL, "canary", "stable", private)
    assert not os.path.exists(os.path.join(base, MODEL, "stable", "manifest.json"))


def test_promote_and_verify_refuse_a_hostile_signature_file(tmp_path, signing):
    base = str(tmp_path / "ota")
    private, public, key_path, _ = signing
    ota.push_tflite(
        _model_file(tmp_path, "a.tflite", b"A" * 10), MODEL, _destination(base, key_path)
    )
    channel_dir = os.path.join(base, MODEL, "canary")
    with open(os.path.join(channel_dir, "manifest.json.sig"), "wb") as f:
        f.write(b'{"signatures": ' + b"[" * 50_000 + b"]" * 50_000 + b"}")  # RecursionError bait
    with pytest.raises(signing_lib.SignatureVerificationError, match="missing, malformed"):
        ota.promote(base, MODEL, "canary", "stable", private)
    with pytest.raises(signing_lib.SignatureVerificationError, match="nests deeper than 32 levels"):
        ota.verify_channel(channel_dir, signing_lib.trusted_keys([public]))


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


@pytest.mark.parametrize("served_over", ["http", "directory"])
def test_another_models_signed_manifest_at_this_location_is_refused(
    tmp_path, http_base, signing, served_over
):
    base, url = http_base
    _, public, key_path, _ = signing  # one signing key for both models
    for payload in (b"A" * 700, b"B" * 700):  # digits/canary: sequences 1 and 2
        ota.push_tflite(
            _model_file(tmp_path, "d.tflite", payload), MODEL, _destination(base, key_path)
        )
    for payload in (b"1" * 500, b"2" * 500, b"3" * 500):  # other/canary: sequences 1, 2 and 3
        ota.push_tflite(
            _model_file(tmp_path, "o.tflite", payload), "other", _destination(base, key_path)
        )
    channel_dir = os.path.join(base, MODEL, "canary")
    location = f"{url}/{MODEL}/canary" if served_over == "http" else channel_dir
    client = _device(tmp_path, public)  # no model name: it comes from the location
    assert client.check(location).status == UPDATED
    assert client.state()["current"]["sequence"] == 2
    before = device_tree(client.device_dir)

    other_dir = os.path.join(base, "other", "canary")
    for sequence in (1, 3):  # older and newer than the device's sequence 2
        serve_release_of(channel_dir, other_dir, sequence)
        result = client.check(location)
        assert result.status == REJECTED, result
        assert "manifest is for model 'other', not 'digits'" in result.reason
        assert device_tree(client.device_dir) == before
    # The replayed manifest is genuine: a device that expects `other` takes it.
    other_device = _device(tmp_path, public, name="other-device", model_name="other")
    assert other_device.check(location, channel="canary").status == UPDATED
    assert open(other_device.current_model_path(), "rb").read() == b"3" * 500
    assert list(client.state()["accepted"]) == ["digits/canary"]

    # Another channel of the same model is refused too, and the state stays keyed by the
    # expected model and channel.
    ota.push_tflite(
        _model_file(tmp_path, "s.tflite", b"S" * 700), MODEL, _destination(base, key_path, "stable")
    )
    serve_release_of(channel_dir, os.path.join(base, MODEL, "stable"), 1)
    result = client.check(location)
    assert result.status == REJECTED and "manifest is for channel 'stable'" in result.reason
    assert device_tree(client.device_dir) == before


def test_a_location_that_names_no_model_needs_model_name(tmp_path, http_base, signing):
    base, url = http_base
    _, public, key_path, _ = signing
    ota.push_tflite(
        _model_file(tmp_path, "a.tflite", b"A" * 70), MODEL, _destination(base, key_path)
    )
    channel_dir = os.path.join(base, MODEL, "canary")
    shutil.copytree(channel_dir, os.path.join(base, "canary"))  # served at <url>/canary
    client = _device(tmp_path, public)
    before = device_tree(client.device_dir)
    for location, missing in ((f"{url}/canary", "pass --model-name"), (f"{url}/", "--channel")):
        result = client.check(location)
        assert result.status == REJECTED and missing in result.reason, result
        assert "does not end in .../<model>/<channel>" in result.reason
    assert device_tree(client.device_dir) == before
    # A directory whose path names another model: refused, saying how to override.
    odd = os.path.join(str(tmp_path), "downloads", "digits_canary")
    shutil.copytree(channel_dir, odd)
    result = client.check(odd)
    assert result.status == REJECTED
    assert "manifest is for model 'digits', not 'downloads'" in result.reason
    assert "pass --model-name" in result.reason

    named = _device(tmp_path, public, name="named", model_name=MODEL)
    assert named.check(f"{url}/canary").status == UPDATED
    assert named.check(odd, channel="canary").status == UP_TO_DATE
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
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        _cli(["ota-keygen", key])
    for payload in (b"x" * 64, b"y" * 64):
        ota.push_tflite(_model_file(tmp_path, "m.tflite", payload), MODEL, _destination(base, key))
        assert (
            _cli(
                [
                    "promote",
                    base,
                    MODEL,
                    "--from",
                    "canary",
                    "--to",
                    "stable",
                    "--signing-key-path",
                    key,
                ]
            )
            == 0
        )
    monkeypatch.setenv("TFXOPT_OTA_SIGNING_KEY", open(key).read())
    assert _cli(["rollback", base, MODEL, "--channel", "stable"]) == 0  # key from the default env
    out = capsys.readouterr().out
    assert "rollback: digits/stable sequence 3, model version 1" in out
    device = str(tmp_path / "dev")
    argv = [
        "ota-check",
        f"{url}/{MODEL}/stable",
        "--public-key",
        key + ".pub",
        "--device-dir",
        device,
    ]
    assert _cli(argv) == 0
    assert "ota-check: updated" in capsys.readouterr().out
    stranger = str(tmp_path / "stranger.pem")
    signing_lib.write_keypair(stranger)
    assert _cli([*argv[:3], stranger + ".pub", *argv[4:]]) == 1
    out = capsys.readouterr().out
    assert out.startswith("ota-check: rejected: ") and "untrusted key" in out
    assert out.count("\n") == 1  # one line
    assert _cli([*argv, "--model-name", "other"]) == 1
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "manifest is for model 'digits', not 'other'" in out
