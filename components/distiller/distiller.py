"""Knowledge distillation on plain paths and objects (no TFX here).

:func:`distill` loads the teacher, builds the student (automatic or from a module file), checks
everything that can be checked before training, trains the student against the frozen teacher,
optionally trains the same student on labels alone for comparison, and returns the student (with
the teacher's output convention) and a JSON-ready record.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from components.common import artifact_output, legacy_keras, model_io, optimization, training
from components.common import examples as examples_lib
from components.common import metrics as metrics_lib
from components.common.examples import DataConfig
from components.common.keys import (
    DISTILLATION_RECORD_FILE,
    FINE_TUNING_EPOCHS,
    FINE_TUNING_WALL_TIME_S,
    OPTIMIZATION,
)
from components.distiller import student as student_lib
from components.distiller.config import DistillerConfig

log = logging.getLogger(__name__)


@dataclass
class DistillResult:
    """The trained student (as it is saved) and the record of how it was made."""

    student: object
    record: dict


def check_before_loading(config: DistillerConfig) -> None:
    """Checks that need no model: the student module file defines build_student."""
    if config.module_file:
        student_lib.load_build_student(config.module_file)


def use_mixed_precision(asked: bool) -> bool:
    """mixed_float16 only when asked for and a GPU is present; says so when it is ignored."""
    if not asked:
        return False
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        log.warning(
            "distiller: fine_tuning.mixed_precision=true is ignored: no GPU is present, so the "
            "student trains in float32 (mixed_float16 is slower than float32 on CPU)."
        )
        return False
    return True


def _make_optimizer(config: DistillerConfig, steps_per_epoch: int, mixed: bool):
    import tf_keras

    train = config.fine_tuning
    schedule = training.warmup_cosine_schedule(
        train.learning_rate,
        total_steps=max(train.epochs, 1) * steps_per_epoch,
        warmup_steps=round(train.warmup_epochs * steps_per_epoch),
        final_learning_rate_fraction=train.final_learning_rate_fraction,
    )
    optimizer = training.make_optimizer(train, learning_rate=schedule)
    if mixed:
        optimizer = tf_keras.mixed_precision.LossScaleOptimizer(optimizer)
    return optimizer


def _build_student(config: DistillerConfig, teacher):
    if config.module_file:
        return student_lib.build_module_student(config.module_file, teacher)
    return student_lib.build_auto_student(teacher, config.student_width_multiplier, config.depth)


def _fresh_copy(student, config: DistillerConfig, teacher, initial_weights):
    """The same student architecture with the same initial weights (for the label-only run)."""
    import tf_keras

    try:
        twin = tf_keras.models.clone_model(student)
    except (ValueError, TypeError, NotImplementedError):
        twin, _ = _build_student(config, teacher)
    twin.set_weights(initial_weights)
    return twin


def _train_dataset(examples_uri, data, teacher, config: DistillerConfig):
    train = config.fine_tuning
    return examples_lib.make_dataset(
        examples_uri,
        data.train_split,
        data,
        teacher,
        batch_size=train.batch_size,
        shuffle=True,
        seed=train.seed,
        limit=train.max_train_examples,
    )


def _logits_task(task):
    """The task as the trained twin sees it: logits out (values for regression)."""
    from components.common.metrics import Task

    return Task(task.kind, task.output_shape, task.kind != "regression", task.reason)


def _label_only(student, initial_weights, inputs, examples_uri, data, config) -> dict:
    """Trains the same student on labels alone: same epochs, seed, data order and schedule."""
    import tf_keras

    teacher, eval_ds, task, mixed = inputs.teacher, inputs.eval_ds, inputs.task, inputs.mixed
    with inputs.strategy.scope():
        tf_keras.utils.set_random_seed(config.fine_tuning.seed)
        train_ds = _train_dataset(examples_uri, data, teacher, config)
        baseline = _fresh_copy(student, config, teacher, initial_weights)
        probabilities = training.outputs_squashed(baseline)
        twin, shares = student_lib.training_copy(baseline, probabilities, mixed)
        logits_task = _logits_task(task)
        twin.compile(
            optimizer=_make_optimizer(config, inputs.steps, mixed),
            loss=training.default_loss(logits_task),
            metrics=[training.task_metric(logits_task)],
        )
    run = training.fit(
        twin, train_ds, eval_ds, config.fine_tuning, name="label-only student", task=logits_task
    )
    if not shares:
        baseline.set_weights(twin.get_weights())
    return {
        "eval_accuracy": training.accuracy(baseline, eval_ds, task),
        "epochs_run": run["epochs_run"],
        "wall_time_s": run["wall_time_s"],
        "history": run["history"],
    }


@dataclass
class _Inputs:
    """What distillation reads before any model is built: the teacher, its task and the data."""

    teacher: object
    task: object
    teacher_probabilities: bool
    eval_ds: object
    train_examples: int
    steps: int
    strategy: object
    mixed: bool


@dataclass
class _Student:
    """The student being trained and what training it needs."""

    student: object
    report: object
    pairs: list
    initial_weights: list
    probabilities: bool
    twin: object
    shares: bool
    trainer: object
    train_ds: object


def _read_inputs(teacher_uri, examples_uri, data: DataConfig, config: DistillerConfig) -> _Inputs:
    train_cfg = config.fine_tuning
    mixed = use_mixed_precision(train_cfg.mixed_precision)
    strategy = training.make_strategy(train_cfg.strategy)
    with strategy.scope():
        teacher = model_io.load_keras_model(teacher_uri)
    task = examples_lib.resolve_task(examples_uri, data, teacher)
    teacher_probabilities = (
        training.outputs_squashed(teacher)
        if config.teacher_outputs == "auto"
        else config.teacher_outputs == "probabilities"
    )
    # Data problems surface here (make_dataset checks the mapping), before any model is built.
    eval_ds = examples_lib.make_dataset(
        examples_uri, data.eval_split, data, teacher, batch_size=256, limit=config.max_eval_examples
    )
    train_examples = examples_lib.count_examples(examples_uri, data.train_split)
    if train_cfg.max_train_examples:
        train_examples = min(train_examples, train_cfg.max_train_examples)
    steps = max(math.ceil(train_examples / train_cfg.batch_size), 1)
    return _Inputs(
        teacher, task, teacher_probabilities, eval_ds, train_examples, steps, strategy, mixed
    )


def _make_student(inputs: _Inputs, examples_uri, data: DataConfig, config) -> _Student:
    import tf_keras

    from components.distiller import student_trainer

    teacher = inputs.teacher
    with inputs.strategy.scope():
        # The global seed fixes the data order (with the shuffle's own seed) and the initial
        # weights; the label-only run sets it again to get the same order.
        tf_keras.utils.set_random_seed(config.fine_tuning.seed)
        train_ds = _train_dataset(examples_uri, data, teacher, config)
        student, report = _build_student(config, teacher)
        student_lib.check_compatible(teacher, student, inputs.task.kind)
        pairs = student_trainer.resolve_feature_pairs(teacher, student, config.feature_pairs)
        initial_weights = student.get_weights()
        probabilities = training.outputs_squashed(student)
        twin, shares = student_lib.training_copy(student, probabilities, inputs.mixed)
        trainer = student_trainer.DistillationModel(
            twin,
            teacher,
            teacher_outputs_probabilities=inputs.teacher_probabilities,
            alpha=config.alpha,
            beta=config.beta,
            gamma=config.gamma,
            temperature=config.temperature,
            feature_pairs=pairs,
            task=_logits_task(inputs.task),
        )
        trainer.compile(optimizer=_make_optimizer(config, inputs.steps, inputs.mixed))
    return _Student(
        student, report, pairs, initial_weights, probabilities, twin, shares, trainer, train_ds
    )


def _trained_student(made: _Student, inputs: _Inputs):
    """The served student after training: the twin's weights, the teacher's output convention."""
    student = made.student
    if not made.shares:
        student.set_weights(made.twin.get_weights())
    if made.report.source == "module_file":
        student = student_lib.match_output_convention(
            student,
            made.probabilities,
            inputs.teacher_probabilities,
            "sigmoid" if inputs.task.kind in ("binary", "multilabel") else "softmax",
        )
    return student


def _record(teacher_uri, config, inputs: _Inputs, made: _Student, student, run, figures):
    import tensorflow as tf

    task, teacher = inputs.task, inputs.teacher
    teacher_accuracy, student_accuracy, label_only = figures
    teacher_params, student_params = teacher.count_params(), student.count_params()
    return {
        "teacher": {
            "uri": teacher_uri,
            "parameters": teacher_params,
            "eval_accuracy": teacher_accuracy,
            "outputs": "probabilities" if inputs.teacher_probabilities else "logits",
        },
        "student": {
            "parameters": student_params,
            "eval_accuracy": student_accuracy,
            "outputs": "probabilities" if training.outputs_squashed(student) else "logits",
            "architecture": made.report.as_dict(),
        },
        "parameter_ratio": student_params / teacher_params,
        "task": task.to_dict(),
        # Before: the teacher; after: the student. metric_worse_by is positive when the student
        # is worse, in the metric's own direction (MAE up, accuracy down).
        **optimization.metric_fields(task, teacher_accuracy, student_accuracy),
        "label_only": label_only,
        "distillation_gain": (
            metrics_lib.worse_by(task, student_accuracy, label_only["eval_accuracy"])
            if label_only
            else None
        ),
        "loss": {
            "alpha": config.alpha,
            "beta": config.beta,
            "gamma": config.gamma,
            "temperature": config.temperature,
            "feature_pairs": [p.__dict__ for p in made.pairs],
        },
        "fine_tuning": {
            "config": config.fine_tuning.model_dump(),
            "epochs_run": run["epochs_run"],
            "wall_time_s": run["wall_time_s"],
            "train_examples": inputs.train_examples,
            "steps_per_epoch": inputs.steps,
            "mixed_precision": inputs.mixed,
            "replicas": inputs.strategy.num_replicas_in_sync,
            "history": run["history"],
        },
        "eval_examples": sum(int(y.shape[0]) for _, y in inputs.eval_ds),
        "tensorflow_version": tf.__version__,
    }


def distill(
    teacher_uri: str, examples_uri: str, data: DataConfig, config: DistillerConfig
) -> DistillResult:
    """Distils the teacher at ``teacher_uri`` into a student; see the module docstring.

    Reads the teacher and the data (:func:`_read_inputs`), builds the student and its trainer
    (:func:`_make_student`), trains it, hands back the served student (:func:`_trained_student`)
    and, when asked, the same student trained on the labels alone (:func:`_label_only`).

    Raises:
      ConfigError, ModelInputError, DataError: before any training, naming the problem.
    """
    started = time.time()
    check_before_loading(config)
    legacy_keras.skip_autograph_for_tf_keras()
    inputs = _read_inputs(teacher_uri, examples_uri, data, config)
    made = _make_student(inputs, examples_uri, data, config)
    log.warning(
        "distiller: teacher %d params -> student %d params (%s); %d train examples, %d steps/epoch",
        inputs.teacher.count_params(),
        made.student.count_params(),
        made.report.source,
        inputs.train_examples,
        inputs.steps,
    )
    task = _logits_task(inputs.task)
    run = training.fit(
        made.trainer, made.train_ds, inputs.eval_ds, config.fine_tuning, "distillation", task=task
    )
    student = _trained_student(made, inputs)
    teacher_accuracy = training.accuracy(inputs.teacher, inputs.eval_ds, inputs.task)
    student_accuracy = training.accuracy(student, inputs.eval_ds, inputs.task)
    label_only = None
    if config.label_only_baseline:
        label_only = _label_only(student, made.initial_weights, inputs, examples_uri, data, config)
    figures = (teacher_accuracy, student_accuracy, label_only)
    record = _record(teacher_uri, config, inputs, made, student, run, figures)
    record["wall_time_s"] = time.time() - started
    log.warning("distiller: %s", key_numbers(record))
    return DistillResult(student, record)


def run(
    model_uri: str,
    examples_uri: str,
    output_uri: str,
    config: DistillerConfig,
    data: DataConfig,
) -> dict:
    """Distils the model at ``model_uri`` (the teacher) into a student written at ``output_uri``.

    Writes ``Format-Serving/`` (the student) and ``distillation.json`` (the record); everything
    that can fail (checks, training, evaluation) happens first, so nothing when anything fails.

    Returns:
      The record.
    """
    from components.common import signatures

    # The teacher's serving signatures, rebuilt around the student: their wrappers checked first.
    teacher = model_io.load_keras_model(model_uri, shared=True)
    interface = signatures.interface_for(model_uri, teacher, examples_uri, data)
    interface.check_wrappers(teacher)
    result = distill(model_uri, examples_uri, data, config)
    result.record["serving_signatures"] = interface.describe()
    artifact_output.write_model(
        output_uri,
        model=result.student,
        json_files={DISTILLATION_RECORD_FILE: result.record},
        interface=interface,
    )
    return result.record


def key_numbers(record: dict) -> dict:
    """The figures stored as custom properties on the student Model artifact."""
    label_only = record.get("label_only") or {}
    return {
        OPTIMIZATION: "distilled",
        "teacher_parameters": record["teacher"]["parameters"],
        "student_parameters": record["student"]["parameters"],
        "parameter_ratio": record["parameter_ratio"],
        **optimization.metric_numbers(record),
        "label_only_metric": label_only.get("eval_accuracy"),
        "distillation_gain": record.get("distillation_gain"),
        "alpha": record["loss"]["alpha"],
        "beta": record["loss"]["beta"],
        "gamma": record["loss"]["gamma"],
        "temperature": record["loss"]["temperature"],
        FINE_TUNING_EPOCHS: record["fine_tuning"]["epochs_run"],
        FINE_TUNING_WALL_TIME_S: record["fine_tuning"]["wall_time_s"],
        "total_wall_time_s": record["wall_time_s"],
        "eval_examples": record["eval_examples"],
    }
