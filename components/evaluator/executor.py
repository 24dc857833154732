"""Evaluator executor: TFX glue around :func:`components.evaluator.evaluator.evaluate`."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from tfx.dsl.components.base import base_beam_executor
from tfx.types import artifact_utils
from tfx.utils import io_utils

from components.common import artifact_output, properties
from components.common.executor_base import candidate_inputs, optional_uri, parse_configs
from components.evaluator import constants as c
from components.evaluator import evaluator
from components.evaluator.config import EvaluatorConfig
from components.evaluator.models import BASELINE, ModelRef

log = logging.getLogger(__name__)


class Executor(base_beam_executor.BaseBeamExecutor):
    """Judges the candidates and writes the blessing, the selected model and the evaluation."""

    def Do(
        self,
        input_dict: dict[str, list[Any]],
        output_dict: dict[str, list[Any]],
        exec_properties: dict[str, Any],
    ) -> None:
        config, data = parse_configs(exec_properties, EvaluatorConfig, "evaluator")
        names = json.loads(exec_properties[c.CANDIDATE_NAMES_KEY])
        base_artifact = artifact_utils.get_single_instance(input_dict[c.BASELINE_MODEL_KEY])
        baseline = ModelRef(
            BASELINE,
            base_artifact.uri,
            optional_uri(input_dict, c.BASELINE_PROFILE_KEY),
            base_artifact.id,
        )
        sources = candidate_inputs(input_dict, names, c.candidate_key)
        candidates = [
            ModelRef(
                name,
                artifact.uri,
                optional_uri(input_dict, c.candidate_profile_key(i)),
                artifact.id,
            )
            for i, (name, artifact) in enumerate(sources.items())
        ]
        examples_uri = artifact_utils.get_single_uri(input_dict[c.EXAMPLES_KEY])
        blessing = artifact_utils.get_single_instance(output_dict[c.BLESSING_KEY])
        model_out = artifact_utils.get_single_instance(output_dict[c.MODEL_KEY])
        evaluation = artifact_utils.get_single_instance(output_dict[c.EVALUATION_KEY])

        # On failure nothing is left in the outputs.
        with artifact_output.all_or_nothing(evaluation.uri):
            record = evaluator.evaluate(
                baseline,
                candidates,
                examples_uri,
                data,
                config,
                work_dir=evaluation.uri,
                latency_report_uri=optional_uri(input_dict, c.LATENCY_REPORT_KEY),
                make_pipeline=self._make_beam_pipeline,
            )
        log.warning("Evaluator rules:\n%s", evaluator.rules_table(record))

        numbers = evaluator.key_numbers(record)
        decision = record["decision"]
        for artifact in (blessing, evaluation):
            properties.write_json(artifact.uri, c.EVALUATION_FILE, record)
            properties.set_properties(artifact, numbers)
        # The standard Evaluator's properties, so tools that read them find them.
        properties.set_properties(
            blessing, {"baseline_model": base_artifact.uri, "baseline_model_id": base_artifact.id}
        )
        if decision["blessed"]:
            selected = sources[decision["selected"]]
            properties.set_properties(
                blessing, {"current_model": selected.uri, "current_model_id": selected.id}
            )
            properties.write_json(
                blessing.uri, c.PRODUCTION_METRICS_FILE, record["production_record"]
            )
            io_utils.write_string_file(os.path.join(blessing.uri, c.BLESSED_FILE), "")
            _copy_selected(selected, model_out, numbers)
        else:
            io_utils.write_string_file(os.path.join(blessing.uri, c.NOT_BLESSED_FILE), "")
            io_utils.write_string_file(
                os.path.join(model_out.uri, c.NOT_SELECTED_FILE),
                "No candidate was blessed, so this Model artifact holds no model.\n"
                f"Reason: {decision['reason']}\n",
            )
            properties.set_properties(
                model_out, {c.BLESSED_PROPERTY: c.NOT_BLESSED_VALUE, "selected_candidate": ""}
            )
        blessing.set_int_custom_property(
            c.BLESSED_PROPERTY, c.BLESSED_VALUE if decision["blessed"] else c.NOT_BLESSED_VALUE
        )


def _copy_selected(selected, model_out, numbers: dict) -> None:
    """Copies the selected candidate's artifact content, so a Pusher ships exactly what was judged."""
    io_utils.copy_dir(selected.uri, model_out.uri)
    # Keep the candidate's own properties (e.g. its quantization mode), then say where it came from.
    for key, value in selected.mlmd_artifact.custom_properties.items():
        model_out.mlmd_artifact.custom_properties[key].CopyFrom(value)
    properties.set_properties(
        model_out,
        {
            c.BLESSED_PROPERTY: c.BLESSED_VALUE,
            "selected_candidate": numbers["selected_candidate"],
            "evaluated_flavour": numbers.get("evaluated_flavour"),
            "source_model_uri": selected.uri,
            "source_model_id": selected.id,
        },
    )
