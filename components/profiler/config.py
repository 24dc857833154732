"""Profiler configuration."""

from __future__ import annotations

import pydantic

from components.common.config import StrictModel


class ProfilerConfig(StrictModel):
    """How a model is profiled."""

    warmup_runs: int = pydantic.Field(
        20, ge=0, le=100_000, description="Untimed runs before timing."
    )
    timed_runs: int = pydantic.Field(200, ge=1, le=1_000_000, description="Timed batch-1 runs.")
    num_threads: int = pydantic.Field(
        1,
        ge=1,
        le=256,
        description="Interpreter threads of the batch-1 latency (and of the delegation record).",
    )
    multi_thread_threads: int | None = pydantic.Field(
        None,
        ge=1,
        le=256,
        description="Threads of the second, multi-thread batch-1 latency, timed interleaved with "
        "the first (None: the CPUs this process may use; not timed when that equals num_threads).",
    )
    throughput_batch_size: int = pydantic.Field(32, ge=1, le=65_536)
    throughput_runs: int = pydantic.Field(20, ge=1, le=100_000)
    measure_memory: bool = pydantic.Field(
        True, description="Measure peak RSS in a fresh subprocess per model flavour."
    )
    top_layers: int = pydantic.Field(5, ge=1, le=1000, description="How many hot layers to list.")
    max_eval_examples: int | None = pydantic.Field(
        None, ge=1, description="Cap on eval examples for accuracy (default: the whole split)."
    )
