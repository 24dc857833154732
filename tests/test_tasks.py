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
