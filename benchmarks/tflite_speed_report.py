"""The TFLite speed benchmark's RESULTS.md section and issue 28's targets, computed from its JSON
(:mod:`benchmarks.tflite_speed` measures it). Imports no TensorFlow."""

from __future__ import annotations

from benchmarks import markdown
from components.common.numbers import finite, fmt_bytes, fmt_percent

FLAVOURS = ("float32", "dynamic_range", "full_int8")
DEMO = "demo_candidate_int8"
WAYS = ("before", "after", "tfmot")
# The Quantizer's verification tolerances (components/quantizer/config.py DEFAULT_TOLERANCES:
# none, dynamic_range, full_int8): the largest output difference a conversion may make.
TOLERANCES = {"float32": 1e-4, "dynamic_range": 5e-2, "full_int8": 1e-1, DEMO: 1e-1}
DEMO_RATIO_TARGET = 0.25  # demo candidate p50 / baseline converted the default way
INT8_SPEEDUP_TARGET = 1.5  # MobileNetV2 0.35: float32 p50 / full int8 p50, both after
WAY_LABELS = {
    "before": "before: `from_saved_model`, dynamic batch",
    "after": "after: Keras call, static batch 1",
    "tfmot": "TFMOT recipe: `from_keras_model`",
}


def ms(value) -> str:
    """Milliseconds: 4 decimals under 1 ms, 2 above; ``-`` when missing."""
    if not finite(value):
        return "-"
    return f"{value:.4f}" if value < 1 else f"{value:.2f}"


def short_reason(text: str, limit: int = 160) -> str:
    """A converter's error in a table cell: its first sentence, without the MLIR location."""
    text = text.replace("<unknown>:0: error: ", "").replace("\\n", " ").replace("|", "/")
    end = text.find(". ", 40)
    text = text[: end + 1] if end > 0 else text
    return text if len(text) <= limit else text[: limit - 3] + "..."


def ratio(numerator, denominator) -> float | None:
    """``numerator / denominator`` rounded to 3 decimals, None when either is missing or zero."""
    if not (finite(numerator) and finite(denominator)) or denominator == 0:
        return None
    return round(numerator / denominator, 3)


def _p50(section: dict, model: str, flavour: str, way: str, key: str = "p50_ms_1t"):
    entry = section.get("models", {}).get(model, {}).get("flatbuffers", {}).get(flavour, {})
    return entry.get(way, {}).get(key)


def _verdict(met) -> str:
    return {True: "met", False: "NOT met", None: "not measured"}[met]


def target_demo(section: dict) -> dict:
    """(1) The reference model's demo candidate (after) vs its float32 baseline converted the
    default way (before), both timed in LiteRT at batch 1 on one thread."""
    baseline = _p50(section, "reference_cnn", "float32", "before")
    candidate = _p50(section, "reference_cnn", DEMO, "after")
    value = ratio(candidate, baseline)
    met = None if value is None else value <= DEMO_RATIO_TARGET
    old_baseline = _p50(section, "reference_cnn", "float32", "before", "p50_ms_1t_tf_lite")
    old_candidate = _p50(section, "reference_cnn", DEMO, "before", "p50_ms_1t_tf_lite")
    text = (
        f"reference CNN: the demo candidate (prune 0.8 -> cluster 16 -> full int8, static batch "
        f"1; the demo's chain by hand with tfmot, its settings) runs in {ms(candidate)} ms = **{value}x** the float32 baseline converted the default "
        f"way ({ms(baseline)} ms, both in LiteRT; target <= {DEMO_RATIO_TARGET}x): "
        f"**{_verdict(met)}**. Against the baseline as the pipeline timed it before "
        f"(`tf.lite.Interpreter`, {ms(old_baseline)} ms): {ratio(candidate, old_baseline)}x; "
        f"the candidate converted and timed the old way: {ratio(old_candidate, old_baseline)}x."
    )
    return {"name": "demo_candidate_vs_baseline", "value": value, "met": met, "text": text}


def target_int8_speedup(section: dict) -> dict:
    """(2) MobileNetV2 0.35: full int8 at least 1.5x faster than float32, both converted after."""
    model = "mobilenet_v2_035_32"
    value = ratio(
        _p50(section, model, "float32", "after"), _p50(section, model, "full_int8", "after")
    )
    met = None if value is None else value >= INT8_SPEEDUP_TARGET
    old = ratio(
        _p50(section, model, "float32", "before", "p50_ms_1t_tf_lite"),
        _p50(section, model, "full_int8", "before", "p50_ms_1t_tf_lite"),
    )
    text = (
        f"MobileNetV2 0.35: full int8 is **{value}x** as fast as float32 (after, LiteRT, one "
        f"thread: {ms(_p50(section, model, 'full_int8', 'after'))} vs "
        f"{ms(_p50(section, model, 'float32', 'after'))} ms; target >= {INT8_SPEEDUP_TARGET}x): "
        f"**{_verdict(met)}**. Converted and timed the old way (`tf.lite.Interpreter`): {old}x."
    )
    return {"name": "mobilenet_035_int8_speedup", "value": value, "met": met, "text": text}


def conversion_checks(section: dict) -> list[dict]:
    """(3) One check per model and flavour: the after flatbuffer against the before one (the
    Keras model where before did not convert): the same class on every eval example for float32,
    and the largest output difference within the Quantizer's tolerance for the flavour."""
    checks = []
    for name, model in section.get("models", {}).items():
        for flavour, ways in model.get("flatbuffers", {}).items():
            if "after" not in ways:
                continue
            after = ways["after"]
            if "error" in after:
                checks.append({"model": name, "flavour": flavour, "ok": False, "why": "failed"})
                continue
            against = "before" if "vs_before" in after else "Keras"
            diff = after.get("vs_before") or after.get("vs_keras") or {}
            tolerance = TOLERANCES.get(flavour, TOLERANCES["full_int8"])
            ok = finite(diff.get("max_diff")) and diff["max_diff"] <= tolerance
            if flavour == "float32":
                ok = ok and diff.get("same_class") == diff.get("examples")
            checks.append(
                {
                    "model": name,
                    "flavour": flavour,
                    "against": against,
                    "same_class": diff.get("same_class"),
                    "examples": diff.get("examples"),
                    "max_diff": diff.get("max_diff"),
                    "tolerance": tolerance,
                    "ok": bool(ok),
                }
            )
    return checks


def target_accuracy(section: dict) -> dict:
    """(3) Accuracy unchanged by the conversion: every :func:`conversion_checks` check passes."""
    checks = conversion_checks(section)
    met = all(c["ok"] for c in checks) if checks else None
    failed = [f"{c['model']} {c['flavour']}" for c in checks if not c["ok"]]
    float32 = [c for c in checks if c["flavour"] == "float32" and c["ok"]]
    worst = max((c["max_diff"] for c in checks if finite(c.get("max_diff"))), default=None)
    text = (
        f"accuracy unchanged by the conversion: {sum(c['ok'] for c in checks)} of {len(checks)} "
        f"flatbuffers converted after agree with the before one (the Keras model where before "
        f"failed): float32 gives the same class on every eval example for {len(float32)} "
        f"model(s), and the largest output difference of any flavour is "
        f"{'-' if worst is None else f'{worst:.3g}'} (tolerances: float32 1e-4, dynamic range "
        f"0.05, int8 0.1): **{_verdict(met)}**"
        + (f"; failed: {', '.join(failed)}" if failed else "")
        + "."
    )
    return {"name": "accuracy_unchanged", "value": len(failed), "met": met, "text": text}


def targets(section: dict) -> list[dict]:
    """Issue 28's three targets, each ``{"name", "value", "met", "text"}``."""
    return [target_demo(section), target_int8_speedup(section), target_accuracy(section)]


# ----------------------------------------------------------------------------- rendering


def _processor(section: dict) -> str:
    p = section.get("processor", {})
    flags = p.get("flags", {})
    have = [f for f, on in flags.items() if on]
    lacks = [f for f, on in flags.items() if not on]
    return (
        f"Processor: {p.get('model_name', '?')} (has {', '.join(have) or 'none of them'}; "
        f"lacks {', '.join(lacks) or 'none'}); runtime {section.get('runtime', '?')} with "
        "XNNPACK."
    )


def _summary_rows(section: dict) -> list[list]:
    """Issue 28's table re-measured: per model and conversion, p50 of each flavour."""
    rows = []
    for name, model in section.get("models", {}).items():
        if "flatbuffers" not in model:
            continue
        ways = [
            ("before", "p50_ms_1t_tf_lite", "before, in `tf.lite.Interpreter` (the old way)"),
            ("after", "p50_ms_1t_tf_lite", "after, in `tf.lite.Interpreter`"),
            ("before", "p50_ms_1t", "before, in LiteRT"),
            ("after", "p50_ms_1t", "after, in LiteRT (the pipeline now)"),
            ("tfmot", "p50_ms_1t", "TFMOT recipe, in LiteRT"),
        ]
        for way, key, label in ways:
            cells = [_p50(section, name, f, way, key) for f in FLAVOURS]
            if not any(finite(c) for c in cells):
                continue
            speedup = ratio(cells[0], cells[2])
            rows.append(
                [name, label, *[ms(c) for c in cells], "-" if speedup is None else f"{speedup}x"]
            )
    return rows


def _delegated(entry: dict) -> str:
    d = entry.get("delegation") or {}
    if not d.get("nodes"):
        return "-"
    return (
        f"{d['delegated_nodes']}/{d['nodes']} ({fmt_percent(d['delegated_share'], 0)}), "
        f"{d['partitions']} part."
    )


def _fallback(entry: dict) -> str:
    ops = (entry.get("delegation") or {}).get("fallback_ops") or {}
    return ", ".join(f"{op} x{n}" if n > 1 else op for op, n in ops.items()) or "none"


def _same_class(entry: dict) -> str:
    cells = []
    for key, label in (("vs_before", ""), ("vs_keras", "Keras ")):
        vs = entry.get(key)
        if vs:
            cells.append(f"{label}{vs['same_class']}/{vs['examples']} ({vs['max_diff']:.2g})")
    return "; ".join(cells) or "-"


def _model_rows(model: dict) -> list[list]:
    rows = []
    for flavour, ways in model["flatbuffers"].items():
        for way in WAYS:
            if way not in ways:
                continue
            entry = ways[way]
            label = WAY_LABELS[way]
            if "error" in entry:
                failed = f"conversion failed: {short_reason(entry['error'])}"
                rows.append([flavour, label, failed] + ["-"] * 6)
                continue
            p50 = ms(entry.get("p50_ms_1t"))
            if "p50_ms_1t_tf_lite" in entry:
                p50 += f" ({ms(entry['p50_ms_1t_tf_lite'])})"
            rows.append(
                [
                    flavour,
                    label,
                    p50,
                    ms(entry.get("p50_ms_2t")),
                    _delegated(entry),
                    _fallback(entry),
                    f"{fmt_bytes(entry['bytes'])} ({fmt_bytes(entry['gzip_bytes'])})",
                    f"{entry['metric']:.4f}" if finite(entry.get("metric")) else "-",
                    _same_class(entry),
                ]
            )
    return rows


def _reasons(model: dict) -> list[str]:
    """One line per distinct reason some of the graph runs on the default kernels."""
    by_reason: dict[str, list[str]] = {}
    for flavour, ways in model["flatbuffers"].items():
        for way, entry in ways.items():
            reason = (entry.get("delegation") or {}).get("reason")
            if reason:
                by_reason.setdefault(reason, []).append(f"{flavour} {way}")
    return [f"- {', '.join(which)}: {reason}" for reason, which in by_reason.items()]


def _model_section(name: str, model: dict) -> list[str]:
    if "error" in model:
        return [f"### {name}", "", f"Failed: {model['error']}", ""]
    timing = model.get("timing", {})
    runs = ", ".join(
        f"{threads} thread(s): {t['timed_runs']} timed runs after {t['warmup_runs']}"
        for threads, t in timing.items()
    )
    lines = [
        f"### {name}: {model['what']}",
        "",
        f"Eval {model['metric_name']} over {model['eval_examples']} examples (the Keras model: "
        f"{model['keras_metric']:.4f}); full int8 calibrated on {model['calibration_samples']} "
        f"train examples; {runs}; load average (1 min) {model['load_average_1m'][0]} before, "
        f"{model['load_average_1m'][1]} after; {model['wall_s']} s.",
        "",
        *markdown.table(
            [
                "flavour",
                "conversion",
                "p50 1 thread (ms; tf.lite)",
                "p50 2 threads (ms)",
                "XNNPACK nodes",
                "on the default kernels",
                "bytes (gzip)",
                model["metric_name"],
                "same class as before; as Keras (largest difference)",
            ],
            _model_rows(model),
        ),
        "",
    ]
    reasons = _reasons(model)
    return lines + (["Why nodes fall back:", "", *reasons, ""] if reasons else [])


def render_section(section: dict, number: int) -> list[str]:
    """RESULTS.md lines: the processor, the targets, issue 28's table, then one table per model."""
    title = (
        f"## {number}. TFLite speed: static shapes, XNNPACK, LiteRT (benchmarks/tflite_speed.py)"
    )
    if "error" in section:
        return markdown.failed(title, section["error"])
    lines = [
        title,
        "",
        "Each model converted three ways from the same weights: **before** (what the pipeline "
        "did before static shapes: `TFLiteConverter.from_saved_model`, a dynamic batch), **after** "
        "(the Keras call with a static batch of 1: components/common/conversion.py and the "
        "Quantizer's conversion) and the **TFMOT recipe** (`from_keras_model` with "
        "`Optimize.DEFAULT` and a representative dataset: full int8 only). p50 at batch 1 in "
        "the LiteRT interpreter (XNNPACK), one and two threads, all flatbuffers of a model "
        "interleaved in one process after warm-up; the before and after ones also in "
        "`tf.lite.Interpreter`, the runtime the pipeline timed with before (in brackets): it "
        "applies XNNPACK to no node of a graph with dynamic-sized tensors, where LiteRT "
        "delegates the static part. Two "
        "threads share the machine's CPUs with whatever else runs (each model's load average is "
        "in its line), so on a busy 2-CPU machine they can be slower than one. "
        "XNNPACK nodes: delegated / all nodes of the graph, and the partitions "
        "(components/common/delegation.py). Same class as before: eval examples whose class "
        "the after (or TFMOT) flatbuffer gives as the before one does, and the largest output "
        "difference (of probabilities, relative to max(1, |value|), as the Quantizer verifies).",
        "",
        _processor(section),
        "",
        "### Targets",
        "",
        *[f"{i}. {t['text']}" for i, t in enumerate(targets(section), start=1)],
        "",
        "### p50 at batch 1, one thread (ms)",
        "",
        *markdown.table(
            [
                "model",
                "conversion, runtime",
                "float32",
                "dynamic range",
                "full int8",
                "int8 speed-up (float32 / int8)",
            ],
            _summary_rows(section),
        ),
        "",
    ]
    for name, model in section.get("models", {}).items():
        lines += _model_section(name, model)
    return lines
