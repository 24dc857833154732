"""ModelImporter: Keras 3 ``.keras`` files converted to tf_keras, nested models flattened, both
verified on eval examples; damaged and unconvertible inputs refused before anything is written.

Keras 3 is the ``keras`` package (3.x); ``tf_keras`` is Keras 2. Both live in this process.
"""

import os
import zipfile

import numpy as np
import pytest

from components.common.errors import ModelInputError
from components.common.examples import DataConfig
from components.importer.config import ImporterConfig
from tests.artifacts import run_model_step


def _keras3_cnn(path: str) -> str:
    """A Keras 3 Sequential CNN with BatchNorm (non-trivial moving statistics) and Dropout."""
    import keras

    keras.utils.set_random_seed(3)
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1), name="image"),
            layers.Conv2D(8, 3, padding="same", name="conv1"),
            layers.BatchNormalization(name="bn1"),
            layers.ReLU(name="relu1"),
            layers.MaxPooling2D(name="pool1"),
            layers.Dropout(0.3, name="drop1"),
            layers.Flatten(name="flatten"),
            layers.Dense(10, activation="softmax", name="out"),
        ],
        name="k3_cnn",
    )
    bn = model.get_layer("bn1")
    rng = np.random.default_rng(0)
    bn.set_weights([rng.random(w.shape).astype("float32") + 0.5 for w in bn.get_weights()])
    model.save(path)
    return path


def _keras3_two_inputs(path: str) -> str:
    import keras

    keras.utils.set_random_seed(4)
    layers = keras.layers
    image = keras.Input((64,), name="image")
    extra = keras.Input((3,), name="extra")
    x = layers.Dense(16, activation="relu", name="hidden")(image)
    y = layers.Dense(16, name="extra_proj")(layers.Normalization(mean=0.5, variance=0.1)(extra))
    merged = layers.Concatenate(name="concat")([layers.Add(name="add")([x, y]), extra])
    out = layers.Dense(10, activation="softmax", name="out")(merged)
    keras.Model([image, extra], out, name="two_inputs").save(path)
    return path


def _two_input_examples(root) -> str:
    import tensorflow as tf

    rng = np.random.default_rng(1)
    for split, n in (("train", 32), ("eval", 48)):
        path = root / f"Split-{split}" / "data.gz"
        os.makedirs(path.parent, exist_ok=True)
        with tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
            for _ in range(n):
                feature = {
                    "image": tf.train.Feature(float_list=tf.train.FloatList(value=rng.random(64))),
                    "extra": tf.train.Feature(float_list=tf.train.FloatList(value=rng.random(3))),
                    "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[1])),
                }
                example = tf.train.Example(features=tf.train.Features(feature=feature))
                writer.write(example.SerializeToString())
    return str(root)


def _run(model_path, examples, out, data=None, **config):
    from components.importer import importer

    os.makedirs(out, exist_ok=True)
    return importer.run(
        str(model_path), examples, data or DataConfig(), ImporterConfig(**config), str(out)
    )


def _keras3_outputs(path, inputs):
    import keras

    model = keras.saving.load_model(str(path), compile=False)
    return np.asarray(model(inputs, training=False))


def _tf_keras_outputs(artifact_dir, inputs):
    import tf_keras

    model = tf_keras.models.load_model(os.path.join(artifact_dir, "Format-Serving"), compile=False)
    return np.asarray(model(inputs, training=False)), model


# ----------------------------------------------------------------------------- Keras 3 in


def test_keras3_sequential_cnn_converted_and_verified(tmp_path, tiny_examples):
    path = _keras3_cnn(str(tmp_path / "cnn.keras"))
    data = DataConfig()
    record = _run(path, tiny_examples, tmp_path / "out", data)

    assert record["source_format"] == "keras3"
    assert record["keras_version"].startswith("3.")
    assert record["import_action"] == "converted"
    assert record["tensors_copied"] == 2 + 4 + 2  # conv1, bn1 (gamma, beta, mean, var), out
    assert record["verified_examples"] == 32
    assert 0 <= record["max_abs_diff"] <= record["tolerance"]
    # the converted tf_keras model computes what the Keras 3 original computes
    x = np.random.default_rng(2).random((16, 8, 8, 1), dtype=np.float32)
    converted, model = _tf_keras_outputs(str(tmp_path / "out"), x)
    np.testing.assert_allclose(converted, _keras3_outputs(path, x), atol=1e-5)
    assert [layer.name for layer in model.layers][:3] == ["conv1", "bn1", "relu1"]
    assert os.path.isfile(tmp_path / "out" / "import.json")


def test_keras3_functional_two_inputs(tmp_path):
    path = _keras3_two_inputs(str(tmp_path / "two.keras"))
    examples = _two_input_examples(tmp_path / "examples")
    data = DataConfig(feature_keys=["image", "extra"])
    record = _run(path, examples, tmp_path / "out", data)

    assert record["import_action"] == "converted"
    assert record["max_abs_diff"] <= record["tolerance"]
    rng = np.random.default_rng(5)
    inputs = [rng.random((8, 64), dtype=np.float32), rng.random((8, 3), dtype=np.float32)]
    converted, model = _tf_keras_outputs(str(tmp_path / "out"), inputs)
    np.testing.assert_allclose(converted, _keras3_outputs(path, inputs), atol=1e-5)
    assert [t.name.split(":")[0] for t in model.inputs] == ["image", "extra"]


def test_every_listed_layer_converts(tmp_path):
    """One Keras 3 model through the issue's layer list; outputs equal after conversion."""
    import keras

    from components.importer import keras3

    keras.utils.set_random_seed(6)
    L = keras.layers
    image = keras.Input((8, 8, 3), name="image")
    tokens = keras.Input((6,), dtype="int32", name="tokens")
    x = L.Rescaling(1 / 2.0, offset=0.1)(image)
    x = L.ZeroPadding2D(1)(x)
    x = L.DepthwiseConv2D(3, activation="relu")(x)
    x = L.SeparableConv2D(6, 3, padding="same")(x)
    x = L.BatchNormalization()(x)
    x = L.AveragePooling2D(2)(x)
    x = L.UpSampling2D()(x)
    x = L.Conv2D(4, 1, activation="swish")(x)
    x = L.LayerNormalization()(x)
    pooled = L.Concatenate()([L.GlobalAveragePooling2D()(x), L.GlobalMaxPooling2D()(x)])
    seq = L.Reshape((8, 8 * 4))(x)
    seq = L.Conv1D(5, 3)(seq)
    seq = L.MaxPooling1D(2)(L.AveragePooling1D(1)(seq))
    seq = L.GlobalAveragePooling1D()(seq)
    emb = L.GlobalMaxPooling1D()(L.Embedding(20, 5)(tokens))
    joined = L.Concatenate()([pooled, seq, emb])
    h = L.Dense(5, activation="tanh")(joined)
    norm = L.Normalization()
    norm.adapt(np.random.default_rng(0).random((32, 5), dtype=np.float32))
    h = L.Multiply()([L.Activation("sigmoid")(norm(h)), L.ReLU(max_value=6.0)(h)])
    h = L.Subtract()([L.Average()([h, h]), L.Maximum()([h, L.Minimum()([h, h])])])
    h = L.Flatten()(L.Dropout(0.5)(L.Add()([h, h])))
    out = L.Softmax()(L.Dense(4)(h))
    original = keras.Model([image, tokens], out, name="zoo")
    original.save(str(tmp_path / "zoo.keras"))

    archive = keras3.read_archive(str(tmp_path / "zoo.keras"))
    keras3.check_convertible(archive)
    model = keras3.build_model(archive)
    loaded = keras3.load_keras3_model(archive)
    keras3.copy_weights(loaded, model)
    rng = np.random.default_rng(7)
    inputs = [rng.random((4, 8, 8, 3), dtype=np.float32), rng.integers(0, 20, (4, 6))]
    np.testing.assert_allclose(
        np.asarray(model(inputs)), np.asarray(original(inputs)), atol=1e-5, rtol=1e-4
    )


def test_unsupported_layers_fail_at_preflight_naming_them(tmp_path):
    import keras

    from components.importer import importer

    @keras.saving.register_keras_serializable(package="tests")
    class Scale(keras.layers.Layer):
        def call(self, inputs):
            return inputs * 2.0

    inputs = keras.Input((64,), name="image")
    squared = keras.layers.Lambda(lambda t: keras.ops.square(t), name="square")(inputs)
    out = keras.layers.Dense(10, name="out")(Scale(name="scale")(squared))
    keras.Model(inputs, out).save(str(tmp_path / "custom.keras"))

    with pytest.raises(ModelInputError) as raised:
        importer.check_source(str(tmp_path / "custom.keras"), ImporterConfig(), DataConfig())
    message = str(raised.value)
    assert "'square' (Lambda" in message and "keras.ops" in message
    assert "'scale' (Scale, a custom layer" in message
    assert "build_tf_keras_model()" in message and "tf_keras" in message


def test_build_tf_keras_model_hook_converts_a_custom_layer(tmp_path, tiny_examples):
    """A module file builds the tf_keras twin; weights are copied by name and verified."""
    module = tmp_path / "hook.py"
    module.write_text(
        """
import keras
import tf_keras


@keras.saving.register_keras_serializable(package="hook")
class Scale(keras.layers.Layer):
    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(input_shape[-1],), initializer="ones")

    def call(self, inputs):
        return inputs * self.scale


class TfKerasScale(tf_keras.layers.Layer):
    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(input_shape[-1],), initializer="ones")

    def call(self, inputs):
        return inputs * self.scale


KERAS3_CUSTOM_OBJECTS = {"hook>Scale": Scale}


def build_tf_keras_model():
    inputs = tf_keras.Input((64,), name="image")
    out = tf_keras.layers.Dense(10, activation="softmax", name="out")(
        TfKerasScale(name="scale")(inputs))
    return tf_keras.Model(inputs, out)
"""
    )
    import importlib.util

    spec = importlib.util.spec_from_file_location("hook_for_test", str(module))
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    import keras

    inputs = keras.Input((64,), name="image")
    scale = hook.Scale(name="scale")
    out = keras.layers.Dense(10, activation="softmax", name="out")(scale(inputs))
    original = keras.Model(inputs, out)
    scale.set_weights([np.linspace(0.5, 2.0, 64).astype("float32")])
    original.save(str(tmp_path / "custom.keras"))

    record = _run(
        tmp_path / "custom.keras", tiny_examples, tmp_path / "out", module_file=str(module)
    )
    assert record["built_by"].endswith("hook.py:build_tf_keras_model")
    assert record["tensors_copied"] == 3
    assert record["max_abs_diff"] <= record["tolerance"]


def _truncated(path, tmp_path):
    data = open(path, "rb").read()
    bad = tmp_path / "truncated.keras"
    bad.write_bytes(data[: len(data) // 2])
    return bad


def _tampered(path, tmp_path):
    """One byte of the weights changed inside the zip: the member's checksum no longer holds."""
    bad = tmp_path / "tampered.keras"
    bad.write_bytes(open(path, "rb").read())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("model.weights.h5")
    data = bytearray(bad.read_bytes())
    at = info.header_offset + 30 + len(info.filename) + info.compress_size // 2
    data[at] ^= 0xFF
    bad.write_bytes(bytes(data))
    return bad


@pytest.mark.parametrize("damage", [_truncated, _tampered])
def test_damaged_keras_file_is_refused_and_nothing_written(tmp_path, tiny_examples, damage):
    path = _keras3_cnn(str(tmp_path / "cnn.keras"))
    bad = damage(path, tmp_path)
    out = tmp_path / "out"
    with pytest.raises(ModelInputError, match="is damaged.*model.save\\('model.keras'\\)"):
        _run(bad, tiny_examples, out)
    assert os.listdir(out) == []


def test_keras3_export_is_refused_saying_how_to_save(tmp_path):
    import keras

    from components.importer import importer

    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
    model.export(str(tmp_path / "exported"), verbose=False)
    with pytest.raises(ModelInputError, match=r"save with `model.save\('model.keras'\)`"):
        importer.check_source(str(tmp_path / "exported"), ImporterConfig(), DataConfig())


def test_directory_holding_one_keras_file(tmp_path, tiny_examples):
    from components.importer import importer, keras3

    (tmp_path / "model").mkdir()
    path = _keras3_cnn(str(tmp_path / "model" / "cnn.keras"))
    assert keras3.find_keras_file(str(tmp_path / "model")) == path
    source = importer.check_source(str(tmp_path / "model"), ImporterConfig(), DataConfig())
    assert source.kind == "keras3" and source.path == path
    _keras3_cnn(str(tmp_path / "model" / "second.keras"))
    with pytest.raises(ModelInputError, match="several Keras files"):
        keras3.find_keras_file(str(tmp_path / "model"))


# ----------------------------------------------------------------------------- nested models


def _nested_mobilenet():
    """The usual transfer-learning build: a keras.applications backbone called as a layer."""
    import tf_keras

    tf_keras.utils.set_random_seed(8)
    base = tf_keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(32, 32, 3), alpha=0.35
    )
    inputs = tf_keras.Input((32, 32, 3), name="pixels")
    x = tf_keras.layers.GlobalAveragePooling2D(name="gap")(base(inputs, training=False))
    head = tf_keras.Sequential(
        [tf_keras.layers.Dropout(0.2), tf_keras.layers.Dense(10, activation="softmax")],
        name="head",
    )
    model = tf_keras.Model(inputs, head(x), name="transfer")
    rng = np.random.default_rng(0)
    for layer in base.layers:  # moving statistics that make inference mode matter
        if isinstance(layer, tf_keras.layers.BatchNormalization):
            layer.set_weights([rng.random(w.shape).astype("float32") + 0.5 for w in layer.weights])
    return model


def _image_examples(root, n_train=24, n_eval=16) -> str:
    from pipelines.reference_data import write_examples

    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("eval", n_eval)):
        x = rng.random((n, 32 * 32 * 3), dtype=np.float32)
        y = rng.integers(0, 10, n).astype(np.int64)
        write_examples(str(root / f"Split-{split}" / "data.gz"), x, y)
    return str(root)


def _signature(saved_model_dir):
    import tensorflow as tf

    fn = tf.saved_model.load(saved_model_dir).signatures["serving_default"]
    return sorted(fn.structured_input_signature[1]), sorted(fn.structured_outputs)


@pytest.fixture(scope="module")
def nested(tmp_path_factory):
    """The nested MobileNetV2 saved once (a SavedModel save of it takes 10-60 s), Examples for it."""
    root = tmp_path_factory.mktemp("nested")
    model = _nested_mobilenet()
    model.save(str(root / "nested"), save_format="tf")
    return {"model": model, "path": str(root / "nested"), "examples": _image_examples(root / "ex")}


def test_nested_mobilenet_flattened_and_verified(tmp_path, nested):
    import tf_keras

    from components.importer import executor, flatten

    model, examples = nested["model"], nested["examples"]
    output = run_model_step(
        executor.Executor, nested["path"], examples, tmp_path / "out", ImporterConfig()
    )

    assert output.get_string_custom_property("import_action") == "flattened"
    assert output.get_string_custom_property("source_format") == "tf_keras"
    assert "mobilenetv2_0.35_32" in output.get_string_custom_property("flattened_models")
    diff = output.get_float_custom_property("max_abs_diff")
    assert 0 <= diff <= output.get_float_custom_property("tolerance")
    assert output.get_int_custom_property("verified_examples") == 16
    serving = os.path.join(output.uri, "Format-Serving")
    flat = tf_keras.models.load_model(serving, compile=False)
    assert flatten.nested_models(flat) == []
    inner_weights = sum(len(layer.weights) for layer in model.layers)
    assert sum(len(layer.weights) for layer in flat.layers) == inner_weights
    assert _signature(serving) == _signature(nested["path"])
    x = np.random.default_rng(9).random((4, 32, 32, 3), dtype=np.float32)
    np.testing.assert_allclose(np.asarray(flat(x)), np.asarray(model(x)), atol=1e-5)


def test_deeply_nested_and_repeated_names_flatten(tmp_path):
    """Three levels, a Sequential built without an Input, repeated layer names, training=False."""
    import tf_keras

    from components.importer import flatten

    tf_keras.utils.set_random_seed(10)
    L = tf_keras.layers

    def block(name):
        inputs = tf_keras.Input((6,))
        x = L.Dense(6, name="dense")(inputs)
        x = L.BatchNormalization(name="bn")(x)
        return tf_keras.Model(inputs, L.Add(name="add")([inputs, x]), name=name)

    inner = block("inner")
    middle_in = tf_keras.Input((6,))
    middle = tf_keras.Model(middle_in, block("side")(inner(middle_in)), name="middle")
    lazy = tf_keras.Sequential([L.Dense(4, name="dense"), L.Softmax(name="probs")], name="lazy")
    inputs = tf_keras.Input((6,), name="features")
    model = tf_keras.Model(inputs, lazy(middle(inputs, training=False)), name="outer")
    for layer in model.get_layer("middle").get_layer("inner").layers:
        if isinstance(layer, L.BatchNormalization):
            layer.set_weights([np.full(w.shape, 0.7, "float32") for w in layer.weights])

    x = np.random.default_rng(1).random((5, 6), dtype=np.float32)
    expected_train = np.asarray(model(x, training=True))
    flat = flatten.flatten(model)
    assert flatten.nested_models(flat) == []
    assert flat.output_names == model.output_names == ["lazy"]
    np.testing.assert_allclose(np.asarray(flat(x)), np.asarray(model(x)), atol=1e-6)
    # the frozen part stays in inference mode when the whole model trains
    np.testing.assert_allclose(np.asarray(flat(x, training=True)), expected_train, atol=1e-6)


def test_subclassed_model_stays_a_clear_error():
    import tf_keras

    from components.importer import flatten

    class Net(tf_keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = tf_keras.layers.Dense(3)

        def call(self, inputs):
            return self.dense(inputs)

    net = Net()
    net(np.zeros((1, 4), "float32"))
    with pytest.raises(ModelInputError, match="subclassed tf_keras model"):
        flatten.flatten(net)
    inputs = tf_keras.Input((4,))
    outer = tf_keras.Model(inputs, tf_keras.layers.Dense(2)(net(inputs)))
    with pytest.raises(ModelInputError, match="nested model .* subclassed"):
        flatten.flatten(outer)


def test_flat_tf_keras_model_is_copied_unchanged(tmp_path, tiny_model, tiny_examples):
    tiny_model.save(str(tmp_path / "flat"), save_format="tf")
    record = _run(tmp_path / "flat", tiny_examples, tmp_path / "out")
    assert record["import_action"] == "copied" and record["flattened_models"] == []
    for name in ("saved_model.pb", "keras_metadata.pb"):
        original = (tmp_path / "flat" / name).read_bytes()
        assert (tmp_path / "out" / "Format-Serving" / name).read_bytes() == original


def test_preflight_accepts_a_nested_model_and_plans_on_the_flat_one(nested):
    from pipelines.config import PipelineConfig
    from pipelines.local import preflight

    examples = nested["examples"]
    config = PipelineConfig.parse(
        {
            "pruner": {
                "target_sparsity": 0.5,
                "layers": {"exclude_names": ["Conv1"]},
                "fine_tuning": {"batch_size": 2},
            },
            "clusterer": {"number_of_clusters": 8},
            "quantization": [{"mode": "dynamic_range"}],
        }
    )
    preflight.check_inputs(config, nested["path"], examples)  # no error
    # a layer of the backbone is a layer of the model the stages see
    bad = PipelineConfig.parse({"pruner": {"layers": {"names": ["no_such_layer"]}}})
    with pytest.raises(Exception, match="no_such_layer.*block_1_depthwise"):
        preflight.check_inputs(bad, nested["path"], examples)


# ----------------------------------------------------------------------------- end to end

FAST_PROFILER = {"warmup_runs": 5, "timed_runs": 50, "throughput_runs": 3, "measure_memory": False}


def _trained_keras3_digits_cnn(path: str) -> str:
    """A Keras 3 CNN trained on the reference digits, saved as ``model.keras``."""
    import keras

    from pipelines.reference_data import digits_splits

    x_train, y_train, _, _ = digits_splits()
    keras.utils.set_random_seed(0)
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1), name="image"),
            layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1"),
            layers.BatchNormalization(name="bn1"),
            layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2"),
            layers.MaxPooling2D(name="pool"),
            layers.Dropout(0.2, name="drop"),
            layers.Flatten(name="flatten"),
            layers.Dense(64, activation="relu", name="fc"),
            layers.Dense(10, activation="softmax", name="probs"),
        ],
        name="keras3_digits",
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train.reshape(-1, 8, 8, 1), y_train, epochs=15, batch_size=32, verbose=0)
    model.save(path)
    return path


@pytest.mark.e2e
def test_keras3_file_through_the_chain_to_a_pushed_version(tmp_path, reference_data):
    """`make demo`'s chain (prune -> cluster -> quantize -> gate -> push) from a `.keras` file."""
    import tensorflow as tf

    from pipelines.config import PipelineConfig
    from pipelines.local.runner import run_local
    from pipelines.report import console

    (tmp_path / "checkpoint").mkdir()
    _trained_keras3_digits_cnn(str(tmp_path / "checkpoint" / "model.keras"))
    config = PipelineConfig.parse(
        {
            "pipeline_name": "keras3",
            "profiler": FAST_PROFILER,
            "pruner": {"target_sparsity": 0.5, "layers": {"exclude_names": ["conv1"]}},
            "clusterer": {"number_of_clusters": 16, "preserve_sparsity": True},
            "quantization": [{"mode": "none", "name": "float32"}, {"mode": "dynamic_range"}],
            "evaluator": {
                "rules": {"max_accuracy_drop_points": 3.0, "min_compression_ratio": 2.0},
                "latency": {"timed_runs": 50},
            },
            "pusher": {"model_name": "digits", "serving": [{"base_directory": "serving"}]},
        }
    )
    out = tmp_path / "out"
    # the directory holding the one .keras file, as `tfxopt run --model DIR` gets it
    run = run_local(config, str(tmp_path / "checkpoint"), reference_data["examples"], str(out))
    assert all(s.state == "COMPLETE" for s in run.steps), [(s.node_id, s.state) for s in run.steps]

    [imported] = run.outputs_of("ModelImporter", "imported_model")
    props = imported.custom_properties
    assert props["source_format"].string_value == "keras3"
    assert props["keras_version"].string_value.startswith("3.")
    assert props["verified_examples"].int_value == 360
    max_abs_diff = props["max_abs_diff"].double_value
    assert 0 <= max_abs_diff <= props["tolerance"].double_value
    print(f"Keras 3 -> tf_keras: max abs output difference {max_abs_diff:.3g} on 360 examples")

    evaluation = console.evaluation_record(run)
    assert evaluation["decision"]["blessed"] is True, evaluation["decision"]
    pushed = console.push_record(run)
    assert pushed["pushed"] is True
    version_dir = pushed["serving"][0]["path"]
    fn = tf.saved_model.load(version_dir).signatures["serving_default"]
    assert list(fn.structured_input_signature[1]) == ["image"]
    assert list(fn.structured_outputs) == ["probs"]
    text = console.render(run)
    assert "Model: Keras 3 3." in text and "max output difference" in text


@pytest.mark.e2e
@pytest.mark.slow  # reason: 3-10 min of MobileNetV2 fine-tuning and saving on 2 cores; the
# flattening itself is covered by test_nested_mobilenet_flattened_and_verified and preflight's
# plans on the flat model by test_preflight_accepts_a_nested_model_and_plans_on_the_flat_one
def test_nested_mobilenet_through_the_chain_to_a_decision(tmp_path, nested):
    """A keras.applications backbone called as a layer: flattened, pruned, clustered, quantized,
    gated (random weights and data: the decision is what counts, not its verdict)."""
    from pipelines.config import PipelineConfig
    from pipelines.local.runner import run_local
    from pipelines.report import console

    tuning = {"epochs": 1, "batch_size": 8}
    config = PipelineConfig.parse(
        {
            "pipeline_name": "nested",
            "profiler": {**FAST_PROFILER, "timed_runs": 20},
            "pruner": {
                "target_sparsity": 0.5,
                "schedule": {"kind": "constant", "frequency_steps": 1},
                "fine_tuning": tuning,
            },
            "clusterer": {"number_of_clusters": 16, "fine_tuning": tuning},
            "quantization": [{"mode": "dynamic_range"}],
            "evaluator": {"latency": {"timed_runs": 20}},
        }
    )
    run = run_local(config, nested["path"], nested["examples"], str(tmp_path / "out"))
    assert all(s.state == "COMPLETE" for s in run.steps), [(s.node_id, s.state) for s in run.steps]
    [imported] = run.outputs_of("ModelImporter", "imported_model")
    assert imported.custom_properties["import_action"].string_value == "flattened"
    [pruned] = run.outputs_of("Pruner", "optimized_model")
    assert pruned.custom_properties["achieved_sparsity"].double_value > 0.3
    evaluation = console.evaluation_record(run)
    assert isinstance(evaluation["decision"]["blessed"], bool)
    assert "nested models flattened: mobilenetv2_0.35_32" in console.render(run)
