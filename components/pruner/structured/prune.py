"""Orchestration: check, then score / select / rebuild / fine-tune in steps; the ``run`` entry."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from components.common import legacy_keras, training
from components.common.errors import ConfigError, ModelInputError
from components.pruner.structured.graph import PRODUCER, ChannelPlan, analyze, layout_width
from components.pruner.structured.rebuilding import rebuild
from components.pruner.structured.record import FIELD, HISTORY_FILE, RECORD_FILE, build_report
from components.pruner.structured.scores import channel_scores
from components.pruner.structured.selection import select_channels
from components.pruner.structured_config import DATA_CRITERIA, StructuredPruningConfig

log = logging.getLogger(__name__)


def _check_names(model, plan: ChannelPlan, config: StructuredPruningConfig) -> None:
    for field_name, names in (("skip_layers", config.skip_layers), ("per_layer", config.per_layer)):
        missing = sorted(n for n in names if n not in plan.layers)
        if missing:
            raise ConfigError(
                f"{FIELD}.{field_name}: no layer named {missing} in model {model.name!r} "
                f"(layers: {sorted(plan.layers)})"
            )
    for name in config.per_layer:
        if plan.layers[name].kind != PRODUCER:
            raise ConfigError(
                f"{FIELD}.per_layer.{name}: {name} is a {plan.layers[name].type}; only Conv/Dense "
                "layers have filters or units to remove"
            )
        group = plan.group_of(name)
        if group is not None and group.blocked and config.per_layer[name] > 0:
            raise ConfigError(
                f"{FIELD}.per_layer.{name}: the output channels of {name} cannot be removed ("
                + "; ".join(group.blocked)
                + "); drop it from per_layer"
            )


def check_model(model, config: StructuredPruningConfig) -> ChannelPlan:
    """Checks the model against the config before any heavy work; returns the plan.

    Raises:
      ModelInputError: a subclassed model, or nothing in the model can be pruned.
      ConfigError: a layer named in per_layer or skip_layers is missing, or per_layer names a
        layer whose channels cannot be removed.
    """
    plan = analyze(model, config.skip_layers)
    _check_names(model, plan, config)
    if config.target_fraction > 0 and not plan.prunable_groups:
        skipped = "; ".join(f"{s['layer']}: {s['reason']}" for s in plan.skipped_layers())
        raise ModelInputError(
            f"model {model.name!r} has no Conv/Dense layer whose output channels can be removed "
            f"({skipped or 'no Conv/Dense layers'})."
        )
    return plan


def _check_data(config: StructuredPruningConfig, train_ds, eval_ds) -> None:
    if config.criterion in DATA_CRITERIA and train_ds is None:
        raise ConfigError(f"{FIELD}.criterion {config.criterion!r} needs the train split")
    if config.fine_tuning.epochs > 0 and train_ds is None:
        raise ConfigError(f"{FIELD}.fine_tuning.epochs > 0 needs the train split")
    if config.accuracy_floor is not None and eval_ds is None:
        raise ConfigError(f"{FIELD}.accuracy_floor needs the eval split")


def _measure(model, eval_ds) -> dict:
    from components.common.flops import model_flops

    flops = model_flops(model)
    return {
        "parameters": int(model.count_params()),
        "flops_per_example": int(flops["flops_per_example"]),
        "accuracy": training.accuracy(model, eval_ds) if eval_ds is not None else None,
    }


@dataclass(frozen=True)
class _StepInputs:
    """What every pruning step reads."""

    train_ds: object
    eval_ds: object
    config: StructuredPruningConfig
    original_channels: dict[str, int]  # producer -> output channels before any step
    strategy: object
    compile_args: object = None  # training.CompileArgs, or None for the classifier default


def _own_metrics(args):
    """``args`` with copies of its metric objects: a metric keeps its running state, so models
    compiled one after another (one per step) must not share one."""
    from tf_keras.src.metrics import clone_metrics

    metrics = clone_metrics(list(args.metrics))
    return training.CompileArgs(args.task, args.loss, metrics, args.source, args.training_config)


def _fine_tune(candidate, step: int, inputs: _StepInputs) -> dict:
    """Fine-tunes ``candidate`` in place; returns training.fit's result."""
    import tf_keras

    tuning = inputs.config.fine_tuning
    tf_keras.utils.set_random_seed(tuning.seed + step)
    with inputs.strategy.scope():
        if inputs.compile_args is None:
            training.compile_classifier(candidate, tuning)
        else:
            training.compile_for_task(candidate, tuning, _own_metrics(inputs.compile_args))
    return training.fit(
        candidate, inputs.train_ds, inputs.eval_ds, tuning, f"structured pruning {step}"
    )


def _prune_step(model, plan: ChannelPlan, step: int, inputs: _StepInputs):
    """One step: score, select, rebuild, fine-tune. Returns (new model, step record)."""
    config = inputs.config
    progress = step / config.steps
    scores = channel_scores(model, plan, config.criterion, inputs.train_ds, config.score_batches)
    keep = select_channels(plan, scores, config, progress, inputs.original_channels)
    with inputs.strategy.scope():
        candidate = rebuild(model, plan, keep)
    pruned = _measure(candidate, inputs.eval_ds)
    fine_tuning = {"epochs_run": 0, "wall_time_s": 0.0, "history": []}
    accuracy_after = pruned["accuracy"]
    if config.fine_tuning.epochs > 0:
        fine_tuning = _fine_tune(candidate, step, inputs)
        if inputs.eval_ds is not None:
            accuracy_after = training.accuracy(candidate, inputs.eval_ds)
    return candidate, {
        "step": step,
        "fraction": config.target_fraction * progress,
        "parameters": pruned["parameters"],
        "flops_per_example": pruned["flops_per_example"],
        "accuracy_before_fine_tuning": pruned["accuracy"],
        "accuracy_after_fine_tuning": accuracy_after,
        "fine_tuning_epochs": fine_tuning["epochs_run"],
        "fine_tuning_wall_time_s": fine_tuning["wall_time_s"],
        "fine_tuning_history": fine_tuning["history"],
    }


def _log_step(config, record: dict, flops_before: int) -> None:
    log.warning(
        "structured pruning step %d/%d: fraction %.3f, FLOPs %d -> %d, accuracy %s -> %s",
        record["step"],
        config.steps,
        record["fraction"],
        flops_before,
        record["flops_per_example"],
        record["accuracy_before_fine_tuning"],
        record["accuracy_after_fine_tuning"],
    )


class _Steps:
    """The pruning steps: the last accepted model, its plan and figures, and each step's record."""

    def __init__(self, model, plan: ChannelPlan, before: dict):
        self.model, self.plan, self.metrics = model, plan, before
        self.records: list[dict] = []
        self.stopped_reason = "target reached"

    def run(self, inputs: _StepInputs) -> None:
        """Prunes step by step until the target, or until a step falls below the floor."""
        config = inputs.config
        for step in range(1, config.steps + 1):
            candidate, record = _prune_step(self.model, self.plan, step, inputs)
            _log_step(config, record, self.metrics["flops_per_example"])
            accuracy = record["accuracy_after_fine_tuning"]
            record["accepted"] = config.accuracy_floor is None or accuracy >= config.accuracy_floor
            self.records.append(record)
            if not record["accepted"]:
                kept = f"the model of step {step - 1}" if step > 1 else "the unpruned model"
                self.stopped_reason = (
                    f"accuracy {accuracy:.4f} after step {step} is below the floor "
                    f"{config.accuracy_floor}; kept {kept}"
                )
                return
            self.model, self.plan = candidate, analyze(candidate, config.skip_layers)
            self.metrics = {
                "parameters": record["parameters"],
                "flops_per_example": record["flops_per_example"],
                "accuracy": accuracy,
            }

    def summary(self) -> dict:
        """The report's step part."""
        last = next((r for r in reversed(self.records) if r["accepted"]), None)
        return {
            "stopped_reason": self.stopped_reason,
            "steps_run": len(self.records),
            "steps_accepted": sum(1 for r in self.records if r["accepted"]),
            "steps": self.records,
            "accuracy_before_fine_tuning": last["accuracy_before_fine_tuning"] if last else None,
            "accuracy_after_fine_tuning": last["accuracy_after_fine_tuning"] if last else None,
        }


def structured_prune(model, train_ds, eval_ds, config: StructuredPruningConfig, compile_args=None):
    """Removes filters and units from ``model`` as ``config`` says; returns (new model, report).

    With ``config.steps`` > 1 the target is reached in equal steps, each fine-tuned; a step
    whose eval accuracy after fine-tuning falls below ``config.accuracy_floor`` is discarded
    and pruning stops with the model of the step before (an unpruned copy after step 1).

    Args:
      model: a built Sequential or functional tf_keras classifier (not changed).
      train_ds: batched (inputs, labels) for the data criteria and fine-tuning (capped by the
        caller, e.g. ``make_dataset(..., limit=fine_tuning.max_train_examples)``), or None when
        neither is used.
      eval_ds: batched (inputs, labels) for accuracy, or None (no accuracy, no floor).
      config: the structured pruning config.
      compile_args: the loss and metrics fine-tuning compiles with
        (:func:`training.compile_args`); default: sparse categorical cross-entropy.

    Returns:
      The rebuilt model (fine-tuned when configured; compiled when fine-tuned) and a JSON-ready
      report: ``layers`` (channels_before/after per Conv/Dense/DepthwiseConv/BN layer),
      ``parameters_before/after``, ``flops_before/after`` (per example), their ratios,
      ``accuracy_before`` (input model), ``accuracy_before_fine_tuning`` and
      ``accuracy_after_fine_tuning`` (last accepted step), ``accuracy_after`` (returned model),
      ``achieved_fraction``, ``skipped_layers`` (layer, type, reason), ``groups``, ``steps``
      and ``stopped_reason``.

    Raises:
      ConfigError, ModelInputError, DataError: before any heavy work where possible.
    """
    started = time.time()
    plan = check_model(model, config)
    _check_data(config, train_ds, eval_ds)
    legacy_keras.skip_autograph_for_tf_keras()
    original_channels = {
        name: layout_width(lp.output_layout)
        for name, lp in plan.layers.items()
        if lp.kind == PRODUCER
    }
    before = _measure(model, eval_ds)
    strategy = training.make_local_strategy(config.fine_tuning.strategy)
    steps = _Steps(model, plan, before)
    steps.run(_StepInputs(train_ds, eval_ds, config, original_channels, strategy, compile_args))
    # Nothing accepted: hand back a copy, so the caller never shares the input's weights.
    current = rebuild(model, plan, {}) if steps.model is model else steps.model
    report = build_report(plan, steps.plan, original_channels, before, steps.metrics, config)
    report.update(steps.summary(), wall_time_s=time.time() - started)
    return current, report


def run(
    model_uri: str,
    examples_uri: str,
    output_uri: str,
    config: StructuredPruningConfig,
    data,
) -> dict:
    """Prunes the model at ``model_uri`` and writes the new model artifact at ``output_uri``.

    The shared :func:`~components.common.optimization.run_technique` loads the model, checks it
    (:func:`check_model`) before any data is read, makes the datasets and writes the artifact.
    The train split (shuffled, capped at ``fine_tuning.max_train_examples``) feeds the data
    criteria and fine-tuning; the eval split feeds accuracy. Writes ``Format-Serving/``,
    ``structured_pruning.json`` (the report) and ``fine_tuning_history.json`` (per step);
    nothing when anything fails.

    Args:
      model_uri: a Model artifact or SavedModel directory (tf_keras).
      examples_uri: TFX Examples with the train and eval splits ``data`` names.
      output_uri: the output Model artifact's directory.
      config: the structured pruning config.
      data: a :class:`~components.common.examples.DataConfig`.

    Returns:
      The report.
    """
    from components.common import optimization

    def optimize(model, train_ds, eval_ds, _steps_per_epoch, compile_args):
        train = train_ds if config.needs_train_data else None
        new_model, report = structured_prune(model, train, eval_ds, config, compile_args)
        history = {str(s["step"]): s.pop("fine_tuning_history") for s in report["steps"]}
        report["config"] = config.model_dump(mode="json")
        # What is measured here is top-1 accuracy: the record's before/after figures say so.
        report.update(
            optimization.metric_fields(
                training.classifier_task(model), report["accuracy_before"], report["accuracy_after"]
            )
        )
        return new_model, report, history

    return optimization.run_technique(
        model_uri,
        examples_uri,
        data,
        config,
        output_uri,
        plan=check_model,
        optimize=optimize,
        record_file=RECORD_FILE,
        history_file=HISTORY_FILE,
    )
