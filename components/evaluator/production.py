"""The production record: what a Pusher records for the model it pushes, and this gate reads back.

The rules ``*_vs_production`` compare a candidate with it (see ``ProductionConfig``).
"""

from __future__ import annotations

import json

from components.evaluator import latency, rules
from components.evaluator.config import EvaluatorConfig

PRODUCTION_FORMAT = "tfxopt.production_metrics/v1"


def read_production(config: EvaluatorConfig) -> tuple[str, dict | None, str | None]:
    """The production record: (state, record, note).

    state: ``not_configured``, ``available``, ``absent_optional``, ``absent_required`` or
    ``invalid``. The record format is what :func:`production_record` writes.
    """
    path = config.production.metrics_path
    if not path:
        return "not_configured", None, None
    import tensorflow as tf

    if not tf.io.gfile.exists(path):
        if config.production.required:
            return "absent_required", None, f"production metrics {path!r} missing (required)"
        return "absent_optional", None, f"no production metrics at {path!r} yet (optional)"
    try:
        with tf.io.gfile.GFile(path) as f:
            record = json.load(f)
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
    except (ValueError, OSError) as e:
        return "invalid", None, f"production metrics {path!r} unreadable: {e}"
    return "available", record, f"compared with production metrics at {path!r}"


def production_record(candidate: dict, config: EvaluatorConfig, eval_split: str) -> dict:
    """What a Pusher records at its destination for the model it pushes (and this gate reads)."""
    acc = candidate.get("accuracy") or {}
    lat = candidate.get("latency_used") or {}
    size = candidate.get("size") or {}
    record = {
        "format": PRODUCTION_FORMAT,
        "model_name": candidate["name"],
        "flavour": candidate.get("flavour"),
        "sha256": candidate.get("sha256"),
        "accuracy": acc.get(rules.task_metric(config)) if config.task != "regression" else None,
        "mae": acc.get("mae"),
        "rmse": acc.get("rmse"),
        "eval_split": eval_split,
        "eval_examples": acc.get("examples"),
        "latency_source": lat.get("source"),
        "size_bytes": size.get("raw_bytes"),
        "size_gzip_bytes": size.get("gzip_bytes"),
    }
    for key in latency.STAT_KEYS:
        if key in lat:
            record[f"latency_{key}"] = lat[key]
    return {k: v for k, v in record.items() if v is not None}
