"""Quantizer executor: TFX glue around :func:`components.quantizer.quantizer.run`."""

from __future__ import annotations

from components.common import candidate
from components.common.executor_base import ModelStepExecutor
from components.common.keys import ISOLATE_FAILURES_KEY, QUANTIZATION_RECORD_FILE
from components.quantizer import quantizer
from components.quantizer.config import QuantizerConfig


class Executor(ModelStepExecutor):
    """Writes ``Format-TFLite/model.tflite``, ``Format-Serving/`` and ``quantization.json``.

    Everything is converted and verified in memory first: on any failure nothing is written.
    With ``isolate_failures`` a candidate failure (verification, conversion) marks the output
    failed instead of failing the step; an input marked failed is passed on.
    """

    CONFIG_CLASS, WHERE, DONE = QuantizerConfig, "quantizer", "quantized"
    CORE = quantizer

    def step(self, model, examples_uri, output, config, data, exec_properties) -> None:
        """The core step, isolated as a candidate (see :mod:`components.common.candidate`)."""
        base_step = super().step
        candidate.run_isolated(
            lambda: base_step(model, examples_uri, output, config, data, exec_properties),
            output,
            component="Quantizer",
            default_step="quantization",
            isolate=bool(exec_properties.get(ISOLATE_FAILURES_KEY)),
            inputs=[model],
            record_file=QUANTIZATION_RECORD_FILE,
            extra={"mode": config.mode},
        )
