"""Paired comparison of a candidate with the baseline: drop or error increase, its interval, warnings.

No TensorFlow, no TFX: per-example outcomes in, plain dicts out, tested in milliseconds.

Conventions. A *drop* is baseline minus candidate top-1 accuracy (positive: the candidate is
worse); an *error increase* is candidate minus baseline MAE/RMSE (positive: worse). The paired
statistics use per-example outcomes of both models on the same examples; for top-1 correctness the
four cells of the paired table (``n11`` both right, ``n10`` only the baseline right, ``n01`` only
the candidate right, ``n00`` both wrong) hold all there is to know, so the bootstrap resamples the
cells with a multinomial draw, which is the same distribution as resampling examples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

from components.common.numbers import finite as _finite
from components.evaluator.config import EvaluatorConfig


def paired_table(baseline_correct: Sequence[int], candidate_correct: Sequence[int]) -> dict:
    """Counts of the paired 2x2 table of per-example top-1 correctness."""
    base = np.asarray(baseline_correct, dtype=bool)
    cand = np.asarray(candidate_correct, dtype=bool)
    if base.shape != cand.shape:
        raise ValueError(f"paired outcomes differ in length: {base.shape} vs {cand.shape}")
    return {
        "n11": int(np.sum(base & cand)),
        "n10": int(np.sum(base & ~cand)),
        "n01": int(np.sum(~base & cand)),
        "n00": int(np.sum(~base & ~cand)),
    }


def _z(level: float) -> float:
    return NormalDist().inv_cdf((1 + level) / 2)


def mcnemar_exact_p(n10: int, n01: int) -> float:
    """Two-sided p-value of McNemar's exact (binomial) test on the discordant pairs.

    Large tables (more than 10,000 discordant pairs) use the continuity-corrected chi-square
    approximation, which is then indistinguishable from the exact value.
    """
    n = n10 + n01
    if n == 0:
        return 1.0
    k = min(n10, n01)
    if n > 10_000:
        chi2 = (abs(n10 - n01) - 1) ** 2 / n
        return float(min(1.0, math.erfc(math.sqrt(chi2 / 2))))
    tail = sum(math.comb(n, i) for i in range(k + 1))
    return float(min(1.0, 2 * tail / 2**n))


def paired_wald_interval(n10: int, n01: int, n: int, level: float) -> tuple[float, float]:
    """Wald interval of the paired accuracy drop ``(n10 - n01) / n`` (a fraction)."""
    if n <= 0:
        return (math.nan, math.nan)
    drop = (n10 - n01) / n
    variance = (n10 + n01 - (n10 - n01) ** 2 / n) / n**2
    half = _z(level) * math.sqrt(max(variance, 0.0))
    return (drop - half, drop + half)


def bootstrap_drop_interval(
    table: dict, level: float, resamples: int, seed: int
) -> dict[str, tuple[float, float]]:
    """Paired bootstrap percentile intervals of the drop and the relative drop (fractions)."""
    cells = np.array([table["n11"], table["n10"], table["n01"], table["n00"]], dtype=np.int64)
    n = int(cells.sum())
    if n <= 0:
        return {"drop": (math.nan, math.nan), "relative_drop": (math.nan, math.nan)}
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, cells / n, size=resamples)
    drop = (draws[:, 1] - draws[:, 2]) / n
    base_acc = (draws[:, 0] + draws[:, 1]) / n
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(base_acc > 0, drop / base_acc, np.nan)
    lo_q, hi_q = (1 - level) / 2, (1 + level) / 2
    out = {"drop": (float(np.quantile(drop, lo_q)), float(np.quantile(drop, hi_q)))}
    if np.all(np.isnan(relative)):
        out["relative_drop"] = (math.nan, math.nan)
    else:
        out["relative_drop"] = (
            float(np.nanquantile(relative, lo_q)),
            float(np.nanquantile(relative, hi_q)),
        )
    return out


def _regression_stat(values: np.ndarray, metric: str, axis=None):
    mean = np.mean(values, axis=axis)
    return np.sqrt(mean) if metric == "rmse" else mean


def regression_interval(
    baseline_errors: np.ndarray,
    candidate_errors: np.ndarray,
    metric: str,
    level: float,
    method: str,
    resamples: int,
    seed: int,
) -> tuple[float, float]:
    """Paired interval of the error increase (candidate minus baseline MAE or RMSE).

    ``*_errors`` are per-example absolute errors for ``mae`` and squared errors for ``rmse``.
    """
    base = np.asarray(baseline_errors, dtype=np.float64)
    cand = np.asarray(candidate_errors, dtype=np.float64)
    n = base.size
    if n == 0 or cand.size != n:
        return (math.nan, math.nan)
    point = float(_regression_stat(cand, metric) - _regression_stat(base, metric))
    if method == "wald":
        if metric == "rmse":
            # Delta method: d sqrt(m) = dm / (2 sqrt(m)), per example.
            rb, rc = math.sqrt(base.mean()) or 1.0, math.sqrt(cand.mean()) or 1.0
            linear = cand / (2 * rc) - base / (2 * rb)
        else:
            linear = cand - base
        half = _z(level) * float(np.std(linear, ddof=1) if n > 1 else 0.0) / math.sqrt(n)
        return (point - half, point + half)
    rng = np.random.default_rng(seed)
    chunk = max(1, min(resamples, 5_000_000 // max(n, 1)))
    stats = []
    done = 0
    while done < resamples:
        size = min(chunk, resamples - done)
        idx = rng.integers(0, n, size=(size, n))
        stats.append(
            _regression_stat(cand[idx], metric, axis=1)
            - _regression_stat(base[idx], metric, axis=1)
        )
        done += size
    values = np.concatenate(stats)
    return (
        float(np.quantile(values, (1 - level) / 2)),
        float(np.quantile(values, (1 + level) / 2)),
    )


def classification_comparison(
    table: dict, baseline_accuracy: float, config: EvaluatorConfig
) -> dict:
    """Drop, its paired interval, McNemar's p-value and split-size warnings for one candidate."""
    conf = config.confidence
    n = table["n11"] + table["n10"] + table["n01"] + table["n00"]
    drop = (table["n10"] - table["n01"]) / n if n else math.nan
    if conf.method == "wald":
        interval = paired_wald_interval(table["n10"], table["n01"], n, conf.level)
        relative = (
            tuple(v / baseline_accuracy for v in interval)
            if _finite(baseline_accuracy) and baseline_accuracy > 0
            else (math.nan, math.nan)
        )
    else:
        both = bootstrap_drop_interval(table, conf.level, conf.resamples, conf.seed)
        interval, relative = both["drop"], both["relative_drop"]
    note = None
    if n and table["n10"] + table["n01"] == 0:
        # No discordant pair: resampling cannot vary, and [0, 0] would claim certainty the split
        # does not have. Use the exact (Clopper-Pearson) bound on the discordance rate instead.
        bound = 1 - ((1 - conf.level) / 2) ** (1 / n)
        interval = (-bound, bound)
        relative = tuple(v / baseline_accuracy for v in interval) if baseline_accuracy else relative
        note = "no discordant pairs: exact binomial bound on the discordance rate"
    comparison = {
        **table,
        "examples": n,
        "drop": drop,
        "drop_points": 100 * drop,
        "relative_drop": drop / baseline_accuracy if baseline_accuracy else math.nan,
        "interval": {
            "method": conf.method,
            "level": conf.level,
            "drop_points": [100 * interval[0], 100 * interval[1]],
            "relative_drop": list(relative),
            "note": note,
        },
        "mcnemar_p": mcnemar_exact_p(table["n10"], table["n01"]),
    }
    comparison["warnings"] = _resolution_warnings(comparison, baseline_accuracy, config)
    return comparison


def _resolution_warnings(comparison: dict, baseline_accuracy: float, config: EvaluatorConfig):
    rules = config.rules
    n = comparison["examples"]
    warnings = []
    if not n:
        return ["no paired examples: the drop cannot be estimated"]
    lo, hi = comparison["interval"]["drop_points"]
    half = (hi - lo) / 2 if _finite(lo) and _finite(hi) else math.nan
    thresholds = []
    if rules.max_accuracy_drop_points is not None:
        thresholds.append(("max_accuracy_drop_points", rules.max_accuracy_drop_points))
    if rules.max_relative_accuracy_drop is not None and _finite(baseline_accuracy):
        thresholds.append(
            (
                "max_relative_accuracy_drop",
                100 * rules.max_relative_accuracy_drop * baseline_accuracy,
            )
        )
    one_example = 100 / n
    level = f"{config.confidence.level:.0%}"
    for name, points in thresholds:
        if points <= 0:
            continue  # "no drop at all" is resolvable: a single lost example fails it
        if one_example > points:
            warnings.append(
                f"{name}: one eval example is {one_example:.3f} points, more than the "
                f"{points:.3f}-point threshold: the split cannot resolve this threshold"
            )
        if not (_finite(lo) and lo <= points <= hi):
            continue  # the whole interval is on one side: the verdict holds at this level
        if half > points:
            needed = math.ceil(n * (half / points) ** 2)
            warnings.append(
                f"{name}: the {level} interval of the drop [{lo:.3f}, {hi:.3f}] points holds the "
                f"{points:.3f}-point threshold and is wider (+/-{half:.3f}) than the threshold "
                f"itself: {n} examples are too few to resolve it (roughly {needed} would)"
            )
        else:
            warnings.append(
                f"{name}: the {level} interval of the drop [{lo:.3f}, {hi:.3f}] points holds the "
                f"{points:.3f}-point threshold: the verdict is uncertain at this split size"
            )
    return warnings


def regression_comparison(
    baseline_errors: np.ndarray,
    candidate_errors: np.ndarray,
    baseline_value: float,
    config: EvaluatorConfig,
) -> dict:
    """Error increase and its paired interval for one regression candidate."""
    conf = config.confidence
    metric = config.regression_metric
    base = np.asarray(baseline_errors, dtype=np.float64)
    cand = np.asarray(candidate_errors, dtype=np.float64)
    increase = float(_regression_stat(cand, metric) - _regression_stat(base, metric))
    lo, hi = regression_interval(
        base, cand, metric, conf.level, conf.method, conf.resamples, conf.seed
    )
    relative = [v / baseline_value if baseline_value else math.nan for v in (lo, hi)]
    warnings = []
    threshold = config.rules.max_error_increase
    if threshold and _finite(lo) and lo <= threshold <= hi:
        warnings.append(
            f"max_error_increase: the {conf.level:.0%} interval of the increase "
            f"[{lo:.4g}, {hi:.4g}] holds the threshold {threshold:.4g}: the verdict is uncertain "
            "at this split size"
            + (" and the split is too small to resolve it" if (hi - lo) / 2 > threshold else "")
        )
    return {
        "examples": int(base.size),
        "metric": metric,
        "increase": increase,
        "relative_increase": increase / baseline_value if baseline_value else math.nan,
        "interval": {
            "method": conf.method,
            "level": conf.level,
            "increase": [lo, hi],
            "relative_increase": relative,
        },
        "warnings": warnings,
    }


def score_comparison(
    baseline_scores: np.ndarray,
    candidate_scores: np.ndarray,
    baseline_value: float,
    config: EvaluatorConfig,
) -> dict:
    """Drop of a per-example score (fraction of labels or pixels right) and its paired interval,
    shaped like :func:`classification_comparison`, for multilabel and dense tasks."""
    conf = config.confidence
    base = np.asarray(baseline_scores, dtype=np.float64)
    cand = np.asarray(candidate_scores, dtype=np.float64)
    n = int(base.size)
    drop = float(base.mean() - cand.mean()) if n else math.nan
    # regression_interval bounds mean(candidate) - mean(baseline): the drop is its negative.
    args = (conf.level, conf.method, conf.resamples, conf.seed)
    lo, hi = regression_interval(base, cand, "mae", *args)
    interval = (-hi, -lo)
    relative = [v / baseline_value if baseline_value else math.nan for v in interval]
    comparison = {
        "examples": n,
        "drop": drop,
        "drop_points": 100 * drop,
        "relative_drop": drop / baseline_value if baseline_value else math.nan,
        "interval": {
            "method": conf.method,
            "level": conf.level,
            "drop_points": [100 * interval[0], 100 * interval[1]],
            "relative_drop": relative,
            "note": "paired bootstrap over examples of the per-example score",
        },
    }
    comparison["warnings"] = _resolution_warnings(comparison, baseline_value, config)
    return comparison
