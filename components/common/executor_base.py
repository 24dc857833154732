"""Shared pieces of our TFX executors: config parsing and the model-in/model-out step.

Every model-in/model-out executor (Pruner, Clusterer, Quantizer, Distiller, ModelImporter) does
the same thing: parse its config and the data config, take the one input Model and Examples, run
its core ``run(model_uri, examples_uri, output_uri, config, data)`` (which writes the output only
once everything that can fail has succeeded), and set the record's key numbers plus
``input_model_artifact_id`` as custom properties of the output Model. :class:`ModelStepExecutor`
does that once; a subclass declares its config class and its core module (``run``, ``key_numbers``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import ModuleType
from typing import Any

from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from components.common import properties
from components.common.config import StrictModel
from components.common.errors import ConfigError
from components.common.examples import DataConfig
from components.common.keys import (
    CONFIG_KEY,
    DATA_CONFIG_KEY,
    EXAMPLES_KEY,
    INPUT_MODEL_ARTIFACT_ID,
    MODEL_KEY,
    OPTIMIZED_MODEL_KEY,
)

log = logging.getLogger(__name__)


def parse_configs(
    exec_properties: dict[str, Any], config_class: type[StrictModel], where: str
) -> tuple[Any, DataConfig]:
    """The component's config (``config_class``, errors named under ``where``) and the data config."""
    config = config_class.parse(exec_properties[CONFIG_KEY], where=where)
    data = DataConfig.parse(exec_properties.get(DATA_CONFIG_KEY), where="data")
    return config, data


def optional_uri(input_dict: dict[str, list[Any]], key: str) -> str | None:
    """The uri of the one artifact of an optional input, or None when the input has none."""
    artifacts = input_dict.get(key) or []
    return artifact_utils.get_single_uri(artifacts) if artifacts else None


def candidate_inputs(
    input_dict: dict[str, list[Any]], names: list[str], key_of: Callable[[int], str]
) -> dict[str, Any]:
    """Each candidate's Model artifact by name (the i-th name's input is ``key_of(i)``).

    A candidate whose input holds no artifact fails, naming the candidate and the input.
    """
    found = {}
    for i, name in enumerate(names):
        artifacts = input_dict.get(key_of(i)) or []
        if not artifacts:
            raise ConfigError(f"candidate {name!r} (input {key_of(i)}) has no Model artifact")
        found[name] = artifact_utils.get_single_instance(artifacts)
    return found


class ModelStepExecutor(base_executor.BaseExecutor):
    """A Model and Examples in, one Model out with the step's key numbers as custom properties.

    Subclasses set ``CONFIG_CLASS``, ``WHERE`` (the config's name in error messages), ``DONE``
    (the log line's verb) and ``CORE``, the core module whose ``run`` and ``key_numbers`` do the
    work (or override :meth:`run` / :meth:`key_numbers`); ``OUTPUT_KEY`` is ``optimized_model``
    unless overridden. :meth:`step` is the hook for a different flow.
    """

    CONFIG_CLASS: type[StrictModel]
    WHERE: str
    DONE: str
    CORE: ModuleType
    OUTPUT_KEY = OPTIMIZED_MODEL_KEY

    def run(self, model_uri: str, examples_uri: str, output_uri: str, config, data) -> dict:
        """The core algorithm: writes the output under ``output_uri``; returns its record."""
        return self.CORE.run(model_uri, examples_uri, output_uri, config, data)

    def key_numbers(self, record: dict, config) -> dict:
        """The record's figures stored as custom properties of the output Model."""
        return self.CORE.key_numbers(record)

    def Do(
        self,
        input_dict: dict[str, list[Any]],
        output_dict: dict[str, list[Any]],
        exec_properties: dict[str, Any],
    ) -> None:
        config, data = parse_configs(exec_properties, self.CONFIG_CLASS, self.WHERE)
        model = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
        examples_uri = artifact_utils.get_single_uri(input_dict[EXAMPLES_KEY])
        output = artifact_utils.get_single_instance(output_dict[self.OUTPUT_KEY])
        self.step(model, examples_uri, output, config, data, exec_properties)

    def step(self, model, examples_uri: str, output, config, data, exec_properties) -> None:
        """Runs the core and records its key numbers on ``output``."""
        # run() writes the output only once everything that can fail has succeeded.
        record = self.run(model.uri, examples_uri, output.uri, config, data)
        numbers = self.key_numbers(record, config)
        numbers[INPUT_MODEL_ARTIFACT_ID] = model.id
        properties.set_properties(output, numbers)
        log.info("%s %s: %s", self.DONE, model.uri, numbers)
