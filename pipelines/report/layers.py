"""The report's "what was not optimised and why": the Pruner's and the Clusterer's coverage.

Reads each step's record (``pruning.json``, ``clustering.json``): which layers the step acted
on, the reason for every layer it left (grouped by reason), and its kernel numbers over the
layers it targeted and over every kernel (see :mod:`components.common.layer_report`).
"""

from __future__ import annotations

import html
import json
import os

from components.common.keys import CLUSTERING_RECORD_FILE, PRUNING_RECORD_FILE

RECORDS = {"Pruner": PRUNING_RECORD_FILE, "Clusterer": CLUSTERING_RECORD_FILE}


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
