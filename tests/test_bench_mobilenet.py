"""The MobileNetV2 benchmark's parts that run in seconds: the model, the phase recorder, RESULTS.md."""

import time

from benchmarks import mobilenet, mobilenet_report, step_phases


def test_recorder_counts_a_nested_call_once():
    recorder = step_phases.Recorder()
    recorder.step = "Quantizer_x"
    recorder.enter("work")
    time.sleep(0.02)
    recorder.enter("load")
    time.sleep(0.05)
    recorder.enter("measure")  # e.g. a measurement inside a load: counted as measure only
    time.sleep(0.03)
    recorder.leave()
    recorder.leave()
    time.sleep(0.02)
    recorder.leave()
    phases = recorder.as_dict()["Quantizer_x"]
    assert phases["load"] >= 0.05 and phases["measure"] >= 0.03 and phases["work"] >= 0.04
    assert phases["load"] < 0.05 + 0.03  # the nested measure is not in load as well
    assert set(phases) == set(step_phases.PHASES)


def test_model_is_flat_mobilenet_v2_of_builtin_layers():
    import tf_keras

    from components.common import model_io

    model = mobilenet.build_model(0.35, 32)
    assert not any(isinstance(layer, tf_keras.Model) for layer in model.layers)
    assert sum(isinstance(x, tf_keras.layers.DepthwiseConv2D) for x in model.layers) == 17
    assert model.output_shape == (None, 10)
    assert model_io._builtin_layers_only(model)  # saved without per-layer traces


def _case():
    step = {"wall_s": 10.0, "load": 2.0, "convert": 0.0, "work": 6.0, "save": 1.0}
    return {
        "case": {**mobilenet.CASES["mobilenet_v2_035_32"], **mobilenet.SETTINGS},
        "inputs": {"parameters": 423018, "layers": 156, "train_examples": 8, "eval_examples": 4},
        "steps": {"Pruner": {**step, "measure": 0.5, "orchestration": 0.5}},
        "candidates": {
            "models": {
                "baseline": {
                    "accuracy": 0.9,
                    "raw_bytes": 10,
                    "gzip_bytes": 9,
                    "p50_ms": 0.1,
                    "p95_ms": 0.2,
                    "verdict": "baseline",
                },
            }
        },
        "chain_s": {"pipeline": 13.0, "hand": 10.0},
        "chain_ratio": 1.3,
        "chain_ratio_target": 1.3,
        "quantizer_vs_bare_conversion": {"dynamic_range": 2.5},
        "quantizer_vs_bare_target": 2.0,
        "load_average_1m": [3.0, 4.0],
    }


def test_results_section_states_the_targets_and_whether_they_were_met():
    page = "\n".join(mobilenet_report.render_section({"mobilenet_v2_035_32": _case()}, number=5))
    assert "## 5. MobileNetV2" in page
    assert "pipeline 13.0 s, by hand 10.0 s: 1.3x** (target <= 1.3x: met)" in page
    assert "dynamic_range 2.5x (target <= 2.0x: NOT met)" in page
    assert "| Pruner | 10.0 | 2.0 | 0.0 | 6.0 | 1.0 | 0.5 | 0.5 |" in page
    assert "| baseline | 90.0% | 10 | 9 | 0.1000 | 0.2000 | baseline |" in page
    failed = mobilenet_report.render_section({"error": "RuntimeError: boom"}, number=5)
    assert "Failed: RuntimeError: boom" in failed


def test_every_wrapped_phase_function_exists():
    # A renamed or moved function would make instrument() fail only in the long benchmark run.
    import importlib

    for module_name, attribute, phase in step_phases.WRAPPED:
        owner = importlib.import_module(module_name)
        for part in attribute.split("."):
            assert hasattr(owner, part), f"{module_name}.{attribute} is gone"
            owner = getattr(owner, part)
        assert callable(owner) and phase in step_phases.PHASES
    for module_name in step_phases.EXECUTORS:
        assert hasattr(importlib.import_module(module_name).Executor, "Do")


def test_prune_schedule_reaches_the_target_in_the_first_half_on_both_sides():
    from components.pruner.pruner import resolve_schedule
    from pipelines.config import PipelineConfig

    for case in mobilenet.CASES.values():
        schedule = mobilenet.prune_schedule(case)
        pruner = PipelineConfig.parse(mobilenet.pipeline_config(case, "/tmp/unused")).pruner
        train = case["train_examples"] or 1437
        steps_per_epoch = -(-train // case["batch_size"])
        total = steps_per_epoch * case["fine_tune_epochs"]
        resolved = resolve_schedule(pruner, steps_per_epoch)  # raises if unreachable
        assert resolved["last_mask_update_step"] == schedule["end_step"] <= total // 2
        assert schedule["end_step"] % schedule["frequency_steps"] == 0


def test_a_failed_case_is_reported_beside_the_others():
    lines = mobilenet_report.render_section({"mobilenet_v2_100_224": {"error": "boom"}}, 7)
    assert "Failed: boom" in "\n".join(lines)
