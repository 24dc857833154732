"""Quantizer executor: TFX glue around :func:`components.quantizer.quantizer.run`."""

from __future__ import annotations

import logging
from typing import Any

from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from components.common import candidate, properties
from components.common.examples import DataConfig
from components.common.keys import (
    CONFIG_KEY,
    DATA_CONFIG_KEY,
    EXAMPLES_KEY,
    INPUT_MODEL_ARTIFACT_ID,
    ISOLATE_FAILURES_KEY,
    MODEL_KEY,
    OPTIMIZED_MODEL_KEY,
    QUANTIZATION_RECORD_FILE,
)
from components.quantizer import quantizer
from components.quantizer.config import QuantizerConfig

log = logging.getLogger(__name__)


class Executor(base_executor.BaseExecutor):
    """Writes ``Format-TFLite/model.tflite``, ``Format-Serving/`` and ``quantization.json``.

    Everything is converted and verified in memory first: on any failure nothing is written.
    With ``isolate_failures`` a candidate failure (verification, conversion) marks the output
    failed instead of failing the step; an input marked failed is passed on.
    """

    def Do(
        self,
        input_dict: dict[str, list[Any]],
        output_dict: dict[str, list[Any]],
        exec_properties: dict[str, Any],
    ) -> None:
        config = QuantizerConfig.parse(exec_properties[CONFIG_KEY], where="quantizer")
        data = DataConfig.parse(exec_properties[DATA_CONFIG_KEY], where="data")
        model = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
        examples_uri = artifact_utils.get_single_uri(input_dict[EXAMPLES_KEY])
        output = artifact_utils.get_single_instance(output_dict[OPTIMIZED_MODEL_KEY])

        def work() -> None:
            record = quantizer.run(model.uri, examples_uri, output.uri, config, data)
            numbers = quantizer.key_numbers(record)
            numbers[INPUT_MODEL_ARTIFACT_ID] = model.id
            properties.set_properties(output, numbers)
            log.info("quantized %s (%s): %s", model.uri, config.mode, numbers)

        candidate.run_isolated(
            work,
            output,
            component="Quantizer",
            default_step="quantization",
            isolate=bool(exec_properties.get(ISOLATE_FAILURES_KEY)),
            inputs=[model],
            record_file=QUANTIZATION_RECORD_FILE,
            extra={"mode": config.mode},
        )
