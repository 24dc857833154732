"""Structured pruning core: channel groups, exact rebuilds, counts, custom layers, iterations."""

from __future__ import annotations

import numpy as np
import pytest

from components.common.errors import ConfigError, ModelInputError
from components.common.flops import model_flops
from components.pruner import structured
from components.pruner.structured_config import StructuredPruningConfig
from tests.artifacts import run_model_step

NO_FINE_TUNING = {"fine_tuning": {"epochs": 0}}


def _layers():
    import tf_keras

    return tf_keras.layers


def _zero_channels(model, layer_name: str, channels) -> None:
    """Makes ``channels`` of a layer's output exactly zero (filters, biases, BN shift)."""
    layer = model.get_layer(layer_name)
    weights = layer.get_weights()
    kind = type(layer).__name__
    channels = np.asarray(channels)
    if kind == "BatchNormalization":
        names = [w.name.split("/")[-1].split(":")[0] for w in layer.weights]
        for i, name in enumerate(names):
            if name in ("beta", "moving_mean"):
                weights[i][channels] = 0.0
    elif kind == "DepthwiseConv2D":
        weights[-1][channels] = 0.0  # its bias; the kernel sees zero inputs already
    elif kind.startswith("SeparableConv"):
        weights[1][..., channels] = 0.0
        weights[2][channels] = 0.0
    else:
        weights[0][..., channels] = 0.0
        if len(weights) > 1:
            weights[1][channels] = 0.0
    layer.set_weights(weights)


def _half(n: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(n, n // 2, replace=False))


def _inputs(model, n: int = 16, seed: int = 0) -> np.ndarray:
    shape = (n, *model.inputs[0].shape[1:])
    # Centred inputs: few ReLU channels are dead, so data-driven scores have no ties at zero.
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _dataset(x: np.ndarray, classes: int = 10, batch: int = 8, seed: int = 0):
    import tensorflow as tf

    y = np.random.default_rng(seed).integers(0, classes, len(x)).astype(np.int64)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


def _top1(model, dataset) -> float:
    """Top-1 accuracy of ``model`` over an (inputs, labels) dataset, worked out here."""
    xs, ys = zip(*((x.numpy(), y.numpy()) for x, y in dataset), strict=True)
    predictions = model.predict(np.concatenate(xs), verbose=0)
    return float(np.mean(np.argmax(predictions, axis=-1) == np.concatenate(ys)))


def _weights(model) -> list[np.ndarray]:
    return [w.copy() for w in model.get_weights()]


@pytest.fixture
def sequential_cnn():
    """Conv -> BN -> ReLU -> Conv -> pool -> Flatten -> Dense -> Dense (classifier), Sequential."""
    import tf_keras

    layers = _layers()
    tf_keras.utils.set_random_seed(3)
    model = tf_keras.Sequential(
        [
            layers.Input(shape=(8, 8, 2), name="image"),
            layers.Conv2D(8, 3, padding="same", name="conv1"),
            layers.BatchNormalization(name="bn1"),
            layers.ReLU(name="relu1"),
            layers.Conv2D(12, 3, padding="same", activation="relu", name="conv2"),
            layers.MaxPooling2D(name="pool"),
            layers.Flatten(name="flatten"),
            layers.Dense(16, activation="relu", name="dense1"),
            layers.Dropout(0.2, name="dropout"),
            layers.Dense(10, activation="softmax", name="predictions"),
        ],
        name="seq_cnn",
    )
    # Non-trivial BN statistics, so a wrong slice of them shows up in the outputs.
    bn = model.get_layer("bn1")
    rng = np.random.default_rng(1)
    bn.set_weights([rng.uniform(0.5, 1.5, 8).astype(np.float32) for _ in range(4)])
    return model


@pytest.fixture
def residual_model():
    """Functional: two convs joined by Add, depthwise, separable, Concatenate, GAP, classifier."""
    import tf_keras

    layers = _layers()
    tf_keras.utils.set_random_seed(4)
    inputs = layers.Input(shape=(8, 8, 3), name="image")
    a = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_a")(inputs)
    b = layers.Conv2D(8, 3, padding="same", name="conv_b")(a)
    b = layers.BatchNormalization(name="bn_b")(b)
    b = layers.ReLU(name="relu_b")(b)
    added = layers.Add(name="add")([a, b])
    dw = layers.DepthwiseConv2D(3, padding="same", name="dw")(added)
    sep = layers.SeparableConv2D(6, 3, padding="same", activation="relu", name="sep")(dw)
    joined = layers.Concatenate(name="concat")([added, sep])
    c = layers.Conv2D(10, 1, activation="relu", name="conv_c")(joined)
    pooled = layers.GlobalAveragePooling2D(name="gap")(c)
    outputs = layers.Dense(5, name="logits")(pooled)
    model = tf_keras.Model(inputs, outputs, name="residual")
    bn = model.get_layer("bn_b")
    rng = np.random.default_rng(2)
    bn.set_weights([rng.uniform(0.5, 1.5, 8).astype(np.float32) for _ in range(4)])
    return model


# ---------------------------------------------------------------------------------------------
# Exactness: removing channels whose weights are zero changes nothing.


@pytest.mark.parametrize("criterion", ["l1", "l2", "mean_activation", "taylor"])
def test_sequential_rebuild_is_exact_when_removed_channels_are_zero(sequential_cnn, criterion):
    model = sequential_cnn
    removed = {"conv1": _half(8, 1), "conv2": _half(12, 2), "dense1": _half(16, 3)}
    _zero_channels(model, "conv1", removed["conv1"])
    _zero_channels(model, "bn1", removed["conv1"])
    _zero_channels(model, "conv2", removed["conv2"])
    _zero_channels(model, "dense1", removed["dense1"])
    x = _inputs(model, 32)
    expected = model(x, training=False).numpy()
    original = _weights(model)
    config = StructuredPruningConfig.parse(
        {"target_fraction": 0.5, "criterion": criterion, **NO_FINE_TUNING}
    )

    pruned, report = structured.structured_prune(model, _dataset(x), None, config)

    np.testing.assert_allclose(pruned(x, training=False).numpy(), expected, atol=1e-5)
    assert pruned is not model
    assert pruned.get_layer("conv1").filters == 4
    assert pruned.get_layer("conv2").filters == 6
    assert pruned.get_layer("dense1").units == 8
    assert pruned.get_layer("predictions").units == 10
    # The dense layer after Flatten lost exactly the rows of the removed conv2 channels.
    assert pruned.get_layer("dense1").kernel.shape == (4 * 4 * 6, 8)
    kept = np.setdiff1d(np.arange(12), removed["conv2"])
    rows = (np.arange(16)[:, None] * 12 + kept[None, :]).reshape(-1)
    new_kernel = pruned.get_layer("dense1").kernel.numpy()
    old_kernel = model.get_layer("dense1").kernel.numpy()[rows]
    if criterion in ("l1", "l2"):
        kept_units = np.setdiff1d(np.arange(16), removed["dense1"])
        np.testing.assert_array_equal(new_kernel, old_kernel[:, kept_units])
    else:  # units dead on these inputs tie with the zeroed ones: any of them may go
        for column in new_kernel.T:
            assert any(np.array_equal(column, old) for old in old_kernel.T)
    # The input model is untouched.
    for before, after in zip(original, model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)
    assert {e["layer"]: e["channels_after"] for e in report["layers"]} == {
        "conv1": 4,
        "bn1": 4,
        "conv2": 6,
        "dense1": 8,
        "predictions": 10,
    }
    assert report["criterion"] == criterion
    assert report["achieved_fraction"] == pytest.approx(0.5)


@pytest.mark.parametrize("criterion", ["l1", "mean_activation"])
def test_functional_residual_and_concat_rebuild_is_exact(residual_model, criterion):
    model = residual_model
    joined = _half(8, 5)  # conv_a and conv_b are added: they lose the same channels
    for name in ("conv_a", "conv_b", "bn_b", "dw"):
        _zero_channels(model, name, joined)
    _zero_channels(model, "sep", _half(6, 6))
    _zero_channels(model, "conv_c", _half(10, 7))
    x = _inputs(model)
    expected = model(x, training=False).numpy()

    plan = structured.analyze(model)
    add_group = plan.group_of("conv_a")
    assert add_group is plan.group_of("conv_b")
    assert add_group.producers == ["conv_a", "conv_b"]
    assert plan.group_of("logits").blocked

    config = StructuredPruningConfig.parse({"criterion": criterion, **NO_FINE_TUNING})
    pruned, report = structured.structured_prune(model, _dataset(x, classes=5), None, config)

    np.testing.assert_allclose(pruned(x, training=False).numpy(), expected, atol=1e-5)
    assert pruned.get_layer("conv_a").filters == pruned.get_layer("conv_b").filters == 4
    assert pruned.get_layer("dw").depthwise_kernel.shape == (3, 3, 4, 1)
    assert pruned.get_layer("sep").depthwise_kernel.shape == (3, 3, 4, 1)
    assert pruned.get_layer("sep").filters == 3
    assert pruned.get_layer("conv_c").kernel.shape == (1, 1, 4 + 3, 5)
    assert pruned.get_layer("logits").kernel.shape == (5, 5)
    assert tuple(pruned.get_layer("add").output_shape) == (None, 8, 8, 4)
    assert report["skipped_layers"] == [
        {
            "layer": "logits",
            "type": "Dense",
            "reason": "output channels kept: model output (the classifier is never pruned)",
        }
    ]


def test_reshape_keeping_channels_last_and_dense_on_sequences_are_exact():
    import tf_keras

    layers = _layers()
    tf_keras.utils.set_random_seed(5)
    inputs = layers.Input(shape=(4, 4, 2))
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inputs)
    x = layers.Reshape((16, 8), name="to_sequence")(x)
    x = layers.Dense(6, activation="relu", name="per_position")(x)
    x = layers.Reshape((96,), name="flat")(x)
    outputs = layers.Dense(3, name="logits")(x)
    model = tf_keras.Model(inputs, outputs)
    _zero_channels(model, "conv", [1, 2, 5, 6])
    _zero_channels(model, "per_position", [0, 4, 5])
    x = _inputs(model)
    expected = model(x).numpy()

    pruned, _ = structured.structured_prune(
        model, None, None, StructuredPruningConfig.parse(NO_FINE_TUNING)
    )

    np.testing.assert_allclose(pruned(x).numpy(), expected, atol=1e-5)
    assert pruned.get_layer("to_sequence").target_shape == (16, 4)
    assert pruned.get_layer("flat").target_shape == (48,)


def test_prune_channels_keeps_the_named_channels(residual_model):
    pruned = structured.prune_channels(residual_model, {"conv_b": [0, 3, 7], "sep": [1]})
    np.testing.assert_array_equal(
        pruned.get_layer("conv_a").kernel.numpy(),
        residual_model.get_layer("conv_a").kernel.numpy()[..., [0, 3, 7]],
    )
    np.testing.assert_array_equal(
        pruned.get_layer("bn_b").moving_variance.numpy(),
        residual_model.get_layer("bn_b").moving_variance.numpy()[[0, 3, 7]],
    )
    assert pruned.get_layer("conv_c").kernel.shape[-2] == 3 + 1
    with pytest.raises(ValueError, match="one channel set"):
        structured.prune_channels(residual_model, {"conv_a": [0, 1], "conv_b": [0, 2]})
    with pytest.raises(ValueError, match="cannot lose channels"):
        structured.prune_channels(residual_model, {"logits": [0, 1]})


# ---------------------------------------------------------------------------------------------
# Counts.


def test_parameters_and_flops_drop_as_computed_by_hand():
    import tf_keras

    layers = _layers()
    model = tf_keras.Sequential(
        [
            layers.Input(shape=(8, 8, 1)),
            layers.Conv2D(8, 3, padding="same", activation="relu", name="c1"),
            layers.Conv2D(16, 3, padding="same", activation="relu", name="c2"),
            layers.Flatten(),
            layers.Dense(10, name="out"),
        ]
    )
    config = StructuredPruningConfig.parse({"target_fraction": 0.5, **NO_FINE_TUNING})

    pruned, report = structured.structured_prune(model, None, None, config)

    def counts(c1: int, c2: int) -> tuple[int, int]:
        params = (9 * 1 * c1 + c1) + (9 * c1 * c2 + c2) + (64 * c2 * 10 + 10)
        macs = 64 * 9 * 1 * c1 + 64 * 9 * c1 * c2 + 64 * c2 * 10
        return params, 2 * macs

    assert (report["parameters_before"], report["flops_before"]) == counts(8, 16)
    assert (report["parameters_after"], report["flops_after"]) == counts(4, 8)
    assert pruned.count_params() == counts(4, 8)[0]
    assert model_flops(pruned)["flops_per_example"] == counts(4, 8)[1]
    assert report["flops_ratio"] == pytest.approx(counts(4, 8)[1] / counts(8, 16)[1])


def test_mobilenet_v2_stages_stay_consistent_and_flops_drop():
    import tf_keras

    tf_keras.utils.set_random_seed(0)
    model = tf_keras.applications.MobileNetV2(
        alpha=0.35, weights=None, input_shape=(32, 32, 3), classes=10
    )
    plan = structured.analyze(model)
    stage = plan.group_of("block_3_project")
    assert stage.producers == ["block_3_project", "block_4_project", "block_5_project"]
    assert stage.prunable

    pruned, report = structured.structured_prune(
        model, None, None, StructuredPruningConfig.parse(NO_FINE_TUNING)
    )

    x = _inputs(model, 2)
    assert pruned(x).shape == (2, 10)
    filters = {pruned.get_layer(f"block_{i}_project").filters for i in (3, 4, 5)}
    assert filters == {stage.channels // 2}
    assert pruned.get_layer("block_4_expand").kernel.shape[-2] == stage.channels // 2
    assert report["flops_after"] < 0.4 * report["flops_before"]
    assert pruned.get_layer("predictions").units == 10


# ---------------------------------------------------------------------------------------------
# Layers that cannot be edited.


def test_custom_layer_is_kept_whole_and_the_rest_is_pruned():
    import tensorflow as tf
    import tf_keras

    class ChannelScale(tf_keras.layers.Layer):
        """Multiplies each channel by a learned factor (a layer the analysis does not know)."""

        def build(self, input_shape):
            self.scale = self.add_weight(
                name="scale", shape=(input_shape[-1],), initializer="ones", trainable=True
            )

        def call(self, inputs):
            return inputs * self.scale

    layers = _layers()
    tf_keras.utils.set_random_seed(6)
    inputs = layers.Input(shape=(6, 6, 2))
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = ChannelScale(name="scale")(x)
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.GlobalMaxPooling2D(name="gmp")(x)
    x = layers.Dense(12, activation="relu", name="dense1")(x)
    outputs = layers.Dense(4, name="logits")(x)
    model = tf_keras.Model(inputs, outputs)
    model.get_layer("scale").set_weights([np.linspace(0.5, 2.0, 8).astype(np.float32)])
    _zero_channels(model, "conv2", [0, 2, 4, 6])
    _zero_channels(model, "dense1", np.arange(6))
    x_in = _inputs(model)
    expected = model(x_in).numpy()

    pruned, report = structured.structured_prune(
        model, None, None, StructuredPruningConfig.parse(NO_FINE_TUNING)
    )

    np.testing.assert_allclose(pruned(x_in).numpy(), expected, atol=1e-5)
    assert pruned.get_layer("conv1").filters == 8
    assert pruned.get_layer("conv2").filters == 4
    assert pruned.get_layer("conv2").kernel.shape[-2] == 8
    assert pruned.get_layer("dense1").units == 6
    np.testing.assert_array_equal(
        pruned.get_layer("scale").get_weights()[0], np.linspace(0.5, 2.0, 8, dtype=np.float32)
    )
    assert isinstance(pruned.get_layer("scale"), ChannelScale)
    skipped = {s["layer"]: s["reason"] for s in report["skipped_layers"]}
    assert "ChannelScale" in skipped["scale"]
    assert "read by scale (ChannelScale)" in skipped["conv1"]
    assert tf.reduce_all(tf.math.is_finite(pruned(x_in)))


def test_add_with_the_model_input_leaves_that_group_whole():
    import tf_keras

    layers = _layers()
    inputs = layers.Input(shape=(4, 4, 4))
    x = layers.Conv2D(4, 1, name="conv")(inputs)
    x = layers.Add(name="skip_connection")([inputs, x])
    x = layers.Conv2D(8, 1, activation="relu", name="conv2")(x)
    x = layers.Flatten()(x)
    model = tf_keras.Model(inputs, layers.Dense(2, name="logits")(x))

    plan = structured.analyze(model)

    assert not plan.group_of("conv").prunable
    assert "model input" in plan.group_of("conv").blocked
    assert plan.group_of("conv2").prunable


def test_squeeze_excitation_gate_is_pruned_with_the_channels_it_scales():
    import tf_keras

    layers = _layers()
    tf_keras.utils.set_random_seed(7)
    inputs = layers.Input(shape=(6, 6, 3))
    x = layers.Conv2D(8, 3, activation="relu", name="conv")(inputs)
    s = layers.GlobalAveragePooling2D(name="squeeze")(x)
    s = layers.Reshape((1, 1, 8), name="to_map")(s)
    s = layers.Dense(4, activation="relu", name="se_reduce")(s)
    s = layers.Dense(8, activation="sigmoid", name="se_expand")(s)
    x = layers.Multiply(name="excite")([x, s])
    x = layers.Conv2D(6, 1, activation="relu", name="conv2")(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(3, name="logits")(x)
    model = tf_keras.Model(inputs, layers.Softmax(name="probabilities")(x))

    plan = structured.analyze(model)
    pruned, report = structured.structured_prune(
        model, None, None, StructuredPruningConfig.parse(NO_FINE_TUNING)
    )

    assert plan.group_of("conv") is plan.group_of("se_expand")
    assert pruned.get_layer("conv").filters == pruned.get_layer("se_expand").units == 4
    assert pruned.get_layer("se_reduce").kernel.shape == (4, 2)
    assert pruned.get_layer("conv2").kernel.shape == (1, 1, 4, 3)
    assert pruned(_inputs(model, 2)).shape == (2, 3)
    skipped = {s["layer"]: s["reason"] for s in report["skipped_layers"]}
    assert set(skipped) == {"logits"}
    assert "probabilities (Softmax), which mixes channels" in skipped["logits"]


def test_subclassed_model_is_refused():
    import tf_keras

    class Net(tf_keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = tf_keras.layers.Dense(4)

        def call(self, inputs):
            return self.dense(inputs)

    net = Net()
    net(np.zeros((1, 3), np.float32))
    with pytest.raises(ModelInputError, match="subclassed"):
        structured.analyze(net)


# ---------------------------------------------------------------------------------------------
# Selection: global scope, overrides, skip list, rounding.


def test_global_scope_removes_the_target_share_within_per_layer_limits(sequential_cnn):
    config = StructuredPruningConfig.parse(
        {"scope": "global", "target_fraction": 0.5, "max_fraction_per_layer": 0.75}
    )
    plan = structured.analyze(sequential_cnn)
    ids = {name: plan.group_of(name).id for name in ("conv1", "conv2", "dense1")}
    # Scores are compared relative to their layer's mean: conv2 has one strong channel and
    # eleven weak ones, so the global ranking takes its weak ones first, up to the limit.
    scores = {
        ids["conv1"]: np.full(8, 5.0),
        ids["conv2"]: np.array([0.001] * 11 + [100.0]),
        ids["dense1"]: np.full(16, 0.2),
    }

    keep = structured.select_channels(plan, scores, config)

    kept = {name: keep[gid] for name, gid in ids.items()}
    assert sum(len(k) for k in kept.values()) == (8 + 12 + 16) - 18
    assert len(kept["conv2"]) == 3  # 75% removed: the per-layer limit
    assert 11 in kept["conv2"]
    assert len(kept["conv1"]) >= 2 and len(kept["dense1"]) >= 4


def test_overrides_skip_list_and_channel_multiple(sequential_cnn):
    config = StructuredPruningConfig.parse(
        {
            "target_fraction": 0.5,
            "per_layer": {"dense1": 0.75},
            "skip_layers": ["conv1"],
            "channel_multiple": 4,
            **NO_FINE_TUNING,
        }
    )

    pruned, report = structured.structured_prune(sequential_cnn, None, None, config)

    assert pruned.get_layer("conv1").filters == 8
    assert pruned.get_layer("conv2").filters == 8  # 12 -> 6, rounded up to 8
    assert pruned.get_layer("dense1").units == 4
    reasons = {s["layer"]: s["reason"] for s in report["skipped_layers"]}
    assert "conv1 is in skip_layers" in reasons["conv1"]


# ---------------------------------------------------------------------------------------------
# Iterations, fine-tuning, the accuracy floor.


def test_iterative_pruning_with_fine_tuning_reaches_the_target(sequential_cnn):
    x = _inputs(sequential_cnn, 48)
    train = _dataset(x, seed=1)
    evaluation = _dataset(_inputs(sequential_cnn, 24, seed=2), seed=2)
    original = _weights(sequential_cnn)
    config = StructuredPruningConfig.parse(
        {"target_fraction": 0.5, "steps": 2, "fine_tuning": {"epochs": 1, "batch_size": 8}}
    )

    pruned, report = structured.structured_prune(sequential_cnn, train, evaluation, config)

    assert [s["fraction"] for s in report["steps"]] == [0.25, 0.5]
    assert all(s["accepted"] and s["fine_tuning_epochs"] == 1 for s in report["steps"])
    assert [s["parameters"] for s in report["steps"]] == sorted(
        (s["parameters"] for s in report["steps"]), reverse=True
    )
    assert pruned.get_layer("conv2").filters == 6
    assert pruned.get_layer("dense1").units == 8
    # the recorded accuracies are the returned and the input model's, on the evaluation data
    assert report["accuracy_after"] == pytest.approx(_top1(pruned, evaluation), abs=1e-9)
    assert report["accuracy_after"] == report["steps"][-1]["accuracy_after_fine_tuning"]
    assert report["accuracy_before"] == pytest.approx(_top1(sequential_cnn, evaluation), abs=1e-9)
    for before, after in zip(original, sequential_cnn.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)


def test_accuracy_floor_stops_and_keeps_the_last_model_above_it(sequential_cnn):
    evaluation = _dataset(_inputs(sequential_cnn, 24, seed=2), seed=2)
    config = StructuredPruningConfig.parse(
        {"target_fraction": 0.5, "accuracy_floor": 1.0, **NO_FINE_TUNING}
    )

    pruned, report = structured.structured_prune(sequential_cnn, None, evaluation, config)

    assert report["steps_accepted"] == 0
    assert "below the floor" in report["stopped_reason"]
    assert pruned is not sequential_cnn
    assert pruned.get_layer("conv2").filters == 12
    assert report["parameters_after"] == report["parameters_before"]
    x = _inputs(sequential_cnn)
    np.testing.assert_allclose(pruned(x).numpy(), sequential_cnn(x).numpy(), atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Configuration.


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"target_fraction": 1.0}, "target_fraction"),
        ({"criterion": "l0"}, "criterion"),
        ({"scope": "model"}, "scope"),
        ({"per_layer": {"conv1": 1.5}}, "per_layer.conv1"),
        ({"steps": 0}, "steps"),
        ({"accuracy_floor": 1.2}, "accuracy_floor"),
        ({"fine_tuning": {"epochs": -1}}, "fine_tuning.epochs"),
        ({"target_fractions": 0.5}, "target_fractions"),
    ],
)
def test_bad_config_names_the_field(data, field):
    with pytest.raises(ConfigError, match=f"structured.{field}"):
        StructuredPruningConfig.parse(data, where="structured")


def test_config_defaults_and_consistency():
    config = StructuredPruningConfig()
    assert (config.target_fraction, config.criterion, config.scope) == (0.5, "l1", "per_layer")
    assert config.fine_tuning.epochs > 0 and config.needs_train_data
    with pytest.raises(ConfigError, match="both in per_layer and in skip_layers"):
        StructuredPruningConfig.parse({"per_layer": {"a": 0.1}, "skip_layers": ["a"]})


def test_config_checked_against_the_model(sequential_cnn):
    def check(data):
        structured.check_model(sequential_cnn, StructuredPruningConfig.parse(data))

    with pytest.raises(ConfigError, match=r"skip_layers: no layer named \['conv9'\]"):
        check({"skip_layers": ["conv9"]})
    with pytest.raises(ConfigError, match="per_layer.bn1: bn1 is a BatchNormalization"):
        check({"per_layer": {"bn1": 0.5}})
    with pytest.raises(ConfigError, match="per_layer.predictions: the output channels"):
        check({"per_layer": {"predictions": 0.5}})
    with pytest.raises(ConfigError, match="criterion 'taylor' needs the train split"):
        structured.structured_prune(
            sequential_cnn, None, None, StructuredPruningConfig.parse({"criterion": "taylor"})
        )


# ---------------------------------------------------------------------------------------------
# Artifacts: model and Examples directories in, a Model artifact out.


def test_run_writes_the_model_artifact_and_key_numbers(
    tiny_model, tiny_examples, tmp_path, eval_top1
):
    from components.common import model_io, properties
    from components.common.examples import DataConfig

    model_uri = str(tmp_path / "model")
    model_io.save_keras_model(tiny_model, model_uri)
    output_uri = str(tmp_path / "pruned")
    config = StructuredPruningConfig.parse(
        {"criterion": "taylor", "fine_tuning": {"epochs": 1, "batch_size": 16}}
    )

    report = structured.run(model_uri, tiny_examples, output_uri, config, DataConfig())

    pruned = model_io.load_keras_model(output_uri)
    assert pruned.get_layer("hidden").units == 8
    assert pruned.get_layer("out").kernel.shape == (8, 10)
    assert (
        properties.read_json(output_uri, structured.RECORD_FILE)["flops_after"]
        == (report["flops_after"])
    )
    history = properties.read_json(output_uri, structured.HISTORY_FILE)
    assert len(history["1"]) == 1
    numbers = structured.key_numbers(report)
    assert numbers[structured.PER_LAYER_CHANNELS] == {"hidden": [16, 8], "out": [10, 10]}
    assert numbers[structured.FLOPS_AFTER] == 2 * (64 * 8 + 8 * 10)
    assert numbers[structured.FLOPS_BEFORE] == 2 * (64 * 16 + 16 * 10)
    assert numbers[structured.FINE_TUNING_EPOCHS] == 1
    assert numbers[structured.ACCURACY_AFTER] == pytest.approx(
        eval_top1(pruned, tiny_examples), abs=1e-9
    )
    assert numbers[structured.SKIPPED_LAYERS] == ["out"]


def test_run_fine_tunes_each_step_with_the_models_own_loss(tiny_model, tiny_examples, tmp_path):
    """run() goes through the shared run_technique: task, loss and training config as the
    Pruner's, and each step compiles with the loss and metrics the input model was saved with."""
    import tf_keras

    from components.common import model_io, properties
    from components.common.examples import DataConfig

    tiny_model.compile(
        optimizer="adam",
        loss=tf_keras.losses.SparseCategoricalCrossentropy(),
        metrics=["sparse_categorical_accuracy"],
    )
    model_uri = str(tmp_path / "model")
    tiny_model.save(str(tmp_path / "model" / model_io.SERVING_DIR), save_format="tf")
    output_uri = str(tmp_path / "pruned")
    config = StructuredPruningConfig.parse(
        {"steps": 2, "fine_tuning": {"epochs": 1, "batch_size": 16}}
    )

    report = structured.run(model_uri, tiny_examples, output_uri, config, DataConfig())

    assert report["task"]["kind"] == "multiclass"
    assert report["loss"]["source"] == "model"
    assert report["loss"]["loss"] == "SparseCategoricalCrossentropy"
    assert [s["accepted"] for s in report["steps"]] == [True, True]
    history = properties.read_json(output_uri, structured.HISTORY_FILE)
    assert sorted(history) == ["1", "2"] and all(len(h) == 1 for h in history.values())
    # The model's own metric, fresh in each step: it counts what the task's accuracy counts.
    last = history["2"][0]
    assert last["sparse_categorical_accuracy"] == pytest.approx(last["accuracy"])
    # The next step (e.g. the Clusterer) fine-tunes with the same loss.
    saved = model_io.read_training_config(output_uri)
    assert saved["loss"]["class_name"] == "SparseCategoricalCrossentropy"
    assert model_io.load_keras_model(output_uri).get_layer("hidden").units == 8


def test_run_fails_on_the_config_before_reading_data(tiny_model, tmp_path):
    from components.common import model_io
    from components.common.examples import DataConfig

    model_uri = str(tmp_path / "model")
    model_io.save_keras_model(tiny_model, model_uri)
    config = StructuredPruningConfig.parse({"per_layer": {"hiddn": 0.5}})
    with pytest.raises(ConfigError, match="per_layer: no layer named"):
        structured.run(
            model_uri, str(tmp_path / "no_examples"), str(tmp_path / "out"), config, DataConfig()
        )
    assert not (tmp_path / "out").exists()


def test_pruner_executor_in_structured_mode(tmp_path, tiny_examples):
    """The Pruner component's executor runs structured pruning when ``mode: structured``."""
    import tf_keras

    from components.common import model_io
    from components.pruner import executor
    from components.pruner.config import PrunerConfig

    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential(
        [
            tf_keras.layers.Input(shape=(64,), name="image"),
            tf_keras.layers.Reshape((8, 8, 1)),
            tf_keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
            tf_keras.layers.Flatten(),
            tf_keras.layers.Dense(16, activation="relu", name="hidden"),
            tf_keras.layers.Dense(10, activation="softmax", name="out"),
        ]
    )
    model_io.save_keras_model(model, str(tmp_path / "in"))
    config = PrunerConfig.parse(
        {"mode": "structured", "structured": {"target_fraction": 0.5, "fine_tuning": {"epochs": 1}}}
    )
    output = run_model_step(
        executor.Executor, str(tmp_path / "in"), tiny_examples, tmp_path / "out", config
    )
    pruned = model_io.load_keras_model(output.uri)
    assert pruned.get_layer("conv").filters == 4
    assert pruned.get_layer("hidden").units == 8
    assert pruned.get_layer("out").units == 10
    assert output.get_int_custom_property("parameters_after") == pruned.count_params()
    assert output.get_int_custom_property("parameters_before") == model.count_params()
