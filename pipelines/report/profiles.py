"""The figures a model's row shows that come from its Profiler's ``profile.json``.

Sizes, parameters, kernel sparsity and unique values, FLOPs, TFLite weight dtypes, latency (one
and several threads), XNNPACK's share of the graph, throughput, peak memory, the task's metric,
and the per-layer figures the layer plot draws.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict

from components.common.keys import PROFILE_FILE, PROFILE_KEY
from components.common.numbers import get_path


def read_json(path: str):
    """The JSON file at ``path``, or None when it is missing or not JSON."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def run_profiles(run) -> dict[str, tuple[str, dict]]:
    """Model URI (normalised) -> (Profiler node id, its ``profile.json``), for every profile."""
    profiles: dict[str, tuple[str, dict]] = {}
    for step in run.steps:
        for artifact in step.outputs.get(PROFILE_KEY, []):
            record = read_json(os.path.join(artifact.uri, PROFILE_FILE))
            if record and record.get("model_uri"):
                profiles[os.path.normpath(record["model_uri"])] = (step.node_id, record)
    return profiles


def layer_figures(profile: dict | None) -> dict | None:
    """Per-layer parameters (all and nonzero) and FLOPs of a profile (keras side)."""
    per_layer = get_path(profile, "compute", "per_layer")
    tensors = get_path(profile, "parameters", "per_tensor") or []
    if not per_layer:
        return None
    nonzero: dict[str, int] = defaultdict(int)
    for tensor in tensors:
        if tensor.get("layer") is not None:
            nonzero[tensor["layer"]] += int(tensor.get("nonzero", 0))
    layers = [
        {
            "layer": entry["layer"],
            "type": entry.get("type"),
            "parameters": int(entry.get("parameters", 0)),
            "nonzero_parameters": int(nonzero.get(entry["layer"], entry.get("parameters", 0))),
            "flops": int(entry.get("flops", 0)),
        }
        for entry in per_layer
        if entry.get("parameters") or entry.get("flops")
    ]
    totals = {k: sum(e[k] for e in layers) for k in ("parameters", "nonzero_parameters", "flops")}
    for entry in layers:
        for key in ("parameters", "nonzero_parameters", "flops"):
            entry[f"{key}_share"] = entry[key] / totals[key] if totals[key] else 0.0
    return {"layers": layers, "totals": totals}


def peak_memory(profile: dict | None) -> dict | None:
    """Peak resident memory of the TFLite and SavedModel runs (and of the model alone)."""
    memory = get_path(profile, "memory") or {}
    out = {}
    for kind in ("tflite", "saved_model"):
        entry = memory.get(kind) or {}
        if "peak_rss_bytes" in entry:
            out[f"{kind}_peak_rss_bytes"] = entry["peak_rss_bytes"]
            out[f"{kind}_model_peak_rss_bytes"] = entry.get("model_peak_rss_bytes")
    return out or None


def latency_stats(stats: dict | None, source: str | None = None) -> dict | None:
    """The percentiles of a latency record, and which measurement they come from."""
    if not stats:
        return None
    out = {k: stats.get(k) for k in ("mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "runs")}
    out["source"] = source or stats.get("source")
    return out


def profile_entry(profile: dict | None) -> dict:
    """The figures every model row shows that come from its Profiler."""
    if not profile:
        return {}
    kernels = get_path(profile, "parameters", "kernels") or {}
    weight_dtypes = sorted(get_path(profile, "tflite_weights", "summary", "bytes_per_dtype") or {})
    return {
        "saved_model_bytes": get_path(profile, "sizes", "saved_model_bytes"),
        "saved_model_gzip_bytes": get_path(profile, "sizes", "saved_model_gzip_bytes"),
        "tflite_bytes": get_path(profile, "sizes", "tflite_bytes"),
        "tflite_gzip_bytes": get_path(profile, "sizes", "tflite_gzip_bytes"),
        "total_parameters": get_path(profile, "parameters", "total_parameters"),
        "nonzero_parameters": get_path(profile, "parameters", "nonzero_parameters"),
        "kernel_sparsity": kernels.get("sparsity"),
        "max_unique_values_per_kernel": kernels.get("max_unique_values"),
        "flops_per_example": get_path(profile, "compute", "flops_per_example"),
        "tflite_weight_dtypes": weight_dtypes,
        "tflite_io_dtype": get_path(profile, "tflite_io", "input_dtype"),
        "profile_latency_ms": latency_stats(
            get_path(profile, "latency", "tflite_batch1"), "Profiler, sequential"
        ),
        "multi_thread_latency_ms": multi_thread_latency(profile),
        "delegation": delegation_summary(profile),
        "throughput_examples_per_s": get_path(
            profile, "latency", "throughput", "tflite_examples_per_s"
        ),
        "peak_memory": peak_memory(profile),
        "profile_accuracy": profile_metric(profile),
    }


def multi_thread_latency(profile: dict | None) -> dict | None:
    """The Profiler's multi-thread batch-1 percentiles with their thread count (None: not timed)."""
    stats = get_path(profile, "latency", "tflite_batch1_multi_thread")
    if not stats or "p50_ms" not in stats:
        return None
    return {**latency_stats(stats, "Profiler, interleaved"), "num_threads": stats["num_threads"]}


def delegation_summary(profile: dict | None) -> dict | None:
    """How much of the flatbuffer's graph XNNPACK took, and what fell back and why."""
    record = get_path(profile, "delegation")
    if not record or "delegated_share" not in record:
        return None
    keys = ("delegated_share", "delegated_nodes", "nodes", "partitions", "fallback_ops", "reason")
    return {k: record.get(k) for k in keys}


def delegation_text(summary: dict | None) -> str:
    """``69% (9/13 nodes, 1 partition)``, or ``-`` when not measured."""
    if not summary or summary.get("delegated_share") is None:
        return "-"
    parts = summary["partitions"]
    return (
        f"{summary['delegated_share']:.0%} ({summary['delegated_nodes']}/{summary['nodes']} "
        f"nodes, {parts} partition{'' if parts == 1 else 's'})"
    )


def profile_metric(profile: dict | None):
    """The task's metric of a profile's TFLite flavour (top-1 accuracy in older records)."""
    acc = get_path(profile, "accuracy") or {}
    return acc.get("tflite", acc.get("tflite_top1"))


def plot_extras(profile: dict | None) -> dict:
    """What only the plots need of a profile: its latency samples and per-layer figures."""
    return {
        "latency_samples_ms": get_path(profile, "latency", "tflite_batch1", "samples_ms") or [],
        "per_layer": layer_figures(profile),
    }
