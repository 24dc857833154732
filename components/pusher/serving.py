"""TF Serving model repository: versioned, atomic, idempotent pushes, labels and retention.

Layout under ``<base>/<model_name>/``::

  <version>/            the SavedModel (integer versions that only grow)
  versions/<v>.json     push record of each version: digest, metrics, source; written when the
                        version is complete (the completion marker on object stores)
  repository.json       label state: current labels, each label's history (for rollback)
  production.json       the `stable` version and its key metrics (what the Evaluator compares with)
  .lock                 local writers' lock

and ``<base>/models.config`` (or the configured file): a ``ModelServerConfig`` text proto whose
``model_config_list`` names this model with a ``specific`` version policy (the labelled versions and
the latest) and its ``version_labels``. Other models' entries in that file are kept.

How TF Serving is told about a new version: run it with ``--model_config_file=<that file>``,
``--model_config_file_poll_wait_seconds=N`` and ``--allow_version_labels_for_unavailable_models``
(plus ``--force_allow_any_version_labels_for_unavailable_models`` to move an existing label, such as
``canary``, onto a version it is still loading). Because the policy is ``specific``, TF Serving
loads only versions the config lists, and the config is rewritten only after a version is complete:
on a local disk the version directory appears by one atomic rename of a fully written temporary
sibling; on an object store (no atomic rename) the files are written in place, ``saved_model.pb``
last, then the push record, then the config, so a half-written version is never listed.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import posixpath
import uuid

from components.common.errors import TfxOptError
from components.common.keys import SAVED_MODEL_PB
from components.pusher import storage

MODEL_CONFIG_FILE = "models.config"
RECORDS_DIR = "versions"
REPOSITORY_FILE = "repository.json"
PRODUCTION_FILE = "production.json"
STABLE = "stable"

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ServingPush:
    """What one serving push did."""

    model_name: str
    version: int
    path: str
    created: bool
    digest: str
    labels: dict[str, int]
    config_path: str
    removed_versions: list[int]
    production_path: str | None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _dumps(record: dict) -> bytes:
    return json.dumps(record, indent=2, sort_keys=True).encode()


def saved_model_digest(saved_model_dir: str) -> tuple[str, list[dict]]:
    """Content digest of a SavedModel directory: sha256 over every file's path, length and sha256.

    Returns:
      (hex digest, [{path, sha256, length}] sorted by path).
    """
    files = []
    for rel in storage.walk_files(saved_model_dir):
        sha, length = storage.file_sha256(storage.join(saved_model_dir, rel))
        files.append({"path": rel, "sha256": sha, "length": length})
    if not any(f["path"] == SAVED_MODEL_PB for f in files):
        raise TfxOptError(f"{saved_model_dir!r} holds no {SAVED_MODEL_PB}: not a SavedModel.")
    lines = "".join(f"{f['path']}\0{f['length']}\0{f['sha256']}\n" for f in files)
    return hashlib.sha256(lines.encode()).hexdigest(), files


class Repository:
    """One model in a serving repository; read its state, write versions, labels and config."""

    def __init__(
        self,
        base_directory: str,
        model_name: str,
        server_base_directory: str | None = None,
        config_file: str | None = None,
    ):
        self.base = base_directory
        self.model_name = model_name
        self.model_dir = storage.join(base_directory, model_name)
        state = self._read_json(storage.join(self.model_dir, REPOSITORY_FILE)) or {}
        # Settings given at push time persist, so promote/rollback rewrite the same config file.
        self.server_base = server_base_directory or state.get("server_base_directory")
        self.config_path = (
            config_file
            or state.get("config_file")
            or storage.join(base_directory, MODEL_CONFIG_FILE)
        )
        self.labels: dict[str, int] = {k: int(v) for k, v in state.get("labels", {}).items()}
        self.history: dict[str, list[int]] = {
            k: [int(x) for x in v] for k, v in state.get("label_history", {}).items()
        }

    @staticmethod
    def _read_json(path: str) -> dict | None:
        if not storage.exists(path):
            return None
        return json.loads(storage.read_bytes(path))

    def record_path(self, version: int) -> str:
        return storage.join(self.model_dir, RECORDS_DIR, f"{version}.json")

    def version_dir(self, version: int) -> str:
        return storage.join(self.model_dir, str(version))

    def record(self, version: int) -> dict | None:
        return self._read_json(self.record_path(version))

    def versions(self) -> list[int]:
        """Complete versions: a version directory and its push record, not retired; ascending."""
        numeric = {int(n) for n in storage.listdir(self.model_dir) if n.isdigit()}
        recorded = set()
        for name in storage.listdir(storage.join(self.model_dir, RECORDS_DIR)):
            stem = name.removesuffix(".json")
            if name.endswith(".json") and stem.isdigit():
                recorded.add(int(stem))
        complete = []
        for version in sorted(numeric & recorded):
            if not (self.record(version) or {}).get("removed_at"):
                complete.append(version)
        return complete

    def orphans(self) -> list[int]:
        """Version directories without a push record: interrupted, or another tool's."""
        recorded = {
            int(n.removesuffix(".json"))
            for n in storage.listdir(storage.join(self.model_dir, RECORDS_DIR))
            if n.removesuffix(".json").isdigit()
        }
        return [
            int(n)
            for n in storage.listdir(self.model_dir)
            if n.isdigit() and int(n) not in recorded
        ]

    def _next_version(self) -> int:
        used = [int(n) for n in storage.listdir(self.model_dir) if n.isdigit()]
        for name in storage.listdir(storage.join(self.model_dir, RECORDS_DIR)):
            if name.removesuffix(".json").isdigit():
                used.append(int(name.removesuffix(".json")))
        return max(used, default=0) + 1

    def _clean_temporaries(self) -> None:
        # Under the lock no other writer is active, so any temporary sibling is a dead push's.
        for name in storage.listdir(self.model_dir):
            if name.startswith(storage.TMP_PREFIX):
                log.info("removing leftover %s of an interrupted push", name)
                storage.remove_tree(storage.join(self.model_dir, name))

    def _write_version(self, saved_model_dir: str, files: list[dict], record: dict) -> int:
        ordered = [f["path"] for f in files if f["path"] != SAVED_MODEL_PB] + [SAVED_MODEL_PB]
        while True:
            version = self._next_version()
            final = self.version_dir(version)
            local = storage.is_local(final)
            target = (
                storage.join(
                    self.model_dir, f"{storage.TMP_PREFIX}{version}-{uuid.uuid4().hex[:8]}"
                )
                if local
                else final
            )
            try:
                for rel in ordered:
                    # saved_model.pb last: a loader that sees it finds everything else in place.
                    src, dst = storage.join(saved_model_dir, rel), storage.join(target, rel)
                    storage.copy_file(src, dst, atomic=False)
            except BaseException:
                if local:  # an object-store remnant has no record, so it is never served
                    storage.remove_tree(target)
                raise
            if local:
                try:
                    storage.publish_dir(target, final)
                except FileExistsError:
                    storage.remove_tree(target)
                    continue  # another writer took this number; versions stay unique
            self._write_record(version, record)
            return version

    def _write_record(self, version: int, record: dict) -> None:
        record = {**record, "version": version, "path": self.version_dir(version)}
        storage.atomic_write(self.record_path(version), _dumps({**record, "created_at": _now()}))

    def _adopt_interrupted(self, digest: str, record: dict) -> int | None:
        """Completes an interrupted push of these same bytes; returns its version, or None.

        A push publishes the version directory, then writes its record; a crash between the two
        leaves a complete version that is never served (no record). When the newest version
        directory is such an orphan, numbered above every recorded version, and holds exactly
        these bytes, its record is written now: the rerun ends where the uninterrupted push would
        have, with the same version number and no second copy. Any other orphan (other bytes, a
        partial copy, another tool's directory) is left alone.
        """
        orphans = self.orphans()
        if not orphans or max(orphans) != self._next_version() - 1:
            return None
        version = max(orphans)
        try:
            found, _ = saved_model_digest(self.version_dir(version))
        except (TfxOptError, OSError):
            return None  # not even a SavedModel: a partial copy
        if found != digest:
            return None
        log.warning(
            "serving: %s holds these bytes but no push record (an interrupted push): completing it",
            self.version_dir(version),
        )
        self._write_record(version, record)
        return version

    def _retire(self, keep_last: int | None) -> list[int]:
        versions = self.versions()
        if keep_last is None or len(versions) <= keep_last:
            return []
        protected = set(versions[-keep_last:]) | set(self.labels.values())
        for past in self.history.values():
            if len(past) >= 2:
                protected.add(past[-2])  # a label's rollback target stays loadable
        retired = [v for v in versions if v not in protected]
        for version in retired:
            record = self.record(version) or {}
            record["removed_at"] = _now()
            storage.atomic_write(self.record_path(version), _dumps(record))
        return retired

    def point(self, label: str, version: int) -> None:
        """Points ``label`` at ``version`` (in memory; :meth:`commit` writes it)."""
        if self.labels.get(label) != version:
            self.labels[label] = version
            self.history.setdefault(label, []).append(version)

    def served_versions(self) -> list[int]:
        versions = self.versions()
        served = set(self.labels.values())
        if versions:
            served.add(versions[-1])
        return sorted(served)

    def commit(self) -> None:
        """Writes repository.json, the model_config_list entry and production.json."""
        state = {
            "model_name": self.model_name,
            "labels": self.labels,
            "label_history": self.history,
            "server_base_directory": self.server_base,
            "config_file": self.config_path,
            "updated_at": _now(),
        }
        storage.atomic_write(storage.join(self.model_dir, REPOSITORY_FILE), _dumps(state))
        self._write_model_config()
        self._write_production()

    def _write_model_config(self) -> None:
        # The config file is shared by every model of the repository while each model's lock is
        # its own: the read-modify-write also holds the config directory's lock (always taken
        # after a model's, so never in the opposite order), or a push of one model could drop
        # another model's entry written in the meantime.
        config_dir = posixpath.dirname(self.config_path) or "."
        storage.makedirs(config_dir)
        with storage.lock(config_dir):
            self._update_model_config()

    def _update_model_config(self) -> None:
        from google.protobuf import text_format
        from tensorflow_serving.config import model_server_config_pb2

        config = model_server_config_pb2.ModelServerConfig()
        if storage.exists(self.config_path):
            text = storage.read_bytes(self.config_path).decode()
            try:
                text_format.Parse(text, config)
            except text_format.ParseError as e:
                raise TfxOptError(
                    f"{self.config_path} is not a ModelServerConfig text proto ({e}); fix or "
                    "move it, or set config_file to another path."
                ) from None
        entries = config.model_config_list.config
        entry = next((c for c in entries if c.name == self.model_name), None)
        if entry is None:
            entry = entries.add()
        entry.Clear()
        entry.name = self.model_name
        entry.base_path = storage.join(self.server_base or self.base, self.model_name)
        entry.model_platform = "tensorflow"
        entry.model_version_policy.specific.versions.extend(self.served_versions())
        for label in sorted(self.labels):
            entry.version_labels[label] = self.labels[label]
        storage.atomic_write(self.config_path, text_format.MessageToString(config).encode())

    def _write_production(self) -> None:
        version = self.labels.get(STABLE)
        if version is None:
            return
        record = self.record(version) or {}
        metrics = record.get("metrics", {})
        production = {
            **metrics,
            "model_name": self.model_name,
            "version": version,
            "label": STABLE,
            "path": self.version_dir(version),
            "digest": record.get("digest"),
            "saved_model_bytes": record.get("saved_model_bytes"),
            "size_bytes": metrics.get("size_bytes", record.get("saved_model_bytes")),
            "metrics": metrics,
            "pushed_at": record.get("created_at"),
            "updated_at": _now(),
        }
        storage.atomic_write(storage.join(self.model_dir, PRODUCTION_FILE), _dumps(production))


def push_saved_model(
    saved_model_dir: str,
    model_name: str,
    destination,
    metrics: dict | None = None,
    source: dict | None = None,
) -> ServingPush:
    """Pushes a SavedModel into a serving repository (see the module docstring).

    Identical bytes to the latest version record that version instead of making a new one; the
    configured labels then point at it and retention runs.

    Args:
      saved_model_dir: the SavedModel directory (``<model uri>/Format-Serving``).
      model_name: the model's name in the repository.
      destination: a :class:`components.pusher.config.ServingDestination`.
      metrics: key metrics to record with the version.
      source: where the model came from (artifact uri, ids), recorded as is.
    """
    digest, files = saved_model_digest(saved_model_dir)
    repo = Repository(
        destination.base_directory,
        model_name,
        destination.server_base_directory,
        destination.config_file,
    )
    storage.makedirs(repo.model_dir)
    with storage.lock(repo.model_dir):
        repo = Repository(  # re-read under the lock: another writer may have pushed meanwhile
            destination.base_directory,
            model_name,
            destination.server_base_directory,
            destination.config_file,
        )
        repo._clean_temporaries()
        versions = repo.versions()
        latest = versions[-1] if versions else None
        if latest is not None and (repo.record(latest) or {}).get("digest") == digest:
            version, created = latest, False
            log.info("serving: %s is identical to version %d; no new version", model_name, latest)
        else:
            record = {
                "model_name": model_name,
                "digest": digest,
                "files": len(files),
                "saved_model_bytes": sum(f["length"] for f in files),
                "metrics": dict(metrics or {}),
                "source": dict(source or {}),
            }
            version = repo._adopt_interrupted(digest, record)
            if version is None:
                version = repo._write_version(saved_model_dir, files, record)
            created = True
        for orphan in repo.orphans():
            log.warning(
                "%s has no push record (an interrupted push, or another tool's): never served, "
                "not removed",
                repo.version_dir(orphan),
            )
        labels = list(destination.labels)
        if STABLE not in repo.labels and STABLE not in labels:
            labels.append(STABLE)  # an empty repository's first version is also the stable one
        for label in labels:
            repo.point(label, version)
        removed = repo._retire(destination.keep_last)
        repo.commit()
        for old in removed:  # after the config stopped listing them
            storage.remove_tree(repo.version_dir(old))
    production = storage.join(repo.model_dir, PRODUCTION_FILE)
    return ServingPush(
        model_name=model_name,
        version=version,
        path=repo.version_dir(version),
        created=created,
        digest=digest,
        labels=dict(repo.labels),
        config_path=repo.config_path,
        removed_versions=removed,
        production_path=production if storage.exists(production) else None,
    )


def promote_label(base_directory: str, model_name: str, from_label: str, to_label: str) -> int:
    """Points ``to_label`` at the version ``from_label`` points at (e.g. canary -> stable).

    Returns:
      The version now labelled ``to_label``.
    """
    repo = Repository(base_directory, model_name)
    if not storage.exists(storage.join(repo.model_dir, REPOSITORY_FILE)):
        raise TfxOptError(f"{repo.model_dir} is not a serving repository we pushed to")
    with storage.lock(repo.model_dir):
        repo = Repository(base_directory, model_name)
        if from_label not in repo.labels:
            raise TfxOptError(
                f"{repo.model_dir}: no version is labelled {from_label!r} "
                f"(labels: {', '.join(sorted(repo.labels)) or 'none'})"
            )
        version = repo.labels[from_label]
        repo.point(to_label, version)
        repo.commit()
    return version


def rollback_label(base_directory: str, model_name: str, label: str) -> int:
    """Points ``label`` back at the version it pointed at before.

    Returns:
      The version now labelled ``label``.
    """
    repo = Repository(base_directory, model_name)
    if not storage.exists(storage.join(repo.model_dir, REPOSITORY_FILE)):
        raise TfxOptError(f"{repo.model_dir} is not a serving repository we pushed to")
    with storage.lock(repo.model_dir):
        repo = Repository(base_directory, model_name)
        past = repo.history.get(label, [])
        if len(past) < 2:
            raise TfxOptError(f"{repo.model_dir}: label {label!r} has no previous version")
        target = past[-2]
        if target not in repo.versions():
            raise TfxOptError(f"{repo.model_dir}: version {target} is no longer on disk")
        past.pop()
        repo.labels[label] = target
        repo.commit()
    return target


def read_model_config(path: str):
    """Parses a ModelServerConfig text proto (what TF Serving reads)."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse(storage.read_bytes(path).decode(), config)
    return config
