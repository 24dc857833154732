"""TUF's threat list through the real ``tfxopt ota-check`` over HTTP (127.0.0.1), interop with the
stock python-tuf client and with ``model_signing verify``, and the migration from the old
``manifest.json`` channels."""

from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading

import pytest

from components.common.errors import ConfigError
from components.pusher import commands, oms, ota, ota_legacy, tuf_repo
from components.pusher import signing as signing_lib
from components.pusher.config import OtaDestination
from components.pusher.ota_client import UP_TO_DATE, UPDATED, DeviceClient, release_id
from tests.ota_helpers import StaticServer, device_tree, repo_tree

MODEL = "digits"
MODEL_SIGNING_TOOL = os.path.join(sys.prefix, "tools", "model-signing")


def _write(path, data: bytes) -> str:
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def _cli(argv):
    parser = argparse.ArgumentParser(prog="tfxopt")
    commands.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def ota_check(location: str, device_dir, public_key: str, *extra: str) -> tuple[int, str]:
    """``tfxopt ota-check`` in a process of its own: (exit code, stdout)."""
    argv = [sys.executable, "-m", "pipelines.cli", "ota-check", location]
    argv += ["--public-key", public_key, "--device-dir", str(device_dir), "--device-id", "d-1"]
    argv += ["--timeout", "5", *extra]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=os.environ)
    return done.returncode, done.stdout


@pytest.fixture
def channel(tmp_path):
    """A key (made by ``tfxopt ota-keygen``), a repository with release 1 on digits/canary, served
    over HTTP: a dict of paths, URL and the model bytes."""
    key = str(tmp_path / "keys" / "ota.pem")
    assert _cli(["ota-keygen", key]) == 0
    base = str(tmp_path / "ota")
    os.makedirs(base)
    payload = b"TFL3" + bytes(range(256)) * 8
    ota.push_tflite(
        _write(tmp_path / "m1.tflite", payload),
        MODEL,
        OtaDestination(base_directory=base, channel="canary", signing_key_path=key),
        metrics={
            "candidate": "int8",
            "accuracy": 0.96,
            "accuracy_drop": 0.01,
            "latency_p50_ms": 0.2,
        },
    )
    server = StaticServer(base)
    try:
        yield {
            "key": key,
            "public": key + ".pub",
            "oms_public": key + ".oms.pub",
            "base": base,
            "url": server.url,
            "location": f"{server.url}/{MODEL}/canary",
            "payload": payload,
        }
    finally:
        server.close()


def _push(channel: dict, tmp_path, payload: bytes, **kw):
    dest = OtaDestination(
        base_directory=channel["base"], channel="canary", signing_key_path=channel["key"]
    )
    return ota.push_tflite(_write(tmp_path / "next.tflite", payload), MODEL, dest, **kw)


# -- interop: no code of ours on the verifying side ------------------------------------------------


def test_stock_python_tuf_updater_downloads_and_verifies_a_release(tmp_path, channel):
    from tuf.ngclient import Updater

    metadata_dir = tmp_path / "stock" / "metadata"
    metadata_dir.mkdir(parents=True)
    shutil.copy(
        os.path.join(channel["base"], "metadata", "1.root.json"), metadata_dir / "root.json"
    )
    downloads = tmp_path / "stock" / "targets"
    downloads.mkdir()
    updater = Updater(
        str(metadata_dir), f"{channel['url']}/metadata/", str(downloads), f"{channel['url']}/"
    )
    updater.refresh()
    info = updater.get_targetinfo(f"{MODEL}/canary/model.tflite")
    assert info is not None and info.custom["sequence"] == 1 and info.custom["model_name"] == MODEL
    path = updater.download_target(info)
    assert open(path, "rb").read() == channel["payload"]
    bundle_info = updater.get_targetinfo(info.custom["oms"]["target"])
    assert bundle_info.hashes["sha256"] == info.custom["oms"]["sha256"]
    assert os.path.getsize(updater.download_target(bundle_info)) == bundle_info.length


def _model_signing(*args: str) -> subprocess.CompletedProcess:
    assert os.path.isdir(MODEL_SIGNING_TOOL), (
        f"{MODEL_SIGNING_TOOL} is missing: run `make venv` (scripts/setup_venv.sh installs "
        "requirements/model-signing-tool.txt there)"
    )
    env = {**os.environ, "PYTHONPATH": MODEL_SIGNING_TOOL}
    argv = [sys.executable, "-m", "model_signing", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)


def test_model_signing_verifies_the_published_bundle_and_refuses_a_tampered_model(
    tmp_path, channel
):
    release = ota.verify_channel(
        os.path.join(channel["base"], MODEL, "canary"),
        signing_lib.trusted_keys([signing_lib.load_public_key(channel["public"])]),
    )
    channel_dir = os.path.join(channel["base"], MODEL, "canary")
    bundle = os.path.join(channel_dir, f"{release['oms']['sha256']}.model.sig")
    model = shutil.copy(
        os.path.join(channel_dir, release["files"][0]["path"]), tmp_path / "model.tflite"
    )
    # The key ota-keygen wrote for model_signing is the one named in the signed metadata.
    assert open(channel["oms_public"]).read() == release["oms"]["public_key"]
    args = ["verify", "key", "--signature", bundle, "--public_key", channel["oms_public"]]
    done = _model_signing(*args, str(model))
    assert done.returncode == 0 and "Verification succeeded" in done.stdout, done.stderr[-2000:]
    tampered = _write(tmp_path / "tampered" / "model.tflite", channel["payload"][:-1] + b"\0")
    refused = _model_signing(*args, tampered)
    assert refused.returncode != 0 and "Verification succeeded" not in refused.stdout
    # The statement's predicate carries the gate's verdict.
    payload = json.loads(base64.b64decode(json.load(open(bundle))["dsseEnvelope"]["payload"]))
    assert payload["predicate"][oms.GATE_FIELD] == {
        "blessed": True,
        "candidate": "int8",
        "accuracy": 0.96,
        "accuracy_drop": 0.01,
        "latency_p50_ms": 0.2,
    }


def test_our_verifier_refuses_what_model_signing_would(tmp_path):
    key = oms.derive_signing_key(signing_lib.generate_private_key())
    sha = hashlib.sha256(b"model").hexdigest()
    bundle = oms.sign_file(key, "model.tflite", sha, {"candidate": "x"})
    assert oms.verify_bundle(bundle, key.public_key(), sha)[oms.GATE_FIELD] == {"candidate": "x"}
    other_key = oms.derive_signing_key(signing_lib.generate_private_key())
    flipped = bytearray(bundle)
    at = bundle.index(b'"sig": "') + 10
    flipped[at] = ord("A") if flipped[at] != ord("A") else ord("B")
    refusals = [  # (bundle, public key, file digest, the reason expected)
        (bundle, key.public_key(), hashlib.sha256(b"other").hexdigest(), "does not sign this"),
        (bundle, other_key.public_key(), sha, "signed by another key"),
        (bytes(flipped), key.public_key(), sha, "signature does not verify"),
        (b"{", key.public_key(), sha, "malformed"),
    ]
    for data, public, digest, reason in refusals:
        with pytest.raises(signing_lib.SignatureVerificationError, match=reason):
            oms.verify_bundle(data, public, digest)
    # Deterministic: the same Ed25519 secret always gives the same OMS key.
    ed = signing_lib.generate_private_key()
    assert oms.public_key_pem(oms.derive_signing_key(ed).public_key()) == oms.public_key_pem(
        oms.derive_signing_key(ed).public_key()
    )


# -- TUF's threats, through the CLI over HTTP ------------------------------------------------------


def _refused(rc: int, out: str, expect: str) -> None:
    assert rc == 1, out
    assert out.startswith("ota-check: rejected: ") and out.count("\n") == 1, out
    assert expect in out, out


def test_freeze_attack_stale_metadata_refused(tmp_path):
    """A mirror frozen on old metadata is refused once that metadata has expired."""
    key = str(tmp_path / "ota.pem")
    signing_lib.write_keypair(key)
    base = str(tmp_path / "ota")
    frozen_at = tuf_repo.utcnow() - datetime.timedelta(days=31)
    dest = OtaDestination(base_directory=base, channel="canary", signing_key_path=key)
    ota.push_tflite(_write(tmp_path / "m.tflite", b"M" * 99), MODEL, dest, now=frozen_at)
    server = StaticServer(base)
    try:
        device = tmp_path / "device"
        rc, out = ota_check(f"{server.url}/{MODEL}/canary", device, key + ".pub")
    finally:
        server.close()
    _refused(rc, out, "ExpiredMetadataError")
    assert not os.path.exists(device / "current")


def test_mix_and_match_refused(tmp_path, channel):
    """Metadata or files of two releases combined are refused, each signed as it was."""
    device = tmp_path / "device"
    assert ota_check(channel["location"], device, channel["public"])[0] == 0
    before = device_tree(str(device))
    _push(channel, tmp_path, b"TFL3" + b"\x02" * (len(channel["payload"]) - 4))  # same length
    meta = os.path.join(channel["base"], "metadata")
    first, second = tuf_repo.Repository(channel["base"]).versions_on_disk(MODEL)[-2:]
    new_role = os.path.join(meta, f"{second}.{MODEL}.json")
    new_bytes = open(new_role, "rb").read()
    shutil.copy(os.path.join(meta, f"{first}.{MODEL}.json"), new_role)  # old role, new snapshot
    _refused(*ota_check(channel["location"], device, channel["public"]), "LengthOrHashMismatch")
    assert device_tree(str(device)) == before
    _write(new_role, new_bytes)
    # Release 1's model file served under release 2's name.
    release = ota.verify_channel(
        os.path.join(channel["base"], MODEL, "canary"),
        signing_lib.trusted_keys([signing_lib.load_public_key(channel["public"])]),
    )
    live = os.path.join(channel["base"], MODEL, "canary", release["files"][0]["path"])
    kept = open(live, "rb").read()
    _write(live, channel["payload"])
    _refused(*ota_check(channel["location"], device, channel["public"]), "LengthOrHashMismatch")
    assert device_tree(str(device)) == before
    _write(live, kept)
    assert ota_check(channel["location"], device, channel["public"])[0] == 0


class _EndlessHandler(http.server.SimpleHTTPRequestHandler):
    endless: tuple = ()
    sent: list = []

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802 - http.server's name
        if not self.path.endswith(self.endless):
            return super().do_GET()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        chunk, sent = b" " * (1 << 16), 0
        try:
            while sent < 64 << 20:  # the client must hang up long before 64 MiB
                self.wfile.write(chunk)
                sent += len(chunk)
        except OSError:
            pass
        type(self).sent.append(sent)


@pytest.mark.parametrize("endless", ["timestamp.json", "model.tflite"])
def test_endless_data_refused(tmp_path, channel, endless):
    import functools

    handler = type("H", (_EndlessHandler,), {"endless": (endless,), "sent": []})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=channel["base"])
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        location = f"http://127.0.0.1:{server.server_address[1]}/{MODEL}/canary"
        rc, out = ota_check(location, tmp_path / "device", channel["public"])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    _refused(rc, out, "DownloadLengthMismatchError")
    assert handler.sent and max(handler.sent) < 64 << 20  # the client stopped reading
    assert not os.path.exists(tmp_path / "device" / "current")


def test_key_compromise_below_threshold_refused(tmp_path):
    """Every role needs two of two keys: one stolen key cannot publish, with our publisher or
    without it."""
    keys = [signing_lib.generate_private_key() for _ in range(2)]
    public = _write(tmp_path / "k0.pub", signing_lib.public_key_pem(keys[0].public_key()))
    second = _write(tmp_path / "k1.pub", signing_lib.public_key_pem(keys[1].public_key()))
    base = str(tmp_path / "ota")
    dest = OtaDestination(base_directory=base, channel="canary", signing_key_path="unused")
    model = _write(tmp_path / "m.tflite", b"G" * 300)
    ota.push_tflite(model, MODEL, dest, signing_key=keys[0], extra_signing_keys=[keys[1]])
    server = StaticServer(base)
    try:
        location = f"{server.url}/{MODEL}/canary"
        device = tmp_path / "device"
        # One pinned key is not enough for a root that needs two.
        _refused(*ota_check(location, tmp_path / "one-pin", public), "untrusted key")
        assert ota_check(location, device, public, "--public-key", second)[0] == 0
        before = repo_tree(base)
        evil = _write(tmp_path / "evil.tflite", b"E" * 300)
        with pytest.raises(ConfigError, match="hold.*1 of the 2 signature"):
            ota.push_tflite(evil, MODEL, dest, signing_key=keys[1])
        assert repo_tree(base) == before  # refused before anything was written
        # The thief signs with the one key by hand, through the TUF API.
        repo = tuf_repo.Repository(base)
        state = repo.load()
        sha = hashlib.sha256(b"E" * 300).hexdigest()
        _write(os.path.join(base, MODEL, "canary", f"{sha}.model.tflite"), b"E" * 300)
        entry = repo.release(state, MODEL, "canary")
        custom = {**entry.custom, "sequence": 2, "file": {"sha256": sha, "length": 300}}
        bundle = {"sha256": custom["oms"]["sha256"], "length": custom["oms"]["length"]}
        stolen = [tuf_repo.signer_for(keys[1])]
        repo.set_channel(state, MODEL, "canary", custom["file"], bundle, custom, stolen)
        repo.commit(state, {MODEL}, stolen, 30)
        before = device_tree(str(device))
        _refused(*ota_check(location, device, public), "signed by 1/2 keys")
        assert device_tree(str(device)) == before
    finally:
        server.close()


# -- migration from the old manifests ----------------------------------------------------------


def _legacy_channel(base: str, private, releases: list[bytes]) -> dict:
    """A channel as the old publisher left it: manifest.json (+ .sig) naming the last release,
    whose previous_release is the one before."""
    channel_dir = os.path.join(base, MODEL, "canary")
    summary = None
    for sequence, payload in enumerate(releases, start=1):
        sha = hashlib.sha256(payload).hexdigest()
        _write(os.path.join(channel_dir, "files", f"{sha}.tflite"), payload)
        files = [{"name": "model.tflite", "path": f"files/{sha}.tflite", "sha256": sha}]
        files[0]["length"] = len(payload)
        manifest = {
            "format": ota_legacy.LEGACY_FORMAT,
            "model_name": MODEL,
            "channel": "canary",
            "sequence": sequence,
            "model_version": sequence,
            "files": files,
            "created_at": "2026-11-01T00:00:00+00:00",
            "expires": "2027-11-01T00:00:00+00:00",
            "min_app_version": "0",
            "rollout_percentage": 100.0,
            "previous_release": summary,
            "metrics": {"accuracy": 0.9 + sequence / 100},
            "source": {},
            "key_id": signing_lib.key_id(private.public_key()),
        }
        data = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
        _write(os.path.join(channel_dir, "manifest.json"), data)
        entry = signing_lib.signature_entry(private, data, sequence)
        sig = {"algorithm": "ed25519", "signatures": [entry]}
        _write(os.path.join(channel_dir, "manifest.json.sig"), json.dumps(sig).encode())
        summary = {k: manifest[k] for k in ("sequence", "model_version", "files", "metrics")}
        summary["min_app_version"] = "0"
    return manifest


def _legacy_device(device_dir: str, manifest: dict, payload: bytes) -> None:
    """A device the old client updated to ``manifest``'s release."""
    rid = release_id(manifest["files"][0]["sha256"], manifest["files"][0]["length"])
    _write(os.path.join(device_dir, "models", rid, "model.tflite"), payload)
    os.symlink(os.path.join("models", rid), os.path.join(device_dir, "current"))
    state = {
        "accepted": {f"{MODEL}/canary": {"sequence": manifest["sequence"], "release_id": rid}},
        "current": {"model_name": MODEL, "channel": "canary", "sequence": manifest["sequence"]},
    }
    _write(os.path.join(device_dir, "state.json"), json.dumps(state).encode())


def test_migrate_keeps_devices_up_to_date_and_the_old_manifests_verifiable(tmp_path, capsys):
    key = str(tmp_path / "ota.pem")
    signing_lib.write_keypair(key)
    private = signing_lib.load_private_key(path=key)
    base = str(tmp_path / "ota")
    payloads = [b"1" * 400, b"2" * 400]
    legacy = _legacy_channel(base, private, payloads)
    device_dir = str(tmp_path / "device")
    _legacy_device(device_dir, legacy, payloads[1])
    old_files = repo_tree(base)

    assert _cli(["ota-migrate", base, "--signing-key-path", key]) == 0
    out = capsys.readouterr().out
    assert "migrate: digits/canary sequence 2, model version 2" in out
    assert "1 channel(s) published" in out and "format is deprecated" in out
    after = repo_tree(base)
    assert {k: after[k] for k in old_files} == old_files  # the old channel is untouched
    trusted = signing_lib.trusted_keys([private.public_key()])
    channel_dir = os.path.join(base, MODEL, "canary")
    assert ota_legacy.read_channel(channel_dir, trusted)["sequence"] == 2  # old clients: fine
    release = ota.verify_channel(channel_dir, trusted)
    assert (release["sequence"], release["model_version"]) == (2, 2)
    assert release["metrics"] == {"accuracy": 0.92}

    client = DeviceClient(device_dir, [private.public_key()], device_id="d-1")
    before = device_tree(device_dir)["current"]
    result = client.check(channel_dir)
    assert result.status == UP_TO_DATE and result.sequence == 2, result
    assert device_tree(device_dir)["current"] == before
    back = ota.rollback(base, MODEL, "canary", private)  # the migrated previous release
    assert (back.sequence, back.model_version) == (3, 1)
    assert client.check(channel_dir).status == UPDATED
    assert open(client.current_model_path(), "rb").read() == payloads[0]
    assert _cli(["ota-migrate", base, "--signing-key-path", key]) == 0
    assert "0 channel(s) published" in capsys.readouterr().out


def test_migrate_refuses_a_tampered_old_manifest_and_publishes_nothing(tmp_path):
    key = str(tmp_path / "ota.pem")
    signing_lib.write_keypair(key)
    private = signing_lib.load_private_key(path=key)
    base = str(tmp_path / "ota")
    _legacy_channel(base, private, [b"1" * 40])
    path = os.path.join(base, MODEL, "canary", "manifest.json")
    _write(
        path, open(path, "rb").read().replace(b'"min_app_version": "0"', b'"min_app_version": "1"')
    )
    with pytest.raises(signing_lib.SignatureVerificationError, match="altered"):
        ota_legacy.migrate(base, private)
    assert not os.path.exists(os.path.join(base, "metadata", "timestamp.json"))


def test_a_missing_signing_key_fails_before_anything_is_published(tmp_path, monkeypatch):
    from components.pusher import push
    from components.pusher.config import PusherConfig

    base = str(tmp_path / "ota")
    monkeypatch.delenv("NO_SUCH_OTA_KEY", raising=False)
    config = PusherConfig.parse(
        {
            "model_name": MODEL,
            "ota": [{"base_directory": base, "signing_key_env": "NO_SUCH_OTA_KEY"}],
        },
        where="pusher",
    )
    model = str(tmp_path / "model")
    _write(os.path.join(model, "Format-TFLite", "model.tflite"), b"TFL3" * 10)
    with pytest.raises(ConfigError, match="pusher.ota.0: signing_key_env: .*NO_SUCH_OTA_KEY"):
        push.preflight(model, config)
    assert not os.path.exists(base)


def test_the_savedmodel_pushed_to_serving_is_oms_signed(tmp_path, tiny_model):
    from components.common import model_io, tflite
    from components.pusher import push
    from components.pusher.config import PusherConfig

    key = str(tmp_path / "keys" / "ota.pem")
    assert _cli(["ota-keygen", key]) == 0
    artifact = str(tmp_path / "model")
    saved = model_io.save_keras_model(tiny_model, artifact)
    model_io.write_tflite(tflite.convert_float32(saved), artifact)
    config = PusherConfig.parse(
        {
            "model_name": MODEL,
            "serving": [{"base_directory": str(tmp_path / "serving")}],
            "ota": [{"base_directory": str(tmp_path / "ota"), "signing_key_path": key}],
        },
        where="pusher",
    )
    record = push.push_model(artifact, config, metrics={"candidate": "float32", "accuracy": 0.9})
    (served,) = record["serving"]
    assert served["oms_bundle"].endswith(os.path.join(MODEL, "signatures", "1.sig"))
    args = ["verify", "key", "--signature", served["oms_bundle"], "--public_key", key + ".oms.pub"]
    done = _model_signing(*args, served["path"])
    assert done.returncode == 0 and "Verification succeeded" in done.stdout, done.stderr[-2000:]
    statement = json.loads(
        base64.b64decode(json.load(open(served["oms_bundle"]))["dsseEnvelope"]["payload"])
    )
    assert statement["predicate"][oms.GATE_FIELD]["candidate"] == "float32"
    copy = shutil.copytree(served["path"], tmp_path / "tampered")
    with open(os.path.join(copy, "saved_model.pb"), "ab") as f:
        f.write(b"\0")
    refused = _model_signing(*args, str(copy))
    assert refused.returncode != 0 and "Verification succeeded" not in refused.stdout
    again = push.push_model(artifact, config)  # the same model: no new version, bundle kept
    assert again["serving"][0]["oms_bundle"] == served["oms_bundle"]


# -- thresholds from the Pusher config and the CLI ---------------------------------------------


def tfxopt(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real ``tfxopt`` CLI in a process of its own."""
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *argv],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )
    return done


def _tflite_artifact(tmp_path, name: str, payload: bytes) -> str:
    """A model artifact holding only a Format-TFLite flavour (no SavedModel needed for OTA)."""
    model = str(tmp_path / name)
    _write(os.path.join(model, "Format-TFLite", "model.tflite"), payload)
    return model


def _stock_updater(tmp_path, base: str, url: str, name: str):
    """python-tuf's stock ``Updater``, trusting the repository's first root, refreshed."""
    from tuf.ngclient import Updater

    metadata_dir = tmp_path / name / "metadata"
    metadata_dir.mkdir(parents=True)
    shutil.copy(os.path.join(base, "metadata", "1.root.json"), metadata_dir / "root.json")
    downloads = tmp_path / name / "targets"
    downloads.mkdir()
    updater = Updater(str(metadata_dir), f"{url}/metadata/", str(downloads), f"{url}/")
    updater.refresh()
    return updater


@pytest.fixture
def two_of_two(tmp_path, monkeypatch):
    """Two keys made by ``tfxopt ota-keygen``; the second also in an environment variable. A
    Pusher config with the first as signing_key_path and the second as an extra key."""
    keys = [str(tmp_path / "keys" / f"k{i}.pem") for i in range(2)]
    for key in keys:
        assert _cli(["ota-keygen", key]) == 0
    monkeypatch.setenv("OTA_SECOND_KEY", open(keys[1]).read())
    base = str(tmp_path / "ota")
    return {"keys": keys, "base": base, "env": "OTA_SECOND_KEY"}


def _pusher_config(base: str, **ota_fields):
    from components.pusher.config import PusherConfig

    return PusherConfig.parse(
        {"model_name": MODEL, "ota": [{"base_directory": base, **ota_fields}]}, where="pusher"
    )


def test_pusher_config_extra_keys_publish_a_repository_that_needs_both(tmp_path, two_of_two):
    from tuf.api.metadata import Metadata

    from components.pusher import push

    k0, k1 = two_of_two["keys"]
    config = _pusher_config(
        two_of_two["base"], signing_key_path=k0, extra_signing_key_envs=[two_of_two["env"]]
    )
    record = push.push_model(_tflite_artifact(tmp_path, "m1", b"TFL3" + b"1" * 400), config)
    assert record["ota"][0]["sequence"] == 1
    root = Metadata.from_file(os.path.join(two_of_two["base"], "metadata", "root.json"))
    both = {
        tuf_repo.keyid(tuf_repo.signer_for(signing_lib.load_private_key(path=k))) for k in (k0, k1)
    }
    assert len(both) == 2
    for role in tuf_repo.TOP_ROLES:
        assert root.signed.roles[role].threshold == 2
        assert set(root.signed.roles[role].keyids) == both
    assert set(root.signatures) == both
    # The same config with the second key as a path publishes the next model too.
    by_path = _pusher_config(two_of_two["base"], signing_key_path=k0, extra_signing_key_paths=[k1])
    again = push.push_model(_tflite_artifact(tmp_path, "m2", b"TFL3" + b"2" * 400), by_path)
    assert again["ota"][0]["sequence"] == 2
    # One key alone is refused by preflight, naming the threshold; nothing is written.
    before = repo_tree(two_of_two["base"])
    alone = _pusher_config(two_of_two["base"], signing_key_path=k1)
    with pytest.raises(ConfigError, match=r"pusher\.ota\.0: .*1 of the 2 .*threshold 2"):
        push.push_model(_tflite_artifact(tmp_path, "m3", b"TFL3" + b"3" * 400), alone)
    assert repo_tree(two_of_two["base"]) == before


@pytest.mark.parametrize(
    "extra, expect",
    [
        (
            {"extra_signing_key_paths": ["@tmp/keys/missing.pem"]},
            "extra_signing_key_paths.0: signing_key_path .*missing.pem.* cannot be read",
        ),
        (
            {"extra_signing_key_envs": ["NO_SUCH_OTA_KEY"]},
            "extra_signing_key_envs.0: "
            "signing_key_env: environment variable NO_SUCH_OTA_KEY is not set",
        ),
        (
            {"extra_signing_key_paths": ["@tmp/keys/garbage.pem"]},
            "extra_signing_key_paths.0: signing_key_path .*garbage.pem.*: not a",
        ),
        (
            {"extra_signing_key_paths": ["@tmp/keys/k0.pem"]},
            "extra_signing_key_paths.0: key [0-9a-f]{16} is the same key as the signing key",
        ),
        (
            {"extra_signing_key_paths": ["@tmp/keys/other.pem"]},
            "signing key [0-9a-f]{16} holds none of the roles",
        ),
    ],
    ids=["missing-file", "unset-env", "malformed", "same-key-twice", "not-the-repository-key"],
)
def test_a_bad_extra_key_fails_before_anything_is_published(
    tmp_path, two_of_two, monkeypatch, extra, expect
):
    """Missing, unset, malformed, repeated, or not a key of the repository: refused by preflight
    with the field named, and neither the OTA repository nor the serving repository changes."""
    from components.pusher import push

    k0 = two_of_two["keys"][0]
    base = two_of_two["base"]
    push.push_model(
        _tflite_artifact(tmp_path, "m1", b"TFL3" + b"1" * 400),
        _pusher_config(base, signing_key_path=k0),
    )  # a 1-of-1 repository held by k0
    _write(tmp_path / "keys" / "garbage.pem", b"-----BEGIN PRIVATE KEY-----\nnope\n")
    assert _cli(["ota-keygen", str(tmp_path / "keys" / "other.pem")]) == 0
    monkeypatch.delenv("NO_SUCH_OTA_KEY", raising=False)
    fields = {k: [p.replace("@tmp", str(tmp_path)) for p in v] for k, v in extra.items()}
    config = _pusher_config(base, signing_key_path=k0, **fields)
    before = repo_tree(base)
    model = _tflite_artifact(tmp_path, "m2", b"TFL3" + b"2" * 400)
    with pytest.raises(ConfigError, match=r"^pusher\.ota\.0: " + expect):
        push.preflight(model, config)
    with pytest.raises(ConfigError, match=r"^pusher\.ota\.0: " + expect):
        push.push_model(model, config)
    assert repo_tree(base) == before


def test_pusher_config_rejects_repeated_or_malformed_extra_key_settings(tmp_path):
    from components.common.errors import ConfigError as Error

    base = str(tmp_path / "ota")
    with pytest.raises(Error, match="extra_signing_key_paths must not repeat"):
        _pusher_config(base, signing_key_path="a.pem", extra_signing_key_paths=["b.pem", "b.pem"])
    with pytest.raises(Error, match="'1BAD' is not an environment variable name"):
        _pusher_config(base, signing_key_path="a.pem", extra_signing_key_envs=["1BAD"])
    ok = _pusher_config(base, signing_key_env="A", extra_signing_key_envs=["B", "C"])
    assert ok.ota[0].extra_signing_key_envs == ["B", "C"]


def test_a_two_of_two_repository_is_promoted_and_rolled_back_through_the_cli(tmp_path, two_of_two):
    """``tfxopt promote`` / ``rollback`` with one key are refused naming the threshold (nothing
    written); with both keys (a path and an environment variable) they publish, and the stock
    python-tuf client accepts what they published."""
    from components.pusher import push

    k0, k1 = two_of_two["keys"]
    base = two_of_two["base"]
    config = _pusher_config(base, signing_key_path=k0, extra_signing_key_paths=[k1])
    first, second = b"TFL3" + b"1" * 500, b"TFL3" + b"2" * 500
    push.push_model(_tflite_artifact(tmp_path, "m1", first), config)
    push.push_model(_tflite_artifact(tmp_path, "m2", second), config)  # canary: sequence 2

    promote = ["promote", base, MODEL, "--from", "canary", "--to", "stable"]
    before = repo_tree(base)
    alone = tfxopt(*promote, "--signing-key-path", k0)
    assert alone.returncode == 2, alone.stderr[-2000:]
    assert "threshold 2" in alone.stderr and "1 of the 2 signature(s)" in alone.stderr
    assert "--extra-signing-key-path" in alone.stderr
    assert repo_tree(base) == before

    both = tfxopt(*promote, "--signing-key-path", k0, "--extra-signing-key-path", k1)
    assert both.returncode == 0, both.stderr[-2000:]
    assert "promote: digits/stable sequence 1" in both.stdout

    rollback = ["rollback", base, MODEL, "--channel", "canary"]
    before = repo_tree(base)
    alone = tfxopt(*rollback, "--signing-key-env", two_of_two["env"])
    assert alone.returncode == 2 and "threshold 2" in alone.stderr, alone.stderr[-2000:]
    assert repo_tree(base) == before
    both = tfxopt(*rollback, "--signing-key-path", k0, "--extra-signing-key-env", two_of_two["env"])
    assert both.returncode == 0, both.stderr[-2000:]
    assert "rollback: digits/canary sequence 3" in both.stdout

    server = StaticServer(base)
    try:
        updater = _stock_updater(tmp_path, base, server.url, "stock")
        stable = updater.get_targetinfo(f"{MODEL}/stable/model.tflite")
        assert stable.custom["sequence"] == 1 and stable.custom["source"]["promoted_from"] == (
            "canary"
        )
        assert open(updater.download_target(stable), "rb").read() == second
        canary = updater.get_targetinfo(f"{MODEL}/canary/model.tflite")
        assert canary.custom["sequence"] == 3
        assert open(updater.download_target(canary), "rb").read() == first
    finally:
        server.close()
    from tuf.api.metadata import Metadata

    role = Metadata.from_file(
        os.path.join(
            base,
            "metadata",
            f"{tuf_repo.Repository(base).versions_on_disk(MODEL)[-1]}.{MODEL}.json",
        )
    )
    assert len(role.signatures) == 2  # both keys signed the last release


@pytest.mark.parametrize("command", ["promote", "rollback", "ota-rotate-key"])
def test_trust_is_refused_outside_ota_migrate(tmp_path, channel, command):
    argv = {
        "promote": ["promote", channel["base"], MODEL, "--from", "canary", "--to", "stable"],
        "rollback": ["rollback", channel["base"], MODEL, "--channel", "canary"],
        "ota-rotate-key": ["ota-rotate-key", channel["base"], "--new-signing-key-path", "x.pem"],
    }[command]
    before = repo_tree(channel["base"])
    done = tfxopt(*argv, "--signing-key-path", channel["key"], "--trust", channel["public"])
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"tfxopt {command}: error: --trust applies to `tfxopt ota-migrate` only")
    assert repo_tree(channel["base"]) == before
    # ota-migrate still takes it (the old manifests' keys).
    args = argparse.ArgumentParser(prog="tfxopt")
    commands.register(args.add_subparsers(dest="command", required=True))
    parsed = args.parse_args(["ota-migrate", channel["base"], "--trust", channel["public"]])
    assert parsed.trust == [channel["public"]]


def test_one_key_given_twice_cannot_meet_a_threshold_of_two(tmp_path):
    """The same key as signing key and extra key would count twice in the publisher's check and
    sign once: refused, and no repository is created."""
    key = signing_lib.generate_private_key()
    base = str(tmp_path / "ota")
    dest = OtaDestination(base_directory=base, channel="canary", signing_key_path="unused")
    model = _write(tmp_path / "m.tflite", b"TFL3" + b"D" * 200)
    with pytest.raises(ConfigError, match="given more than once; a threshold counts distinct"):
        ota.push_tflite(model, MODEL, dest, signing_key=key, extra_signing_keys=[key])
    assert not os.path.exists(os.path.join(base, "metadata", "timestamp.json"))


def test_rotating_a_two_of_two_repository_needs_both_old_keys(tmp_path, two_of_two):
    from components.pusher import push

    k0, k1 = two_of_two["keys"]
    base = two_of_two["base"]
    config = _pusher_config(base, signing_key_path=k0, extra_signing_key_paths=[k1])
    push.push_model(_tflite_artifact(tmp_path, "m1", b"TFL3" + b"1" * 300), config)
    new = str(tmp_path / "keys" / "new.pem")
    assert _cli(["ota-keygen", new]) == 0
    rotate = ["ota-rotate-key", base, "--new-signing-key-path", new, "--signing-key-path", k0]
    before = repo_tree(base)
    with pytest.raises(ConfigError, match="1 of the 2 signature.*'root'.*threshold 2"):
        _cli(rotate)
    assert repo_tree(base) == before
    assert _cli([*rotate, "--extra-signing-key-path", k1]) == 0
    assert tuf_repo.Repository(base).load().root.signed.version == 2
