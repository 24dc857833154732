"""Pusher TFX component: a blessed Model in, a standard ``PushedModel`` out."""

from __future__ import annotations

import logging

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts, standard_component_specs
from tfx.types.component_spec import ChannelParameter, ComponentSpec
from tfx.types.system_executions import Deploy

from components.common.component_base import CONFIG_KEY, config_json, json_parameter
from components.pusher import executor
from components.pusher.config import PusherConfig

MODEL_KEY = standard_component_specs.MODEL_KEY
MODEL_BLESSING_KEY = standard_component_specs.MODEL_BLESSING_KEY
PUSHED_MODEL_KEY = standard_component_specs.PUSHED_MODEL_KEY

log = logging.getLogger(__name__)


class PusherSpec(ComponentSpec):
    """Inputs, outputs and parameters of the Pusher."""

    PARAMETERS = {CONFIG_KEY: json_parameter()}
    INPUTS = {
        MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
        # Optional so a pipeline can be built without a gate, but then nothing is ever pushed.
        MODEL_BLESSING_KEY: ChannelParameter(type=standard_artifacts.ModelBlessing, optional=True),
    }
    OUTPUTS = {PUSHED_MODEL_KEY: ChannelParameter(type=standard_artifacts.PushedModel)}
    TYPE_ANNOTATION = Deploy


class Pusher(base_component.BaseComponent):
    """Pushes a blessed model to TF Serving repositories and signed OTA channels.

    Unblessed (or without a blessing) nothing is pushed and the ``PushedModel`` says ``pushed=0``
    with ``not_pushed_reason``. Each push is atomic and idempotent.

    Example:
      pusher = Pusher(
          model=evaluator.outputs['model'],
          model_blessing=evaluator.outputs['blessing'],
          config={'model_name': 'digits',
                  'serving': [{'base_directory': 'serving', 'labels': ['canary']}],
                  'ota': [{'base_directory': 'ota', 'channel': 'canary',
                           'signing_key_env': 'TFXOPT_OTA_SIGNING_KEY'}]})
    """

    SPEC_CLASS = PusherSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(
        self,
        model: types.BaseChannel,
        model_blessing: types.BaseChannel | None = None,
        config: PusherConfig | dict | None = None,
    ):
        if model_blessing is None:
            log.warning("Pusher without a model_blessing input never pushes anything.")
        spec = PusherSpec(
            model=model,
            model_blessing=model_blessing,
            config=config_json(config, PusherConfig, "pusher"),
            pushed_model=types.Channel(type=standard_artifacts.PushedModel),
        )
        super().__init__(spec=spec)
