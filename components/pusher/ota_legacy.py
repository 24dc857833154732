"""Reading a channel in the retired ``tfxopt.ota.manifest/1`` format, for ``tfxopt ota-migrate``.

That format was ``<channel>/manifest.json`` (one release, ``files/<sha256>.tflite``) with its
Ed25519 signatures in ``manifest.json.sig``; the manifests and files stay where they are after a
migration, so a device still on the old client keeps verifying what it has.
"""

from __future__ import annotations

import datetime
import hashlib

from components.common.keys import TFLITE_FILE
from components.pusher import oms, safe_json, signing, storage, tuf_repo
from components.pusher.ota import (
    OtaPush,
    _check_names,
    _load_state,
    _metrics_json,
    _no_floats,
    _publish,
    _put_bytes,
    _put_file,
    _Release,
    _signers,
    gate_verdict,
)
from components.pusher.tuf_repo import BUNDLE_TARGET

LEGACY_FORMAT = "tfxopt.ota.manifest/1"
MANIFEST_FILE = "manifest.json"
SIGNATURE_FILE = "manifest.json.sig"
MAX_MANIFEST_BYTES = 1 << 20


def read_channel(channel_dir: str, trusted: dict) -> dict | None:
    """The verified legacy manifest of a channel, or None when it has none.

    Raises:
      SignatureVerificationError: when it does not verify against ``trusted`` keys.
    """
    path = storage.join(channel_dir, MANIFEST_FILE)
    if not storage.exists(path):
        return None
    data = storage.read_bytes(path, limit=MAX_MANIFEST_BYTES)
    try:
        signatures = safe_json.loads(
            storage.read_bytes(storage.join(channel_dir, SIGNATURE_FILE), MAX_MANIFEST_BYTES),
            SIGNATURE_FILE,
            MAX_MANIFEST_BYTES,
        )
        manifest = safe_json.loads(data, MANIFEST_FILE, MAX_MANIFEST_BYTES)
    except (OSError, ValueError) as e:
        raise signing.SignatureVerificationError(f"{path}: {e}") from None
    signing.verify_manifest(data, signatures, trusted)
    if not isinstance(manifest, dict) or manifest.get("format") != LEGACY_FORMAT:
        raise signing.SignatureVerificationError(f"{path} is not {LEGACY_FORMAT}")
    return manifest


def _convert(old: dict, channel_dir: str, ec_key) -> _Release:
    """An old manifest's release: its file under its TUF name, and a new OMS bundle for it."""
    (entry,) = old["files"]
    hashed = tuf_repo.hashed_name(entry["sha256"], TFLITE_FILE)
    src = storage.join(channel_dir, entry["path"])
    _put_file(src, storage.join(channel_dir, hashed), entry["sha256"], entry["length"])
    metrics = old.get("metrics", {})
    bundle = oms.sign_file(ec_key, TFLITE_FILE, entry["sha256"], gate_verdict(metrics, {}))
    bundle_sha = hashlib.sha256(bundle).hexdigest()
    _put_bytes(bundle, storage.join(channel_dir, tuf_repo.hashed_name(bundle_sha, BUNDLE_TARGET)))
    return _Release(
        old["model_version"],
        entry["sha256"],
        entry["length"],
        bundle_sha,
        len(bundle),
        metrics,
        entry.get("inputs"),
    )


def migrate(
    base_directory: str,
    signing_key,
    trusted_public_keys=(),
    expires_in_days: float = 30.0,
    now: datetime.datetime | None = None,
) -> list[OtaPush]:
    """Publishes every channel still in the old ``manifest.json`` format into the TUF repository.

    Each live release keeps its sequence, model version, terms and previous release, so a device
    that accepted it under the old client finds it up to date; its model file is signed with OMS
    (the gate's verdict taken from the old manifest's metrics). The old manifests and files stay,
    for devices still on the old client. Channels already migrated are left alone.

    Raises:
      SignatureVerificationError: an old manifest does not verify against the signing key or
        ``trusted_public_keys`` (nothing of that channel is published).
    """
    trusted = signing.trusted_keys([signing_key.public_key(), *trusted_public_keys])
    repo = tuf_repo.Repository(base_directory)
    signers = _signers(signing_key)
    ec_key = oms.derive_signing_key(signing_key)
    oms_pem = oms.public_key_pem(ec_key.public_key()).decode()
    done = []
    storage.makedirs(repo.meta_dir)
    with storage.lock(repo.meta_dir):
        state = _load_state(repo, signers, now)
        for model_name in sorted(storage.listdir(base_directory)):
            model_dir = storage.join(base_directory, model_name)
            if model_name == tuf_repo.METADATA_DIR or not storage.isdir(model_dir):
                continue
            for channel in sorted(storage.listdir(model_dir)):
                channel_dir = storage.join(model_dir, channel)
                manifest = read_channel(channel_dir, trusted)
                if manifest is None:
                    continue
                _check_names(model_name, channel)
                current = repo.release(state, model_name, channel)
                if current is not None and current.custom["sequence"] >= manifest["sequence"]:
                    continue
                repo.check_signers(state, signers, ["targets", "snapshot", "timestamp", model_name])

                previous = None
                if manifest.get("previous_release"):
                    old = manifest["previous_release"]
                    release = _convert(old, channel_dir, ec_key)
                    previous = {
                        "sequence": old["sequence"],
                        "model_version": old["model_version"],
                        "file": {"sha256": release.sha256, "length": release.length},
                        "min_app_version": old.get("min_app_version", "0"),
                        "metrics_json": _metrics_json(release.metrics),
                        "oms": {
                            "target": tuf_repo.target_path(model_name, channel, BUNDLE_TARGET),
                            "sha256": release.bundle_sha256,
                            "length": release.bundle_length,
                            "public_key": oms_pem,
                        },
                    }
                    if release.inputs is not None:
                        previous["inputs"] = _no_floats(release.inputs)
                source = {**manifest.get("source", {}), "migrated_from": LEGACY_FORMAT}
                done.append(
                    _publish(
                        repo,
                        state,
                        model_name,
                        channel,
                        _convert(manifest, channel_dir, ec_key),
                        signers,
                        oms_pem,
                        float(manifest.get("rollout_percentage", 100.0)),
                        manifest.get("min_app_version", "0"),
                        expires_in_days,
                        source,
                        "migrate",
                        previous_release=previous,
                        sequence=manifest["sequence"],
                        now=now,
                    )
                )
    return done
