"""Reference device-side OTA client: python-tuf's ``ngclient`` plus OMS verification, and an
atomic model swap.

No TensorFlow. A check, in order: the channel location ``<repository>/<model>/<channel>`` (a URL
or a directory; the model and channel a device expects come from it unless given) names the TUF
repository; the device's trusted root for it (kept from the last accepted check, else the app's
``root.json`` or, on first contact, the repository's ``metadata/root.json`` accepted only when
signed by a pinned public key) starts ``tuf.ngclient.Updater``, which refreshes root (key
rotation), timestamp, snapshot and targets (signatures, thresholds, versions, expiry, lengths and
hashes: TUF's defences against rollback, freeze, mix-and-match and endless data) and finds
``<model>/<channel>/model.tflite`` only in the model's delegated role. Then our checks on its
``custom``: model and channel, sequence (never older than the last one this device accepted for
them, persisted), app version, rollout bucket; then both target files are downloaded (length and
hash checked while streaming) and the OMS bundle is verified over the model file with the OMS key
the signed metadata names. Only then the release directory is published, the ``current`` symlink
swapped atomically (``previous`` keeps the model it replaced) and the refreshed TUF metadata kept.
Everything runs in a staging directory: any failed check leaves the device directory as it was,
and the result says why. :meth:`DeviceClient.check` never raises.

Device directory layout::

  device_id               this device's id (created once when none is given)
  state.json              last accepted sequence per model/channel, and the current release
  trust/<repo id> -> ...  the TUF metadata trusted for a repository (atomic symlink swap)
  models/<release id>/    model.tflite, model.sig (the OMS bundle) and release.json
  current -> models/...   the model in use (atomic symlink swap)
  previous -> models/...  the one it replaced
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import uuid

from components.common.errors import ConfigError
from components.common.keys import TFLITE_FILE
from components.pusher import oms, signing
from components.pusher.ota_fetch import (  # noqa: F401 - safe_relative_path is part of the API
    MAX_METADATA_BYTES,
    MODEL_NAME_PATTERN,
    ChannelSource,
    FetchError,
    fetcher_class,
    safe_relative_path,
)
from components.pusher.signing import SignatureVerificationError

RELEASE_FORMAT = "tfxopt.ota.release/1"
MODEL_TARGET = TFLITE_FILE  # the target's name in every channel
BUNDLE_TARGET = "model.sig"
MAX_ROOT_BYTES = 512_000
BUCKETS = 10_000  # 0.01 % rollout resolution

UPDATED = "updated"
UP_TO_DATE = "up_to_date"
NOT_ELIGIBLE = "not_eligible"
REJECTED = "rejected"

MAX_REASON_CHARS = 500


@dataclasses.dataclass
class CheckResult:
    """The outcome of one check: ``status`` is updated, up_to_date, not_eligible or rejected."""

    status: str
    reason: str
    sequence: int | None = None
    model_version: int | None = None
    model_dir: str | None = None
    gate: dict | None = None

    @property
    def ok(self) -> bool:
        """True unless a check failed (not being in the rollout is not a failure)."""
        return self.status != REJECTED


def rollout_bucket(device_id: str, model_name: str) -> int:
    """A device's stable bucket in [0, 10000) for a model: raising the share only adds devices."""
    digest = hashlib.sha256(f"{model_name}\0{device_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def in_rollout(device_id: str, model_name: str, percentage: float) -> bool:
    return rollout_bucket(device_id, model_name) < round(float(percentage) * BUCKETS / 100)


def parse_app_version(text: str) -> tuple[int, ...]:
    """'1.10.2' -> (1, 10, 2); raises ValueError on anything else (at most 16 parts of 9 digits)."""
    if not isinstance(text, str) or not re.fullmatch(r"\d{1,9}(\.\d{1,9}){0,15}", text):
        raise ValueError(f"app version {str(text)[:40]!r} is not dotted integers")
    return tuple(int(p) for p in text.split("."))


def _one_line(text: str) -> str:
    """A reason fit for one line of a terminal: no control characters, bounded length."""
    text = "".join(c if c.isprintable() else " " for c in str(text))
    text = " ".join(text.split())
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 3] + "..."


def _rejected(reason: str) -> CheckResult:
    return CheckResult(REJECTED, _one_line(reason))


def release_id(sha256: str, length: int) -> str:
    """A release's directory name (the formula of the old manifests' single-file releases, so a
    device updated before the move to TUF sees the same release as up to date)."""
    key = f"{MODEL_TARGET}\0{sha256}\0{length}\n"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_release_fields(custom, max_file_bytes: int) -> dict:
    """Checks the type and range of every ``custom`` field the client acts on; returns it.

    Raises:
      SignatureVerificationError: naming the first field that is missing or malformed.
    """
    if not isinstance(custom, dict) or custom.get("format") != RELEASE_FORMAT:
        raise SignatureVerificationError(f"release format is not {RELEASE_FORMAT}")
    for field in ("model_name", "channel"):
        if not isinstance(custom.get(field), str):
            raise SignatureVerificationError(f"release {field} is not a string")
    for field in ("sequence", "model_version"):
        if not _is_int(custom.get(field)) or custom[field] < 0:
            raise SignatureVerificationError(f"release {field} is not a non-negative integer")
    try:
        parse_app_version(custom.get("min_app_version", "0"))
    except ValueError as e:
        raise SignatureVerificationError(f"release: {e}") from None
    share = custom.get("rollout_basis_points")
    if not _is_int(share) or not 0 <= share <= BUCKETS:
        raise SignatureVerificationError(f"release rollout_basis_points {share!r} is not 0..10000")
    fields = custom.get("oms")
    if not isinstance(fields, dict) or not all(
        isinstance(fields.get(k), str) for k in ("target", "sha256", "public_key")
    ):
        raise SignatureVerificationError("release oms is not {target, sha256, public_key}")
    file_entry = custom.get("file")
    if not isinstance(file_entry, dict) or not _is_int(file_entry.get("length")):
        raise SignatureVerificationError("release file is not {sha256, length}")
    if not 0 <= file_entry["length"] <= max_file_bytes:
        raise SignatureVerificationError(f"model file length {file_entry['length']} is too large")
    return custom


@dataclasses.dataclass(frozen=True)
class _Expected:
    """The model and channel a check accepts, and where they came from (for messages)."""

    model_name: str
    channel: str
    origin: str

    @property
    def state_key(self) -> str:
        return f"{self.model_name}/{self.channel}"

    def target(self, name: str = MODEL_TARGET) -> str:
        return f"{self.model_name}/{self.channel}/{name}"


class DeviceClient:
    """Keeps one model on a device up to date from a TUF + OMS channel.

    Args:
      device_dir: where the device keeps its models, TUF metadata and state.
      trusted_public_keys: Ed25519 public keys pinned for the first contact with a repository: its
        ``metadata/root.json`` is trusted only when a threshold of them signed it.
      device_id: the id hashed for rollout buckets; default: one generated once and kept in
        ``device_dir/device_id``.
      app_version: this app's version, compared with the release's ``min_app_version``.
      model_name: the model to accept; default: the one the channel location names.
      timeout_s: network timeout per request.
      max_file_bytes: largest model file accepted.
      trusted_root: path of the repository's ``root.json`` shipped with the app (instead of, or
        with, pinned keys).

    Raises:
      ConfigError: for a malformed ``app_version``, ``model_name`` or ``trusted_root``, no trust
        anchor at all, or a device directory that cannot be created.
    """

    def __init__(
        self,
        device_dir: str,
        trusted_public_keys=(),
        device_id: str | None = None,
        app_version: str = "0",
        model_name: str | None = None,
        timeout_s: float = 30.0,
        max_file_bytes: int = 1 << 31,
        trusted_root: str | None = None,
    ):
        self.device_dir = os.path.abspath(device_dir)
        self.trusted = signing.trusted_keys(trusted_public_keys)
        self.root_bytes = None
        if trusted_root:
            self.root_bytes = self._read_root_file(trusted_root)
        if not self.trusted and self.root_bytes is None:
            raise ConfigError("no trust anchor: give a pinned public key or a trusted root.json")
        try:
            self.app_version = parse_app_version(app_version)
        except ValueError as e:
            raise ConfigError(f"app_version: {e}") from None
        if model_name is not None and not re.match(MODEL_NAME_PATTERN, str(model_name)):
            raise ConfigError(f"model_name {model_name!r} is not a plain model name")
        self.model_name = model_name
        self.timeout_s = timeout_s
        self.max_file_bytes = max_file_bytes
        try:
            os.makedirs(os.path.join(self.device_dir, "models"), exist_ok=True)
            os.makedirs(os.path.join(self.device_dir, "trust"), exist_ok=True)
            self.device_id = device_id or self._stored_device_id()
        except OSError as e:
            raise ConfigError(f"device directory {self.device_dir!r}: {e.strerror}") from None

    @staticmethod
    def _read_root_file(path: str) -> bytes:
        from tuf.api.metadata import Metadata, Root

        try:
            with open(path, "rb") as f:
                data = f.read(MAX_ROOT_BYTES + 1)
            md = Metadata[Root].from_bytes(data)
            md.verify_delegate("root", md)
        except OSError as e:
            raise ConfigError(f"trusted root {path!r} cannot be read ({e.strerror})") from None
        except Exception as e:  # noqa: BLE001 - not root metadata, or not signed by its keys
            raise ConfigError(
                f"trusted root {path!r} is not valid TUF root metadata ({e})"
            ) from None
        return data

    def _stored_device_id(self) -> str:
        path = os.path.join(self.device_dir, "device_id")
        if not os.path.exists(path):
            self._atomic_write(path, uuid.uuid4().hex.encode())
        with open(path) as f:
            return f.read().strip()

    @staticmethod
    def _atomic_write(path: str, data: bytes) -> None:
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def state(self) -> dict:
        path = os.path.join(self.device_dir, "state.json")
        if not os.path.exists(path):
            return {"accepted": {}, "current": None}
        with open(path) as f:
            return json.load(f)

    def current_model_dir(self) -> str | None:
        """The directory of the model in use, or None before the first update."""
        link = os.path.join(self.device_dir, "current")
        return os.path.realpath(link) if os.path.islink(link) else None

    def current_model_path(self, name: str = MODEL_TARGET) -> str | None:
        directory = self.current_model_dir()
        return os.path.join(directory, name) if directory else None

    def previous_model_dir(self) -> str | None:
        link = os.path.join(self.device_dir, "previous")
        return os.path.realpath(link) if os.path.islink(link) else None

    def check(self, location: str, channel: str | None = None) -> CheckResult:
        """Checks a channel once and updates the device model when every check passes.

        Never raises: a failed check, a malformed or hostile document, a network or protocol
        error and any unexpected exception all become a ``rejected`` result whose reason says
        what failed (with the exception type), the device directory left as it was.

        Args:
          location: ``http(s)://host/.../<model>/<channel>`` or a directory path: the repository
            is two levels up, unless ``model_name`` and ``channel`` are both given and the
            location does not end in them; then the location is the repository itself.
          channel: the expected channel; default: the location's last path segment.
        """
        try:
            return self._check(location, channel)
        except FetchError as e:
            return _rejected(f"could not fetch the channel: {e}")
        except SignatureVerificationError as e:
            return _rejected(str(e))
        except Exception as e:  # noqa: BLE001 - the promise: the caller gets a result
            return _rejected(f"refused: {type(e).__name__}: {e}")

    def _expected(self, source: ChannelSource, channel: str | None) -> tuple[_Expected, str]:
        """The model and channel to accept, and the repository's location."""
        model_from_path, channel_from_path = source.path_names()
        channel_given = bool(channel)
        model_name = self.model_name or model_from_path
        channel = channel or channel_from_path
        if not model_name or not channel:
            missing = [
                option
                for option, known in (("--model-name", model_name), ("--channel", channel))
                if not known
            ]
            raise SignatureVerificationError(
                f"cannot tell which model and channel {source.location!r} serves (it does not "
                f"end in .../<model>/<channel>): pass {' and '.join(missing)}"
            )
        origin = "given" if self.model_name else f"named by the location {source.location!r}"
        location = (
            source.location.rstrip("/") if source.is_url else os.path.abspath(source.location)
        )
        named = (model_from_path, channel_from_path) == (model_name, channel)
        if named or not (self.model_name and channel_given):
            for _ in range(2):
                location = (
                    location.rsplit("/", 1)[0] if source.is_url else os.path.dirname(location)
                )
        return _Expected(model_name, channel, origin), location

    def _check(self, location: str, channel: str | None) -> CheckResult:
        expected, repository = self._expected(ChannelSource(location, self.timeout_s), channel)
        staging = os.path.join(self.device_dir, f".incoming-{uuid.uuid4().hex[:12]}")
        os.makedirs(staging)
        try:
            return self._check_in(staging, repository, expected)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _trust_link(self, repository: str) -> str:
        key = repository if "://" in repository else "file://" + repository
        return os.path.join(self.device_dir, "trust", hashlib.sha256(key.encode()).hexdigest()[:16])

    def _bootstrap_root(self, fetcher, repository: str) -> bytes:
        """The first root for a repository: the app's, else the published one if pinned keys
        signed it."""
        if self.root_bytes is not None:
            return self.root_bytes
        from tuf.api.metadata import Metadata, Root

        url = _join(repository, "metadata/root.json")
        data = fetcher.download_bytes(url, MAX_ROOT_BYTES)
        try:
            md = Metadata[Root].from_bytes(data)
        except Exception as e:  # noqa: BLE001 - DeserializationError and friends
            raise SignatureVerificationError(
                f"metadata/root.json is not TUF root metadata ({type(e).__name__})"
            ) from None
        result = md.signed.get_verification_result("root", md.signed_bytes, md.signatures)
        pinned = {_sslib_keyid(k) for k in self.trusted.values()}
        held = [kid for kid in result.signed if kid in pinned]
        if not result.verified or len(held) < md.signed.roles["root"].threshold:
            signers = ", ".join(sorted(k[:16] for k in result.signed)) or "no valid signature"
            raise SignatureVerificationError(
                f"root metadata is signed only by untrusted key(s) ({signers}); pinned: "
                f"{', '.join(sorted(k[:16] for k in pinned))}"
            )
        return data

    def _check_in(self, staging: str, repository: str, expected: _Expected) -> CheckResult:
        from tuf.ngclient import Updater, UpdaterConfig

        fetcher = fetcher_class()(repository, self.timeout_s)
        meta_dir = os.path.join(staging, "trust")
        link = self._trust_link(repository)
        if os.path.isdir(link):
            shutil.copytree(link, meta_dir)
        else:
            os.makedirs(meta_dir)
            with open(os.path.join(meta_dir, "root.json"), "wb") as f:
                f.write(self._bootstrap_root(fetcher, repository))
        updater = Updater(
            meta_dir,
            _join(repository, "metadata/"),
            target_dir=staging,
            target_base_url=_join(repository, ""),
            fetcher=fetcher,
            config=UpdaterConfig(targets_max_length=MAX_METADATA_BYTES),
        )
        updater.refresh()
        info = updater.get_targetinfo(expected.target())
        if info is None:
            raise SignatureVerificationError(
                f"the repository has no release of model {expected.model_name!r} on channel "
                f"{expected.channel!r} ({expected.origin}; pass --model-name/--channel if the "
                "channel lives elsewhere)"
            )
        custom = check_release_fields(info.custom, self.max_file_bytes)
        verdict = self._check_release(custom, info, expected)
        if verdict is not None:
            return verdict
        rid = release_id(info.hashes["sha256"], info.length)
        current = self.current_model_dir()
        if current and os.path.basename(current) == rid:
            self._keep_trust(meta_dir, link)
            self._accept(custom, expected, rid)
            return self._result(UP_TO_DATE, "already running this release", custom)
        release_dir = os.path.join(staging, "release")
        os.makedirs(release_dir)
        gate = self._download_and_verify(updater, info, custom, expected, release_dir)
        self._install(release_dir, rid)
        self._keep_trust(meta_dir, link)
        self._accept(custom, expected, rid)
        result = self._result(UPDATED, f"updated to sequence {custom['sequence']}", custom)
        result.gate = gate
        return result

    def _download_and_verify(self, updater, info, custom, expected, release_dir) -> dict | None:
        """Both target files, hash-checked by ngclient; then the OMS bundle over the model."""
        oms_fields = custom["oms"]
        if oms_fields["target"] != expected.target(BUNDLE_TARGET):
            raise SignatureVerificationError(
                f"release oms target {oms_fields['target']!r} is not "
                f"{expected.target(BUNDLE_TARGET)!r}"
            )
        bundle_info = updater.get_targetinfo(oms_fields["target"])
        if bundle_info is None or bundle_info.hashes.get("sha256") != oms_fields["sha256"]:
            raise SignatureVerificationError("the OMS bundle's targets entry is missing or differs")
        bundle_path = updater.download_target(bundle_info, os.path.join(release_dir, BUNDLE_TARGET))
        model_path = updater.download_target(info, os.path.join(release_dir, MODEL_TARGET))
        with open(bundle_path, "rb") as f:
            bundle = f.read()
        digest = hashlib.sha256()
        with open(model_path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        public_key = oms.load_public_key(oms_fields["public_key"], "release oms public_key")
        predicate = oms.verify_bundle(bundle, public_key, digest.hexdigest())
        self._atomic_write(
            os.path.join(release_dir, "release.json"), json.dumps(custom, indent=2).encode()
        )
        gate = predicate.get(oms.GATE_FIELD)
        return gate if isinstance(gate, dict) else None

    def _result(self, status: str, reason: str, custom: dict) -> CheckResult:
        return CheckResult(
            status, reason, custom["sequence"], custom["model_version"], self.current_model_dir()
        )

    def _check_release(self, custom, info, expected: _Expected) -> CheckResult | None:
        """Checks after TUF; returns a non-update result, None to go on, or raises."""
        for field, want in (("model_name", expected.model_name), ("channel", expected.channel)):
            if custom[field] != want:
                raise SignatureVerificationError(
                    f"release is for {field.split('_')[0]} {custom[field]!r}, not {want!r} "
                    f"({expected.origin}; pass --model-name/--channel if the channel lives "
                    "elsewhere)"
                )
        if (
            custom["file"].get("sha256") != info.hashes.get("sha256")
            or custom["file"]["length"] != info.length
        ):
            raise SignatureVerificationError("release file does not match its targets entry")
        sequence = custom["sequence"]
        accepted = self.state()["accepted"].get(expected.state_key)
        if accepted is not None and sequence < accepted["sequence"]:
            raise SignatureVerificationError(
                f"release sequence {sequence} is older than the accepted {accepted['sequence']} "
                f"for {expected.state_key} (replay or downgrade refused)"
            )
        rid = release_id(info.hashes["sha256"], info.length)
        if accepted is not None and sequence == accepted["sequence"]:
            if accepted.get("release_id") != rid:
                raise SignatureVerificationError(
                    f"sequence {sequence} was already accepted with another file (refused)"
                )
        return self._eligibility(custom)

    def _eligibility(self, custom: dict) -> CheckResult | None:
        """A not_eligible result when this app or device is outside the release, else None."""
        required = custom.get("min_app_version", "0")
        if self.app_version < parse_app_version(required):
            reason = (
                f"app version {'.'.join(map(str, self.app_version))} is older than the "
                f"required {required}"
            )
        else:
            share = custom["rollout_basis_points"]
            bucket = rollout_bucket(self.device_id, custom["model_name"])
            if bucket < share:
                return None
            reason = f"not in the rollout (bucket {bucket / 100:.2f} % >= {share / 100:g} %)"
        return CheckResult(
            NOT_ELIGIBLE,
            reason,
            custom["sequence"],
            custom["model_version"],
            self.current_model_dir(),
        )

    def _point(self, link: str, target: str) -> None:
        tmp = f"{link}.tmp-{uuid.uuid4().hex[:8]}"
        os.symlink(target, tmp)
        os.replace(tmp, link)  # rename(2) over the old link: readers see old or new, never none

    def _keep_trust(self, meta_dir: str, link: str) -> None:
        """Keeps the refreshed TUF metadata for the next check (atomic symlink swap)."""
        old = os.path.realpath(link) if os.path.islink(link) else None
        kept = f"{link}.{uuid.uuid4().hex[:12]}"
        os.rename(meta_dir, kept)
        self._point(link, os.path.basename(kept))
        if old and old != kept:
            shutil.rmtree(old, ignore_errors=True)

    def _install(self, staging: str, rid: str) -> None:
        final = os.path.join(self.device_dir, "models", rid)
        current = self.current_model_dir()
        if os.path.exists(final):  # an older copy (e.g. `previous`): the fresh one is verified
            if current == final:
                raise SignatureVerificationError("internal: refusing to replace the running model")
            shutil.rmtree(final)
        os.rename(staging, final)
        if current:
            self._point(
                os.path.join(self.device_dir, "previous"),
                os.path.join("models", os.path.basename(current)),
            )
        self._point(os.path.join(self.device_dir, "current"), os.path.join("models", rid))
        keep = {rid, os.path.basename(current or "")}
        for name in os.listdir(os.path.join(self.device_dir, "models")):
            if name not in keep:
                shutil.rmtree(os.path.join(self.device_dir, "models", name), ignore_errors=True)

    def _accept(self, custom: dict, expected: _Expected, rid: str) -> None:
        state = self.state()
        state["accepted"][expected.state_key] = {
            "sequence": custom["sequence"],
            "release_id": rid,
            "model_version": custom["model_version"],
        }
        state["current"] = {
            "model_name": expected.model_name,
            "channel": expected.channel,
            "sequence": custom["sequence"],
            "model_version": custom["model_version"],
            "release_id": rid,
        }
        self._atomic_write(
            os.path.join(self.device_dir, "state.json"), json.dumps(state, indent=2).encode()
        )


def _join(repository: str, rel: str) -> str:
    if "://" in repository:
        return repository.rstrip("/") + "/" + rel
    return os.path.join(repository, rel) if rel else repository + os.sep


def _sslib_keyid(public_key) -> str:
    from securesystemslib.signer import SSlibKey

    return SSlibKey.from_crypto(public_key).keyid
