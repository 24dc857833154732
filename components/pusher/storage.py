"""Destination file operations: atomic where the filesystem allows it, documented where it does not.

Local paths (plain or ``file://``) go through ``os``: files are written to a temporary sibling,
fsynced and published with ``os.replace`` (atomic on POSIX), directories are published with one
``rename``, and a ``flock`` on ``<dir>/.lock`` serialises writers on the same machine or NFS-less
shared volume. Every other scheme (``gs://``, ``s3://``, ``hdfs://``, ``ram://`` ...) goes through
``tf.io.gfile``: there a rename is a copy plus a delete, so nothing relies on it; instead every
object is written whole (a single-object write is atomic on GCS and S3) and a small completion
record written last is what readers look for. Object stores get no lock: run one writer per model
at a time there (a pipeline's push step is serial; two pipelines pushing the same model to the same
bucket must be serialised by their orchestrator).

TensorFlow is imported only for non-local paths, so the device client and the CLI stay light.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import posixpath
import shutil
import time
import uuid
from collections.abc import Iterator

CHUNK_BYTES = 1 << 20
LOCK_FILE = ".lock"
TMP_PREFIX = ".tmp-"


def is_local(path: str) -> bool:
    """True for plain paths and ``file://`` URLs (atomic rename and flock are available)."""
    return "://" not in path or path.startswith("file://")


def _os_path(path: str) -> str:
    return path[len("file://") :] if path.startswith("file://") else path


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def join(base: str, *parts: str) -> str:
    """Joins path parts with ``/`` (also for URLs, where ``os.path`` rules do not apply)."""
    if is_local(base):
        return os.path.join(base, *parts)
    return posixpath.join(base, *parts)


def exists(path: str) -> bool:
    return os.path.exists(_os_path(path)) if is_local(path) else _gfile().exists(path)


def isdir(path: str) -> bool:
    return os.path.isdir(_os_path(path)) if is_local(path) else _gfile().isdir(path)


def listdir(path: str) -> list[str]:
    """Names directly under ``path`` (no trailing slashes), sorted; [] when it does not exist."""
    if not isdir(path):
        return []
    if is_local(path):
        return sorted(os.listdir(_os_path(path)))
    return sorted(name.rstrip("/") for name in _gfile().listdir(path))


def makedirs(path: str) -> None:
    if is_local(path):
        os.makedirs(_os_path(path), exist_ok=True)
    else:
        _gfile().makedirs(path)


def open_read(path: str):
    """A binary reader for ``path``."""
    return open(_os_path(path), "rb") if is_local(path) else _gfile().GFile(path, "rb")


def read_bytes(path: str, limit: int | None = None) -> bytes:
    """Reads a whole file; raises ValueError when it is larger than ``limit`` bytes."""
    with open_read(path) as f:
        data = f.read() if limit is None else f.read(limit + 1)
    if limit is not None and len(data) > limit:
        raise ValueError(f"{path} is larger than {limit} bytes")
    return data


def _fsync_dir(path: str) -> None:
    # The rename itself must survive a power cut, not only the file's bytes.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _local_temp_sibling(path: str) -> str:
    directory, name = os.path.split(path)
    return os.path.join(directory, f"{TMP_PREFIX}{name}-{uuid.uuid4().hex[:12]}")


def _gfile_writer(path: str):
    gfile = _gfile()
    gfile.makedirs(posixpath.dirname(path))  # HDFS needs parents; GCS/S3 ignore them
    if path.startswith("ram://") and gfile.exists(path):
        # TF's in-memory filesystem (used by tests) appends instead of truncating on rewrite.
        gfile.remove(path)
    return gfile.GFile(path, "wb")


def atomic_write(path: str, data: bytes) -> None:
    """Replaces ``path`` with ``data`` so a reader sees the old bytes or the new, never a mix.

    Local: temporary sibling, fsync, ``os.replace``. Object stores: one object write, which GCS
    and S3 publish whole (the object appears only when the upload completes).
    """
    if not is_local(path):
        with _gfile_writer(path) as f:
            f.write(data)
        return
    target = _os_path(path)
    os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
    tmp = _local_temp_sibling(target)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    _fsync_dir(os.path.dirname(target) or ".")


def copy_file(src: str, dst: str, atomic: bool = True) -> tuple[str, int]:
    """Copies ``src`` to ``dst`` streaming, returning the (sha256, length) of the bytes copied.

    With ``atomic`` and a local ``dst`` the copy goes through a temporary sibling and a rename;
    object-store writes are whole-object by nature.
    """
    digest = hashlib.sha256()
    length = 0
    local_dst = is_local(dst)
    target = _os_path(dst) if local_dst else dst
    write_to = _local_temp_sibling(target) if (local_dst and atomic) else target
    if local_dst:
        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
    try:
        with open_read(src) as reader:
            writer = open(write_to, "wb") if local_dst else _gfile_writer(write_to)
            with writer:
                while chunk := reader.read(CHUNK_BYTES):
                    digest.update(chunk)
                    length += len(chunk)
                    writer.write(chunk)
                if local_dst:
                    writer.flush()
                    os.fsync(writer.fileno())
        if write_to != target:
            os.replace(write_to, target)
    except BaseException:
        if local_dst and write_to != target:
            with contextlib.suppress(OSError):
                os.remove(write_to)
        raise
    return digest.hexdigest(), length


def file_sha256(path: str) -> tuple[str, int]:
    """(sha256 hex, length) of a file, streamed."""
    digest = hashlib.sha256()
    length = 0
    with open_read(path) as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
            length += len(chunk)
    return digest.hexdigest(), length


def walk_files(root: str) -> list[str]:
    """Relative ``/``-separated paths of every file under ``root``, sorted."""
    out = []
    if is_local(root):
        base = _os_path(root)
        for directory, _, files in os.walk(base):
            for name in files:
                rel = os.path.relpath(os.path.join(directory, name), base)
                out.append(rel.replace(os.sep, "/"))
    else:
        gfile = _gfile()
        for directory, _, files in gfile.walk(root):
            for name in files:
                full = posixpath.join(directory, name)
                out.append(posixpath.relpath(full, root.rstrip("/")))
    return sorted(out)


def remove_tree(path: str) -> None:
    """Removes a directory tree (or a file) if it exists."""
    if not exists(path):
        return
    if not isdir(path):
        remove_file(path)
    elif is_local(path):
        shutil.rmtree(_os_path(path))
    else:
        _gfile().rmtree(path)


def remove_file(path: str) -> None:
    if not exists(path):
        return
    if is_local(path):
        os.remove(_os_path(path))
    else:
        _gfile().remove(path)


def publish_dir(src: str, dst: str) -> None:
    """Renames a fully written local directory to its final name in one step.

    Raises:
      FileExistsError: when ``dst`` already exists (the caller picks another name).
    """
    source, target = _os_path(src), _os_path(dst)
    if os.path.exists(target):
        raise FileExistsError(errno.EEXIST, "destination exists", dst)
    try:
        os.rename(source, target)  # fails on a non-empty target directory: a cheap compare-and-swap
    except OSError as e:
        if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise FileExistsError(errno.EEXIST, "destination exists", dst) from None
        raise
    _fsync_dir(os.path.dirname(target) or ".")


@contextlib.contextmanager
def lock(directory: str, timeout_s: float = 600.0) -> Iterator[None]:
    """Holds an exclusive lock on ``directory`` for one writer (local filesystems only).

    Uses ``flock`` on ``<directory>/.lock``: released by the kernel if the process dies, so a killed
    push never leaves a stale lock. On object stores this is a no-op (see the module docstring).

    Raises:
      TimeoutError: when another writer holds the lock longer than ``timeout_s``.
    """
    if not is_local(directory):
        yield
        return
    import fcntl

    path = os.path.join(_os_path(directory), LOCK_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"another push holds {path} for more than {timeout_s:.0f} s"
                    ) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
