"""Profiler TFX component: a Model (and Examples) in, a ``tfxopt.ModelProfile`` out."""

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
    isolate_parameter,
    isolate_value,
    json_parameter,
)
from components.common.examples import DataConfig
from components.common.keys import EXAMPLES_KEY, ISOLATE_FAILURES_KEY, MODEL_KEY, PROFILE_KEY
from components.common.types import ModelProfile
from components.profiler import executor
from components.profiler.config import ProfilerConfig


class ProfilerSpec(ComponentSpec):
    """Inputs, outputs and parameters of the Profiler."""

    PARAMETERS = {
        CONFIG_KEY: json_parameter(),
        DATA_CONFIG_KEY: json_parameter(),
        ISOLATE_FAILURES_KEY: isolate_parameter(),
    }
    INPUTS = {
        MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
        EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples, optional=True),
    }
    OUTPUTS = {PROFILE_KEY: ChannelParameter(type=ModelProfile)}


class Profiler(base_component.BaseComponent):
    """Profiles a model: size (raw, gzipped), parameters, FLOPs, latency percentiles, peak memory, accuracy.

    A model marked failed by a candidate step upstream gets a "not profiled: upstream failed"
    profile, marked failed the same way, without loading anything. With
    ``isolate_failures=True`` (a candidate's Profiler) a model that cannot be converted or run is
    recorded the same way instead of failing the step (see :mod:`components.common.candidate`).

    Example:
      profiler = Profiler(model=importer.outputs['result'], examples=example_gen.outputs['examples'],
                          config={'timed_runs': 500, 'num_threads': 2})
    """

    SPEC_CLASS = ProfilerSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(
        self,
        model: types.BaseChannel,
        examples: types.BaseChannel | None = None,
        config: ProfilerConfig | dict | None = None,
        data_config: DataConfig | dict | None = None,
        isolate_failures: bool = False,
    ):
        spec = ProfilerSpec(
            model=model,
            examples=examples,
            config=config_json(config, ProfilerConfig, "profiler"),
            data_config=data_config_json(data_config),
            isolate_failures=isolate_value(isolate_failures),
            profile=types.Channel(type=ModelProfile),
        )
        super().__init__(spec=spec)
