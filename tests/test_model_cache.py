"""Per-step fixed costs: saving without per-layer traces, and what one process reuses."""

import os
import shutil

import numpy as np
import pytest

from components.common import model_cache, model_io, tflite


def _signature(saved_model_dir):
    import tensorflow as tf

    fn = tf.saved_model.load(saved_model_dir).signatures["serving_default"]
    _, inputs = fn.structured_input_signature
    return (
        {k: (tuple(v.shape), v.dtype.name) for k, v in inputs.items()},
        {k: (tuple(v.shape), v.dtype.name) for k, v in fn.structured_outputs.items()},
    )


def _traced_save(model, uri):
    path = os.path.join(uri, model_io.SERVING_DIR)
    model.save(path, include_optimizer=False, save_format="tf")
    return path


def test_builtin_model_saves_without_traces_same_signature(tmp_path, tiny_model):
    fast = model_io.save_keras_model(tiny_model, str(tmp_path / "fast"))
    traced = _traced_save(tiny_model, str(tmp_path / "traced"))
    assert _signature(fast) == _signature(traced)
    # No per-layer call traces: a smaller graph, the same model when loaded back.
    pb = model_io.SAVED_MODEL_PB
    assert os.path.getsize(os.path.join(fast, pb)) < os.path.getsize(os.path.join(traced, pb))
    x = np.random.default_rng(0).random((5, 64), np.float32)
    loaded = model_io.load_keras_model(str(tmp_path / "fast"))
    np.testing.assert_allclose(loaded.predict(x, verbose=0), tiny_model.predict(x, verbose=0))
    assert [type(a) for a in loaded.layers] == [type(b) for b in tiny_model.layers]
    # What TF Serving and the converter read: the signature, as before.
    assert len(tflite.convert_float32(fast)) > 0


def test_model_with_custom_layer_keeps_its_traces(tmp_path):
    import tf_keras

    class Scale(tf_keras.layers.Layer):  # not registered: loadable only from its traces
        def build(self, input_shape):
            self.w = self.add_weight(name="w", shape=(input_shape[-1],), initializer="ones")

        def call(self, x):
            return x * self.w

    inputs = tf_keras.Input((4,), name="x")
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(2, name="out")(Scale(name="s")(inputs)))
    model_io.save_keras_model(model, str(tmp_path / "m"))
    loaded = model_io.load_keras_model(str(tmp_path / "m"))  # revived from the traces
    x = np.ones((3, 4), np.float32)
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-6)


def test_cache_reuses_same_bytes_and_never_changed_ones(tmp_path, tiny_model):
    model_cache.clear()
    first = model_io.save_keras_model(tiny_model, str(tmp_path / "a"))
    a = model_io.load_keras_model(str(tmp_path / "a"), shared=True)
    # The step that saved it hands the object it saved to the next reader of these bytes.
    assert a is tiny_model
    assert model_io.load_keras_model(str(tmp_path / "a"), shared=True) is a
    # A byte copy (a Quantizer's Format-Serving) is the same model: the same object.
    shutil.copytree(first, str(tmp_path / "copy" / model_io.SERVING_DIR))
    assert model_io.load_keras_model(str(tmp_path / "copy"), shared=True) is a
    # Not shared: a fresh object the caller may change.
    fresh = model_io.load_keras_model(str(tmp_path / "a"))
    assert fresh is not a
    x = np.random.default_rng(0).random((5, 64), np.float32)
    np.testing.assert_array_equal(fresh.predict(x, verbose=0), a.predict(x, verbose=0))
    # Other weights, other bytes: a new entry.
    layer = tiny_model.get_layer("hidden")
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel * 0, bias])
    model_io.save_keras_model(tiny_model, str(tmp_path / "b"))
    b = model_io.load_keras_model(str(tmp_path / "b"), shared=True)
    assert not np.any(b.get_layer("hidden").get_weights()[0])
    assert model_cache.stats == {"hits": 4, "misses": 0, "changed": 0}
    # The object kept for "a" was changed after it was saved: "a" is loaded from its files again.
    again = model_io.load_keras_model(str(tmp_path / "a"), shared=True)
    assert again is not tiny_model
    np.testing.assert_array_equal(again.get_layer("hidden").get_weights()[0], kernel)
    assert model_cache.stats == {"hits": 4, "misses": 1, "changed": 1}


def test_float32_conversion_made_once_per_content(tmp_path, tiny_model):
    model_cache.clear()
    path = model_io.save_keras_model(tiny_model, str(tmp_path / "a"))
    first = tflite.convert_float32(path)
    # The conversion read the Keras model the save left here (a hit) and converted it (a miss).
    assert model_cache.stats == {"hits": 1, "misses": 1, "changed": 0}
    assert tflite.convert_float32(path) == first
    assert model_cache.stats == {"hits": 2, "misses": 1, "changed": 0}


def test_cache_keeps_a_bounded_number_per_kind(tmp_path):
    model_cache.clear()
    made = []
    for i in range(model_cache.MAX_ENTRIES_PER_KIND + 1):
        directory = tmp_path / str(i)
        directory.mkdir()
        (directory / "f").write_text(str(i))
        model_cache.get_or_load("thing", str(directory), lambda i=i: made.append(i) or i)
    # The oldest was dropped: asking for it loads it again.
    model_cache.get_or_load("thing", str(tmp_path / "0"), lambda: made.append("again") or 0)
    assert made[-1] == "again"


def test_failed_load_is_not_kept(tmp_path):
    model_cache.clear()
    (tmp_path / "f").write_text("x")

    def broken():
        raise ValueError("no")

    with pytest.raises(ValueError):
        model_cache.get_or_load("thing", str(tmp_path), broken)
    assert model_cache.get_or_load("thing", str(tmp_path), lambda: 1) == 1


def test_working_copy_saved_without_traces_loads_back(tmp_path):
    """The Pruner's and Clusterer's output: layers re-created and built explicitly."""
    import tf_keras

    from components.common import optimization

    tf_keras.utils.set_random_seed(2)
    inputs = tf_keras.Input((8, 8, 3), name="image")
    x = tf_keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = tf_keras.layers.BatchNormalization(name="bn")(x)
    x = tf_keras.layers.DepthwiseConv2D(3, name="dw")(x)
    x = tf_keras.layers.GlobalAveragePooling2D(name="pool")(x)
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(3, name="out")(x))
    copy = optimization.working_copy(model)
    path = model_io.save_keras_model(copy, str(tmp_path / "m"))
    traced = _traced_save(copy, str(tmp_path / "t"))
    pb = model_io.SAVED_MODEL_PB
    assert os.path.getsize(os.path.join(path, pb)) < os.path.getsize(os.path.join(traced, pb))
    loaded = model_io.load_keras_model(str(tmp_path / "m"))
    x = np.random.default_rng(0).random((2, 8, 8, 3), np.float32)
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)
    assert type(loaded.get_layer("conv")).__module__.startswith("tf_keras.src.layers")


def test_steps_hand_their_output_to_the_next_step_with_the_same_result(
    tmp_path, tiny_model, tiny_examples
):
    """Pruner -> Clusterer -> Quantizer in one process (as under LocalDagRunner): each reads the
    model the step before saved from memory, and writes what it writes when it loads it."""
    from components.clusterer import clusterer
    from components.clusterer.config import ClustererConfig
    from components.common.examples import DataConfig
    from components.pruner import pruner
    from components.pruner.config import PrunerConfig
    from components.quantizer import quantizer
    from components.quantizer.config import QuantizerConfig

    tuning = {"epochs": 2, "batch_size": 16}
    steps = [
        (
            pruner,
            PrunerConfig.parse(
                {
                    "target_sparsity": 0.5,
                    "schedule": {"end_step": 4, "frequency_steps": 2},
                    "fine_tuning": tuning,
                }
            ),
        ),
        (clusterer, ClustererConfig.parse({"number_of_clusters": 4, "fine_tuning": tuning})),
        (quantizer, QuantizerConfig.parse({"mode": "dynamic_range"})),
    ]
    model_io.save_keras_model(tiny_model, str(tmp_path / "in"))

    def chain(out, forget=False):
        records, uri = [], str(tmp_path / "in")
        for i, (module, config) in enumerate(steps):
            if forget:
                model_cache.clear()  # as if each step ran in its own process
            output = str(tmp_path / out / str(i))
            records.append(module.run(uri, tiny_examples, output, config, DataConfig()))
            uri = output
        return records, uri

    model_cache.clear()
    handed, handed_uri = chain("handed")
    # Each step after the first found the model the step before saved: no load from disk.
    assert model_cache.stats["hits"] >= 2 and model_cache.stats["changed"] == 0
    saved = model_io.load_keras_model(str(tmp_path / "handed" / "1"), shared=True)
    fresh = model_io.load_keras_model(str(tmp_path / "handed" / "1"))
    assert saved is not fresh and model_io.keras_fingerprint(saved) == model_io.keras_fingerprint(
        fresh
    )
    # The same chain with every step loading its input from disk writes the same models.
    loaded, loaded_uri = chain("loaded", forget=True)
    assert model_cache.stats["hits"] == 0
    for a, b in zip(handed, loaded, strict=True):
        assert a["metric_after"] == b["metric_after"] and a["metric_before"] == b["metric_before"]
    with (
        open(model_io.tflite_path(handed_uri), "rb") as f1,
        open(model_io.tflite_path(loaded_uri), "rb") as f2,
    ):
        assert f1.read() == f2.read()


def test_a_flattened_model_sharing_layers_is_not_handed_over(tmp_path):
    """A flattened copy calls the nested original's layers again: loaded from its files, its layers
    have one call each, so the object itself is not what the next step would load."""
    import tf_keras

    from components.importer import flatten

    inner_in = tf_keras.Input((4,), name="inner_in")
    inner = tf_keras.Model(inner_in, tf_keras.layers.Dense(3, name="d")(inner_in), name="inner")
    outer_in = tf_keras.Input((4,), name="x")
    nested = tf_keras.Model(outer_in, tf_keras.layers.Dense(2, name="out")(inner(outer_in)))
    flat = flatten.flatten(nested)
    assert flat is not nested
    model_cache.clear()
    model_io.save_keras_model(flat, str(tmp_path / "flat"))
    loaded = model_io.load_keras_model(str(tmp_path / "flat"), shared=True)
    assert loaded is not flat and model_cache.stats["misses"] == 1
    assert all(len(layer._inbound_nodes) == 1 for layer in loaded.layers)
