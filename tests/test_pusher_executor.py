"""Pusher executor and component: artifacts built by hand, Do() called directly."""

from __future__ import annotations

import json
import os

import pytest
from tfx.types import standard_artifacts

from components.common.errors import ConfigError, ModelInputError
from components.pusher import ota, signing
from components.pusher.executor import Executor

MODEL = "digits"


@pytest.fixture
def key_path(tmp_path):
    path = str(tmp_path / "keys" / "ota.pem")
    signing.write_keypair(path)
    return path


@pytest.fixture
def model_artifact(tmp_path, tiny_model):
    """A Model artifact with Format-Serving and a float32 Format-TFLite flavour."""
    from components.common import model_io, tflite

    model = standard_artifacts.Model()
    model.uri = str(tmp_path / "model")
    saved = model_io.save_keras_model(tiny_model, model.uri)
    model_io.write_tflite(tflite.convert_float32(saved), model.uri)
    return model


def _blessing(tmp_path, blessed: int | None, evaluation: dict | None = None):
    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = str(tmp_path / "blessing")
    os.makedirs(blessing.uri, exist_ok=True)
    if blessed is not None:
        blessing.set_int_custom_property("blessed", blessed)
        open(os.path.join(blessing.uri, "BLESSED" if blessed else "NOT_BLESSED"), "w").close()
    if evaluation is not None:
        with open(os.path.join(blessing.uri, "evaluation.json"), "w") as f:
            json.dump(evaluation, f)
    return blessing


def _config(tmp_path, key_path, **overrides) -> str:
    config = {
        "model_name": MODEL,
        "serving": [{"base_directory": str(tmp_path / "serving"), "labels": ["canary"]}],
        "ota": [
            {
                "base_directory": str(tmp_path / "ota"),
                "channel": "canary",
                "signing_key_path": key_path,
                "rollout_percentage": 50,
            }
        ],
        **overrides,
    }
    return json.dumps(config)


def _run(tmp_path, model, blessing, config: str):
    pushed = standard_artifacts.PushedModel()
    pushed.uri = str(tmp_path / "pushed")
    inputs = {"model": [model]}
    if blessing is not None:
        inputs["model_blessing"] = [blessing]
    Executor().Do(inputs, {"pushed_model": [pushed]}, {"config": config})
    return pushed


def test_blessed_model_is_pushed_to_serving_and_a_signed_channel(
    tmp_path, model_artifact, key_path
):
    # What our Evaluator leaves in its blessing: evaluation.json, production_metrics.json and
    # key numbers as custom properties.
    evaluation = {
        "decision": {"blessed": True, "selected": "int8"},
        "candidates": [
            {"name": "float16", "metrics": {"top1_accuracy": 0.98}},
            {"name": "int8", "metrics": {"top1_accuracy": 0.975, "speedup": 1.4}},
        ],
    }
    blessing = _blessing(tmp_path, 1, evaluation)
    production_record = {
        "format": "tfxopt.production_metrics/v1",
        "model_name": "int8",
        "accuracy": 0.975,
        "latency_p95_ms": 0.2,
        "size_bytes": 4321,
    }
    with open(os.path.join(blessing.uri, "production_metrics.json"), "w") as f:
        json.dump(production_record, f)
    blessing.set_float_custom_property("speedup", 1.4)
    blessing.set_string_custom_property("blessing_message", "int8 passes every rule")
    pushed = _run(tmp_path, model_artifact, blessing, _config(tmp_path, key_path))

    assert pushed.get_int_custom_property("pushed") == 1
    assert pushed.get_string_custom_property("pushed_version") == "1"
    serving_dir = os.path.join(str(tmp_path / "serving"), MODEL, "1")
    assert pushed.get_string_custom_property("pushed_destination") == serving_dir
    assert pushed.get_int_custom_property("serving_version") == 1
    assert pushed.get_int_custom_property("ota_sequence") == 1
    assert pushed.get_string_custom_property("ota_channel") == "canary"

    record = json.load(open(os.path.join(pushed.uri, "push.json")))
    assert record["pushed"] and record["tflite_source"] == "artifact"
    assert record["metrics"] == {
        "format": "tfxopt.production_metrics/v1",
        "candidate": "int8",
        "accuracy": 0.975,
        "latency_p95_ms": 0.2,
        "size_bytes": 4321,
        "speedup": 1.4,
    }
    production = json.load(open(os.path.join(str(tmp_path / "serving"), MODEL, "production.json")))
    assert (production["version"], production["accuracy"]) == (1, 0.975)

    public = signing.load_public_key(key_path + ".pub")
    channel_dir = os.path.join(str(tmp_path / "ota"), MODEL, "canary")
    manifest = ota.verify_channel(channel_dir, signing.trusted_keys([public]))
    assert manifest["rollout_percentage"] == 50 and manifest["metrics"]["accuracy"] == 0.975
    tflite_file = os.path.join(model_artifact.uri, "Format-TFLite", "model.tflite")
    assert manifest["files"][0]["length"] == os.path.getsize(tflite_file)
    # What a device app needs to call it: the static batch and each input (signed with the rest).
    assert manifest["files"][0]["inputs"] == {
        "batch_size": 1,
        "static": True,
        "inputs": [{"name": "serving_default_image:0", "shape": [1, 64], "dtype": "float32"}],
        "state_tensors": 0,
    }
    assert manifest["source"]["model_uri"] == model_artifact.uri
    channel_metrics = json.load(open(os.path.join(channel_dir, "metrics.json")))
    assert (channel_metrics["accuracy"], channel_metrics["sequence"]) == (0.975, 1)

    # The same model again: same serving version, no new manifest.
    again = _run(tmp_path, model_artifact, blessing, _config(tmp_path, key_path))
    assert again.get_int_custom_property("serving_version") == 1
    assert again.get_int_custom_property("serving_new_version") == 0
    assert again.get_int_custom_property("ota_sequence") == 1


@pytest.mark.parametrize("blessed", [0, None])
def test_unblessed_or_missing_blessing_pushes_nothing(tmp_path, model_artifact, key_path, blessed):
    blessing = _blessing(tmp_path, blessed) if blessed is not None else None
    pushed = _run(tmp_path, model_artifact, blessing, _config(tmp_path, key_path))
    assert pushed.get_int_custom_property("pushed") == 0
    reason = pushed.get_string_custom_property("not_pushed_reason")
    assert ("blessed=0" if blessed == 0 else "no model_blessing") in reason
    assert json.load(open(os.path.join(pushed.uri, "push.json"))) == {
        "pushed": False,
        "reason": reason,
    }
    assert not os.path.exists(tmp_path / "serving") and not os.path.exists(tmp_path / "ota")


def test_blessing_without_property_is_not_blessed(tmp_path, model_artifact, key_path):
    blessing = _blessing(tmp_path, None)
    open(os.path.join(blessing.uri, "BLESSED"), "w").close()  # a marker alone is not enough
    pushed = _run(tmp_path, model_artifact, blessing, _config(tmp_path, key_path))
    assert pushed.get_int_custom_property("pushed") == 0
    assert "blessed=missing" in pushed.get_string_custom_property("not_pushed_reason")


def test_bad_key_or_model_fails_before_anything_is_written(tmp_path, model_artifact, key_path):
    blessing = _blessing(tmp_path, 1)
    config = json.loads(_config(tmp_path, key_path))
    config["ota"][0]["signing_key_path"] = str(tmp_path / "nope.pem")
    with pytest.raises(ConfigError, match=r"pusher\.ota\.0: signing_key_path .*nope\.pem"):
        _run(tmp_path, model_artifact, blessing, json.dumps(config))
    missing = standard_artifacts.Model()
    missing.uri = str(tmp_path / "no-model")
    with pytest.raises(ModelInputError, match="does not exist"):
        _run(tmp_path, missing, blessing, _config(tmp_path, key_path))
    assert not os.path.exists(tmp_path / "serving") and not os.path.exists(tmp_path / "ota")
    assert not os.path.exists(tmp_path / "pushed" / "push.json")


def test_model_without_tflite_is_converted_or_refused(tmp_path, tiny_model, key_path):
    from components.common import model_io

    model = standard_artifacts.Model()
    model.uri = str(tmp_path / "model")
    model_io.save_keras_model(tiny_model, model.uri)
    blessing = _blessing(tmp_path, 1)
    config = json.loads(_config(tmp_path, key_path))
    config["serving"] = []
    config["ota"][0]["missing_tflite"] = "refuse"
    with pytest.raises(ConfigError, match="missing_tflite is 'refuse'"):
        _run(tmp_path, model, blessing, json.dumps(config))
    config["ota"][0]["missing_tflite"] = "convert_float32"
    pushed = _run(tmp_path, model, blessing, json.dumps(config))
    assert pushed.get_string_custom_property("pushed_version") == "1"  # the OTA model version
    record = json.load(open(os.path.join(pushed.uri, "push.json")))
    assert record["tflite_source"] == "converted_float32"
    public = signing.load_public_key(key_path + ".pub")
    manifest = ota.verify_channel(
        os.path.join(str(tmp_path / "ota"), MODEL, "canary"), signing.trusted_keys([public])
    )
    assert manifest["source"]["tflite_source"] == "converted_float32"


def test_component_validates_config_at_build_time():
    from tfx.dsl.components.common import importer

    from components.pusher.component import Pusher

    model = importer.Importer(source_uri="/m", artifact_type=standard_artifacts.Model).outputs[
        "result"
    ]
    blessing = importer.Importer(
        source_uri="/b", artifact_type=standard_artifacts.ModelBlessing
    ).outputs["result"]
    good = {"model_name": MODEL, "serving": [{"base_directory": "/srv"}]}
    pusher = Pusher(model=model, model_blessing=blessing, config=good)
    assert set(pusher.outputs) == {"pushed_model"}
    assert json.loads(pusher.exec_properties["config"])["serving"][0]["keep_last"] == 5
    with pytest.raises(ConfigError, match="at least one destination"):
        Pusher(model=model, model_blessing=blessing, config={"model_name": MODEL})
    with pytest.raises(ConfigError, match=r"pusher\.serving\.0\.labels"):
        Pusher(
            model=model,
            model_blessing=blessing,
            config={"model_name": MODEL, "serving": [{"base_directory": "/s", "labels": ["Bad"]}]},
        )
