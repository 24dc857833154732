"""Structured pruning configuration (validated when the pipeline is built).

A :class:`StructuredPruningConfig` says how many whole filters (convolutions) and units (dense
layers) to remove, how to rank them, and how to recover accuracy afterwards. It is a plain
:class:`~components.common.config.StrictModel`, so the Pruner's config can embed it as one field.
"""

from __future__ import annotations

from typing import Annotated, Literal

import pydantic

from components.common.config import StrictModel, own_defaults
from components.common.training import FineTuneConfig

# Criteria that read activations of a few train batches (the others read only the weights).
DATA_CRITERIA = ("mean_activation", "taylor")

Fraction = Annotated[float, pydantic.Field(ge=0.0, lt=1.0)]


class StructuredFineTuneConfig(FineTuneConfig):
    """Fine-tuning after each pruning step, with defaults that recover a 50% channel cut.

    Removing half of every layer's channels costs the reference digits CNN a few points of
    accuracy before fine-tuning; five epochs at 1e-3 bring it back within a point.
    """

    epochs: int = pydantic.Field(5, ge=0, le=10_000, description="0 turns fine-tuning off.")
    learning_rate: float = pydantic.Field(1e-3, gt=0, le=10)


class StructuredPruningConfig(StrictModel):
    """How whole filters and units are removed (the model is rebuilt with fewer channels).

    Every Conv/Dense/SeparableConv layer whose output channels can be removed consistently is a
    candidate; the layers that read those channels (BatchNormalization, DepthwiseConv2D, pooling,
    Flatten, the next Conv/Dense) lose the matching inputs. Channels joined by Add are ranked
    together and keep one common set. The model's outputs (the classifier) are never pruned.
    """

    target_fraction: float = pydantic.Field(
        0.5,
        ge=0.0,
        lt=1.0,
        description="Fraction of the output channels (filters/units) to remove: of each layer "
        "(scope per_layer) or of all prunable channels together (scope global).",
    )
    criterion: Literal["l1", "l2", "mean_activation", "taylor"] = pydantic.Field(
        "l1",
        description="How channels are ranked: l1/l2 norm of the filter's weights, mean absolute "
        "activation on train batches, or the first-order Taylor score |activation x gradient|.",
    )
    scope: Literal["per_layer", "global"] = pydantic.Field(
        "per_layer",
        description="per_layer: remove target_fraction of every layer; global: rank all channels "
        "together (scores normalised per layer) and remove target_fraction of them in all.",
    )
    per_layer: dict[str, Fraction] = pydantic.Field(
        default_factory=dict,
        description="Fraction to remove for named Conv/Dense layers, overriding target_fraction.",
    )
    skip_layers: list[str] = pydantic.Field(
        default_factory=list,
        description="Layers whose output channels are never removed (e.g. the first conv).",
    )
    min_channels_per_layer: int = pydantic.Field(
        1, ge=1, le=65_536, description="Channels every pruned layer keeps at least."
    )
    channel_multiple: int = pydantic.Field(
        1,
        ge=1,
        le=256,
        description="Round each layer's kept channels up to a multiple of this (4 or 8 suit "
        "SIMD kernels); a layer smaller than the multiple keeps all its channels.",
    )
    max_fraction_per_layer: float = pydantic.Field(
        0.9,
        gt=0.0,
        lt=1.0,
        description="Scope global: the most any one layer may lose.",
    )
    score_batches: int = pydantic.Field(
        8,
        ge=1,
        le=100_000,
        description="Train batches read by the mean_activation and taylor criteria.",
    )
    steps: int = pydantic.Field(
        1,
        ge=1,
        le=100,
        description="Iterative pruning: reach target_fraction in this many equal steps, "
        "fine-tuning after each.",
    )
    fine_tuning: StructuredFineTuneConfig = StructuredFineTuneConfig()
    accuracy_floor: float | None = pydantic.Field(
        None,
        ge=0.0,
        le=1.0,
        description="Stop pruning when eval accuracy after a step's fine-tuning falls below "
        "this; the model of the last step above it is kept (the unpruned one if none is).",
    )

    @pydantic.field_validator("skip_layers")
    @classmethod
    def _no_blank_names(cls, values):
        if any(not str(v).strip() for v in values):
            raise ValueError("layer names must be non-empty strings")
        return values

    _fine_tuning_defaults = own_defaults("fine_tuning", FineTuneConfig, StructuredFineTuneConfig)

    @pydantic.model_validator(mode="after")
    def _consistent(self):
        both = sorted(set(self.per_layer) & set(self.skip_layers))
        if both:
            raise ValueError(f"layers {both} are both in per_layer and in skip_layers")
        if any(not name.strip() for name in self.per_layer):
            raise ValueError("per_layer keys must be layer names")
        return self

    @property
    def needs_train_data(self) -> bool:
        """True when the criterion or fine-tuning reads the train split."""
        return self.criterion in DATA_CRITERIA or self.fine_tuning.epochs > 0

    @property
    def needs_eval_data(self) -> bool:
        """True when an accuracy floor has to be checked on the eval split."""
        return self.accuracy_floor is not None
