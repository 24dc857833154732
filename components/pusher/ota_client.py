"""Reference device-side OTA client: fetch a channel, verify everything, swap the model atomically.

Standard library plus ``cryptography`` only (no TensorFlow), so it runs on a device or in an app's
update service. The model and channel a device expects come from the channel location
(``.../<model>/<channel>``, a URL or a directory) unless given explicitly. A check, in order: fetch
``manifest.json`` and ``manifest.json.sig`` (over HTTP(S) or from a path; both size- and
depth-bounded before they are parsed), verify the Ed25519 signature against trusted public keys,
then the manifest's fields and types, its model name and channel (the expected ones), its expiry,
its sequence (never older than the last one this device accepted for the expected model and
channel, which is persisted), the app version, the rollout bucket (a stable hash of the device id
against the percentage) and every file path (relative, inside the channel directory); then download
each file, checking length and sha256 while streaming. Only then the new model directory is
published and the ``current`` symlink swapped atomically, ``previous`` keeping the model it
replaced. Any failed check leaves the device directory as it was, and the result says why:
:meth:`DeviceClient.check` never raises.

Device directory layout::

  device_id             this device's id (created once when none is given)
  state.json            last accepted sequence per model/channel, and the current release
  models/<release id>/  verified model files and the manifest they came with
  current -> models/... the model in use (atomic symlink swap)
  previous -> models/...the one it replaced
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import math
import os
import re
import shutil
import uuid

from components.common.errors import ConfigError
from components.pusher import safe_json, signing
from components.pusher.ota_fetch import (  # noqa: F401 - safe_relative_path is part of the API
    MODEL_NAME_PATTERN,
    PLAIN_NAME,
    ChannelSource,
    FetchError,
    iter_chunks,
    safe_relative_path,
)
from components.pusher.signing import SignatureVerificationError

MANIFEST_FILE = "manifest.json"
SIGNATURE_FILE = "manifest.json.sig"
MANIFEST_FORMAT = "tfxopt.ota.manifest/1"
MAX_MANIFEST_BYTES = 1 << 20
BUCKETS = 10_000  # 0.01 % rollout resolution

UPDATED = "updated"
UP_TO_DATE = "up_to_date"
NOT_ELIGIBLE = "not_eligible"
REJECTED = "rejected"

MAX_FILES = 64
MAX_REASON_CHARS = 500


@dataclasses.dataclass
class CheckResult:
    """The outcome of one check: ``status`` is updated, up_to_date, not_eligible or rejected."""

    status: str
    reason: str
    sequence: int | None = None
    model_version: int | None = None
    model_dir: str | None = None

    @property
    def ok(self) -> bool:
        """True unless a check failed (not being in the rollout is not a failure)."""
        return self.status != REJECTED


def rollout_bucket(device_id: str, model_name: str) -> int:
    """A device's stable bucket in [0, 10000) for a model: raising the percentage only adds devices."""
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


def _release_id(files: list[dict]) -> str:
    key = "".join(f"{f['name']}\0{f['sha256']}\0{f['length']}\n" for f in sorted(files, key=str))
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_file_entries(files, max_file_bytes: int) -> None:
    if not isinstance(files, list) or not 1 <= len(files) <= MAX_FILES:
        raise SignatureVerificationError(
            f"manifest files is not a list of 1 to {MAX_FILES} entries"
        )
    names = set()
    for entry in files:
        if not isinstance(entry, dict):
            raise SignatureVerificationError("a manifest file entry is not an object")
        safe_relative_path(entry.get("path"))
        name = entry.get("name")
        if not isinstance(name, str) or not PLAIN_NAME.match(name) or name == MANIFEST_FILE:
            raise SignatureVerificationError(f"file name {name!r} is not a plain file name")
        if name in names:
            raise SignatureVerificationError(f"file name {name!r} appears twice")
        names.add(name)
        length = entry.get("length")
        if not _is_int(length) or not 0 <= length <= max_file_bytes:
            raise SignatureVerificationError(f"{name}: length {length!r} is not acceptable")
        if not isinstance(entry.get("sha256"), str) or not re.fullmatch(
            r"[0-9a-f]{64}", entry["sha256"]
        ):
            raise SignatureVerificationError(f"{name}: sha256 is not 64 hex digits")


def check_manifest_fields(manifest, max_file_bytes: int) -> datetime.datetime:
    """Checks the type and range of every field the client acts on; returns the expiry.

    Raises:
      SignatureVerificationError: naming the first field that is missing or malformed.
    """
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise SignatureVerificationError(f"manifest format is not {MANIFEST_FORMAT}")
    for field in ("model_name", "channel", "expires"):
        if not isinstance(manifest.get(field), str):
            raise SignatureVerificationError(f"manifest {field} is not a string")
    for field in ("sequence", "model_version"):
        if not _is_int(manifest.get(field)) or manifest[field] < 0:
            raise SignatureVerificationError(f"manifest {field} is not a non-negative integer")
    try:
        expires = datetime.datetime.fromisoformat(manifest["expires"])
        parse_app_version(manifest.get("min_app_version", "0"))
    except ValueError as e:
        raise SignatureVerificationError(f"manifest: {e}") from None
    if expires.tzinfo is None:
        raise SignatureVerificationError("manifest expires has no time zone")
    percentage = manifest.get("rollout_percentage", 100)
    if not isinstance(percentage, (int, float)) or isinstance(percentage, bool):
        raise SignatureVerificationError("manifest rollout_percentage is not a number")
    if not (math.isfinite(percentage) and 0 <= percentage <= 100):
        raise SignatureVerificationError(
            f"manifest rollout_percentage {percentage!r} is not in 0..100"
        )
    _check_file_entries(manifest.get("files"), max_file_bytes)
    return expires


@dataclasses.dataclass(frozen=True)
class _Expected:
    """The model and channel a check accepts, and where they came from (for messages)."""

    model_name: str
    channel: str
    origin: str

    @property
    def state_key(self) -> str:
        return f"{self.model_name}/{self.channel}"


class DeviceClient:
    """Keeps one model on a device up to date from a signed OTA channel.

    Args:
      device_dir: where the device keeps its models and state.
      trusted_public_keys: Ed25519 public keys whose signatures are accepted.
      device_id: the id hashed for rollout buckets; default: one generated once and kept in
        ``device_dir/device_id``.
      app_version: this app's version, compared with the manifest's ``min_app_version``.
      model_name: the model to accept; default: the one the channel location names
        (``.../<model>/<channel>``). Manifests for any other model are rejected.
      timeout_s: network timeout per request.
      max_file_bytes: largest model file accepted.

    Raises:
      ConfigError: for a malformed ``app_version`` or ``model_name``, or a device directory that
        cannot be created.
    """

    def __init__(
        self,
        device_dir: str,
        trusted_public_keys,
        device_id: str | None = None,
        app_version: str = "0",
        model_name: str | None = None,
        timeout_s: float = 30.0,
        max_file_bytes: int = 1 << 31,
    ):
        self.device_dir = os.path.abspath(device_dir)
        self.trusted = signing.trusted_keys(trusted_public_keys)
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
            self.device_id = device_id or self._stored_device_id()
        except OSError as e:
            raise ConfigError(f"device directory {self.device_dir!r}: {e.strerror}") from None

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

    def current_model_path(self, name: str = "model.tflite") -> str | None:
        directory = self.current_model_dir()
        return os.path.join(directory, name) if directory else None

    def previous_model_dir(self) -> str | None:
        link = os.path.join(self.device_dir, "previous")
        return os.path.realpath(link) if os.path.islink(link) else None

    def check(
        self, location: str, channel: str | None = None, now: datetime.datetime | None = None
    ) -> CheckResult:
        """Checks a channel once and updates the device model when every check passes.

        Never raises: a failed check, a malformed or hostile document, a network or protocol
        error and any unexpected exception all become a ``rejected`` result whose reason says
        what failed (with the exception type when there is one), the device left as it was.

        Args:
          location: the channel: ``http(s)://host/.../<model>/<channel>`` or a directory path.
          channel: the expected channel; default: the location's last path segment.
          now: the current time (tests).
        """
        try:
            return self._check(location, channel, now)
        except FetchError as e:
            return _rejected(f"could not fetch the channel: {e}")
        except SignatureVerificationError as e:
            return _rejected(str(e))
        except Exception as e:  # noqa: BLE001 - the promise: the caller gets a result
            return _rejected(f"could not check the channel: {type(e).__name__}: {e}")

    def _expected(self, source: ChannelSource, channel: str | None) -> _Expected:
        """The model and channel to accept: explicit ones, else those the location names."""
        model_from_path, channel_from_path = source.path_names()
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
        return _Expected(model_name, channel, origin)

    def _check(self, location: str, channel: str | None, now) -> CheckResult:
        source = ChannelSource(location, self.timeout_s)
        expected = self._expected(source, channel)
        data = source.fetch(MANIFEST_FILE, MAX_MANIFEST_BYTES)
        try:
            signature_bytes = source.fetch(SIGNATURE_FILE, MAX_MANIFEST_BYTES)
        except FetchError as e:
            if e.not_found:
                raise SignatureVerificationError(
                    "manifest is unsigned (no manifest.json.sig)"
                ) from None
            raise
        try:  # bounded before parsing: a hostile document cannot exhaust the stack or memory
            signatures = safe_json.loads(signature_bytes, SIGNATURE_FILE, MAX_MANIFEST_BYTES)
            signing.verify_manifest(data, signatures, self.trusted)
            manifest = safe_json.loads(data, MANIFEST_FILE, MAX_MANIFEST_BYTES)
        except safe_json.JsonLimitError as e:
            raise SignatureVerificationError(str(e)) from None
        verdict = self._check_manifest(manifest, expected, now)
        if verdict is not None:
            return verdict
        release_id = _release_id(manifest["files"])
        current = self.current_model_dir()
        if current and os.path.basename(current) == release_id:
            self._accept(manifest, expected, release_id)
            return self._result(UP_TO_DATE, "already running this release", manifest)
        self._stage_and_install(source, manifest, data, release_id)
        self._accept(manifest, expected, release_id)
        return self._result(UPDATED, f"updated to sequence {manifest['sequence']}", manifest)

    def _stage_and_install(
        self, source: ChannelSource, manifest: dict, data: bytes, release_id: str
    ):
        staging = os.path.join(self.device_dir, f".incoming-{uuid.uuid4().hex[:12]}")
        try:
            os.makedirs(staging)
            for entry in manifest["files"]:
                self._download(source, entry, staging)
            self._atomic_write(os.path.join(staging, "manifest.json"), data)
            self._install(staging, release_id)
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # gone already once installed

    def _result(self, status: str, reason: str, manifest: dict) -> CheckResult:
        return CheckResult(
            status,
            reason,
            manifest["sequence"],
            manifest["model_version"],
            self.current_model_dir(),
        )

    def _check_manifest(self, manifest, expected: _Expected, now) -> CheckResult | None:
        """Checks after the signature; returns a non-update result, None to go on, or raises."""
        expires = check_manifest_fields(manifest, self.max_file_bytes)
        for field, want in (("model_name", expected.model_name), ("channel", expected.channel)):
            if manifest[field] != want:
                raise SignatureVerificationError(
                    f"manifest is for {field.split('_')[0]} {manifest[field]!r}, not {want!r} "
                    f"({expected.origin}; pass --model-name/--channel if the channel lives "
                    "elsewhere)"
                )
        now = now or datetime.datetime.now(datetime.timezone.utc)
        if expires <= now:
            raise SignatureVerificationError(f"manifest expired at {manifest['expires']}")
        sequence, files = manifest["sequence"], manifest["files"]
        accepted = self.state()["accepted"].get(expected.state_key)
        if accepted is not None and sequence < accepted["sequence"]:
            raise SignatureVerificationError(
                f"manifest sequence {sequence} is older than the accepted {accepted['sequence']} "
                f"for {expected.state_key} (replay or downgrade refused)"
            )
        if accepted is not None and sequence == accepted["sequence"]:
            if accepted.get("release_id") != _release_id(files):
                raise SignatureVerificationError(
                    f"sequence {sequence} was already accepted with other files (refused)"
                )
        return self._eligibility(manifest)

    def _eligibility(self, manifest: dict) -> CheckResult | None:
        """A not_eligible result when this app or device is outside the release, else None."""
        required = manifest.get("min_app_version", "0")
        if self.app_version < parse_app_version(required):
            reason = (
                f"app version {'.'.join(map(str, self.app_version))} is older than the "
                f"required {required}"
            )
        else:
            percentage = float(manifest.get("rollout_percentage", 100))
            if in_rollout(self.device_id, manifest["model_name"], percentage):
                return None
            bucket = rollout_bucket(self.device_id, manifest["model_name"])
            reason = f"not in the rollout (bucket {bucket / 100:.2f} % >= {percentage:g} %)"
        return CheckResult(
            NOT_ELIGIBLE,
            reason,
            manifest["sequence"],
            manifest["model_version"],
            self.current_model_dir(),
        )

    def _download(self, source: ChannelSource, entry: dict, staging: str) -> None:
        digest, length = hashlib.sha256(), 0
        target = os.path.join(staging, entry["name"])
        with source.open(entry["path"]) as reader, open(target, "wb") as out:
            for chunk in iter_chunks(reader, entry["length"]):
                length += len(chunk)
                if length > entry["length"]:
                    raise SignatureVerificationError(
                        f"{entry['path']} is longer than the manifest says"
                    )
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if length != entry["length"]:
            raise SignatureVerificationError(
                f"{entry['path']} has {length} bytes, the manifest says {entry['length']}"
            )
        if digest.hexdigest() != entry["sha256"]:
            raise SignatureVerificationError(f"{entry['path']} sha256 does not match the manifest")

    def _point(self, link_name: str, target: str) -> None:
        link = os.path.join(self.device_dir, link_name)
        tmp = f"{link}.tmp-{uuid.uuid4().hex[:8]}"
        os.symlink(target, tmp)
        os.replace(tmp, link)  # rename(2) over the old link: readers see old or new, never none

    def _install(self, staging: str, release_id: str) -> None:
        final = os.path.join(self.device_dir, "models", release_id)
        current = self.current_model_dir()
        if os.path.exists(final):  # an older copy (e.g. `previous`): the fresh one is verified
            if current == final:
                raise SignatureVerificationError("internal: refusing to replace the running model")
            shutil.rmtree(final)
        os.rename(staging, final)
        if current:
            self._point("previous", os.path.join("models", os.path.basename(current)))
        self._point("current", os.path.join("models", release_id))
        keep = {release_id, os.path.basename(current or "")}
        for name in os.listdir(os.path.join(self.device_dir, "models")):
            if name not in keep:
                shutil.rmtree(os.path.join(self.device_dir, "models", name), ignore_errors=True)

    def _accept(self, manifest: dict, expected: _Expected, release_id: str) -> None:
        state = self.state()
        state["accepted"][expected.state_key] = {
            "sequence": manifest["sequence"],
            "release_id": release_id,
            "model_version": manifest["model_version"],
        }
        state["current"] = {
            "model_name": expected.model_name,
            "channel": expected.channel,
            "sequence": manifest["sequence"],
            "model_version": manifest["model_version"],
            "release_id": release_id,
        }
        self._atomic_write(
            os.path.join(self.device_dir, "state.json"), json.dumps(state, indent=2).encode()
        )
