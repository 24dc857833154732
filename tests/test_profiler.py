"""Profiler: the core on tiny models (exact counts), the executor on artifacts, bad inputs."""

import json
import os

import numpy as np
import pytest

from components.common import model_io, tflite
from components.common.errors import ModelInputError
from components.common.examples import DataConfig
from components.profiler import profiler
from components.profiler.config import ProfilerConfig

FAST = ProfilerConfig(warmup_runs=2, timed_runs=30, throughput_runs=3, measure_memory=False)


def _sparse_clustered(model):
    """Zero half of the hidden kernel and snap the output kernel to 4 values."""
    hidden = model.get_layer("hidden")
    kernel, bias = hidden.get_weights()
    kernel[:, ::2] = 0.0
    hidden.set_weights([kernel, bias])
    out = model.get_layer("out")
    kernel, bias = out.get_weights()
    levels = np.array([-0.2, -0.05, 0.05, 0.2], np.float32)
    kernel = levels[np.argmin(np.abs(kernel[..., None] - levels), axis=-1)]
    out.set_weights([kernel, bias])
    return model


def test_profile_counts_are_exact(tmp_path, tiny_model, tiny_examples):
    model = _sparse_clustered(tiny_model)
    uri = str(tmp_path / "model")
    model_io.save_keras_model(model, uri)
    config = FAST.model_copy(update={"multi_thread_threads": 2})
    record = profiler.profile_model(uri, tiny_examples, DataConfig(), config)

    per_tensor = {t["name"]: t for t in record["parameters"]["per_tensor"]}
    hidden = next(t for n, t in per_tensor.items() if n.startswith("hidden") and "kernel" in n)
    out = next(t for n, t in per_tensor.items() if n.startswith("out") and "kernel" in n)
    assert hidden["sparsity"] == pytest.approx(0.5)
    assert out["unique_values"] <= 4
    assert record["parameters"]["total_parameters"] == 64 * 16 + 16 + 16 * 10 + 10
    assert record["compute"]["flops_per_example"] == 2 * (64 * 16 + 16 * 10)
    assert record["compute"]["hot_layers"][0]["layer"] == "hidden"

    lat = record["latency"]["tflite_batch1"]
    assert 0 < lat["p50_ms"] <= lat["p95_ms"] <= lat["p99_ms"]
    assert lat["runs"] == 30 and lat["num_threads"] == 1
    multi = record["latency"]["tflite_batch1_multi_thread"]  # timed interleaved with it
    assert multi["num_threads"] == 2 and multi["runs"] == 30 and multi["p50_ms"] > 0
    delegation = record["delegation"]  # measured in the LiteRT interpreter
    assert delegation["nodes"] == delegation["flatbuffer_operators"] >= 2
    assert (
        delegation["delegated_nodes"] + sum(delegation["fallback_ops"].values())
        == (delegation["nodes"])
    )
    assert (delegation["reason"] is None) == (delegation["delegated_share"] == 1.0)
    sizes = record["sizes"]
    assert sizes["tflite_source"] == "float32 conversion"
    assert 0 < sizes["tflite_gzip_bytes"] < sizes["tflite_bytes"]
    assert sizes["saved_model_bytes"] > sizes["tflite_bytes"]

    # accuracy equals a plain computation on the same split
    from components.common import examples as examples_lib

    x, y = examples_lib.load_arrays(tiny_examples, "eval", DataConfig(), model)
    expected = float(np.mean(np.argmax(model.predict(x, verbose=0), -1) == y))
    assert record["accuracy"]["saved_model_top1"] == pytest.approx(expected)
    assert record["accuracy"]["tflite_top1"] == pytest.approx(expected)
    assert record["accuracy"]["examples"] == 32

    numbers = profiler.key_numbers(record)
    assert numbers["kernel_sparsity"] == pytest.approx((64 * 8) / (64 * 16 + 16 * 10))
    assert numbers["latency_p95_ms"] == lat["p95_ms"]
    assert numbers["latency_num_threads"] == 1
    assert numbers["multi_thread_latency_p50_ms"] == multi["p50_ms"]
    assert numbers["multi_thread_num_threads"] == 2
    assert numbers["xnnpack_delegated_share"] == delegation["delegated_share"]
    assert numbers["xnnpack_partitions"] == delegation["partitions"]


def test_tflite_flavour_of_the_artifact_is_profiled(tmp_path, tiny_model):
    uri = str(tmp_path / "model")
    saved = model_io.save_keras_model(tiny_model, uri)
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(saved)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]  # dynamic-range int8 weights
    model_io.write_tflite(converter.convert(), uri)
    record = profiler.profile_model(uri, None, DataConfig(), FAST)
    assert record["sizes"]["tflite_source"] == "artifact"
    assert "int8" in record["tflite_weights"]["summary"]["bytes_per_dtype"]
    assert "accuracy" not in record
    assert record["latency"]["tflite_batch1_multi_thread"]["num_threads"] == (
        profiler.multi_thread_count(FAST)
    )


def test_a_static_batch_flatbuffer_is_timed_in_chunks_and_fully_delegated(tmp_path):
    """The reference CNN converted with a static batch of 1: its throughput batch runs in
    chunks, and XNNPACK takes the whole graph (a dynamic batch leaves the Reshape's run-time
    shape ops to the default kernels: tests/test_delegation.py)."""
    import tensorflow as tf
    import tf_keras

    from pipelines.reference_data import build_digits_cnn

    tf_keras.utils.set_random_seed(0)
    model = build_digits_cnn()
    uri = str(tmp_path / "model")
    model_io.save_keras_model(model, uri)
    fn = tf.function(lambda x: model(x, training=False))
    concrete = fn.get_concrete_function(tf.TensorSpec([1, 64], tf.float32))
    flatbuffer = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model).convert()
    model_io.write_tflite(flatbuffer, uri)
    record = profiler.profile_model(uri, None, DataConfig(), FAST)
    assert record["delegation"]["delegated_share"] == 1.0
    assert record["delegation"]["partitions"] == 1 and record["delegation"]["reason"] is None
    throughput = record["latency"]["throughput"]
    assert throughput["tflite_static_batch"] == 1 and throughput["tflite_examples_per_s"] > 0


def test_peak_memory_is_measured_per_model_in_a_fresh_process(tmp_path, tiny_model):
    uri = str(tmp_path / "model")
    model_io.save_keras_model(tiny_model, uri)
    config = FAST.model_copy(update={"measure_memory": True})
    record = profiler.profile_model(uri, None, DataConfig(), config)
    # The TFLite probe loads only the LiteRT runtime (as a device app), not TensorFlow.
    for kind, runtime in (("tflite", 20e6), ("saved_model", 50e6)):
        entry = record["memory"][kind]
        assert entry["peak_rss_bytes"] >= entry["runtime_rss_bytes"] > runtime, entry
        assert entry["model_peak_rss_bytes"] == entry["peak_rss_bytes"] - entry["runtime_rss_bytes"]
    assert record["memory"]["saved_model"]["model_peak_rss_bytes"] > 0


def _singular_values(t):
    import tensorflow as tf

    return tf.linalg.svd(t, compute_uv=False)


def test_unconvertible_model_names_the_op(tmp_path):
    import tf_keras

    model = tf_keras.Sequential(
        [
            tf_keras.layers.Input(shape=(64,)),
            tf_keras.layers.Reshape((8, 8)),
            tf_keras.layers.Lambda(_singular_values),
        ]
    )
    uri = str(tmp_path / "model")
    saved = model_io.save_keras_model(model, uri)
    with pytest.raises(ModelInputError, match="cannot be converted to TFLite.*Svd"):
        tflite.convert_float32(saved)


def test_missing_label_fails_before_heavy_work(tmp_path, tiny_model, tiny_examples, monkeypatch):
    from components.common.errors import DataError

    uri = str(tmp_path / "model")
    model_io.save_keras_model(tiny_model, uri)

    def no_conversion(*_):
        raise AssertionError("conversion started before the inputs were checked")

    monkeypatch.setattr(tflite, "convert_float32", no_conversion)
    with pytest.raises(DataError, match="label key 'y'"):
        profiler.profile_model(uri, tiny_examples, DataConfig(label_key="y"), FAST)


def test_executor_writes_profile_and_properties(tmp_path, tiny_model, tiny_examples):
    from tfx.types import artifact_utils, standard_artifacts

    from components.common.types import ModelProfile
    from components.profiler import executor

    model = standard_artifacts.Model()
    model.uri = str(tmp_path / "model")
    model_io.save_keras_model(tiny_model, model.uri)
    examples = standard_artifacts.Examples()
    examples.uri = tiny_examples
    examples.split_names = artifact_utils.encode_split_names(["train", "eval"])
    profile = ModelProfile()
    profile.uri = str(tmp_path / "profile")

    executor.Executor().Do(
        {"model": [model], "examples": [examples]},
        {"profile": [profile]},
        {"config": FAST.model_dump_json(), "data_config": DataConfig().model_dump_json()},
    )
    with open(os.path.join(profile.uri, executor.PROFILE_FILE)) as f:
        record = json.load(f)
    assert record["accuracy"]["examples"] == 32
    assert profile.get_int_custom_property("total_parameters") == 64 * 16 + 16 + 16 * 10 + 10
    assert profile.get_float_custom_property("latency_p95_ms") == pytest.approx(
        record["latency"]["tflite_batch1"]["p95_ms"]
    )
    assert profile.get_float_custom_property("accuracy") == pytest.approx(
        record["accuracy"]["saved_model_top1"]
    )


def test_component_validates_config_at_build_time():
    from tfx import v1 as tfx

    from components.common.errors import ConfigError
    from components.profiler.component import Profiler

    channel = tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model)
    with pytest.raises(ConfigError, match="profiler.num_threads"):
        Profiler(model=channel, config={"num_threads": 0})


def test_flops_of_transposed_and_depthwise_convolutions_match_a_hand_count():
    """Conv*Transpose scatters each input position through the kernel; depthwise has k taps per
    output channel. Both are subclasses of Conv, whose formula would count them wrongly."""
    import tf_keras

    from components.common import flops

    layers = tf_keras.layers
    inputs = layers.Input(shape=(4, 4, 3))
    up = layers.Conv2DTranspose(8, 3, strides=2, padding="same", name="up")(inputs)  # 8x8x8
    dw = layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(up)  # 8x8x16
    seq = layers.Reshape((64, 16))(dw)
    dw1 = layers.DepthwiseConv1D(5, padding="valid", name="dw1")(seq)  # 60x16
    up1 = layers.Conv1DTranspose(4, 2, strides=2, name="up1")(dw1)  # 120x4
    model = tf_keras.Model(inputs, up1)

    macs = {e["layer"]: e["macs"] for e in flops.model_flops(model)["per_layer"]}
    assert macs["up"] == (4 * 4) * (3 * 3) * 3 * 8
    assert macs["dw"] == (8 * 8 * 16) * (3 * 3)
    assert macs["dw1"] == (60 * 16) * 5
    assert macs["up1"] == 60 * 2 * 16 * 4
    assert flops.model_flops(model)["uncounted_layers"] == []


def test_gzipped_directory_size_reads_through_gfile(tmp_path):
    """A SavedModel on an object store is measured like a local one (ram:// stands in for gs://)."""
    import tensorflow as tf

    from components.common import measure

    local = tmp_path / "model"
    (local / "variables").mkdir(parents=True)
    (local / "saved_model.pb").write_bytes(b"graph" * 1000)
    (local / "variables" / "variables.index").write_bytes(bytes(range(256)) * 8)
    remote = f"ram://{tmp_path.name}/model"
    for name in ("saved_model.pb", "variables/variables.index"):
        tf.io.gfile.makedirs(os.path.dirname(f"{remote}/{name}"))
        tf.io.gfile.copy(str(local / name), f"{remote}/{name}", overwrite=True)

    size = measure.gzipped_dir_bytes(str(local))
    assert 0 < size < 5000 + 2048  # compressed: the payload is 7,048 bytes of repeats
    assert measure.gzipped_dir_bytes(remote) == size
