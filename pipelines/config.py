"""The pipeline's YAML config: one typed, validated object, checked when the pipeline is built.

Unknown keys and out-of-range values fail at once with the field's dotted name.
"""

from __future__ import annotations

import os
import re

import pydantic

from components.common.config import StrictModel
from components.common.errors import ConfigError
from components.common.examples import DataConfig
from components.profiler.config import ProfilerConfig

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class PipelineConfig(StrictModel):
    """Top-level pipeline configuration (``pipelines/configs/*.yaml``)."""

    pipeline_name: str = pydantic.Field(
        "tfxopt", description="Lower-case letters, digits and '-': also the KFP pipeline name."
    )
    enable_cache: bool = pydantic.Field(
        True, description="Reuse results of steps whose inputs and config did not change."
    )
    beam_pipeline_args: list[str] = pydantic.Field(
        default_factory=lambda: ["--direct_running_mode=in_memory", "--direct_num_workers=1"],
        description="Apache Beam options for Beam-based steps (runner, workers, ...).",
    )
    data: DataConfig = pydantic.Field(default_factory=DataConfig)
    profiler: ProfilerConfig = pydantic.Field(default_factory=ProfilerConfig)

    @pydantic.field_validator("pipeline_name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                "must be 1-63 lower-case letters, digits or '-', starting and ending with a "
                "letter or digit"
            )
        return value


def load_config(path: str | None) -> PipelineConfig:
    """Reads and validates a YAML config file (None: all defaults)."""
    if path is None:
        return PipelineConfig()
    import yaml

    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} does not exist.")
    with open(path) as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path!r} is not valid YAML: {e}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(
            f"config file {path!r} must hold a mapping of keys, not {type(data).__name__}."
        )
    try:
        return PipelineConfig.parse(data or {})
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
