"""The gate's decision on plain numbers: the metrics the rules read, rules as data, selection.

No TensorFlow, no TFX: plain dicts and numbers in and out, tested in milliseconds. The paired
comparison of each candidate with the baseline (drop, interval, warnings) is
:mod:`components.evaluator.paired`.
"""

from __future__ import annotations

import math

from components.common.numbers import finite as _finite
from components.evaluator.config import (
    LATENCY_RULES,
    PRODUCTION_RULES,
    THRESHOLD_RULES,
    EvaluatorConfig,
    RulesConfig,
)

# rule -> (metric it reads, comparison). "<=": value must not exceed the threshold.
RULE_METRICS: dict[str, tuple[str, str]] = {
    "max_accuracy_drop_points": ("accuracy_drop_points", "<="),
    "max_relative_accuracy_drop": ("relative_accuracy_drop", "<="),
    "min_accuracy": ("top1_accuracy", ">="),
    "max_error_increase": ("error_increase", "<="),
    "max_relative_error_increase": ("relative_error_increase", "<="),
    "max_latency_ms": ("latency_ms", "<="),
    "min_speedup": ("speedup", ">="),
    "max_size_bytes": ("size_bytes", "<="),
    "min_compression_ratio": ("compression_ratio", ">="),
    "max_accuracy_drop_vs_production_points": ("accuracy_drop_vs_production_points", "<="),
    "max_latency_vs_production_ratio": ("latency_vs_production_ratio", "<="),
    "max_size_vs_production_ratio": ("size_vs_production_ratio", "<="),
}
# Drop metrics that switch to the upper confidence bound with accuracy_drop_bound: upper_confidence.
UPPER_BOUND_METRICS = {
    "accuracy_drop_points",
    "relative_accuracy_drop",
    "error_increase",
    "relative_error_increase",
}
assert set(RULE_METRICS) == set(THRESHOLD_RULES)


def task_metric(config: EvaluatorConfig) -> str:
    """The accuracy-like metric the rules read for the config's task (top-1 accuracy by default)."""
    from components.common.metrics import PRIMARY_METRIC

    return PRIMARY_METRIC.get(config.task or "", "top1_accuracy")


def is_regression(config: EvaluatorConfig) -> bool:
    return config.task == "regression"


def _ratio(numerator, denominator) -> float | None:
    if not (_finite(numerator) and _finite(denominator)) or denominator <= 0:
        return None
    return numerator / denominator


def derive_metrics(
    candidate: dict,
    baseline: dict,
    comparison: dict | None,
    production: dict | None,
    config: EvaluatorConfig,
) -> dict:
    """The flat metric set the rules read, for one candidate.

    Args:
      candidate / baseline: measured figures, ``{"accuracy": {...}, "latency": {...} | None,
        "size": {"raw_bytes", "gzip_bytes"}}``; latency holds the figures of one source,
        ``{"p95_ms": ..., "source": ...}``, already chosen so both come from the same source.
      comparison: the paired comparison (classification_ or regression_comparison), or None.
      production: the production record (see ProductionConfig), or None.
    Returns:
      metric name -> value (None when it could not be measured).
    """
    rules = config.rules
    stat_key = f"{rules.latency_statistic}_ms"
    size_key = "gzip_bytes" if rules.size_measure == "gzip" else "raw_bytes"
    acc = candidate.get("accuracy") or {}
    base_acc = baseline.get("accuracy") or {}
    lat = candidate.get("latency") or {}
    base_lat = baseline.get("latency") or {}
    size = candidate.get("size") or {}
    base_size = baseline.get("size") or {}
    m: dict = {}
    metric = task_metric(config)
    if not is_regression(config):
        m[metric] = acc.get(metric)
        m[f"baseline_{metric}"] = base_acc.get(metric)
        if comparison:
            m["accuracy_drop_points"] = comparison["drop_points"]
            m["relative_accuracy_drop"] = comparison["relative_drop"]
            m["accuracy_drop_points_upper"] = comparison["interval"]["drop_points"][1]
            m["relative_accuracy_drop_upper"] = comparison["interval"]["relative_drop"][1]
    else:
        metric = config.regression_metric
        m["error"] = acc.get(metric)
        m["baseline_error"] = base_acc.get(metric)
        if comparison:
            m["error_increase"] = comparison["increase"]
            m["relative_error_increase"] = comparison["relative_increase"]
            m["error_increase_upper"] = comparison["interval"]["increase"][1]
            m["relative_error_increase_upper"] = comparison["interval"]["relative_increase"][1]
    m["latency_ms"] = lat.get(stat_key)
    m["latency_num_threads"] = lat.get("num_threads")
    m["baseline_latency_ms"] = base_lat.get(stat_key)
    m["speedup"] = _ratio(base_lat.get(stat_key), lat.get(stat_key))
    m["size_bytes"] = size.get(size_key)
    m["baseline_size_bytes"] = base_size.get(size_key)
    m["compression_ratio"] = _ratio(base_size.get(size_key), size.get(size_key))
    if production is not None:
        prod_acc = production.get("accuracy")
        if _finite(prod_acc) and _finite(m.get(metric)):
            m["accuracy_drop_vs_production_points"] = 100 * (prod_acc - m[metric])
        else:
            m["accuracy_drop_vs_production_points"] = None
        m["latency_vs_production_ratio"] = _ratio(
            m["latency_ms"], production.get(f"latency_{stat_key}")
        )
        prod_size_key = "size_gzip_bytes" if rules.size_measure == "gzip" else "size_bytes"
        m["size_vs_production_ratio"] = _ratio(m["size_bytes"], production.get(prod_size_key))
    return {k: (float(v) if _finite(v) else None) for k, v in m.items()}


# Relative slack for float rounding only: 100 * (0.975 - 0.97) is 0.50000000000000044, and a
# 0.5-point threshold is meant to pass it.
TOLERANCE = 1e-9


def compare(value: float, op: str, threshold: float) -> bool:
    """``value op threshold`` with :data:`TOLERANCE` of rounding slack."""
    slack = TOLERANCE * max(1.0, abs(threshold))
    return value <= threshold + slack if op == "<=" else value >= threshold - slack


def check_rules(
    metrics: dict, rules: RulesConfig, production_state: str, accuracy_metric: str = "top1_accuracy"
) -> list[dict]:
    """Every configured rule against the metrics: value, threshold, verdict.

    Args:
      accuracy_metric: the task's accuracy-like metric ``min_accuracy`` reads.
      production_state: ``available``, ``absent_optional`` (rules vs production are skipped and
        say so) or ``absent_required``/``invalid`` (they fail).
    Returns:
      One entry per configured rule: rule, metric, op, threshold, value, passed (True, False or
      None when skipped), detail.
    """
    results = []
    for rule in rules.configured():
        threshold = getattr(rules, rule)
        metric, op = RULE_METRICS[rule]
        if rule == "min_accuracy":
            metric = accuracy_metric
        if metric in UPPER_BOUND_METRICS and rules.accuracy_drop_bound == "upper_confidence":
            metric = f"{metric}_upper"
        value = metrics.get(metric)
        entry = {"rule": rule, "metric": metric, "op": op, "threshold": threshold, "value": value}
        measured_as = ""
        if rule in LATENCY_RULES:
            entry["latency_statistic"] = rules.latency_statistic
            entry["num_threads"] = threads = metrics.get("latency_num_threads")
            measured_as = f" ({latency_setting(rules.latency_statistic, threads)})"
        if rule in PRODUCTION_RULES and production_state == "absent_optional":
            entry.update(passed=None, detail="skipped: no production metrics (optional)")
        elif not _finite(value):
            why = "unmeasured"
            if rule in PRODUCTION_RULES and production_state != "available":
                why = f"production metrics {production_state.replace('_', ' ')}"
            entry.update(passed=False, detail=f"fail closed: {metric} is {why}{measured_as}")
        else:
            passed = compare(value, op, threshold)
            entry.update(
                passed=bool(passed),
                detail=f"{metric} {value:.6g} {op} {threshold:.6g}{measured_as}"
                if passed
                else f"{metric} {value:.6g} violates {op} {threshold:.6g}{measured_as}",
            )
        results.append(entry)
    return results


def latency_setting(statistic: str, num_threads) -> str:
    """How a latency rule's figures were measured: ``p95, batch 1, 1 thread``."""
    if _finite(num_threads):
        count = int(num_threads)
        threads = f"{count} thread" + ("" if count == 1 else "s")
    else:
        threads = "threads not stated"
    return f"{statistic}, batch 1, {threads}"


def objective_metric(config: EvaluatorConfig) -> tuple[str, int]:
    """(metric, direction) of the configured objective; direction +1 ascending, -1 descending."""
    return _OBJECTIVES[config.objective](config)


_OBJECTIVES = {
    "smallest": lambda c: ("size_bytes", 1),
    "fastest": lambda c: ("latency_ms", 1),
    "most_accurate": lambda c: ("error", 1) if is_regression(c) else (task_metric(c), -1),
}
_TIE_ORDER = ("most_accurate", "smallest", "fastest")


def judge_candidate(
    metrics: dict,
    config: EvaluatorConfig,
    error: str | None = None,
    production_state: str = "not_configured",
) -> dict:
    """Rules and requirements for one candidate; ``eligible`` only when everything holds."""
    rules = check_rules(metrics, config.rules, production_state, task_metric(config))
    requirements = [
        {
            "check": "loaded_and_evaluated",
            "passed": error is None,
            "detail": "ok" if error is None else f"fail closed: {error}",
        }
    ]
    if production_state in ("absent_required", "invalid"):
        requirements.append(
            {
                "check": "production_metrics",
                "passed": False,
                "detail": f"fail closed: production metrics {production_state.replace('_', ' ')}",
            }
        )
    objective, _ = objective_metric(config)
    requirements.append(
        {
            "check": f"objective_metric ({objective})",
            "passed": _finite(metrics.get(objective)),
            "detail": "ok"
            if _finite(metrics.get(objective))
            else f"fail closed: {objective} is unmeasured, the candidate cannot be ranked",
        }
    )
    evaluated = [r for r in rules if r["passed"] is not None]
    if not evaluated:
        requirements.append(
            {
                "check": "rules_configured",
                "passed": False,
                "detail": "fail closed: no rule was configured or checked, the gate blesses nothing",
            }
        )
    failures = [r["detail"] for r in requirements if not r["passed"]]
    failures += [f"{r['rule']}: {r['detail']}" for r in rules if r["passed"] is False]
    return {
        "rules": rules,
        "requirements": requirements,
        "eligible": not failures,
        "rejected_because": failures,
    }


CANDIDATE_BUILT = "candidate_built"


def failed_candidate_verdict(summary: str) -> dict:
    """The verdict on a candidate whose own step failed (``failed: verification, ...``).

    No rule is checked (nothing was measured): the one failed requirement says why.
    """
    return {
        "rules": [],
        "requirements": [{"check": CANDIDATE_BUILT, "passed": False, "detail": summary}],
        "eligible": False,
        "failed": True,
        "rejected_because": [summary],
    }


def _rank_key(metrics: dict, name: str, config: EvaluatorConfig) -> tuple:
    order = [config.objective] + [o for o in _TIE_ORDER if o != config.objective]
    key = []
    for objective in order:
        metric, direction = _OBJECTIVES[objective](config)
        value = metrics.get(metric)
        # Unmeasured tie-breakers sort last (the primary objective is required to be measured).
        key.append(direction * value if _finite(value) else math.inf)
    return (*key, name)


def select(judged: list[dict], config: EvaluatorConfig) -> dict:
    """Picks at most one candidate among the eligible ones, deterministically.

    Args:
      judged: ``[{"name", "metrics", "eligible", "rejected_because"}, ...]``.
    Returns:
      ``{"blessed", "selected" (name or None), "reason", "ranking" (eligible names, best first)}``.
    """
    if not config.rules.configured():
        return {
            "blessed": False,
            "selected": None,
            "ranking": [],
            "reason": "no rules configured: the gate blesses nothing (fail closed); set at least "
            "one threshold under rules",
        }
    eligible = [c for c in judged if c["eligible"]]
    if not eligible:
        why = "; ".join(
            f"{c['name']}: {', '.join(c['rejected_because']) or 'not eligible'}" for c in judged
        )
        all_failed = bool(judged) and all(c.get("failed") for c in judged)
        reason = f"no candidate passed every rule ({why or 'no candidates'})"
        if all_failed:
            reason = f"every candidate failed before it could be judged ({why})"
        return {
            "blessed": False,
            "selected": None,
            "ranking": [],
            "reason": reason,
            "all_candidates_failed": all_failed,
        }
    ranked = sorted(eligible, key=lambda c: _rank_key(c["metrics"], c["name"], config))
    best = ranked[0]
    metric, _ = objective_metric(config)
    value = best["metrics"][metric]
    return {
        "blessed": True,
        "selected": best["name"],
        "ranking": [c["name"] for c in ranked],
        "reason": f"{best['name']!r} passed every rule and is {config.objective.replace('_', ' ')} "
        f"({metric} = {value:.6g}) among {len(eligible)} passing candidate(s) "
        f"{[c['name'] for c in ranked]}",
    }
