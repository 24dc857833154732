"""Readable summaries of a finished run: the steps, and the profiles side by side."""

from __future__ import annotations

import json
import os

from components.common.keys import (
    EVALUATION_FILE,
    EVALUATION_KEY,
    IMPORT_RECORD_FILE,
    IMPORTED_MODEL_KEY,
    PROFILE_FILE,
    PROFILE_KEY,
    PUSH_FILE,
    PUSHED_MODEL_KEY,
)
from components.common.numbers import fmt_bytes, fmt_ms, fmt_percent
from pipelines.report.profiles import delegation_summary, delegation_text


def _ms(stats: dict | None, key: str) -> str:
    return fmt_ms(stats.get(key)) if stats else "-"


def profile_rows(record: dict) -> dict[str, str]:
    """The figures of one profile as label -> text (a failed candidate's: why it has none)."""
    if record.get("failed"):
        return {
            "SavedModel size (gzip)": record.get("note") or "not profiled",
            "TFLite size (gzip)": f"({record.get('summary', 'failed')})"[:60],
        }
    sizes = record["sizes"]
    params = record.get("parameters", {})
    kernels = params.get("kernels", {})
    lat = record["latency"]
    tfl = lat.get("tflite_batch1")
    sm = lat.get("saved_model_batch1")
    mem = record.get("memory", {})
    acc = record.get("accuracy", {})
    return {
        "SavedModel size (gzip)": f"{fmt_bytes(sizes['saved_model_bytes'])} ({fmt_bytes(sizes['saved_model_gzip_bytes'])})",
        "TFLite size (gzip)": f"{fmt_bytes(sizes['tflite_bytes'])} ({fmt_bytes(sizes['tflite_gzip_bytes'])})",
        "TFLite I/O dtype": record.get("tflite_io", {}).get("input_dtype", "-"),
        "parameters": f"{params.get('total_parameters', 0):,}",
        "kernel sparsity": fmt_percent(kernels.get("sparsity")),
        "max unique values/kernel": f"{kernels.get('max_unique_values', '-'):,}"
        if kernels
        else "-",
        "FLOPs / example": f"{record.get('compute', {}).get('flops_per_example', 0):,}",
        "TFLite p50/p95/p99 ms": f"{_ms(tfl, 'p50_ms')} / {_ms(tfl, 'p95_ms')} / {_ms(tfl, 'p99_ms')}",
        "TFLite p50 ms, threads": _threads_row(tfl, lat.get("tflite_batch1_multi_thread")),
        "XNNPACK delegated": delegation_text(delegation_summary(record)),
        "SavedModel p50 ms": _ms(sm, "p50_ms"),
        "TFLite throughput": (
            f"{lat['throughput']['tflite_examples_per_s']:,.0f} ex/s @{lat['throughput']['batch_size']}"
            if "tflite_examples_per_s" in lat.get("throughput", {})
            else "-"
        ),
        "peak memory TFLite (+model)": _mem(mem.get("tflite")),
        "peak memory SavedModel (+model)": _mem(mem.get("saved_model")),
        **metric_row(acc),
    }


def _threads_row(single: dict | None, multi: dict | None) -> str:
    """``0.05 @1 / 0.03 @2``: the batch-1 p50 at each thread count timed."""
    cells = [
        f"{_ms(stats, 'p50_ms')} @{stats['num_threads']}"
        for stats in (single, multi)
        if stats and "p50_ms" in stats and "num_threads" in stats
    ]
    return " / ".join(cells) or "-"


def fallback_lines(profiles: dict[str, dict]) -> list[str]:
    """One line per profiled model whose graph XNNPACK did not take whole: which ops and why."""
    lines = []
    for name, record in profiles.items():
        reason = (delegation_summary(record) or {}).get("reason")
        if reason and not record.get("failed"):
            lines.append(f"{name}: {reason}")
    return lines


def metric_row(acc: dict) -> dict[str, str]:
    """``<task's metric> SavedModel / TFLite`` -> values (percentages for accuracies)."""
    from components.common import metrics

    name = acc.get("metric", "top1_accuracy") if acc else "top1_accuracy"
    label = "accuracy" if name == "top1_accuracy" else metrics.metric_label(name)
    if not acc:
        return {f"{label} SavedModel / TFLite": "-"}
    saved = acc.get("saved_model", acc.get("saved_model_top1"))
    lite = acc.get("tflite", acc.get("tflite_top1"))
    show = (
        fmt_percent if metrics.is_accuracy(name) else (lambda x: "-" if x is None else f"{x:.4g}")
    )
    return {f"{label} SavedModel / TFLite": f"{show(saved)} / {show(lite)} (n={acc['examples']})"}


def _mem(entry: dict | None) -> str:
    if not entry or "peak_rss_bytes" not in entry:
        return "-"
    return f"{fmt_bytes(entry['peak_rss_bytes'])} (+{fmt_bytes(entry['model_peak_rss_bytes'])})"


def table(columns: dict[str, dict[str, str]]) -> str:
    """A plain-text table: rows are labels, one column per named profile."""
    names = list(columns)
    labels = list(next(iter(columns.values())))
    label_w = max(len(label) for label in labels)
    widths = [max(len(n), *(len(columns[n].get(label, "-")) for label in labels)) for n in names]
    lines = [
        " " * label_w + "  " + "  ".join(n.ljust(w) for n, w in zip(names, widths, strict=True))
    ]
    lines.append("-" * len(lines[0]))
    for label in labels:
        cells = [columns[n].get(label, "-").ljust(w) for n, w in zip(names, widths, strict=True)]
        lines.append(label.ljust(label_w) + "  " + "  ".join(cells))
    return "\n".join(lines)


def load_profiles(run) -> dict[str, dict]:
    """node id -> profile record, for every ModelProfile the run produced."""
    profiles = {}
    for step in run.steps:
        for artifact in step.outputs.get(PROFILE_KEY, []):
            with open(os.path.join(artifact.uri, PROFILE_FILE)) as f:
                profiles[step.node_id] = json.load(f)
    return profiles


def _first_output_record(run, key: str, filename: str) -> dict | None:
    for step in run.steps:
        for artifact in step.outputs.get(key, []):
            path = os.path.join(artifact.uri, filename)
            if os.path.exists(path):
                with open(path) as f:
                    return json.load(f)
    return None


def evaluation_record(run) -> dict | None:
    """The Evaluator's ``evaluation.json`` of this run, when the run has an Evaluator."""
    return _first_output_record(run, EVALUATION_KEY, EVALUATION_FILE)


def all_candidates_failed(run) -> str | None:
    """The gate's reason when every candidate failed before it could be judged, else None."""
    evaluation = evaluation_record(run)
    decision = (evaluation or {}).get("decision") or {}
    return decision.get("reason") if decision.get("all_candidates_failed") else None


def push_record(run) -> dict | None:
    """The Pusher's ``push.json`` of this run, when the run has a Pusher."""
    return _first_output_record(run, PUSHED_MODEL_KEY, PUSH_FILE)


def push_lines(record: dict) -> list[str]:
    if not record.get("pushed"):
        return [
            f"Push: nothing pushed ({record.get('reason') or record.get('not_pushed_reason') or 'not blessed'})"
        ]
    lines = ["Push:"]
    for dest in record.get("serving", []):
        state = "new version" if dest.get("created") else "identical to the existing version"
        labels = ", ".join(f"{k}={v}" for k, v in sorted(dest.get("labels", {}).items()))
        lines.append(
            f"  serving  {dest['path']}  version {dest['version']} ({state}; labels {labels})"
        )
    for dest in record.get("ota", []):
        lines.append(
            f"  OTA      {dest['manifest_path']}  channel {dest['channel']}, model version "
            f"{dest['model_version']}, release sequence {dest['sequence']}, key {dest['key_id']}"
        )
    return lines


def gate_rule_texts(evaluator, task: str) -> list[str]:
    """The default recipe's gate rules in words: the task's metric drop, the speed-up, ..."""
    from components.common import metrics

    rules = evaluator.rules
    metric = metrics.metric_label(metrics.PRIMARY_METRIC[task])
    if task == "regression":
        metric = evaluator.regression_metric.upper()
    texts = []
    if rules.max_accuracy_drop_points is not None:
        texts.append(f"{metric} drop <= {rules.max_accuracy_drop_points:g} point(s)")
    if rules.max_relative_accuracy_drop is not None:
        texts.append(f"{metric} drop <= {rules.max_relative_accuracy_drop:.0%} of the baseline's")
    if rules.min_accuracy is not None:
        texts.append(f"{metric} >= {rules.min_accuracy:.1%}")
    if rules.max_error_increase is not None:
        texts.append(f"{metric} increase <= {rules.max_error_increase:g}")
    if rules.max_relative_error_increase is not None:
        texts.append(
            f"{metric} increase <= {rules.max_relative_error_increase:.0%} of the baseline's"
        )
    if rules.min_speedup is not None:
        texts.append(f"{rules.latency_statistic} latency speed-up >= {rules.min_speedup:g}x")
    return texts


def default_recipe_text(config, task: str = "multiclass") -> str:
    """What the default recipe will do for a ``task`` model: its candidates, the gate's rules,
    where it pushes."""
    from pipelines.recipes import describe

    lines = [
        f"no --config: the default recipe for a {task} model (pipelines/configs/default.yaml, "
        f"tasks.{task}), candidates:"
    ]
    lines += [f"  {line}" for line in describe(config.plan())]
    lines.append(
        f"gate: {' and '.join(gate_rule_texts(config.evaluator, task))} vs the baseline; of "
        f"those that pass, the {config.evaluator.objective} is chosen"
    )
    if config.pusher is None:
        lines.append("push: none (give --serving DIR to push the chosen model)")
    else:
        lines.append(
            f"push: {config.pusher.serving[0].base_directory} as {config.pusher.model_name!r}"
        )
    return "\n".join(lines)


def choice_text(evaluation: dict) -> str:
    """What was chosen and why, and why each other candidate was not."""
    decision = evaluation["decision"]
    lines = [
        f"chose {decision['selected']!r}: {decision['reason']}"
        if decision["blessed"]
        else f"chose nothing: {decision['reason']}"
    ]
    ranking = decision.get("ranking") or []
    for candidate in evaluation["candidates"]:
        name = candidate["name"]
        if name == decision.get("selected"):
            continue
        if candidate.get("rejected_because"):
            why = "rejected: " + "; ".join(candidate["rejected_because"])
        elif name in ranking:
            why = f"passed, ranked {ranking.index(name) + 1} of {len(ranking)}"
        else:
            why = "not eligible"
        lines.append(f"  {name}: {why}")
    return "\n".join(lines)


def import_record(run) -> dict | None:
    """The ModelImporter's ``import.json`` of this run (how the checkpoint was brought in)."""
    return _first_output_record(run, IMPORTED_MODEL_KEY, IMPORT_RECORD_FILE)


def import_line(record: dict) -> str:
    """One line: where the model came from and what the import did to it."""
    source = "Keras 3" if record.get("source_format") == "keras3" else "tf_keras"
    line = f"Model: {source} {record.get('keras_version', '?')}, {record.get('import_action')}"
    if record.get("flattened_models"):
        line += f" (nested models flattened: {', '.join(record['flattened_models'])})"
    if record.get("import_action") != "copied":
        line += (
            f"; max output difference {record.get('max_abs_diff', float('nan')):.3g} on "
            f"{record.get('verified_examples')} eval examples (tolerance {record.get('tolerance')})"
        )
    return line


def signatures_line(record: dict) -> str | None:
    """One line: the serving signatures every candidate and the pushed version keep."""
    kept = record.get("serving_signatures")
    if not kept:
        return None

    def tensors(side: dict) -> str:
        return ", ".join(
            f"{name} {t['dtype']}{list(t['shape'])}" for name, t in sorted(side.items())
        )

    described = "; ".join(
        f"{s['key']} ({s['kind']}: {tensors(s['inputs'])} -> {tensors(s['outputs'])})" for s in kept
    )
    return f"Serving signatures kept in every candidate: {described}"


def render(run) -> str:
    """The text printed at the end of ``tfxopt run``."""
    lines = [f"Run {run.run_id}  (outputs in {run.output_dir})", ""]
    for step in run.steps:
        lines.append(f"  {step.node_id:<28} {step.state:<9} {step.duration_s:7.1f} s")
    imported = import_record(run)
    if imported is not None:
        lines += ["", import_line(imported)]
        kept = signatures_line(imported)
        if kept:
            lines.append(kept)
    profiles = load_profiles(run)
    if profiles:
        lines += ["", table({name: profile_rows(rec) for name, rec in profiles.items()})]
        fallbacks = fallback_lines(profiles)
        if fallbacks:
            lines += ["", "Graphs XNNPACK did not take whole:", *[f"  {f}" for f in fallbacks]]
    evaluation = evaluation_record(run)
    if evaluation is not None:
        from components.evaluator.evaluator import rules_table

        task = evaluation.get("task")
        if task:
            lines += ["", f"Task: {task['kind']} (metric {task.get('metric')})"]
        lines += ["", "Gate (every rule per candidate):", rules_table(evaluation)]
        lines += ["", choice_text(evaluation)]
    pushed = push_record(run)
    if pushed is not None:
        lines += ["", *push_lines(pushed)]
    return "\n".join(lines)
