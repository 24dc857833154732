"""Clusterer executor: TFX glue around :func:`components.clusterer.clusterer.run`."""

from __future__ import annotations

from components.clusterer import clusterer
from components.clusterer.config import ClustererConfig
from components.common.executor_base import ModelStepExecutor


class Executor(ModelStepExecutor):
    """Writes the clustered model (``Format-Serving/``), ``clustering.json``, the fine-tuning
    history and the key numbers as custom properties of the output Model."""

    CONFIG_CLASS, WHERE, DONE = ClustererConfig, "clusterer", "clustered"
    CORE = clusterer
