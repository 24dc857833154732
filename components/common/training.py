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


def make_optimizer(config: FineTuneConfig, learning_rate=None):
    import tf_keras

    lr = learning_rate if learning_rate is not None else config.learning_rate
    return {
        "adam": tf_keras.optimizers.Adam,
        "sgd": tf_keras.optimizers.SGD,
        "rmsprop": tf_keras.optimizers.RMSprop,
    }[config.optimizer](lr)


def compile_classifier(model, config: FineTuneConfig, from_logits: bool | None = None) -> None:
    """Compiles ``model`` for sparse-label classification with the configured optimizer."""
    import tf_keras

    if from_logits is None:
        from_logits = not outputs_probabilities(model)
    model.compile(
        optimizer=make_optimizer(config),
        loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
        metrics=["accuracy"],
    )


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


def fit(model, train_ds, eval_ds, config: FineTuneConfig, name: str, callbacks=()) -> dict:
    """Trains a compiled model; returns {'history': [...], 'epochs_run', 'wall_time_s'}.

    Early stopping (when configured) watches eval accuracy and restores the best weights.
    """
    import tf_keras

    epoch_log = _EpochLog(name)
    all_callbacks = [epoch_log.callback, *callbacks]
    if config.early_stopping_patience and eval_ds is not None:
        all_callbacks.append(
            tf_keras.callbacks.EarlyStopping(
                monitor="val_accuracy",
                patience=config.early_stopping_patience,
                mode="max",
                restore_best_weights=True,
            )
        )
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


def accuracy(model, dataset) -> float:
    """Top-1 accuracy of a Keras model over a (inputs, labels) dataset, streamed."""
    import numpy as np

    correct = total = 0
    for x, y in dataset:
        pred = model(x, training=False).numpy()
        correct += int(np.sum(np.argmax(pred, axis=-1) == y.numpy()))
        total += int(y.shape[0])
    return correct / total if total else float("nan")


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


def skip_autograph_for_tf_keras() -> None:
    """Stops AutoGraph from re-transpiling tf_keras' own code on every first trace (idempotent).

    TensorFlow's AutoGraph leaves the ``keras`` package alone but not ``tf_keras`` (the same code
    under another name), so the first ``fit`` of a process spends 20-30 s converting hundreds of
    Keras internals; with this rule it takes about a second. User layers and the optimisation
    wrappers (tensorflow-model-optimization) are still converted as before.
    """
    from tensorflow.python.autograph.core import config as autograph_config

    rules = autograph_config.CONVERSION_RULES
    if not any(getattr(rule, "_prefix", None) == "tf_keras" for rule in rules):
        autograph_config.CONVERSION_RULES = (autograph_config.DoNotConvert("tf_keras"), *rules)


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
