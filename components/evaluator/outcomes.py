"""Per-example outcomes of a model on a batch, and the sums the accuracy pass combines them into.

Plain numpy, no TensorFlow and no Beam: :mod:`components.evaluator.accuracy` runs these in its
Beam pass. Outcomes travel as columns (one array per field and model, per batch), are summed
with numpy into per-model sums and the paired 2x2 tables the paired intervals need, and are
written as one JSON line of columns per batch, each example keyed by a digest of its bytes.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

import numpy as np

from components.common import metrics as metrics_lib
from components.common.errors import DataError
from components.common.metrics import Task
from components.evaluator.models import BASELINE


@dataclass(frozen=True)
class AccuracySettings:
    """What the DoFn computes per example, and with how many interpreter threads."""

    task: str = "classification"
    top_k: int | None = None
    compute_loss: bool = False
    from_logits: bool = False
    spec: Task | None = None  # the resolved task (output shape, logits); else from ``task``
    num_threads: int | None = None  # TFLite threads per worker; None: the worker's CPUs

    def resolved(self) -> Task:
        """The task as :class:`components.common.metrics.Task`."""
        if self.spec is not None:
            return self.spec
        kind = "multiclass" if self.task in ("classification", "auto", None) else self.task
        return Task(kind, (), self.from_logits)


def example_key(serialized: bytes) -> str:
    """Stable key of one example: a digest of its serialized bytes."""
    return hashlib.sha256(serialized).hexdigest()[:20]


def outcome_columns(
    predictions: np.ndarray, labels: np.ndarray, settings: AccuracySettings
) -> dict[str, np.ndarray]:
    """Per-example outcomes of one model on a batch, as columns (one array per field, one entry
    per example), per task: correctness (top-1, top-k), loss, the fraction of labels/positions
    right (``score``), errors, and what the secondary metrics sum.

    Raises:
      DataError: a label outside the model's classes, or outputs that do not fit the task.
    """
    task = settings.resolved()
    preds = np.asarray(predictions, dtype=np.float64)
    if task.kind == "regression":
        if (
            preds.reshape(preds.shape[0], -1).shape[1]
            != labels.reshape(labels.shape[0], -1).shape[1]
        ):
            raise DataError(
                f"task regression needs one output value per label value; the model gives "
                f"{preds.shape[1:]}. Set data.task to the model's task."
            )
        values = metrics_lib.per_example(task, preds, labels)
        return {"abs_err": values["score"], "sq_err": values["sq_err"]}
    if task.kind == "multiclass" and (preds.ndim != 2 or preds.shape[1] < 2):
        raise DataError(
            f"top-1 accuracy needs class scores, the model outputs shape {preds.shape}; set "
            "data.task to the model's task (binary, regression, ...)."
        )
    scores = metrics_lib.per_example(task, preds, labels)["score"]
    if task.kind == "multiclass":
        return _multiclass_columns(preds, labels.astype(np.int64), scores, settings)
    if task.kind == "binary":
        probs = metrics_lib.comparable_outputs(task, preds).reshape(-1)
        return {"correct": scores.astype(np.int64), "p": probs}
    return {"score": scores, **metrics_lib.per_example_counts(task, preds, labels)}


def outcomes(predictions: np.ndarray, labels: np.ndarray, settings: AccuracySettings) -> list[dict]:
    """:func:`outcome_columns` as one dict per example (plain Python numbers)."""
    columns = outcome_columns(predictions, labels, settings)
    return _rows_of({name: np.asarray(column).tolist() for name, column in columns.items()})


def _rows_of(columns: dict[str, list]) -> list[dict]:
    n = len(next(iter(columns.values()))) if columns else 0
    return [{name: column[i] for name, column in columns.items()} for i in range(n)]


def _multiclass_columns(preds, labels, correct, settings: AccuracySettings) -> dict:
    n, classes = preds.shape
    rows = np.arange(n)
    columns = {"correct": correct.astype(np.int64)}
    if settings.top_k:
        k = min(settings.top_k, classes)
        # Rank of the label's score: the label is in the top k when fewer than k beat it.
        beaten_by = np.sum(preds > preds[rows, labels][:, None], axis=1)
        columns["top_k"] = (beaten_by < k).astype(np.int64)
    if settings.compute_loss:
        if settings.from_logits:
            top = preds.max(axis=1, keepdims=True)
            log_sum = np.log(np.sum(np.exp(preds - top), axis=1)) + top[:, 0]
            columns["loss"] = log_sum - preds[rows, labels]
        else:
            columns["loss"] = -np.log(np.clip(preds[rows, labels], 1e-7, 1.0))
    return columns


def _new_model_sums() -> dict:
    return {
        "count": 0,
        "correct": 0,
        "top_k": 0,
        "loss_sum": 0.0,
        "abs_sum": 0.0,
        "sq_sum": 0.0,
        "score_sum": 0.0,
        "tp": 0,
        "fp": 0,
        "fn": 0,
        "confusion": None,
        "errors": 0,
        "first_error": None,
    }


# Per-example outcome column -> the sum it adds to.
_SUMMED = (
    ("correct", "correct"),
    ("top_k", "top_k"),
    ("loss", "loss_sum"),
    ("abs_err", "abs_sum"),
    ("sq_err", "sq_sum"),
    ("score", "score_sum"),
    ("tp", "tp"),
    ("fp", "fp"),
    ("fn", "fn"),
)


def add_batch(acc: dict, batch: dict, baseline: str = BASELINE) -> dict:
    """Adds one batch of outcome columns (``{"keys", "outcomes": {model: columns}}``; a model
    that failed on the batch has ``{"error": message}``) to per-model sums and paired tables
    (baseline vs each model), with numpy: no Python work per example."""
    n = len(batch["keys"])
    acc["examples"] += n
    outs = batch["outcomes"]
    for name, columns in outs.items():
        sums = acc["models"].get(name) or acc["models"].setdefault(name, _new_model_sums())
        if "error" in columns:
            sums["errors"] += n
            sums["first_error"] = sums["first_error"] or columns["error"]
            continue
        sums["count"] += n
        for column, key in _SUMMED:
            if column in columns:
                sums[key] = sums.get(key, 0) + np.sum(columns[column]).item()
        if "confusion" in columns:
            _add_confusion(sums, np.sum(columns["confusion"], axis=0).tolist())
    base = outs.get(baseline, {})
    if "correct" in base:
        base_right = np.asarray(base["correct"]).astype(bool)
        for name, columns in outs.items():
            if name == baseline or "correct" not in columns:
                continue
            right = np.asarray(columns["correct"]).astype(bool)
            table = acc["paired"].setdefault(name, {"n11": 0, "n10": 0, "n01": 0, "n00": 0})
            table["n11"] += int(np.sum(base_right & right))
            table["n10"] += int(np.sum(base_right & ~right))
            table["n01"] += int(np.sum(~base_right & right))
            table["n00"] += int(np.sum(~base_right & ~right))
    return acc


def add_row(acc: dict, row: dict, baseline: str = BASELINE) -> dict:
    """Adds one per-example row (as :func:`read_per_example` yields) to the sums: a batch of one."""
    outs = {
        name: dict(out) if "error" in out else {k: np.asarray([v]) for k, v in out.items()}
        for name, out in row["outcomes"].items()
    }
    return add_batch(acc, {"keys": [row.get("key")], "outcomes": outs}, baseline)


def _add_confusion(sums: dict, confusion: list) -> None:
    current = sums.get("confusion")
    sums["confusion"] = (
        list(confusion)
        if current is None
        else [a + b for a, b in zip(current, confusion, strict=True)]
    )


def merge(accumulators) -> dict:
    """Merges accumulators of :func:`add_row` (Beam combiner merge)."""
    out = {"examples": 0, "models": {}, "paired": {}}
    for acc in accumulators:
        out["examples"] += acc["examples"]
        for name, sums in acc["models"].items():
            target = out["models"].setdefault(name, _new_model_sums())
            for key, value in sums.items():
                if key == "first_error":
                    target[key] = target[key] or value
                elif key == "confusion":
                    if value is not None:
                        _add_confusion(target, value)
                else:
                    target[key] = target.get(key, 0) + value
        for name, table in acc["paired"].items():
            target = out["paired"].setdefault(name, {"n11": 0, "n10": 0, "n01": 0, "n00": 0})
            for cell, count in table.items():
                target[cell] += count
    return out


def finalize(acc: dict, settings: AccuracySettings) -> dict:
    """Per-model metrics from the sums; a model with any failed example gets no metrics."""
    models = {}
    for name, sums in acc["models"].items():
        n = sums["count"]
        entry: dict = {"examples": n, "failed_examples": sums["errors"]}
        if sums["errors"]:
            entry["error"] = (
                f"{sums['errors']} example(s) could not be evaluated: {sums['first_error']}"
            )
        elif n:
            entry.update(_task_metrics(sums, n, settings))
        models[name] = entry
    return {"examples": acc["examples"], "models": models, "paired": acc["paired"]}


def _task_metrics(sums: dict, n: int, settings: AccuracySettings) -> dict:
    task = settings.resolved()
    entry: dict = {"metric": task.metric}
    if task.kind == "regression":
        entry["mae"] = sums["abs_sum"] / n
        entry["rmse"] = math.sqrt(sums["sq_sum"] / n)
    elif task.kind in ("multiclass", "binary"):
        entry[task.metric] = sums["correct"] / n
        if settings.top_k:
            entry["top_k_accuracy"] = sums["top_k"] / n
            entry["top_k"] = settings.top_k
        if settings.compute_loss:
            entry["loss"] = sums["loss_sum"] / n
    else:
        entry[task.metric] = sums.get("score_sum", 0.0) / n
        if task.kind == "multilabel":
            denominator = 2 * sums.get("tp", 0) + sums.get("fp", 0) + sums.get("fn", 0)
            entry["micro_f1"] = 2 * sums.get("tp", 0) / denominator if denominator else 1.0
        elif sums.get("confusion") is not None:
            classes = int(round(math.sqrt(len(sums["confusion"]))))
            matrix = np.asarray(sums["confusion"]).reshape(classes, classes)
            entry["mean_iou"] = metrics_lib.mean_iou(matrix)
    return entry


def batch_to_json(batch: dict) -> str:
    """One batch's per-example outcomes as one JSON line of columns: ``keys``, ``labels`` and,
    per model, one list per outcome field (or the model's ``error`` on the batch)."""
    outcomes_ = {
        name: columns
        if "error" in columns
        else {field: np.asarray(column).tolist() for field, column in columns.items()}
        for name, columns in batch["outcomes"].items()
    }
    labels = np.asarray(batch["labels"]).tolist()
    return json.dumps(
        {"keys": list(batch["keys"]), "labels": labels, "outcomes": outcomes_}, sort_keys=True
    )


def rows_of_batch(line: dict) -> list[dict]:
    """The per-example rows (``key``, ``label``, ``outcomes`` per model) of one JSON batch line."""
    per_model = {
        name: [columns] * len(line["keys"]) if "error" in columns else _rows_of(columns)
        for name, columns in line["outcomes"].items()
    }
    return [
        {
            "key": key,
            "label": line["labels"][i],
            "outcomes": {name: rows[i] for name, rows in per_model.items()},
        }
        for i, key in enumerate(line["keys"])
    ]
