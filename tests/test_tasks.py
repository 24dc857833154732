"""Tasks and the one metrics module: inference, per-task metrics, feature matching by name."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from components.common import metrics
from components.common.errors import DataError, ModelInputError
from components.common.metrics import Task


def _dense(units, activation, inputs=4, name="out"):
    import tf_keras

    return tf_keras.Sequential(
        [
            tf_keras.layers.Input((inputs,), name="x"),
            tf_keras.layers.Dense(units, activation, name=name),
        ]
    )


def _label(kind="int64", length=1, binary=False):
    from components.common.tasks import LabelInfo

    return LabelInfo("label", kind, length, binary)


# ----------------------------------------------------------------------------- inference


@pytest.mark.parametrize(
    "units, activation, label, expected, logits",
    [
        (10, "softmax", _label(), "multiclass", False),
        (10, None, _label(), "multiclass", True),
        (1, "sigmoid", _label(binary=True), "binary", False),
        (1, None, _label(binary=True), "binary", True),
        (1, "sigmoid", _label("float", binary=True), "binary", False),
        (5, "sigmoid", _label(length=5, binary=True), "multilabel", False),
        (1, None, _label("float"), "regression", False),
        (3, None, _label("float", length=3), "regression", False),
        (1, None, _label(), "regression", False),  # int counts, not 0/1
    ],
)
def test_task_inferred_from_output_and_label(units, activation, label, expected, logits):
    from components.common import tasks

    task = tasks.infer(_dense(units, activation), label)
    assert task.kind == expected and task.from_logits is logits
    assert "inferred" in task.reason


def test_dense_task_from_per_position_outputs():
    import tf_keras

    from components.common import tasks

    inputs = tf_keras.layers.Input((4, 4, 1))
    model = tf_keras.Model(inputs, tf_keras.layers.Conv2D(3, 1, activation="softmax")(inputs))
    task = tasks.infer(model, _label(length=16))
    assert task.kind == "dense" and task.classes == 3 and task.label_shape == (4, 4)


def test_ambiguous_and_misfit_tasks_name_the_key():
    from components.common import tasks

    with pytest.raises(DataError, match="data.task"):
        tasks.infer(_dense(1, None), _label("float", binary=True))  # logit or regression?
    with pytest.raises(DataError, match="data.task: multiclass needs outputs"):
        tasks.infer(_dense(1, "sigmoid"), _label(binary=True), "multiclass")
    with pytest.raises(DataError, match="no task fits"):
        tasks.infer(_dense(10, "softmax"), _label(length=3))
    # The override wins when it fits.
    assert tasks.infer(_dense(1, None), _label("float", binary=True), "binary").kind == "binary"


def test_multi_output_model_is_a_clear_error():
    import tf_keras

    from components.common import tasks

    inputs = tf_keras.layers.Input((4,))
    model = tf_keras.Model(
        inputs, [tf_keras.layers.Dense(2)(inputs), tf_keras.layers.Dense(1)(inputs)]
    )
    with pytest.raises(ModelInputError, match="has 2 outputs"):
        tasks.infer(model, _label())


# ----------------------------------------------------------------------------- metrics


def test_multiclass_and_binary_metrics():
    multiclass = Task("multiclass", (3,))
    preds = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.6, 0.3, 0.1]])
    result = metrics.summarize(multiclass, preds, np.array([0, 1, 0, 0]))
    assert result["metric"] == "top1_accuracy" and result["top1_accuracy"] == 0.75
    binary = Task("binary", (1,), from_logits=True)
    logits = np.array([[2.0], [-1.0], [0.5], [-3.0]])
    result = metrics.summarize(binary, logits, np.array([1, 0, 0, 0]))
    assert result["accuracy"] == 0.75 and result["auc"] == 1.0  # ranks are perfect
    with pytest.raises(DataError, match="0/1 labels"):
        metrics.summarize(binary, logits, np.array([2, 0, 0, 0]))


def test_multilabel_regression_and_dense_metrics():
    multilabel = Task("multilabel", (2,))
    probs = np.array([[0.9, 0.2], [0.7, 0.6]])
    result = metrics.summarize(multilabel, probs, np.array([[1, 0], [0, 1]]))
    assert result["label_accuracy"] == 0.75
    assert result["micro_f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 0))
    regression = Task("regression", (1,))
    result = metrics.summarize(regression, np.array([[1.0], [3.0]]), np.array([2.0, 3.0]))
    assert result["mae"] == 0.5 and result["rmse"] == pytest.approx(math.sqrt(0.5))
    assert not regression.higher_is_better
    assert metrics.worse_by(regression, 0.5, 0.7) == pytest.approx(0.2)
    assert metrics.worse_by(multilabel, 0.9, 0.7) == pytest.approx(0.2)
    dense = Task("dense", (2, 2, 2))
    preds = np.zeros((1, 2, 2, 2))
    preds[0, :, :, 0] = [[0.9, 0.9], [0.1, 0.1]]
    preds[0, :, :, 1] = 1 - preds[0, :, :, 0]
    result = metrics.summarize(dense, preds, np.array([[0, 0, 1, 0]]))
    assert result["pixel_accuracy"] == 0.75
    # class 0: 2 right, 1 missed (IoU 2/3); class 1: 1 right, 1 false alarm (IoU 1/2)
    assert result["mean_iou"] == pytest.approx(np.mean([2 / 3, 1 / 2]))


def test_accumulator_streams_like_one_batch():
    rng = np.random.default_rng(0)
    task = Task("binary", (1,))
    preds, labels = rng.random((50, 1)), rng.integers(0, 2, 50)
    acc = metrics.Accumulator(task)
    for start in range(0, 50, 7):
        acc.add(preds[start : start + 7], labels[start : start + 7])
    assert acc.result() == pytest.approx(metrics.summarize(task, preds, labels))


# ----------------------------------------------------------------------------- feature matching


def _two_input_model():
    import tf_keras

    image = tf_keras.layers.Input((6,), name="image")
    aux = tf_keras.layers.Input((2,), name="aux")
    merged = tf_keras.layers.Concatenate()([image, aux])
    return tf_keras.Model([image, aux], tf_keras.layers.Dense(3, activation="softmax")(merged))


def _examples(tmp_path, features):
    from tests.zoo import write_split

    for split in ("train", "eval"):
        write_split(os.path.join(tmp_path, f"Split-{split}", "data.gz"), features)
    return str(tmp_path)


def test_features_matched_by_name_then_order_else_both_sides_listed(tmp_path):
    from components.common import examples as examples_lib
    from components.common.examples import DataConfig

    rng = np.random.default_rng(0)
    n = 8
    model = _two_input_model()
    named = _examples(
        tmp_path / "named",
        {"aux": rng.random((n, 2)), "image": rng.random((n, 6)), "label": rng.integers(0, 3, n)},
    )
    mapping = examples_lib.resolve_mapping(named, "train", DataConfig(), model)
    assert mapping.feature_keys == ("image", "aux") and mapping.matched_by == "name"
    keys = DataConfig(feature_keys=["aux", "image"])
    mapping = examples_lib.resolve_mapping(named, "train", keys, model)
    assert mapping.feature_keys == ("image", "aux") and mapping.matched_by == "name"
    x, y = examples_lib.load_arrays(named, "eval", DataConfig(), model)
    assert x[0].shape == (n, 6) and x[1].shape == (n, 2) and y.shape == (n,)

    other = _examples(
        tmp_path / "other",
        {"a": rng.random((n, 6)), "b": rng.random((n, 2)), "label": rng.integers(0, 3, n)},
    )
    mapping = examples_lib.resolve_mapping(other, "train", DataConfig(), model)
    assert mapping.feature_keys == ("a", "b") and mapping.matched_by == "order"
    with pytest.raises(DataError, match=r"image \(6,\).*aux \(2,\).*a \(6 float\), b \(2 float\)"):
        examples_lib.resolve_mapping(other, "train", DataConfig(feature_keys=["a"]), model)
    with pytest.raises(DataError, match="matched to inputs by order. Model inputs"):
        examples_lib.resolve_mapping(other, "train", DataConfig(feature_keys=["b", "a"]), model)


def test_labels_parsed_per_task(tmp_path):
    from components.common import examples as examples_lib
    from components.common.examples import DataConfig

    rng = np.random.default_rng(0)
    n = 8
    root = _examples(
        tmp_path, {"x": rng.random((n, 4)), "tags": rng.integers(0, 2, (n, 3)).astype(np.int64)}
    )
    model = _dense(3, "sigmoid")
    data = DataConfig(label_key="tags")
    assert examples_lib.resolve_task(root, data, model).kind == "multilabel"
    _, y = examples_lib.load_arrays(root, "eval", data, model)
    assert y.shape == (n, 3) and y.dtype == np.float32


# ----------------------------------------------------------------------------- fine-tuning loss


def test_loss_from_module_file_then_the_model_then_the_task(tmp_path):
    import tf_keras

    from components.common import model_io, training

    task = Task("binary", (1,))
    model = _dense(1, "sigmoid")
    model.compile("adam", loss=tf_keras.losses.BinaryCrossentropy(label_smoothing=0.1))
    own = str(tmp_path / "own")
    model.save(own, save_format="tf")
    args = training.compile_args(task, own)
    assert args.source == "model" and args.loss.get_config()["label_smoothing"] == 0.1
    # A step's output keeps its input's training config beside the SavedModel.
    out = str(tmp_path / "step")
    model_io.save_keras_model(_dense(1, "sigmoid"), out, args.training_config)
    assert training.compile_args(task, out).source == "model"
    plain = str(tmp_path / "plain")
    model_io.save_keras_model(_dense(1, "sigmoid"), plain)
    default = training.compile_args(task, plain)
    assert default.source == "task default"
    assert isinstance(default.loss, tf_keras.losses.BinaryCrossentropy)
    module = tmp_path / "losses.py"
    module.write_text(
        "import tf_keras\n"
        "def loss_fn():\n    return tf_keras.losses.Hinge()\n"
        "def metrics_fn():\n    return [tf_keras.metrics.AUC(name='auc')]\n"
    )
    user = training.compile_args(task, own, str(module))
    assert user.source == "module_file" and isinstance(user.loss, tf_keras.losses.Hinge)
    regression = training.compile_args(Task("regression", (1,)), plain)
    assert isinstance(regression.loss, tf_keras.losses.MeanSquaredError)
    assert training.task_metric_name(Task("regression", (1,))) == "mae"


def test_distillation_soft_term_per_task():
    import tensorflow as tf

    from components.distiller.student_trainer import distillation_loss

    student = tf.constant([[0.5], [-1.0]])
    teacher = tf.constant([[1.5], [-1.0]])
    labels = tf.constant([1.0, 0.0])
    regression = distillation_loss(labels, student, teacher, 1.0, 1.0, 2.0, task="regression")
    assert float(regression["soft_loss"]) == pytest.approx(0.5)  # mean of (1, 0) squared
    assert float(regression["label_loss"]) == pytest.approx((0.25 + 1.0) / 2)
    binary = distillation_loss(labels, student, teacher, 1.0, 1.0, 2.0, task="binary")
    same = distillation_loss(labels, teacher, teacher, 1.0, 1.0, 2.0, task="binary")
    assert float(binary["soft_loss"]) > 0 and float(same["soft_loss"]) == pytest.approx(0, abs=1e-6)
    dense = distillation_loss(
        tf.constant([[0, 1]]), tf.zeros((1, 2, 3)), tf.zeros((1, 2, 3)), 1.0, 1.0, 2.0, task="dense"
    )
    assert float(dense["label_loss"]) == pytest.approx(math.log(3), rel=1e-5)


# ----------------------------------------------------------------------------- small layers


def test_small_layers_are_left_out_with_the_reason():
    import tf_keras

    from components.clusterer import clusterer
    from components.clusterer.config import ClustererConfig
    from components.pruner import pruner
    from components.pruner.config import PrunerConfig

    model = tf_keras.Sequential(
        [
            tf_keras.layers.Input((8,), name="x"),
            tf_keras.layers.Dense(16, name="wide"),
            tf_keras.layers.Dense(1, name="head"),
        ]
    )
    wide = model.get_layer("wide")
    kernel = wide.kernel.numpy()
    kernel[:] = 0
    kernel.flat[:9] = np.arange(1, 10)  # 9 distinct non-zero weights, fewer than 16 clusters
    wide.kernel.assign(kernel)
    sparse = ClustererConfig(number_of_clusters=16, preserve_sparsity=True)
    selection = clusterer.plan(model, sparse)
    assert selection.selected == ["head"]  # 16 distinct weights: 15 non-zero clusters fit
    assert "9 distinct non-zero weights <= 15" in selection.skipped["wide"]
    with pytest.raises(Exception, match="no selected layer has more distinct weights"):
        clusterer.plan(model, ClustererConfig(number_of_clusters=64, preserve_sparsity=True))
    selection = clusterer.plan(model, ClustererConfig(number_of_clusters=12))
    assert "10 distinct weights <= 12" in selection.skipped["wide"]  # zero counts here
    selection = pruner.plan(model, PrunerConfig(target_sparsity=0.5))
    assert selection.selected == ["wide"]
    assert "16 prunable weights < 32" in selection.skipped["head"]
    named = PrunerConfig(target_sparsity=0.5, layers={"names": ["head"]})
    assert pruner.plan(model, named).selected == ["head"]
    inputs = tf_keras.layers.Input((8, 8, 16))
    depthwise = tf_keras.layers.DepthwiseConv2D(3, name="dw")(inputs)
    pointwise = tf_keras.layers.Conv2D(16, 1, name="pw")(depthwise)
    block = tf_keras.Model(inputs, pointwise)
    selection = pruner.plan(block, PrunerConfig(target_sparsity=0.5))
    assert selection.selected == ["pw"] and "DepthwiseConv2D" in selection.skipped["dw"]


# ----------------------------------------------------------------------------- failed steps


def test_failed_step_prints_one_line_and_the_log_path(tmp_path, capsys, monkeypatch):
    from pipelines import cli
    from pipelines.local import runner as local_runner

    def fail(*_args, **_kwargs):
        try:
            raise RuntimeError("deep inside") from DataError("labels must be class ids in [0, 3)")
        except RuntimeError as e:
            raise local_runner._step_failed(e, ["Evaluator"], str(tmp_path)) from e

    monkeypatch.setattr(local_runner, "run_local", fail)
    config = tmp_path / "c.yaml"
    config.write_text("pipeline_name: x\n")
    argv = ["run", "--model", "m", "--examples", "e", "--config", str(config)]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "tfxopt: error: Evaluator: labels must be class ids in [0, 3)" in err
    assert local_runner.ERROR_LOG in err and "Traceback" not in err
    assert "Traceback" in (tmp_path / local_runner.ERROR_LOG).read_text()
    assert cli.main(["-v", *argv]) == 1
    assert "Traceback" in capsys.readouterr().err


# ----------------------------------------------------------------------------- gate per task


def test_evaluator_task_moves_to_data_task_and_rules_must_fit():
    from components.evaluator.config import EvaluatorConfig
    from pipelines.config import PipelineConfig

    config = PipelineConfig.parse(
        {"evaluator": {"task": "regression", "rules": {"max_error_increase": 0.1}}}
    )
    assert config.data.task == "regression"
    assert PipelineConfig.parse({"evaluator": {"task": "classification"}}).data.task == "auto"
    gate = EvaluatorConfig.parse({"rules": {"max_accuracy_drop_points": 2.0}})
    assert gate.rule_problems("dense") == []
    assert "does not fit task regression" in gate.rule_problems("regression")[0]


def test_score_drop_interval_for_fractional_outcomes():
    from components.evaluator import paired, rules
    from components.evaluator.config import EvaluatorConfig

    config = EvaluatorConfig.parse(
        {
            "task": "dense",
            "rules": {"max_accuracy_drop_points": 2.0},
            "confidence": {"resamples": 500},
        }
    )
    rng = np.random.default_rng(0)
    base = rng.uniform(0.8, 1.0, 200)
    cand = base - 0.05 + rng.normal(0, 0.01, 200)
    comparison = paired.score_comparison(base, cand, float(base.mean()), config)
    lo, hi = comparison["interval"]["drop_points"]
    assert lo <= comparison["drop_points"] <= hi and 4 < comparison["drop_points"] < 6
    metrics = rules.derive_metrics(
        {"accuracy": {"pixel_accuracy": float(cand.mean())}},
        {"accuracy": {"pixel_accuracy": float(base.mean())}},
        comparison,
        None,
        config,
    )
    verdict = rules.judge_candidate(metrics, config)
    assert verdict["rules"][0]["passed"] is False and not verdict["eligible"]
    assert rules.objective_metric(config.model_copy(update={"objective": "most_accurate"})) == (
        "pixel_accuracy",
        -1,
    )


@pytest.mark.parametrize("builder", ["binary_sigmoid", "regression_linear"])
def test_distiller_trains_a_student_for_the_task(builder, tmp_path):
    from components.common.examples import DataConfig
    from components.distiller import distiller
    from components.distiller.config import DistillerConfig
    from tests import zoo

    case = zoo.BUILDERS[builder](str(tmp_path))
    data = DataConfig(**case.config.get("data", {}))
    config = DistillerConfig.parse(
        {"width_multiplier": 0.5, "fine_tuning": {"epochs": 2, "warmup_epochs": 0}}
    )
    result = distiller.distill(case.model_dir, case.examples_dir, data, config)
    record = result.record
    assert record["task"]["kind"] == case.task and record["metric"] == Task(case.task, (1,)).metric
    assert record["student"]["parameters"] < record["teacher"]["parameters"]
    assert math.isfinite(record["student"]["eval_accuracy"])
    assert math.isfinite(record["label_only"]["eval_accuracy"])
    history = record["fine_tuning"]["history"]
    assert history and "soft_loss" in history[0]
    # Saved with the teacher's output convention: a sigmoid unit stays a sigmoid unit.
    from components.common.tasks import final_activation

    expected = "sigmoid" if case.task == "binary" else "linear"
    assert final_activation(result.student) == expected
