"""The key metrics recorded with a push, gathered loosely from what the Evaluator left behind.

Sources, later ones overriding earlier ones: ``evaluation.json`` in the blessing artifact (its
``production_record``, else the selected candidate's numbers), ``production_metrics.json`` in the
blessing artifact (the record our Evaluator writes for exactly this purpose: accuracy,
``latency_<stat>_ms``, ``size_bytes``, ...), numeric custom properties of the blessing with a known
metric name, the config's ``metrics_path`` JSON file, the config's ``metrics`` dict.

The Evaluator's record names the candidate in ``model_name``; here it becomes ``candidate``, since
``model_name`` at a destination is the pushed model's name.
"""

from __future__ import annotations

import json
import math
from collections import deque
from typing import Any

from components.common.errors import ConfigError
from components.common.keys import EVALUATION_FILE, PRODUCTION_METRICS_FILE
from components.pusher import storage

# Names as the Profiler and Evaluator write them; units live in the names.
KEY_METRICS = (
    "accuracy",
    "baseline_accuracy",
    "accuracy_drop",
    "accuracy_drop_points",
    "error",
    "accuracy_delta",
    "accuracy_drop_upper_bound",
    "relative_accuracy_drop",
    "latency_mean_ms",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "baseline_latency_p95_ms",
    "speedup",
    "size_bytes",
    "gzipped_size_bytes",
    "size_gzip_bytes",
    "tflite_bytes",
    "tflite_gzip_bytes",
    "saved_model_bytes",
    "saved_model_gzip_bytes",
    "compression_ratio",
    "sparsity",
    "eval_examples",
)
_SELECTED_KEYS = ("selected", "selected_candidate", "blessed_candidate", "chosen")


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _scan(record: Any) -> dict:
    """The first (shallowest) numeric value of each key metric anywhere in ``record``."""
    found: dict = {}
    queue = deque([record])
    while queue:
        node = queue.popleft()
        if isinstance(node, dict):
            for key, value in node.items():
                if key in KEY_METRICS and key not in found and _number(value) is not None:
                    found[key] = value
            queue.extend(v for v in node.values() if isinstance(v, dict | list))
        elif isinstance(node, list):
            queue.extend(v for v in node if isinstance(v, dict | list))
    return found


def _scalars(record: dict) -> dict:
    """The JSON scalars of a flat record (numbers finite, strings), ``model_name`` -> candidate."""
    out = {}
    for key, value in record.items():
        if isinstance(value, str) or _number(value) is not None:
            out["candidate" if key == "model_name" else key] = value
    return out


def from_evaluation(record: dict) -> dict:
    """Key metrics of the selected candidate in an evaluation record (whole record otherwise)."""
    if isinstance(record.get("production_record"), dict):
        return _scalars(record["production_record"])
    decision = record.get("decision") if isinstance(record.get("decision"), dict) else {}
    selected = next(
        (
            src[k]
            for src in (record, decision)
            for k in _SELECTED_KEYS
            if isinstance(src.get(k), str)
        ),
        None,
    )
    part: Any = record
    candidates = record.get("candidates")
    if selected is not None:
        if isinstance(candidates, dict) and isinstance(candidates.get(selected), dict):
            part = candidates[selected]
        elif isinstance(candidates, list):
            part = next(
                (c for c in candidates if isinstance(c, dict) and c.get("name") == selected),
                record,
            )
    found = _scan(part)
    if selected is not None:
        found["candidate"] = selected
    return found


def collect(
    blessing_uri: str | None = None,
    blessing_properties: dict | None = None,
    metrics_path: str | None = None,
    metrics: dict | None = None,
) -> dict:
    """Merges the metric sources (see the module docstring) into one flat dict.

    Raises:
      ConfigError: when ``metrics_path`` is set but is not a readable JSON object.
    """
    out: dict = {}
    if blessing_uri:
        path = storage.join(blessing_uri, EVALUATION_FILE)
        if storage.exists(path):
            try:
                out.update(from_evaluation(json.loads(storage.read_bytes(path))))
            except (ValueError, OSError):
                pass  # metrics are informative here; the gate already judged the model
        path = storage.join(blessing_uri, PRODUCTION_METRICS_FILE)
        if storage.exists(path):
            try:
                record = json.loads(storage.read_bytes(path))
                out.update(_scalars(record) if isinstance(record, dict) else {})
            except (ValueError, OSError):
                pass
    for key, value in (blessing_properties or {}).items():
        if key in KEY_METRICS and _number(value) is not None:
            out[key] = value
    if metrics_path:
        try:
            loaded = json.loads(storage.read_bytes(metrics_path))
        except (OSError, ValueError) as e:
            raise ConfigError(
                f"pusher.metrics_path {metrics_path!r}: not readable JSON ({e})"
            ) from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"pusher.metrics_path {metrics_path!r}: expected a JSON object")
        out.update(loaded)
    out.update(metrics or {})
    return out
