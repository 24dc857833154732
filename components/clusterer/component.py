"""Clusterer TFX component: a Model and Examples in, a new (clustered) Model out."""

from __future__ import annotations

from tfx.dsl.components.base import executor_spec

from components.clusterer import executor
from components.clusterer.config import ClustererConfig
from components.common.component_base import ModelStepComponent, ModelStepSpec

__all__ = ["Clusterer", "ClustererSpec"]


class ClustererSpec(ModelStepSpec):
    """Inputs, outputs and parameters of the Clusterer."""


class Clusterer(ModelStepComponent):
    """Clusters the weights of a model while fine-tuning it on the train split.

    Each clustered weight tensor (or channel, with ``cluster_per_channel``) holds at most
    ``number_of_clusters`` distinct values. The output Model (``outputs['optimized_model']``)
    holds the stripped SavedModel (``Format-Serving/``), ``clustering.json`` and
    ``fine_tuning_history.json``, and carries clusters per layer, unique values found and accuracy
    before/after as custom properties.

    Example:
      clusterer = Clusterer(model=pruner.outputs['optimized_model'],
                            examples=example_gen.outputs['examples'],
                            config={'number_of_clusters': 16, 'preserve_sparsity': True})
    """

    SPEC_CLASS = ClustererSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)
    CONFIG_CLASS, WHERE = ClustererConfig, "clusterer"
