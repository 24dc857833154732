"""Quantizer configuration: one quantization mode per run, validated when the pipeline is built."""

from __future__ import annotations

from typing import Literal

import pydantic

from components.common.config import StrictModel, own_defaults
from components.common.sensitivity import AccuracyControlConfig
from components.common.training import FineTuneConfig, TeacherFineTuneConfig

Mode = Literal[
    "none",
    "dynamic_range",
    "float16",
    "full_int8",
    "int16x8",
    "qat",
    "pqat",
    "cqat",
    "pcqat",
    "sparse_float32",
    "sparse_int8",
]

#: Sparse inference (TFLite ``EXPERIMENTAL_SPARSITY``): the pruned zeros are encoded sparse in the
#: flatbuffer, for the runtimes with sparse kernels; each is its dense counterpart otherwise.
SPARSE_MODES = {"sparse_float32": "none", "sparse_int8": "full_int8"}
#: Post-training modes calibrated on a representative sample of the train split.
CALIBRATED_MODES = frozenset({"full_int8", "int16x8", "sparse_int8"})
#: Quantization-aware training modes (fine-tuned with fake-quant, then converted to int8).
QAT_MODES = frozenset({"qat", "pqat", "cqat", "pcqat"})
#: Modes whose activations are integers (so integer-only I/O and per-layer exclusions apply).
INTEGER_MODES = CALIBRATED_MODES | QAT_MODES
#: Modes that must keep the input's sparsity / clusters (and so require a pruned / clustered input).
SPARSITY_PRESERVING_MODES = frozenset({"pqat", "pcqat", *SPARSE_MODES})
CLUSTER_PRESERVING_MODES = frozenset({"cqat", "pcqat"})

#: Calibration sample size when none is configured (the TFLite guide's order of magnitude).
DEFAULT_REPRESENTATIVE_SAMPLES = 100

#: The largest |flatbuffer - Keras| on one example, relative to max(1, |Keras output|), per mode:
#: what the Quantizer's verification allowed before it judged by the task (verification.py); the
#: TFLite speed benchmark still checks its conversions by it (benchmarks/tflite_speed_report.py).
DEFAULT_TOLERANCES = {
    "none": 1e-4,
    "float16": 1e-2,
    "dynamic_range": 5e-2,
    "int16x8": 5e-2,
    "full_int8": 1e-1,
    "qat": 1e-1,
    "pqat": 1e-1,
    "cqat": 1e-1,
    "pcqat": 1e-1,
    "sparse_float32": 1e-4,
    "sparse_int8": 1e-1,
}

#: Modes whose layers can be kept in float one by one (the debugger's denylist): per-layer errors,
#: accuracy control.
SELECTIVE_MODES = frozenset({"full_int8"})


class VerificationConfig(StrictModel):
    """Limits of the flatbuffer-vs-Keras check on the eval examples; unset: the mode's default
    (components/quantizer/verification.DEFAULT_LIMITS, docs/accuracy_control.md)."""

    min_agreement: float | None = pydantic.Field(
        None,
        ge=0,
        le=1,
        description="Least fraction of eval examples with the same top-1 class (multiclass, "
        "dense) or the same decisions (binary, multilabel).",
    )
    max_mean_abs_diff: float | None = pydantic.Field(
        None,
        gt=0,
        description="Largest mean |difference| of the outputs: probabilities for the "
        "classification tasks, relative to the outputs' scale for regression (relative MAE).",
    )
    max_p95_abs_diff: float | None = pydantic.Field(
        None, gt=0, description="Largest 95th percentile of the same |difference|."
    )


class QuantizerConfig(StrictModel):
    """How a model is quantized and converted to TFLite."""

    mode: Mode = pydantic.Field(
        "full_int8",
        description="none (float32), dynamic_range (int8 weights), float16, full_int8 (int8 "
        "weights and activations, calibrated), int16x8 (16-bit activations, 8-bit weights), qat "
        "(quantization-aware training), pqat / cqat / pcqat (QAT that keeps sparsity / "
        "clusters / both), sparse_float32 / sparse_int8 (float32 / full int8 with the pruned "
        "zeros encoded sparse: TFLite's EXPERIMENTAL_SPARSITY; needs a pruned model).",
    )
    representative_samples: int | None = pydantic.Field(
        None,
        ge=1,
        le=100_000,
        description="Train examples used to calibrate activation ranges (full_int8, int16x8). "
        f"Default: {DEFAULT_REPRESENTATIVE_SAMPLES}, or the whole train split when smaller; a "
        "value larger than the split is an error.",
    )
    integer_only_io: bool = pydantic.Field(
        False,
        description="Integer input and output tensors (int8; int16 for int16x8) instead of "
        "float, for integer-only accelerators. Integer modes only.",
    )
    fine_tuning: TeacherFineTuneConfig = pydantic.Field(
        default_factory=TeacherFineTuneConfig,
        description="QAT fine-tuning (qat, pqat, cqat, pcqat); with distillation, the input "
        "model is the teacher.",
    )
    exclude_layers: list[str] = pydantic.Field(
        default_factory=list,
        description="Keras layer names left in float (integer modes): layers without an int8 "
        "kernel or too sensitive to quantize. An op fused from several layers (Conv2D + "
        "BatchNormalization + ReLU) stays in float when any of them is named (or its name as "
        "records give it, conv2d+batch_normalization+re_lu).",
    )
    verification: VerificationConfig = pydantic.Field(
        default_factory=VerificationConfig,
        description="How close the flatbuffer must stay to the Keras model on the eval "
        "examples, compared by the task (agreement, mean and p95 |difference|); unset limits "
        "take the mode's defaults.",
    )
    verify_tolerance: float | None = pydantic.Field(
        None,
        gt=0,
        description="Shorthand for verification.max_mean_abs_diff (the largest mean "
        "|flatbuffer - Keras| output difference).",
    )
    accuracy_control: AccuracyControlConfig | None = pydantic.Field(
        None,
        description="full_int8: keep the layers that cost the most in float, "
        "greedily, until the flatbuffer's metric on the eval split is within the budget "
        "(max_drop_points, or max_relative_error_increase for regression), in at most "
        "max_evaluations evaluations; a budget it cannot meet rejects the candidate.",
    )
    layer_sensitivity: bool = pydantic.Field(
        True,
        description="full_int8: record each layer's quantization error (TFLite's "
        "QuantizationDebugger) and, when the flatbuffer loses metric, what keeping each of the "
        "worst few in float recovers.",
    )
    min_input_sparsity: float = pydantic.Field(
        0.1,
        ge=0,
        lt=1,
        description="pqat / pcqat: least kernel sparsity the input needs to count as pruned.",
    )
    max_cluster_values: int = pydantic.Field(
        256,
        ge=2,
        le=65_536,
        description="cqat / pcqat: a kernel counts as clustered when it holds at most this many "
        "distinct non-zero values (and at most half as many as non-zero elements).",
    )
    max_eval_examples: int | None = pydantic.Field(
        None, ge=1, description="Cap on eval examples for accuracy (default: the whole split)."
    )

    @pydantic.field_validator("exclude_layers")
    @classmethod
    def _distinct_names(cls, names: list[str]) -> list[str]:
        if any(not n for n in names):
            raise ValueError("layer names must be non-empty")
        if len(set(names)) != len(names):
            raise ValueError("layer names must be distinct")
        return names

    # A plain FineTuneConfig is accepted, as before the teacher settings existed.
    _fine_tuning_defaults = own_defaults("fine_tuning", FineTuneConfig, TeacherFineTuneConfig)

    @pydantic.model_validator(mode="after")
    def _fits_mode(self) -> QuantizerConfig:
        integer = sorted(INTEGER_MODES)
        if self.integer_only_io and self.mode not in INTEGER_MODES:
            raise ValueError(
                f"integer_only_io applies to the integer modes {integer}, not mode "
                f"{self.mode!r} (its activations are float)"
            )
        if self.exclude_layers and self.mode not in INTEGER_MODES:
            raise ValueError(
                f"exclude_layers applies to the integer modes {integer}, not mode {self.mode!r}"
            )
        if self.fine_tuning.distillation is not None and self.mode not in QAT_MODES:
            raise ValueError(
                f"fine_tuning.distillation applies to the QAT modes {sorted(QAT_MODES)}, not "
                f"mode {self.mode!r} (it does not train)"
            )
        if self.accuracy_control is not None and self.mode not in SELECTIVE_MODES:
            raise ValueError(
                f"accuracy_control applies to the modes {sorted(SELECTIVE_MODES)} (layers kept in "
                f"float one by one), not mode {self.mode!r}"
            )
        if self.mode in QAT_MODES and self.fine_tuning.epochs == 0:
            raise ValueError(
                f"mode {self.mode!r} learns activation ranges while training: set "
                "fine_tuning.epochs >= 1 (or use full_int8 for calibration without training)"
            )
        return self

    @property
    def base_mode(self) -> str:
        """The conversion the mode is built on (a sparse mode's dense counterpart)."""
        return SPARSE_MODES.get(self.mode, self.mode)

    @property
    def limits(self):
        """The verification limits in force: the configured ones, the mode's default otherwise."""
        from components.quantizer.verification import DEFAULT_LIMITS, Limits

        default = DEFAULT_LIMITS[self.mode]
        given = self.verification
        mean = given.max_mean_abs_diff or self.verify_tolerance
        return Limits(
            min_agreement=default.min_agreement
            if given.min_agreement is None
            else given.min_agreement,
            max_mean_abs_diff=mean or default.max_mean_abs_diff,
            max_p95_abs_diff=given.max_p95_abs_diff or default.max_p95_abs_diff,
        )
