"""What one process keeps of the models it has read, keyed by the SavedModel's content.

Under ``LocalDagRunner`` every step runs in one process, and several read the same SavedModel:
the baseline Profiler, the Pruner and the Evaluator read the input model; each Quantizer branch
reads the Clusterer's output, and each candidate Profiler reads a byte copy of it. Loading a
MobileNet-class model with tf_keras takes 15-40 s on a shared 2-core machine, converting it to
float32 TFLite as long. Here a model read once, or its float32 conversion, is reused while the
SavedModel's bytes are the same (the key is a SHA-256 of every file of the directory, so a changed
model is never mistaken for a cached one), and only by callers that do not change it. On Kubeflow
each step is its own process and nothing is shared: the cache only saves work, it changes no result.

This module imports nothing of ours (a leaf): model_io and tflite use it.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable

MAX_ENTRIES_PER_KIND = 2  # the input model and the one being optimised; bounds memory
_CHUNK = 1 << 20
_lock = threading.Lock()
_entries: OrderedDict[tuple[str, str], object] = OrderedDict()
stats = {"hits": 0, "misses": 0}


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


def get_or_load(kind: str, saved_model_dir: str, load: Callable[[], object]):
    """``load()``'s result for this SavedModel's content, from memory when it was loaded before.

    Args:
      kind: what is kept (e.g. "keras", "saved_model", "float32_tflite"); each kind keeps its
        :data:`MAX_ENTRIES_PER_KIND` most recent entries.
      saved_model_dir: the SavedModel directory the value is made from.
      load: makes the value; its exceptions propagate and nothing is kept.
    """
    key = (kind, digest(saved_model_dir))
    with _lock:
        if key in _entries:
            _entries.move_to_end(key)
            stats["hits"] += 1
            return _entries[key]
    value = load()
    with _lock:
        stats["misses"] += 1
        _entries[key] = value
        same_kind = [k for k in _entries if k[0] == kind]
        for old in same_kind[:-MAX_ENTRIES_PER_KIND]:
            del _entries[old]
    return value


def clear() -> None:
    """Forgets every entry (tests; or to free memory)."""
    with _lock:
        _entries.clear()
        stats.update(hits=0, misses=0)
