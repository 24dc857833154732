"""LatencyBenchmark configuration."""

from __future__ import annotations

from typing import Literal

import pydantic

from components.common.config import StrictModel


class LatencyBenchmarkConfig(StrictModel):
    """How the latency step measures (keep baseline_flavour equal to the Evaluator's)."""

    warmup_runs: int = pydantic.Field(20, ge=0, le=100_000)
    timed_runs: int = pydantic.Field(200, ge=1, le=1_000_000)
    num_threads: int = pydantic.Field(1, ge=1, le=256, description="Interpreter threads.")
    baseline_flavour: Literal["tflite", "saved_model"] = pydantic.Field(
        "tflite", description="As the Evaluator's baseline_flavour, so both judge the same bytes."
    )
