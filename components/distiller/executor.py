"""Distiller executor: TFX glue around :func:`components.distiller.distiller.run`."""

from __future__ import annotations

from components.common.executor_base import ModelStepExecutor
from components.distiller import distiller
from components.distiller.config import DistillerConfig


class Executor(ModelStepExecutor):
    """Writes the student (``Format-Serving/``), ``distillation.json`` and key numbers."""

    CONFIG_CLASS, WHERE, DONE = DistillerConfig, "distiller", "distilled a student of"
    CORE = distiller
