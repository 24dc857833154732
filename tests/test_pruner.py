"""Pruner: config validation, schedules, layer selection, structured sparsity, executor output.

Every test that prunes reads the saved (or stripped) weights back and counts the zeros.
"""

import json
import os

import numpy as np
import pytest

from components.common import keys
from components.common.errors import ConfigError, ModelInputError
from components.pruner.config import PrunerConfig
from tests.artifacts import conv_classifier, run_model_step

FAST = {"batch_size": 8, "epochs": 2, "learning_rate": 1e-3}


def _config(**overrides) -> PrunerConfig:
    base = {"schedule": {"frequency_steps": 2}, "fine_tuning": dict(FAST)}
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return PrunerConfig.parse(base, where="pruner")


def _arrays(model, n=64, seed=0):
    rng = np.random.default_rng(seed)
    shape = tuple(model.inputs[0].shape[1:])
    x = rng.random((n, *shape), dtype=np.float32)
    y = rng.integers(0, int(model.outputs[0].shape[-1]), n).astype(np.int64)
    return x, y


def _datasets(model, batch_size=8):
    import tensorflow as tf

    x, y = _arrays(model)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
    return ds, ds, int(np.ceil(len(y) / batch_size))


def _sparsity(values) -> float:
    values = np.asarray(values)
    return 1.0 - np.count_nonzero(values) / values.size


def _save(model, root) -> str:
    from components.common import model_io

    model_io.save_keras_model(model, str(root))
    return str(root)


def _run_executor(model_uri, examples_uri, out_dir, config, data=None):
    from components.pruner.executor import Executor

    return run_model_step(Executor, model_uri, examples_uri, out_dir, config, data)


def _dir_digest(path) -> dict:
    digest = {}
    for root, _, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            with open(full, "rb") as f:
                digest[os.path.relpath(full, path)] = hash(f.read())
    return digest


# --- configuration (validated at pipeline build time) ---------------------------------------


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"target_sparsity": 1.0}, "pruner.target_sparsity"),
        ({"target_sparsity": -0.1}, "pruner.target_sparsity"),
        ({"block_size": [0, 1]}, "pruner.block_size"),
        ({"sparsity_m_by_n": "4:2"}, "pruner.sparsity_m_by_n"),
        ({"sparsity_m_by_n": "two:four"}, "pruner.sparsity_m_by_n"),
        ({"schedule": {"begin_step": 10, "end_step": 5}}, "pruner.schedule"),
        ({"schedule": {"begin_step": 1, "begin_epoch": 1}}, "pruner.schedule"),
        ({"schedule": {"frequency_steps": 0}}, "pruner.schedule.frequency_steps"),
        ({"fine_tuning": {"epochs": 0}}, "pruner.fine_tuning.epochs"),
        ({"fine_tuning": {"strategy": "tpu"}}, "pruner.fine_tuning.strategy"),
        ({"pruning_policy": "xnnpack-ish"}, "pruner.pruning_policy"),
        ({"layers": {"names": []}}, "pruner.layers.names"),
        ({"layers": {"names": ["a"], "exclude_names": ["a"]}}, "pruner.layers"),
        ({"target_sparsity": 0.3, "schedule": {"initial_sparsity": 0.5}}, "pruner"),
        ({"sparsity_m_by_n": [2, 4], "block_size": [1, 2]}, "pruner"),
        ({"sparsity_m_by_n": "2:4", "target_sparsity": 0.8}, "pruner"),
        ({"target_sparsity": 0.5, "sparsity": 0.5}, "pruner.sparsity"),
    ],
)
def test_bad_config_fails_naming_the_field(bad, field):
    with pytest.raises(ConfigError) as raised:
        PrunerConfig.parse(bad, where="pruner")
    lines = str(raised.value).splitlines()[1:]
    assert any(line.strip().startswith((f"{field}:", f"{field}.")) for line in lines), lines


def test_config_defaults_and_forms():
    config = PrunerConfig.parse({"sparsity_m_by_n": "2:4"})
    assert config.sparsity_m_by_n == (2, 4) and config.effective_sparsity == 0.5
    assert PrunerConfig().fine_tuning.epochs == 6
    # A partial fine_tuning section keeps the Pruner's other defaults.
    partial = PrunerConfig.parse({"fine_tuning": {"epochs": 3}}).fine_tuning
    assert partial.epochs == 3 and partial.learning_rate == PrunerConfig().fine_tuning.learning_rate
    from components.common.training import FineTuneConfig

    plain = PrunerConfig(fine_tuning=FineTuneConfig(batch_size=16))
    assert plain.fine_tuning.batch_size == 16 and plain.fine_tuning.epochs == 6
    assert PrunerConfig.parse(config.model_dump_json()) == config


def test_component_validates_config_when_the_pipeline_is_built():
    from tfx import types
    from tfx.types import standard_artifacts

    from components.pruner.component import Pruner

    model = types.Channel(type=standard_artifacts.Model)
    examples = types.Channel(type=standard_artifacts.Examples)
    with pytest.raises(ConfigError, match="pruner.target_sparsity"):
        Pruner(model=model, examples=examples, config={"target_sparsity": 1.5})
    pruner = Pruner(model=model, examples=examples, config={"target_sparsity": 0.8})
    assert json.loads(pruner.exec_properties["config"])["target_sparsity"] == 0.8
    assert pruner.outputs[keys.OPTIMIZED_MODEL_KEY].type_name == "Model"


def test_schedule_in_epochs_is_turned_into_aligned_steps():
    from components.pruner import pruner

    config = PrunerConfig.parse(
        {
            "schedule": {"begin_epoch": 0.5, "end_epoch": 3, "frequency_steps": 7},
            "fine_tuning": {"epochs": 4},
        }
    )
    schedule = pruner.resolve_schedule(config, steps_per_epoch=45)
    assert schedule["begin_step"] == 22 and schedule["total_steps"] == 180
    # The toolkit reaches the target only at an update step: begin + k * frequency <= end.
    assert schedule["end_step"] == 22 + (135 - 22) // 7 * 7
    default = pruner.resolve_schedule(PrunerConfig(), steps_per_epoch=45)
    assert default["end_step"] == 3 * 45 // 10 * 10  # halfway, on a mask update step


def test_schedule_that_cannot_reach_the_target_fails_before_training():
    from components.pruner import pruner

    config = PrunerConfig.parse({"schedule": {"end_step": 500}, "fine_tuning": {"epochs": 2}})
    with pytest.raises(ConfigError, match="pruner.schedule.end_step.*fine_tuning.epochs"):
        pruner.resolve_schedule(config, steps_per_epoch=45)
    constant = PrunerConfig.parse(
        {"schedule": {"kind": "constant", "begin_step": 100}, "fine_tuning": {"epochs": 1}}
    )
    with pytest.raises(ConfigError, match="first mask update"):
        pruner.resolve_schedule(constant, steps_per_epoch=45)


# --- the executor: real artifacts on tmp_path ------------------------------------------------


def test_executor_writes_a_sparse_model_records_and_properties(
    tmp_path, tiny_model, tiny_examples, eval_top1
):
    import tf_keras

    from components.common import model_io, properties

    model_uri = _save(tiny_model, tmp_path / "input")
    before = _dir_digest(model_uri)
    config = _config(target_sparsity=0.7)
    output = _run_executor(model_uri, tiny_examples, tmp_path / "output", config)

    saved = tf_keras.models.load_model(model_io.serving_model_dir(output.uri), compile=False)
    assert not any("prune" in layer.name for layer in saved.layers)  # wrappers stripped
    for name in ("hidden", "out"):
        kernel = saved.get_layer(name).kernel.numpy()
        assert _sparsity(kernel) == pytest.approx(0.7, abs=1.0 / kernel.size + 1e-9)
    record = properties.read_json(output.uri, "pruning.json")
    history = properties.read_json(output.uri, "fine_tuning_history.json")
    assert [h["epoch"] for h in history] == [1, 2] and "val_accuracy" in history[0]
    assert record["pruned_layers"] == ["hidden", "out"]
    assert record["achieved_sparsity"] == pytest.approx(0.7, abs=0.01)

    props = output.mlmd_artifact.custom_properties
    assert props["achieved_sparsity"].double_value == pytest.approx(record["achieved_sparsity"])
    per_layer = json.loads(props["per_layer_sparsity"].string_value)
    assert set(per_layer) == {"hidden", "out"}
    assert per_layer["hidden"] == pytest.approx(0.7, abs=0.01)
    assert props["fine_tuning_epochs"].int_value == 2
    assert props["fine_tuning_wall_time_s"].double_value > 0
    # the recorded accuracies are the input's and the saved model's, on the eval split
    input_model = tf_keras.models.load_model(model_io.serving_model_dir(model_uri), compile=False)
    assert props["accuracy_before"].double_value == pytest.approx(
        eval_top1(input_model, tiny_examples), abs=1e-9
    )
    assert props["accuracy_after"].double_value == pytest.approx(
        eval_top1(saved, tiny_examples), abs=1e-9
    )
    assert record["accuracy_after"] == props["accuracy_after"].double_value
    assert _dir_digest(model_uri) == before  # the input model is never changed


def test_same_config_gives_the_same_masks(tiny_model, tiny_examples):
    from components.common import optimization
    from components.common.examples import DataConfig
    from components.pruner import pruner

    kernels = []
    for seed in (0, 0, 7):
        config = _config(target_sparsity=0.6, fine_tuning={"seed": seed})
        # The Examples' train split, shuffled with the configured seed, as the executor reads it.
        train_ds, eval_ds, steps = optimization.datasets(
            tiny_examples, DataConfig(), tiny_model, config.fine_tuning
        )
        stripped, _, _ = pruner.prune_model(tiny_model, train_ds, eval_ds, config, steps)
        kernels.append({n: stripped.get_layer(n).kernel.numpy() for n in ("hidden", "out")})
    for name in ("hidden", "out"):
        np.testing.assert_array_equal(kernels[0][name] == 0, kernels[1][name] == 0)
        np.testing.assert_array_equal(kernels[0][name], kernels[1][name])
    # Another seed shuffles the train split differently, so training ends elsewhere.
    assert not np.array_equal(kernels[0]["hidden"], kernels[2]["hidden"])


def test_unsupported_custom_layer_names_the_layer_and_writes_nothing(tmp_path, tiny_examples):
    import tf_keras

    class Scale(tf_keras.layers.Layer):
        def build(self, input_shape):
            self.scale = self.add_weight(name="scale", shape=(input_shape[-1],), initializer="ones")

        def call(self, inputs):
            return inputs * self.scale

    inputs = tf_keras.layers.Input((64,), name="image")
    hidden = tf_keras.layers.Dense(16, activation="relu", name="hidden")(inputs)
    scaled = Scale(name="scale")(hidden)
    outputs = tf_keras.layers.Dense(10, activation="softmax", name="out")(scaled)
    model_uri = _save(tf_keras.Model(inputs, outputs), tmp_path / "input")

    out_dir = tmp_path / "output"
    with pytest.raises(ModelInputError) as raised:
        _run_executor(model_uri, tiny_examples, out_dir, _config())
    message = str(raised.value)
    assert "'scale'" in message and "pruner.layers.exclude_names" in message
    assert os.listdir(out_dir) == []

    # The way out the message offers works: the custom layer stays as it is.
    output = _run_executor(
        model_uri, tiny_examples, out_dir, _config(layers={"exclude_names": ["scale"]})
    )
    saved = tf_keras.models.load_model(os.path.join(output.uri, "Format-Serving"), compile=False)
    assert _sparsity(saved.get_layer("hidden").kernel.numpy()) == pytest.approx(0.5)
    assert np.all(saved.get_layer("scale").weights[0].numpy() != 0)


def test_subclassed_model_is_refused_before_any_work(tmp_path, tiny_examples):
    import tf_keras

    class Classifier(tf_keras.Model):
        def __init__(self):
            super().__init__()
            self.head = tf_keras.layers.Dense(10, activation="softmax")

        def call(self, inputs):
            return self.head(inputs)

    model = Classifier()
    model(np.zeros((1, 64), np.float32))
    model_uri = _save(model, tmp_path / "input")
    out_dir = tmp_path / "output"
    os.makedirs(out_dir)
    with pytest.raises(ModelInputError, match="subclassed.*Sequential or functional"):
        _run_executor(model_uri, tiny_examples, out_dir, _config())
    assert os.listdir(out_dir) == []


def test_missing_split_fails_with_a_data_error(tmp_path, tiny_model, tiny_examples):
    from components.common.errors import DataError

    model_uri = _save(tiny_model, tmp_path / "input")
    out_dir = tmp_path / "output"
    with pytest.raises(DataError, match="no split 'holdout'"):
        _run_executor(model_uri, tiny_examples, out_dir, _config(), data={"eval_split": "holdout"})
    assert os.listdir(out_dir) == []


# --- the core on in-memory models ------------------------------------------------------------


def _prune(model, **overrides):
    from components.pruner import pruner

    train_ds, eval_ds, steps = _datasets(model)
    return pruner.prune_model(model, train_ds, eval_ds, _config(**overrides), steps)


def test_layer_selection_leaves_the_other_layers_dense():
    from components.pruner import pruner

    model = conv_classifier()
    stripped, record, _ = _prune(model, target_sparsity=0.6, layers={"names": ["hidden"]})
    assert record["pruned_layers"] == ["hidden"] and set(record["layers"]) == {"hidden"}
    assert _sparsity(stripped.get_layer("hidden").kernel.numpy()) == pytest.approx(0.6, abs=0.01)
    assert _sparsity(stripped.get_layer("conv").kernel.numpy()) == 0.0
    assert _sparsity(stripped.get_layer("out").kernel.numpy()) == 0.0
    # The caller's model is untouched (the wrappers work on a copy).
    assert _sparsity(model.get_layer("hidden").kernel.numpy()) == 0.0

    def selected(layers):
        return pruner.plan(model, _config(layers=layers)).selected

    assert selected({}) == ["conv", "hidden", "out"]
    assert selected({"types": ["Conv2D"]}) == ["conv"]
    assert selected({"types": ["Dense"], "names": ["conv"]}) == ["conv", "hidden", "out"]
    assert selected({"exclude_names": ["conv", "out"]}) == ["hidden"]


def test_a_pruned_embedding_carries_its_note_in_the_coverage():
    import tf_keras

    from components.pruner import pruner

    model = tf_keras.Sequential(
        [
            tf_keras.layers.Input(shape=(4,), dtype="int32"),
            tf_keras.layers.Embedding(100, 8, name="embed"),
            tf_keras.layers.Flatten(),
            tf_keras.layers.Dense(2, name="out"),
        ]
    )
    selection = pruner.plan(model, _config())
    layers = {e["layer"]: e for e in pruner._coverage(model, selection)["layers"]}
    assert layers["embed"]["optimised"] and "embedding table" in layers["embed"]["note"]
    # Only a layer that needs a note has one: the coverage is the one per-layer record.
    assert layers["out"]["optimised"] and "note" not in layers["out"]


def test_selection_errors_name_the_layers():
    from components.pruner import pruner

    model = conv_classifier()
    with pytest.raises(ConfigError, match="no layer named \\['nope'\\].*'conv', 'flatten'"):
        pruner.plan(model, _config(layers={"names": ["nope"]}))
    with pytest.raises(ConfigError, match="'flatten' \\(Flatten\\) has no weights"):
        pruner.plan(model, _config(layers={"names": ["flatten"]}))
    with pytest.raises(ConfigError, match="no layer of type \\['LSTM'\\]"):
        pruner.plan(model, _config(layers={"types": ["LSTM"]}))
    with pytest.raises(
        ConfigError, match="block sparsity applies to 2-D.*'conv'.*types: \\[Dense\\]"
    ):
        pruner.plan(model, _config(block_size=[1, 2]))


@pytest.mark.parametrize("block", [(1, 2), (4, 1)])
def test_block_sparsity_zeroes_whole_blocks(block):
    model = conv_classifier()
    stripped, record, _ = _prune(
        model, target_sparsity=0.5, block_size=list(block), layers={"types": ["Dense"]}
    )
    kernel = stripped.get_layer("hidden").kernel.numpy()  # (288, 16): both dims divide evenly
    rows, cols = block
    blocks = kernel.reshape(kernel.shape[0] // rows, rows, kernel.shape[1] // cols, cols)
    zeros_per_block = (blocks == 0).sum(axis=(1, 3))
    assert set(np.unique(zeros_per_block)) <= {0, rows * cols}  # a block is all zero or none
    assert _sparsity(kernel) == pytest.approx(0.5, abs=0.05)


def test_two_by_four_structured_sparsity():
    from tensorflow_model_optimization.python.core.sparsity.keras import pruning_utils

    model = conv_classifier()
    stripped, record, _ = _prune(model, sparsity_m_by_n="2:4", layers={"types": ["Dense"]})
    assert record["target_sparsity"] == 0.5 and record["schedule"]["kind"] == "m_by_n"
    for name in ("hidden", "out"):
        kernel = stripped.get_layer(name).kernel
        assert pruning_utils.is_pruned_m_by_n(kernel, (2, 4)), name
        assert _sparsity(kernel.numpy()) >= 0.5 - 1e-6


def test_constant_schedule_reaches_the_target():
    model = conv_classifier()
    stripped, record, _ = _prune(model, target_sparsity=0.75, schedule={"kind": "constant"})
    for name in ("conv", "hidden", "out"):
        kernel = stripped.get_layer(name).kernel.numpy()
        assert _sparsity(kernel) == pytest.approx(0.75, abs=1.0 / kernel.size + 1e-9)


def test_early_stopping_never_restores_weights_from_before_the_target():
    model = conv_classifier()
    stripped, record, _ = _prune(
        model,
        target_sparsity=0.8,
        fine_tuning={"epochs": 4, "early_stopping_patience": 1},
    )
    for name in ("conv", "hidden", "out"):
        kernel = stripped.get_layer(name).kernel.numpy()
        assert _sparsity(kernel) == pytest.approx(0.8, abs=1.0 / kernel.size + 1e-9)


def _xnnpack_model():
    import tf_keras

    tf_keras.utils.set_random_seed(5)
    layers = tf_keras.layers
    inputs = layers.Input((8, 8, 3), name="image")
    x = layers.ZeroPadding2D(1, name="pad")(inputs)
    x = layers.Conv2D(8, 3, strides=2, padding="valid", activation="relu", name="stem")(x)
    x = layers.Conv2D(16, 1, name="pointwise")(x)
    x = layers.ReLU(name="relu")(x)
    x = layers.GlobalAveragePooling2D(keepdims=True, name="gap")(x)
    x = layers.Flatten(name="flatten")(x)
    outputs = layers.Dense(10, activation="softmax", name="out")(x)
    return tf_keras.Model(inputs, outputs)


def test_xnnpack_policy_prunes_only_the_1x1_convolutions():
    model = _xnnpack_model()
    stripped, record, _ = _prune(
        model, target_sparsity=0.75, pruning_policy="prune_for_latency_on_xnnpack"
    )
    assert record["pruned_layers"] == ["pointwise"]
    assert _sparsity(stripped.get_layer("pointwise").kernel.numpy()) == pytest.approx(0.75)
    assert _sparsity(stripped.get_layer("stem").kernel.numpy()) == 0.0
    assert _sparsity(stripped.get_layer("out").kernel.numpy()) == 0.0


def test_xnnpack_policy_on_a_model_that_does_not_fit_says_why():
    from components.pruner import pruner

    with pytest.raises(ModelInputError) as raised:
        pruner.plan(conv_classifier(), _config(pruning_policy="prune_for_latency_on_xnnpack"))
    message = str(raised.value)
    assert "does not fit PruneForLatencyOnXNNPack" in message
    assert "GlobalAveragePooling2D" in message and "pruning_policy" in message
