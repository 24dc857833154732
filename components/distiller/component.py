"""Distiller TFX component: a teacher Model and Examples in, a smaller student Model out."""

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
from components.distiller import executor
from components.distiller.config import DistillerConfig
from components.distiller.executor import EXAMPLES_KEY, MODEL_KEY, TEACHER_KEY

__all__ = ["EXAMPLES_KEY", "MODEL_KEY", "TEACHER_KEY", "Distiller", "DistillerSpec"]


class DistillerSpec(ComponentSpec):
    """Inputs, outputs and parameters of the Distiller."""

    PARAMETERS = {CONFIG_KEY: json_parameter(), DATA_CONFIG_KEY: json_parameter()}
    INPUTS = {
        TEACHER_KEY: ChannelParameter(type=standard_artifacts.Model),
        EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
    }
    OUTPUTS = {MODEL_KEY: ChannelParameter(type=standard_artifacts.Model)}


class Distiller(base_component.BaseComponent):
    """Trains a smaller student to mimic the teacher (knowledge distillation).

    The student is the teacher's own architecture at ``width_multiplier`` (and ``depth``), or what
    ``build_student(teacher, input_spec)`` in ``module_file`` returns. Its output is a standard
    ``Model`` artifact (``Format-Serving/``), so it feeds the Pruner, Clusterer and Quantizer.

    Example:
      distiller = Distiller(teacher=importer.outputs['result'],
                            examples=example_gen.outputs['examples'],
                            config={'width_multiplier': 0.5, 'temperature': 2.0,
                                    'training': {'epochs': 25}})
    """

    SPEC_CLASS = DistillerSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(
        self,
        teacher: types.BaseChannel,
        examples: types.BaseChannel,
        config: DistillerConfig | dict | None = None,
        data_config: DataConfig | dict | None = None,
    ):
        spec = DistillerSpec(
            teacher=teacher,
            examples=examples,
            config=config_json(config, DistillerConfig, "distiller"),
            data_config=data_config_json(data_config),
            model=types.Channel(type=standard_artifacts.Model),
        )
        super().__init__(spec=spec)
