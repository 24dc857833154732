"""What one process keeps of the models it has read, keyed by the SavedModel's content.

Under ``LocalDagRunner`` every step runs in one process, and several read the same SavedModel:
the baseline Profiler, the Pruner and the Evaluator read the input model; each Quantizer branch
reads the Clusterer's output, and each candidate Profiler reads a byte copy of it. Loading a
MobileNet-class model with tf_keras takes 15-40 s on a shared 2-core machine, converting it to
float32 TFLite as long. Here a model read once, or its float32 conversion, is reused while the
SavedModel's bytes are the same (the key is a SHA-256 of every file of the directory, so a changed
model is never mistaken for a cached one), and only by callers that do not change it. A step that
has just saved a model of built-in layers leaves the object it saved here (:func:`put`), so the
next step reads it from memory instead of loading it. A Keras model is kept with a fingerprint of
its config and weights, checked on every hit: a shared model someone changed is loaded again. On
Kubeflow each step is its own process and nothing is shared: the cache only saves work, it changes
no result.

This module imports nothing of ours (a leaf): model_io and tflite use it.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable

MAX_ENTRIES_PER_KIND = 3  # the input model, the one being optimised and its input; bounds memory
_CHUNK = 1 << 20
_lock = threading.Lock()
_entries: OrderedDict[tuple[str, str], tuple[object, str | None]] = OrderedDict()
stats = {"hits": 0, "misses": 0, "changed": 0}


def digest(saved_model_dir: str) -> str:
    """SHA-256 over the relative paths and bytes of every file under ``saved_model_dir``."""
    import tensorflow as tf

    sha = hashlib.sha256()
    for root, _, files in sorted(tf.io.gfile.walk(saved_model_dir)):
        for name in sorted(files):
            full = os.path.join(root, name)
            sha.update(os.path.relpath(full, saved_model_dir).encode() + b"\0")
            with tf.io.gfile.GFile(full, "rb") as f:
                while chunk := f.read(_CHUNK):
                    sha.update(chunk)
    return sha.hexdigest()


def get_or_load(
    kind: str,
    saved_model_dir: str,
    load: Callable[[], object],
    fingerprint: Callable[[object], str] | None = None,
):
    """``load()``'s result for this SavedModel's content, from memory when it was loaded before.

    Args:
      kind: what is kept (e.g. "keras", "saved_model", "float32_tflite"); each kind keeps its
        :data:`MAX_ENTRIES_PER_KIND` most recent entries.
      saved_model_dir: the SavedModel directory the value is made from.
      load: makes the value; its exceptions propagate and nothing is kept.
      fingerprint: for a value that can be changed in place (a Keras model): what it holds now.
        A kept value whose fingerprint has changed since it was kept (someone trained or edited
        the shared object) is dropped and loaded again.
    """
    key = (kind, digest(saved_model_dir))
    with _lock:
        entry = _entries.get(key)
    if entry is not None:
        value, kept_fingerprint = entry
        if fingerprint is None or fingerprint(value) == kept_fingerprint:
            with _lock:
                if key in _entries:
                    _entries.move_to_end(key)
                stats["hits"] += 1
            return value
        with _lock:
            _entries.pop(key, None)
            stats["changed"] += 1
    value = load()
    with _lock:
        stats["misses"] += 1
    _keep(key, value, fingerprint)
    return value


def put(
    kind: str, saved_model_dir: str, value, fingerprint: Callable[[object], str] | None = None
) -> None:
    """Keeps ``value`` as what ``saved_model_dir`` holds: a step that has just written a model
    hands the object it saved to the next step of this process, which then does not load it.

    Only for values that are exactly what loading the directory gives (e.g. a tf_keras model
    of built-in layers, rebuilt from its config on load); the key is the content digest of the
    directory as written, and ``fingerprint`` (see :func:`get_or_load`) catches a value changed
    after it was written.
    """
    _keep((kind, digest(saved_model_dir)), value, fingerprint)


def _keep(key: tuple[str, str], value, fingerprint) -> None:
    entry = (value, fingerprint(value) if fingerprint is not None else None)
    with _lock:
        _entries[key] = entry
        _entries.move_to_end(key)
        same_kind = [k for k in _entries if k[0] == key[0]]
        for old in same_kind[:-MAX_ENTRIES_PER_KIND]:
            del _entries[old]


def clear() -> None:
    """Forgets every entry (tests; or to free memory)."""
    with _lock:
        _entries.clear()
        stats.update(hits=0, misses=0, changed=0)
