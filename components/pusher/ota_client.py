"""Reference device-side OTA client: fetch a channel, verify everything, swap the model atomically.

Standard library plus ``cryptography`` only (no TensorFlow), so it runs on a device or in an app's
update service. A check, in order: fetch ``manifest.json`` and ``manifest.json.sig`` (over HTTP(S) or
from a path), verify the Ed25519 signature against trusted public keys, then the manifest's model
name and channel, its expiry, its sequence (never older than the last one this device accepted, which
is persisted), the app version, the rollout bucket (a stable hash of the device id against the
percentage) and every file path (relative, inside the channel directory); then download each file,
checking length and sha256 while streaming. Only then the new model directory is published and the
``current`` symlink swapped atomically, ``previous`` keeping the model it replaced. Any failed check
leaves the device on its current model, and the result says why.

Device directory layout::

  device_id             this device's id (created once when none is given)
  state.json            last accepted sequence per model/channel, and the current release
  models/<release id>/  verified model files and the manifest they came with
  current -> models/... the model in use (atomic symlink swap)
  previous -> models/...the one it replaced
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import os
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
import uuid

from components.common.errors import ConfigError
from components.pusher import keys
from components.pusher.keys import VerificationError

MANIFEST_FILE = "manifest.json"
SIGNATURE_FILE = "manifest.json.sig"
MANIFEST_FORMAT = "tfxopt.ota.manifest/1"
MAX_MANIFEST_BYTES = 1 << 20
BUCKETS = 10_000  # 0.01 % rollout resolution
CHUNK_BYTES = 1 << 16

UPDATED = "updated"
UP_TO_DATE = "up_to_date"
NOT_ELIGIBLE = "not_eligible"
REJECTED = "rejected"

_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")


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


def safe_relative_path(path) -> str:
    """Returns ``path`` if it is a plain relative path inside the channel, else raises.

    Raises:
      VerificationError: for absolute paths, ``..`` or ``.`` segments, backslashes, URL syntax
        (``:``, ``%``, ``?``, ``#``) or any character outside ``[A-Za-z0-9._-]``.
    """
    if not isinstance(path, str) or not path:
        raise VerificationError(f"file path {path!r} is not a non-empty string")
    segments = path.split("/")
    for segment in segments:
        if segment in ("", ".", "..") or not _SEGMENT.match(segment):
            raise VerificationError(
                f"file path {path!r} escapes or is not plain inside the channel"
            )
    return path


def parse_app_version(text: str) -> tuple[int, ...]:
    """'1.10.2' -> (1, 10, 2); raises ValueError on anything else."""
    if not re.fullmatch(r"\d+(\.\d+)*", str(text)):
        raise ValueError(f"app version {text!r} is not dotted integers")
    return tuple(int(p) for p in str(text).split("."))


def _release_id(files: list[dict]) -> str:
    key = "".join(f"{f['name']}\0{f['sha256']}\0{f['length']}\n" for f in sorted(files, key=str))
    return hashlib.sha256(key.encode()).hexdigest()[:32]


class _Source:
    """A channel: an http(s)/file URL or a directory path."""

    def __init__(self, location: str, timeout_s: float):
        self.location = location
        self.timeout_s = timeout_s
        scheme = urllib.parse.urlparse(location).scheme
        self.is_url = scheme in ("http", "https", "file")
        if "://" in location and not self.is_url:
            raise VerificationError(
                f"unsupported channel location {location!r} (http, https, path)"
            )

    @property
    def channel_name(self) -> str:
        path = urllib.parse.urlparse(self.location).path if self.is_url else self.location
        return path.rstrip("/").rsplit("/", 1)[-1]

    @contextlib.contextmanager
    def open(self, rel: str):
        rel = safe_relative_path(rel)
        if self.is_url:
            url = self.location.rstrip("/") + "/" + rel
            try:
                with urllib.request.urlopen(url, timeout=self.timeout_s) as response:
                    yield response
            except urllib.error.HTTPError as e:
                raise OSError(f"{url}: HTTP {e.code} {e.reason}") from None
            except urllib.error.URLError as e:
                raise OSError(f"{url}: {e.reason}") from None
            return
        root = os.path.realpath(self.location)
        path = os.path.realpath(os.path.join(root, rel))
        if os.path.commonpath([root, path]) != root:  # a symlink leading out of the channel
            raise VerificationError(f"file path {rel!r} resolves outside the channel directory")
        with open(path, "rb") as f:
            yield f

    def fetch(self, rel: str, limit: int) -> bytes:
        with self.open(rel) as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise VerificationError(f"{rel} is larger than {limit} bytes")
        return data


class DeviceClient:
    """Keeps one model on a device up to date from a signed OTA channel.

    Args:
      device_dir: where the device keeps its models and state.
      trusted_public_keys: Ed25519 public keys whose signatures are accepted.
      device_id: the id hashed for rollout buckets; default: one generated once and kept in
        ``device_dir/device_id``.
      app_version: this app's version, compared with the manifest's ``min_app_version``.
      model_name: when set, manifests for any other model are rejected.
      timeout_s: network timeout per request.
      max_file_bytes: largest model file accepted.
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
        os.makedirs(os.path.join(self.device_dir, "models"), exist_ok=True)
        self.trusted = keys.trusted_keys(trusted_public_keys)
        try:
            self.app_version = parse_app_version(app_version)
        except ValueError as e:
            raise ConfigError(f"app_version: {e}") from None
        self.model_name = model_name
        self.timeout_s = timeout_s
        self.max_file_bytes = max_file_bytes
        self.device_id = device_id or self._stored_device_id()

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

        Args:
          location: the channel: ``http(s)://host/.../<model>/<channel>`` or a directory path.
          channel: the expected channel name; default: the location's last path segment.
          now: the current time (tests).
        """
        staging = None
        try:
            source = _Source(location, self.timeout_s)
            data = source.fetch(MANIFEST_FILE, MAX_MANIFEST_BYTES)
            try:
                signatures = json.loads(source.fetch(SIGNATURE_FILE, MAX_MANIFEST_BYTES))
            except OSError:
                raise VerificationError("manifest is unsigned (no manifest.json.sig)") from None
            except ValueError:
                raise VerificationError("manifest.json.sig is not JSON") from None
            keys.verify_manifest(data, signatures, self.trusted)
            manifest = json.loads(data)
            verdict = self._check_manifest(manifest, channel or source.channel_name, now)
            if verdict is not None:
                return verdict
            release_id = _release_id(manifest["files"])
            current = self.current_model_dir()
            if current and os.path.basename(current) == release_id:
                self._accept(manifest, release_id)
                return self._result(UP_TO_DATE, "already running this release", manifest)
            staging = os.path.join(self.device_dir, f".incoming-{uuid.uuid4().hex[:12]}")
            os.makedirs(staging)
            for entry in manifest["files"]:
                self._download(source, entry, staging)
            self._atomic_write(os.path.join(staging, "manifest.json"), data)
            self._install(staging, release_id)
            staging = None
            self._accept(manifest, release_id)
            return self._result(UPDATED, f"updated to sequence {manifest['sequence']}", manifest)
        except VerificationError as e:
            return CheckResult(REJECTED, str(e))
        except (OSError, ValueError, KeyError, TypeError) as e:
            return CheckResult(REJECTED, f"could not check the channel: {type(e).__name__}: {e}")
        finally:
            if staging:
                shutil.rmtree(staging, ignore_errors=True)

    def _result(self, status: str, reason: str, manifest: dict) -> CheckResult:
        return CheckResult(
            status,
            reason,
            manifest["sequence"],
            manifest["model_version"],
            self.current_model_dir(),
        )

    def _check_manifest(self, manifest, channel: str, now) -> CheckResult | None:
        """Checks after the signature; returns a non-update result, None to go on, or raises."""
        if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
            raise VerificationError(f"manifest format is not {MANIFEST_FORMAT}")
        if self.model_name and manifest.get("model_name") != self.model_name:
            raise VerificationError(
                f"manifest is for model {manifest.get('model_name')!r}, not {self.model_name!r}"
            )
        if channel and manifest.get("channel") != channel:
            raise VerificationError(
                f"manifest is for channel {manifest.get('channel')!r}, fetched as {channel!r}"
            )
        now = now or datetime.datetime.now(datetime.timezone.utc)
        expires = datetime.datetime.fromisoformat(manifest["expires"])
        if expires <= now:
            raise VerificationError(f"manifest expired at {manifest['expires']}")
        sequence = manifest["sequence"]
        if not isinstance(sequence, int) or isinstance(sequence, bool):
            raise VerificationError("manifest sequence is not an integer")
        accepted = self.state()["accepted"].get(self._state_key(manifest))
        if accepted is not None and sequence < accepted["sequence"]:
            raise VerificationError(
                f"manifest sequence {sequence} is older than the accepted {accepted['sequence']} "
                "(replay or downgrade refused)"
            )
        files = manifest["files"]
        if not isinstance(files, list) or not files:
            raise VerificationError("manifest names no files")
        for entry in files:
            safe_relative_path(entry["path"])
            name = entry["name"]
            if not isinstance(name, str) or not _SEGMENT.match(name) or name == "manifest.json":
                raise VerificationError(f"file name {name!r} is not a plain file name")
            if (
                not isinstance(entry["length"], int)
                or not 0 <= entry["length"] <= self.max_file_bytes
            ):
                raise VerificationError(f"{name}: length {entry['length']!r} is not acceptable")
            if not re.fullmatch(r"[0-9a-f]{64}", str(entry["sha256"])):
                raise VerificationError(f"{name}: sha256 is not 64 hex digits")
        if accepted is not None and sequence == accepted["sequence"]:
            if accepted.get("release_id") != _release_id(files):
                raise VerificationError(
                    f"sequence {sequence} was already accepted with other files (refused)"
                )
        if self.app_version < parse_app_version(manifest.get("min_app_version", "0")):
            return CheckResult(
                NOT_ELIGIBLE,
                f"app version {'.'.join(map(str, self.app_version))} is older than the "
                f"required {manifest['min_app_version']}",
                sequence,
                manifest["model_version"],
                self.current_model_dir(),
            )
        percentage = float(manifest.get("rollout_percentage", 100))
        if not in_rollout(self.device_id, manifest["model_name"], percentage):
            bucket = rollout_bucket(self.device_id, manifest["model_name"])
            return CheckResult(
                NOT_ELIGIBLE,
                f"not in the rollout (bucket {bucket / 100:.2f} % >= {percentage:g} %)",
                sequence,
                manifest["model_version"],
                self.current_model_dir(),
            )
        return None

    @staticmethod
    def _state_key(manifest: dict) -> str:
        return f"{manifest['model_name']}/{manifest['channel']}"

    def _download(self, source: _Source, entry: dict, staging: str) -> None:
        digest, length = hashlib.sha256(), 0
        target = os.path.join(staging, entry["name"])
        with source.open(entry["path"]) as reader, open(target, "wb") as out:
            while chunk := reader.read(CHUNK_BYTES):
                length += len(chunk)
                if length > entry["length"]:
                    raise VerificationError(f"{entry['path']} is longer than the manifest says")
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if length != entry["length"]:
            raise VerificationError(
                f"{entry['path']} has {length} bytes, the manifest says {entry['length']}"
            )
        if digest.hexdigest() != entry["sha256"]:
            raise VerificationError(f"{entry['path']} sha256 does not match the manifest")

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
                raise VerificationError("internal: refusing to replace the running model")
            shutil.rmtree(final)
        os.rename(staging, final)
        if current:
            self._point("previous", os.path.join("models", os.path.basename(current)))
        self._point("current", os.path.join("models", release_id))
        keep = {release_id, os.path.basename(current or "")}
        for name in os.listdir(os.path.join(self.device_dir, "models")):
            if name not in keep:
                shutil.rmtree(os.path.join(self.device_dir, "models", name), ignore_errors=True)

    def _accept(self, manifest: dict, release_id: str) -> None:
        state = self.state()
        state["accepted"][self._state_key(manifest)] = {
            "sequence": manifest["sequence"],
            "release_id": release_id,
            "model_version": manifest["model_version"],
        }
        state["current"] = {
            "model_name": manifest["model_name"],
            "channel": manifest["channel"],
            "sequence": manifest["sequence"],
            "model_version": manifest["model_version"],
            "release_id": release_id,
        }
        self._atomic_write(
            os.path.join(self.device_dir, "state.json"), json.dumps(state, indent=2).encode()
        )
