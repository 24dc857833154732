"""Honest measurements shared by the Profiler and the Evaluator: sizes, latency percentiles."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import time
from collections.abc import Callable

import numpy as np

PERCENTILES = (50, 90, 95, 99)


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask: a container's or a pinned worker's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def dir_bytes(path: str) -> int:
    """Bytes of every file under ``path``."""
    import tensorflow as tf

    total = 0
    for root, _, files in tf.io.gfile.walk(path):
        for name in files:
            total += tf.io.gfile.stat(os.path.join(root, name)).length
    return total


def gzipped_bytes(data: bytes) -> int:
    """Size of ``data`` gzipped at level 9 (what an OTA download of the file costs)."""
    return len(gzip.compress(data, compresslevel=9, mtime=0))


def gzipped_dir_bytes(path: str) -> int:
    """Size of a deterministic gzipped tar of a directory (what shipping the directory costs).

    Read through ``tf.io.gfile``, so ``gs://`` and ``s3://`` artifacts are measured too; names are
    sorted and times, owners and modes fixed, so the same files give the same size anywhere.
    """
    import tensorflow as tf

    files = []
    for root, _, names in tf.io.gfile.walk(path):
        files += [os.path.join(root, name) for name in names]
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=9, mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w") as tar:
            for full in sorted(files):
                with tf.io.gfile.GFile(full, "rb") as f:
                    data = f.read()
                info = tarfile.TarInfo(os.path.relpath(full, path))
                info.size = len(data)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(data))
    return len(buffer.getvalue())


def summarize_ms(samples_ms: np.ndarray | list[float]) -> dict[str, float]:
    """mean and p50/p90/p95/p99 (milliseconds) of latency samples."""
    arr = np.asarray(samples_ms, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("no latency samples")
    stats = {"mean_ms": float(arr.mean()), "min_ms": float(arr.min())}
    for p in PERCENTILES:
        stats[f"p{p}_ms"] = float(np.percentile(arr, p))
    stats["runs"] = int(arr.size)
    return stats


def time_calls(fn: Callable[[], object], warmup_runs: int, timed_runs: int) -> np.ndarray:
    """Calls ``fn`` ``warmup_runs`` times untimed, then ``timed_runs`` times; returns ms per call."""
    for _ in range(warmup_runs):
        fn()
    samples = np.empty(timed_runs, dtype=np.float64)
    for i in range(timed_runs):
        start = time.perf_counter_ns()
        fn()
        samples[i] = (time.perf_counter_ns() - start) / 1e6
    return samples


def time_interleaved(
    fns: dict[str, Callable[[], object]], warmup_runs: int, timed_runs: int
) -> dict[str, np.ndarray]:
    """Times several models in one process, interleaved (A B C A B C ...), after warm-up.

    Interleaving spreads frequency scaling, cache and noisy-neighbour effects evenly over the
    models, so their ratio is fair even when absolute numbers drift.
    """
    names = list(fns)
    for _ in range(warmup_runs):
        for name in names:
            fns[name]()
    samples = {name: np.empty(timed_runs, dtype=np.float64) for name in names}
    for i in range(timed_runs):
        order = names if i % 2 == 0 else names[::-1]
        for name in order:
            start = time.perf_counter_ns()
            fns[name]()
            samples[name][i] = (time.perf_counter_ns() - start) / 1e6
    return samples
