"""Pusher executor: the standard TFX Pusher's blessing check and output conventions, our pushes.

Extends ``tfx.components.pusher.executor.Executor``: ``CheckBlessing`` decides, ``_MarkPushed`` /
``_MarkNotPushed`` write ``pushed``, ``pushed_destination`` and ``pushed_version`` exactly as the
standard Pusher does, so anything reading a standard ``PushedModel`` reads ours. Unlike the standard
Pusher, a missing blessing pushes nothing, and the model is not copied into the output artifact
(the destinations hold it; ``push.json`` records where).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from tfx.components.pusher import executor as tfx_pusher_executor
from tfx.types import artifact_utils, standard_component_specs

from components.common import properties
from components.common.keys import BLESSED_PROPERTY, CONFIG_KEY, NOT_BLESSED_FILE, PUSH_FILE
from components.pusher import metrics as push_metrics
from components.pusher import push, storage
from components.pusher.config import PusherConfig

log = logging.getLogger(__name__)


class Executor(tfx_pusher_executor.Executor):
    """Pushes a blessed model to every configured destination; records ``push.json``."""

    def Do(
        self,
        input_dict: dict[str, list[Any]],
        output_dict: dict[str, list[Any]],
        exec_properties: dict[str, Any],
    ) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        config = PusherConfig.parse(exec_properties[CONFIG_KEY], where="pusher")
        output = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.PUSHED_MODEL_KEY]
        )
        model = artifact_utils.get_single_instance(input_dict[standard_component_specs.MODEL_KEY])
        blessings = input_dict.get(standard_component_specs.MODEL_BLESSING_KEY) or []
        reason = self._not_blessed_reason(input_dict, blessings)
        if reason:
            log.warning("pusher: nothing pushed: %s", reason)
            self._MarkNotPushed(output)
            properties.set_properties(output, {"not_pushed_reason": reason})
            properties.write_json(output.uri, PUSH_FILE, {"pushed": False, "reason": reason})
            return

        blessing = blessings[0]
        metrics = push_metrics.collect(
            blessing_uri=blessing.uri,
            blessing_properties={
                k: blessing.get_custom_property(k) for k in blessing.mlmd_artifact.custom_properties
            },
            metrics_path=config.metrics_path,
            metrics=config.metrics,
        )
        source = {
            "model_artifact_id": model.id,
            "model_blessing_uri": blessing.uri,
            "model_blessing_artifact_id": blessing.id,
        }
        record = push.push_model(model.uri, config, metrics, source)

        first_serving = record["serving"][0] if record["serving"] else None
        first_ota = record["ota"][0] if record["ota"] else None
        destinations = [s["path"] for s in record["serving"]] + [
            o["manifest_path"] for o in record["ota"]
        ]
        self._MarkPushed(
            output,
            pushed_destination=destinations[0],
            pushed_version=str(
                first_serving["version"] if first_serving else first_ota["model_version"]
            ),
        )
        numbers = {"pushed_destinations": json.dumps(destinations)}
        if first_serving:
            numbers |= {
                "serving_version": first_serving["version"],
                "serving_new_version": int(first_serving["created"]),
                "serving_path": first_serving["path"],
            }
        if first_ota:
            numbers |= {
                "ota_channel": first_ota["channel"],
                "ota_sequence": first_ota["sequence"],
                "ota_model_version": first_ota["model_version"],
                "ota_manifest": first_ota["manifest_path"],
                "ota_key_id": first_ota["key_id"],
            }
        properties.set_properties(output, numbers)
        properties.write_json(output.uri, PUSH_FILE, {"pushed": True, **record})
        log.info("pusher: pushed %s to %s", model.uri, ", ".join(destinations))

    def _not_blessed_reason(self, input_dict: dict, blessings: list) -> str | None:
        """Why the model must not be pushed, or None. Fails closed on anything unclear."""
        if not blessings:
            return "no model_blessing input: a model is pushed only after the gate blessed it"
        blessing = artifact_utils.get_single_instance(blessings)
        if not self.CheckBlessing(input_dict):
            value = (
                blessing.get_int_custom_property(BLESSED_PROPERTY)
                if blessing.has_custom_property(BLESSED_PROPERTY)
                else "missing"
            )
            return f"model blessing {blessing.uri} is not blessed (custom property blessed={value})"
        if storage.exists(storage.join(blessing.uri, NOT_BLESSED_FILE)):
            return f"model blessing {blessing.uri} holds a {NOT_BLESSED_FILE} marker"
        return None
