"""Distiller: the loss, the automatic student, errors before training, end-to-end runs."""

import json
import logging
import os

import numpy as np
import pytest

from components.common.errors import ConfigError, ModelInputError
from components.common.examples import DataConfig
from components.distiller.config import DistillerConfig
from tests.artifacts import model_artifact, run_model_step


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _count(layers_model):
    return int(layers_model.count_params())


@pytest.fixture
def tiny_teacher_uri(tmp_path, tiny_model):
    """The tiny classifier (softmax output) saved as a Model artifact."""
    from components.common import legacy_keras, model_io

    legacy_keras.skip_autograph_for_tf_keras()  # as distill() does; saves ~20 s on the first save

    uri = str(tmp_path / "teacher")
    model_io.save_keras_model(tiny_model, uri)
    return uri


def _quick(**overrides) -> DistillerConfig:
    data = {"fine_tuning": {"epochs": 1, "batch_size": 16, "warmup_epochs": 0}}
    for key, value in overrides.items():
        if key == "fine_tuning":
            data["fine_tuning"].update(value)
        else:
            data[key] = value
    return DistillerConfig.parse(data)


# ---------------------------------------------------------------------------------------------
# The loss
# ---------------------------------------------------------------------------------------------


def test_loss_matches_a_hand_computed_value():
    from components.distiller.student_trainer import distillation_loss

    labels = np.array([2, 0])
    student = np.array([[1.0, 0.5, 2.0], [0.2, -1.0, 0.3]], np.float32)
    teacher = np.array([[0.5, 0.0, 3.0], [2.0, -0.5, 0.0]], np.float32)
    s_feat = np.array([[1.0, 2.0], [0.0, -1.0]], np.float32)
    t_feat = np.array([[0.5, 2.5], [1.0, -1.0]], np.float32)
    alpha, beta, gamma, temperature = 0.3, 0.7, 0.2, 2.5

    ce = -np.mean(np.log(_softmax(student)[np.arange(2), labels]))
    p_t, p_s = _softmax(teacher / temperature), _softmax(student / temperature)
    kl = np.mean(np.sum(p_t * (np.log(p_t) - np.log(p_s)), axis=-1))
    feature = np.mean((s_feat - t_feat) ** 2)  # (0.25+0.25+1+0)/4 = 0.375
    expected = alpha * ce + beta * temperature**2 * kl + gamma * feature

    parts = distillation_loss(
        labels, student, teacher, alpha, beta, temperature, gamma, [(s_feat, t_feat)]
    )
    assert feature == pytest.approx(0.375)
    assert float(parts["label_loss"]) == pytest.approx(ce, rel=1e-5)
    assert float(parts["soft_loss"]) == pytest.approx(kl, rel=1e-5)
    assert float(parts["feature_loss"]) == pytest.approx(feature, rel=1e-6)
    assert float(parts["loss"]) == pytest.approx(expected, rel=1e-5)


def test_probabilities_turned_back_into_logits_give_the_same_soft_targets():
    from components.distiller.student_trainer import (
        distillation_loss,
        teacher_logits_from_probabilities,
    )

    rng = np.random.default_rng(0)
    teacher_logits = rng.normal(size=(4, 10)).astype(np.float32) * 3
    student_logits = rng.normal(size=(4, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 4)
    recovered = teacher_logits_from_probabilities(_softmax(teacher_logits))
    direct = distillation_loss(labels, student_logits, teacher_logits, 0.5, 0.5, 4.0)
    via_probs = distillation_loss(labels, student_logits, recovered, 0.5, 0.5, 4.0)
    assert float(via_probs["loss"]) == pytest.approx(float(direct["loss"]), rel=1e-5)
    # A probability of exactly 0 is clipped instead of giving -inf (NaN loss).
    clipped = teacher_logits_from_probabilities(np.array([[1.0, 0.0]], np.float32))
    assert np.all(np.isfinite(clipped.numpy()))


def test_warmup_cosine_schedule_shape():
    from components.common.training import warmup_cosine_schedule

    schedule = warmup_cosine_schedule(1e-2, total_steps=100, warmup_steps=10)
    assert float(schedule(0)) == pytest.approx(1e-3)
    assert float(schedule(10)) == pytest.approx(1e-2)
    assert float(schedule(55)) == pytest.approx(5e-3, rel=1e-3)  # half way down the cosine
    assert float(schedule(100)) == pytest.approx(0.0, abs=1e-9)
    no_warmup = warmup_cosine_schedule(1e-2, total_steps=10, final_learning_rate_fraction=0.1)
    assert float(no_warmup(0)) == pytest.approx(1e-2)
    assert float(no_warmup(10)) == pytest.approx(1e-3)


# ---------------------------------------------------------------------------------------------
# The automatic student
# ---------------------------------------------------------------------------------------------


def test_auto_student_of_the_digits_cnn_has_a_quarter_of_the_parameters():
    from components.distiller.student import build_auto_student
    from pipelines.reference_data import build_digits_cnn

    teacher = build_digits_cnn()
    student, report = build_auto_student(teacher, 0.5)
    # conv1 3*3*1*16+16, conv2 3*3*16*32+32, conv3 3*3*32*32+32, dense1 128*64+64, head 64*10+10
    expected = 160 + 4640 + 9248 + 8256 + 650
    assert _count(teacher) == 89_930
    assert _count(student) == expected
    assert _count(student) / _count(teacher) <= 0.30
    assert report.scaled_layers["conv1"] == {"filters": [32, 16]}
    assert report.kept_width_layers == ["predictions"]
    assert student.layers[-1].get_config()["activation"] == "softmax"
    assert student.output_shape == teacher.output_shape
    assert [w.shape for w in teacher.weights] != [w.shape for w in student.weights]
    # The teacher is untouched.
    assert teacher.get_layer("conv1").filters == 32


def test_auto_student_depth_drops_repeated_blocks_of_a_sequential_model():
    import tf_keras

    from components.distiller.student import build_auto_student

    layers = tf_keras.layers
    teacher = tf_keras.Sequential(
        [
            layers.Input(shape=(64,)),
            layers.Dense(32, activation="relu", name="d1"),
            layers.Dense(32, name="d2"),
            layers.BatchNormalization(name="bn2"),
            layers.ReLU(name="relu2"),
            layers.Dense(32, activation="relu", name="d3"),
            layers.Dense(16, activation="relu", name="d4"),
            layers.Dense(16, activation="relu", name="d5"),
            layers.Dense(10, activation="softmax", name="out"),
        ]
    )
    one, report = build_auto_student(teacher, 1.0, depth=1)
    names = [layer.name for layer in one.layers]
    # Runs of shape-preserving blocks: [d2+bn2+relu2, d3] and [d5]; the first of each is kept.
    assert report.dropped_blocks == [["d3"]]
    assert names == ["d1", "d2", "bn2", "relu2", "d4", "d5", "out"]
    zero, report = build_auto_student(teacher, 1.0, depth=0)
    assert [layer.name for layer in zero.layers] == ["d1", "d4", "out"]
    assert report.dropped_blocks == [["d2", "bn2", "relu2"], ["d3"], ["d5"]]
    assert zero(np.zeros((2, 64), np.float32)).shape == (2, 10)
    full, report = build_auto_student(teacher, 1.0)
    assert _count(full) == _count(teacher) and not report.dropped_blocks


def _residual_teacher(stem_conv: bool = True):
    import tf_keras

    layers = tf_keras.layers
    inputs = layers.Input(shape=(8, 8, 8), name="image")
    x = (
        layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inputs)
        if (stem_conv)
        else inputs
    )
    for i in range(3):
        y = layers.Conv2D(8, 3, padding="same", activation="relu", name=f"b{i}_conv1")(x)
        y = layers.Conv2D(8, 3, padding="same", name=f"b{i}_conv2")(y)
        y = layers.BatchNormalization(name=f"b{i}_bn")(y)
        x = layers.Add(name=f"b{i}_add")([x, y])
        x = layers.ReLU(name=f"b{i}_relu")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(5, name="logits")(x)
    return tf_keras.Model(inputs, outputs, name="resnet")


def test_auto_student_of_a_functional_resnet_drops_residual_blocks():
    from components.distiller.student import build_auto_student

    teacher = _residual_teacher()
    student, report = build_auto_student(teacher, 0.5, depth=1)
    assert report.dropped_blocks == [
        ["b1_conv1", "b1_conv2", "b1_bn", "b1_add", "b1_relu"],
        ["b2_conv1", "b2_conv2", "b2_bn", "b2_add", "b2_relu"],
    ]
    assert report.kept_blocks == [["b0_conv1", "b0_conv2", "b0_bn", "b0_add", "b0_relu"]]
    names = {layer.name for layer in student.layers}
    assert "b0_add" in names and "b1_add" not in names and "b2_conv1" not in names
    assert student.get_layer("stem").filters == 4
    assert student.get_layer("logits").units == 5
    assert student(np.zeros((2, 8, 8, 8), np.float32)).shape == (2, 5)
    # The kept block still adds the stem's output to its branch.
    assert student.get_layer("gap").input.name.startswith("b0_relu")


def test_width_scaling_keeps_widths_tied_to_an_unscaled_input_by_a_residual_add():
    from components.distiller.student import build_auto_student

    teacher = _residual_teacher(stem_conv=False)
    student, report = build_auto_student(teacher, 0.5)
    # b*_conv2 are added to the 8-channel input: they keep 8 filters; b*_conv1 are halved.
    assert student.get_layer("b0_conv2").filters == 8
    assert student.get_layer("b0_conv1").filters == 4
    assert "b2_conv2" in report.kept_width_layers
    assert student(np.zeros((1, 8, 8, 8), np.float32)).shape == (1, 5)


def test_training_copy_outputs_logits_with_the_same_weights(tiny_model):
    import tf_keras

    from components.distiller.student import training_copy

    x = np.random.default_rng(0).random((3, 64), dtype=np.float32)
    twin, shares = training_copy(tiny_model, outputs_probabilities=True)
    assert not shares
    np.testing.assert_allclose(_softmax(twin(x).numpy()), tiny_model(x).numpy(), atol=1e-6)
    assert tiny_model.layers[-1].get_config()["activation"] == "softmax"  # original untouched

    softmax_layer = tf_keras.Sequential(
        [tf_keras.layers.Input((64,)), tf_keras.layers.Dense(10), tf_keras.layers.Softmax()]
    )
    twin, _ = training_copy(softmax_layer, outputs_probabilities=True)
    np.testing.assert_allclose(_softmax(twin(x).numpy()), softmax_layer(x).numpy(), atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Errors before training
# ---------------------------------------------------------------------------------------------


def test_width_multiplier_leaving_zero_units_is_a_config_error(tiny_model):
    from components.distiller.student import build_auto_student

    with pytest.raises(ConfigError, match=r"'hidden'.*0.*width_multiplier of at least 0\.0312"):
        build_auto_student(tiny_model, 0.01)


@pytest.mark.parametrize("temperature", [0, -1.5])
def test_temperature_must_be_positive(temperature):
    with pytest.raises(ConfigError, match=r"distiller\.temperature: .*greater than 0"):
        DistillerConfig.parse({"temperature": temperature}, where="distiller")


@pytest.mark.parametrize(
    "config, message",
    [
        ({"gamma": 0.5}, "gamma > 0 needs feature_pairs"),
        ({"feature_pairs": [{"teacher_layer": "x"}]}, "gamma is 0"),
        ({"alpha": 0, "beta": 0}, "nothing to train"),
        ({"module_file": "s.py", "width_multiplier": 0.5}, "module_file builds the student"),
        ({"fine_tuning": {"warmup": 1}}, r"fine_tuning\.warmup: unknown key"),
        ({"training": {}, "fine_tuning": {}}, "both 'training' and 'fine_tuning'"),
    ],
)
def test_inconsistent_configs_fail_with_the_field(config, message):
    with pytest.raises(ConfigError, match=message):
        DistillerConfig.parse(config, where="distiller")


def test_config_survives_its_json_exec_property():
    from components.common.component_base import config_json

    text = config_json({"module_file": "student.py"}, DistillerConfig, "distiller")
    assert DistillerConfig.parse(text).module_file == "student.py"
    assert (
        DistillerConfig.parse(config_json({}, DistillerConfig, "d")).student_width_multiplier == 0.5
    )


def test_module_file_without_build_student_fails_before_loading_anything(tmp_path):
    from components.distiller import distiller

    module = tmp_path / "student.py"
    module.write_text("def build(teacher, input_spec):\n    return None\n")
    config = _quick(module_file=str(module))
    with pytest.raises(ConfigError, match=r"defines no build_student\(teacher, input_spec\)"):
        distiller.distill(
            str(tmp_path / "nowhere"), str(tmp_path / "nowhere"), DataConfig(), config
        )
    with pytest.raises(ConfigError, match="does not exist"):
        distiller.check_before_loading(_quick(module_file=str(tmp_path / "missing.py")))


def test_student_with_the_wrong_output_shape_fails_before_training(
    tmp_path, tiny_teacher_uri, tiny_examples
):
    from components.distiller import distiller

    module = tmp_path / "student.py"
    module.write_text(
        "import tf_keras\n"
        "def build_student(teacher, input_spec):\n"
        "    inputs = tf_keras.Input(type_spec=input_spec)\n"
        "    return tf_keras.Model(inputs, tf_keras.layers.Dense(5)(inputs))\n"
    )
    config = _quick(module_file=str(module))
    with pytest.raises(ModelInputError, match=r"student outputs \(5,\).*teacher outputs \(10,\)"):
        distiller.distill(tiny_teacher_uri, tiny_examples, DataConfig(), config)


def test_unknown_feature_layer_fails_before_training(tiny_teacher_uri, tiny_examples):
    from components.distiller import distiller

    config = _quick(gamma=1.0, feature_pairs=[{"teacher_layer": "hiden"}])
    with pytest.raises(ConfigError, match=r"the teacher has no layer 'hiden'.*'hidden'"):
        distiller.distill(tiny_teacher_uri, tiny_examples, DataConfig(), config)


def test_mixed_precision_is_ignored_on_cpu_with_a_log_line(caplog):
    import tensorflow as tf

    from components.distiller.distiller import use_mixed_precision

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is present: mixed precision applies")
    with caplog.at_level(logging.WARNING):
        assert use_mixed_precision(True) is False
    assert "mixed_precision=true is ignored: no GPU" in caplog.text
    assert use_mixed_precision(False) is False


# ---------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------


def test_feature_hints_with_a_projection_and_a_module_student(
    tmp_path, tiny_teacher_uri, tiny_examples
):
    from components.distiller import distiller

    module = tmp_path / "student.py"
    module.write_text(
        "import tf_keras\n"
        "def build_student(teacher, input_spec):\n"
        "    inputs = tf_keras.Input(type_spec=input_spec)\n"
        "    x = tf_keras.layers.Dense(4, activation='relu', name='narrow')(inputs)\n"
        "    return tf_keras.Model(inputs, tf_keras.layers.Dense(10, name='logits')(x))\n"
    )
    config = _quick(
        module_file=str(module),
        gamma=1.0,
        feature_pairs=[{"teacher_layer": "hidden", "student_layer": "narrow"}],
        label_only_baseline=False,
        fine_tuning={"epochs": 2},
    )
    result = distiller.distill(tiny_teacher_uri, tiny_examples, DataConfig(), config)
    record = result.record
    pair = record["loss"]["feature_pairs"][0]
    assert pair["teacher_shape"] == (16,) and pair["student_shape"] == (4,)
    assert record["fine_tuning"]["history"][-1]["feature_loss"] > 0
    assert record["label_only"] is None and record["distillation_gain"] is None
    assert record["student"]["parameters"] == 64 * 4 + 4 + 4 * 10 + 10
    # The module's student outputs logits; the saved student keeps the teacher's softmax.
    assert record["student"]["outputs"] == "probabilities"
    probabilities = result.student(np.ones((2, 64), np.float32)).numpy()
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, rtol=1e-5)


def test_executor_writes_the_student_record_and_properties(
    tmp_path, tiny_teacher_uri, tiny_examples, eval_top1
):
    import tf_keras

    from components.common import model_io
    from components.common.component_base import config_json, data_config_json
    from components.common.keys import DISTILLATION_RECORD_FILE as RECORD_FILE
    from components.distiller.executor import Executor

    teacher = model_artifact(tiny_teacher_uri)
    # The mirrored strategy (one replica here) exercises the tf.distribute code path.
    config = {
        "width_multiplier": 0.5,
        "fine_tuning": {"epochs": 2, "batch_size": 16, "strategy": "mirrored"},
    }
    config = config_json(config, DistillerConfig, "distiller")
    data = data_config_json({"feature_keys": ["image"]})
    output = run_model_step(Executor, teacher, tiny_examples, tmp_path / "student", config, data)

    student = tf_keras.models.load_model(model_io.serving_model_dir(output.uri), compile=False)
    assert student.get_layer("hidden").units == 8
    assert student(np.zeros((1, 64), np.float32)).shape == (1, 10)
    with open(os.path.join(output.uri, RECORD_FILE)) as f:
        record = json.load(f)
    assert record["student"]["parameters"] == 64 * 8 + 8 + 8 * 10 + 10
    assert record["teacher"]["parameters"] == 64 * 16 + 16 + 16 * 10 + 10
    assert record["label_only"]["epochs_run"] == record["fine_tuning"]["epochs_run"] == 2
    assert output.get_int_custom_property("student_parameters") == 610
    assert output.get_int_custom_property("teacher_parameters") == 1210
    accuracy = output.get_float_custom_property("metric_after")
    assert accuracy == pytest.approx(record["student"]["eval_accuracy"])
    assert output.get_int_custom_property("input_model_artifact_id") == teacher.id
    # the student's and the teacher's accuracies are those of the saved models on the eval split
    assert accuracy == pytest.approx(eval_top1(student, tiny_examples), abs=1e-9)
    teacher_model = tf_keras.models.load_model(
        model_io.serving_model_dir(tiny_teacher_uri), compile=False
    )
    assert record["teacher"]["eval_accuracy"] == pytest.approx(
        eval_top1(teacher_model, tiny_examples), abs=1e-9
    )
    assert output.get_float_custom_property("temperature") == 2.0
    assert output.has_custom_property("label_only_metric")
    # The teacher artifact is unchanged.
    assert sorted(os.listdir(tiny_teacher_uri)) == ["Format-Serving"]


def test_executor_writes_nothing_when_the_student_is_invalid(
    tmp_path, tiny_teacher_uri, tiny_examples
):
    from components.common.component_base import config_json, data_config_json
    from components.distiller.executor import Executor

    out = tmp_path / "student"
    config = config_json({"width_multiplier": 0.02}, DistillerConfig, "d")
    with pytest.raises(ConfigError, match="hidden"):
        run_model_step(
            Executor, tiny_teacher_uri, tiny_examples, out, config, data_config_json(None)
        )
    assert not os.path.exists(out) or not os.listdir(out)


def test_distilling_the_reference_digits_model(tmp_path, reference_data):
    """Width 0.5 on the digits CNN, a few epochs: the saved student loads, runs and is scored."""
    import tf_keras

    from components.common import model_io
    from components.distiller import distiller

    config = DistillerConfig.parse({"width_multiplier": 0.5, "fine_tuning": {"epochs": 4}})
    result = distiller.distill(
        reference_data["model"], reference_data["examples"], DataConfig(), config
    )
    record = result.record
    path = model_io.save_keras_model(result.student, str(tmp_path / "student"))
    student = tf_keras.models.load_model(path, compile=False)
    assert student.count_params() == record["student"]["parameters"] == 22_954
    assert record["parameter_ratio"] <= 0.30
    assert record["teacher"]["outputs"] == record["student"]["outputs"] == "probabilities"
    probabilities = student(np.zeros((2, 64), np.float32)).numpy()
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, rtol=1e-5)
    assert record["eval_examples"] == 360
    assert record["teacher"]["eval_accuracy"] == pytest.approx(
        reference_data["eval_accuracy"], abs=1e-6
    )
    # Four epochs are enough for a usable student; the figures are what the report shows.
    assert record["student"]["eval_accuracy"] > 0.85
    assert record["label_only"]["epochs_run"] == record["fine_tuning"]["epochs_run"] == 4
    assert record["metric_worse_by"] == pytest.approx(
        record["teacher"]["eval_accuracy"] - record["student"]["eval_accuracy"]
    )
    numbers = distiller.key_numbers(record)
    assert numbers["label_only_metric"] == record["label_only"]["eval_accuracy"]
    assert (numbers["metric_before"], numbers["metric_after"]) == (
        record["teacher"]["eval_accuracy"],
        record["student"]["eval_accuracy"],
    )


def test_mixed_precision_mechanics_run_on_any_device(tiny_model):
    """What distill() does on a GPU when asked for mixed_float16: float16 layers, float32 logits,
    a loss-scaled optimizer; run here for a few steps on whatever device there is."""
    if os.environ.get("ONEDNN_MAX_CPU_ISA") and os.environ.get("TF_ENABLE_ONEDNN_OPTS") != "0":
        # TensorFlow picks oneDNN's float16 kernels from the processor's own flags (AVX512-FP16
        # here); capped below them, oneDNN has no implementation and aborts the process. A real
        # AVX2-only processor never asks for them, so this is an artifact of the cap alone.
        pytest.skip(
            "float16 training under an ONEDNN_MAX_CPU_ISA cap aborts in oneDNN (emulation only)"
        )
    import tensorflow as tf
    import tf_keras

    from components.distiller.student import build_auto_student, training_copy
    from components.distiller.student_trainer import DistillationModel

    student, _ = build_auto_student(tiny_model, 0.5)
    twin, shares = training_copy(student, outputs_probabilities=True, mixed_precision=True)
    assert not shares
    assert twin.get_layer("hidden").compute_dtype == "float16"
    assert twin.get_layer("out").compute_dtype == "float32"
    distiller = DistillationModel(
        twin, tiny_model, teacher_outputs_probabilities=True, alpha=0.5, beta=0.5, temperature=2.0
    )
    distiller.compile(
        optimizer=tf_keras.mixed_precision.LossScaleOptimizer(tf_keras.optimizers.Adam(1e-2))
    )
    rng = np.random.default_rng(0)
    data = tf.data.Dataset.from_tensor_slices(
        (rng.random((32, 64), dtype=np.float32), rng.integers(0, 10, 32))
    ).batch(8)
    before = [w.copy() for w in twin.get_weights()]
    history = distiller.fit(data, epochs=2, verbose=0).history
    assert np.isfinite(history["loss"]).all()
    assert any(not np.array_equal(a, b) for a, b in zip(before, twin.get_weights(), strict=True))
    assert tiny_model.trainable is False and twin.output.dtype == tf.float32


def test_component_validates_its_config_when_the_pipeline_is_built():
    from tfx import types
    from tfx.types import standard_artifacts

    from components.distiller.component import Distiller

    teacher = types.Channel(type=standard_artifacts.Model)
    examples = types.Channel(type=standard_artifacts.Examples)
    with pytest.raises(ConfigError, match=r"distiller\.temperature"):
        Distiller(model=teacher, examples=examples, config={"temperature": 0})
    component = Distiller(model=teacher, examples=examples, config={"depth": 1})
    assert DistillerConfig.parse(component.exec_properties["config"]).depth == 1
    assert component.outputs["optimized_model"].type == standard_artifacts.Model
    assert component.inputs["model"] is teacher


def test_old_names_still_work_for_one_release_with_a_warning():
    from tfx import types
    from tfx.types import standard_artifacts

    from components.distiller.component import Distiller

    teacher = types.Channel(type=standard_artifacts.Model)
    examples = types.Channel(type=standard_artifacts.Examples)
    with pytest.warns(DeprecationWarning, match="model="):
        component = Distiller(teacher=teacher, examples=examples)
    assert component.inputs["model"] is teacher
    with pytest.raises(TypeError, match="model= only"):
        Distiller(model=teacher, teacher=teacher, examples=examples)
    with pytest.warns(DeprecationWarning, match="'training' is now 'fine_tuning'"):
        config = DistillerConfig.parse({"training": {"epochs": 3}})
    assert config.fine_tuning.epochs == 3
