"""Verifying a converted flatbuffer against the Keras model it came from, by the task.

A conversion bug (outputs of the wrong shape or dtype, NaN/Inf, wrong answers) must be caught
before the gate sees the candidate; an example whose probability moved across a boundary must
not be. So the flatbuffer and the Keras model are run on the same eval examples and compared the
way the task reads its outputs:

- multiclass and dense (several classes): top-1 agreement (the same class id), and the mean and
  95th percentile of |probability difference| (logits are compared after their softmax);
- binary, multilabel and dense with one score: decision agreement (the same side of 0.5), and
  the same |probability difference| statistics;
- regression: the relative MAE between the two outputs (mean |difference| divided by the Keras
  outputs' scale, the larger of their mean |value| and their standard deviation), and the 95th
  percentile of |difference| on the same scale.

Each mode has its own limits (:data:`DEFAULT_LIMITS`, documented in docs/accuracy_control.md):
float modes must agree to rounding, int8 modes to what calibration costs a model that still
works. The maximum difference and the 99th percentile are recorded but never decide: one
example's probability may move a long way without the model being wrong.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from components.common import metrics as metrics_lib
from components.common.errors import CandidateError


class ConversionVerificationError(CandidateError):
    """The converted flatbuffer does not run, or disagrees with its Keras model beyond the limits."""

    step = "verification"


@dataclass(frozen=True)
class Limits:
    """What a flatbuffer must meet against its Keras model on the eval examples.

    Attributes:
      min_agreement: least fraction of top-1 ids (multiclass, dense) or decisions (binary,
        multilabel) that are the same; not used for regression.
      max_mean_abs_diff: largest mean |difference|: of probabilities for the classification
        tasks, relative to the outputs' scale for regression (the relative MAE).
      max_p95_abs_diff: largest 95th percentile of the same |difference|.
    """

    min_agreement: float
    max_mean_abs_diff: float
    max_p95_abs_diff: float

    def to_dict(self) -> dict:
        return asdict(self)


_FLOAT = Limits(min_agreement=0.99, max_mean_abs_diff=1e-4, max_p95_abs_diff=1e-3)
_INT8 = Limits(min_agreement=0.8, max_mean_abs_diff=0.08, max_p95_abs_diff=0.35)
#: Per-mode limits. Float32 modes differ by rounding only; float16 by its 11-bit mantissa;
#: dynamic range and 16x8 quantize weights (and, for 16x8, activations finely); full int8 and
#: the QAT modes quantize every activation to 256 levels, so a few examples near a class boundary
#: flip and probabilities move by a few output steps: their limits leave that, and still catch a
#: broken conversion (random or permuted outputs agree on ~1/classes of the examples and differ
#: by tenths on average).
DEFAULT_LIMITS = {
    "none": _FLOAT,
    "sparse_float32": _FLOAT,
    "float16": Limits(min_agreement=0.97, max_mean_abs_diff=5e-3, max_p95_abs_diff=2e-2),
    "dynamic_range": Limits(min_agreement=0.9, max_mean_abs_diff=0.04, max_p95_abs_diff=0.2),
    "int16x8": Limits(min_agreement=0.9, max_mean_abs_diff=0.04, max_p95_abs_diff=0.2),
    "full_int8": _INT8,
    "sparse_int8": _INT8,
    "qat": _INT8,
    "pqat": _INT8,
    "cqat": _INT8,
    "pcqat": _INT8,
}


def _agreement(task, got: np.ndarray, expected: np.ndarray) -> float | None:
    """The fraction of the same answers (class ids or decisions); None for regression."""
    if task is None or task.kind == "regression":
        return None
    if task.kind in ("multiclass", "dense") and got.shape[-1] > 1:
        return float(np.mean(np.argmax(got, axis=-1) == np.argmax(expected, axis=-1)))
    return float(np.mean((got >= 0.5) == (expected >= 0.5)))


def _scale(task, expected: np.ndarray) -> float:
    """What a difference is measured against: 1 for probabilities, the outputs' own size for
    regression (so a target in thousands and one in thousandths are judged alike)."""
    if task is not None and task.kind != "regression":
        return 1.0
    values = np.abs(expected)
    return float(max(values.mean(), expected.std(), 1e-12))


def compare(got, expected, task=None) -> dict:
    """The statistics verification judges by (no limits applied).

    Args:
      got: the flatbuffer's outputs on the eval examples (float, dequantized).
      expected: the Keras model's outputs on the same examples.
      task: the model's :class:`~components.common.metrics.Task` (None: compared as values).
    """
    got = np.asarray(got, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    compared = "outputs"
    if task is not None:
        got = metrics_lib.comparable_outputs(task, got)
        expected = metrics_lib.comparable_outputs(task, expected)
        compared = (
            "values relative to their scale" if task.kind == "regression" else "probabilities"
        )
    scale = _scale(task, expected)
    diff = np.abs(got - expected).reshape(-1) / scale
    return {
        "examples": int(expected.shape[0]),
        "compared": compared,
        "scale": scale,
        "agreement": _agreement(task, got, expected),
        "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
        "p95_abs_diff": float(np.percentile(diff, 95)) if diff.size else 0.0,
        "p99_abs_diff": float(np.percentile(diff, 99)) if diff.size else 0.0,
        "max_abs_diff": float(diff.max()) if diff.size else 0.0,
    }


def _check_outputs(got: np.ndarray, expected: np.ndarray, output_dtype: str, integer_io: bool):
    """The conversion bugs no tolerance excuses: shape, dtype, NaN/Inf."""
    if got.shape != expected.shape:
        raise ConversionVerificationError(
            f"the flatbuffer's output shape {got.shape[1:]} differs from the Keras model's "
            f"{expected.shape[1:]} (per example): the conversion changed the model's output.",
            detail=f"output shape {got.shape[1:]} != {expected.shape[1:]}",
        )
    wanted = ("int8", "int16") if integer_io else ("float32",)
    if output_dtype not in wanted:
        raise ConversionVerificationError(
            f"the flatbuffer's output is {output_dtype}, expected {' or '.join(wanted)} "
            f"({'integer_only_io' if integer_io else 'float outputs'}): the conversion changed "
            "the output's type.",
            detail=f"output dtype {output_dtype}, expected {'/'.join(wanted)}",
        )
    bad = ~np.isfinite(got) & np.isfinite(expected)
    if bad.any():
        rows = int(np.any(bad.reshape(bad.shape[0], -1), axis=1).sum())
        raise ConversionVerificationError(
            f"the flatbuffer outputs NaN or Inf on {rows} of {got.shape[0]} eval examples where "
            "the Keras model's outputs are finite: the conversion is broken for this model "
            "(try another mode, or leave the layer that overflows in float with "
            "quantizer.exclude_layers).",
            detail=f"NaN/Inf on {rows}/{got.shape[0]} examples",
        )


def verify(
    got,
    expected,
    task,
    limits: Limits,
    output_dtype: str = "float32",
    integer_io: bool = False,
) -> dict:
    """Judges the flatbuffer's outputs ``got`` against the Keras model's ``expected``.

    Returns:
      The statistics (:func:`compare`), the limits, and ``passed`` (always True: a failure
      raises).
    Raises:
      ConversionVerificationError: the shape or dtype changed, NaN/Inf appeared, or a statistic
        is outside ``limits`` (naming which, by how much, and what to do).
    """
    got = np.asarray(got)
    expected = np.asarray(expected)
    _check_outputs(got, expected, output_dtype, integer_io)
    stats = compare(got, expected, task)
    failures = []
    agreement = stats["agreement"]
    what = "top-1" if task is not None and task.kind in ("multiclass", "dense") else "decision"
    if agreement is not None and agreement < limits.min_agreement:
        failures.append(
            (
                f"{what} agreement {agreement:.1%} < {limits.min_agreement:.0%}",
                f"the same {what} answer on only {agreement:.1%} of {stats['examples']} eval "
                f"examples (at least {limits.min_agreement:.0%} expected)",
            )
        )
    if stats["mean_abs_diff"] > limits.max_mean_abs_diff:
        failures.append(
            (
                f"mean abs diff {stats['mean_abs_diff']:.3g} > {limits.max_mean_abs_diff:.3g}",
                f"a mean |difference| of {stats['mean_abs_diff']:.4g} in {stats['compared']} "
                f"(at most {limits.max_mean_abs_diff:.4g})",
            )
        )
    if stats["p95_abs_diff"] > limits.max_p95_abs_diff:
        failures.append(
            (
                f"p95 abs diff {stats['p95_abs_diff']:.3g} > {limits.max_p95_abs_diff:.3g}",
                f"a 95th-percentile |difference| of {stats['p95_abs_diff']:.4g} (at most "
                f"{limits.max_p95_abs_diff:.4g})",
            )
        )
    result = {**stats, "limits": limits.to_dict(), "passed": not failures}
    if failures:
        raise ConversionVerificationError(
            "the flatbuffer differs from the Keras model beyond this mode's limits: "
            f"{'; '.join(long for _, long in failures)}. The model is too sensitive for this "
            "mode: set quantizer.accuracy_control (keeps the most sensitive layers in float), "
            "exclude layers, try int16x8 or a QAT mode, or loosen quantizer.verification "
            "(or verify_tolerance).",
            detail=", ".join(short for short, _ in failures),
        )
    return result
