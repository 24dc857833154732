"""The report's "what was not optimised and why": the Pruner's and the Clusterer's coverage.

Reads each step's record (``pruning.json``, ``clustering.json``): which layers the step acted
on, the reason for every layer it left (grouped by reason), and its kernel numbers over the
layers it targeted and over every kernel (see :mod:`components.common.layer_report`).
"""

from __future__ import annotations

import html
import json
import os

from components.common.keys import (
    CLUSTERING_RECORD_FILE,
    PRUNING_RECORD_FILE,
    QUANTIZATION_RECORD_FILE,
)

RECORDS = {"Pruner": PRUNING_RECORD_FILE, "Clusterer": CLUSTERING_RECORD_FILE}
COST_RECORDS = {**RECORDS, "Quantizer": QUANTIZATION_RECORD_FILE}
#: Layers a "which layers cost the most" panel shows (the costliest).
MAX_COST_LAYERS = 12


def _read(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def layer_coverage(run) -> list[dict]:
    """One entry per Pruner/Clusterer step whose record has a coverage."""
    found = []
    for step in run.steps:
        filename = RECORDS.get(step.component)
        if filename is None:
            continue
        for artifacts in step.outputs.values():
            for artifact in artifacts:
                record = _read(os.path.join(artifact.uri, filename))
                if record and "coverage" in record:
                    found.append(
                        {
                            "step": step.node_id,
                            "technique": record["coverage"]["technique"],
                            "optimised": record["coverage"]["optimised"],
                            "left_out": record["coverage"]["left_out"],
                            "left_out_by_reason": record["coverage"]["left_out_by_reason"],
                            "kernel_numbers": record.get("kernel_numbers"),
                        }
                    )
    return found


def _costs(record: dict) -> dict | None:
    """A step's per-layer costs, the costliest first: the metric lost when that layer alone is
    optimised (pruning, clustering: one shot, before fine-tuning) or recovered when it alone is
    kept in float (quantization; layers not probed: the debugger's RMSE/scale instead)."""
    control = record.get("accuracy_control") or {}
    spared = list(control.get("spared") or [])
    unit = control.get("unit") or "points"
    sens = record.get("layer_sensitivity") or {}
    one_shot = control.get("one_shot") or (
        sens.get("layers") if sens.get("method") == "one_shot" else None
    )
    if one_shot:
        layers = [
            {"layer": e["layer"], "cost": e["drop"], "spared": e["layer"] in spared}
            for e in one_shot
            if e.get("drop") is not None
        ]
        measure = f"metric lost when optimised alone, one shot ({unit})"
    elif (record.get("layer_sensitivity") or {}).get("layers"):
        sens = record["layer_sensitivity"]
        entries = sens["layers"]
        probed = [e for e in entries if e.get("recovered") is not None]
        if any(e["recovered"] > 0 for e in probed):
            layers = [
                {"layer": e["layer"], "cost": e["recovered"], "spared": e["layer"] in spared}
                for e in probed
            ]
            measure = f"metric recovered when kept in float alone ({sens.get('drop_unit', unit)})"
        else:
            layers = [
                {"layer": e["layer"], "cost": e["rmse_over_scale"], "spared": e["layer"] in spared}
                for e in entries
                if e.get("rmse_over_scale") is not None
            ]
            measure = "int8 error, RMSE / quantization step (0.29: rounding only)"
    else:
        return None
    layers.sort(key=lambda e: -e["cost"])
    return {
        "measure": measure,
        "layers": layers[:MAX_COST_LAYERS],
        "spared": spared,
        "drop_before": control.get("drop_before"),
        "drop_after": control.get("drop_after"),
        "evaluations": control.get("evaluations_used"),
        "within_budget": control.get("within_budget"),
    }


def layer_costs(run) -> list[dict]:
    """One entry per Pruner/Clusterer/Quantizer step that measured its layers' costs."""
    found = []
    for step in run.steps:
        filename = COST_RECORDS.get(step.component)
        if filename is None:
            continue
        for artifacts in step.outputs.values():
            for artifact in artifacts:
                record = _read(os.path.join(artifact.uri, filename))
                costs = _costs(record) if record else None
                if costs and costs["layers"]:
                    found.append({"step": step.node_id, "component": step.component, **costs})
    return found


def costs_html(summary: dict, image: str) -> list[str]:
    """The "which layers cost the most" section: the chart and what each step spared."""
    entries = summary.get("layer_costs") or []
    if not entries:
        return []
    rows = "".join(
        f"<tr><td>{html.escape(e['step'])}</td>"
        f"<td>{html.escape(', '.join(e['spared']) or '-')}</td>"
        f"<td class='num'>{_fmt(e.get('drop_before'))}</td>"
        f"<td class='num'>{_fmt(e.get('drop_after'))}</td>"
        f"<td class='num'>{e.get('evaluations') if e.get('evaluations') is not None else '-'}</td>"
        f"<td>{_budget_text(e.get('within_budget'))}</td></tr>"
        for e in entries
    )
    return [
        "<h2>Which layers cost the most</h2>",
        "<p class='small'>Per step, the layers whose optimisation costs the task's metric most "
        "(hatched: left out or kept in float by accuracy control; docs/accuracy_control.md).</p>",
        image,
        "<table><thead><tr><th>step</th><th>spared</th><th>drop as it was</th>"
        "<th>drop after</th><th>evaluations</th><th>budget</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>",
    ]


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3g}"


def _budget_text(within) -> str:
    return {True: "met", False: "not met (best kept)", None: "no budget"}[within]


def _numbers_line(numbers: dict | None) -> str:
    if not numbers:
        return ""
    t, a = numbers["targeted_layers"], numbers["all_kernels"]
    return (
        f"<p class='small'>Kernel sparsity {100 * t['sparsity']:.1f}% over the "
        f"{t['kernels']} targeted kernels, {100 * a['sparsity']:.1f}% over all {a['kernels']} "
        f"kernels; at most {t['max_unique_values']:,} distinct values in a targeted kernel, "
        f"{a['max_unique_values']:,} in any kernel ({html.escape(str(a['max_unique_values_layer']))}"
        ").</p>"
    )


def html_section(summary: dict) -> list[str]:
    """The section's HTML parts (none when no step recorded a coverage)."""
    entries = summary.get("layer_coverage") or []
    if not entries:
        return []
    parts = ["<h2>What was not optimised, and why</h2>"]
    for entry in entries:
        rows = "".join(
            f"<tr><td>{html.escape(reason)}</td><td class='num'>{len(names)}</td>"
            f"<td class='small'>{html.escape(', '.join(names[:12]))}"
            f"{' ...' if len(names) > 12 else ''}</td></tr>"
            for reason, names in entry["left_out_by_reason"].items()
        )
        parts += [
            f"<h3>{html.escape(entry['step'])}: {entry['technique']} of {entry['optimised']} "
            f"layers, {entry['left_out']} left as they were</h3>",
            _numbers_line(entry.get("kernel_numbers")),
            "<table><thead><tr><th>reason</th><th>layers</th><th>which</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>",
        ]
    return parts
