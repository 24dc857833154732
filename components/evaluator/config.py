"""Evaluator configuration: what is measured, the rules (data, not code) and how one is chosen.

Units live in the names: ``*_points`` are percentage points of top-1 accuracy (1.0 point = 0.01
accuracy), ``relative_*`` are fractions of the baseline's figure, ``*_ms`` milliseconds, ``*_bytes``
bytes. Every threshold is optional; all that are set must pass, and a gate with no rule set blesses
nothing (fail closed).
"""

from __future__ import annotations

from typing import Literal

import pydantic

from components.common.config import StrictModel

LatencyStatistic = Literal["mean", "p50", "p90", "p95", "p99"]


class RulesConfig(StrictModel):
    """Thresholds a candidate must meet to be blessed; each is optional, all that are set apply."""

    max_accuracy_drop_points: float | None = pydantic.Field(
        None,
        ge=0,
        le=100,
        description="Largest allowed top-1 accuracy drop vs the baseline, in percentage points "
        "(0.5 = half a point). Classification only.",
    )
    max_relative_accuracy_drop: float | None = pydantic.Field(
        None,
        ge=0,
        le=1,
        description="Largest allowed top-1 accuracy drop as a fraction of the baseline's accuracy "
        "(0.01 = 1% of it). Classification only.",
    )
    min_accuracy: float | None = pydantic.Field(
        None, ge=0, le=1, description="Lowest allowed top-1 accuracy (fraction). Classification."
    )
    max_error_increase: float | None = pydantic.Field(
        None,
        ge=0,
        description="Regression: largest allowed increase of the regression metric (MAE or RMSE, "
        "in label units) vs the baseline.",
    )
    max_relative_error_increase: float | None = pydantic.Field(
        None,
        ge=0,
        description="Regression: largest allowed increase of the regression metric as a fraction "
        "of the baseline's.",
    )
    accuracy_drop_bound: Literal["point", "upper_confidence"] = pydantic.Field(
        "point",
        description="Which drop the accuracy/error rules compare: the point estimate, or the "
        "upper end of its paired confidence interval (conservative on small splits).",
    )
    max_latency_ms: float | None = pydantic.Field(
        None, gt=0, description="Largest allowed batch-1 latency at `latency_statistic`."
    )
    min_speedup: float | None = pydantic.Field(
        None,
        gt=0,
        description="Smallest allowed baseline/candidate latency ratio at `latency_statistic`, "
        "both measured in the same run (1.0: not slower than the baseline).",
    )
    latency_statistic: LatencyStatistic = pydantic.Field(
        "p95", description="Latency statistic the latency rules and the `fastest` objective use."
    )
    max_size_bytes: int | None = pydantic.Field(
        None, ge=1, description="Largest allowed size of the evaluated flavour (see size_measure)."
    )
    min_compression_ratio: float | None = pydantic.Field(
        None, gt=0, description="Smallest allowed baseline/candidate size ratio (size_measure)."
    )
    size_measure: Literal["gzip", "raw"] = pydantic.Field(
        "gzip", description="Size the size rules and the `smallest` objective use."
    )
    max_accuracy_drop_vs_production_points: float | None = pydantic.Field(
        None,
        ge=0,
        description="Largest allowed top-1 drop vs the accuracy recorded for the model in "
        "production (points). Needs production.metrics_path.",
    )
    max_latency_vs_production_ratio: float | None = pydantic.Field(
        None,
        gt=0,
        description="Largest allowed candidate/production latency ratio. The production figure "
        "comes from its own run: compare only figures from the same hardware.",
    )
    max_size_vs_production_ratio: float | None = pydantic.Field(
        None, gt=0, description="Largest allowed candidate/production size ratio."
    )

    def configured(self) -> list[str]:
        """Names of the threshold rules that are set."""
        return [name for name in THRESHOLD_RULES if getattr(self, name) is not None]


# Every threshold field of RulesConfig, in the order the report lists them.
THRESHOLD_RULES = (
    "max_accuracy_drop_points",
    "max_relative_accuracy_drop",
    "min_accuracy",
    "max_error_increase",
    "max_relative_error_increase",
    "max_latency_ms",
    "min_speedup",
    "max_size_bytes",
    "min_compression_ratio",
    "max_accuracy_drop_vs_production_points",
    "max_latency_vs_production_ratio",
    "max_size_vs_production_ratio",
)
ACCURACY_RULES = ("max_accuracy_drop_points", "max_relative_accuracy_drop", "min_accuracy")
REGRESSION_RULES = ("max_error_increase", "max_relative_error_increase")
LATENCY_RULES = ("max_latency_ms", "min_speedup", "max_latency_vs_production_ratio")
PRODUCTION_RULES = (
    "max_accuracy_drop_vs_production_points",
    "max_latency_vs_production_ratio",
    "max_size_vs_production_ratio",
)


class ConfidenceConfig(StrictModel):
    """Paired confidence interval of the accuracy drop (baseline vs candidate, same examples)."""

    level: float = pydantic.Field(
        0.95, gt=0.5, lt=1, description="Two-sided confidence level of the interval."
    )
    method: Literal["bootstrap", "wald"] = pydantic.Field(
        "bootstrap",
        description="Paired bootstrap (resampling examples, fixed seed) or the paired Wald "
        "interval of a difference of proportions. McNemar's exact test is always reported.",
    )
    resamples: int = pydantic.Field(2000, ge=100, le=1_000_000)
    seed: int = pydantic.Field(0, ge=0)


class LatencyConfig(StrictModel):
    """How latency is measured in this step, and which figures the latency rules use."""

    measure: bool = pydantic.Field(
        True, description="Time baseline and candidates here (batch 1, interleaved, warmed up)."
    )
    warmup_runs: int = pydantic.Field(20, ge=0, le=100_000)
    timed_runs: int = pydantic.Field(200, ge=1, le=1_000_000)
    num_threads: int = pydantic.Field(
        1,
        ge=1,
        le=256,
        description="Interpreter threads of the measured latency the rules judge (1: one core, "
        "as a phone app's background inference; the rule's text says which).",
    )
    multi_thread_threads: int | None = pydantic.Field(
        None,
        ge=1,
        le=256,
        description="Also time every TFLite model with this many threads, in the same "
        "interleaved rounds, and record it beside (None: the CPUs this process may use; not "
        "timed when that equals num_threads). The rules judge num_threads.",
    )
    source: Literal["auto", "measured", "external"] = pydantic.Field(
        "auto",
        description="Figures the latency rules use: `measured` here, `external` (a LatencyReport "
        "input or external_path; a model it lacks fails the latency rules), or `auto` "
        "(external where it names the model(s), else measured).",
    )
    external_path: str | None = pydantic.Field(
        None,
        description="JSON file of latencies measured elsewhere (format tfxopt.latency/v1, see "
        "components/evaluator/latency.py), e.g. from benchmark_model on a device.",
    )


class ProductionConfig(StrictModel):
    """The metrics recorded for the model currently in production (written by the Pusher)."""

    metrics_path: str | None = pydantic.Field(
        None,
        description="JSON file {accuracy, latency_<stat>_ms, size_bytes, size_gzip_bytes, ...} "
        "recorded at the push destination.",
    )
    required: bool = pydantic.Field(
        False, description="A missing file blesses nothing (else: noted, rules vs it skipped)."
    )


class EvaluatorConfig(StrictModel):
    """The promotion gate's configuration."""

    task: (
        Literal["classification", "multiclass", "binary", "multilabel", "regression", "dense"]
        | None
    ) = pydantic.Field(
        None,
        description="Deprecated: set data.task (read by every step). Still honoured when "
        "data.task is auto; 'classification' means any classifier (inferred).",
    )
    top_k: int | None = pydantic.Field(None, ge=2, le=1000, description="Also report top-k.")
    compute_loss: bool = pydantic.Field(False, description="Also report cross-entropy loss.")
    loss_from_logits: bool | None = pydantic.Field(
        None, description="Model outputs are logits (None: inferred from the baseline model)."
    )
    regression_metric: Literal["mae", "rmse"] = pydantic.Field(
        "mae", description="Regression metric the error rules and `most_accurate` use."
    )
    rules: RulesConfig = pydantic.Field(default_factory=RulesConfig)
    objective: Literal["smallest", "fastest", "most_accurate"] = pydantic.Field(
        "smallest",
        description="Which passing candidate is selected; ties go to the next objectives, then "
        "to the candidate name.",
    )
    baseline_flavour: Literal["tflite", "saved_model"] = pydantic.Field(
        "tflite",
        description="Evaluate the baseline as TFLite (its own flavour, else a float32 "
        "conversion) or as the SavedModel. Candidates: TFLite flavour when present.",
    )
    require_saved_model: bool = pydantic.Field(
        False,
        description="Candidates without a SavedModel flavour (Format-Serving/) are not eligible: "
        "set it when the blessed model is pushed to TF Serving (the standard Pusher pushes only "
        "that flavour).",
    )
    confidence: ConfidenceConfig = pydantic.Field(default_factory=ConfidenceConfig)
    latency: LatencyConfig = pydantic.Field(default_factory=LatencyConfig)
    production: ProductionConfig = pydantic.Field(default_factory=ProductionConfig)
    batch_size: int = pydantic.Field(
        256,
        ge=1,
        le=65_536,
        description="Examples per batch the accuracy step reads, parses and feeds each model "
        "(TFLite inputs are resized to it; one Beam element per batch).",
    )
    accuracy_threads: int | None = pydantic.Field(
        None,
        ge=1,
        description="TFLite interpreter threads per Beam worker in the accuracy pass (None: the "
        "worker's CPUs). Set 1 on a runner that starts one worker process per core.",
    )
    write_per_example: bool = pydantic.Field(
        True, description="Keep per-example outcomes (JSON lines) in the evaluation artifact."
    )

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> EvaluatorConfig:
        rules = self.rules
        problems = []
        if self.task is not None and self.task != "regression":
            set_regression = [r for r in REGRESSION_RULES if getattr(rules, r) is not None]
            if set_regression:
                problems.append(
                    f"rules.{set_regression[0]} applies to task: regression, but task is "
                    f"{self.task} (use max_accuracy_drop_points / max_relative_accuracy_drop)"
                )
        elif self.task == "regression":
            set_accuracy = [
                r
                for r in (*ACCURACY_RULES, "max_accuracy_drop_vs_production_points")
                if getattr(rules, r) is not None
            ]
            if set_accuracy:
                problems.append(
                    f"rules.{set_accuracy[0]} applies to classification, but task is regression "
                    "(use max_error_increase / max_relative_error_increase)"
                )
            if self.top_k is not None or self.compute_loss:
                problems.append("top_k and compute_loss apply to classification only")
        drop_rules = (
            "max_accuracy_drop_points",
            "max_relative_accuracy_drop",
            "max_error_increase",
            "max_relative_error_increase",
        )
        if rules.accuracy_drop_bound == "upper_confidence" and not any(
            getattr(rules, r) is not None for r in drop_rules
        ):
            problems.append(
                "rules.accuracy_drop_bound: upper_confidence has no effect without a drop rule "
                "(max_accuracy_drop_points, max_relative_accuracy_drop, max_error_increase, "
                "max_relative_error_increase)"
            )
        set_production = [r for r in PRODUCTION_RULES if getattr(rules, r) is not None]
        if set_production and not self.production.metrics_path:
            problems.append(
                f"rules.{set_production[0]} compares with production: set production.metrics_path"
            )
        if self.production.required and not self.production.metrics_path:
            problems.append("production.required is true but production.metrics_path is not set")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def rule_problems(self, task: str) -> list[str]:
        """Rules and options that do not fit ``task`` (a task of components/common/metrics.py)."""
        rules = self.rules
        if task == "regression":
            wrong = [
                r
                for r in (*ACCURACY_RULES, "max_accuracy_drop_vs_production_points")
                if getattr(rules, r) is not None
            ]
            fix = "use max_error_increase / max_relative_error_increase"
            extra = ["top_k"] if self.top_k is not None else []
            extra += ["compute_loss"] if self.compute_loss else []
        else:
            wrong = [r for r in REGRESSION_RULES if getattr(rules, r) is not None]
            fix = "use max_accuracy_drop_points / max_relative_accuracy_drop / min_accuracy"
            extra = []
            if task != "multiclass":
                extra += ["top_k"] if self.top_k is not None else []
                extra += ["compute_loss"] if self.compute_loss else []
        problems = [f"evaluator.rules.{r} does not fit task {task} ({fix})" for r in wrong]
        problems += [f"evaluator.{e} applies to multiclass models only" for e in extra]
        return problems

    def needs_latency(self) -> bool:
        """True when a rule or the objective needs latency figures."""
        return self.objective == "fastest" or any(
            getattr(self.rules, r) is not None for r in LATENCY_RULES
        )
