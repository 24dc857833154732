"""ModelImporter executor: TFX glue around :func:`components.importer.importer.run`."""

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
    IMPORTED_MODEL_KEY,
    INPUT_MODEL_ARTIFACT_ID,
    MODEL_KEY,
)
from components.importer import importer
from components.importer.config import ImporterConfig

# The record's entries that travel as custom properties of the output Model.
PROPERTY_KEYS = (
    importer.SOURCE_FORMAT,
    importer.KERAS_VERSION,
    importer.ACTION,
    importer.FLATTENED_MODELS,
    importer.MAX_ABS_DIFF,
    importer.TOLERANCE,
    importer.VERIFIED_EXAMPLES,
    importer.WALL_TIME_S,
)
log = logging.getLogger(__name__)


class Executor(base_executor.BaseExecutor):
    """Writes the imported tf_keras model (``Format-Serving/``), ``import.json`` and the key
    numbers (source format, Keras version, flattened models, max output difference) as custom
    properties of the output Model."""

    def Do(
        self,
        input_dict: dict[str, list[Any]],
        output_dict: dict[str, list[Any]],
        exec_properties: dict[str, Any],
    ) -> None:
        config = ImporterConfig.parse(exec_properties[CONFIG_KEY], where="importer")
        data = DataConfig.parse(exec_properties.get(DATA_CONFIG_KEY), where="data")
        model = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
        examples_uri = artifact_utils.get_single_uri(input_dict[EXAMPLES_KEY])
        output = artifact_utils.get_single_instance(output_dict[IMPORTED_MODEL_KEY])

        # run() writes the output only once the model is converted and verified.
        record = importer.run(model.uri, examples_uri, data, config, output.uri)
        numbers = {key: record.get(key) for key in PROPERTY_KEYS}
        numbers[INPUT_MODEL_ARTIFACT_ID] = model.id
        properties.set_properties(output, numbers)
        log.info("imported %s: %s", model.uri, numbers)
