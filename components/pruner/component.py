"""Pruner TFX component: a Model and Examples in, a new (sparse) Model out."""

from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec

from components.common.component_base import (
    CONFIG_KEY,
    DATA_CONFIG_KEY,
    config_json,
    data_config_json,
    json_parameter,
)
from components.common.examples import DataConfig
from components.common.keys import EXAMPLES_KEY, MODEL_KEY, OPTIMIZED_MODEL_KEY
from components.pruner import executor
from components.pruner.config import PrunerConfig

__all__ = ["Pruner", "PrunerSpec"]


class PrunerSpec(ComponentSpec):
    """Inputs, outputs and parameters of the Pruner."""

    PARAMETERS = {CONFIG_KEY: json_parameter(), DATA_CONFIG_KEY: json_parameter()}
    INPUTS = {
        MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
        EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
    }
    OUTPUTS = {OPTIMIZED_MODEL_KEY: ChannelParameter(type=standard_artifacts.Model)}


class Pruner(base_component.BaseComponent):
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

    def __init__(
        self,
        model: types.BaseChannel,
        examples: types.BaseChannel,
        config: PrunerConfig | dict | None = None,
        data_config: DataConfig | dict | None = None,
    ):
        spec = PrunerSpec(
            model=model,
            examples=examples,
            config=config_json(config, PrunerConfig, "pruner"),
            data_config=data_config_json(data_config),
            optimized_model=types.Channel(type=standard_artifacts.Model),
        )
        super().__init__(spec=spec)
