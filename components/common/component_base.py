"""Shared pieces of our TFX component declarations: config exec properties and their parsing."""

from __future__ import annotations

from tfx.types.component_spec import ExecutionParameter

from components.common.config import StrictModel
from components.common.examples import DataConfig

# Re-exported: the components import their config keys from here.
from components.common.keys import CONFIG_KEY, DATA_CONFIG_KEY  # noqa: F401


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
