"""Distiller executor: TFX glue around :func:`components.distiller.distiller.distill`."""

from __future__ import annotations

import logging
from typing import Any

from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from components.common import model_io, properties
from components.common.component_base import CONFIG_KEY, DATA_CONFIG_KEY
from components.common.examples import DataConfig
from components.distiller import distiller
from components.distiller.config import DistillerConfig

TEACHER_KEY = "teacher"
EXAMPLES_KEY = "examples"
MODEL_KEY = "model"
RECORD_FILE = "distillation.json"
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
        teacher = artifact_utils.get_single_instance(input_dict[TEACHER_KEY])
        examples_uri = artifact_utils.get_single_uri(input_dict[EXAMPLES_KEY])
        output = artifact_utils.get_single_instance(output_dict[MODEL_KEY])

        result = distiller.distill(teacher.uri, examples_uri, data, config)
        result.record["teacher_artifact_id"] = teacher.id
        # Everything that can fail (checks, training, evaluation) happened above: only now is
        # anything written to the output.
        model_io.save_keras_model(result.student, output.uri)
        properties.write_json(output.uri, RECORD_FILE, result.record)
        numbers = distiller.key_numbers(result.record)
        properties.set_properties(output, numbers)
        log.info("student of %s: %s", teacher.uri, numbers)
