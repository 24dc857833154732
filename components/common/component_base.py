"""Shared pieces of our TFX component declarations: config exec properties and their parsing,
and the spec and constructor of the model-in/model-out components."""

from __future__ import annotations

from typing import Any

from tfx import types
from tfx.dsl.components.base import base_component
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.common.config import StrictModel
from components.common.examples import DataConfig

# CONFIG_KEY and DATA_CONFIG_KEY are re-exported: the components import them from here.
from components.common.keys import (  # noqa: F401
    CONFIG_KEY,
    DATA_CONFIG_KEY,
    EXAMPLES_KEY,
    MODEL_KEY,
    OPTIMIZED_MODEL_KEY,
)


def json_parameter(optional: bool = False) -> ExecutionParameter:
    """A config object travels to the executor as a JSON string (KFP-friendly, cache-friendly)."""
    return ExecutionParameter(type=str, optional=optional)


def isolate_parameter() -> ExecutionParameter:
    """``isolate_failures`` (1/0) of a candidate step: see :mod:`components.common.candidate`."""
    return ExecutionParameter(type=int, optional=True)


def isolate_value(isolate_failures: bool) -> int | None:
    """The exec property's value: 1 when isolating, else left out (so the spec stays as it was)."""
    return 1 if isolate_failures else None


def config_json(config: StrictModel | dict | None, cls: type[StrictModel], where: str) -> str:
    """Validates ``config`` (at pipeline build time) and serializes it for an exec property."""
    parsed = config if isinstance(config, cls) else cls.parse(config, where=where)
    return parsed.model_dump_json()


def data_config_json(data: DataConfig | dict | None) -> str:
    return config_json(data, DataConfig, "data")


class ModelStepSpec(ComponentSpec):
    """A model-in/model-out step's spec: config and data config, a Model and Examples in, one Model out."""

    PARAMETERS = {CONFIG_KEY: json_parameter(), DATA_CONFIG_KEY: json_parameter()}
    INPUTS = {
        MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
        EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
    }
    OUTPUTS = {OPTIMIZED_MODEL_KEY: ChannelParameter(type=standard_artifacts.Model)}


class ModelStepComponent(base_component.BaseComponent):
    """The constructor every model-in/model-out component shares.

    A subclass sets ``SPEC_CLASS`` (a :class:`ModelStepSpec`), ``EXECUTOR_SPEC``, ``CONFIG_CLASS``
    and ``WHERE`` (the config's name in error messages); the config is validated here, at pipeline
    build time. Extra keyword arguments are further exec properties of the spec.
    """

    CONFIG_CLASS: type[StrictModel]
    WHERE: str

    def __init__(
        self,
        model: types.BaseChannel,
        examples: types.BaseChannel,
        config: StrictModel | dict | None = None,
        data_config: DataConfig | dict | None = None,
        **parameters: Any,
    ):
        (output_key,) = self.SPEC_CLASS.OUTPUTS
        spec = self.SPEC_CLASS(
            model=model,
            examples=examples,
            config=config_json(config, self.CONFIG_CLASS, self.WHERE),
            data_config=data_config_json(data_config),
            **parameters,
            **{output_key: types.Channel(type=standard_artifacts.Model)},
        )
        super().__init__(spec=spec)
