"""The MobileNetV2 benchmark's RESULTS.md section (:mod:`benchmarks.mobilenet` measures it)."""

from __future__ import annotations

from benchmarks import markdown
from components.common.numbers import fmt_ms, fmt_percent


def _pct(value) -> str:
    return fmt_percent(value, digits=1)


def _ms(value) -> str:
    return fmt_ms(value, digits=4)


def render_section(section: dict, number: int) -> list[str]:
    """RESULTS.md lines for the section (one set of tables per case)."""
    lines = [f"## {number}. MobileNetV2 through the pipeline (benchmarks/mobilenet.py)", ""]
    if "error" in section:
        return markdown.failed(lines[0], section["error"])
    lines += [
        "A generic config (prune 0.6, cluster 16, float32 / dynamic-range / full-int8 "
        "candidates, a 2-point gate, a serving push) on a flat MobileNetV2 with a 10-class head, "
        "on the digits scaled up to the input size. Step wall times from ML Metadata, split by "
        "where the time went (benchmarks/step_phases.py); `orchestration` is the rest (driver, "
        "ML Metadata, publishing). The by-hand side runs the same prune -> cluster -> int8 with "
        "tfmot and the TFLite converter in a fresh process, converting as the tutorials do "
        "(`TFLiteConverter.from_keras_model`); `bare` is loading the clustered model, "
        "converting it that way and writing the file, by hand. The pipeline's post-training "
        "Quantizer converts the input's SavedModel instead (`from_saved_model`, the same "
        "flatbuffer but for one metadata byte; components/quantizer/README.md).",
        "",
    ]
    for name, case in section.items():
        if isinstance(case, dict) and "steps" in case:
            lines += _case_section(name, case)
        elif isinstance(case, dict) and "error" in case:
            lines += [f"### {name}", "", f"Failed: {case['error']}", ""]
    return lines


def _case_section(name: str, case: dict) -> list[str]:
    """One case's lines: its inputs, the step phases, the chain's verdict, the models."""
    c, inputs = case["case"], case["inputs"]
    verdict = "met" if case["chain_ratio"] <= case["chain_ratio_target"] else "NOT met"
    worst = max(case["quantizer_vs_bare_conversion"].values(), default=0)
    bare_verdict = "met" if worst <= case["quantizer_vs_bare_target"] else "NOT met"
    return [
        f"### {name}: alpha {c['alpha']}, {c['size']}x{c['size']}x3, "
        f"{inputs['parameters']:,} parameters, {inputs['layers']} layers",
        "",
        f"{inputs['train_examples']} train / {inputs['eval_examples']} eval examples, "
        f"{c['fine_tune_epochs']} fine-tuning epoch(s) per step, batch {c['batch_size']}; "
        f"the input model's eval accuracy {_pct(inputs.get('eval_accuracy'))} "
        f"({c['train_epochs']} training epochs; 0: random weights, timing only). Load "
        f"average (1 min) {case['load_average_1m'][0]} before, {case['load_average_1m'][1]} "
        "after.",
        "",
        *_steps_table(case["steps"]),
        "",
        f"**Prune -> cluster -> int8: pipeline {case['chain_s']['pipeline']} s, by hand "
        f"{case['chain_s']['hand']} s: {case['chain_ratio']}x** (target <= "
        f"{case['chain_ratio_target']}x: {verdict}). Each PTQ Quantizer step over the bare "
        "conversion of the same model: "
        + ", ".join(f"{k} {v}x" for k, v in case["quantizer_vs_bare_conversion"].items())
        + f" (target <= {case['quantizer_vs_bare_target']}x: {bare_verdict}).",
        "",
        *_models_table(case["candidates"].get("models", {})),
        "",
    ]


def _steps_table(steps: dict) -> list[str]:
    """Each step's wall time, split by where it went."""
    return markdown.table(
        ["step", "wall (s)", "load", "convert", "work", "save", "measure", "orchestration"],
        [
            [
                step,
                t["wall_s"],
                t.get("load", 0),
                t.get("convert", 0),
                t.get("work", 0),
                t.get("save", 0),
                t.get("measure", 0),
                t["orchestration"],
            ]
            for step, t in steps.items()
        ],
    )


def _models_table(models: dict) -> list[str]:
    """Each model's accuracy, size, latency and verdict."""
    return markdown.table(
        [
            "model",
            "eval accuracy",
            "size (bytes)",
            "gzip (bytes)",
            "p50 ms",
            "p95 ms",
            "verdict",
        ],
        [
            [
                model,
                _pct(m["accuracy"]),
                f"{m['raw_bytes']:,}" if m["raw_bytes"] else "-",
                f"{m['gzip_bytes']:,}" if m["gzip_bytes"] else "-",
                _ms(m["p50_ms"]),
                _ms(m["p95_ms"]),
                m["verdict"],
            ]
            for model, m in models.items()
        ],
    )
