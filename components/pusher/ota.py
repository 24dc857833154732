"""OTA channels: signed manifests over immutable, content-addressed model files.

Layout under ``<base>/<model_name>/``::

  releases/<model_version>.json   one record per distinct model (files' sha256, metrics, source);
                                  the same bytes pushed again reuse their model version
  <channel>/files/<sha256>.tflite immutable model files, named by their content
  <channel>/manifest.json         the channel's current release (replaced atomically)
  <channel>/manifest.json.sig     {"algorithm": "ed25519", "signatures": [{key_id, manifest_sha256,
                                  sequence, signature}]}: Ed25519 over manifest.json's exact bytes
  <channel>/history/<seq>.json    every manifest ever published (+ ``.sig``), for rollback and audit

Publishing order, so a device (or a crash) never sees a half-made release: model files first
(content-addressed, so a reader of the old manifest never touches them); then the history entry;
then the signature file, holding the signatures of both the old and the new manifest; then
``manifest.json`` by atomic replace. Whichever manifest a reader fetches, the signature file covers
it. Sequence numbers only grow per channel; a rollback publishes the previous release again under a
new sequence, so devices, which refuse any sequence older than the last they accepted, take it.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import os
import re
import tempfile

from components.common.errors import ConfigError, TfxOptError
from components.common.keys import TFLITE_FILE
from components.pusher import safe_json, signing, storage
from components.pusher.ota_client import MANIFEST_FILE, MANIFEST_FORMAT, SIGNATURE_FILE
from components.pusher.ota_fetch import CHANNEL_PATTERN, MODEL_NAME_PATTERN, RESERVED_CHANNELS

FILES_DIR = "files"
HISTORY_DIR = "history"
RELEASES_DIR = "releases"
METRICS_FILE = "metrics.json"
MAX_MANIFEST_BYTES = 1 << 20

log = logging.getLogger(__name__)
_UNSET = object()


@dataclasses.dataclass
class OtaPush:
    """What one publish (push, promote, rollback) did."""

    model_name: str
    channel: str
    action: str
    sequence: int
    model_version: int
    created: bool
    manifest_path: str
    key_id: str
    files: list[dict]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def _dumps(record: dict) -> bytes:
    return (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()


def _release_key(files: list[dict]) -> tuple:
    return tuple(sorted((f["name"], f["sha256"], int(f["length"])) for f in files))


def _blob_path(entry: dict) -> str:
    ext = os.path.splitext(entry["name"])[1]
    return f"{FILES_DIR}/{entry['sha256']}{ext}"


class Channel:
    """One channel of one model: its manifest, signatures, history and files."""

    def __init__(self, base_directory: str, model_name: str, channel: str):
        if channel in RESERVED_CHANNELS or not re.match(CHANNEL_PATTERN, channel):
            raise ConfigError(f"channel {channel!r} is reserved or not a plain lower-case name")
        if not re.match(MODEL_NAME_PATTERN, model_name):
            raise ConfigError(f"model name {model_name!r} is not a plain name")
        self.model_name = model_name
        self.name = channel
        self.model_dir = storage.join(base_directory, model_name)
        self.dir = storage.join(self.model_dir, channel)
        self.manifest_path = storage.join(self.dir, MANIFEST_FILE)
        self.signature_path = storage.join(self.dir, SIGNATURE_FILE)

    def _read_verified(self, path: str, sig_path: str, trusted: dict) -> tuple[dict, bytes]:
        data = storage.read_bytes(path, limit=MAX_MANIFEST_BYTES)
        try:
            signature_bytes = storage.read_bytes(sig_path, limit=MAX_MANIFEST_BYTES)
            signatures = safe_json.loads(signature_bytes, sig_path, MAX_MANIFEST_BYTES)
        except (OSError, ValueError):  # missing, or not bounded JSON (JsonLimitError)
            signatures = None
        signing.verify_manifest(data, signatures, trusted)
        return json.loads(data), data

    def current(self, trusted: dict) -> tuple[dict, bytes] | None:
        """The live manifest, verified against ``trusted`` keys; None for a new channel.

        Raises:
          signing.SignatureVerificationError: when it does not verify (tampered, or signed by another key).
        """
        if not storage.exists(self.manifest_path):
            return None
        return self._read_verified(self.manifest_path, self.signature_path, trusted)

    def history_entry(self, sequence: int, trusted: dict) -> dict | None:
        path = storage.join(self.dir, HISTORY_DIR, f"{sequence}.json")
        if not storage.exists(path):
            return None
        return self._read_verified(path, path + ".sig", trusted)[0]

    def max_sequence(self) -> int:
        seen = [0]
        for name in storage.listdir(storage.join(self.dir, HISTORY_DIR)):
            stem = name.removesuffix(".json")
            if name.endswith(".json") and stem.isdigit():
                seen.append(int(stem))
        return max(seen)

    def put_file(self, src: str, entry: dict) -> None:
        """Copies a model file to its content-addressed name unless an intact copy is there."""
        dst = storage.join(self.dir, entry["path"])
        if storage.exists(dst) and storage.file_sha256(dst) == (entry["sha256"], entry["length"]):
            return
        sha, length = storage.copy_file(src, dst)
        if (sha, length) != (entry["sha256"], entry["length"]):
            storage.remove_file(dst)
            raise TfxOptError(f"{src} changed while it was copied to {dst}; push again")

    def check_files(self, files: list[dict]) -> None:
        """Refuses to sign a manifest whose files are not all present and intact."""
        for entry in files:
            path = storage.join(self.dir, entry["path"])
            if not storage.exists(path):
                raise TfxOptError(f"{path} is missing: cannot publish a release without its files")
            if storage.file_sha256(path) != (entry["sha256"], entry["length"]):
                raise TfxOptError(f"{path} does not match its sha256/length: refusing to sign it")


def _register_release(model_dir: str, files: list[dict], metrics: dict, source: dict) -> int:
    """The model version of these files: an existing one for identical bytes, else a new one."""
    releases_dir = storage.join(model_dir, RELEASES_DIR)
    versions = []
    for name in storage.listdir(releases_dir):
        stem = name.removesuffix(".json")
        if not (name.endswith(".json") and stem.isdigit()):
            continue
        versions.append(int(stem))
        record = json.loads(storage.read_bytes(storage.join(releases_dir, name)))
        if _release_key(record.get("files", [])) == _release_key(files):
            return int(stem)
    version = max(versions, default=0) + 1
    record = {
        "model_version": version,
        "files": [{k: f[k] for k in ("name", "sha256", "length")} for f in files],
        "metrics": metrics,
        "source": source,
        "created_at": _utcnow().isoformat(),
    }
    storage.atomic_write(storage.join(releases_dir, f"{version}.json"), _dumps(record))
    return version


def _summary(manifest: dict) -> dict:
    """The release part of a manifest, as kept in the next manifest's ``previous_release``."""
    return {
        "sequence": manifest["sequence"],
        "model_version": manifest["model_version"],
        "files": manifest["files"],
        "min_app_version": manifest.get("min_app_version", "0"),
        "metrics": manifest.get("metrics", {}),
    }


def _publish(
    channel: Channel,
    release: dict,
    signing_key,
    trusted: dict,
    rollout_percentage: float,
    min_app_version: str,
    expires_in_days: float,
    source: dict,
    action: str,
    previous_release=_UNSET,
    now: datetime.datetime | None = None,
) -> OtaPush:
    """Signs and publishes ``release`` (model_version, files, metrics) on ``channel``."""
    now = now or _utcnow()
    signer_id = signing.key_id(signing_key.public_key())
    try:
        current = channel.current(trusted)
    except signing.SignatureVerificationError as e:
        if action != "push":
            raise  # promote and rollback re-sign what they read: it must be authentic
        # A fresh push replaces an unverifiable manifest (tampered, or signed before a key
        # rotation); sequence numbers still come from the history, so they keep growing.
        log.warning("ota: %s does not verify (%s); replacing it", channel.manifest_path, e)
        current = None
    if current is not None:
        manifest_now = current[0]
        same = (
            _release_key(manifest_now["files"]) == _release_key(release["files"])
            and manifest_now.get("rollout_percentage") == rollout_percentage
            and manifest_now.get("min_app_version") == min_app_version
            and datetime.datetime.fromisoformat(manifest_now["expires"]) > now
        )
        if same and action in ("push", "promote"):
            log.info("ota: %s already carries this release; no new manifest", channel.dir)
            return OtaPush(
                channel.model_name,
                channel.name,
                action,
                manifest_now["sequence"],
                manifest_now["model_version"],
                False,
                channel.manifest_path,
                manifest_now.get("key_id", signer_id),
                manifest_now["files"],
            )
    if previous_release is _UNSET:
        if current is None:
            previous_release = None
        elif _release_key(current[0]["files"]) == _release_key(release["files"]):
            previous_release = current[0].get("previous_release")  # same release, new terms
        else:
            previous_release = _summary(current[0])
    channel.check_files(release["files"])
    sequence = max(channel.max_sequence(), current[0]["sequence"] if current else 0) + 1
    manifest = {
        "format": MANIFEST_FORMAT,
        "model_name": channel.model_name,
        "channel": channel.name,
        "sequence": sequence,
        "model_version": release["model_version"],
        "files": release["files"],
        "created_at": now.isoformat(),
        "expires": (now + datetime.timedelta(days=expires_in_days)).isoformat(),
        "min_app_version": min_app_version,
        "rollout_percentage": rollout_percentage,
        "previous_release": previous_release,
        "metrics": release.get("metrics", {}),
        "source": source,
        "key_id": signer_id,
    }
    data = _dumps(manifest)
    entry = signing.signature_entry(signing_key, data, sequence)
    history = storage.join(channel.dir, HISTORY_DIR, f"{sequence}.json")
    storage.atomic_write(history, data)
    storage.atomic_write(history + ".sig", _signatures_doc([entry]))
    # Old and new signatures together, written before the manifest: any reader is covered.
    kept = [entry]
    if current is not None:
        old = json.loads(storage.read_bytes(channel.signature_path, limit=MAX_MANIFEST_BYTES))
        old_sha = hashlib.sha256(current[1]).hexdigest()
        kept += [e for e in old.get("signatures", []) if e.get("manifest_sha256") == old_sha]
    storage.atomic_write(channel.signature_path, _signatures_doc(kept))
    storage.atomic_write(channel.manifest_path, data)
    _write_channel_metrics(channel, manifest)
    log.info(
        "ota: %s %s sequence %d (model version %d)",
        action,
        channel.dir,
        sequence,
        release["model_version"],
    )
    return OtaPush(
        channel.model_name,
        channel.name,
        action,
        sequence,
        release["model_version"],
        True,
        channel.manifest_path,
        signer_id,
        release["files"],
    )


def _write_channel_metrics(channel: Channel, manifest: dict) -> None:
    """``<channel>/metrics.json``: the live release's key metrics, flat, for the Evaluator.

    Informational (the signed manifest is authoritative); point the Evaluator's
    ``production.metrics_path`` at the ``stable`` channel's file to compare with what devices run.
    """
    metrics = manifest.get("metrics", {})
    record = {
        **metrics,
        "model_name": channel.model_name,
        "channel": channel.name,
        "sequence": manifest["sequence"],
        "model_version": manifest["model_version"],
        "size_bytes": metrics.get("size_bytes", sum(f["length"] for f in manifest["files"])),
        "published_at": manifest["created_at"],
    }
    storage.atomic_write(storage.join(channel.dir, METRICS_FILE), _dumps(record))


def _signatures_doc(entries: list[dict]) -> bytes:
    return _dumps(
        {"format": signing.SIGNATURES_FORMAT, "algorithm": signing.ALGORITHM, "signatures": entries}
    )


def _trusted(signing_key, extra_public_keys=()) -> dict:
    return signing.trusted_keys([signing_key.public_key(), *extra_public_keys])


def resolve_tflite(model_uri: str, missing_tflite: str) -> tuple[str, str, str | None]:
    """The TFLite file to ship for a model artifact.

    Returns:
      (path, how: "artifact" | "converted_float32", temporary directory to remove or None).
    Raises:
      ConfigError: when the model has no TFLite flavour and ``missing_tflite`` is "refuse".
    """
    from components.common import model_io

    path = model_io.tflite_path(model_uri)
    if path:
        return path, "artifact", None
    if missing_tflite == "refuse":
        raise ConfigError(
            f"ota: the model at {model_uri!r} has no {model_io.TFLITE_DIR}/{model_io.TFLITE_FILE} "
            "and missing_tflite is 'refuse': add a Quantizer/converter step before the Pusher or "
            "set missing_tflite: convert_float32."
        )
    from components.common import tflite

    flatbuffer = tflite.convert_float32(model_io.serving_model_dir(model_uri))
    tmp = tempfile.mkdtemp(prefix="tfxopt-ota-")
    out = os.path.join(tmp, TFLITE_FILE)
    with open(out, "wb") as f:
        f.write(flatbuffer)
    return out, "converted_float32", tmp


def _input_plan(tflite_path: str) -> dict | None:
    """What the flatbuffer's inputs were fixed to (static batch, names, shapes, dtypes) and
    whether the caller must reset its state tensors before each call: what a device app needs to
    call it, published in the manifest. None for a file the interpreter cannot read (the channel
    ships bytes; the gate, not the pusher, judges a model)."""
    from components.common import conversion

    with storage.open_read(tflite_path) as f:
        data = f.read()
    try:
        return conversion.flatbuffer_plan(data)
    except Exception:  # noqa: BLE001 - any unreadable file: no plan to publish
        return None


def push_tflite(
    tflite_path: str,
    model_name: str,
    destination,
    signing_key=None,
    metrics: dict | None = None,
    source: dict | None = None,
    now: datetime.datetime | None = None,
) -> OtaPush:
    """Publishes a TFLite model on the destination's channel (no-op when already live there).

    Args:
      tflite_path: the model file to ship.
      model_name: the model's name under the destination.
      destination: a :class:`components.pusher.config.OtaDestination`.
      signing_key: an Ed25519 private key; default: loaded from the destination's key settings.
      metrics: key metrics for the manifest.
      source: provenance recorded in the manifest.
      now: the publish time (tests).
    """
    key = signing_key or signing.load_private_key(
        destination.signing_key_path, destination.signing_key_env
    )
    channel = Channel(destination.base_directory, model_name, destination.channel)
    sha, length = storage.file_sha256(tflite_path)
    entry = {"name": TFLITE_FILE, "sha256": sha, "length": length}
    entry["path"] = _blob_path(entry)
    plan = _input_plan(tflite_path)
    if plan is not None:
        entry["inputs"] = plan
    storage.makedirs(channel.model_dir)
    with storage.lock(channel.model_dir):
        channel.put_file(tflite_path, entry)
        version = _register_release(channel.model_dir, [entry], dict(metrics or {}), source or {})
        release = {"model_version": version, "files": [entry], "metrics": dict(metrics or {})}
        return _publish(
            channel,
            release,
            key,
            _trusted(key),
            destination.rollout_percentage,
            destination.min_app_version,
            destination.expires_in_days,
            dict(source or {}),
            "push",
            now=now,
        )


def promote(
    base_directory: str,
    model_name: str,
    from_channel: str,
    to_channel: str,
    signing_key,
    rollout_percentage: float = 100.0,
    expires_in_days: float = 30.0,
    min_app_version: str | None = None,
    trusted_public_keys=(),
    now: datetime.datetime | None = None,
) -> OtaPush:
    """Publishes the live release of ``from_channel`` on ``to_channel`` (e.g. canary -> stable).

    The source manifest must verify (against the signing key or ``trusted_public_keys``), so a
    tampered channel is never re-signed.
    """
    if from_channel == to_channel:
        raise ConfigError("promote: --from and --to name the same channel")
    if not 0.0 <= rollout_percentage <= 100.0:
        raise ConfigError(f"promote: rollout percentage {rollout_percentage} is not in 0..100")
    src = Channel(base_directory, model_name, from_channel)
    dst = Channel(base_directory, model_name, to_channel)
    trusted = _trusted(signing_key, trusted_public_keys)
    if not storage.exists(src.manifest_path):
        raise TfxOptError(f"promote: {src.manifest_path} does not exist: nothing to promote")
    with storage.lock(src.model_dir):
        current = src.current(trusted)
        if current is None:
            raise TfxOptError(f"promote: {src.manifest_path} does not exist: nothing to promote")
        manifest = current[0]
        for entry in manifest["files"]:
            dst.put_file(storage.join(src.dir, entry["path"]), entry)
        release = {k: manifest[k] for k in ("model_version", "files", "metrics")}
        source = {**manifest.get("source", {}), "promoted_from": from_channel}
        source["promoted_from_sequence"] = manifest["sequence"]
        return _publish(
            dst,
            release,
            signing_key,
            trusted,
            float(rollout_percentage),
            min_app_version or manifest.get("min_app_version", "0"),
            expires_in_days,
            source,
            "promote",
            now=now,
        )


def rollback(
    base_directory: str,
    model_name: str,
    channel_name: str,
    signing_key,
    rollout_percentage: float = 100.0,
    expires_in_days: float = 30.0,
    trusted_public_keys=(),
    now: datetime.datetime | None = None,
) -> OtaPush:
    """Points a channel back at its previous release, under a new (higher) sequence number."""
    channel = Channel(base_directory, model_name, channel_name)
    trusted = _trusted(signing_key, trusted_public_keys)
    if not storage.exists(channel.manifest_path):
        raise TfxOptError(f"rollback: {channel.manifest_path} does not exist")
    with storage.lock(channel.model_dir):
        current = channel.current(trusted)
        if current is None:
            raise TfxOptError(f"rollback: {channel.manifest_path} does not exist")
        previous = current[0].get("previous_release")
        if not previous:
            raise TfxOptError(
                f"rollback: channel {channel_name!r} of {model_name!r} has no previous release"
            )
        # The release before the one we return to, as recorded when that one was live.
        earlier = channel.history_entry(int(previous["sequence"]), trusted)
        release = {k: previous[k] for k in ("model_version", "files")}
        release["metrics"] = previous.get("metrics", {})
        source = {
            "rolled_back_from_sequence": current[0]["sequence"],
            "rolled_back_to_sequence": previous["sequence"],
        }
        return _publish(
            channel,
            release,
            signing_key,
            trusted,
            float(rollout_percentage),
            previous.get("min_app_version", "0"),
            expires_in_days,
            source,
            "rollback",
            previous_release=(earlier or {}).get("previous_release"),
            now=now,
        )


def verify_channel(channel_dir: str, trusted: dict) -> dict:
    """Verifies a channel as a device would (signature, files' length and sha256); returns it.

    Raises:
      signing.SignatureVerificationError: naming the failed check.
    """
    data = storage.read_bytes(storage.join(channel_dir, MANIFEST_FILE), limit=MAX_MANIFEST_BYTES)
    signature_bytes = storage.read_bytes(
        storage.join(channel_dir, SIGNATURE_FILE), limit=MAX_MANIFEST_BYTES
    )
    try:
        signatures = safe_json.loads(signature_bytes, SIGNATURE_FILE, MAX_MANIFEST_BYTES)
    except safe_json.JsonLimitError as e:
        raise signing.SignatureVerificationError(str(e)) from None
    signing.verify_manifest(data, signatures, trusted)
    manifest = json.loads(data)
    for entry in manifest["files"]:
        got = storage.file_sha256(storage.join(channel_dir, entry["path"]))
        if got != (entry["sha256"], entry["length"]):
            raise signing.SignatureVerificationError(f"{entry['path']} does not match the manifest")
    return manifest
