"""The gate's decision on synthetic metric sets: rules, paired statistics, selection (no TF)."""

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from components.common.errors import ConfigError
from components.evaluator import outcomes, paired, rules
from components.evaluator.config import THRESHOLD_RULES, EvaluatorConfig
from components.evaluator.latency import parse_benchmark_model_output


def cfg(**kwargs) -> EvaluatorConfig:
    return EvaluatorConfig.parse(kwargs)


def judge(metrics, config, error=None, production_state="not_configured"):
    verdict = rules.judge_candidate(metrics, config, error, production_state)
    return {"name": metrics.get("_name", "c"), "metrics": metrics, **verdict}


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "config, field",
    [
        ({"rules": {"max_relative_accuracy_drop": -0.01}}, "rules.max_relative_accuracy_drop"),
        ({"rules": {"max_accuracy_drop_points": -1}}, "rules.max_accuracy_drop_points"),
        ({"rules": {"min_speedup": 0}}, "rules.min_speedup"),
        ({"task": "classification", "rules": {"max_error_increase": 0.1}}, "max_error_increase"),
        ({"task": "regression", "rules": {"max_accuracy_drop_points": 1}}, "max_accuracy_drop"),
        ({"rules": {"accuracy_drop_bound": "upper_confidence"}}, "accuracy_drop_bound"),
        ({"rules": {"max_size_vs_production_ratio": 1.0}}, "production.metrics_path"),
        ({"production": {"required": True}}, "production.required"),
        ({"confidence": {"level": 1.5}}, "confidence.level"),
        ({"rules": {"max_acuracy_drop_points": 1}}, "max_acuracy_drop_points"),
    ],
)
def test_contradicting_or_bad_rules_fail_at_config_validation(config, field):
    with pytest.raises(ConfigError) as raised:
        EvaluatorConfig.parse(config, where="evaluator")
    assert field in str(raised.value)


def test_every_threshold_rule_maps_to_a_metric():
    assert set(rules.RULE_METRICS) == set(THRESHOLD_RULES)
    config = cfg(rules={"max_accuracy_drop_points": 1, "min_speedup": 1.0})
    assert config.rules.configured() == ["max_accuracy_drop_points", "min_speedup"]


# --------------------------------------------------------------------------- paired statistics


def test_wald_interval_and_mcnemar_against_a_hand_example():
    # 100 examples: the baseline alone is right on 10, the candidate alone on 2.
    # drop = 8/100; var = (12 - 64/100) / 100^2 = 0.001136; half = 1.959964 * 0.033705 = 0.066060
    lo, hi = paired.paired_wald_interval(10, 2, 100, 0.95)
    assert lo == pytest.approx(0.08 - 0.066060, abs=1e-5)
    assert hi == pytest.approx(0.08 + 0.066060, abs=1e-5)
    # exact McNemar: 2 * P(X <= 2 | Binomial(12, 1/2)) = 2 * (1 + 12 + 66) / 4096
    assert paired.mcnemar_exact_p(10, 2) == pytest.approx(158 / 4096)
    assert paired.mcnemar_exact_p(0, 0) == 1.0
    assert paired.mcnemar_exact_p(5, 5) == 1.0


def test_bootstrap_interval_is_deterministic_and_agrees_with_wald_and_example_resampling():
    table = {"n11": 330, "n10": 12, "n01": 4, "n00": 14}
    a = paired.bootstrap_drop_interval(table, 0.95, 4000, seed=7)
    b = paired.bootstrap_drop_interval(table, 0.95, 4000, seed=7)
    assert a == b
    wald = paired.paired_wald_interval(12, 4, 360, 0.95)
    assert a["drop"][0] == pytest.approx(wald[0], abs=0.006)
    assert a["drop"][1] == pytest.approx(wald[1], abs=0.006)
    # Resampling the cells is resampling the examples: compare with an explicit bootstrap.
    base = np.array([1] * 342 + [0] * 18)
    cand = np.array([1] * 330 + [0] * 12 + [1] * 4 + [0] * 14)
    assert paired.paired_table(base, cand) == table
    rng = np.random.default_rng(1)
    idx = rng.integers(0, 360, size=(4000, 360))
    drops = base[idx].mean(axis=1) - cand[idx].mean(axis=1)
    assert a["drop"][0] == pytest.approx(np.quantile(drops, 0.025), abs=0.004)
    assert a["drop"][1] == pytest.approx(np.quantile(drops, 0.975), abs=0.004)


def test_regression_interval_hand_example_and_methods_agree():
    base = np.array([1.0, 2.0, 3.0, 4.0])
    cand = np.array([2.0, 2.0, 4.0, 4.0])  # per-example increase 1, 0, 1, 0: mean 0.5
    lo, hi = paired.regression_interval(base, cand, "mae", 0.95, "wald", 100, 0)
    # sd of (1, 0, 1, 0) with ddof=1 = 0.57735; half = 1.959964 * 0.57735 / 2 = 0.565795
    assert (lo, hi) == pytest.approx((0.5 - 0.565795, 0.5 + 0.565795), abs=1e-5)
    rng = np.random.default_rng(0)
    base = np.abs(rng.normal(0, 1, 2000))
    cand = base + np.abs(rng.normal(0.1, 0.2, 2000))
    for metric, values in (("mae", (base, cand)), ("rmse", (base**2, cand**2))):
        wald = paired.regression_interval(*values, metric, 0.9, "wald", 1000, 0)
        boot = paired.regression_interval(*values, metric, 0.9, "bootstrap", 1000, 0)
        assert boot == pytest.approx(wald, abs=0.01)


def test_classification_comparison_and_resolution_warnings():
    config = cfg(rules={"max_accuracy_drop_points": 0.2})
    comp = paired.classification_comparison(
        {"n11": 340, "n10": 3, "n01": 1, "n00": 16}, 343 / 360, config
    )
    assert comp["drop_points"] == pytest.approx(100 * 2 / 360)
    assert comp["mcnemar_p"] == pytest.approx(2 * 5 / 16)  # 2 * P(X<=1 | n=4)
    lo, hi = comp["interval"]["drop_points"]
    assert lo <= comp["drop_points"] <= hi
    text = " ".join(comp["warnings"])
    assert "one eval example is 0.278 points" in text  # 0.2 points cannot be resolved by 360
    assert "too few to resolve it" in text
    # A drop far beyond the threshold is a firm verdict: no "uncertain" warning.
    far = paired.classification_comparison(
        {"n11": 280, "n10": 70, "n01": 0, "n00": 10},
        350 / 360,
        cfg(rules={"max_accuracy_drop_points": 1.0}),
    )
    assert far["warnings"] == []


def test_identical_predictions_do_not_claim_a_zero_width_interval():
    config = cfg(rules={"max_accuracy_drop_points": 1.0})
    comp = paired.classification_comparison(
        {"n11": 353, "n10": 0, "n01": 0, "n00": 7}, 353 / 360, config
    )
    # 1 - 0.025 ** (1 / 360) = 1.0195%: 360 examples cannot show a 1-point drop is excluded.
    assert comp["drop_points"] == 0
    assert comp["interval"]["drop_points"] == pytest.approx([-1.0195, 1.0195], abs=1e-4)
    assert any("too few to resolve" in w for w in comp["warnings"])


# --------------------------------------------------------------------------- rules, fail closed


def full_metrics(**overrides):
    m = {
        "top1_accuracy": 0.97,
        "baseline_top1_accuracy": 0.98,
        "accuracy_drop_points": 1.0,
        "accuracy_drop_points_upper": 2.5,
        "relative_accuracy_drop": 0.0102,
        "relative_accuracy_drop_upper": 0.0255,
        "latency_ms": 0.5,
        "baseline_latency_ms": 1.0,
        "speedup": 2.0,
        "size_bytes": 100_000.0,
        "baseline_size_bytes": 400_000.0,
        "compression_ratio": 4.0,
    }
    m.update(overrides)
    return m


def test_rules_report_value_threshold_and_verdict():
    config = cfg(
        rules={"max_accuracy_drop_points": 1.5, "min_speedup": 2.5, "max_size_bytes": 10**6}
    )
    verdict = judge(full_metrics(), config)
    by_rule = {r["rule"]: r for r in verdict["rules"]}
    assert by_rule["max_accuracy_drop_points"]["passed"] is True
    assert by_rule["max_accuracy_drop_points"]["value"] == 1.0
    assert by_rule["max_accuracy_drop_points"]["threshold"] == 1.5
    assert by_rule["min_speedup"]["passed"] is False
    assert by_rule["min_speedup"]["op"] == ">="
    assert not verdict["eligible"]
    assert any("min_speedup" in r for r in verdict["rejected_because"])


def test_latency_rules_say_which_figure_they_judge():
    config = cfg(rules={"max_latency_ms": 1.0, "min_speedup": 1.5, "latency_statistic": "p50"})
    by_rule = {r["rule"]: r for r in judge(full_metrics(latency_num_threads=1.0), config)["rules"]}
    assert by_rule["max_latency_ms"]["detail"] == "latency_ms 0.5 <= 1 (p50, batch 1, 1 thread)"
    assert by_rule["min_speedup"]["num_threads"] == 1
    assert by_rule["min_speedup"]["latency_statistic"] == "p50"
    four = judge(full_metrics(latency_num_threads=4.0), config)["rules"][0]["detail"]
    assert four.endswith("(p50, batch 1, 4 threads)")
    # External figures that do not say how they were run say so.
    unstated = judge(full_metrics(), config)["rules"][0]
    assert unstated["num_threads"] is None and "threads not stated" in unstated["detail"]
    missing = judge(full_metrics(latency_ms=None, latency_num_threads=1.0), config)["rules"][0]
    assert missing["detail"] == "fail closed: latency_ms is unmeasured (p50, batch 1, 1 thread)"
    assert "num_threads" not in by_rule.get("max_accuracy_drop_points", {})


def test_derived_metrics_carry_the_thread_count_of_the_latency_used():
    config = cfg(rules={"min_speedup": 1.0})
    lat = {"p95_ms": 0.5, "num_threads": 2, "multi_thread": {"p95_ms": 0.3, "num_threads": 4}}
    metrics = rules.derive_metrics(
        {"latency": lat}, {"latency": {"p95_ms": 1.0, "num_threads": 2}}, None, None, config
    )
    assert metrics["latency_ms"] == 0.5 and metrics["speedup"] == 2.0
    assert metrics["latency_num_threads"] == 2.0


def test_upper_confidence_bound_is_stricter_than_the_point_estimate():
    point = cfg(rules={"max_accuracy_drop_points": 2.0})
    upper = cfg(rules={"max_accuracy_drop_points": 2.0, "accuracy_drop_bound": "upper_confidence"})
    assert judge(full_metrics(), point)["eligible"]
    verdict = judge(full_metrics(), upper)
    assert not verdict["eligible"]
    assert verdict["rules"][0]["metric"] == "accuracy_drop_points_upper"
    assert verdict["rules"][0]["value"] == 2.5


@pytest.mark.parametrize("bad", [None, math.nan, math.inf])
def test_missing_or_nan_metric_fails_closed(bad):
    config = cfg(rules={"max_latency_ms": 10.0})
    verdict = judge(full_metrics(latency_ms=bad), config)
    assert not verdict["eligible"]
    assert "fail closed" in verdict["rules"][0]["detail"]


def test_no_rules_blesses_nothing_and_a_load_failure_fails_closed():
    config = cfg()
    verdict = judge(full_metrics(), config)
    assert not verdict["eligible"]
    decision = rules.select([verdict], config)
    assert not decision["blessed"] and "no rules configured" in decision["reason"]
    config = cfg(rules={"max_size_bytes": 10**9})
    verdict = judge(full_metrics(), config, error="does not load: corrupt flatbuffer")
    assert not verdict["eligible"]
    assert "corrupt flatbuffer" in " ".join(verdict["rejected_because"])


def test_production_comparison_states():
    config = cfg(
        rules={"max_size_bytes": 10**9, "max_accuracy_drop_vs_production_points": 0.5},
        production={"metrics_path": "/nowhere/production_metrics.json"},
    )
    prod = {"accuracy": 0.975, "size_gzip_bytes": 90_000}
    candidate = {"accuracy": {"top1_accuracy": 0.97}, "size": {"gzip_bytes": 100_000}}
    baseline = {"accuracy": {"top1_accuracy": 0.98}, "size": {"gzip_bytes": 400_000}}
    m = rules.derive_metrics(candidate, baseline, None, prod, config)
    assert m["accuracy_drop_vs_production_points"] == pytest.approx(0.5)
    assert m["size_vs_production_ratio"] == pytest.approx(100 / 90)
    assert judge(m, config, production_state="available")["eligible"]
    # First run, no production model yet and optional: the production rule is skipped.
    m = rules.derive_metrics(candidate, baseline, None, None, config)
    verdict = judge(m, config, production_state="absent_optional")
    assert verdict["eligible"]
    assert [r["passed"] for r in verdict["rules"]] == [True, None]
    # Required and absent: fail closed.
    verdict = judge(m, config, production_state="absent_required")
    assert not verdict["eligible"]
    # Only rules against an absent optional production: nothing was checked, nothing blessed.
    only = cfg(
        rules={"max_accuracy_drop_vs_production_points": 0.5},
        production={"metrics_path": "/nowhere.json"},
    )
    assert not judge(m, only, production_state="absent_optional")["eligible"]


rule_values = {
    "max_accuracy_drop_points": st.floats(0, 5),
    "max_relative_accuracy_drop": st.floats(0, 0.1),
    "min_accuracy": st.floats(0.5, 1),
    "max_latency_ms": st.floats(0.01, 5),
    "min_speedup": st.floats(0.5, 3),
    "max_size_bytes": st.integers(1, 10**6),
    "min_compression_ratio": st.floats(0.5, 5),
}
metric_value = st.one_of(
    st.none(),
    st.just(math.nan),
    st.just(math.inf),
    st.floats(0, 10),  # often within the thresholds above: blessings happen
    st.floats(0, 10**6),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    chosen=st.dictionaries(st.sampled_from(sorted(rule_values)), st.just(True)),
    data=st.data(),
    n_candidates=st.integers(1, 5),
    objective=st.sampled_from(["smallest", "fastest", "most_accurate"]),
    bound=st.sampled_from(["point", "upper_confidence"]),
)
def test_property_nothing_that_violates_a_rule_or_lacks_a_metric_is_blessed(
    chosen, data, n_candidates, objective, bound
):
    rule_set = {name: data.draw(rule_values[name], label=name) for name in chosen}
    if bound == "upper_confidence" and not {
        "max_accuracy_drop_points",
        "max_relative_accuracy_drop",
    } & set(rule_set):
        bound = "point"
    config = cfg(rules={**rule_set, "accuracy_drop_bound": bound}, objective=objective)
    metric_names = sorted(full_metrics())
    judged = []
    for i in range(n_candidates):
        # Some candidates are clean (all figures finite and small): they often pass.
        values = st.floats(0, 3) if data.draw(st.booleans(), label=f"c{i}.clean") else metric_value
        metrics = {m: data.draw(values, label=f"c{i}.{m}") for m in metric_names}
        metrics = {
            k: (None if v is not None and not math.isfinite(v) else v) for k, v in metrics.items()
        }
        verdict = rules.judge_candidate(metrics, config)
        judged.append({"name": f"cand{i}", "metrics": metrics, **verdict})
    decision = rules.select(judged, config)
    if not rule_set:
        assert not decision["blessed"]
        return
    event(f"blessed={decision['blessed']}")
    if not decision["blessed"]:
        return
    chosen_one = next(c for c in judged if c["name"] == decision["selected"])
    for rule, threshold in rule_set.items():
        metric, op = rules.RULE_METRICS[rule]
        if bound == "upper_confidence" and metric in rules.UPPER_BOUND_METRICS:
            metric += "_upper"
        value = chosen_one["metrics"][metric]
        assert value is not None and math.isfinite(value), (rule, value)
        slack = rules.TOLERANCE * max(1.0, abs(threshold))  # float rounding only
        assert value <= threshold + slack if op == "<=" else value >= threshold - slack
    objective_metric, _ = rules.objective_metric(config)
    assert chosen_one["metrics"][objective_metric] is not None


def test_selection_objectives_and_deterministic_tie_break():
    specs = {
        "int8": dict(size_bytes=100.0, latency_ms=2.0, top1_accuracy=0.95),
        "float16": dict(size_bytes=200.0, latency_ms=1.0, top1_accuracy=0.97),
        "pcqat": dict(size_bytes=100.0, latency_ms=1.5, top1_accuracy=0.97),
        "pruned": dict(size_bytes=50.0, latency_ms=0.5, top1_accuracy=0.90),  # fails the rule
    }
    expected = {"smallest": "pcqat", "fastest": "float16", "most_accurate": "pcqat"}
    for objective, winner in expected.items():
        config = cfg(rules={"min_accuracy": 0.94}, objective=objective)
        judged = []
        for name, figures in specs.items():
            m = full_metrics(**figures)
            judged.append({"name": name, "metrics": m, **rules.judge_candidate(m, config)})
        decision = rules.select(judged, config)
        assert decision["selected"] == winner, (objective, decision)
        assert "pruned" not in decision["ranking"]
    # Exact ties on every objective: the name decides, whatever the input order.
    config = cfg(rules={"min_accuracy": 0.5})
    twins = [{"name": n, "metrics": full_metrics()} for n in ("b_twin", "a_twin", "c_twin")]
    for c in twins:
        c.update(rules.judge_candidate(c["metrics"], config))
    assert rules.select(twins, config)["selected"] == "a_twin"
    assert rules.select(twins[::-1], config)["selected"] == "a_twin"


# --------------------------------------------------------------------------- per-example outcomes


def test_outcomes_top_k_loss_and_combining():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1]])
    labels = np.array([0, 1, 2])
    settings_ = outcomes.AccuracySettings(top_k=2, compute_loss=True)
    out = outcomes.outcomes(probs, labels, settings_)
    assert [o["correct"] for o in out] == [1, 0, 0]
    assert [o["top_k"] for o in out] == [1, 1, 0]
    assert out[1]["loss"] == pytest.approx(-math.log(0.3))
    logits = np.log(probs)
    from_logits = outcomes.outcomes(
        logits, labels, outcomes.AccuracySettings(compute_loss=True, from_logits=True)
    )
    assert [o["loss"] for o in from_logits] == pytest.approx([o["loss"] for o in out])
    with pytest.raises(Exception, match="class ids"):
        outcomes.outcomes(probs, np.array([0, 1, 3]), settings_)
    reg = outcomes.outcomes(
        np.array([[1.5], [2.0]]), np.array([1, 4]), outcomes.AccuracySettings(task="regression")
    )
    assert reg == [{"abs_err": 0.5, "sq_err": 0.25}, {"abs_err": 2.0, "sq_err": 4.0}]

    rows = [
        {"outcomes": {"baseline": {"correct": b}, "q": {"correct": q}}}
        for b, q in [(1, 1), (1, 0), (0, 1), (1, 0), (0, 0)]
    ]
    empty = {"examples": 0, "models": {}, "paired": {}}
    whole = empty
    for row in rows:
        whole = outcomes.add_row(whole, row)
    halves = [{"examples": 0, "models": {}, "paired": {}} for _ in range(2)]
    for i, row in enumerate(rows):
        outcomes.add_row(halves[i % 2], row)
    assert outcomes.merge(halves) == outcomes.merge([whole])
    result = outcomes.finalize(whole, outcomes.AccuracySettings())
    assert result["models"]["baseline"]["top1_accuracy"] == pytest.approx(3 / 5)
    assert result["paired"]["q"] == {"n11": 1, "n10": 2, "n01": 1, "n00": 1}


@pytest.mark.parametrize(
    "task, preds, labels",
    [
        (
            "classification",
            [[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1], [0.2, 0.2, 0.6]],
            [0, 1, 2, 2],
        ),
        ("regression", [[1.5], [2.0], [0.0], [3.0]], [1.0, 4.0, 0.5, 3.0]),
        ("binary", [[0.9], [0.2], [0.6], [0.4]], [1, 1, 0, 0]),
    ],
)
def test_batches_of_columns_sum_and_round_trip_as_per_example_rows(task, preds, labels):
    """The numpy batch path (what the Beam pass runs) adds up to the per-example rows, and the
    written JSON line of a batch reads back as those rows."""
    settings_ = outcomes.AccuracySettings(task=task, top_k=2 if task == "classification" else None)
    preds, labels = np.array(preds), np.array(labels)
    base = outcomes.outcome_columns(preds, labels, settings_)
    cand = outcomes.outcome_columns(preds[::-1].copy(), labels, settings_)
    keys = [f"k{i}" for i in range(len(labels))]
    batch = {
        "keys": keys,
        "labels": labels,
        "outcomes": {"baseline": base, "q": cand, "bad": {"error": "boom"}},
    }
    by_batch = outcomes.add_batch({"examples": 0, "models": {}, "paired": {}}, batch)
    rows = outcomes.rows_of_batch(json.loads(outcomes.batch_to_json(batch)))
    assert [r["key"] for r in rows] == keys
    assert [r["outcomes"]["baseline"] for r in rows] == outcomes.outcomes(preds, labels, settings_)
    assert all(r["outcomes"]["bad"] == {"error": "boom"} for r in rows)
    by_row = {"examples": 0, "models": {}, "paired": {}}
    for row in rows:
        outcomes.add_row(by_row, row)
    assert by_batch["models"].keys() == by_row["models"].keys()
    for name in by_row["models"]:
        for key, value in by_row["models"][name].items():
            assert by_batch["models"][name][key] == pytest.approx(value), (name, key)
    assert by_batch["paired"] == by_row["paired"]
    assert by_batch["models"]["bad"]["errors"] == len(labels)
    assert (task != "regression") == bool(by_batch["paired"])


def test_benchmark_model_output_is_parsed():
    text = """INFO: Loaded model /data/local/tmp/model.tflite
INFO: count=55 first=2400 curr=1900 min=1850 max=2700 avg=1990.5 std=120
INFO: Running benchmark for at least 50 iterations and at least 1 seconds
INFO: count=512 first=1950 curr=1920 min=1800 max=2300 avg=1922.29 std=78
INFO: Inference timings in us: Init: 6432, First inference: 2385, Warmup (avg): 1990.5, Inference (avg): 1922.29
INFO: Memory footprint delta from the start of the tool (MB): init=3.7 overall=10.4
"""
    stats = parse_benchmark_model_output(text)
    assert stats["mean_ms"] == pytest.approx(1.92229)
    assert stats["min_ms"] == pytest.approx(1.8)
    assert stats["max_ms"] == pytest.approx(2.3)
    assert stats["runs"] == 512
    assert "p95_ms" not in stats
    with pytest.raises(Exception, match="Inference timings"):
        parse_benchmark_model_output("nothing here")
