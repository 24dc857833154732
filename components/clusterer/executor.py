"""Clusterer executor: TFX glue around :func:`components.clusterer.clusterer.run`."""

from __future__ import annotations

import logging
from typing import Any

from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from components.clusterer import clusterer
from components.clusterer.config import ClustererConfig
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

log = logging.getLogger(__name__)


class Executor(base_executor.BaseExecutor):
    """Writes the clustered model (``Format-Serving/``), ``clustering.json``, the fine-tuning
    history and the key numbers as custom properties of the output Model."""

    def Do(
        self,
        input_dict: dict[str, list[Any]],
        output_dict: dict[str, list[Any]],
        exec_properties: dict[str, Any],
    ) -> None:
        config = ClustererConfig.parse(exec_properties[CONFIG_KEY], where="clusterer")
        data = DataConfig.parse(exec_properties.get(DATA_CONFIG_KEY), where="data")
        model = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
        examples_uri = artifact_utils.get_single_uri(input_dict[EXAMPLES_KEY])
        output = artifact_utils.get_single_instance(output_dict[OPTIMIZED_MODEL_KEY])

        # run() writes the output only once everything that can fail has succeeded.
        record = clusterer.run(model.uri, examples_uri, output.uri, config, data)
        numbers = clusterer.key_numbers(record)
        numbers[INPUT_MODEL_ARTIFACT_ID] = model.id
        properties.set_properties(output, numbers)
        log.info("clustered %s: %s", model.uri, numbers)
