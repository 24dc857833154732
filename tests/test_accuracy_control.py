"""Accuracy control (issue 29): per-layer sensitivity, and the bounded greedy search that spares the
layers that cost the most until the candidate is within its budget.

The search itself is checked on a scripted ``evaluate`` (which layers it tries, in what order, how
many evaluations, what it records and when it gives up); the Quantizer on a tiny model built to
have one layer that int8 breaks: its input carries a feature far larger than the rest that the
model ignores, so quantizing the input to int8 wipes out the small features the label depends on,
and only keeping the first layer (which reads the input) in float brings the accuracy back.
"""

import numpy as np
import pytest

from components.common import sensitivity
from components.common.errors import ConfigError
from components.common.metrics import Task
from components.common.sensitivity import AccuracyControlConfig, BudgetNotMet

MULTICLASS = Task("multiclass", (4,))
REGRESSION = Task("regression", (1,))


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "control, match",
    [
        ({}, "exactly one of max_drop_points"),
        ({"max_drop_points": 1, "max_relative_error_increase": 0.1}, "exactly one"),
        ({"max_drop_points": -1}, "max_drop_points"),
        ({"max_drop_points": 1, "max_evaluations": 0}, "max_evaluations"),
    ],
)
def test_budget_config_errors_name_the_field(control, match):
    with pytest.raises(ConfigError, match=match):
        AccuracyControlConfig.parse(control)


def test_accuracy_control_applies_to_full_int8_only():
    from components.quantizer.config import QuantizerConfig

    with pytest.raises(ConfigError, match="accuracy_control applies to the modes"):
        QuantizerConfig.parse({"mode": "dynamic_range", "accuracy_control": {"max_drop_points": 1}})
    assert (
        QuantizerConfig.parse(
            {"mode": "full_int8", "accuracy_control": {"max_drop_points": 1}}
        ).accuracy_control.max_drop_points
        == 1
    )


def test_a_budget_the_task_cannot_express_fails_naming_the_key():
    points = AccuracyControlConfig(max_drop_points=1.0)
    relative = AccuracyControlConfig(max_relative_error_increase=0.05)
    with pytest.raises(ConfigError, match=r"^quantizer\.accuracy_control\.max_drop_points: task"):
        sensitivity.check_fits(points, REGRESSION, "quantizer")
    with pytest.raises(ConfigError, match=r"pruner\.accuracy_control\.max_relative_error_increase"):
        sensitivity.check_fits(relative, MULTICLASS, "pruner")
    sensitivity.check_fits(points, MULTICLASS, "quantizer")  # fits: no error
    sensitivity.check_fits(relative, REGRESSION, "quantizer")


def test_preflight_checks_every_stage_budget_against_the_task():
    from pipelines.config import PipelineConfig
    from pipelines.local import preflight

    config = PipelineConfig.parse(
        {
            "candidates": {
                "int8": {
                    "quantization": {
                        "mode": "full_int8",
                        "accuracy_control": {"max_drop_points": 1},
                    }
                }
            }
        }
    )
    preflight.check_accuracy_control_fits(config, MULTICLASS)
    with pytest.raises(
        ConfigError, match=r"candidates\.int8\.quantization\.accuracy_control\.max_drop_points"
    ):
        preflight.check_accuracy_control_fits(config, REGRESSION)


# --------------------------------------------------------------------------- the search


def _scripted(costs: dict[str, float], before=0.9):
    """An ``evaluate`` whose metric is ``before`` minus the cost of every layer not spared, in
    accuracy (0.05: 5 points), recording each call."""
    calls = []

    def evaluate(spared):
        calls.append(list(spared))
        metric = before - sum(c for name, c in costs.items() if name not in spared)
        return metric, tuple(spared), {}

    return evaluate, calls


def test_the_search_spares_the_costliest_layers_first_and_stops_within_budget():
    costs = {"a": 0.001, "b": 0.06, "c": 0.03, "d": 0.0}
    evaluate, calls = _scripted(costs)
    control = AccuracyControlConfig(max_drop_points=2.0, probe_layers=4)
    # The cheap score ranks "a" worst: the probes measure what each really costs.
    scores = {"a": 9.0, "b": 1.0, "c": 0.5, "d": 0.1}
    result = sensitivity.search(
        task=MULTICLASS,
        before=0.9,
        control=control,
        layers=list(costs),
        evaluate=evaluate,
        scores=scores,
    )
    # Plain (9.1 points lost), 4 probes, then b + c (0.1 point lost): within 2 points.
    assert calls == [[], ["a"], ["b"], ["c"], ["d"], ["b", "c"]]
    assert result.within_budget and result.spared == ["b", "c"] and result.state == ("b", "c")
    assert [r["layer"] for r in result.ranking][:2] == ["b", "c"]  # ranked by what they recovered
    record = sensitivity.record(result, MULTICLASS, control, "layers kept in float")
    assert record["evaluations_used"] == len(record["evaluations"]) == 6
    assert record["drop_before"] == pytest.approx(9.1)
    assert record["drop_after"] == pytest.approx(0.1)
    assert [e["purpose"] for e in record["evaluations"]][:2] == ["candidate", "probe a"]


def test_the_search_is_bounded_and_a_budget_it_cannot_meet_is_a_rejection():
    costs = {"a": 0.05, "b": 0.05, "c": 0.05}
    evaluate, calls = _scripted(costs)
    control = AccuracyControlConfig(max_drop_points=1.0, max_evaluations=3, probe_layers=1)
    result = sensitivity.search(
        task=MULTICLASS, before=0.9, control=control, layers=list(costs), evaluate=evaluate
    )
    assert len(calls) == 3 and not result.within_budget
    assert result.spared == ["a", "b"]  # the best it reached: 5 points lost
    error = sensitivity.reject(result, MULTICLASS, control, "layers kept in float")
    assert isinstance(error, BudgetNotMet) and error.step == "accuracy_control"
    assert "after 3 of 3 evaluations" in str(error)
    assert "the best lost 5.00 points with layers kept in float ['a', 'b']" in str(error)
    assert "the candidate as it is lost 15.00 points" in str(error)


def test_a_candidate_within_budget_costs_one_evaluation():
    evaluate, calls = _scripted({"a": 0.005})
    control = AccuracyControlConfig(max_drop_points=1.0)
    result = sensitivity.search(
        task=MULTICLASS, before=0.9, control=control, layers=["a"], evaluate=evaluate
    )
    assert calls == [[]] and result.within_budget and result.spared == []


def test_regression_budget_is_relative_to_the_input_error():
    # MAE 2.0 before; 2.3 as it is (+15%), 2.08 with "a" spared (+4%).
    def evaluate(spared):
        return (2.08 if "a" in spared else 2.3), None, {}

    control = AccuracyControlConfig(max_relative_error_increase=0.05)
    result = sensitivity.search(
        task=REGRESSION, before=2.0, control=control, layers=["a", "b"], evaluate=evaluate
    )
    assert result.within_budget and result.spared == ["a"]
    assert result.evaluations[0].drop == pytest.approx(0.15)
    assert result.evaluations[-1].drop == pytest.approx(0.04)


# --------------------------------------------------------------------------- the Quantizer


@pytest.fixture(scope="module")
def outlier(tmp_path_factory):
    """A 64 -> 32 -> 16 -> 4 classifier (label: the largest of the first 4 features) whose Examples
    carry one feature in [0, 300] that the model ignores (its weights are zero): int8 input
    quantization then has a step of ~1.2, and the features in [0, 1] the label needs vanish."""
    import tf_keras

    from components.common import legacy_keras
    from pipelines.reference_data import write_examples

    legacy_keras.skip_autograph_for_tf_keras()
    root = tmp_path_factory.mktemp("outlier")
    rng = np.random.default_rng(0)
    tf_keras.utils.set_random_seed(1)
    layers = tf_keras.layers
    model = tf_keras.Sequential(
        [
            layers.Input((64,), name="image"),
            layers.Dense(32, activation="relu", name="hidden"),
            layers.Dense(16, activation="relu", name="mid"),
            layers.Dense(4, activation="softmax", name="out"),
        ]
    )
    for split, n in (("train", 256), ("eval", 128)):
        x = rng.random((n, 64), dtype=np.float32)
        y = np.argmax(x[:, :4], axis=1).astype(np.int64)
        if split == "train":
            model.compile(tf_keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
            model.fit(np.where(np.arange(64) == 63, 0.0, x), y, epochs=40, verbose=0)
        x[:, 63] = rng.random(n, dtype=np.float32) * 300
        write_examples(str(root / "examples" / f"Split-{split}" / "data.gz"), x, y)
    kernel, bias = model.get_layer("hidden").get_weights()
    kernel[63] = 0.0
    model.get_layer("hidden").set_weights([kernel, bias])
    model.save(str(root / "model"), include_optimizer=False, save_format="tf")
    return {"examples": str(root / "examples"), "model": str(root / "model")}


def _quantize(outlier, **config):
    import tf_keras

    from components.common.examples import DataConfig
    from components.quantizer import quantizer
    from components.quantizer.config import QuantizerConfig

    model = tf_keras.models.load_model(outlier["model"], compile=False)
    config = QuantizerConfig(mode="full_int8", **config)
    return quantizer.quantize(model, outlier["examples"], DataConfig(), config)


def _top1(flatbuffer, outlier):
    import tf_keras

    from components.common import examples as examples_lib
    from components.common import tflite
    from components.common.examples import DataConfig

    model = tf_keras.models.load_model(outlier["model"], compile=False)
    x, y = examples_lib.load_arrays(outlier["examples"], "eval", DataConfig(), model)
    keras = float(np.mean(np.argmax(model.predict(x, verbose=0), -1) == y))
    lite = float(np.mean(np.argmax(tflite.TFLiteModel(flatbuffer).predict_each(x), -1) == y))
    return keras, lite


def test_quantizer_keeps_the_layer_that_int8_breaks_in_float_and_records_why(outlier):
    from components.quantizer import quantizer

    control = {"max_drop_points": 2.0, "max_evaluations": 6}
    result = _quantize(outlier, accuracy_control=control)
    record = result.record
    keras, lite = _top1(result.flatbuffer, outlier)
    # Within the budget, worked out here from both models' answers.
    assert (keras - lite) * 100 <= 2.0
    assert record["metric_after"] == pytest.approx(lite)
    ac = record["accuracy_control"]
    assert ac["within_budget"] and ac["spared"] == ["hidden"]
    assert ac["drop_before"] > 2.0  # the plain int8 flatbuffer was outside the budget
    assert 2 <= ac["evaluations_used"] == len(ac["evaluations"]) <= 6
    assert ac["evaluations"][0]["spared"] == [] and ac["evaluations"][-1]["spared"] == ["hidden"]
    # The layer left in float is the only float compute, and the record says which it is.
    assert record["float_ops"] == ["FULLY_CONNECTED(hidden)"]
    assert record["config"]["exclude_layers"] == []  # as configured: the search chose "hidden"
    numbers = quantizer.key_numbers(record)
    assert numbers["layers_kept_float"] == ["hidden"]
    assert numbers["accuracy_control_evaluations"] == ac["evaluations_used"]
    # Per-layer errors for every quantized layer; the broken one is the worst by far.
    layers = record["layer_sensitivity"]["layers"]
    assert {e["layer"] for e in layers} == {"hidden", "mid", "out"}
    assert layers[0]["layer"] == "hidden"
    assert layers[0]["rmse_over_scale"] > 2 * layers[1]["rmse_over_scale"]
    assert layers[0]["recovered"] == pytest.approx(ac["drop_before"] - ac["drop_after"])


def test_without_control_the_sensitivity_is_recorded_and_the_budget_not_applied(outlier):
    from components.quantizer.verification import ConversionVerificationError

    # The plain int8 flatbuffer of this model is broken for the task: verification says so.
    with pytest.raises(ConversionVerificationError, match="top-1 agreement|same top-1 answer"):
        _quantize(outlier)
    # Loosened verification: the candidate passes to the gate with what each layer would recover.
    loose = {"min_agreement": 0.0, "max_mean_abs_diff": 1.0, "max_p95_abs_diff": 1.0}
    record = _quantize(outlier, verification=loose).record
    assert "accuracy_control" not in record
    sens = record["layer_sensitivity"]
    assert sens["candidate_drop"] == pytest.approx(record["metric_worse_by"] * 100)
    probed = [e for e in sens["layers"] if "recovered" in e]
    assert [e["layer"] for e in probed] == ["hidden", "mid", "out"]  # the worst three
    assert probed[0]["recovered"] == max(e["recovered"] for e in probed) > 0


def test_a_budget_not_met_in_the_evaluations_allowed_is_a_rejection_with_the_best(outlier):
    control = {"max_drop_points": 0.5, "max_evaluations": 1}
    with pytest.raises(BudgetNotMet, match=r"after 1 of 1 evaluations; the best lost") as e:
        _quantize(outlier, accuracy_control=control)
    assert e.value.step == "accuracy_control"
    assert e.value.detail.startswith("budget 0.50 points not met; best")


# --------------------------------------------------------------------------- Pruner, Clusterer


def test_one_shot_transforms_hit_their_targets():
    from components.clusterer.clusterer import one_shot_clustered
    from components.pruner.pruner import magnitude_pruned

    values = np.random.default_rng(0).normal(size=(32, 16)).astype(np.float32)
    pruned = magnitude_pruned(values, 0.75)
    assert np.count_nonzero(pruned == 0) == 384  # 75% of 512
    kept = pruned != 0
    assert np.abs(values[~kept]).max() <= np.abs(values[kept]).min()  # the smallest went
    clustered = one_shot_clustered(pruned, 8, preserve_zeros=True)
    assert np.all(clustered[~kept] == 0)  # zeros kept
    assert np.unique(clustered[kept]).size <= 7  # one of the 8 values is zero
    # each value moved to a nearby centroid, never far
    assert np.abs(clustered - pruned).max() < np.ptp(values[kept]) / 7


@pytest.fixture(scope="module")
def mobilenet_style(tmp_path_factory):
    from tests import zoo

    return zoo.mobilenet_block(str(tmp_path_factory.mktemp("mobilenet_style")))


def _eval_top1(model_dir, case):
    import tf_keras

    from components.common import examples as examples_lib
    from components.common.examples import DataConfig

    model = tf_keras.models.load_model(model_dir, compile=False)
    x, y = examples_lib.load_arrays(case.examples_dir, "eval", DataConfig(), model)
    return float(np.mean(np.argmax(model.predict(x, verbose=0), -1) == y))


def test_pruner_leaves_out_the_layers_pruning_breaks_until_within_budget(mobilenet_style, tmp_path):
    """80% magnitude pruning of the zoo's depthwise/BatchNorm model loses far more than 2 points;
    with accuracy control the layer that one-shot pruning hurts most is left dense and the
    fine-tuned model is within 2 points, the rest pruned to the target."""
    from components.common.examples import DataConfig
    from components.pruner import pruner
    from components.pruner.config import PrunerConfig

    case = mobilenet_style
    tuning = {"epochs": 3}
    control = {"max_drop_points": 2.0, "max_evaluations": 3}
    config = PrunerConfig(target_sparsity=0.8, fine_tuning=tuning, accuracy_control=control)
    out = str(tmp_path / "pruned")
    record = pruner.run(case.model_dir, case.examples_dir, out, config, DataConfig())
    ac = record["accuracy_control"]
    before = _eval_top1(case.model_dir, case)
    after = _eval_top1(f"{out}/Format-Serving", case)
    assert record["metric_after"] == pytest.approx(after)
    assert ac["within_budget"] and (before - after) * 100 <= 2.0
    assert ac["drop_before"] > 2.0  # pruning every layer was outside the budget
    # One-shot drops for every pruned-or-spared layer, the costliest first, and it is spared.
    one_shot = ac["one_shot"]
    assert [e["drop"] for e in one_shot] == sorted((e["drop"] for e in one_shot), reverse=True)
    assert ac["spared"] and ac["spared"][0] == one_shot[0]["layer"]
    assert 2 <= ac["evaluations_used"] == len(ac["evaluations"]) <= 3
    # The spared layers stay dense, the others reached the target.
    for name in ac["spared"]:
        assert name not in record["pruned_layers"]
        assert record["skipped_layers"][name] == "left out by accuracy_control"
    assert all(e["sparsity"] >= 0.79 for e in record["layers"].values())


def test_pruner_records_one_shot_layer_sensitivity_on_request(mobilenet_style, tmp_path):
    from components.common.examples import DataConfig
    from components.pruner import pruner
    from components.pruner.config import PrunerConfig

    case = mobilenet_style
    config = PrunerConfig(
        target_sparsity=0.8,
        schedule={"kind": "constant", "frequency_steps": 2},
        fine_tuning={"epochs": 1},
        layer_sensitivity=True,
    )
    record = pruner.run(
        case.model_dir, case.examples_dir, str(tmp_path / "p"), config, DataConfig()
    )
    assert "accuracy_control" not in record  # measured, not acted on
    sens = record["layer_sensitivity"]
    assert sens["method"] == "one_shot"
    assert {e["layer"] for e in sens["layers"]} == set(record["pruned_layers"])
    for entry in sens["layers"]:
        assert entry["drop"] == pytest.approx((record["metric_before"] - entry["metric"]) * 100)
    drops = [e["drop"] for e in sens["layers"]]
    assert drops == sorted(drops, reverse=True)


def test_clusterer_search_is_bounded_and_records_what_it_measured(mobilenet_style, tmp_path):
    from components.clusterer import clusterer
    from components.clusterer.config import ClustererConfig
    from components.common.examples import DataConfig

    case = mobilenet_style
    # A zero budget and one evaluation: one fine-tuning run, whatever it scores.
    config = ClustererConfig(
        number_of_clusters=4,
        fine_tuning={"epochs": 1},
        accuracy_control={"max_drop_points": 0.0, "max_evaluations": 1},
    )
    out = str(tmp_path / "clustered")
    record = clusterer.run(case.model_dir, case.examples_dir, out, config, DataConfig())
    ac = record["accuracy_control"]
    [only] = ac["evaluations"]
    assert ac["evaluations_used"] == 1 and only["spared"] == [] and ac["spared"] == []
    assert ac["within_budget"] == (only["drop"] <= 0.0)
    assert record["metric_after"] == pytest.approx(only["metric"])
    assert record["metric_after"] == pytest.approx(_eval_top1(f"{out}/Format-Serving", case))
    # What clustering each layer alone to 4 values costs, for every clustered layer.
    assert {e["layer"] for e in ac["one_shot"]} == set(record["clustered_layers"])
    before = record["metric_before"]
    for entry in ac["one_shot"]:
        assert entry["drop"] == pytest.approx((before - entry["metric"]) * 100)


# --------------------------------------------------------------------------- report


def test_report_shows_which_layers_cost_the_most():
    from pipelines.report import layers, plots

    pruning = {
        "accuracy_control": {
            "spared": ["conv_b"],
            "unit": "points",
            "drop_before": 39.6,
            "drop_after": -1.0,
            "evaluations_used": 2,
            "within_budget": True,
            "one_shot": [
                {"layer": "conv_a", "drop": 1.0},
                {"layer": "conv_b", "drop": 39.6},
                {"layer": "dense", "drop": 20.8},
            ],
        }
    }
    quantization = {
        "layer_sensitivity": {
            "drop_unit": "points",
            "layers": [
                {"layer": "hidden", "rmse_over_scale": 24.6, "recovered": 12.5},
                {"layer": "mid", "rmse_over_scale": 5.4, "recovered": 0.0},
                {"layer": "out", "rmse_over_scale": 4.6},
            ],
        }
    }
    pruned = layers._costs(pruning)
    assert [e["layer"] for e in pruned["layers"]] == ["conv_b", "dense", "conv_a"]
    assert [e["spared"] for e in pruned["layers"]] == [True, False, False]
    assert pruned["measure"].startswith("metric lost when optimised alone")
    quantized = layers._costs(quantization)
    assert [e["layer"] for e in quantized["layers"]] == ["hidden", "mid"]  # the probed ones
    assert quantized["measure"].startswith("metric recovered when kept in float")
    # No metric probe recovered anything: the debugger's error ranks them instead.
    flat = {"layer_sensitivity": {"layers": [{"layer": "a", "rmse_over_scale": 0.3}]}}
    assert layers._costs(flat)["measure"].startswith("int8 error")
    # A Pruner's one-shot sensitivity recorded without accuracy control.
    measured = {
        "layer_sensitivity": {"method": "one_shot", "layers": [{"layer": "a", "drop": 3.0}]}
    }
    assert layers._costs(measured)["layers"] == [{"layer": "a", "cost": 3.0, "spared": False}]
    assert layers._costs({}) is None

    summary = {
        "layer_costs": [
            {"step": "Pruner", "component": "Pruner", **pruned},
            {"step": "Quantizer_int8", "component": "Quantizer", **quantized},
        ]
    }
    image = plots._layer_cost_plot(summary)
    assert image.startswith("data:image/png;base64,")
    html = "".join(layers.costs_html(summary, "<img>"))
    assert "Which layers cost the most" in html
    assert "<td>Pruner</td><td>conv_b</td><td class='num'>39.6</td>" in html
    assert "no budget" in html and "met" in html


def test_benchmark_section_renders_each_candidate_without_and_with_control():
    from benchmarks import run
    from benchmarks.accuracy_control_report import render_section

    entry = {
        "drop": 37.5,
        "within_rule": False,
        "tflite_bytes": 6500,
        "tflite_gzip_bytes": 3000,
        "p50_ms": 0.004,
        "spared": [],
        "evaluations": None,
    }
    section = {
        "budget": {"points": 1.0, "relative_mae": 0.05},
        "pruning": {"target_sparsity": 0.8, "fine_tuning": {"epochs": 3}},
        "cpu_model": "AMD EPYC",
        "models": {
            "mobilenet_block": {
                "task": "multiclass",
                "int8": {
                    "without": {"rejected": "verification: the flatbuffer differs"},
                    "with": {**entry, "drop": 0.5, "within_rule": True, "spared": ["conv2d_1"]},
                },
                "pruned80": {"without": entry},
            }
        },
    }
    lines = render_section(section, 9)
    assert lines[0] == "## 9. Accuracy control (benchmarks/accuracy_control.py)"
    rows = [line for line in lines if line.startswith("| mobilenet_block")]
    assert len(rows) == 3
    assert rows[0].endswith("| rejected: verification: the flatbuffer differs |")
    assert "| with | 0.50 | 6.5 KB (3.0 KB) | 0.0040 | conv2d_1 | - | within the rule |" in rows[1]
    assert "| 37.50 |" in rows[2] and rows[2].endswith("outside the rule |")
    assert "accuracy_control" in run.SECTIONS
    assert run._section_renderer("accuracy_control") is render_section
