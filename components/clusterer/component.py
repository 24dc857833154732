"""Clusterer TFX component: a Model and Examples in, a new (clustered) Model out."""

from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec

from components.clusterer import executor
from components.clusterer.config import ClustererConfig
from components.common.component_base import (
    CONFIG_KEY,
    DATA_CONFIG_KEY,
    config_json,
    data_config_json,
    json_parameter,
)
from components.common.examples import DataConfig
from components.common.keys import EXAMPLES_KEY, MODEL_KEY, OPTIMIZED_MODEL_KEY

__all__ = ["Clusterer", "ClustererSpec"]


class ClustererSpec(ComponentSpec):
    """Inputs, outputs and parameters of the Clusterer."""

    PARAMETERS = {CONFIG_KEY: json_parameter(), DATA_CONFIG_KEY: json_parameter()}
    INPUTS = {
        MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
        EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
    }
    OUTPUTS = {OPTIMIZED_MODEL_KEY: ChannelParameter(type=standard_artifacts.Model)}


class Clusterer(base_component.BaseComponent):
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

    def __init__(
        self,
        model: types.BaseChannel,
        examples: types.BaseChannel,
        config: ClustererConfig | dict | None = None,
        data_config: DataConfig | dict | None = None,
    ):
        spec = ClustererSpec(
            model=model,
            examples=examples,
            config=config_json(config, ClustererConfig, "clusterer"),
            data_config=data_config_json(data_config),
            optimized_model=types.Channel(type=standard_artifacts.Model),
        )
        super().__init__(spec=spec)
