"""Batch-1 latency: measured here (interleaved, after warm-up) or read from an external benchmark.

External latency files (a ``tfxopt.LatencyReport`` artifact's ``latency.json``, or a file written
by hand from a device run) use one small JSON format::

    {
      "format": "tfxopt.latency/v1",
      "source": "Pixel 7, benchmark_model 2.16, --num_threads=4",   # shown in the report
      "models": {
        "baseline": {"mean_ms": 1.31, "p50_ms": 1.2, "p95_ms": 1.5, "p99_ms": 1.9},
        "float16":  {"benchmark_model_output": "... Inference timings in us: Init: 3051, ..."},
        "int8":     {"benchmark_model_log": "int8.log"}
      }
    }

Model names are the Evaluator's (``baseline`` and the candidate names). An entry gives the figures
in milliseconds (any of ``mean_ms``, ``min_ms``, ``max_ms``, ``p50_ms``, ``p90_ms``, ``p95_ms``,
``p99_ms``), or the text output of TFLite's ``benchmark_model`` inline
(``benchmark_model_output``) or as a file beside the JSON (``benchmark_model_log``). From that text
the ``Inference (avg)`` figure becomes ``mean_ms`` (benchmark_model prints no percentiles, so rules
on such figures need ``latency_statistic: mean``); the statistics line
``count=.. first=.. curr=.. min=.. max=.. avg=.. std=..`` (microseconds) adds min/max/std and any
percentile keys it carries. An entry may name the ``sha256`` of the flatbuffer it measured; when it
does not match the model judged here, the figure is not used.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re

import numpy as np

from components.common import measure
from components.common.errors import DataError
from components.evaluator.models import TFLITE, Predictor, PreparedModel

FORMAT = "tfxopt.latency/v1"
REPORT_FILE = "latency.json"
STAT_KEYS = ("mean_ms", "min_ms", "max_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms")

_TIMINGS = re.compile(r"Inference timings in us:(?P<body>[^\n]*)")
_TIMING_ITEM = re.compile(r"(?P<name>[A-Za-z][A-Za-z ()]*?)\s*:\s*(?P<value>[0-9.eE+-]+)")
_STAT_LINE = re.compile(r"count=\d+[^\n]*avg=[^\n]*")
_KEY_VALUE = re.compile(r"(\w+)=([0-9.eE+-]+)")


def host_description() -> str:
    """Where a measurement ran: host name, CPU model and core count."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{platform.node()} ({cpu}, {os.cpu_count()} cores)"


def measure_interleaved(
    models: list[PreparedModel],
    sample_input,
    warmup_runs: int,
    timed_runs: int,
    num_threads: int,
    multi_thread_threads: int | None = None,
) -> dict[str, dict]:
    """Batch-1 latency of several models in this process, interleaved A B A B, after warm-up.

    With ``multi_thread_threads`` (other than ``num_threads``) every model is also timed with
    that many interpreter threads, in the same interleaved rounds, under ``"multi_thread"``.

    Returns:
      name -> {mean_ms, min_ms, p50_ms, p90_ms, p95_ms, p99_ms, runs, num_threads[,
      multi_thread: {... the same at multi_thread_threads}]} or {"error": ...} for a model that
      cannot run.
    """
    threads = [num_threads]
    if multi_thread_threads and multi_thread_threads != num_threads:
        threads.append(multi_thread_threads)
    calls, results = {}, {}
    for model in models:
        try:
            # A SavedModel runs on TensorFlow's own thread pools: timed once.
            for count in threads if model.flavour == TFLITE else threads[:1]:
                predictor = Predictor(model, num_threads=count)
                call = predictor.batch1_call(sample_input)
                call()  # fails here, not in the middle of the timing loop
                calls[(model.name, count)] = (call, predictor)
        except Exception as e:  # noqa: BLE001 - recorded: the latency rules then fail closed
            results[model.name] = {"error": f"{type(e).__name__}: {e}"[:300]}
            calls = {key: value for key, value in calls.items() if key[0] != model.name}
    if calls:
        samples = measure.time_interleaved(
            {key: call for key, (call, _) in calls.items()}, warmup_runs, timed_runs
        )
        for (name, count), values in samples.items():
            stats = measure.summarize_ms(values)
            stats["num_threads"] = count
            if count == num_threads:
                results[name] = {**stats, **results.get(name, {})}
            else:
                results.setdefault(name, {})["multi_thread"] = stats
    return {m.name: results[m.name] for m in models}


def parse_benchmark_model_output(text: str) -> dict:
    """Latency figures (ms) from the text output of TFLite's ``benchmark_model``.

    Raises:
      DataError: when the text holds no inference timing.
    """
    stats: dict = {}
    matches = list(_TIMINGS.finditer(text))
    if matches:
        match = matches[-1]  # the last report is the timed run's
        items = {
            m.group("name").strip().lower(): float(m.group("value"))
            for m in _TIMING_ITEM.finditer(match.group("body"))
        }
        if "inference (avg)" in items:
            stats["mean_ms"] = items["inference (avg)"] / 1000
    lines = _STAT_LINE.findall(text)
    if lines:
        values = {k: float(v) for k, v in _KEY_VALUE.findall(lines[-1])}
        names = {"avg": "mean_ms", "min": "min_ms", "max": "max_ms", "std": "std_ms"}
        names.update({p: f"{p}_ms" for p in ("p50", "p90", "p95", "p99")})
        names["median"] = "p50_ms"
        for key, value in values.items():
            if key in names:
                stats.setdefault(names[key], value / 1000)
        if "count" in values:
            stats["runs"] = int(values["count"])
    if "mean_ms" not in stats and not any(k in stats for k in STAT_KEYS):
        raise DataError(
            "no 'Inference timings in us: ... Inference (avg): ...' or 'count=.. avg=..' line in "
            "the benchmark_model output"
        )
    return stats


def _entry_stats(entry: dict, base_dir: str, where: str) -> dict:
    import tensorflow as tf

    if not isinstance(entry, dict):
        raise DataError(f"{where}: expected an object of latency figures")
    if "benchmark_model_output" in entry:
        stats = parse_benchmark_model_output(str(entry["benchmark_model_output"]))
    elif "benchmark_model_log" in entry:
        path = os.path.join(base_dir, str(entry["benchmark_model_log"]))
        if not tf.io.gfile.exists(path):
            raise DataError(f"{where}.benchmark_model_log: {path!r} does not exist")
        with tf.io.gfile.GFile(path) as f:
            stats = parse_benchmark_model_output(f.read())
    else:
        stats = {}
        for key in (*STAT_KEYS, "std_ms"):
            if key in entry:
                value = entry[key]
                if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                    raise DataError(f"{where}.{key}: must be a positive number, got {value!r}")
                stats[key] = float(value)
        if not any(k in stats for k in STAT_KEYS):
            raise DataError(f"{where}: names none of {', '.join(STAT_KEYS)}")
    for key in ("sha256", "flavour", "runs", "num_threads"):
        if key in entry:
            stats[key] = entry[key]
    return stats


def read_latency_file(path: str) -> dict:
    """Reads an external latency JSON (format above).

    Returns:
      ``{"source": label, "path": path, "models": {name: figures}}``.
    Raises:
      DataError: missing file or malformed content, naming what is wrong.
    """
    import tensorflow as tf

    if not tf.io.gfile.exists(path):
        raise DataError(f"latency file {path!r} does not exist")
    with tf.io.gfile.GFile(path) as f:
        try:
            doc = json.load(f)
        except json.JSONDecodeError as e:
            raise DataError(f"latency file {path!r} is not valid JSON: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("models"), dict):
        raise DataError(f"latency file {path!r} needs a 'models' object (format {FORMAT})")
    if doc.get("format", FORMAT) != FORMAT:
        raise DataError(f"latency file {path!r} has format {doc['format']!r}, expected {FORMAT}")
    source = str(doc.get("source") or f"external file {path}")
    base_dir = os.path.dirname(path)
    # A model the benchmark could not time (a LatencyBenchmark step records {"error": ...} for a
    # candidate whose own branch failed) has no figure: that model is unmeasured, the rest of the
    # file still counts.
    unmeasured = {
        name: str(entry["error"])
        for name, entry in doc["models"].items()
        if isinstance(entry, dict) and "error" in entry
    }
    models = {
        name: _entry_stats(entry, base_dir, f"{path}: models.{name}")
        for name, entry in doc["models"].items()
        if name not in unmeasured
    }
    return {"source": source, "path": path, "models": models, "unmeasured": unmeasured}


def benchmark_record(
    models: list[PreparedModel], sample_input, warmup_runs, timed_runs, num_threads
) -> dict:
    """A ``latency.json`` record (format above) measured on this machine."""
    results = measure_interleaved(models, sample_input, warmup_runs, timed_runs, num_threads)
    record_models = {}
    for model in models:
        entry = dict(results[model.name])
        entry.update(flavour=model.flavour, sha256=model.sha256, uri=model.uri)
        record_models[model.name] = entry
    return {
        "format": FORMAT,
        "source": f"LatencyBenchmark step on {host_description()}, "
        f"{num_threads} thread(s), batch 1, {timed_runs} interleaved runs",
        "models": record_models,
    }


def sample_input(input_shapes: tuple[tuple[int, ...], ...], first_example=None):
    """A batch-1 input: the first eval example when given, else zeros of the input shapes."""
    if first_example is not None:
        arrays = first_example if isinstance(first_example, tuple) else (first_example,)
        picked = tuple(np.asarray(a[:1]) for a in arrays)  # in its dtype: token ids stay ints
    else:
        picked = tuple(np.zeros([1, *shape], np.float32) for shape in input_shapes)
    return picked if len(picked) > 1 else picked[0]
