"""Verifying a published OTA channel as a device would (for the publisher, tests and audits)."""

from __future__ import annotations

import datetime
import json
import os

from components.common.keys import TFLITE_FILE
from components.pusher import oms, storage, tuf_repo
from components.pusher.signing import SignatureVerificationError


def _file_entry(custom: dict) -> dict:
    """The model file as the old manifests listed it (path relative to the channel directory)."""
    entry = {
        "name": TFLITE_FILE,
        "path": tuf_repo.hashed_name(custom["file"]["sha256"], TFLITE_FILE),
        "sha256": custom["file"]["sha256"],
        "length": custom["file"]["length"],
    }
    if "inputs" in custom:
        entry["inputs"] = custom["inputs"]
    return entry


def _root_trusted(root_md, trusted: dict) -> None:
    """Refuses a root whose threshold is not met by signatures of ``trusted`` keys."""
    from securesystemslib.signer import SSlibKey

    ids = {SSlibKey.from_crypto(k).keyid for k in trusted.values()}
    result = root_md.signed.get_verification_result(
        "root", root_md.signed_bytes, root_md.signatures
    )
    held = [kid for kid in result.signed if kid in ids]
    if len(held) < root_md.signed.roles["root"].threshold:
        raise SignatureVerificationError(
            f"root metadata is signed only by untrusted key(s) "
            f"{', '.join(sorted(k[:16] for k in result.signed)) or '(none)'}"
        )


def verify_channel(channel_dir: str, trusted: dict, now: datetime.datetime | None = None) -> dict:
    """Verifies a local channel as a device would; returns its release as a manifest-like dict.

    Checks: the root is signed by ``trusted`` keys, every role by its keys, nothing expired, the
    model file and OMS bundle match their targets entries, and the bundle verifies with the OMS key.

    Returns:
      The ``custom`` of ``model.tflite`` plus ``files`` (one entry, its path relative to
      ``channel_dir``) and ``expires``.
    Raises:
      SignatureVerificationError: naming the failed check.
    """
    channel_dir = channel_dir.rstrip("/")
    model_dir, channel = os.path.split(channel_dir)
    base, model_name = os.path.split(model_dir)
    repo = tuf_repo.Repository(base)
    state = repo.load()
    _root_trusted(state.root, trusted)
    now = now or tuf_repo.utcnow()
    for md in (state.root, state.timestamp, state.snapshot, state.targets, *state.roles.values()):
        if md.signed.is_expired(now):
            raise SignatureVerificationError(f"{md.signed.type} metadata expired")
    entry = repo.release(state, model_name, channel)
    if entry is None:
        raise SignatureVerificationError(f"no release of {model_name!r} on channel {channel!r}")
    custom = dict(entry.custom)
    files = [_file_entry(custom)]
    path = storage.join(channel_dir, files[0]["path"])
    if storage.file_sha256(path) != (entry.hashes["sha256"], entry.length):
        raise SignatureVerificationError(f"{files[0]['path']} does not match its targets entry")
    bundle = storage.read_bytes(
        storage.join(channel_dir, tuf_repo.hashed_name(custom["oms"]["sha256"], "model.sig"))
    )
    oms.verify_bundle(
        bundle, oms.load_public_key(custom["oms"]["public_key"], "oms"), entry.hashes["sha256"]
    )
    custom["files"] = files
    custom["expires"] = state.roles[model_name].signed.expires.isoformat()
    custom["metrics"] = json.loads(custom.get("metrics_json", "{}"))
    custom["rollout_percentage"] = custom["rollout_basis_points"] / 100
    return custom


def channel_history(base_directory: str, model_name: str, channel: str) -> list[dict]:
    """Every release the channel ever had whose metadata still verifies, oldest first."""
    repo = tuf_repo.Repository(base_directory)
    state = repo.load()
    seen = {}
    for version in repo.versions_on_disk(model_name):
        try:
            md = repo._read(f"{version}.{model_name}.json")  # noqa: SLF001
            state.targets.verify_delegate(model_name, md)
        except Exception:  # noqa: BLE001 - signed before a key rotation, or unreadable
            continue
        entry = md.signed.targets.get(tuf_repo.target_path(model_name, channel))
        if entry is not None:
            seen[entry.custom["sequence"]] = {**entry.custom, "files": [_file_entry(entry.custom)]}
    return [seen[s] for s in sorted(seen)]
