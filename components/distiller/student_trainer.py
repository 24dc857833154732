"""The distillation loss and the ``DistillationModel`` that trains the student (teacher frozen).

(The TFX component is :class:`components.distiller.component.Distiller`; this is the Keras model
its core trains.)

Loss per batch (means over the batch)::

    alpha * CE(labels, student_logits)
    + beta * T^2 * KL(softmax(teacher_logits / T) || softmax(student_logits / T))
    + gamma * sum_pairs mean((projection(student_feature) - teacher_feature)^2)

Per task (``task``): binary and multi-label models use sigmoid cross-entropy and the Bernoulli KL of
the sigmoids at T; regression uses MSE to the labels and MSE to the teacher's outputs (no T); dense
models use CE and KL per position. The T^2 factor keeps the soft term's gradients on the scale of the hard term's as T changes
(Hinton et al., 2015). A teacher that outputs probabilities is turned back into logits by a log
(``log p`` differs from the logits by a per-example constant, which a softmax ignores), so the
temperature applies to logits either way. Feature hints (FitNets) compare a student layer's output
with a teacher layer's output of the same shape except the last dimension; when the widths differ,
a learned projection (a Dense on the last axis: a 1x1 convolution for feature maps) maps the
student feature to the teacher's width. The projections belong to the DistillationModel, not the
student.
"""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf
import tf_keras

from components.common.distillation import distillation_loss, teacher_logits_from_probabilities
from components.common.errors import ConfigError


@dataclass(frozen=True)
class ResolvedPair:
    """A feature hint, checked: layer names and per-example output shapes."""

    teacher_layer: str
    student_layer: str
    teacher_shape: tuple
    student_shape: tuple

    @property
    def needs_projection(self) -> bool:
        return self.teacher_shape[-1] != self.student_shape[-1]


def _layer_output(model, name: str, which: str, field: str):
    try:
        layer = model.get_layer(name)
    except ValueError:
        names = [layer.name for layer in model.layers]
        raise ConfigError(
            f"distiller.feature_pairs: {which} has no layer {name!r} (its layers: {names}); set "
            f"{field} to one of them."
        ) from None
    try:
        return layer.output
    except AttributeError:
        raise ConfigError(
            f"distiller.feature_pairs: {which} layer {name!r} has several outputs or calls; "
            "pick a layer used once."
        ) from None


def resolve_feature_pairs(teacher, student, pairs) -> list[ResolvedPair]:
    """Checks the configured feature pairs against both models; ConfigError naming the problem."""
    resolved = []
    for index, pair in enumerate(pairs):
        student_layer = pair.student_layer or pair.teacher_layer
        where = f"feature_pairs[{index}]"
        t_out = _layer_output(teacher, pair.teacher_layer, "the teacher", f"{where}.teacher_layer")
        s_out = _layer_output(student, student_layer, "the student", f"{where}.student_layer")
        t_shape, s_shape = tuple(t_out.shape[1:]), tuple(s_out.shape[1:])
        if len(t_shape) != len(s_shape) or t_shape[:-1] != s_shape[:-1] or not t_shape:
            raise ConfigError(
                f"distiller.{where}: teacher layer {pair.teacher_layer!r} outputs {t_shape} and "
                f"student layer {student_layer!r} outputs {s_shape}; all but the last (channel) "
                "dimension must match."
            )
        resolved.append(ResolvedPair(pair.teacher_layer, student_layer, t_shape, s_shape))
    return resolved


def _features_model(model, layer_names: list[str], name: str):
    if not layer_names:
        return model
    outputs = [model.outputs[0], *(model.get_layer(n).output for n in layer_names)]
    return tf_keras.Model(model.inputs, outputs, name=name)


class DistillationModel(tf_keras.Model):
    """Trains ``student`` (a logits-output model) to mimic the frozen ``teacher``.

    Compile with an optimizer only; ``fit`` reports loss, label_loss, soft_loss, feature_loss
    (with gamma) and the student's accuracy, on train and eval data (``val_accuracy`` drives
    early stopping). Calling the DistillationModel gives the student's logits.
    """

    def __init__(
        self,
        student,
        teacher,
        *,
        teacher_outputs_probabilities: bool,
        alpha: float,
        beta: float,
        temperature: float,
        gamma: float = 0.0,
        feature_pairs: list[ResolvedPair] = (),
        task=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if temperature <= 0:
            raise ConfigError(f"distiller.temperature must be > 0 (got {temperature}).")
        teacher.trainable = False
        self.student = student
        self.teacher = teacher
        self.teacher_outputs_probabilities = teacher_outputs_probabilities
        self.alpha, self.beta, self.gamma = float(alpha), float(beta), float(gamma)
        self.temperature = float(temperature)
        self.feature_pairs = list(feature_pairs)
        self._student_features = _features_model(
            student, [p.student_layer for p in self.feature_pairs], "student_features"
        )
        self._teacher_features = _features_model(
            teacher, [p.teacher_layer for p in self.feature_pairs], "teacher_features"
        )
        self.projections = [
            tf_keras.layers.Dense(p.teacher_shape[-1], dtype="float32", name=f"projection_{i}")
            if p.needs_projection
            else None
            for i, p in enumerate(self.feature_pairs)
        ]
        # Built now, not in the first train step, so their variables exist before any
        # tf.function or replica context (MirroredStrategy) sees them.
        for projection, pair in zip(self.projections, self.feature_pairs, strict=True):
            if projection is not None:
                projection.build((None, *pair.student_shape))
        self._loss_trackers = {
            key: tf_keras.metrics.Mean(name=key)
            for key in ("loss", "label_loss", "soft_loss", "feature_loss")
            if key != "feature_loss" or self.feature_pairs
        }
        # The student's metric on its logits (the twin trained here outputs logits).
        self.task = task
        if task is None:
            self.accuracy = tf_keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        else:
            from components.common import training

            self.accuracy = training.task_metric(task)

    @property
    def metrics(self):
        return [*self._loss_trackers.values(), self.accuracy]

    def call(self, inputs, training=False):
        return self.student(inputs, training=training)

    def _logits_and_features(self, outputs):
        if not self.feature_pairs:
            return outputs, []
        return outputs[0], list(outputs[1:])

    def _distillation_losses(self, x, y, training: bool) -> tuple[dict, tf.Tensor]:
        teacher_out, teacher_feats = self._logits_and_features(
            self._teacher_features(x, training=False)
        )
        kind = self.task.kind if self.task is not None else "multiclass"
        sigmoid = kind in ("binary", "multilabel") or (kind == "dense" and self.task.classes == 1)
        teacher_logits = (
            teacher_logits_from_probabilities(teacher_out, sigmoid)
            if self.teacher_outputs_probabilities
            else teacher_out
        )
        student_logits, student_feats = self._logits_and_features(
            self._student_features(x, training=training)
        )
        pairs = []
        for projection, s_feat, t_feat in zip(
            self.projections, student_feats, teacher_feats, strict=True
        ):
            s_feat = tf.cast(s_feat, tf.float32)
            pairs.append((projection(s_feat) if projection else s_feat, t_feat))
        parts = distillation_loss(
            y,
            student_logits,
            teacher_logits,
            self.alpha,
            self.beta,
            self.temperature,
            self.gamma,
            pairs,
            kind,
        )
        return parts, student_logits

    def _record_metrics(self, parts: dict, y, student_logits) -> dict:
        for key, tracker in self._loss_trackers.items():
            tracker.update_state(parts[key])
        self.accuracy.update_state(y, student_logits)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            parts, student_logits = self._distillation_losses(x, y, training=True)
            # Gradients are summed over replicas: scale the per-replica mean loss accordingly.
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            scaled = parts["loss"] / replicas
        self.optimizer.minimize(scaled, self.trainable_variables, tape=tape)
        return self._record_metrics(parts, y, student_logits)

    def test_step(self, data):
        x, y = data
        parts, student_logits = self._distillation_losses(x, y, training=False)
        return self._record_metrics(parts, y, student_logits)
