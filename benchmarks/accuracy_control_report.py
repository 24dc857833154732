"""The accuracy-control benchmark's RESULTS.md section, from its JSON
(:mod:`benchmarks.accuracy_control` measures it). Imports no TensorFlow."""

from __future__ import annotations

from benchmarks import markdown
from components.common.numbers import finite, fmt_bytes

CANDIDATES = {
    "int8": "full int8",
    "pruned80": "prune 80% -> full int8",
}


def _drop(value, task: str) -> str:
    if not finite(value):
        return "-"
    return f"{value:+.1%}" if task == "regression" else f"{value:.2f}"


def _row(model: str, task: str, candidate: str, way: str, entry: dict) -> list:
    if "rejected" in entry:
        reason = entry["rejected"].replace("|", "/").splitlines()[0][:140]
        return [model, CANDIDATES[candidate], way, "-", "-", "-", "-", "-", f"rejected: {reason}"]
    spared = ", ".join(entry.get("spared") or []) or "-"
    verdict = "within" if entry["within_rule"] else "outside"
    return [
        model,
        CANDIDATES[candidate],
        way,
        _drop(entry["drop"], task),
        f"{fmt_bytes(entry['tflite_bytes'])} ({fmt_bytes(entry.get('tflite_gzip_bytes'))})",
        f"{entry['p50_ms']:.4f}" if finite(entry.get("p50_ms")) else "-",
        spared,
        "-" if entry.get("evaluations") is None else entry["evaluations"],
        f"{verdict} the rule",
    ]


def render_section(section: dict, number: int) -> list[str]:
    """RESULTS.md lines: one table, a row per model, candidate and way (without / with)."""
    title = f"## {number}. Accuracy control (benchmarks/accuracy_control.py)"
    if "error" in section:
        return markdown.failed(title, section["error"])
    budget = section["budget"]
    lines = [
        title,
        "",
        "Each candidate without and with `accuracy_control` (budget "
        f"{budget['points']:g} point, regression {budget['relative_mae']:.0%} more MAE: the "
        "default recipe's gate). Drop: the flatbuffer's task metric against the input model "
        "(points; regression: relative MAE increase), on the eval split. int8: the Quantizer "
        "keeps layers in float; prune: the Pruner (fine-tuned "
        f"{section['pruning']['fine_tuning']['epochs']} epochs) leaves layers dense, then the "
        "Quantizer as for int8. Spared: layers left dense or in float; evaluations: eval-split "
        "evaluations the steps spent (a pruning evaluation is a fine-tuning run). p50: batch 1, "
        "one thread, LiteRT, after warm-up. Rule: the gate's accuracy rule at the same budget. "
        f"Machine: {section.get('cpu_model', '?')}.",
        "",
    ]
    rows = []
    for model, entry in section["models"].items():
        for candidate in CANDIDATES:
            for way in ("without", "with"):
                found = entry.get(candidate, {}).get(way)
                if found is not None:
                    rows.append(_row(model, entry["task"], candidate, way, found))
    lines += markdown.table(
        [
            "model",
            "candidate",
            "control",
            "drop",
            "TFLite bytes (gzip)",
            "p50 ms",
            "spared",
            "evaluations",
            "decision",
        ],
        rows,
    )
    return [*lines, ""]
