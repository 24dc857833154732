"""Quantizer TFX component: a Model and Examples in, a quantized ``Model`` (TFLite + SavedModel) out."""

from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import executor_spec

from components.common.component_base import (
    ModelStepComponent,
    ModelStepSpec,
    isolate_parameter,
    isolate_value,
)
from components.common.examples import DataConfig
from components.common.keys import ISOLATE_FAILURES_KEY
from components.quantizer import executor
from components.quantizer.config import QuantizerConfig

__all__ = ["Quantizer", "QuantizerSpec"]


class QuantizerSpec(ModelStepSpec):
    """Inputs, outputs and parameters of the Quantizer."""

    PARAMETERS = {**ModelStepSpec.PARAMETERS, ISOLATE_FAILURES_KEY: isolate_parameter()}


class Quantizer(ModelStepComponent):
    """Quantizes a model to a verified TFLite flatbuffer beside a SavedModel (one mode per run).

    The output Model (``outputs['optimized_model']``; TFX needs output names distinct from the
    input ``model``) holds ``Format-TFLite/model.tflite``, ``Format-Serving/`` and
    ``quantization.json``. The train split calibrates (full_int8, int16x8) and fine-tunes (qat, pqat, cqat, pcqat); the
    eval split verifies the flatbuffer and measures its accuracy. Chain it after a Trainer, the
    Pruner or the Clusterer; run several instances for several candidate modes.

    With ``isolate_failures=True`` (what the pipeline sets: each instance is one candidate) a
    failed verification or conversion does not fail the step: the output Model is marked failed
    (``failed`` = 1, ``failure_step``, ``failure_reason``; ``candidate_failure.json``, no model
    files) and the Evaluator rejects it (see :mod:`components.common.candidate`).

    Example:
      quantizer = Quantizer(model=clusterer.outputs['optimized_model'],
                            examples=example_gen.outputs['examples'],
                            config={'mode': 'pcqat', 'fine_tuning': {'epochs': 2}})
    """

    SPEC_CLASS = QuantizerSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)
    CONFIG_CLASS, WHERE = QuantizerConfig, "quantizer"

    def __init__(
        self,
        model: types.BaseChannel,
        examples: types.BaseChannel,
        config: QuantizerConfig | dict | None = None,
        data_config: DataConfig | dict | None = None,
        isolate_failures: bool = False,
    ):
        super().__init__(
            model, examples, config, data_config, isolate_failures=isolate_value(isolate_failures)
        )
