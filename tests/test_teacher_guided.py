"""Teacher-guided fine-tuning (``fine_tuning.distillation``) for the Pruner, Clusterer and QAT.

The loss is checked against numbers worked out here in numpy; each technique is run with a teacher
and its output checked as the technique's own tests check it (zeros, distinct values, int8 ops).
"""

import json
import os
import textwrap

import numpy as np
import pytest

from components.common.errors import ConfigError, ModelInputError
from components.common.metrics import Task
from tests.small_inputs import script_result

TEACHER = {"alpha": 0.7, "temperature": 3.0}
FAST = {"batch_size": 8, "epochs": 2, "learning_rate": 1e-3}


def _model(outputs=10, activation="softmax", seed=1):
    import tf_keras

    tf_keras.utils.set_random_seed(seed)
    return tf_keras.Sequential(
        [
            tf_keras.layers.Input(shape=(64,), name="image"),
            tf_keras.layers.Dense(32, activation="relu", name="hidden"),
            tf_keras.layers.Dense(outputs, activation=activation, name="out"),
        ]
    )


def _dataset(n=64, batch_size=8, regression=False):
    """(batched dataset, x, y): x and y as tensors, as the loss sees them in training."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.random((n, 64), dtype=np.float32)
    y = x[:, :4].sum(axis=1, keepdims=True) if regression else np.argmax(x[:, :10], axis=1)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
    return ds, tf.constant(x), tf.constant(y)


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "section, data, match",
    [
        ("pruner", {"fine_tuning": {"distillation": {"alpha": 1.5}}}, "distillation.alpha"),
        ("pruner", {"fine_tuning": {"distillation": {"temperature": 0}}}, "temperature"),
        ("clusterer", {"fine_tuning": {"distillation": {"alpha": -0.1}}}, "distillation.alpha"),
        ("clusterer", {"fine_tuning": {"distillation": {"beta": 1}}}, "distillation.beta: unknown"),
        (
            "quantizer",
            {"mode": "full_int8", "fine_tuning": {"distillation": {}}},
            "distillation applies to the QAT modes",
        ),
        (
            "pruner",
            {"mode": "structured", "fine_tuning": {"distillation": {}}},
            "distillation applies to unstructured pruning",
        ),
        (
            "distiller",
            {"fine_tuning": {"distillation": {}}},
            "distiller.fine_tuning.distillation: unknown key",
        ),
    ],
)
def test_bad_teacher_settings_fail_naming_the_field(section, data, match):
    from components.clusterer.config import ClustererConfig
    from components.distiller.config import DistillerConfig
    from components.pruner.config import PrunerConfig
    from components.quantizer.config import QuantizerConfig

    classes = {
        "pruner": PrunerConfig,
        "clusterer": ClustererConfig,
        "quantizer": QuantizerConfig,
        "distiller": DistillerConfig,
    }
    with pytest.raises(ConfigError, match=match) as info:
        classes[section].parse(data, where=section)
    assert section in str(info.value)


def test_teacher_is_off_unless_configured_and_recorded_when_on():
    from components.clusterer.config import ClustererConfig
    from components.common import training
    from components.pruner.config import PrunerConfig
    from components.quantizer.config import QuantizerConfig

    assert PrunerConfig().fine_tuning.distillation is None
    assert ClustererConfig().fine_tuning.distillation is None
    assert training.teacher_record(QuantizerConfig(mode="qat").fine_tuning) == {"used": False}
    on = PrunerConfig.parse({"fine_tuning": {"distillation": TEACHER}}).fine_tuning
    assert training.teacher_record(on) == {
        "used": True,
        "model": "the step's input model",
        **TEACHER,
    }
    # Absent, the config serialises as before the setting existed (same exec properties, same
    # cached steps); present, it survives the JSON exec property.
    assert "distillation" not in PrunerConfig().model_dump_json()
    assert (
        PrunerConfig.parse(
            PrunerConfig.parse({"fine_tuning": {"distillation": TEACHER}}).model_dump_json()
        ).fine_tuning.distillation.alpha
        == TEACHER["alpha"]
    )
    # A plain FineTuneConfig is still accepted where a teacher may be configured.
    plain = QuantizerConfig(mode="qat", fine_tuning=training.FineTuneConfig(epochs=3))
    assert plain.fine_tuning.epochs == 3 and plain.fine_tuning.distillation is None


def test_pipeline_config_takes_the_teacher_settings_and_checks_them_at_build_time():
    from pipelines.config import PipelineConfig

    config = PipelineConfig.parse(
        {
            "pruner": {"fine_tuning": {"distillation": {"alpha": 0.3}}},
            "clusterer": {"fine_tuning": {"distillation": {}}},
            "quantization": [{"mode": "qat", "fine_tuning": {"distillation": TEACHER}}],
        }
    )
    assert config.pruner.fine_tuning.distillation.alpha == 0.3
    assert config.clusterer.fine_tuning.distillation.temperature == 2.0
    assert config.quantization[0].fine_tuning.distillation.model_dump() == TEACHER
    with pytest.raises(ConfigError, match="pruner.fine_tuning.distillation.alpha"):
        PipelineConfig.parse({"pruner": {"fine_tuning": {"distillation": {"alpha": 2}}}})


# --------------------------------------------------------------------------- the loss


def _softmax(z, axis=-1):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _guided(alpha, temperature, student, teacher, task):
    from components.common import distillation, training

    config = training.TeacherFineTuneConfig(
        distillation={"alpha": alpha, "temperature": temperature}
    )
    trainer = distillation.guided(student, teacher, config, task)
    training.compile_for_task(trainer, config, training.CompileArgs.default(task))
    return trainer


def test_loss_is_the_task_loss_at_alpha_0_and_the_soft_term_at_alpha_1():
    import tf_keras

    teacher, student = _model(seed=1), _model(seed=2)
    task = Task("multiclass", (10,), from_logits=False)
    _, x, y = _dataset(n=16)
    p_student, p_teacher = student(x).numpy(), teacher(x).numpy()

    plain = tf_keras.losses.SparseCategoricalCrossentropy()(y.numpy(), p_student).numpy()
    # KL of the tempered softmaxes, worked out here from the two models' probabilities.
    t = 3.0
    q_t = _softmax(np.log(p_teacher) / t)
    q_s = _softmax(np.log(p_student) / t)
    soft = float(np.mean(np.sum(q_t * (np.log(q_t) - np.log(q_s)), axis=-1))) * t * t

    losses = {}
    for alpha in (0.0, 1.0, 0.25):
        trainer = _guided(alpha, t, student, teacher, task)
        losses[alpha] = float(trainer.compute_loss(x, y, trainer(x, training=False)))
    assert losses[0.0] == pytest.approx(plain, rel=1e-5)
    assert losses[1.0] == pytest.approx(soft, rel=1e-3)
    assert losses[0.25] == pytest.approx(0.75 * plain + 0.25 * soft, rel=1e-3)
    assert soft > 0.01  # two different models: the teacher term is not trivially 0
    # The teacher is the guided model's own input model: a student equal to it has nothing to learn.
    same = _guided(1.0, t, teacher, teacher, task)
    assert float(same.compute_loss(x, y, same(x))) == pytest.approx(0.0, abs=1e-6)


def test_teacher_is_frozen_and_outside_the_trained_weights():
    teacher, student = _model(seed=1), _model(seed=2)
    task = Task("multiclass", (10,), from_logits=False)
    trainer = _guided(0.5, 2.0, student, teacher, task)
    ds, _, _ = _dataset()
    # Under the default strategy the teacher is the input model itself: it must not move.
    copy = trainer._teacher_fn
    assert copy is teacher
    before = [w.copy() for w in copy.get_weights()]
    student_before = [w.copy() for w in student.get_weights()]
    trainer.fit(ds, epochs=1, verbose=0)
    assert [v.ref() for v in trainer.trainable_variables] == [
        v.ref() for v in student.trainable_variables
    ]
    assert all(np.array_equal(a, b) for a, b in zip(before, copy.get_weights(), strict=True))
    assert not all(
        np.array_equal(a, b) for a, b in zip(student_before, student.get_weights(), strict=True)
    )
    assert teacher.trainable  # the caller's model is left as it was


# --------------------------------------------------------------------------- each technique


def test_pruning_with_a_teacher_reaches_the_sparsity_and_records_it(tmp_path, tiny_examples):
    from components.common import model_io
    from components.common.examples import DataConfig
    from components.pruner import pruner
    from components.pruner.config import PrunerConfig

    model_uri = str(tmp_path / "in")
    model_io.save_keras_model(_model(), model_uri)
    config = PrunerConfig.parse(
        {
            "target_sparsity": 0.75,
            "schedule": {"frequency_steps": 2},
            "fine_tuning": {**FAST, "early_stopping_patience": 1, "distillation": TEACHER},
        }
    )
    out = str(tmp_path / "out")
    record = pruner.run(model_uri, tiny_examples, out, config, DataConfig())

    assert record["fine_tuning"]["teacher"] == {
        "used": True,
        "model": "the step's input model",
        **TEACHER,
    }
    pruned = model_io.load_keras_model(out)
    for name in ("hidden", "out"):
        kernel = pruned.get_layer(name).kernel.numpy()
        assert abs(1 - np.count_nonzero(kernel) / kernel.size - 0.75) < 0.01
    with open(os.path.join(out, pruner.HISTORY_FILE)) as f:
        history = json.load(f)
    # The history keeps the task metric early stopping watches, and the teacher's term.
    assert {"accuracy", "val_accuracy", "teacher_loss", "val_teacher_loss"} <= set(history[-1])
    assert all(np.isfinite(epoch["teacher_loss"]) for epoch in history)


def test_clustering_with_a_teacher_bounds_the_distinct_values():
    from components.clusterer import clusterer
    from components.clusterer.config import ClustererConfig

    ds, _, _ = _dataset()
    config = ClustererConfig.parse(
        {"number_of_clusters": 8, "fine_tuning": {**FAST, "distillation": TEACHER}}
    )
    clustered, record, history = clusterer.cluster_model(_model(), ds, ds, config)
    assert record["fine_tuning"]["teacher"]["used"] is True
    for name in ("hidden", "out"):
        assert np.unique(clustered.get_layer(name).kernel.numpy()).size <= 8
    assert len(history) == 2 and "teacher_loss" in history[-1]
    assert not any("cluster" in type(layer).__name__.lower() for layer in clustered.layers)


def test_qat_with_a_teacher_gives_an_int8_flatbuffer(tmp_path, tiny_examples):
    import tf_keras

    from components.common.examples import DataConfig
    from components.quantizer import quantizer
    from components.quantizer.config import QuantizerConfig

    config = QuantizerConfig.parse(
        {"mode": "qat", "fine_tuning": {**FAST, "epochs": 1, "distillation": TEACHER}}
    )
    result = quantizer.quantize(_model(), tiny_examples, DataConfig(), config)
    numbers = quantizer.key_numbers(result.record)
    assert result.record["fine_tuning"]["teacher"]["alpha"] == TEACHER["alpha"]
    assert "teacher_loss" in result.record["fine_tuning"]["history"][-1]
    # An integer flatbuffer that answers as its Keras model does: no op left in float, and the
    # same class on most eval examples (verification now judges by agreement and mean difference).
    assert numbers["float_op_count"] == 0, result.record["float_ops"]
    assert numbers["verify_agreement"] >= 0.9, numbers
    assert [type(layer) for layer in result.serving_model.layers] == [tf_keras.layers.Dense] * 2


def test_a_regression_model_is_guided_by_its_teacher():
    from components.common import training
    from components.pruner import pruner
    from components.pruner.config import PrunerConfig

    ds, _, _ = _dataset(regression=True)
    task = Task("regression", (1,), from_logits=False)
    config = PrunerConfig.parse(
        {"schedule": {"frequency_steps": 2}, "fine_tuning": {**FAST, "distillation": TEACHER}}
    )
    args = training.CompileArgs.default(task)
    model = _model(outputs=1, activation=None)
    pruned, record, history = pruner.prune_model(model, ds, ds, config, 8, args)
    assert record["metric"] == task.metric and record["fine_tuning"]["teacher"]["used"]
    assert all(np.isfinite(epoch["teacher_loss"]) for epoch in history)
    # Regression's soft term is the MSE to the teacher's outputs (no temperature).
    _, x, y = _dataset(regression=True)
    trainer = _guided(1.0, 3.0, pruned, model, task)
    expected = float(np.mean((pruned(x).numpy() - model(x).numpy()) ** 2))
    assert expected > 0  # fine-tuning moved the student away from its teacher
    assert float(trainer.compute_loss(x, y, trainer(x))) == pytest.approx(expected, rel=1e-4)


def test_a_model_with_two_outputs_is_refused_before_training(tmp_path, tiny_examples):
    import tf_keras

    from components.common import model_io
    from components.common.examples import DataConfig
    from components.pruner import pruner
    from components.pruner.config import PrunerConfig

    inputs = tf_keras.Input((64,), name="image")
    hidden = tf_keras.layers.Dense(32, activation="relu", name="hidden")(inputs)
    heads = [tf_keras.layers.Dense(10, name=n)(hidden) for n in ("a", "b")]
    model_uri = str(tmp_path / "two")
    model_io.save_keras_model(tf_keras.Model(inputs, heads), model_uri)
    config = PrunerConfig.parse({"fine_tuning": {**FAST, "distillation": TEACHER}})
    out = tmp_path / "out"
    with pytest.raises(ModelInputError, match="2 outputs"):
        pruner.run(model_uri, tiny_examples, str(out), config, DataConfig())
    assert not out.exists() or not os.listdir(out)


MIRRORED = textwrap.dedent(
    """
    import json

    import components  # noqa: F401 - pins tf_keras
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )

    import numpy as np
    import tf_keras

    from components.pruner import pruner
    from components.pruner.config import PrunerConfig

    tf_keras.utils.set_random_seed(1)
    model = tf_keras.Sequential([
        tf_keras.layers.Input((64,), name="image"),
        tf_keras.layers.Dense(32, activation="relu", name="hidden"),
        tf_keras.layers.Dense(10, activation="softmax", name="out"),
    ])
    rng = np.random.default_rng(0)
    x = rng.random((128, 64), dtype=np.float32)
    y = np.argmax(x[:, :10], axis=1)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    result = {}
    for strategy in ("mirrored", "multi_worker_mirrored"):  # multi-worker last: it owns the process
        config = PrunerConfig.parse({
            "target_sparsity": 0.75,
            "schedule": {"frequency_steps": 2},
            "fine_tuning": {"epochs": 2, "batch_size": 16, "learning_rate": 1e-3,
                            "strategy": strategy, "distillation": {"alpha": 0.5}},
        })
        pruned, record, history = pruner.prune_model(model, ds, ds, config, steps_per_epoch=8)
        kernel = pruned.get_layer("hidden").kernel.numpy()
        result[strategy] = {
            "replicas": record["fine_tuning"]["replicas"],
            "teacher": record["fine_tuning"]["teacher"]["used"],
            "sparsity": float(1 - np.count_nonzero(kernel) / kernel.size),
            "teacher_loss": history[-1]["teacher_loss"],
        }
    print("RESULT " + json.dumps(result))
    """
)


def test_teacher_guided_pruning_under_mirrored_strategies():
    result = script_result(MIRRORED)
    assert result["mirrored"]["replicas"] == 2
    for entry in result.values():
        assert entry["teacher"] is True
        assert abs(entry["sparsity"] - 0.75) < 0.01
        assert np.isfinite(entry["teacher_loss"])
