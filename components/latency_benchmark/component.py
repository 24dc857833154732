"""LatencyBenchmark TFX component: Models in, a ``tfxopt.LatencyReport`` out.

A separate step so a KFP pipeline can pin it to the target hardware, e.g.::

    latency = LatencyBenchmark(
        baseline_model=..., candidates={'int8': q8.outputs['optimized_model']}
    )
    # in the KFP runner's pipeline code:
    #   kubernetes node selector / resources for the 'LatencyBenchmark' node
    evaluator = Evaluator(..., latency_report=latency.outputs['latency_report'],
                          config={'latency': {'source': 'external'}, ...})
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec

from components.common.component_base import (
    CONFIG_KEY,
    DATA_CONFIG_KEY,
    config_json,
    data_config_json,
    json_parameter,
)
from components.common.examples import DataConfig
from components.common.types import LatencyReport
from components.evaluator.component import candidate_slots
from components.evaluator.constants import (
    BASELINE_MODEL_KEY,
    CANDIDATE_NAMES_KEY,
    EXAMPLES_KEY,
    LATENCY_REPORT_KEY,
    MAX_CANDIDATES,
    candidate_key,
)
from components.latency_benchmark import executor
from components.latency_benchmark.config import LatencyBenchmarkConfig


class LatencyBenchmarkSpec(ComponentSpec):
    """Inputs, outputs and parameters of the LatencyBenchmark."""

    PARAMETERS = {
        CONFIG_KEY: json_parameter(),
        DATA_CONFIG_KEY: json_parameter(),
        CANDIDATE_NAMES_KEY: json_parameter(),
    }
    INPUTS = {
        BASELINE_MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
        EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples, optional=True),
        **{
            candidate_key(i): ChannelParameter(type=standard_artifacts.Model, optional=True)
            for i in range(MAX_CANDIDATES)
        },
    }
    OUTPUTS = {LATENCY_REPORT_KEY: ChannelParameter(type=LatencyReport)}


class LatencyBenchmark(base_component.BaseComponent):
    """Batch-1 latency (p50/p95/p99) of a baseline and up to 8 candidates, interleaved.

    Each model is timed in the flavour the Evaluator judges (TFLite when the artifact has one;
    the baseline per ``baseline_flavour``), on the first eval example when Examples are given.
    """

    SPEC_CLASS = LatencyBenchmarkSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(
        self,
        baseline_model: types.BaseChannel,
        candidates: Sequence[types.BaseChannel] | Mapping[str, types.BaseChannel],
        examples: types.BaseChannel | None = None,
        candidate_names: Sequence[str] | None = None,
        config: LatencyBenchmarkConfig | dict | None = None,
        data_config: DataConfig | dict | None = None,
    ):
        """Args as the Evaluator's: use the same candidate names so the report lines up."""
        names, slots = candidate_slots(candidates, candidate_names)
        spec = LatencyBenchmarkSpec(
            baseline_model=baseline_model,
            examples=examples,
            config=config_json(config, LatencyBenchmarkConfig, "latency_benchmark"),
            data_config=data_config_json(data_config),
            candidate_names=json.dumps(names),
            latency_report=types.Channel(type=LatencyReport),
            **{k: v for k, v in slots.items() if k.startswith("candidate_") and "profile" not in k},
        )
        super().__init__(spec=spec)
