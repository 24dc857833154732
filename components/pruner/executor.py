"""Pruner executor: TFX glue around :func:`components.pruner.pruner.run` (and, for
``mode: structured``, :func:`components.pruner.structured.run`)."""

from __future__ import annotations

from components.common.executor_base import ModelStepExecutor
from components.pruner import pruner, structured
from components.pruner.config import PrunerConfig


class Executor(ModelStepExecutor):
    """Writes the pruned model (``Format-Serving/``), ``pruning.json``, the fine-tuning history
    and the key numbers as custom properties of the output Model."""

    CONFIG_CLASS, WHERE, DONE = PrunerConfig, "pruner", "pruned"
    CORE = pruner

    def run(self, model_uri, examples_uri, output_uri, config, data) -> dict:
        if config.mode == "structured":
            return structured.run(model_uri, examples_uri, output_uri, config.structured, data)
        return super().run(model_uri, examples_uri, output_uri, config, data)

    def key_numbers(self, record: dict, config) -> dict:
        if config.mode == "structured":
            return structured.key_numbers(record)
        return super().key_numbers(record, config)
