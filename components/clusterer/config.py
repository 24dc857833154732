"""Clusterer configuration (validated when the pipeline is built)."""

from __future__ import annotations

from typing import Literal

import pydantic

from components.common.config import StrictModel, own_defaults
from components.common.optimization import LayerSelection
from components.common.sensitivity import FineTunedAccuracyControlConfig
from components.common.training import FineTuneConfig, TeacherFineTuneConfig

CENTROID_INITIALIZATIONS = ("kmeans++", "linear", "density-based", "random")


class ClustererFineTuneConfig(TeacherFineTuneConfig):
    """Fine-tuning settings with the Clusterer's defaults.

    Four epochs at 3e-4 keep the reference digits CNN (pruned to 80%, 16 clusters, sparsity
    preserved) at or above its baseline eval accuracy (seeds 0, 1, 2); fewer epochs or a lower
    rate left it 1-2 eval examples lower.
    """

    epochs: int = pydantic.Field(
        4, ge=0, le=10_000, description="0 clusters without fine-tuning the centroids."
    )
    learning_rate: float = pydantic.Field(3e-4, gt=0, le=10)


class ClustererConfig(StrictModel):
    """How a model is clustered (weight clustering, tensorflow-model-optimization)."""

    number_of_clusters: int = pydantic.Field(
        16, ge=2, le=65_536, description="Distinct values per clustered weight tensor (or channel)."
    )
    centroid_initialization: Literal["kmeans++", "linear", "density-based", "random"] = (
        pydantic.Field("kmeans++", description="How the centroids start.")
    )
    preserve_sparsity: bool = pydantic.Field(
        False,
        description="Keep zero weights at zero (sparsity-preserving clustering, e.g. after the "
        "Pruner).",
    )
    cluster_per_channel: bool = pydantic.Field(
        False,
        description="Conv2D kernels get number_of_clusters values per output channel.",
    )
    layers: LayerSelection = LayerSelection()
    fine_tuning: ClustererFineTuneConfig = ClustererFineTuneConfig()
    layer_sensitivity: bool = pydantic.Field(
        False,
        description="Record what clustering each selected layer alone costs the task's metric on "
        "the eval split (one shot, before fine-tuning; one eval pass per layer). Always on with "
        "accuracy_control, which ranks the layers by it.",
    )
    accuracy_control: FineTunedAccuracyControlConfig | None = pydantic.Field(
        None,
        description="Leave the layers that cost the most unclustered (ranked by what clustering "
        "each alone costs, before fine-tuning) until the fine-tuned metric is within "
        "max_drop_points (regression: max_relative_error_increase) of the input's, in at most "
        "max_evaluations fine-tuning runs; a budget not met keeps the best run, and the gate "
        "judges it.",
    )

    _fine_tuning_defaults = own_defaults("fine_tuning", FineTuneConfig, ClustererFineTuneConfig)

    @pydantic.model_validator(mode="after")
    def _enough_clusters(self):
        if self.preserve_sparsity and self.number_of_clusters < 3:
            raise ValueError(
                "number_of_clusters must be at least 3 with preserve_sparsity (one centroid is "
                f"pinned to zero), got {self.number_of_clusters}"
            )
        return self
