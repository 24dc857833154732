"""Profiler executor: TFX glue around :func:`components.profiler.profiler.profile_model`."""

from __future__ import annotations

import logging
from typing import Any

from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from components.common import candidate, keys, properties
from components.common.executor_base import optional_uri, parse_configs
from components.profiler import profiler
from components.profiler.config import ProfilerConfig

PROFILE_FILE = keys.PROFILE_FILE  # re-exported for readers of the profile
log = logging.getLogger(__name__)


class Executor(base_executor.BaseExecutor):
    """Writes ``profile.json`` and the key numbers as custom properties of the profile artifact.

    A model marked failed upstream gets a failed "not profiled" profile; with
    ``isolate_failures`` so does a model that cannot be converted or run.
    """

    def Do(
        self,
        input_dict: dict[str, list[Any]],
        output_dict: dict[str, list[Any]],
        exec_properties: dict[str, Any],
    ) -> None:
        config, data = parse_configs(exec_properties, ProfilerConfig, "profiler")
        model = artifact_utils.get_single_instance(input_dict["model"])
        examples_uri = optional_uri(input_dict, "examples")
        output = artifact_utils.get_single_instance(output_dict["profile"])

        def work() -> None:
            record = profiler.profile_model(model.uri, examples_uri, data, config)
            record["model_artifact_id"] = model.id
            properties.write_json(output.uri, PROFILE_FILE, record)
            numbers = profiler.key_numbers(record)
            properties.set_properties(output, numbers)
            log.info("profile of %s: %s", model.uri, numbers)

        candidate.run_isolated(
            work,
            output,
            component="Profiler",
            default_step="profiling",
            isolate=bool(exec_properties.get(keys.ISOLATE_FAILURES_KEY)),
            inputs=[model],
            record_file=PROFILE_FILE,
            skipped_note="not profiled: upstream failed",
        )
