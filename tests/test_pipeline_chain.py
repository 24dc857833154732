"""End to end: the whole chain on the reference inputs, locally.

Profiler -> Pruner -> Clusterer -> two Quantizer branches -> candidate Profilers -> Evaluator ->
Pusher (serving repository + signed OTA channel); then the same run again, cached: nothing new
is pushed. (pcqat, slower to fine-tune, is covered by tests/test_quantizer.py and `make demo`.)
"""

import hashlib
import os

import pytest

from pipelines.config import PipelineConfig
from tests.small_inputs import CANARY_PUSHER

pytestmark = pytest.mark.e2e


def _config(tmp_path):
    return PipelineConfig.parse(
        {
            "pipeline_name": "chain",
            "profiler": {
                "warmup_runs": 5,
                "timed_runs": 50,
                "throughput_runs": 3,
                "measure_memory": False,
            },
            "pruner": {"target_sparsity": 0.8, "layers": {"exclude_names": ["conv1"]}},
            "clusterer": {"number_of_clusters": 16, "preserve_sparsity": True},
            "quantization": [{"mode": "none", "name": "float32"}, {"mode": "full_int8"}],
            "evaluator": {
                "objective": "smallest",
                "rules": {"max_accuracy_drop_points": 1.5, "min_compression_ratio": 4.0},
                "latency": {"timed_runs": 100},
            },
            "pusher": CANARY_PUSHER,
        }
    )


def test_chain_blesses_pushes_and_is_idempotent(tmp_path, reference_data):
    import numpy as np
    import tensorflow as tf

    from components.pusher import ota, signing
    from pipelines.local.runner import run_local
    from pipelines.report import console

    out = tmp_path / "out"
    signing.write_keypair(str(out / "keys" / "ota.pem"))
    config = _config(tmp_path)
    run = run_local(config, reference_data["model"], reference_data["examples"], str(out))
    assert all(step.state == "COMPLETE" for step in run.steps), [
        (s.node_id, s.state) for s in run.steps
    ]

    [pruned] = run.outputs_of("Pruner", "optimized_model")
    assert pruned.custom_properties["achieved_sparsity"].double_value >= 0.78
    [profile] = run.outputs_of("Profiler_float32", "profile")
    assert profile.custom_properties["kernel_sparsity"].double_value >= 0.78
    assert profile.custom_properties["max_unique_values"].int_value <= 16
    evaluation = console.evaluation_record(run)
    assert evaluation["decision"]["blessed"] is True
    selected = evaluation["decision"]["selected"]
    assert selected in {"float32", "full_int8"}
    for candidate in evaluation["candidates"]:
        for rule in candidate["rules"]:
            assert rule["passed"] is (
                rule["value"] <= rule["threshold"]
                if rule["op"] == "<="
                else rule["value"] >= rule["threshold"]
            )

    # the serving push loads as a SavedModel and its signature runs (with tf.saved_model.load:
    # no model server runs here; tests/test_pusher_serving.py loads one as TF Serving does)
    pushed = console.push_record(run)
    assert pushed["pushed"] is True
    version_dir = pushed["serving"][0]["path"]
    assert os.path.basename(version_dir) == "1"
    loaded = tf.saved_model.load(version_dir)
    fn = loaded.signatures["serving_default"]
    ((name, spec),) = fn.structured_input_signature[1].items()
    result = fn(**{name: tf.zeros([1, *spec.shape[1:]], spec.dtype)})
    assert list(result.values())[0].shape == (1, 10)
    # the OTA manifest verifies with the public key and names the blessed flatbuffer
    trusted = signing.trusted_keys([signing.load_public_key(str(out / "keys" / "ota.pem.pub"))])
    manifest = ota.verify_channel(str(out / "ota" / "digits" / "canary"), trusted)
    assert manifest["sequence"] == 1
    # The flatbuffer shipped over the air is the very one the Evaluator measured and gated.
    chosen = next(c for c in evaluation["candidates"] if c["name"] == selected)
    assert chosen["flavour"] == "tflite"
    [shipped] = manifest["files"]
    with open(chosen["judged_path"], "rb") as f:
        judged = f.read()
    assert (out / "ota" / "digits" / "canary" / shipped["path"]).read_bytes() == judged
    assert shipped["sha256"] == chosen["sha256"] == hashlib.sha256(judged).hexdigest()
    text = console.render(run)
    assert "decision: BLESSED" in text and "version 1 (new version" in text

    # an identical second run is served from the cache and pushes nothing new
    again = run_local(config, reference_data["model"], reference_data["examples"], str(out))
    states = {s.node_id: s.state for s in again.steps}
    assert set(states.values()) == {"CACHED"}, states  # every step, not a sample of them
    versions = [d for d in os.listdir(out / "serving" / "digits") if d.isdigit()]
    assert versions == ["1"]
    assert ota.verify_channel(str(out / "ota" / "digits" / "canary"), trusted)["sequence"] == 1
    for candidate in evaluation["candidates"]:
        assert np.isfinite(candidate["accuracy"]["top1_accuracy"])
