"""Clusterer: config validation, centroid initialisations, per-channel and sparsity-preserving
clustering, executor output, and the issue's "done when" on the reference digits model.

Every test that clusters reads the weights back and counts their distinct values.
"""

import json
import os

import numpy as np
import pytest

from components.clusterer.config import ClustererConfig
from components.common import keys
from components.common.errors import ConfigError, ModelInputError
from tests.artifacts import conv_classifier, run_model_step

FAST = {"batch_size": 8, "epochs": 1, "learning_rate": 1e-3}


def _config(**overrides) -> ClustererConfig:
    base = {"number_of_clusters": 8, "fine_tuning": dict(FAST)}
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return ClustererConfig.parse(base, where="clusterer")


def _datasets(model, n=64, batch_size=8):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.random((n, *model.inputs[0].shape[1:]), dtype=np.float32)
    y = rng.integers(0, int(model.outputs[0].shape[-1]), n).astype(np.int64)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
    return ds, ds


def _cluster(model, **overrides):
    from components.clusterer import clusterer

    train_ds, eval_ds = _datasets(model)
    return clusterer.cluster_model(model, train_ds, eval_ds, _config(**overrides))


def _unique(values) -> int:
    return int(np.unique(np.asarray(values)).size)


def _load(uri):
    import tf_keras

    return tf_keras.models.load_model(os.path.join(uri, "Format-Serving"), compile=False)


def _kernels(model) -> dict:
    return {layer.name: layer.kernel.numpy() for layer in model.layers if hasattr(layer, "kernel")}


# --- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"number_of_clusters": 1}, "clusterer.number_of_clusters"),
        ({"number_of_clusters": 2, "preserve_sparsity": True}, "clusterer"),
        ({"centroid_initialization": "kmeans"}, "clusterer.centroid_initialization"),
        ({"fine_tuning": {"learning_rate": 0}}, "clusterer.fine_tuning.learning_rate"),
        ({"fine_tuning": {"strategy": "parameter_server"}}, "clusterer.fine_tuning.strategy"),
        ({"layers": {"types": []}}, "clusterer.layers.types"),
        ({"clusters": 8}, "clusterer.clusters"),
    ],
)
def test_bad_config_fails_naming_the_field(bad, field):
    with pytest.raises(ConfigError) as raised:
        ClustererConfig.parse(bad, where="clusterer")
    lines = str(raised.value).splitlines()[1:]
    assert any(line.strip().startswith((f"{field}:", f"{field}.")) for line in lines), lines


def test_component_validates_config_when_the_pipeline_is_built():
    from tfx import types
    from tfx.types import standard_artifacts

    from components.clusterer.component import Clusterer

    model = types.Channel(type=standard_artifacts.Model)
    examples = types.Channel(type=standard_artifacts.Examples)
    with pytest.raises(ConfigError, match="clusterer.number_of_clusters"):
        Clusterer(model=model, examples=examples, config={"number_of_clusters": 0})
    clusterer = Clusterer(model=model, examples=examples, config={"preserve_sparsity": True})
    config = json.loads(clusterer.exec_properties["config"])
    assert config["preserve_sparsity"] is True and config["number_of_clusters"] == 16
    assert config["fine_tuning"]["epochs"] == ClustererConfig().fine_tuning.epochs
    assert clusterer.outputs[keys.OPTIMIZED_MODEL_KEY].type_name == "Model"


# --- the core -------------------------------------------------------------------------------


@pytest.mark.parametrize("init", ["kmeans++", "linear", "density-based", "random"])
def test_every_centroid_initialisation_bounds_the_distinct_values(init):
    model = conv_classifier()
    stripped, record, _ = _cluster(
        model, number_of_clusters=6, centroid_initialization=init, fine_tuning={"epochs": 0}
    )
    assert record["clustered_layers"] == ["conv", "hidden", "out"]
    for name, kernel in _kernels(stripped).items():
        assert _unique(kernel) <= 6, (init, name)
        assert _unique(model.get_layer(name).kernel.numpy()) > 6  # the input was not clustered
    assert record["max_unique_values"] <= 6


def test_per_channel_clustering_of_convolutions():
    model = conv_classifier()
    stripped, record, _ = _cluster(model, number_of_clusters=4, cluster_per_channel=True)
    conv = stripped.get_layer("conv").kernel.numpy()  # (3, 3, 1, 8): 9 weights per channel
    per_channel = [_unique(conv[..., c]) for c in range(conv.shape[-1])]
    assert max(per_channel) <= 4
    assert _unique(conv) > 4  # each channel has its own centroids
    assert record["layers"]["conv"]["per_channel"] is True
    assert record["layers"]["conv"]["unique_values"] == max(per_channel)
    # Per-channel applies to Conv2D only; Dense kernels are clustered as a whole.
    assert _unique(stripped.get_layer("hidden").kernel.numpy()) <= 4
    assert record["layers"]["hidden"]["per_channel"] is False


def test_layer_selection_and_too_small_tensors():
    from components.clusterer import clusterer

    model = conv_classifier()
    stripped, record, _ = _cluster(model, layers={"names": ["hidden"]})
    assert record["clustered_layers"] == ["hidden"]
    assert _unique(stripped.get_layer("hidden").kernel.numpy()) <= 8
    # Unselected layers are fine-tuned too, but not clustered.
    assert _unique(stripped.get_layer("conv").kernel.numpy()) > 8
    assert _unique(stripped.get_layer("out").kernel.numpy()) > 8
    # 9 weights per channel cannot gain from 16 clusters per channel: conv is left as it is.
    selection = clusterer.plan(model, _config(number_of_clusters=16, cluster_per_channel=True))
    assert selection.selected == ["hidden", "out"]
    assert "conv" in selection.skipped and "per channel" in selection.skipped["conv"]


def test_unsupported_custom_layer_is_named():
    import tf_keras

    from components.clusterer import clusterer

    class Scale(tf_keras.layers.Layer):
        def build(self, input_shape):
            self.scale = self.add_weight(name="scale", shape=(input_shape[-1],), initializer="ones")

        def call(self, inputs):
            return inputs * self.scale

    inputs = tf_keras.layers.Input((64,))
    hidden = tf_keras.layers.Dense(32, name="hidden")(inputs)
    outputs = tf_keras.layers.Dense(10, activation="softmax", name="out")(
        Scale(name="gain")(hidden)
    )
    model = tf_keras.Model(inputs, outputs)
    with pytest.raises(ModelInputError, match="'gain' \\(Scale\\).*clusterer.layers.exclude_names"):
        clusterer.plan(model, _config())
    assert clusterer.plan(model, _config(layers={"types": ["Dense"]})).selected == ["hidden", "out"]


def test_same_config_gives_the_same_clusters():
    model = conv_classifier()
    first, _, _ = _cluster(model)
    second, _, _ = _cluster(model)
    for name, kernel in _kernels(first).items():
        np.testing.assert_array_equal(kernel, _kernels(second)[name])


# --- the executor ---------------------------------------------------------------------------


def _sparse_tiny_model(tiny_model, sparsity=0.7):
    """The tiny model with its smallest-magnitude kernel weights set to zero."""
    for name in ("hidden", "out"):
        layer = tiny_model.get_layer(name)
        kernel, bias = layer.get_weights()
        threshold = np.quantile(np.abs(kernel), sparsity)
        layer.set_weights([np.where(np.abs(kernel) <= threshold, 0.0, kernel), bias])
    return tiny_model


def test_executor_keeps_zeros_with_preserve_sparsity(tmp_path, tiny_model, tiny_examples):
    from components.clusterer import executor
    from components.common import model_io, properties

    model = _sparse_tiny_model(tiny_model)
    model_uri = str(tmp_path / "input")
    model_io.save_keras_model(model, model_uri)
    input_kernels = _kernels(model)
    config = _config(preserve_sparsity=True, fine_tuning={"epochs": 2})
    output = run_model_step(
        executor.Executor, model_uri, tiny_examples, tmp_path / "output", config
    )

    saved = _load(output.uri)
    assert not any("cluster" in layer.name for layer in saved.layers)  # wrappers stripped
    for name, kernel in _kernels(saved).items():
        assert _unique(kernel) <= 8, name
        zeros_before = input_kernels[name] == 0
        assert zeros_before.mean() >= 0.69
        assert np.all(kernel[zeros_before] == 0), name  # the input's zeros are still zero
    record = properties.read_json(output.uri, "clustering.json")
    history = properties.read_json(output.uri, "fine_tuning_history.json")
    assert len(history) == 2 and {"loss", "accuracy", "val_accuracy"} <= set(history[0])
    assert record["sparsity_preserved"] is True
    props = output.mlmd_artifact.custom_properties
    assert json.loads(props["clusters_per_layer"].string_value) == {"hidden": 8, "out": 8}
    unique = json.loads(props["unique_values_per_layer"].string_value)
    assert unique == {name: _unique(kernel) for name, kernel in _kernels(saved).items()}
    assert props["max_unique_values"].int_value <= 8
    assert props["sparsity_preserved"].int_value == 1
    assert props["fine_tuning_epochs"].int_value == 2
    assert {"accuracy_before", "accuracy_after"} <= set(props)


# --- the "done when", on the reference digits model ---------------------------------


def test_reference_model_pruned_then_clustered_meets_the_targets(tmp_path, reference_data):
    """target_sparsity 0.8 then 16 clusters (sparsity preserved), default fine-tuning:
    >= 78% zeros, <= 16 values per clustered tensor, eval accuracy drop <= 1 point and a
    gzipped float32 TFLite >= 4x smaller than the baseline's."""
    from components.clusterer import executor as clusterer_executor
    from components.common import measure, model_io, tflite
    from components.common import weights as weights_lib
    from components.pruner import executor as pruner_executor
    from components.pruner.config import PrunerConfig

    pruned = run_model_step(
        pruner_executor.Executor,
        reference_data["model"],
        reference_data["examples"],
        tmp_path / "pruned",
        PrunerConfig(target_sparsity=0.8),
    )
    clustered = run_model_step(
        clusterer_executor.Executor,
        pruned.uri,
        reference_data["examples"],
        tmp_path / "clustered",
        ClustererConfig(number_of_clusters=16, preserve_sparsity=True),
    )
    final = _load(clustered.uri)
    kernels = weights_lib.kernel_stats(weights_lib.keras_weight_stats(final))
    sparsity = weights_lib.summarize(kernels)["sparsity"]
    assert sparsity >= 0.78
    assert max(k["unique_values"] for k in kernels) <= 16

    from components.common import examples as examples_lib
    from components.common import training
    from components.common.examples import DataConfig

    eval_ds = examples_lib.make_dataset(
        reference_data["examples"], "eval", DataConfig(), final, batch_size=256
    )
    baseline = training.accuracy(model_io.load_keras_model(reference_data["model"]), eval_ds)
    accuracy = training.accuracy(final, eval_ds)
    assert baseline - accuracy <= 0.01

    base_gz = measure.gzipped_bytes(
        tflite.convert_float32(model_io.serving_model_dir(reference_data["model"]))
    )
    final_gz = measure.gzipped_bytes(
        tflite.convert_float32(model_io.serving_model_dir(clustered.uri))
    )
    assert base_gz / final_gz >= 4.0
    print(
        f"\nreference: sparsity {sparsity:.4f}, max unique "
        f"{max(k['unique_values'] for k in kernels)}, accuracy {baseline:.4f} -> {accuracy:.4f}, "
        f"gzipped TFLite {base_gz} -> {final_gz} bytes ({base_gz / final_gz:.2f}x)"
    )
