"""OTA channels as a TUF repository (python-tuf's Metadata API, securesystemslib signers).

Layout under the OTA base directory (docs/ota.md is the full spec)::

  metadata/root.json, <v>.root.json    root: keys and thresholds of every top-level role
  metadata/<v>.targets.json            top-level targets: one delegated role per model, bound to
                                       the paths ``<model>/*/*``, terminating
  metadata/<v>.<model>.json            the model's role: per channel, ``<model>/<channel>/model.tflite``
                                       (its ``custom`` holds sequence, rollout, min app version, ...)
                                       and ``<model>/<channel>/model.sig`` (the OMS bundle)
  metadata/<v>.snapshot.json           versions, lengths and hashes of every targets role
  metadata/timestamp.json              the snapshot's version and hash; written last
  <model>/<channel>/<sha256>.model.tflite, <sha256>.model.sig   immutable target files

Consistent snapshots: every metadata version and target file is a new file, and ``timestamp.json``
is replaced (atomically) last, so a reader sees the old release or the new one whole, and a publish
that fails part-way leaves the published one as it was. Version numbers are taken above every file
on disk, so a version an interrupted publish wrote is never reused with other content.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import re

from components.common.errors import ConfigError
from components.common.keys import TFLITE_FILE
from components.pusher import storage
from components.pusher.signing import SignatureVerificationError

METADATA_DIR = "metadata"
TOP_ROLES = ("root", "targets", "snapshot", "timestamp")
MODEL_TARGET = TFLITE_FILE  # the target's name in every channel
BUNDLE_TARGET = "model.sig"
RELEASE_FORMAT = "tfxopt.ota.release/1"
ROOT_EXPIRY_DAYS = 365.0
MAX_METADATA_BYTES = 5 << 20
_VERSIONED = re.compile(r"^(\d+)\.(.+)\.json$")


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def signer_for(ed25519_private_key):
    """A securesystemslib signer for one of the project's Ed25519 keys."""
    from securesystemslib.signer import CryptoSigner

    return CryptoSigner(ed25519_private_key)


def keyid(signer) -> str:
    return signer.public_key.keyid


def target_path(model_name: str, channel: str, name: str = MODEL_TARGET) -> str:
    return f"{model_name}/{channel}/{name}"


def hashed_name(sha256: str, name: str) -> str:
    """The file name a consistent-snapshot client asks for: ``<sha256>.<name>``."""
    return f"{sha256}.{name}"


@dataclasses.dataclass
class State:
    """The repository's current, verified metadata (``Metadata`` objects)."""

    root: object
    targets: object
    snapshot: object
    timestamp: object
    roles: dict
    new: bool = False
    targets_changed: bool = False


class Repository:
    """The TUF repository under an OTA base directory."""

    def __init__(self, base_directory: str):
        self.base = base_directory
        self.meta_dir = storage.join(base_directory, METADATA_DIR)

    # --- reading -------------------------------------------------------------------------------

    def exists(self) -> bool:
        """Published: the timestamp, written last, is there."""
        return storage.exists(storage.join(self.meta_dir, "timestamp.json"))

    def _read(self, name: str):
        from tuf.api.metadata import Metadata

        path = storage.join(self.meta_dir, name)
        try:
            return Metadata.from_bytes(storage.read_bytes(path, limit=MAX_METADATA_BYTES))
        except Exception as e:  # noqa: BLE001 - DeserializationError, missing file, too large
            raise SignatureVerificationError(
                f"{path} cannot be read as TUF metadata ({type(e).__name__}: {e})"
            ) from None

    def versions_on_disk(self, role: str) -> list[int]:
        found = []
        for name in storage.listdir(self.meta_dir):
            match = _VERSIONED.match(name)
            if match and match.group(2) == role:
                found.append(int(match.group(1)))
        return sorted(found)

    def _next_version(self, role: str, current: int) -> int:
        return max([current, *self.versions_on_disk(role)]) + 1

    def load(self) -> State:
        """Reads and verifies the published metadata chain (root to every model role).

        Raises:
          SignatureVerificationError: a role is missing, unreadable or not signed by its keys.
        """
        root = self._read("root.json")
        ts = self._read("timestamp.json")
        snap = self._read(f"{ts.signed.snapshot_meta.version}.snapshot.json")
        targets = self._read(f"{snap.signed.meta['targets.json'].version}.targets.json")
        try:
            root.verify_delegate("root", root)
            root.verify_delegate("timestamp", ts)
            root.verify_delegate("snapshot", snap)
            root.verify_delegate("targets", targets)
        except Exception as e:  # noqa: BLE001 - UnsignedMetadataError and friends
            raise SignatureVerificationError(f"{self.meta_dir}: {e}") from None
        roles = {}
        for name in targets.signed.delegations.roles if targets.signed.delegations else {}:
            meta = snap.signed.meta.get(f"{name}.json")
            if meta is None:
                continue
            role = self._read(f"{meta.version}.{name}.json")
            try:
                targets.verify_delegate(name, role)
            except Exception as e:  # noqa: BLE001
                raise SignatureVerificationError(f"{self.meta_dir} role {name!r}: {e}") from None
            roles[name] = role
        return State(root, targets, snap, ts, roles)

    def release(self, state: State, model_name: str, channel: str):
        """The channel's live ``model.tflite`` TargetFile, or None."""
        role = state.roles.get(model_name)
        if role is None:
            return None
        return role.signed.targets.get(target_path(model_name, channel))

    def channel_sequences(self, model_name: str, channel: str) -> list[int]:
        """Every sequence this channel ever had in any version of the model's role on disk
        (unverified: only to keep sequence numbers growing)."""
        from tuf.api.metadata import Metadata

        seen = []
        for version in self.versions_on_disk(model_name):
            path = storage.join(self.meta_dir, f"{version}.{model_name}.json")
            try:
                md = Metadata.from_bytes(storage.read_bytes(path, limit=MAX_METADATA_BYTES))
                custom = md.signed.targets[target_path(model_name, channel)].custom
                seen.append(int(custom["sequence"]))
            except Exception:  # noqa: BLE001 - absent channel, or a file we cannot read
                continue
        return seen

    def old_release(self, state: State, model_name: str, channel: str, sequence: int):
        """The channel's ``model.tflite`` entry as published with ``sequence``, from an older
        version of the model's role that still verifies against the current delegation."""
        for version in reversed(self.versions_on_disk(model_name)):
            try:
                md = self._read(f"{version}.{model_name}.json")
                state.targets.verify_delegate(model_name, md)
            except Exception:  # noqa: BLE001 - signed before a key rotation, or unreadable
                continue
            entry = md.signed.targets.get(target_path(model_name, channel))
            if entry is not None and entry.custom.get("sequence") == sequence:
                return entry
        return None

    # --- writing -------------------------------------------------------------------------------

    def create(self, signers: list, threshold: int = 1, now=None) -> State:
        """A new repository whose top-level roles are all held by ``signers`` (nothing written)."""
        from tuf.api.metadata import (
            Delegations,
            Metadata,
            Root,
            Snapshot,
            Targets,
            Timestamp,
        )

        if not 1 <= threshold <= len(signers):
            raise ConfigError(f"threshold {threshold} needs 1 to {len(signers)} signing keys")
        now = now or utcnow()
        root = Root(expires=now + datetime.timedelta(days=ROOT_EXPIRY_DAYS))
        root.consistent_snapshot = True
        for role in TOP_ROLES:
            for signer in signers:
                root.add_key(signer.public_key, role)
            root.roles[role].threshold = threshold
        targets = Targets(expires=now + datetime.timedelta(days=ROOT_EXPIRY_DAYS))
        targets.delegations = Delegations(keys={}, roles={})
        targets.version = 0  # versions are set when committed: the first one written is 1
        snapshot, timestamp = Snapshot(), Timestamp()
        snapshot.version = timestamp.version = 0
        return State(
            Metadata(root),
            Metadata(targets),
            Metadata(snapshot),
            Metadata(timestamp),
            {},
            new=True,
        )

    def check_signers(self, state: State, signers: list, roles) -> None:
        """Refuses (before anything is written) keys that cannot meet a role's threshold."""
        for role in roles:
            if role in TOP_ROLES:
                spec = state.root.signed.roles[role]
                where = f"{self.meta_dir}/root.json"
            else:
                delegations = state.targets.signed.delegations
                if delegations is None or role not in delegations.roles:
                    continue  # a new model: its role is created with these keys
                spec = delegations.roles[role]
                where = f"{self.meta_dir} targets delegation {role!r}"
            held = [s for s in signers if keyid(s) in spec.keyids]
            if len(held) < spec.threshold:
                raise ConfigError(
                    f"the signing key{'s' if len(signers) > 1 else ''} "
                    f"{', '.join(keyid(s)[:16] for s in signers)} hold{'' if len(signers) > 1 else 's'} "
                    f"{len(held)} of the {spec.threshold} signature(s) role {role!r} needs "
                    f"(threshold {spec.threshold}) in {where}: sign with the repository's keys "
                    "(the others with --extra-signing-key-path/-env, or the Pusher's "
                    "extra_signing_key_paths/envs), or rotate them with `tfxopt ota-rotate-key`"
                )

    def set_channel(
        self,
        state: State,
        model_name: str,
        channel: str,
        model_entry: dict,
        bundle_entry: dict,
        custom: dict,
        signers: list,
        threshold: int | None = None,
    ) -> None:
        """Points ``<model>/<channel>`` at a release in the model's role (in memory).

        A new model's role is delegated to ``signers`` with ``threshold`` (default: the top-level
        targets role's), bound to the paths ``<model>/*/*`` and terminating.
        """
        from tuf.api.metadata import DelegatedRole, Metadata, TargetFile, Targets

        delegations = state.targets.signed.delegations
        if model_name not in delegations.roles:
            for signer in signers:
                delegations.keys[keyid(signer)] = signer.public_key
            delegations.roles[model_name] = DelegatedRole(
                model_name,
                [keyid(s) for s in signers],
                threshold or state.root.signed.roles["targets"].threshold,
                True,
                paths=[f"{model_name}/*/*"],
            )
            role = Targets()
            role.version = 0  # the first version written is 1
            state.roles[model_name] = Metadata(role)
            state.targets_changed = True
        role = state.roles[model_name]
        for name, entry, extra in (
            (MODEL_TARGET, model_entry, custom),
            (BUNDLE_TARGET, bundle_entry, None),
        ):
            path = target_path(model_name, channel, name)
            fields = {"length": entry["length"], "hashes": {"sha256": entry["sha256"]}}
            if extra is not None:
                fields["custom"] = extra
            role.signed.targets[path] = TargetFile.from_dict(fields, path)

    def commit(
        self,
        state: State,
        changed_roles: set,
        signers: list,
        expires_in_days: float,
        now=None,
        root_changed: bool = False,
        root_signers: list = (),
        role_signers: dict | None = None,
    ) -> None:
        """Signs and writes the changed roles, then snapshot, then timestamp (last).

        Args:
          changed_roles: model role names whose metadata changed.
          root_changed: write a new root version (signed by ``signers`` and ``root_signers``).
          role_signers: {model role: signers} where a model's role has keys of its own.
        """
        from tuf.api.metadata import MetaFile
        from tuf.api.serialization.json import JSONSerializer

        now = now or utcnow()
        expires = now + datetime.timedelta(days=expires_in_days)
        long_expiry = now + datetime.timedelta(days=max(ROOT_EXPIRY_DAYS, expires_in_days))
        serializer = JSONSerializer(compact=False)
        storage.makedirs(self.meta_dir)

        def sign(md, with_signers) -> bytes:
            md.signatures.clear()
            for signer in with_signers:
                md.sign(signer, append=True)
            return md.to_bytes(serializer)

        def write(name: str, data: bytes) -> MetaFile:
            storage.atomic_write(storage.join(self.meta_dir, name), data)
            return MetaFile(
                version=int(name.split(".", 1)[0]) if name[0].isdigit() else 0,
                length=len(data),
                hashes={"sha256": hashlib.sha256(data).hexdigest()},
            )

        root = state.root
        renew = root.signed.expires < long_expiry - datetime.timedelta(days=ROOT_EXPIRY_DAYS / 2)
        if state.new or root_changed or renew:  # renew: keep the root well clear of its expiry
            root.signed.expires = long_expiry
            root.signed.version = self._next_version(
                "root", 0 if state.new else root.signed.version
            )
            data = sign(root, [*root_signers, *signers])
            write(f"{root.signed.version}.root.json", data)
            storage.atomic_write(storage.join(self.meta_dir, "root.json"), data)

        meta = dict(state.snapshot.signed.meta)
        for name in sorted(changed_roles):
            role = state.roles[name]
            role.signed.expires = expires
            role.signed.version = self._next_version(name, role.signed.version)
            by = (role_signers or {}).get(name, signers)
            meta[f"{name}.json"] = write(f"{role.signed.version}.{name}.json", sign(role, by))
        targets = state.targets
        stale = targets.signed.expires < now + datetime.timedelta(days=expires_in_days)
        if state.new or state.targets_changed or stale or root_changed:
            targets.signed.expires = long_expiry
            targets.signed.version = self._next_version("targets", targets.signed.version)
            meta["targets.json"] = write(
                f"{targets.signed.version}.targets.json", sign(targets, signers)
            )
        snap = state.snapshot
        snap.signed.meta = meta
        snap.signed.expires = expires
        snap.signed.version = self._next_version("snapshot", snap.signed.version)
        snap_file = write(f"{snap.signed.version}.snapshot.json", sign(snap, signers))
        ts = state.timestamp
        ts.signed.snapshot_meta = snap_file
        ts.signed.expires = expires
        ts.signed.version += 1
        storage.atomic_write(storage.join(self.meta_dir, "timestamp.json"), sign(ts, signers))


def rotate_keys(
    base_directory: str,
    old_signers: list,
    new_signers: list,
    threshold: int = 1,
    expires_in_days: float = 30.0,
    now=None,
) -> int:
    """Replaces the keys of every role by ``new_signers`` (threshold ``threshold``).

    The new root version is signed by the old keys and the new ones, so devices trusting the
    old root follow the rotation (TUF's root chain); every other role is re-signed by the new keys.

    Returns:
      The new root version.
    """
    repo = Repository(base_directory)
    if not repo.exists():
        raise ConfigError(f"{repo.meta_dir}/timestamp.json does not exist: nothing to rotate")
    with storage.lock(repo.meta_dir):
        state = repo.load()
        repo.check_signers(state, old_signers, ["root"])
        if not 1 <= threshold <= len(new_signers):
            raise ConfigError(f"threshold {threshold} needs 1 to {len(new_signers)} new keys")
        root = state.root.signed
        for role in TOP_ROLES:
            for kid in list(root.roles[role].keyids):
                root.revoke_key(kid, role)
            for signer in new_signers:
                root.add_key(signer.public_key, role)
            root.roles[role].threshold = threshold
        delegations = state.targets.signed.delegations
        delegations.keys = {keyid(s): s.public_key for s in new_signers}
        for role in delegations.roles.values():
            role.keyids = [keyid(s) for s in new_signers]
            role.threshold = threshold
        repo.commit(
            state,
            set(state.roles),
            new_signers,
            expires_in_days,
            now=now,
            root_changed=True,
            root_signers=old_signers,
        )
        return state.root.signed.version
