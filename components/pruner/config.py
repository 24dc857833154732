"""Pruner configuration (validated when the pipeline is built)."""

from __future__ import annotations

from typing import Annotated, Literal

import pydantic

from components.common.config import StrictModel, own_defaults
from components.common.optimization import LayerSelection
from components.common.sensitivity import FineTunedAccuracyControlConfig
from components.common.training import FineTuneConfig, TeacherFineTuneConfig
from components.pruner.structured_config import StructuredPruningConfig

XNNPACK_POLICY = "prune_for_latency_on_xnnpack"


class PrunerFineTuneConfig(TeacherFineTuneConfig):
    """Fine-tuning settings with the Pruner's defaults.

    Six epochs at 3e-4 (three pruning, three recovering) take the reference digits CNN to 80%
    sparsity without losing eval accuracy (seeds 0, 1, 2).
    """

    epochs: int = pydantic.Field(6, ge=1, le=10_000, description="Pruning needs at least one.")
    learning_rate: float = pydantic.Field(3e-4, gt=0, le=10)


class PruningScheduleConfig(StrictModel):
    """When masks are updated and how sparsity grows, in steps (batches) or epochs.

    ``polynomial_decay`` grows sparsity from ``initial_sparsity`` to the target between the
    begin and end step; ``constant`` prunes to the target from the begin step on. Defaults: begin
    at step 0 and, for ``polynomial_decay``, reach the target at the end of epoch
    ``max(1, fine_tuning.epochs // 2)``, so the second half of fine-tuning recovers accuracy.
    """

    kind: Literal["polynomial_decay", "constant"] = "polynomial_decay"
    initial_sparsity: float = pydantic.Field(0.0, ge=0.0, lt=1.0)
    begin_step: int | None = pydantic.Field(None, ge=0)
    end_step: int | None = pydantic.Field(None, ge=1)
    begin_epoch: float | None = pydantic.Field(
        None, ge=0, description="Begin step given in epochs of the (capped) train split."
    )
    end_epoch: float | None = pydantic.Field(None, gt=0)
    frequency_steps: int = pydantic.Field(
        10, ge=1, le=1_000_000, description="Steps between mask updates."
    )
    power: float = pydantic.Field(3.0, gt=0, le=100, description="Polynomial decay exponent.")

    @pydantic.model_validator(mode="after")
    def _consistent(self):
        if self.begin_step is not None and self.begin_epoch is not None:
            raise ValueError("give begin_step or begin_epoch, not both")
        if self.end_step is not None and self.end_epoch is not None:
            raise ValueError("give end_step or end_epoch, not both")
        if self.kind == "constant" and (self.end_step is not None or self.end_epoch is not None):
            raise ValueError("a constant schedule prunes until the end: leave end_step unset")
        if (
            self.begin_step is not None
            and self.end_step is not None
            and self.end_step <= self.begin_step
        ):
            raise ValueError(f"end_step {self.end_step} must be after begin_step {self.begin_step}")
        if (
            self.begin_epoch is not None
            and self.end_epoch is not None
            and self.end_epoch <= self.begin_epoch
        ):
            raise ValueError(
                f"end_epoch {self.end_epoch} must be after begin_epoch {self.begin_epoch}"
            )
        return self


BlockDim = Annotated[int, pydantic.Field(ge=1, le=1024)]


class PrunerConfig(StrictModel):
    """How a model is pruned (magnitude pruning, tensorflow-model-optimization)."""

    mode: Literal["unstructured", "structured"] = pydantic.Field(
        "unstructured",
        description="unstructured: tfmot magnitude pruning (zeros in place); structured: whole "
        "filters/units removed and the model rebuilt smaller (settings in `structured`).",
    )
    structured: StructuredPruningConfig = pydantic.Field(
        default_factory=StructuredPruningConfig,
        description="Structured pruning settings (used when mode is structured).",
    )
    target_sparsity: float = pydantic.Field(
        0.5, ge=0.0, lt=1.0, description="Fraction of zeros in each pruned weight tensor."
    )
    schedule: PruningScheduleConfig = PruningScheduleConfig()
    block_size: tuple[BlockDim, BlockDim] = pydantic.Field(
        (1, 1),
        description="Block of weights pruned together, e.g. [1, 2] or [4, 1] (Dense kernels only).",
    )
    block_pooling: Literal["AVG", "MAX"] = pydantic.Field(
        "AVG", description="How a block's magnitude is pooled."
    )
    sparsity_m_by_n: tuple[int, int] | None = pydantic.Field(
        None,
        description="Structured sparsity: m zeros in every n consecutive weights, '2:4' or "
        "[2, 4]; the sparsity is then m/n and target_sparsity/schedule are not used.",
    )
    pruning_policy: Literal["none", "prune_for_latency_on_xnnpack"] = pydantic.Field(
        "none",
        description="prune_for_latency_on_xnnpack: tfmot's PruneForLatencyOnXNNPack (1x1 "
        "convolutions of a model XNNPACK's sparse inference can run).",
    )
    layers: LayerSelection = LayerSelection()
    layer_sensitivity: bool = pydantic.Field(
        False,
        description="Record what pruneing each selected layer alone costs the task's metric on "
        "the eval split (one shot, before fine-tuning; one eval pass per layer). Always on with "
        "accuracy_control, which ranks the layers by it.",
    )
    accuracy_control: FineTunedAccuracyControlConfig | None = pydantic.Field(
        None,
        description="Magnitude pruning: leave the layers that cost the most out (ranked by "
        "what pruning each alone at the target costs, before fine-tuning) until the fine-tuned "
        "metric is within max_drop_points (regression: max_relative_error_increase) of the "
        "input's, in at most max_evaluations fine-tuning runs; a budget not met keeps the best "
        "run, and the gate judges it.",
    )
    fine_tuning: PrunerFineTuneConfig = PrunerFineTuneConfig()

    @pydantic.field_validator("sparsity_m_by_n", mode="before")
    @classmethod
    def _parse_m_by_n(cls, value):
        if isinstance(value, str):
            parts = value.replace("by", ":").replace("x", ":").split(":")
            if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
                raise ValueError(f"expected 'm:n' such as '2:4', got {value!r}")
            return (int(parts[0]), int(parts[1]))
        return value

    @pydantic.field_validator("sparsity_m_by_n")
    @classmethod
    def _m_below_n(cls, value):
        if value is not None and not 1 <= value[0] < value[1] <= 64:
            raise ValueError(f"need 1 <= m < n <= 64 (m zeros in every n), got {value}")
        return value

    _fine_tuning_defaults = own_defaults("fine_tuning", FineTuneConfig, PrunerFineTuneConfig)

    @pydantic.model_validator(mode="after")
    def _consistent(self):
        if self.mode == "structured" and self.accuracy_control is not None:
            raise ValueError(
                "accuracy_control applies to magnitude pruning (mode unstructured); structured "
                "pruning chooses its units by its own scores"
            )
        if self.mode == "structured" and self.fine_tuning.distillation is not None:
            raise ValueError(
                "fine_tuning.distillation applies to unstructured pruning; structured pruning "
                "fine-tunes with structured.fine_tuning, without a teacher"
            )
        if self.sparsity_m_by_n is not None:
            if self.block_size != (1, 1):
                raise ValueError(
                    "sparsity_m_by_n and block_size other than [1, 1] exclude each other"
                )
            m, n = self.sparsity_m_by_n
            if (
                "target_sparsity" in self.model_fields_set
                and abs(self.target_sparsity - m / n) > 1e-9
            ):
                raise ValueError(
                    f"target_sparsity {self.target_sparsity} contradicts sparsity_m_by_n "
                    f"{m}:{n} (sparsity {m / n:g}); leave target_sparsity unset"
                )
        elif (
            self.schedule.kind == "polynomial_decay"
            and self.schedule.initial_sparsity > self.target_sparsity
        ):
            raise ValueError(
                f"schedule.initial_sparsity {self.schedule.initial_sparsity} is above "
                f"target_sparsity {self.target_sparsity}"
            )
        return self

    @property
    def effective_sparsity(self) -> float:
        """The sparsity each pruned tensor ends with: m/n for m-by-n sparsity, else the target."""
        if self.sparsity_m_by_n is not None:
            return self.sparsity_m_by_n[0] / self.sparsity_m_by_n[1]
        return self.target_sparsity
