"""Quantizer executor: TFX glue around :func:`components.quantizer.quantizer.quantize_uri`."""

from __future__ import annotations

import logging
from typing import Any

from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from components.common import candidate, properties
from components.common.component_base import CONFIG_KEY, DATA_CONFIG_KEY
from components.common.examples import DataConfig
from components.quantizer import quantizer
from components.quantizer.config import QuantizerConfig

MODEL_KEY = "model"
EXAMPLES_KEY = "examples"
OUTPUT_MODEL_KEY = "quantized_model"
RECORD_FILE = "quantization.json"
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
        output = artifact_utils.get_single_instance(output_dict[OUTPUT_MODEL_KEY])

        def work() -> None:
            result = quantizer.quantize_uri(model.uri, examples_uri, data, config)
            result.record["model_artifact_id"] = model.id
            quantizer.write(result, output.uri, RECORD_FILE)
            numbers = quantizer.key_numbers(result.record)
            properties.set_properties(output, numbers)
            log.info("quantized %s (%s): %s", model.uri, config.mode, numbers)

        candidate.run_isolated(
            work,
            output,
            component="Quantizer",
            default_step="quantization",
            isolate=bool(exec_properties.get(candidate.ISOLATE_FAILURES_KEY)),
            inputs=[model],
            record_file=RECORD_FILE,
            extra={"mode": config.mode},
        )
