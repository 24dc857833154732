"""The benchmark suite's own pieces (the suite itself runs under `make bench`, not here)."""

import json
import os

import numpy as np
import pytest


def test_pipeline_side_does_what_the_hand_recipe_does():
    from benchmarks.hand_recipe import SETTINGS
    from benchmarks.overhead import pipeline_config
    from pipelines.config import PipelineConfig

    config = PipelineConfig.parse(pipeline_config())
    pruner, clusterer = config.pruner, config.clusterer
    assert pruner.target_sparsity == SETTINGS["target_sparsity"]
    assert pruner.layers.exclude_names == SETTINGS["prune_exclude"]
    assert pruner.fine_tuning.epochs == SETTINGS["prune_epochs"]
    assert pruner.fine_tuning.learning_rate == SETTINGS["prune_learning_rate"]
    assert pruner.schedule.end_step == SETTINGS["prune_end_step"]
    assert pruner.schedule.frequency_steps == SETTINGS["prune_frequency"]
    assert clusterer.number_of_clusters == SETTINGS["clusters"]
    assert clusterer.preserve_sparsity
    assert clusterer.fine_tuning.epochs == SETTINGS["cluster_epochs"]
    assert clusterer.fine_tuning.learning_rate == SETTINGS["cluster_learning_rate"]
    [candidate] = config.quantization
    assert candidate.mode == "full_int8"
    assert candidate.representative_samples == SETTINGS["calibration_samples"]
    for stage in (pruner, clusterer):
        assert stage.fine_tuning.batch_size == SETTINGS["batch_size"]
    # The schedule reaches the target within the fine-tuning steps (1437 / 32 -> 45 per epoch).
    from components.pruner.pruner import resolve_schedule

    assert resolve_schedule(pruner, 45)["last_mask_update_step"] == SETTINGS["prune_end_step"]


def test_scaling_split_is_jittered_copies_of_the_eval_split(tmp_path, reference_data):
    from benchmarks.hand_recipe import load_split
    from benchmarks.scaling import JITTER, linear_fit, write_split

    source = reference_data["examples"]
    out = write_split(source, 500, str(tmp_path / "split"))
    x, y = load_split(out, "eval")
    x_ref, y_ref = load_split(source, "eval")
    assert x.shape == (500, 64) and y.shape == (500,)
    assert x.min() >= 0.0 and x.max() <= 1.0
    # Each example is the nearest reference example plus noise of about JITTER.
    distances = ((x[:, None, :] - x_ref[None, :, :]) ** 2).sum(-1)
    nearest = distances.argmin(1)
    assert np.mean(y_ref[nearest] == y) > 0.99
    noise = np.sqrt(distances.min(1) / 64)
    assert 0.5 * JITTER < np.median(noise) < 1.5 * JITTER

    fit = linear_fit([1_000, 10_000, 100_000], [2.5, 7.0, 52.0])
    assert fit["us_per_example"] == pytest.approx(500.0, rel=1e-3)
    assert fit["fixed_s"] == pytest.approx(2.0, abs=1e-3)


def test_results_markdown_renders_every_section():
    from benchmarks.run import RESULTS_JSON, SECTIONS, render_markdown

    if not os.path.exists(RESULTS_JSON):
        pytest.skip("no benchmarks/results.json yet (make bench writes it)")
    with open(RESULTS_JSON) as f:
        results = json.load(f)
    page = render_markdown(results)
    assert results["machine"]["cpu_model"] in page
    for name in SECTIONS:
        if name in results and "error" not in results[name]:
            assert results[name]["section_wall_s"] is not None
    if "overhead" in results and "error" not in results["overhead"]:
        assert f"**Overhead ratio (same steps): {results['overhead']['overhead_ratio']}x**" in page


def test_committed_results_md_is_what_results_json_renders():
    """RESULTS.md is generated: byte for byte what render_markdown makes of results.json, plus
    the hand-written History ``benchmarks.run`` keeps at its end: dated entries only, and no
    internal issue numbers anywhere."""
    import re

    from benchmarks.run import HISTORY_HEADING, RESULTS_JSON, RESULTS_MD, render_markdown

    if not (os.path.exists(RESULTS_JSON) and os.path.exists(RESULTS_MD)):
        pytest.skip("no benchmarks/results.json yet (make bench writes it)")
    with open(RESULTS_JSON) as f:
        page = render_markdown(json.load(f))
    with open(RESULTS_MD) as f:
        committed = f.read()
    assert HISTORY_HEADING in committed
    history = committed[committed.index(HISTORY_HEADING) :]
    page += "\n" + history
    assert committed == page
    assert committed.count("\n## ") == page.count("\n## ")
    entries = re.findall(r"^\*\*(.*?)\*\*", history, re.M)
    assert entries and all(re.match(r"\d{4}-\d{2}-\d{2}", e) for e in entries), entries
    assert not re.search(r"\bissues? #?\d+", committed, re.I)


def test_every_section_renders_its_failure():
    from benchmarks.run import SECTIONS, render_markdown

    results = {
        "generated_at": "2026-01-01T00:00:00",
        "machine": {
            "nproc": 2,
            "cpu_model": "cpu",
            "avx512_vnni": False,
            "avx2": True,
            "memory_gb": 8,
            "kernel": "k",
            "python": "3.10",
            "tensorflow": "2.16",
            "load_average_at_start": [3.0],
        },
        **{name: {"error": f"{name} broke"} for name in SECTIONS},
    }
    page = render_markdown(results)
    assert "no (AVX2 only)" in page and "The machine was shared" in page
    for number, name in enumerate(SECTIONS, start=1):
        assert f"## {number}. " in page and f"Failed: {name} broke" in page


def test_throughput_ratios_and_markdown():
    from benchmarks.evaluator_throughput import ratios, render_section

    rows = [
        {
            "engine": e,
            "examples": n,
            "examples_per_s": v,
            "seconds": 1.0,
            "peak_rss_mb": 1.0,
            "accuracy": 0.9,
        }
        for e, n, v in (
            ("bare_interpreter", 1000, 8000.0),
            ("ours", 1000, 4000.0),
            ("tfma", 1000, 1000.0),
            ("ours", 100000, 6000.0),
        )
    ]
    out = ratios(rows)
    assert out["1000"] == {"ours_vs_bare": 0.5, "ours_vs_tfma": 4.0}
    assert out["100000"] == {}  # nothing to compare with at that size
    section = {"what": "x.", "bare_batch": 32, "rows": rows, "ratios": out}
    page = "\n".join(render_section(section, 6))
    assert page.startswith("## 6. Evaluator throughput")
    assert "| 1,000 | 0.5 | 4.0 | - | - |" in page
    assert render_section({"error": "boom"}, 6)[2] == "Failed: boom"


def test_recipes_benchmark_drop_interval_and_targets():
    from benchmarks.recipes import _targets, paired_drop_ci, render_section

    rng = np.random.default_rng(0)
    base = rng.random(360) < 0.99
    same, point_ci = paired_drop_ci(base, base)
    assert same == 0.0 and point_ci == [0.0, 0.0]  # paired: identical outcomes, no spread
    worse = base.copy()
    worse[:20] = False
    drop, (low, high) = paired_drop_ci(base, worse)
    assert low <= drop <= high and drop > 0
    assert drop == pytest.approx(100 * (base.mean() - worse.mean()), abs=1e-3)

    def model(gzip_ratio, p50_ratio, drop_points):
        return {
            "tflite_gzip_bytes": 1000,
            "gzip_ratio": gzip_ratio,
            "accuracy": 0.99,
            "drop_points": drop_points,
            "drop_ci95": [drop_points - 0.5, drop_points + 0.5],
            "p50_ratio": p50_ratio,
            "p50_ms": 0.1,
            "p95_ratio": p50_ratio,
            "wall_s": 10.0,
            "chain": ["Pruner_s80", "Quantizer_x"],
        }

    models = {
        "fp32": model(1.0, 1.0, 0.0),
        "hand": model(12.0, 0.9, 1.1),
        "small": model(15.0, 0.9, 0.2),
        "fast": model(4.0, 0.4, 0.4),
    }
    decision = {"blessed": True, "selected": "small", "reason": "smallest"}
    targets = _targets(models, decision, ["small", "fast"])
    assert targets["size"]["met"] and targets["size"]["candidates_meeting"] == ["small"]
    assert targets["speed"]["met"] and targets["speed"]["candidates_meeting"] == ["fast"]
    unblessed = _targets(models, {"blessed": False, "selected": None}, ["small", "fast"])
    assert not unblessed["size"]["met"]  # the size target needs the gate to bless it
    section = {
        "models": models,
        "decision": decision,
        "targets": targets,
        "latency_runs": 100,
        "pipeline_wall_s": 100.0,
        "hand_wall_s": 20.0,
    }
    text = "\n".join(render_section(section, 5))
    assert "`small` **(blessed)**" in text and "Size target" in text
    assert text.count("**met**") == 2


def test_overhead_parts_add_up_to_each_sides_wall_time():
    import importlib

    from benchmarks import overhead

    pipeline = {
        "process_wall_s": 30.0,
        "timings_s": {"import_s": 7.0},
        "steps_s": {"BaselineProfiler": 2.0, "Pruner": 8.0, "Clusterer": 6.0, "Evaluator": 3.0},
    }
    hand = {
        "process_wall_s": 17.0,
        "timings_s": {"import_s": 4.0, "prune_s": 5.0, "cluster_s": 5.0, "quantize_s": 1.5},
    }
    assert overhead._rest(pipeline) == pytest.approx(30 - 7 - 19)
    assert overhead._rest(hand) == pytest.approx(17 - 4 - 11.5)
    section = {
        "parts_s": {
            "pipeline": {"imports": 7, "prune_cluster_quantize": 14, "measure_steps": 5, "rest": 4},
            "hand_same_autograph": {
                "imports": 4,
                "prune_cluster_quantize": 11.5,
                "measure_steps": 0,
                "rest": 1.5,
            },
        }
    }
    table = "\n".join(overhead._parts_table(section))
    assert "| imports" in table and "| 4 | 7 |" in table
    # What the pipeline side imports before it starts timing the run must exist.
    for module in overhead.RUNNER_MODULES + overhead.EXECUTOR_MODULES:
        importlib.import_module(module)


def _tflite_entry(p50, p50_tf_lite=None, same=360, max_diff=0.0, error=None):
    """One flatbuffer record of the tflite_speed section, as benchmarks.tflite_speed writes it."""
    if error:
        return {"error": error, "convert_s": 1.0}
    entry = {
        "bytes": 100_000,
        "gzip_bytes": 90_000,
        "batch_size": 1,
        "delegation": {
            "nodes": 12,
            "delegated_nodes": 11,
            "delegated_share": 11 / 12,
            "partitions": 2,
            "fallback_ops": {"SOFTMAX": 1},
            "reason": "SOFTMAX x1 run on the default kernels, not XNNPACK: no kernel",
        },
        "metric": 0.99,
        "vs_keras": {"same_class": same, "examples": 360, "max_diff": max_diff},
        "vs_before": {"same_class": same, "examples": 360, "max_diff": max_diff},
        "p50_ms_1t": p50,
        "p50_ms_2t": p50,
    }
    if p50_tf_lite is not None:
        entry["p50_ms_1t_tf_lite"] = p50_tf_lite
        del entry["vs_before"]
    return entry


def _tflite_model(flatbuffers):
    return {
        "what": "a model",
        "task": "multiclass",
        "metric_name": "top1_accuracy",
        "eval_examples": 360,
        "calibration_samples": 100,
        "keras_metric": 0.99,
        "timing": {"1": {"timed_runs": 2000, "warmup_runs": 200}},
        "load_average_1m": [1.0, 1.0],
        "wall_s": 10.0,
        "flatbuffers": flatbuffers,
    }


def test_tflite_speed_targets_from_the_json_and_markdown():
    from benchmarks import tflite_speed
    from benchmarks.tflite_speed_report import (
        DEMO,
        TOLERANCES,
        conversion_checks,
        render_section,
        short_reason,
        targets,
    )
    from components.quantizer.config import DEFAULT_TOLERANCES

    # The Quantizer's verification tolerances, per flavour.
    assert TOLERANCES["float32"] == DEFAULT_TOLERANCES["none"]
    for flavour in ("dynamic_range", "full_int8"):
        assert TOLERANCES[flavour] == DEFAULT_TOLERANCES[flavour]
    calls = []
    samples = tflite_speed.interleaved_within({"a": lambda: calls.append(1), "b": int}, 50, 60.0)
    assert len(samples["a"]) == len(samples["b"]) == len(calls) == 50  # in chunks, all 50

    section = {
        "processor": {"model_name": "AMD EPYC", "flags": {"avx2": True, "avx512_vnni": False}},
        "runtime": "ai-edge-litert 2.3",
        "models": {
            "reference_cnn": _tflite_model(
                {
                    "float32": {"before": _tflite_entry(0.08, 0.16), "after": _tflite_entry(0.05)},
                    DEMO: {"before": _tflite_entry(0.06, 0.13), "after": _tflite_entry(0.016)},
                }
            ),
            "mobilenet_v2_035_32": _tflite_model(
                {
                    "float32": {"after": _tflite_entry(0.30)},
                    "full_int8": {"after": _tflite_entry(0.25, max_diff=0.2)},
                }
            ),
            "lstm_binary": _tflite_model(
                {"float32": {"before": _tflite_entry(None, error="tf.TensorListReserve")}}
            ),
        },
    }
    demo, speedup, accuracy = targets(section)
    assert demo["value"] == 0.2 and demo["met"]  # 0.016 / 0.08, both in LiteRT
    assert "0.1x" in demo["text"]  # against the baseline timed in tf.lite.Interpreter
    assert speedup["value"] == 1.2 and speedup["met"] is False
    # The int8 flatbuffer differs from its before one by 0.2 > the int8 tolerance 0.1.
    assert accuracy["met"] is False and "mobilenet_v2_035_32 full_int8" in accuracy["text"]
    checks = {(c["model"], c["flavour"]): c["ok"] for c in conversion_checks(section)}
    assert checks[("reference_cnn", "float32")] and checks[("reference_cnn", DEMO)]
    assert ("lstm_binary", "float32") not in checks  # no after flatbuffer recorded

    page = "\n".join(render_section(section, 8))
    assert page.startswith("## 8. TFLite speed")
    assert "Processor: AMD EPYC (has avx2; lacks avx512_vnni)" in page
    assert page.count("**met**") == 1 and page.count("**NOT met**") == 2
    assert "| reference_cnn | before, in `tf.lite.Interpreter` (the old way) | 0.1600 | - |" in page
    assert "conversion failed: tf.TensorListReserve" in page
    assert "11/12 (92%), 2 part." in page and "SOFTMAX" in page
    assert render_section({"error": "boom"}, 8)[2] == "Failed: boom"
    error = (
        "ConverterError: ops without a kernel: tf.TensorListReserve; <unknown>:0: error: "
        "Lowering tensor list ops is failed. Please consider using Select TF ops | \\n more"
    )
    assert short_reason(error) == (
        "ConverterError: ops without a kernel: tf.TensorListReserve; "
        "Lowering tensor list ops is failed."
    )
