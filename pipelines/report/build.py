"""The run report's numbers: ``summary.json`` (format ``tfxopt.run_report/v1``) from a run.

Everything comes from what the run recorded: ML Metadata gives the steps, their states, durations
and the artifacts they wrote (:mod:`pipelines.metadata.reader`); the artifacts give the numbers
(each Profiler's ``profile.json``, the Evaluator's ``evaluation.json``, the Pusher's
``push.json``). One function per section of the summary; :func:`build_summary` puts them together.
"""

from __future__ import annotations

import datetime
import os

from components.common.keys import PUSH_FILE, PUSHED_MODEL_KEY
from components.common.numbers import BASELINE, finite, finite_or_none, get_path, pareto_front
from pipelines.metadata.reader import RunInfo, artifact_properties
from pipelines.report import layers as layer_report
from pipelines.report.profiles import (
    latency_stats,
    plot_extras,
    profile_entry,
    profile_metric,
    read_json,
    run_profiles,
)

SUMMARY_FORMAT = "tfxopt.run_report/v1"


def _first_record(run, key: str, filename: str) -> tuple[dict | None, str | None]:
    for step in run.steps:
        for artifact in step.outputs.get(key, []):
            record = read_json(os.path.join(artifact.uri, filename))
            if record is not None:
                return record, step.node_id
    return None, None


def _run_section(run: RunInfo, task: dict) -> dict:
    """The run itself: its names, its steps (state, duration, upstream) and its task."""
    steps = [
        {
            "node_id": s.node_id,
            "component": s.component,
            "state": s.state,
            "duration_s": round(s.duration_s, 3),
            "upstream": s.upstream,
        }
        for s in run.steps
    ]
    return {
        "format": SUMMARY_FORMAT,
        "pipeline_name": run.pipeline_name,
        "run_id": run.run_id,
        "output_dir": run.output_dir,
        "generated_at": datetime.datetime.now().isoformat(timespec="seconds"),
        "steps": steps,
        "total_step_time_s": round(sum(s.duration_s for s in run.steps), 3),
        "failed_steps": [s.node_id for s in run.steps if s.state == "FAILED"],
        "task": task,
    }


def _oriented(model: dict, task: dict):
    """The model's metric, negated when lower is better, so the Pareto front keeps 'higher'."""
    value = get_path(model, "metrics", "score")
    if not finite(value):
        return None
    return value if task["higher_is_better"] else -value


def task_summary(evaluation: dict | None, profiles: dict) -> dict:
    """The task and how its metric reads: ``{"kind", "metric", "label", "percent",
    "higher_is_better", "value_key"}`` (``value_key``: the metric the models' rows hold)."""
    from components.common import metrics

    task = (evaluation or {}).get("task")
    kind = task.get("kind") if task else None
    if kind is None:
        profile = next((p for _, p in profiles.values() if get_path(p, "accuracy")), None)
        kind = get_path(profile, "accuracy", "task") or "multiclass"
    metric = metrics.PRIMARY_METRIC[kind]
    if kind == "regression" and evaluation is not None:
        metric = get_path(evaluation, "config", "regression_metric") or metric
    return {
        "kind": kind,
        "metric": metric,
        "label": metrics.metric_label(metric),
        "percent": metrics.is_accuracy(metric),
        "higher_is_better": kind != "regression",
        "value_key": "error" if kind == "regression" else metric,
    }


def _lineage(run, node_id: str | None) -> list[str]:
    """The node ids upstream of ``node_id`` (inclusive), nearest first."""
    by_id = {s.node_id: s for s in run.steps}
    order, queue, seen = [], [node_id], set()
    while queue:
        current = queue.pop(0)
        if current is None or current in seen or current not in by_id:
            continue
        seen.add(current)
        order.append(current)
        queue.extend(by_id[current].upstream)
    return order


def _optimisations(run, producer: str | None) -> dict:
    """What the chain that made a candidate did: its stages, clusters, target sparsity, mode."""
    by_id = {s.node_id: s for s in run.steps}
    stages, out = [], {}
    for node in reversed(_lineage(run, producer)):
        step = by_id[node]
        props = {}
        for artifacts in step.outputs.values():
            for artifact in artifacts:
                props.update(artifact_properties(artifact))
        component = step.component
        if component in ("Distiller", "Pruner", "Clusterer", "Quantizer"):
            stages.append(node)
        if component == "Clusterer" and props.get("number_of_clusters") is not None:
            out["clusters"] = props["number_of_clusters"]
        if component == "Pruner" and props.get("target_sparsity") is not None:
            out["target_sparsity"] = props["target_sparsity"]
        if component == "Quantizer" and props.get("mode") is not None:
            out["quantization_mode"] = props["mode"]
    out["stages"] = stages
    return out


def _producers(run) -> dict[str, str]:
    """artifact URI -> the node that wrote it (first writer wins: the Evaluator re-exports)."""
    out: dict[str, str] = {}
    for step in run.steps:
        for artifacts in step.outputs.values():
            for artifact in artifacts:
                out.setdefault(os.path.normpath(artifact.uri), step.node_id)
    return out


def _threshold_lines(rules: dict, baseline_metrics: dict) -> dict:
    """The gate's thresholds as lines on the plots' axes (accuracy fraction, size, latency)."""
    base_acc = baseline_metrics.get("score")
    base_size = baseline_metrics.get("size_bytes")
    base_latency = baseline_metrics.get("latency_ms")
    suffix = (
        " (upper CI)" if rules.get("accuracy_drop_bound", "point") == "upper_confidence" else ""
    )
    measure = rules.get("size_measure", "gzip")
    stat = rules.get("latency_statistic", "p95")
    no_baseline = 1.0  # for rules whose line does not depend on the baseline
    # (rule, axis, the baseline figure it needs, where its line is, its label), in drawing order
    specs = (
        ("max_accuracy_drop_points", "accuracy", base_acc,
         lambda t: base_acc - t / 100, lambda t: f"max drop {t:g} pt{suffix}"),
        ("max_relative_accuracy_drop", "accuracy", base_acc,
         lambda t: base_acc * (1 - t), lambda t: f"max relative drop {100 * t:g}%{suffix}"),
        ("min_accuracy", "accuracy", no_baseline,
         lambda t: t, lambda t: f"min accuracy {100 * t:g}%"),
        ("max_size_bytes", "size_bytes", no_baseline,
         lambda t: t, lambda t: f"max size ({measure})"),
        ("min_compression_ratio", "size_bytes", base_size,
         lambda t: base_size / t, lambda t: f"min compression {t:g}x"),
        ("max_latency_ms", "latency_ms", no_baseline,
         lambda t: t, lambda t: f"max {stat} {t:g} ms"),
        ("min_speedup", "latency_ms", base_latency,
         lambda t: base_latency / t, lambda t: f"min speed-up {t:g}x"),
    )  # fmt: skip
    lines: dict[str, list] = {"accuracy": [], "size_bytes": [], "latency_ms": []}
    for rule, axis, base, value, label in specs:
        threshold = rules.get(rule)
        if finite(threshold) and finite(base):
            lines[axis].append({"rule": rule, "value": value(threshold), "label": label(threshold)})
    return lines


def _baseline_metrics(evaluation: dict, task: dict, rules_config: dict) -> dict:
    """The baseline's score, size and latency as the gate compared them."""
    base = evaluation["baseline"]
    first_metrics = next((c.get("metrics") or {} for c in evaluation["candidates"]), {})
    metrics = {
        "score": get_path(base, "accuracy", task["metric"]),
        "size_bytes": first_metrics.get("baseline_size_bytes"),
        "latency_ms": first_metrics.get("baseline_latency_ms"),
    }
    if metrics["size_bytes"] is None:
        size = base.get("size") or {}
        key = "gzip_bytes" if rules_config.get("size_measure", "gzip") == "gzip" else "raw"
        metrics["size_bytes"] = size.get(key if key == "gzip_bytes" else "raw_bytes")
    return metrics


def _baseline_row(evaluation: dict, metrics: dict, profiles: dict, producers: dict) -> dict:
    """The gated run's baseline model row."""
    base = evaluation["baseline"]
    uri = os.path.normpath(base.get("uri", ""))
    profiler, profile = profiles.get(uri, (None, None))
    return {
        "name": BASELINE,
        "role": "baseline",
        "uri": base.get("uri"),
        "producer": producers.get(uri),
        "profiler": profiler,
        "flavour": base.get("flavour"),
        "size": base.get("size"),
        "accuracy": metrics["score"],
        "metrics": metrics,
        "latency_ms": latency_stats(base.get("latency_measured"), "Evaluator, interleaved"),
        **profile_entry(profile),
    }


def _verdicts(cand: dict, decision: dict) -> dict:
    """A candidate's standing at the gate: its rules, requirements and why it was not chosen."""
    rules = cand.get("rules") or []
    requirements = cand.get("requirements") or []
    return {
        "rules": rules,
        "requirements": requirements,
        "passed_all": bool(rules or requirements)
        and all(r.get("passed") is not False for r in rules)
        and all(r.get("passed") for r in requirements),
        "eligible": cand.get("eligible"),
        "selected": decision.get("selected") == cand["name"],
        "rejected_because": cand.get("rejected_because") or [],
        "failure": _failure(cand.get("failure")),
        "warnings": cand.get("warnings") or [],
    }


def _candidate_row(run, cand: dict, decision: dict, context: dict) -> dict:
    """A gated candidate's row: the Evaluator's figures, its verdicts, its chain, its profile."""
    uri = os.path.normpath(cand.get("uri", ""))
    profiler, profile = context["profiles"].get(uri, (None, None))
    producer = context["producers"].get(uri)
    metrics = cand.get("metrics") or {}
    value_key = context["task"]["value_key"]
    return {
        "name": cand["name"],
        "role": "candidate",
        "uri": cand.get("uri"),
        "producer": producer,
        "profiler": profiler,
        "flavour": cand.get("flavour"),
        "size": cand.get("size"),
        "accuracy": metrics.get(value_key),
        "accuracy_drop_points": metrics.get("accuracy_drop_points"),
        "accuracy_drop_interval_points": get_path(cand, "comparison", "interval", "drop_points"),
        "metrics": {
            **{k: finite_or_none(v) for k, v in metrics.items()},
            "score": finite_or_none(metrics.get(value_key)),
        },
        "latency_ms": latency_stats(cand.get("latency_used")),
        "speedup": metrics.get("speedup"),
        "compression_ratio": metrics.get("compression_ratio"),
        **_verdicts(cand, decision),
        **_optimisations(run, producer),
        **profile_entry(profile),
    }


def _gate_section(evaluation: dict, evaluator: str | None, baseline_metrics: dict) -> dict:
    """The Evaluator's decision, its rules and their lines on the plots."""
    rules_config = get_path(evaluation, "config", "rules") or {}
    decision = evaluation["decision"]
    return {
        "evaluator": evaluator,
        "blessed": bool(decision.get("blessed")),
        "selected": decision.get("selected"),
        "objective": decision.get("objective"),
        "ranking": decision.get("ranking") or [],
        "reason": decision.get("reason"),
        "rules": {k: v for k, v in rules_config.items() if v is not None},
        "rules_configured": evaluation.get("rules_configured") or [],
        "eval_examples": get_path(evaluation, "eval", "examples"),
        "warnings": evaluation.get("warnings") or [],
        "thresholds": _threshold_lines(rules_config, baseline_metrics),
    }


def _gated_models(run, evaluation: dict, evaluator: str | None, context: dict):
    """(model rows, gate section) of a run with an Evaluator: the baseline, then its candidates."""
    rules_config = get_path(evaluation, "config", "rules") or {}
    metrics = _baseline_metrics(evaluation, context["task"], rules_config)
    models = [_baseline_row(evaluation, metrics, context["profiles"], context["producers"])]
    decision = evaluation["decision"]
    models += [_candidate_row(run, c, decision, context) for c in evaluation["candidates"]]
    return models, _gate_section(evaluation, evaluator, metrics)


def _profiled_models(run, context: dict) -> list[dict]:
    """Without a gate, every profiled model is a row; the baseline is the BaselineProfiler's."""
    models = []
    for uri, (node, profile) in context["profiles"].items():
        is_base = node == "BaselineProfiler"
        producer = context["producers"].get(uri)
        lat = latency_stats(get_path(profile, "latency", "tflite_batch1"), "Profiler")
        sizes = profile.get("sizes") or {}
        models.append(
            {
                "name": BASELINE if is_base else node.removeprefix("Profiler_"),
                "role": "baseline" if is_base else "candidate",
                "uri": uri,
                "producer": producer,
                "profiler": node,
                "flavour": "tflite",
                "size": {
                    "raw_bytes": sizes.get("tflite_bytes"),
                    "gzip_bytes": sizes.get("tflite_gzip_bytes"),
                },
                "accuracy": profile_metric(profile),
                "metrics": {
                    "score": profile_metric(profile),
                    "size_bytes": sizes.get("tflite_gzip_bytes"),
                    "latency_ms": (lat or {}).get("p95_ms"),
                },
                "latency_ms": lat,
                **({} if is_base else _optimisations(run, producer)),
                **profile_entry(profile),
            }
        )
    models.sort(key=lambda m: m["role"] != "baseline")
    return models


def _add_accuracy_drops(models: list[dict], task: dict) -> None:
    """The drop in points from the baseline, on candidate rows the Evaluator gave none."""
    base_row = next((m for m in models if m["role"] == "baseline"), None)
    if base_row is None or not task["percent"]:
        return
    for m in models:
        if m["role"] == "candidate" and "accuracy_drop_points" not in m:
            if finite(m.get("accuracy")) and finite(base_row.get("accuracy")):
                m["accuracy_drop_points"] = 100 * (base_row["accuracy"] - m["accuracy"])


def _pareto(models: list[dict], task: dict) -> dict:
    """Per cost axis (size, latency), the models no other model beats on cost and metric."""
    return {
        axis: pareto_front(
            {m["name"]: (get_path(m, "metrics", axis), _oriented(m, task)) for m in models}
        )
        for axis in ("size_bytes", "latency_ms")
    }


def _plot_extras(models: list[dict], profiles: dict) -> dict:
    """Model name -> what only the plots need of its profile."""
    return {
        m["name"]: plot_extras(profiles.get(os.path.normpath(m.get("uri") or ""), (None, None))[1])
        for m in models
    }


def build_summary(run: RunInfo) -> tuple[dict, dict]:
    """The report's numbers, and what only the plots need (latency samples, per-layer figures).

    Returns:
      ``(summary, extras)``: ``summary`` is what ``summary.json`` holds; ``extras`` maps model
      name -> ``{"latency_samples_ms": [...], "per_layer": {...}}``.
    """
    from components.evaluator.constants import EVALUATION_FILE, EVALUATION_KEY

    profiles = run_profiles(run)
    evaluation, evaluator = _first_record(run, EVALUATION_KEY, EVALUATION_FILE)
    push, _ = _first_record(run, PUSHED_MODEL_KEY, PUSH_FILE)
    task = task_summary(evaluation, profiles)
    context = {"profiles": profiles, "producers": _producers(run), "task": task}
    summary = _run_section(run, task)
    if evaluation is not None:
        models, summary["gate"] = _gated_models(run, evaluation, evaluator, context)
    else:
        models = _profiled_models(run, context)
    _add_accuracy_drops(models, task)
    summary["models"] = models
    summary["pareto"] = _pareto(models, task)
    summary["chosen"] = _chosen(summary)
    summary["layer_coverage"] = layer_report.layer_coverage(run)
    summary["layer_costs"] = layer_report.layer_costs(run)
    from pipelines.report.console import import_record

    imported = import_record(run)
    summary["serving_signatures"] = (imported or {}).get("serving_signatures") or []
    if push is not None:
        summary["push"] = _push_summary(push)
    return summary, _plot_extras(models, profiles)


def _failure(failure: dict | None) -> dict | None:
    """What the report says of a candidate whose own step failed: step, where, summary, reason."""
    if not failure:
        return None
    keys = ("step", "component", "summary", "reason", "error_type")
    return {k: failure.get(k) for k in keys if failure.get(k) is not None}


def _chosen(summary: dict) -> str | None:
    """The candidate the per-layer plot shows: the blessed one, else the best-ranked one."""
    gate = summary.get("gate") or {}
    if gate.get("selected"):
        return gate["selected"]
    if gate.get("ranking"):
        return gate["ranking"][0]
    candidates = [m["name"] for m in summary["models"] if m["role"] == "candidate"]
    return candidates[0] if candidates else None


def _push_summary(push: dict) -> dict:
    return {
        "pushed": bool(push.get("pushed")),
        "reason": push.get("reason") or push.get("not_pushed_reason"),
        "model_name": push.get("model_name"),
        "candidate": get_path(push, "metrics", "candidate"),
        "serving": [
            {
                "path": d.get("path"),
                "version": d.get("version"),
                "created": d.get("created"),
                "labels": d.get("labels") or {},
                "removed_versions": d.get("removed_versions") or [],
            }
            for d in push.get("serving") or []
        ],
        "ota": [
            {
                "channel": d.get("channel"),
                "manifest_path": d.get("manifest_path"),
                "model_version": d.get("model_version"),
                "manifest_sequence": d.get("sequence"),
                "created": d.get("created"),
                "key_id": d.get("key_id"),
            }
            for d in push.get("ota") or []
        ],
    }
