"""Distiller executor: TFX glue around :func:`components.distiller.distiller.run`."""

from __future__ import annotations

import logging
from typing import Any

from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from components.common import properties
from components.common.examples import DataConfig
from components.common.keys import (
    CONFIG_KEY,
    DATA_CONFIG_KEY,
    EXAMPLES_KEY,
    INPUT_MODEL_ARTIFACT_ID,
    MODEL_KEY,
    OPTIMIZED_MODEL_KEY,
)
from components.distiller import distiller
from components.distiller.config import DistillerConfig

log = logging.getLogger(__name__)


class Executor(base_executor.BaseExecutor):
    """Writes the student (``Format-Serving/``), ``distillation.json`` and key numbers."""

    def Do(
        self,
        input_dict: dict[str, list[Any]],
        output_dict: dict[str, list[Any]],
        exec_properties: dict[str, Any],
    ) -> None:
        config = DistillerConfig.parse(exec_properties[CONFIG_KEY], where="distiller")
        data = DataConfig.parse(exec_properties[DATA_CONFIG_KEY], where="data")
        teacher = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
        examples_uri = artifact_utils.get_single_uri(input_dict[EXAMPLES_KEY])
        output = artifact_utils.get_single_instance(output_dict[OPTIMIZED_MODEL_KEY])

        # run() writes the output only once everything that can fail has succeeded.
        record = distiller.run(teacher.uri, examples_uri, output.uri, config, data)
        numbers = distiller.key_numbers(record)
        numbers[INPUT_MODEL_ARTIFACT_ID] = teacher.id
        properties.set_properties(output, numbers)
        log.info("student of %s: %s", teacher.uri, numbers)
