"""Ops fused from several Keras layers (Conv2D + BatchNormalization + ReLU) and
``quantizer.exclude_layers``: the fused op is named after every layer it came from, any of them
keeps it in float, and an entry that keeps nothing in float is refused."""

import numpy as np
import pytest

from components.common import legacy_keras
from components.common.errors import ConfigError
from components.quantizer import conversion, quantizer, selective
from components.quantizer import flatbuffer as fb_lib
from components.quantizer.config import QuantizerConfig

legacy_keras.skip_autograph_for_tf_keras()

FUSED = "conv2d_2+batch_normalization_2+re_lu_4"


@pytest.fixture(scope="module")
def tiny():
    """Input -> Reshape (to the same shape) -> Conv2D -> BatchNormalization -> ReLU -> Dropout ->
    Flatten -> Dense, random weights (the BatchNormalization's statistics too, so it is no identity)."""
    import tf_keras

    tf_keras.utils.set_random_seed(3)
    layers = tf_keras.layers
    inputs = layers.Input((8, 8, 3), name="image")
    x = layers.Reshape((8, 8, 3), name="same_shape")(inputs)  # nothing left to compute
    x = layers.Conv2D(4, 3, name="conv2d_2")(x)
    x = layers.BatchNormalization(name="batch_normalization_2")(x)
    x = layers.ReLU(name="re_lu_4")(x)
    x = layers.Dropout(0.2, name="dropout")(x)
    x = layers.Flatten(name="flatten")(x)
    outputs = layers.Dense(3, name="dense")(x)
    model = tf_keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    bn = model.get_layer("batch_normalization_2")
    bn.set_weights(
        [rng.uniform(0.5, 2.0, 4), rng.normal(size=4), rng.normal(size=4), rng.uniform(0.5, 2.0, 4)]
    )
    samples = rng.random((16, 8, 8, 3), dtype=np.float32)
    return model, samples


def _convert(tiny, exclude=()):
    model, samples = tiny
    config = QuantizerConfig(mode="full_int8", exclude_layers=list(exclude))
    flatbuffer, _ = conversion.convert(model, config, samples)
    return {op["op"]: op for op in fb_lib.operators(flatbuffer, model)}


def test_the_fused_op_is_attributed_to_every_layer_it_came_from(tiny):
    ops = _convert(tiny)
    conv = ops["CONV_2D"]
    # The converter names the op after the ReLU first: read by its first name, the op is the
    # ReLU's and excluding the conv missed it.
    assert (
        fb_lib.layer_of(conv["output"], tiny[0].layers and [x.name for x in tiny[0].layers])
        == "re_lu_4"
    )
    assert conv["layers"] == ["conv2d_2", "batch_normalization_2", "re_lu_4"]
    assert conv["layer"] == FUSED
    assert fb_lib.describe(conv) == f"CONV_2D({FUSED})"
    # The Dense op is named after the signature output: it is the dense layer's, not the
    # Flatten's whose tensor it reads.
    assert ops["FULLY_CONNECTED"]["layers"] == ["dense"]
    assert ops["RESHAPE"]["layers"] == ["flatten"]
    assert not (ops["CONV_2D"]["float"] or ops["FULLY_CONNECTED"]["float"])  # all int8


@pytest.mark.parametrize("entry", ["conv2d_2", "batch_normalization_2", "re_lu_4", FUSED])
def test_excluding_any_layer_of_the_fused_op_keeps_that_op_float(tiny, entry):
    ops = _convert(tiny, [entry])
    conv = ops["CONV_2D"]
    assert conv["float"] and conv["input_types"] == ["FLOAT32"]
    assert conv["output_types"] == ["FLOAT32"]
    # Only that op: the dense layer stays integer.
    assert ops["FULLY_CONNECTED"]["input_types"] == ["INT8"]
    assert ops["FULLY_CONNECTED"]["output_types"] == ["INT8"]
    assert not ops["FULLY_CONNECTED"]["float"]


def test_excluding_the_dense_output_layer_keeps_its_op_float(tiny):
    ops = _convert(tiny, ["dense"])
    assert ops["FULLY_CONNECTED"]["float"]
    assert ops["CONV_2D"]["output_types"] == ["INT8"]


@pytest.mark.parametrize(
    ("entry", "why"),
    [("conv2d_3", "not layers of the model"), ("dropout", "nothing to compute at inference")],
)
def test_an_entry_that_names_no_computing_layer_is_refused_at_preflight(tiny, entry, why):
    model, _ = tiny
    config = QuantizerConfig(mode="full_int8", exclude_layers=["conv2d_2", entry])
    with pytest.raises(ConfigError) as e:
        quantizer._check_layers(model, config)
    message = str(e.value)
    assert "\n" not in message
    assert f"['{entry}']" in message and why in message
    usable = message.split("can stay in float: ")[1]
    assert "'conv2d_2'" in usable and "'dense'" in usable
    assert "'dropout'" not in usable and "'image'" not in usable


def test_a_joined_name_with_an_unknown_part_is_refused(tiny):
    model, _ = tiny
    config = QuantizerConfig(mode="full_int8", exclude_layers=["conv2d_2+nope"])
    with pytest.raises(ConfigError, match=r"\['conv2d_2\+nope'\], not layers of the model"):
        quantizer._check_layers(model, config)
    quantizer._check_layers(model, QuantizerConfig(mode="full_int8", exclude_layers=[FUSED]))


def test_a_layer_fused_away_entirely_is_refused_before_requantization(tiny):
    model, samples = tiny
    # A Reshape to the same shape passes preflight (it is a layer that can compute) but the
    # converter leaves no op of it.
    quantizer._check_layers(model, QuantizerConfig(mode="full_int8", exclude_layers=["same_shape"]))
    config = QuantizerConfig(mode="full_int8", exclude_layers=["same_shape"])
    with pytest.raises(ConfigError) as e:
        conversion.convert(model, config, samples)
    message = str(e.value)
    assert "\n" not in message
    assert "['same_shape'] produce no op" in message
    assert "'conv2d_2', 'batch_normalization_2', 're_lu_4', 'flatten', 'dense'" in message
    assert "'same_shape'" not in message.split("Layers that produce ops: ")[1]


def test_check_excluded_refuses_only_entries_without_an_op():
    ops = [
        {"op": "QUANTIZE", "layers": []},
        {"op": "CONV_2D", "layers": ["c", "bn"]},
        {"op": "DEQUANTIZE", "layers": ["d"]},  # a boundary is no compute op of "d"
    ]
    selective.check_excluded(ops, ["bn", "c+bn"], "x")
    with pytest.raises(ConfigError, match=r"x: \['d'\] produce no op .*produce ops: \['c', 'bn'\]"):
        selective.check_excluded(ops, ["c", "d"], "x")


def test_the_layer_errors_name_the_fused_layers(tiny):
    model, samples = tiny
    config = QuantizerConfig(mode="full_int8")
    first, _, requantizer = conversion.convert_selective(model, config, samples)
    errors = {e["layer"]: e for e in requantizer.layer_errors()}
    assert set(errors) == {FUSED, "flatten", "dense"}
    assert errors[FUSED]["layers"] == ["conv2d_2", "batch_normalization_2", "re_lu_4"]
    assert errors[FUSED]["ops"] == ["CONV_2D"]
    # A name from the table, given back as it reads, keeps that op in float.
    ops = {op["op"]: op for op in fb_lib.operators(requantizer.flatbuffer([FUSED]), model)}
    assert ops["CONV_2D"]["float"] and not ops["FULLY_CONNECTED"]["float"]


# --------------------------------------------------------------------------- records


@pytest.fixture(scope="module")
def fused_outlier(tmp_path_factory):
    """The accuracy-control test's outlier classifier with its first Dense fused with a
    BatchNormalization and a ReLU: one input feature in [0, 300] that the model ignores makes the
    int8 input step too coarse for the features the label needs, so only keeping the first
    (fused) op in float brings the accuracy back."""
    import tf_keras

    from pipelines.reference_data import write_examples

    root = tmp_path_factory.mktemp("fused_outlier")
    rng = np.random.default_rng(0)
    tf_keras.utils.set_random_seed(1)
    layers = tf_keras.layers
    model = tf_keras.Sequential(
        [
            layers.Input((64,), name="image"),
            layers.Dense(32, name="hidden"),
            layers.BatchNormalization(name="hidden_bn"),
            layers.ReLU(name="hidden_relu"),
            layers.Dense(16, activation="relu", name="mid"),
            layers.Dense(4, activation="softmax", name="out"),
        ]
    )
    for split, n in (("train", 256), ("eval", 128)):
        x = rng.random((n, 64), dtype=np.float32)
        y = np.argmax(x[:, :4], axis=1).astype(np.int64)
        if split == "train":
            model.compile(tf_keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
            model.fit(np.where(np.arange(64) == 63, 0.0, x), y, epochs=40, verbose=0)
        x[:, 63] = rng.random(n, dtype=np.float32) * 300
        write_examples(str(root / "examples" / f"Split-{split}" / "data.gz"), x, y)
    kernel, bias = model.get_layer("hidden").get_weights()
    kernel[63] = 0.0
    model.get_layer("hidden").set_weights([kernel, bias])
    return model, str(root / "examples")


def test_records_and_accuracy_control_name_the_fused_layers(fused_outlier):
    from components.common.examples import DataConfig

    model, examples = fused_outlier
    fused = "hidden+hidden_bn+hidden_relu"
    config = QuantizerConfig(
        mode="full_int8", accuracy_control={"max_drop_points": 2.0, "max_evaluations": 6}
    )
    record = quantizer.quantize(model, examples, DataConfig(), config).record
    ac = record["accuracy_control"]
    assert ac["drop_before"] > 2.0  # the plain int8 flatbuffer was outside the budget
    assert ac["within_budget"] and ac["spared"] == [fused]
    assert quantizer.key_numbers(record)["layers_kept_float"] == [fused]
    assert record["float_ops"] == [f"FULLY_CONNECTED({fused})"]
    table = [e["layer"] for e in record["layer_sensitivity"]["layers"]]
    assert sorted(table) == sorted([fused, "mid", "out"])
    assert [op["layer"] for op in record["operators"] if op["op"] == "FULLY_CONNECTED"] == [
        fused,
        "mid",
        "out",
    ]


def test_qat_modes_refuse_a_joined_name(tiny):
    model, _ = tiny
    config = QuantizerConfig(mode="qat", exclude_layers=[FUSED])
    with pytest.raises(
        ConfigError, match=r"mode 'qat' excludes single layers: list them one by one"
    ):
        quantizer._check_layers(model, config)
    quantizer._check_layers(model, QuantizerConfig(mode="qat", exclude_layers=["conv2d_2"]))
