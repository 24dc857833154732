"""LatencyBenchmark executor: TFX glue around :func:`components.latency_benchmark.benchmark.run_benchmark`."""

from __future__ import annotations

import json
import logging
from typing import Any

from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from components.common import properties
from components.common.executor_base import candidate_inputs, optional_uri, parse_configs
from components.evaluator import constants as c
from components.evaluator.latency import REPORT_FILE
from components.evaluator.models import BASELINE, ModelRef
from components.latency_benchmark import benchmark
from components.latency_benchmark.config import LatencyBenchmarkConfig

LATENCY_REPORT_KEY = c.LATENCY_REPORT_KEY
log = logging.getLogger(__name__)


class Executor(base_executor.BaseExecutor):
    """Writes ``latency.json`` (format tfxopt.latency/v1) and per-model p50/p95 properties."""

    def Do(
        self,
        input_dict: dict[str, list[Any]],
        output_dict: dict[str, list[Any]],
        exec_properties: dict[str, Any],
    ) -> None:
        config, data = parse_configs(exec_properties, LatencyBenchmarkConfig, "latency")
        names = json.loads(exec_properties[c.CANDIDATE_NAMES_KEY])
        baseline = ModelRef(
            BASELINE, artifact_utils.get_single_uri(input_dict[c.BASELINE_MODEL_KEY])
        )
        candidates = [
            ModelRef(name, artifact.uri)
            for name, artifact in candidate_inputs(input_dict, names, c.candidate_key).items()
        ]
        examples_uri = optional_uri(input_dict, c.EXAMPLES_KEY)
        output = artifact_utils.get_single_instance(output_dict[LATENCY_REPORT_KEY])

        record = benchmark.run_benchmark(
            baseline, candidates, examples_uri, data, config, work_dir=output.uri
        )
        properties.write_json(output.uri, REPORT_FILE, record)
        numbers = benchmark.key_numbers(record)
        properties.set_properties(output, numbers)
        log.info("latency on %s: %s", record["source"], numbers)
