"""Fine-tuning shared by the Pruner, Clusterer, Quantizer (QAT) and Distiller.

Every step that trains takes a :class:`FineTuneConfig`; training runs under the
``tf.distribute`` strategy it names, so the same component scales from one CPU to many GPUs or
workers.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Literal

import pydantic

from components.common.config import StrictModel
from components.common.errors import ConfigError
from components.common.metrics import Task

log = logging.getLogger(__name__)


class FineTuneConfig(StrictModel):
    """Fine-tuning settings."""

    epochs: int = pydantic.Field(2, ge=0, le=10_000)
    batch_size: int = pydantic.Field(32, ge=1, le=65_536)
    optimizer: Literal["adam", "sgd", "rmsprop"] = "adam"
    learning_rate: float = pydantic.Field(1e-4, gt=0, le=10)
    early_stopping_patience: int | None = pydantic.Field(
        None, ge=1, description="Stop after this many epochs without eval-accuracy gain."
    )
    strategy: Literal["default", "mirrored", "multi_worker_mirrored"] = "default"
    seed: int = pydantic.Field(0, ge=0)
    max_train_examples: int | None = pydantic.Field(None, ge=1)


class DistillationConfig(StrictModel):
    """Teacher-guided fine-tuning: the step's input model is a frozen teacher.

    Loss: ``(1 - alpha) * task loss + alpha * T^2 * KL(teacher || student at temperature T)``
    (the Distiller's soft term, task-aware: components/common/distillation.py). ``alpha`` weighs
    the teacher, so 0 is plain fine-tuning; the Distiller's own ``alpha`` weighs the labels.
    """

    alpha: float = pydantic.Field(
        0.5, ge=0, le=1, description="Weight of the teacher's soft term; the labels get 1 - alpha."
    )
    temperature: float = pydantic.Field(
        2.0, gt=0, le=1000, description="Softmax temperature T of the soft targets; must be > 0."
    )


class TeacherFineTuneConfig(FineTuneConfig):
    """Fine-tuning of an optimised copy of the input model, which may use it as a teacher."""

    distillation: DistillationConfig | None = pydantic.Field(
        None,
        description="Use the step's input model as a frozen teacher (alpha, temperature); "
        "absent: fine-tune on the labels alone.",
    )

    @pydantic.model_serializer(mode="wrap")
    def _absent_teacher_left_out(self, handler):
        # Without a teacher the config serialises as before the setting existed: the same exec
        # properties, so compiled specs and the steps cached in ML Metadata stay the same.
        data = handler(self)
        if self.distillation is None and isinstance(data, dict):
            data.pop("distillation", None)
        return data


def teacher_record(config: FineTuneConfig) -> dict:
    """The fine-tuning record's account of the teacher: whether one was used, and how."""
    distillation = getattr(config, "distillation", None)
    if distillation is None:
        return {"used": False}
    return {"used": True, "model": "the step's input model", **distillation.model_dump()}


def make_strategy(name: str):
    """The tf.distribute strategy named in config."""
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker_mirrored":
        try:
            return tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as e:
            raise ConfigError(
                f"fine_tuning.strategy: multi_worker_mirrored could not start ({e}). TensorFlow "
                "must not have run anything in the process before the strategy is made: run the "
                "step in a fresh process per worker (one per TFJob replica)."
            ) from e
    raise ConfigError(f"fine_tuning.strategy: unknown strategy {name!r}")


def cluster_task() -> tuple[int, bool]:
    """(workers in the cluster, whether this process is the chief) from ``TF_CONFIG``.

    Without ``TF_CONFIG`` a process is a cluster of one and its own chief. In a cluster the chief
    is the ``chief`` task, or worker 0 when there is none (as ``MultiWorkerMirroredStrategy``
    decides); only the chief writes the output artifact.
    """
    tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    cluster = tf_config.get("cluster") or {}
    task = tf_config.get("task") or {}
    workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
    kind, index = task.get("type", "worker"), int(task.get("index", 0))
    chief = kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)
    return max(workers, 1), chief


def outputs_probabilities(model) -> bool:
    """True when the model ends in a softmax (probabilities), False when it outputs logits."""
    import tf_keras

    last = model.layers[-1]
    activation = getattr(last, "activation", None)
    if activation is not None and getattr(activation, "__name__", "") == "softmax":
        return True
    return isinstance(last, tf_keras.layers.Softmax)


def outputs_squashed(model) -> bool:
    """True when the model ends in a softmax or a sigmoid (probabilities), False for logits or
    values."""
    from components.common.tasks import final_activation

    return final_activation(model) in ("softmax", "sigmoid")


def make_optimizer(config: FineTuneConfig, learning_rate=None):
    import tf_keras

    lr = learning_rate if learning_rate is not None else config.learning_rate
    return {
        "adam": tf_keras.optimizers.Adam,
        "sgd": tf_keras.optimizers.SGD,
        "rmsprop": tf_keras.optimizers.RMSprop,
    }[config.optimizer](lr)


def classifier_task(model, from_logits: bool | None = None) -> Task:
    """The multiclass task of a softmax/logit classifier (callers that know no other task)."""
    if from_logits is None:
        from_logits = not outputs_probabilities(model)
    shape = tuple(int(d) for d in model.outputs[0].shape[1:])
    return Task("multiclass", shape, from_logits)


def compile_classifier(model, config: FineTuneConfig, from_logits: bool | None = None) -> None:
    """Compiles ``model`` for sparse-label classification with the configured optimizer."""
    compile_for_task(model, config, CompileArgs.default(classifier_task(model, from_logits)))


class CompileArgs:
    """The loss and metrics fine-tuning compiles a model with, and where they come from.

    ``source`` is ``module_file`` (data.module_file's ``loss_fn``/``metrics_fn``), ``model`` (the
    loss and metrics the SavedModel was compiled with) or ``task default``. The task's own metric
    is always added: early stopping and the logs watch it.
    """

    def __init__(self, task: Task, loss, metrics: list, source: str, training_config=None):
        self.task = task
        self.loss = loss
        self.metrics = metrics
        self.source = source
        self.training_config = training_config

    @classmethod
    def default(cls, task: Task) -> CompileArgs:
        return cls(task, default_loss(task), [], "task default")

    def describe(self) -> dict:
        loss = self.loss if isinstance(self.loss, str) else type(self.loss).__name__
        if callable(self.loss) and not hasattr(self.loss, "get_config"):
            loss = getattr(self.loss, "__name__", loss)
        return {
            "task": self.task.kind,
            "loss": loss,
            "source": self.source,
            "monitor": task_metric_name(self.task),
        }


def default_loss(task: Task):
    """The task's default loss: sparse CE, binary CE, MSE, or sparse CE per position."""
    import tf_keras

    losses = tf_keras.losses
    if task.kind in ("multiclass",) or (task.kind == "dense" and task.classes > 1):
        return losses.SparseCategoricalCrossentropy(from_logits=task.from_logits)
    if task.kind == "regression":
        return losses.MeanSquaredError()
    return losses.BinaryCrossentropy(from_logits=task.from_logits)


def task_metric_name(task: Task) -> str:
    """The Keras metric name fine-tuning logs and early stopping watches (``val_<name>``)."""
    return "accuracy" if task.kind == "multiclass" else task.metric


def task_metric(task: Task):
    """A Keras metric computing the task's primary metric on a batch."""
    import tf_keras

    metrics = tf_keras.metrics
    name = task_metric_name(task)
    if task.kind == "regression":
        return metrics.MeanAbsoluteError(name=name)
    if task.kind in ("multiclass",) or (task.kind == "dense" and task.classes > 1):
        return metrics.SparseCategoricalAccuracy(name=name)
    return metrics.BinaryAccuracy(name=name, threshold=0.0 if task.from_logits else 0.5)


def _user_module(module_file: str):
    import importlib.util
    import os

    if not os.path.isfile(module_file):
        raise ConfigError(f"data.module_file {module_file!r} does not exist.")
    spec = importlib.util.spec_from_file_location("tfxopt_user_losses", module_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compile_args(task: Task, model_uri: str | None = None, module_file: str | None = None):
    """The loss and metrics to fine-tune with: ``module_file``'s ``loss_fn``/``metrics_fn``, else
    the model's own compiled loss (kept in the SavedModel), else the task's default."""
    if module_file:
        module = _user_module(module_file)
        if hasattr(module, "loss_fn"):
            metrics = list(module.metrics_fn()) if hasattr(module, "metrics_fn") else []
            return CompileArgs(task, module.loss_fn(), metrics, "module_file")
    if model_uri:
        from components.common import model_io

        config = model_io.read_training_config(model_uri)
        parsed = _from_training_config(config) if config else None
        if parsed is not None:
            return CompileArgs(task, parsed[0], parsed[1], "model", config)
    return CompileArgs.default(task)


def _from_training_config(config: dict):
    """(loss, metrics) of a Keras training config, or None when it cannot be revived."""
    from tf_keras.src.saving.legacy import saving_utils

    try:
        args = saving_utils.compile_args_from_training_config(
            {k: v for k, v in config.items() if k != "optimizer_config"}
            | {"optimizer_config": {"class_name": "Adam", "config": {}}}
        )
    except Exception as e:  # noqa: BLE001 - a custom loss without its code: use the default
        log.warning("the model's compiled loss cannot be revived (%s): using the task's", e)
        return None
    if args.get("loss") is None or isinstance(args["loss"], dict | list):
        return None  # several outputs' losses: not a model this pipeline takes
    metrics = args.get("metrics") or []
    flat = []
    for item in metrics:
        flat.extend(item if isinstance(item, list) else [item])
    return args["loss"], flat


def compile_for_task(model, config: FineTuneConfig, args: CompileArgs) -> None:
    """Compiles ``model`` with the configured optimizer and ``args``' loss and metrics."""
    ours = task_metric(args.task)
    own = [m for m in args.metrics if _metric_name(m) != ours.name]
    model.compile(optimizer=make_optimizer(config), loss=args.loss, metrics=[ours, *own])


def _metric_name(metric) -> str:
    return metric if isinstance(metric, str) else getattr(metric, "name", "")


class _EpochLog:
    """Logs progress per epoch and keeps the history."""

    def __init__(self, name: str):
        import tf_keras

        outer = self

        class Callback(tf_keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                outer.started = time.time()

            def on_epoch_end(self, epoch, logs=None):
                logs = {k: float(v) for k, v in (logs or {}).items()}
                outer.history.append({"epoch": epoch + 1, **logs})
                log.warning(
                    "%s: epoch %d  %s  (%.1f s)",
                    name,
                    epoch + 1,
                    "  ".join(f"{k}={v:.4f}" for k, v in logs.items()),
                    time.time() - outer.started,
                )

        self.history: list[dict] = []
        self.started = time.time()
        self.callback = Callback()


def early_stopping(task: Task | None, patience: int, start_from_epoch: int = 0):
    """Stops after ``patience`` epochs without gain of the task's eval metric; keeps the best."""
    import tf_keras

    name = task_metric_name(task) if task is not None else "accuracy"
    higher = task.higher_is_better if task is not None else True
    return tf_keras.callbacks.EarlyStopping(
        monitor=f"val_{name}",
        patience=patience,
        mode="max" if higher else "min",
        restore_best_weights=True,
        start_from_epoch=start_from_epoch,
    )


def fit(
    model, train_ds, eval_ds, config: FineTuneConfig, name: str, callbacks=(), task=None
) -> dict:
    """Trains a compiled model; returns {'history': [...], 'epochs_run', 'wall_time_s'}.

    Early stopping (when configured) watches the task's eval metric and restores the best weights.
    """
    epoch_log = _EpochLog(name)
    all_callbacks = [epoch_log.callback, *callbacks]
    if config.early_stopping_patience and eval_ds is not None:
        all_callbacks.append(early_stopping(task, config.early_stopping_patience))
    started = time.time()
    if config.epochs > 0:
        model.fit(
            train_ds,
            validation_data=eval_ds,
            epochs=config.epochs,
            callbacks=all_callbacks,
            verbose=0,
        )
    return {
        "history": epoch_log.history,
        "epochs_run": len(epoch_log.history),
        "wall_time_s": time.time() - started,
    }


def accuracy(model, dataset, task: Task | None = None) -> float:
    """The task's primary metric of a Keras model over a (inputs, labels) dataset, streamed
    (top-1 accuracy when no task is given)."""
    from components.common import metrics

    if task is None:
        task = classifier_task(model)
    value = metrics.primary(metrics.evaluate_model(model, dataset, task))
    return float("nan") if value is None else value


def warmup_cosine_schedule(
    learning_rate: float,
    total_steps: int,
    warmup_steps: int = 0,
    final_learning_rate_fraction: float = 0.0,
):
    """A learning-rate schedule: linear warm-up to ``learning_rate``, then cosine decay.

    Warm-up starts at ``learning_rate / warmup_steps`` (not 0, so no step is wasted) and reaches
    ``learning_rate`` after ``warmup_steps``; cosine decay then ends at
    ``learning_rate * final_learning_rate_fraction`` after ``total_steps`` in all. Pass it as the
    ``learning_rate`` of :func:`make_optimizer`.
    """
    import tf_keras

    total_steps = max(int(total_steps), 1)
    warmup_steps = min(max(int(warmup_steps), 0), total_steps - 1)
    schedules = tf_keras.optimizers.schedules
    if warmup_steps == 0:
        return schedules.CosineDecay(
            learning_rate, decay_steps=total_steps, alpha=final_learning_rate_fraction
        )
    return schedules.CosineDecay(
        learning_rate / warmup_steps,
        decay_steps=total_steps - warmup_steps,
        alpha=final_learning_rate_fraction,
        warmup_target=learning_rate,
        warmup_steps=warmup_steps,
    )


_LOCAL_STRATEGIES: dict = {}


def make_local_strategy(name: str):
    """Like :func:`make_strategy`, for steps that run one after another in one process.

    ``mirrored`` on a machine without GPUs mirrors over every logical CPU device
    (``MirroredStrategy()`` alone would use one CPU), so several CPU replicas
    (``tf.config.set_logical_device_configuration``) really train in parallel. A distributed
    strategy is made once per process and reused: two MirroredStrategy objects over the same
    devices allocate the same collective-op keys, and the second one's all-reduce then fails
    with a shape mismatch (e.g. a Clusterer fine-tuning after a Pruner under LocalDagRunner).
    """
    import tensorflow as tf

    if name == "default":
        return make_strategy(name)
    if name not in _LOCAL_STRATEGIES:
        if name == "mirrored" and not tf.config.list_logical_devices("GPU"):
            cpus = [device.name for device in tf.config.list_logical_devices("CPU")]
            if len(cpus) > 1:
                _LOCAL_STRATEGIES[name] = tf.distribute.MirroredStrategy(devices=cpus)
        if name not in _LOCAL_STRATEGIES:
            _LOCAL_STRATEGIES[name] = make_strategy(name)
    return _LOCAL_STRATEGIES[name]
