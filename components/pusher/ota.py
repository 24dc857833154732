"""OTA channels: a TUF repository of model releases, each model file signed with OpenSSF Model
Signing (OMS).

``push_tflite``, ``promote`` and ``rollback`` publish a channel's release through
:mod:`components.pusher.tuf_repo` (layout and write order there; the spec is docs/ota.md). A
release is the target ``<model>/<channel>/model.tflite`` in the model's delegated role, with the
channel's terms in its ``custom``::

  {"format": "tfxopt.ota.release/1", "model_name", "channel", "sequence", "model_version",
   "created_at", "min_app_version", "rollout_percentage", "previous_release", "metrics", "source",
   "inputs", "oms": {"target", "sha256", "length", "public_key"}}

and the target ``<model>/<channel>/model.sig``, the OMS bundle over the model file whose predicate
carries the gate's verdict. Sequence numbers only grow per channel; a rollback publishes the
previous release again under a new sequence. ``<base>/<model>/releases/<v>.json`` keeps one record
per distinct model file (the same bytes pushed again reuse their model version) and
``<base>/<model>/<channel>/metrics.json`` the live release's metrics for the Evaluator; neither is
part of what devices verify.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import re

from components.common.errors import ConfigError, TfxOptError
from components.common.keys import TFLITE_FILE
from components.pusher import oms, signing, storage, tuf_repo
from components.pusher.ota_fetch import CHANNEL_PATTERN, MODEL_NAME_PATTERN, RESERVED_CHANNELS
from components.pusher.ota_verify import (  # noqa: F401 - part of this module's API
    _file_entry,
    channel_history,
    verify_channel,
)
from components.pusher.tflite_source import input_plan as _input_plan
from components.pusher.tflite_source import resolve_tflite  # noqa: F401 - used by push.py

RELEASES_DIR = "releases"
METRICS_FILE = "metrics.json"
RELEASE_FORMAT = tuf_repo.RELEASE_FORMAT
GATE_KEYS = (
    "candidate",
    "accuracy",
    "baseline_accuracy",
    "accuracy_drop",
    "accuracy_drop_points",
    "relative_accuracy_drop",
    "latency_p50_ms",
    "latency_p95_ms",
    "baseline_latency_p95_ms",
    "speedup",
    "size_bytes",
)

log = logging.getLogger(__name__)
_UNSET = object()


@dataclasses.dataclass
class OtaPush:
    """What one publish (push, promote, rollback, migrate) did."""

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
    return tuf_repo.utcnow()


def _dumps(record: dict) -> bytes:
    return (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()


def _check_names(model_name: str, channel: str) -> None:
    if channel in RESERVED_CHANNELS or not re.match(CHANNEL_PATTERN, channel):
        raise ConfigError(f"channel {channel!r} is reserved or not a plain lower-case name")
    if not re.match(MODEL_NAME_PATTERN, model_name) or model_name in (
        tuf_repo.METADATA_DIR,
        *tuf_repo.TOP_ROLES,
    ):
        raise ConfigError(
            f"model name {model_name!r} is not a plain name, or is one of the TUF role names "
            f"{', '.join(tuf_repo.TOP_ROLES)} / {tuf_repo.METADATA_DIR!r}"
        )


def _channel_dir(base: str, model_name: str, channel: str) -> str:
    return storage.join(base, model_name, channel)


def _put_file(src: str, dst: str, sha256: str, length: int) -> None:
    """Copies a file to its content-addressed name unless an intact copy is there."""
    if storage.exists(dst) and storage.file_sha256(dst) == (sha256, length):
        return
    got = storage.copy_file(src, dst)
    if got != (sha256, length):
        storage.remove_file(dst)
        raise TfxOptError(f"{src} changed while it was copied to {dst}; push again")


def _put_bytes(data: bytes, dst: str) -> None:
    if not storage.exists(dst):
        storage.atomic_write(dst, data)


def _check_file(path: str, sha256: str, length: int) -> None:
    """Refuses to sign a release whose files are not present and intact."""
    if not storage.exists(path):
        raise TfxOptError(f"{path} is missing: cannot publish a release without its files")
    if storage.file_sha256(path) != (sha256, length):
        raise TfxOptError(f"{path} does not match its sha256/length: refusing to sign it")


def _register_release(model_dir: str, sha256: str, length: int, metrics: dict, source: dict) -> int:
    """The model version of this file: an existing one for identical bytes, else a new one."""
    releases_dir = storage.join(model_dir, RELEASES_DIR)
    versions = []
    for name in storage.listdir(releases_dir):
        stem = name.removesuffix(".json")
        if not (name.endswith(".json") and stem.isdigit()):
            continue
        versions.append(int(stem))
        record = json.loads(storage.read_bytes(storage.join(releases_dir, name)))
        if [(f.get("sha256"), f.get("length")) for f in record.get("files", [])] == [
            (sha256, length)
        ]:
            return int(stem)
    version = max(versions, default=0) + 1
    record = {
        "model_version": version,
        "files": [{"name": TFLITE_FILE, "sha256": sha256, "length": length}],
        "metrics": metrics,
        "source": source,
        "created_at": _utcnow().isoformat(),
    }
    storage.atomic_write(storage.join(releases_dir, f"{version}.json"), _dumps(record))
    return version


def gate_verdict(metrics: dict, source: dict) -> dict:
    """What the gate decided this model on, for the OMS statement's predicate."""
    verdict = {"blessed": True}
    verdict |= {k: metrics[k] for k in GATE_KEYS if k in metrics}
    if source.get("model_blessing_uri"):
        verdict["model_blessing_uri"] = source["model_blessing_uri"]
    return verdict


def _summary(custom: dict) -> dict:
    """The release part of a channel entry, kept as the next entry's ``previous_release``."""
    keep = ("sequence", "model_version", "file", "min_app_version", "metrics_json", "oms", "inputs")
    return {k: custom[k] for k in keep if k in custom}


@dataclasses.dataclass
class _Release:
    """What a channel points at: the model file, its OMS bundle, and what is recorded with it."""

    model_version: int
    sha256: str
    length: int
    bundle_sha256: str
    bundle_length: int
    metrics: dict
    inputs: dict | None = None


def _release_of(custom: dict) -> _Release:
    return _Release(
        custom["model_version"],
        custom["file"]["sha256"],
        custom["file"]["length"],
        custom["oms"]["sha256"],
        custom["oms"]["length"],
        json.loads(custom.get("metrics_json", "{}")),
        custom.get("inputs"),
    )


def _basis_points(percentage: float) -> int:
    """A rollout share in 1/100 % (integers: TUF's canonical JSON has no floats)."""
    return round(float(percentage) * 100)


def _metrics_json(metrics: dict) -> str:
    """Metrics as JSON text: they hold floats, which TUF's canonical JSON cannot carry."""
    return json.dumps(metrics, sort_keys=True, allow_nan=False)


def _no_floats(value):
    """``value`` with every float written as its decimal string (canonical JSON has no floats)."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return {k: _no_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_floats(v) for v in value]
    return value


def _load_state(repo: tuf_repo.Repository, signers: list, now):
    """The repository's verified state, or a new one held by ``signers``."""
    if repo.exists():
        return repo.load()
    return repo.create(signers, threshold=len(signers), now=now)


def _publish(
    repo: tuf_repo.Repository,
    state,
    model_name: str,
    channel: str,
    release: _Release,
    signers: list,
    oms_public_pem: str,
    rollout_percentage: float,
    min_app_version: str,
    expires_in_days: float,
    source: dict,
    action: str,
    previous_release=_UNSET,
    sequence: int | None = None,
    now: datetime.datetime | None = None,
) -> OtaPush:
    """Points ``model_name``/``channel`` at ``release`` and commits the repository."""
    now = now or _utcnow()
    channel_dir = _channel_dir(repo.base, model_name, channel)
    signer_id = _key_id(signers[0])
    current = repo.release(state, model_name, channel)
    role = state.roles.get(model_name)
    if current is not None and sequence is None:
        live = current.custom
        same = (
            live.get("file", {}).get("sha256") == release.sha256
            and live.get("rollout_basis_points") == _basis_points(rollout_percentage)
            and live.get("min_app_version") == min_app_version
            and role.signed.expires > now
        )
        if same and action in ("push", "promote"):
            log.info("ota: %s already carries this release; no new metadata", channel_dir)
            return _result(repo, model_name, channel, action, live, False, signer_id)
    if previous_release is _UNSET:
        if current is None:
            previous_release = None
        elif current.custom.get("file", {}).get("sha256") == release.sha256:
            previous_release = current.custom.get("previous_release")  # same release, new terms
        else:
            previous_release = _summary(current.custom)
    model_path = storage.join(channel_dir, tuf_repo.hashed_name(release.sha256, TFLITE_FILE))
    bundle_path = storage.join(
        channel_dir, tuf_repo.hashed_name(release.bundle_sha256, tuf_repo.BUNDLE_TARGET)
    )
    _check_file(model_path, release.sha256, release.length)
    _check_file(bundle_path, release.bundle_sha256, release.bundle_length)
    if sequence is None:
        live_sequence = current.custom.get("sequence", 0) if current is not None else 0
        sequence = max([live_sequence, *repo.channel_sequences(model_name, channel)]) + 1
    custom = {
        "format": RELEASE_FORMAT,
        "model_name": model_name,
        "channel": channel,
        "sequence": sequence,
        "model_version": release.model_version,
        "file": {"sha256": release.sha256, "length": release.length},
        "created_at": now.isoformat(),
        "min_app_version": min_app_version,
        "rollout_basis_points": _basis_points(rollout_percentage),
        "previous_release": previous_release,
        "metrics_json": _metrics_json(release.metrics),
        "source": _no_floats(source),
        "key_id": signer_id,
        "oms": {
            "target": tuf_repo.target_path(model_name, channel, tuf_repo.BUNDLE_TARGET),
            "sha256": release.bundle_sha256,
            "length": release.bundle_length,
            "public_key": oms_public_pem,
        },
    }
    if release.inputs is not None:
        custom["inputs"] = _no_floats(release.inputs)
    repo.set_channel(
        state,
        model_name,
        channel,
        {"sha256": release.sha256, "length": release.length},
        {"sha256": release.bundle_sha256, "length": release.bundle_length},
        custom,
        signers,
    )
    repo.commit(state, {model_name}, signers, expires_in_days, now=now)
    _write_channel_metrics(channel_dir, custom)
    log.info(
        "ota: %s %s sequence %d (model version %d)",
        action,
        channel_dir,
        sequence,
        release.model_version,
    )
    return _result(repo, model_name, channel, action, custom, True, signer_id)


def _result(repo, model_name, channel, action, custom, created, signer_id) -> OtaPush:
    return OtaPush(
        model_name,
        channel,
        action,
        custom["sequence"],
        custom["model_version"],
        created,
        storage.join(repo.meta_dir, "timestamp.json"),
        custom.get("key_id", signer_id),
        [_file_entry(custom)],
    )


def _write_channel_metrics(channel_dir: str, custom: dict) -> None:
    """``<channel>/metrics.json``: the live release's key metrics, flat, for the Evaluator.

    Informational (the signed targets metadata is authoritative); point the Evaluator's
    ``production.metrics_path`` at the ``stable`` channel's file to compare with what devices run.
    """
    metrics = json.loads(custom.get("metrics_json", "{}"))
    record = {
        **metrics,
        "model_name": custom["model_name"],
        "channel": custom["channel"],
        "sequence": custom["sequence"],
        "model_version": custom["model_version"],
        "size_bytes": metrics.get("size_bytes", custom["file"]["length"]),
        "published_at": custom["created_at"],
    }
    storage.atomic_write(storage.join(channel_dir, METRICS_FILE), _dumps(record))


def _key_id(signer) -> str:
    """The project's short id of a signer's Ed25519 key (as ``tfxopt ota-keygen`` prints it)."""
    return hashlib.sha256(bytes.fromhex(signer.public_key.keyval["public"])).hexdigest()[:16]


def _signers(signing_key, extra_keys=()) -> list:
    """TUF signers of the keys; a key given twice is refused (a threshold counts distinct keys,
    and one key twice would let the threshold check pass with one signature)."""
    signers = [tuf_repo.signer_for(k) for k in (signing_key, *extra_keys)]
    ids = [tuf_repo.keyid(s) for s in signers]
    for kid in ids:
        if ids.count(kid) > 1:
            raise ConfigError(
                f"signing key {_key_id(signers[ids.index(kid)])} is given more than once; "
                "a threshold counts distinct keys: give each key once"
            )
    return signers


def check_signing_keys(base_directory: str, model_name: str, keys) -> None:
    """Refuses keys that cannot publish ``model_name`` in the repository at ``base_directory``
    (nothing is written; a repository not created yet accepts any keys).

    Raises:
      ConfigError: the keys hold fewer signatures than a role's threshold needs, or one of them
        holds none of the roles (a wrong key: its signature would count for nothing).
    """
    repo = tuf_repo.Repository(base_directory)
    if not repo.exists():
        return
    state = repo.load()
    signers = _signers(keys[0], keys[1:])
    roles = ["targets", "snapshot", "timestamp", model_name]
    repo.check_signers(state, signers, roles)
    held = set()
    delegations = state.targets.signed.delegations
    for role in roles:
        spec = state.root.signed.roles.get(role)
        if spec is None and delegations is not None:
            spec = delegations.roles.get(role)
        held |= set(spec.keyids) if spec is not None else set()
    for signer in signers:
        if tuf_repo.keyid(signer) not in held:
            raise ConfigError(
                f"signing key {_key_id(signer)} holds none of the roles of {repo.meta_dir}: "
                "it is not one of this repository's keys; give the repository's keys only"
            )


def push_tflite(
    tflite_path: str,
    model_name: str,
    destination,
    signing_key=None,
    metrics: dict | None = None,
    source: dict | None = None,
    now: datetime.datetime | None = None,
    extra_signing_keys=(),
) -> OtaPush:
    """Publishes a TFLite model on the destination's channel (no-op when already live there).

    The signing key must hold the repository's roles (it creates them in a new repository);
    it is checked before anything is written.

    Args:
      tflite_path: the model file to ship.
      model_name: the model's name under the destination.
      destination: a :class:`components.pusher.config.OtaDestination`.
      signing_key: an Ed25519 private key; default: loaded from the destination's key settings
        (with its ``extra_signing_key_paths`` / ``extra_signing_key_envs``, which then replace
        ``extra_signing_keys``).
      metrics: key metrics recorded with the release and, as the gate's verdict, in the OMS
        statement.
      source: provenance recorded with the release.
      now: the publish time (tests).
      extra_signing_keys: more Ed25519 keys signing with ``signing_key``; a new repository
        created by this push then needs all of them (threshold = number of keys).
    """
    if signing_key is None:  # the destination's keys: its signing key and extra keys
        signing_key, *extra_signing_keys = signing.load_private_keys(
            destination.signing_key_path,
            destination.signing_key_env,
            destination.extra_signing_key_paths,
            destination.extra_signing_key_envs,
        )
    key = signing_key
    channel = destination.channel
    _check_names(model_name, channel)
    metrics, source = dict(metrics or {}), dict(source or {})
    base = destination.base_directory
    repo = tuf_repo.Repository(base)
    signers = _signers(key, extra_signing_keys)
    storage.makedirs(repo.meta_dir)
    with storage.lock(repo.meta_dir):
        state = _load_state(repo, signers, now)
        repo.check_signers(state, signers, ["targets", "snapshot", "timestamp", model_name])
        sha, length = storage.file_sha256(tflite_path)
        channel_dir = _channel_dir(base, model_name, channel)
        _put_file(
            tflite_path,
            storage.join(channel_dir, tuf_repo.hashed_name(sha, TFLITE_FILE)),
            sha,
            length,
        )
        ec_key = oms.derive_signing_key(key)
        version = _register_release(storage.join(base, model_name), sha, length, metrics, source)
        current = repo.release(state, model_name, channel)
        if current is not None and current.custom.get("file", {}).get("sha256") == sha:
            # The same file again: keep the bundle devices already have (its verdict came first).
            bundle_sha, bundle_length = (
                current.custom["oms"]["sha256"],
                current.custom["oms"]["length"],
            )
        else:
            bundle = oms.sign_file(ec_key, TFLITE_FILE, sha, gate_verdict(metrics, source))
            bundle_sha, bundle_length = hashlib.sha256(bundle).hexdigest(), len(bundle)
            hashed = tuf_repo.hashed_name(bundle_sha, tuf_repo.BUNDLE_TARGET)
            _put_bytes(bundle, storage.join(channel_dir, hashed))
        release = _Release(
            version, sha, length, bundle_sha, bundle_length, metrics, _input_plan(tflite_path)
        )
        return _publish(
            repo,
            state,
            model_name,
            channel,
            release,
            signers,
            oms.public_key_pem(ec_key.public_key()).decode(),
            destination.rollout_percentage,
            destination.min_app_version,
            destination.expires_in_days,
            source,
            "push",
            now=now,
        )


def _live(repo, state, model_name: str, channel: str, action: str):
    entry = repo.release(state, model_name, channel)
    if entry is None:
        raise TfxOptError(
            f"{action}: channel {channel!r} of {model_name!r} has no release in "
            f"{repo.meta_dir}: nothing to {action}"
        )
    return entry.custom


def promote(
    base_directory: str,
    model_name: str,
    from_channel: str,
    to_channel: str,
    signing_key,
    rollout_percentage: float = 100.0,
    expires_in_days: float = 30.0,
    min_app_version: str | None = None,
    now: datetime.datetime | None = None,
    extra_signing_keys=(),
) -> OtaPush:
    """Publishes the live release of ``from_channel`` on ``to_channel`` (e.g. canary -> stable).

    The repository must verify (its roles signed by their keys), so a tampered channel is never
    re-signed. ``signing_key`` and ``extra_signing_keys`` together must meet every role's
    threshold (checked before anything is written).
    """
    if from_channel == to_channel:
        raise ConfigError("promote: --from and --to name the same channel")
    if not 0.0 <= rollout_percentage <= 100.0:
        raise ConfigError(f"promote: rollout percentage {rollout_percentage} is not in 0..100")
    _check_names(model_name, from_channel)
    _check_names(model_name, to_channel)
    repo = tuf_repo.Repository(base_directory)
    if not repo.exists():
        raise TfxOptError(f"promote: {repo.meta_dir} holds no published repository")
    signers = _signers(signing_key, extra_signing_keys)
    with storage.lock(repo.meta_dir):
        state = repo.load()
        repo.check_signers(state, signers, ["targets", "snapshot", "timestamp", model_name])
        live = _live(repo, state, model_name, from_channel, "promote")
        release = _release_of(live)
        src, dst = (_channel_dir(base_directory, model_name, c) for c in (from_channel, to_channel))
        for name, sha, length in (
            (TFLITE_FILE, release.sha256, release.length),
            (tuf_repo.BUNDLE_TARGET, release.bundle_sha256, release.bundle_length),
        ):
            hashed = tuf_repo.hashed_name(sha, name)
            _put_file(storage.join(src, hashed), storage.join(dst, hashed), sha, length)
        source = {**live.get("source", {}), "promoted_from": from_channel}
        source["promoted_from_sequence"] = live["sequence"]
        return _publish(
            repo,
            state,
            model_name,
            to_channel,
            release,
            signers,
            live["oms"]["public_key"],
            float(rollout_percentage),
            min_app_version or live.get("min_app_version", "0"),
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
    now: datetime.datetime | None = None,
    extra_signing_keys=(),
) -> OtaPush:
    """Points a channel back at its previous release, under a new (higher) sequence number.

    ``signing_key`` and ``extra_signing_keys`` together must meet every role's threshold.
    """
    _check_names(model_name, channel_name)
    repo = tuf_repo.Repository(base_directory)
    if not repo.exists():
        raise TfxOptError(f"rollback: {repo.meta_dir} holds no published repository")
    signers = _signers(signing_key, extra_signing_keys)
    with storage.lock(repo.meta_dir):
        state = repo.load()
        repo.check_signers(state, signers, ["targets", "snapshot", "timestamp", model_name])
        live = _live(repo, state, model_name, channel_name, "rollback")
        previous = live.get("previous_release")
        if not previous:
            raise TfxOptError(
                f"rollback: channel {channel_name!r} of {model_name!r} has no previous release"
            )
        # The release before the one we return to, as recorded when that one was live.
        earlier = repo.old_release(state, model_name, channel_name, previous["sequence"])
        source = {
            "rolled_back_from_sequence": live["sequence"],
            "rolled_back_to_sequence": previous["sequence"],
        }
        return _publish(
            repo,
            state,
            model_name,
            channel_name,
            _release_of(previous),
            signers,
            previous["oms"].get("public_key", live["oms"]["public_key"]),
            float(rollout_percentage),
            previous.get("min_app_version", "0"),
            expires_in_days,
            source,
            "rollback",
            previous_release=(earlier.custom.get("previous_release") if earlier else None),
            now=now,
        )
