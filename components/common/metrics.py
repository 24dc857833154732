"""The one metrics module: per task, the primary metric, its direction, its per-example values and
the secondary figures every step reports (profiler, quantizer, fine-tuning, evaluator, report).

Tasks (see :mod:`components.common.tasks` for how one is inferred):

| task | outputs | labels | primary metric | also |
|---|---|---|---|---|
| ``multiclass`` | (C,) softmax or logits, C >= 2 | one class id | ``top1_accuracy`` | |
| ``binary`` | (1,) sigmoid or logit | 0/1 | ``accuracy`` (threshold 0.5) | ``auc`` |
| ``multilabel`` | (K,) sigmoids or logits | K 0/1 values | ``label_accuracy`` (mean over labels) | ``micro_f1`` |
| ``regression`` | (K,) values | K floats | ``mae`` (lower is better) | ``rmse`` |
| ``dense`` | (..., C) per position | one class id per position | ``pixel_accuracy`` | ``mean_iou`` |

Every primary metric is a mean of per-example values (correct 0/1, the fraction of labels or
positions right, an absolute error), so one paired bootstrap over examples gives its drop's
interval for every task. Plain numpy: no TensorFlow here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from components.common.errors import DataError

TASKS = ("multiclass", "binary", "multilabel", "regression", "dense")
PRIMARY_METRIC = {
    "multiclass": "top1_accuracy",
    "binary": "accuracy",
    "multilabel": "label_accuracy",
    "regression": "mae",
    "dense": "pixel_accuracy",
}
SECONDARY_METRICS = {
    "multiclass": (),
    "binary": ("auc",),
    "multilabel": ("micro_f1",),
    "regression": ("rmse",),
    "dense": ("mean_iou",),
}
# How the primary metric reads in reports: (label, unit); accuracies are shown as percentages.
METRIC_LABELS = {
    "top1_accuracy": "top-1 accuracy",
    "accuracy": "accuracy",
    "label_accuracy": "label accuracy",
    "pixel_accuracy": "pixel accuracy",
    "mae": "MAE",
    "rmse": "RMSE",
}


@dataclass(frozen=True)
class Task:
    """What a model predicts and how it is scored.

    Attributes:
      kind: one of :data:`TASKS`.
      output_shape: the model's per-example output shape, e.g. (10,), (1,), (16, 16, 2).
      from_logits: the outputs are logits (no final softmax/sigmoid).
      reason: why this task (inferred from ..., or set by data.task).
    """

    kind: str
    output_shape: tuple[int, ...]
    from_logits: bool = False
    reason: str = ""

    def __post_init__(self):
        if self.kind not in TASKS:
            raise ValueError(f"unknown task {self.kind!r}; one of {TASKS}")

    @property
    def metric(self) -> str:
        """Name of the primary metric."""
        return PRIMARY_METRIC[self.kind]

    @property
    def higher_is_better(self) -> bool:
        return self.kind != "regression"

    @property
    def classes(self) -> int:
        """Scores per position (the last output dimension)."""
        return int(self.output_shape[-1]) if self.output_shape else 1

    @property
    def label_shape(self) -> tuple[int, ...]:
        """Per-example shape labels are reshaped to, so the Keras loss takes them as they are."""
        if self.kind == "multiclass" or (
            self.kind in ("binary", "regression") and math.prod(self.output_shape) == 1
        ):
            return ()
        if self.kind == "dense":
            spatial = tuple(self.output_shape[:-1])
            return (*spatial, 1) if self.classes == 1 else spatial
        return tuple(self.output_shape)

    @property
    def float_labels(self) -> bool:
        """Labels are fed as float32 (binary cross-entropy, regression) rather than int ids."""
        return self.kind in ("binary", "multilabel", "regression") or (
            self.kind == "dense" and self.classes == 1
        )

    def to_dict(self) -> dict:
        return {**asdict(self), "output_shape": list(self.output_shape), "metric": self.metric}

    @classmethod
    def from_dict(cls, data: dict) -> Task:
        return cls(
            data["kind"],
            tuple(data["output_shape"]),
            bool(data.get("from_logits")),
            data.get("reason", ""),
        )

    def describe(self) -> str:
        """One line for the run header."""
        scores = "logits" if self.from_logits else "probabilities"
        if self.kind == "regression":
            scores = "values"
        return (
            f"{self.kind} (outputs {tuple(self.output_shape)} {scores}; metric "
            f"{self.metric}, {'higher' if self.higher_is_better else 'lower'} is better)"
            + (f" - {self.reason}" if self.reason else "")
        )


def metric_label(name: str | None) -> str:
    """``top-1 accuracy``, ``MAE``, ... for a metric name."""
    return METRIC_LABELS.get(name or "", name or "metric")


def is_accuracy(name: str | None) -> bool:
    """True for the accuracy-like metrics (fractions, higher is better, shown in %)."""
    return name in (
        "top1_accuracy",
        "accuracy",
        "label_accuracy",
        "pixel_accuracy",
        "micro_f1",
        "auc",
        "mean_iou",
    )


def worse_by(task: Task, before: float | None, after: float | None) -> float | None:
    """How much worse ``after`` is than ``before`` (positive: worse), whatever the direction."""
    if before is None or after is None:
        return None
    return (before - after) if task.higher_is_better else (after - before)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def _probabilities(task: Task, preds: np.ndarray) -> np.ndarray:
    return _sigmoid(preds) if task.from_logits else preds


def _flat(task: Task, preds, labels) -> tuple[np.ndarray, np.ndarray]:
    """Predictions (n, P, C) or (n, K) and labels (n, P) / (n, K), checked against the task."""
    preds = np.asarray(preds, dtype=np.float64)
    labels = np.asarray(labels)
    n = preds.shape[0]
    if labels.shape[0] != n:
        raise DataError(f"{labels.shape[0]} labels for {n} predictions")
    labels = labels.reshape(n, -1)
    if task.kind == "multiclass":
        preds = preds.reshape(n, -1)
        if preds.shape[1] < 2 or labels.shape[1] != 1:
            raise DataError(
                f"task multiclass needs class scores (C >= 2) and one class id per example; the "
                f"model gives {preds.shape[1:]} and the label holds {labels.shape[1]} value(s). "
                "Set data.task to the model's task."
            )
        return preds, labels[:, 0]
    if task.kind == "dense":
        classes = task.classes
        preds = preds.reshape(n, -1, classes)
        if labels.shape[1] != preds.shape[1]:
            raise DataError(
                f"task dense needs one label per output position: the model has "
                f"{preds.shape[1]} positions, the label holds {labels.shape[1]} value(s)."
            )
        return preds, labels
    preds = preds.reshape(n, -1)
    if labels.shape[1] != preds.shape[1]:
        raise DataError(
            f"task {task.kind} needs one label per output value: the model gives "
            f"{preds.shape[1]}, the label holds {labels.shape[1]}. Set data.task."
        )
    return preds, labels


def _class_ids(task: Task, preds: np.ndarray) -> np.ndarray:
    if preds.shape[-1] == 1:
        threshold = 0.0 if task.from_logits else 0.5
        return (preds[..., 0] >= threshold).astype(np.int64)
    return np.argmax(preds, axis=-1)


def _check_ids(labels: np.ndarray, classes: int) -> np.ndarray:
    ids = labels.astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= classes):
        raise DataError(
            f"labels must be class ids in [0, {classes}) for a model with {classes} scores per "
            f"position; found {int(ids.min())}..{int(ids.max())}."
        )
    return ids


def per_example(task: Task, preds, labels) -> dict[str, np.ndarray]:
    """Per-example values: ``score`` (the primary metric's per-example value) and extras.

    For regression ``score`` is the absolute error (mean over outputs) and ``sq_err`` the squared
    error; for the others ``score`` is the fraction right (0/1 for multiclass and binary).
    """
    preds, labels = _flat(task, preds, labels)
    if task.kind == "regression":
        error = preds - labels.astype(np.float64)
        return {"score": np.mean(np.abs(error), axis=1), "sq_err": np.mean(error**2, axis=1)}
    if task.kind == "multiclass":
        ids = _check_ids(labels, preds.shape[1])
        return {"score": (np.argmax(preds, axis=1) == ids).astype(np.float64)}
    if task.kind == "dense":
        ids = _check_ids(labels, max(task.classes, 2))
        return {"score": np.mean(_class_ids(task, preds) == ids, axis=1)}
    truth = _binary_labels(labels)
    decided = (_probabilities(task, preds) >= 0.5).astype(np.int64)
    return {"score": np.mean(decided == truth, axis=1)}


def _binary_labels(labels: np.ndarray) -> np.ndarray:
    values = labels.astype(np.float64)
    if values.size and not np.all((values == 0) | (values == 1)):
        raise DataError(
            "binary and multilabel tasks need 0/1 labels; found values like "
            f"{sorted(set(np.unique(values)[:5].tolist()))}. Set data.task: regression for "
            "continuous targets."
        )
    return values.astype(np.int64)


class Accumulator:
    """Streams batches of (predictions, labels) into the task's metrics."""

    def __init__(self, task: Task):
        self.task = task
        self.count = 0
        self.score_sum = 0.0
        self.sq_sum = 0.0
        self.scores: list[np.ndarray] = []  # binary: probabilities, for the AUC
        self.truths: list[np.ndarray] = []
        self.confusion = None  # dense: C x C
        self.tp = self.fp = self.fn = 0  # multilabel: micro-F1

    def add(self, preds, labels) -> None:
        task = self.task
        values = per_example(task, preds, labels)
        self.count += int(values["score"].shape[0])
        self.score_sum += float(np.sum(values["score"]))
        if task.kind == "regression":
            self.sq_sum += float(np.sum(values["sq_err"]))
            return
        flat_preds, flat_labels = _flat(task, preds, labels)
        if task.kind == "binary":
            self.scores.append(_probabilities(task, flat_preds)[:, 0])
            self.truths.append(_binary_labels(flat_labels)[:, 0])
        elif task.kind == "multilabel":
            decided = _probabilities(task, flat_preds) >= 0.5
            truth = _binary_labels(flat_labels).astype(bool)
            self.tp += int(np.sum(decided & truth))
            self.fp += int(np.sum(decided & ~truth))
            self.fn += int(np.sum(~decided & truth))
        elif task.kind == "dense":
            classes = max(task.classes, 2)
            ids = _check_ids(flat_labels, classes).reshape(-1)
            got = _class_ids(task, flat_preds).reshape(-1)
            matrix = np.bincount(ids * classes + got, minlength=classes * classes)
            matrix = matrix.reshape(classes, classes)
            self.confusion = matrix if self.confusion is None else self.confusion + matrix

    def result(self) -> dict:
        """``{"metric": name, name: value, <secondary>: value, "examples": n}``."""
        task = self.task
        n = self.count
        out: dict = {"metric": task.metric, "examples": n}
        if not n:
            out[task.metric] = math.nan
            return out
        out[task.metric] = self.score_sum / n
        if task.kind == "regression":
            out["rmse"] = math.sqrt(self.sq_sum / n)
        elif task.kind == "binary":
            out["auc"] = auc(np.concatenate(self.scores), np.concatenate(self.truths))
        elif task.kind == "multilabel":
            denominator = 2 * self.tp + self.fp + self.fn
            out["micro_f1"] = 2 * self.tp / denominator if denominator else 1.0
        elif task.kind == "dense":
            out["mean_iou"] = mean_iou(self.confusion)
        return out


def summarize(task: Task, preds, labels) -> dict:
    """All metrics of the task for one set of predictions (see :meth:`Accumulator.result`)."""
    acc = Accumulator(task)
    acc.add(preds, labels)
    return acc.result()


def auc(scores: np.ndarray, truth: np.ndarray) -> float:
    """ROC AUC by ranks (ties averaged); NaN when one class is absent."""
    scores = np.asarray(scores, dtype=np.float64)
    truth = np.asarray(truth).astype(bool)
    positives, negatives = int(truth.sum()), int((~truth).sum())
    if not positives or not negatives:
        return math.nan
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(scores.size, dtype=np.float64)
    sorted_scores = scores[order]
    start = 0
    while start < scores.size:
        end = start
        while end + 1 < scores.size and sorted_scores[end + 1] == sorted_scores[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    rank_sum = float(ranks[truth].sum())
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def mean_iou(confusion: np.ndarray | None) -> float:
    """Mean over classes present (in labels or predictions) of TP / (TP + FP + FN)."""
    if confusion is None:
        return math.nan
    confusion = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(confusion)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - tp
    present = union > 0
    return float(np.mean(tp[present] / union[present])) if present.any() else math.nan


def evaluate_model(model, dataset, task: Task) -> dict:
    """The task's metrics of a Keras model over a batched (inputs, labels) dataset, streamed.

    The forward pass is traced once (as ``model.predict`` does): layer-by-layer eager calls cost
    more than the trace from a few batches of a MobileNet-class model on.
    """
    import tensorflow as tf

    forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    acc = Accumulator(task)
    for x, y in dataset:
        acc.add(np.asarray(forward(x)), y.numpy())
    return acc.result()


def primary(result: dict | None) -> float | None:
    """The primary metric's value of an :meth:`Accumulator.result` (None when absent)."""
    if not result:
        return None
    value = result.get(result.get("metric", ""))
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def comparable_outputs(task: Task, outputs) -> np.ndarray:
    """Outputs on the scale two flavours of a model are compared on: probabilities for the
    classification tasks (logits are unbounded, their scale says nothing), values for regression.
    """
    outputs = np.asarray(outputs, dtype=np.float64)
    if task.kind == "regression" or not task.from_logits:
        return outputs
    if task.classes > 1 and task.kind in ("multiclass", "dense"):
        shifted = np.exp(outputs - outputs.max(axis=-1, keepdims=True))
        return shifted / shifted.sum(axis=-1, keepdims=True)
    return _sigmoid(outputs)


def per_example_counts(task: Task, preds, labels) -> dict[str, np.ndarray]:
    """What the secondary metric sums per example, as columns (one row per example): multilabel
    ``tp``/``fp``/``fn`` (micro-F1), dense ``confusion`` (a flattened C x C matrix per example,
    mean IoU); nothing for the other tasks."""
    flat_preds, flat_labels = _flat(task, preds, labels)
    if task.kind == "multilabel":
        decided = _probabilities(task, flat_preds) >= 0.5
        truth = _binary_labels(flat_labels).astype(bool)
        return {
            "tp": np.sum(decided & truth, axis=1),
            "fp": np.sum(decided & ~truth, axis=1),
            "fn": np.sum(~decided & truth, axis=1),
        }
    if task.kind == "dense":
        classes = max(task.classes, 2)
        cells = _check_ids(flat_labels, classes) * classes + _class_ids(task, flat_preds)
        confusion = np.zeros((cells.shape[0], classes * classes), dtype=np.int64)
        for i, row in enumerate(cells):
            confusion[i] = np.bincount(row, minlength=classes * classes)
        return {"confusion": confusion}
    return {}
