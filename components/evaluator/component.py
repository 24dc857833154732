"""Evaluator TFX component: the promotion gate over a baseline and up to 8 candidate Models.

KFP v2 cannot compile TFX union channels, so candidates are mapped onto fixed optional input slots
``candidate_0`` ... ``candidate_7`` (and ``candidate_profile_0`` ... for their ModelProfiles); their
names travel in the ``candidate_names`` exec property, in slot order.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence

from tfx import types
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec

from components.common.component_base import (
    CONFIG_KEY,
    DATA_CONFIG_KEY,
    config_json,
    data_config_json,
    json_parameter,
)
from components.common.errors import ConfigError
from components.common.examples import DataConfig
from components.common.types import EvaluationReport, LatencyReport, ModelProfile
from components.evaluator import executor
from components.evaluator.config import EvaluatorConfig
from components.evaluator.constants import (
    BASELINE_MODEL_KEY,
    BASELINE_PROFILE_KEY,
    BLESSING_KEY,
    CANDIDATE_NAMES_KEY,
    EVALUATION_KEY,
    EXAMPLES_KEY,
    LATENCY_REPORT_KEY,
    MAX_CANDIDATES,
    MODEL_KEY,
    candidate_key,
    candidate_profile_key,
)
from components.evaluator.evaluator import check_latency_sources, validate_names


def candidate_slots(
    candidates: Sequence[types.BaseChannel] | Mapping[str, types.BaseChannel],
    candidate_names: Sequence[str] | None = None,
    profiles: Sequence[types.BaseChannel | None] | Mapping[str, types.BaseChannel] | None = None,
) -> tuple[list[str], dict[str, types.BaseChannel | None]]:
    """Maps candidate channels (a list, or a dict name -> channel) onto the fixed input slots.

    Returns:
      (names in slot order, {slot key: channel or None} for every slot).
    Raises:
      ConfigError: none or more than 8 candidates, names that do not match, bad or duplicate
        names, profiles that name unknown candidates.
    """
    if isinstance(candidates, Mapping):
        if candidate_names is not None:
            raise ConfigError("pass candidate names either as the dict's keys or candidate_names")
        names, channels = list(candidates), list(candidates.values())
    else:
        channels = list(candidates)
        names = (
            list(candidate_names)
            if candidate_names is not None
            else [f"candidate_{i}" for i in range(len(channels))]
        )
    if not channels:
        raise ConfigError("the Evaluator needs at least one candidate model")
    if len(channels) > MAX_CANDIDATES:
        raise ConfigError(
            f"the Evaluator takes at most {MAX_CANDIDATES} candidates, got {len(channels)}: "
            "split them over several Evaluators or drop some branches"
        )
    if len(names) != len(channels):
        raise ConfigError(
            f"candidate_names has {len(names)} name(s) for {len(channels)} candidate(s)"
        )
    validate_names(names)
    if profiles is None:
        profile_list = [None] * len(channels)
    elif isinstance(profiles, Mapping):
        unknown = sorted(set(profiles) - set(names))
        if unknown:
            raise ConfigError(f"candidate_profiles names unknown candidates {unknown}")
        profile_list = [profiles.get(name) for name in names]
    else:
        profile_list = list(profiles)
        if len(profile_list) != len(channels):
            raise ConfigError(
                f"candidate_profiles has {len(profile_list)} entries for {len(channels)} candidates"
            )
    slots: dict[str, types.BaseChannel | None] = {}
    for i in range(MAX_CANDIDATES):
        slots[candidate_key(i)] = channels[i] if i < len(channels) else None
        slots[candidate_profile_key(i)] = profile_list[i] if i < len(channels) else None
    return names, slots


def _candidate_inputs() -> dict[str, ChannelParameter]:
    inputs = {}
    for i in range(MAX_CANDIDATES):
        inputs[candidate_key(i)] = ChannelParameter(type=standard_artifacts.Model, optional=True)
        inputs[candidate_profile_key(i)] = ChannelParameter(type=ModelProfile, optional=True)
    return inputs


class EvaluatorSpec(ComponentSpec):
    """Inputs, outputs and parameters of the Evaluator."""

    PARAMETERS = {
        CONFIG_KEY: json_parameter(),
        DATA_CONFIG_KEY: json_parameter(),
        CANDIDATE_NAMES_KEY: json_parameter(),
    }
    INPUTS = {
        BASELINE_MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
        BASELINE_PROFILE_KEY: ChannelParameter(type=ModelProfile, optional=True),
        EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
        LATENCY_REPORT_KEY: ChannelParameter(type=LatencyReport, optional=True),
        **_candidate_inputs(),
    }
    OUTPUTS = {
        BLESSING_KEY: ChannelParameter(type=standard_artifacts.ModelBlessing),
        MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
        EVALUATION_KEY: ChannelParameter(type=EvaluationReport),
    }


class Evaluator(base_beam_component.BaseBeamComponent):
    """Blesses at most one candidate that passes every configured rule against the baseline.

    Accuracy runs as an Apache Beam pipeline (the pipeline's ``beam_pipeline_args``), latency is
    measured here interleaved (or taken from a LatencyBenchmark / external file), sizes raw and
    gzipped. Outputs: ``blessing`` (standard ModelBlessing: ``blessed`` 1/0, BLESSED/NOT_BLESSED),
    ``model`` (a copy of the selected candidate, or a NOT_SELECTED note when nothing is blessed)
    and ``evaluation`` (``evaluation.json``: every metric and rule of every candidate).

    Example:
      evaluator = Evaluator(
          baseline_model=importer.outputs['result'],
          candidates={'float16': q16.outputs['optimized_model'],
                      'int8': q8.outputs['optimized_model']},
          examples=example_gen.outputs['examples'],
          config={'rules': {'max_accuracy_drop_points': 1.0, 'min_speedup': 1.0}})
      pusher = Pusher(model=evaluator.outputs['model'],
                      model_blessing=evaluator.outputs['blessing'], ...)
    """

    SPEC_CLASS = EvaluatorSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(
        self,
        baseline_model: types.BaseChannel,
        candidates: Sequence[types.BaseChannel] | Mapping[str, types.BaseChannel],
        examples: types.BaseChannel,
        candidate_names: Sequence[str] | None = None,
        baseline_profile: types.BaseChannel | None = None,
        candidate_profiles: Sequence[types.BaseChannel | None]
        | Mapping[str, types.BaseChannel]
        | None = None,
        latency_report: types.BaseChannel | None = None,
        config: EvaluatorConfig | dict | None = None,
        data_config: DataConfig | dict | None = None,
    ):
        """Builds the component; the config is validated here, at pipeline-build time.

        Args:
          baseline_model: the Model every candidate is compared with (the new checkpoint).
          candidates: up to 8 candidate Model channels, a list or a dict name -> channel.
          examples: Examples with the eval split (``data_config.eval_split``).
          candidate_names: report names of a candidate list (default candidate_0, ...).
          baseline_profile / candidate_profiles: optional tfxopt.ModelProfile channels (their
            key numbers are copied into the report as context).
          latency_report: optional tfxopt.LatencyReport (a LatencyBenchmark pinned to target
            hardware); used as configured by ``config.latency.source``.
          config: EvaluatorConfig or its dict; data_config: DataConfig or its dict.
        """
        names, slots = candidate_slots(candidates, candidate_names, candidate_profiles)
        parsed = (
            config
            if isinstance(config, EvaluatorConfig)
            else EvaluatorConfig.parse(config, where="evaluator")
        )
        check_latency_sources(parsed, latency_report is not None)
        if not parsed.rules.configured():
            from components.evaluator.constants import NO_RULES_MEANING

            logging.getLogger(__name__).warning("evaluator: %s", NO_RULES_MEANING)
        spec = EvaluatorSpec(
            baseline_model=baseline_model,
            baseline_profile=baseline_profile,
            examples=examples,
            latency_report=latency_report,
            config=config_json(parsed, EvaluatorConfig, "evaluator"),
            data_config=data_config_json(data_config),
            candidate_names=json.dumps(names),
            blessing=types.Channel(type=standard_artifacts.ModelBlessing),
            model=types.Channel(type=standard_artifacts.Model),
            evaluation=types.Channel(type=EvaluationReport),
            **slots,
        )
        super().__init__(spec=spec)
