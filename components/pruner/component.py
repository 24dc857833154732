"""Pruner TFX component: a Model and Examples in, a new (sparse) Model out."""

from __future__ import annotations

from tfx.dsl.components.base import executor_spec

from components.common.component_base import ModelStepComponent, ModelStepSpec
from components.pruner import executor
from components.pruner.config import PrunerConfig

__all__ = ["Pruner", "PrunerSpec"]


class PrunerSpec(ModelStepSpec):
    """Inputs, outputs and parameters of the Pruner."""


class Pruner(ModelStepComponent):
    """Prunes a model to a target sparsity while fine-tuning it on the train split.

    The output Model (``outputs['optimized_model']``) holds the stripped SavedModel (``Format-Serving/``), ``pruning.json`` and
    ``fine_tuning_history.json``, and carries the achieved sparsity, per-layer sparsity, accuracy
    before/after and fine-tuning epochs/wall time as custom properties.

    Example:
      pruner = Pruner(model=trainer.outputs['model'], examples=example_gen.outputs['examples'],
                      config={'target_sparsity': 0.8, 'layers': {'types': ['Conv2D', 'Dense']}})
    """

    SPEC_CLASS = PrunerSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)
    CONFIG_CLASS, WHERE = PrunerConfig, "pruner"
