"""The distillation loss, and teacher-guided fine-tuning for the Pruner, Clusterer and QAT.

The loss (shared with the Distiller), per batch, means over the batch::

    alpha * CE(labels, student_logits)
    + beta * T^2 * KL(softmax(teacher_logits / T) || softmax(student_logits / T))
    + gamma * sum_pairs mean((student_feature - teacher_feature)^2)

Per task: binary and multi-label models use sigmoid cross-entropy and the Bernoulli KL of the
sigmoids at T; regression uses MSE to the labels and MSE to the teacher's outputs (no T); dense
(per-position) models use CE and KL per position. The T^2 factor keeps the soft term's gradients
on the scale of the hard term's as T changes (Hinton et al., 2015). Outputs that are
probabilities are turned back into logits by a log (``log p`` differs from the logits by a
per-example constant, which a softmax ignores), so the temperature applies to logits either way.

Teacher-guided fine-tuning (``fine_tuning.distillation``) trains a :class:`TeacherGuided` model:
it holds the (wrapped) student and the frozen teacher, is called like the student, and is compiled
with the student's own task loss and metrics; only its loss adds the teacher's soft term::

    (1 - alpha) * task_loss(labels, student) + alpha * soft_scale * soft_loss(teacher, student)

so ``alpha = 0`` is plain fine-tuning, and the logs, early stopping and the history keep the task
metric. The student is a layer of it, so tfmot's callbacks (``UpdatePruningStep``) find its
wrappers, and stripping acts on the student as before. A wrapper model rather than the teacher's
outputs packed into the dataset's targets: the datasets, the compiled loss and metrics (the
model's own, a module file's) and the accuracy passes stay as they are, the teacher runs under
the same strategy as the student by construction, and the three techniques share one call.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras

# Smallest normal float32: probabilities below it are clipped before the log.
FLOAT32_TINY = 1.1754944e-38


def teacher_logits_from_probabilities(probabilities, sigmoid: bool = False):
    """Logits (up to a per-example constant) of softmax probabilities, or the exact logits of
    sigmoid ones; 0 and 1 are clipped to float32's tiny."""
    probabilities = tf.cast(probabilities, tf.float32)
    if sigmoid:
        return tf.math.log(tf.maximum(probabilities, FLOAT32_TINY)) - tf.math.log(
            tf.maximum(1.0 - probabilities, FLOAT32_TINY)
        )
    return tf.math.log(tf.maximum(probabilities, FLOAT32_TINY))


def soft_loss(task: str, student, teacher, temperature: float):
    """(soft loss, its scale) of one task, on logits (values, for regression).

    multiclass/dense: KL of the softmax at temperature T (per position for dense), scale T^2;
    binary/multilabel: the Bernoulli KL of the sigmoids at T summed over the units, scale T^2;
    regression: MSE to the teacher's outputs, scale 1.
    """
    if task == "regression":
        return tf.reduce_mean(tf.square(student - teacher)), 1.0
    if task in ("binary", "multilabel"):
        t, s = teacher / temperature, student / temperature
        p_t = tf.sigmoid(t)
        kl = p_t * (tf.math.log_sigmoid(t) - tf.math.log_sigmoid(s)) + (1 - p_t) * (
            tf.math.log_sigmoid(-t) - tf.math.log_sigmoid(-s)
        )
        per_example = tf.reduce_sum(tf.reshape(kl, [tf.shape(kl)[0], -1]), axis=-1)
        return tf.reduce_mean(per_example), temperature**2
    teacher_log_p = tf.nn.log_softmax(teacher / temperature, axis=-1)
    student_log_p = tf.nn.log_softmax(student / temperature, axis=-1)
    kl = tf.reduce_sum(tf.exp(teacher_log_p) * (teacher_log_p - student_log_p), axis=-1)
    return tf.reduce_mean(kl), temperature**2


def _hard_loss(task: str, labels, student):
    """The label loss on logits: MSE, sigmoid CE or sparse softmax CE (per position for dense)."""
    if task == "regression":
        labels = tf.reshape(tf.cast(labels, tf.float32), tf.shape(student))
        return tf.reduce_mean(tf.square(student - labels))
    if task in ("binary", "multilabel"):
        labels = tf.reshape(tf.cast(labels, tf.float32), tf.shape(student))
        return tf.reduce_mean(
            tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=student)
        )
    ids = tf.cast(tf.reshape(labels, tf.shape(student)[:-1]), tf.int32)
    return tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=ids, logits=student)
    )


def distillation_loss(
    labels,
    student_logits,
    teacher_logits,
    alpha: float,
    beta: float,
    temperature: float,
    gamma: float = 0.0,
    feature_pairs=(),
    task: str = "multiclass",
) -> dict:
    """The distillation loss and its parts, as float32 scalars.

    Args:
      labels: the task's labels (class ids, 0/1 values, targets or ids per position).
      student_logits, teacher_logits: the logits (values, for regression), same shape.
      alpha, beta, gamma, temperature: see the module docstring.
      feature_pairs: (projected student feature, teacher feature) tensors of equal shape.
      task: multiclass, binary, multilabel, regression or dense (see :func:`soft_loss`).

    Returns:
      {'loss', 'label_loss', 'soft_loss' (before its scale and beta), 'feature_loss'}.
    """
    student_logits = tf.cast(student_logits, tf.float32)
    teacher_logits = tf.cast(teacher_logits, tf.float32)
    label_loss = _hard_loss(task, labels, student_logits)
    soft, soft_scale = soft_loss(task, student_logits, teacher_logits, temperature)
    feature_loss = tf.constant(0.0, tf.float32)
    for student_feature, teacher_feature in feature_pairs:
        diff = tf.cast(student_feature, tf.float32) - tf.cast(teacher_feature, tf.float32)
        feature_loss += tf.reduce_mean(tf.square(diff))
    loss = alpha * label_loss + beta * soft_scale * soft + gamma * feature_loss
    return {"loss": loss, "label_loss": label_loss, "soft_loss": soft, "feature_loss": feature_loss}


def loss_kind(task) -> tuple[str, bool]:
    """(the loss's task name, whether a squashed output is a sigmoid) of a metrics ``Task``."""
    sigmoid = task.kind in ("binary", "multilabel") or (task.kind == "dense" and task.classes == 1)
    kind = "binary" if task.kind == "dense" and task.classes == 1 else task.kind
    return kind, sigmoid


def as_logits(outputs, task):
    """A model's outputs as logits (values for regression): probabilities are logged."""
    outputs = tf.cast(outputs, tf.float32)
    if task.from_logits or task.kind == "regression":
        return outputs
    return teacher_logits_from_probabilities(outputs, loss_kind(task)[1])


class TeacherGuided(tf_keras.Model):
    """Fine-tunes ``student`` with the frozen ``teacher``'s outputs as soft targets.

    Compile it like the student (its task loss and metrics); calling it calls the student. The
    loss is ``(1 - alpha) * compiled loss + alpha * soft_scale * soft_loss`` (module docstring);
    logs gain ``teacher_loss`` (the soft loss, before its scale).
    """

    def __init__(self, student, teacher, *, alpha: float, temperature: float, task, **kwargs):
        super().__init__(**kwargs)
        self.student = student
        # Not tracked as a layer: the teacher's variables stay out of the trainable variables,
        # the weights early stopping restores and the layers tfmot's callbacks walk. It is the
        # caller's model, left as it is (not set to trainable=False); a custom layer that could
        # not be re-created is shared with the student's copy (optimization.working_copy).
        object.__setattr__(self, "_teacher_fn", teacher)
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.task = task
        # An attribute metric: Keras adds it to ``metrics`` (logs, resets) by itself.
        self.teacher_loss = tf_keras.metrics.Mean(name="teacher_loss")

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None):
        teacher = tf.stop_gradient(self._teacher_fn(x, training=False))
        kind, _ = loss_kind(self.task)
        soft, scale = soft_loss(
            kind, as_logits(y_pred, self.task), as_logits(teacher, self.task), self.temperature
        )
        self.teacher_loss.update_state(soft)
        task_loss = self.compiled_loss(y, y_pred, sample_weight, regularization_losses=None)
        # Gradients are summed over replicas: the compiled loss comes divided by their number
        # already, the other terms are divided here.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        total = (1.0 - self.alpha) * task_loss + self.alpha * scale * soft / replicas
        if self.student.losses:
            total += tf.add_n(self.student.losses) / replicas
        return total


def guided(student, teacher_source, fine_tuning, task):
    """The model to compile and fit: ``student`` itself, or a :class:`TeacherGuided` around it
    when ``fine_tuning.distillation`` is set.

    Call inside the fine-tuning strategy's scope. The teacher is ``teacher_source`` (the step's
    input model) under the default strategy, else a copy of it made there, so its variables
    belong to the strategy and its outputs are computed under it, like the student's.
    """
    config = getattr(fine_tuning, "distillation", None)
    if config is None:
        return student
    teacher = teacher_source
    if fine_tuning.strategy != "default":
        # Every layer can be re-created here: the student's copy needed that already.
        teacher = tf_keras.models.clone_model(teacher_source)
        teacher.set_weights(teacher_source.get_weights())
    return TeacherGuided(
        student, teacher, alpha=config.alpha, temperature=config.temperature, task=task
    )
