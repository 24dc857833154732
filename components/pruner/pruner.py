"""Magnitude pruning with fine-tuning, on plain objects and paths (no TFX here).

The selected layers are wrapped with tensorflow-model-optimization's ``prune_low_magnitude``,
fine-tuned on the train split with ``UpdatePruningStep`` (masks follow the configured schedule),
then stripped: the saved model is an ordinary tf_keras model whose pruned kernels hold zeros.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np

from components.common import layer_report, optimization, sensitivity, training
from components.common import weights as weights_lib
from components.common.errors import ConfigError, ModelInputError
from components.common.examples import DataConfig
from components.common.keys import (
    FINE_TUNING_EPOCHS,
    FINE_TUNING_WALL_TIME_S,
    HISTORY_FILE,
    MODEL_SPARSITY,
    OPTIMIZATION,
    PRUNING_RECORD_FILE,
)
from components.pruner.config import XNNPACK_POLICY, PrunerConfig

log = logging.getLogger(__name__)

FIELD = "pruner"

# Custom property names of the output Model artifact.
TARGET_SPARSITY = "target_sparsity"
ACHIEVED_SPARSITY = "achieved_sparsity"
PER_LAYER_SPARSITY = "per_layer_sparsity"


def prunable_weights(layer) -> list | None:
    """The weights pruning acts on ([] for none), or None when the toolkit cannot wrap the layer."""
    from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry

    if hasattr(layer, "get_prunable_weights"):  # PrunableLayer, or made prunable before
        return list(layer.get_prunable_weights())
    if prune_registry.PruneRegistry.supports(layer):
        return list(prune_registry.PruneRegistry.make_prunable(layer).get_prunable_weights())
    return None


def plan(model, config: PrunerConfig) -> optimization.Selection:
    """Checks the model against the config and picks the layers to prune, before any training.

    Raises:
      ModelInputError: a subclassed model, an unsupported selected layer, or a model that does
        not fit the XNNPACK policy; the message names the layer and the way out.
      ConfigError: the selection or block settings do not fit the model's layers.
    """
    optimization.check_functional(model, "pruning", f"{FIELD}.layers")
    selection = optimization.select_layers(
        model, config.layers, prunable_weights, "pruning", f"{FIELD}.layers"
    )
    if config.pruning_policy == XNNPACK_POLICY:
        selection = _apply_xnnpack_policy(model, config, selection)
    if config.layers.selects_all:
        selection = _leave_out_tiny(model, selection)
    for name in selection.selected:
        ranks = [len(w.shape) for w in prunable_weights(model.get_layer(name))]
        if config.block_size != (1, 1) and any(r != 2 for r in ranks):
            raise ConfigError(
                f"{FIELD}.block_size {list(config.block_size)}: block sparsity applies to 2-D "
                f"kernels (Dense) only, but layer {name!r} has weights of rank {ranks}. Select the "
                f"Dense layers ({FIELD}.layers.types: [Dense]) or use block_size [1, 1]."
            )
        if config.sparsity_m_by_n is not None and any(r not in (2, 4) for r in ranks):
            raise ConfigError(
                f"{FIELD}.sparsity_m_by_n: m-by-n sparsity applies to Dense and Conv2D kernels, "
                f"but layer {name!r} has weights of rank {ranks}; leave it out with "
                f"{FIELD}.layers."
            )
    return selection


# Selecting every layer leaves out those with fewer prunable weights than this: pruning a 2x4
# output layer removes whole features for no measurable gain. Name a layer to prune it anyway.
MIN_PRUNABLE_WEIGHTS = 32


def _leave_out_tiny(model, selection: optimization.Selection) -> optimization.Selection:
    """Leaves out layers too small to prune, and records the layers the toolkit never prunes."""
    kept, skipped = [], dict(selection.skipped)
    for name in selection.selected:
        count = sum(int(np.prod(w.shape)) for w in prunable_weights(model.get_layer(name)))
        if count < MIN_PRUNABLE_WEIGHTS:
            skipped[name] = (
                f"left out: {count} prunable weights < {MIN_PRUNABLE_WEIGHTS} (too small to "
                f"prune; name it in {FIELD}.layers.names to prune it anyway)"
            )
        else:
            kept.append(name)
    for layer in model.layers:
        if layer.name not in skipped and layer.weights and prunable_weights(layer) == []:
            skipped[layer.name] = (
                f"not pruned: tensorflow-model-optimization prunes no weight of "
                f"{type(layer).__name__} (depthwise kernels, normalisation)"
            )
    if not kept:
        raise ConfigError(
            f"{FIELD}: every prunable layer has fewer than {MIN_PRUNABLE_WEIGHTS} weights "
            f"({skipped}); name the layers to prune in {FIELD}.layers.names or leave the "
            "pruner out."
        )
    return optimization.Selection(kept, skipped)


def layer_notes(model, names: list[str]) -> dict[str, str]:
    """What a reader should know about some pruned layers (embeddings)."""
    notes = {}
    for name in names:
        kind = type(model.get_layer(name)).__name__
        if kind == "Embedding":
            notes[name] = "embedding table: pruned entry by entry (rows of rare tokens lose most)"
    return notes


def _coverage(model, selection: optimization.Selection) -> dict:
    """The record's per-layer coverage, with a ``note`` on each pruned layer that needs one."""
    record = layer_report.coverage(
        model, selection, selection.selected, prunable_weights, "pruning", f"{FIELD}.layers"
    )
    notes = layer_notes(model, selection.selected)
    for entry in record["layers"]:
        if entry["layer"] in notes:
            entry["note"] = notes[entry["layer"]]
    return record


def _apply_xnnpack_policy(model, config, selection):
    import tensorflow_model_optimization as tfmot

    policy = tfmot.sparsity.keras.PruneForLatencyOnXNNPack()
    try:
        policy.ensure_model_supports_pruning(model)
    except ValueError as e:
        raise ModelInputError(
            f"{FIELD}.pruning_policy={XNNPACK_POLICY!r}: model {model.name!r} does not fit "
            f"PruneForLatencyOnXNNPack: {e}. The policy needs, in every branch, a ZeroPadding2D(1) "
            "followed by a 3x3 stride-2 'valid' Conv2D on 3 input channels, then only layers "
            "XNNPACK's sparse inference runs (1x1 Conv2D, DepthwiseConv2D, BatchNormalization, "
            "ReLU, Add, ...) up to a GlobalAveragePooling2D(keepdims=True). Set pruning_policy "
            f"to 'none' (choose layers with {FIELD}.layers) to prune this model."
        ) from None
    allowed = [n for n in selection.selected if policy.allow_pruning(model.get_layer(n))]
    named = [n for n in (config.layers.names or ()) if n not in allowed]
    if named:
        raise ConfigError(
            f"{FIELD}.layers.names {named}: PruneForLatencyOnXNNPack prunes 1x1 Conv2D layers "
            "only; remove them from the list."
        )
    if not allowed:
        raise ConfigError(
            f"{FIELD}: PruneForLatencyOnXNNPack found no 1x1 Conv2D among the selected layers "
            f"{selection.selected}."
        )
    skipped = dict(selection.skipped)
    for name in selection.selected:
        if name not in allowed:
            skipped[name] = "not a 1x1 Conv2D (PruneForLatencyOnXNNPack)"
    return optimization.Selection(allowed, skipped)


def resolve_schedule(config: PrunerConfig, steps_per_epoch: int) -> dict:
    """Turns the schedule (steps or epochs) into steps and checks that the target is reached.

    Mask updates happen at steps ``begin + k * frequency``; the end step is rounded down to such a
    step, because the toolkit reaches the final sparsity only if it updates at the end step.

    Raises:
      ConfigError: the target would not be reached within the fine-tuning steps.
    """
    epochs = config.fine_tuning.epochs
    total = epochs * steps_per_epoch
    s = config.schedule
    begin = s.begin_step
    if begin is None:
        begin = int(round((s.begin_epoch or 0) * steps_per_epoch))
    frequency = s.frequency_steps
    resolved = {
        "kind": "m_by_n" if config.sparsity_m_by_n else s.kind,
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total,
        "begin_step": begin,
        "frequency_steps": frequency,
    }
    if config.sparsity_m_by_n is not None:
        # The toolkit fixes an m-by-n mask once, at the first training step.
        resolved.update(begin_step=0, end_step=1, last_mask_update_step=1)
        return resolved
    first_update = begin if begin >= 1 else frequency
    if s.kind == "constant":
        if first_update > total:
            raise ConfigError(
                f"{FIELD}.schedule: the first mask update (step {first_update}) comes after the "
                f"last fine-tuning step ({total} = {epochs} epochs x {steps_per_epoch} steps); "
                f"lower {FIELD}.schedule.begin_step/frequency_steps or raise "
                f"{FIELD}.fine_tuning.epochs."
            )
        resolved.update(end_step=-1, last_mask_update_step=first_update)
        return resolved
    if s.end_step is not None:
        end, end_field = s.end_step, "end_step"
    elif s.end_epoch is not None:
        end, end_field = int(round(s.end_epoch * steps_per_epoch)), "end_epoch"
    else:
        # Halfway: the second half of fine-tuning recovers accuracy at the target sparsity.
        end, end_field = max(1, epochs // 2) * steps_per_epoch, "end_epoch (default)"
    if end <= begin:
        raise ConfigError(
            f"{FIELD}.schedule.{end_field}: pruning would end at step {end}, not after it begins "
            f"(step {begin}); {steps_per_epoch} steps per epoch."
        )
    aligned = begin + max(1, (end - begin) // frequency) * frequency
    if aligned > total:
        raise ConfigError(
            f"{FIELD}.schedule.{end_field}: the target sparsity would be reached at step "
            f"{aligned}, after the last fine-tuning step ({total} = {epochs} epochs x "
            f"{steps_per_epoch} steps per epoch); raise {FIELD}.fine_tuning.epochs or end "
            "pruning earlier."
        )
    resolved.update(end_step=aligned, last_mask_update_step=aligned)
    return resolved


def _pruning_params(config: PrunerConfig, schedule: dict) -> dict:
    import tensorflow_model_optimization as tfmot

    keras_sparsity = tfmot.sparsity.keras
    if schedule["kind"] == "constant":
        pruning_schedule = keras_sparsity.ConstantSparsity(
            config.target_sparsity,
            begin_step=schedule["begin_step"],
            end_step=-1,
            frequency=schedule["frequency_steps"],
        )
    else:
        # For m-by-n the schedule only has to exist: the mask is fixed at step 1.
        pruning_schedule = keras_sparsity.PolynomialDecay(
            initial_sparsity=config.schedule.initial_sparsity,
            final_sparsity=config.effective_sparsity,
            begin_step=schedule["begin_step"],
            end_step=schedule["end_step"],
            power=config.schedule.power,
            frequency=schedule["frequency_steps"],
        )
    params = {
        "pruning_schedule": pruning_schedule,
        "block_size": tuple(config.block_size),
        "block_pooling_type": config.block_pooling,
    }
    if config.sparsity_m_by_n is not None:
        params["sparsity_m_by_n"] = tuple(config.sparsity_m_by_n)
    return params


def magnitude_pruned(values: np.ndarray, sparsity: float) -> np.ndarray:
    """``values`` with the ``sparsity`` fraction of smallest magnitudes set to zero (one shot, as
    magnitude pruning ends; block and m-by-n patterns are approximated by this)."""
    count = int(round(values.size * sparsity))
    if count <= 0:
        return values
    flat = values.reshape(-1).copy()
    flat[np.argsort(np.abs(flat), kind="stable")[:count]] = 0
    return flat.reshape(values.shape)


def layer_sparsity(model, names: list[str]) -> dict[str, dict]:
    """Zeros in the prunable weights of each named layer of a (stripped) model."""
    result = {}
    for name in names:
        tensors = [np.asarray(w.numpy()) for w in prunable_weights(model.get_layer(name))]
        count = int(sum(t.size for t in tensors))
        zeros = int(sum(t.size - np.count_nonzero(t) for t in tensors))
        result[name] = {
            "type": type(model.get_layer(name)).__name__,
            "weights": count,
            "zeros": zeros,
            "sparsity": zeros / count if count else 0.0,
        }
    return result


def prune_model(
    model, train_ds, eval_ds, config: PrunerConfig, steps_per_epoch: int, compile_args=None
):
    """Prunes and fine-tunes ``model`` (not changed); returns (stripped model, record, history).

    Args:
      model: a Sequential or functional tf_keras classifier.
      train_ds / eval_ds: batched (inputs, labels) datasets (global batch = fine_tuning.batch_size).
      config: the Pruner configuration.
      steps_per_epoch: batches per epoch of ``train_ds`` (turns epochs into steps).
      compile_args: loss, metrics and task (:func:`training.compile_args`); default multiclass.
    """
    import tensorflow_model_optimization as tfmot

    started = time.time()
    selection = plan(model, config)
    schedule = resolve_schedule(config, steps_per_epoch)
    params = _pruning_params(config, schedule)
    task = optimization.task_of(compile_args, model)
    accuracy_before = training.accuracy(model, eval_ds, task)
    log.warning(
        "pruner: pruning %s to sparsity %.3f (%s), eval %s before %.4f",
        selection.selected,
        config.effective_sparsity,
        schedule["kind"],
        task.metric,
        accuracy_before,
    )
    # Weights from before the last mask update are not at the target sparsity yet.
    stop_from = math.ceil(schedule["last_mask_update_step"] / steps_per_epoch)

    def tune(layers):
        return optimization.fine_tune_wrapped(
            model,
            layers,
            lambda layer: tfmot.sparsity.keras.prune_low_magnitude(layer, **params),
            tfmot.sparsity.keras.strip_pruning,
            train_ds,
            eval_ds,
            config.fine_tuning,
            "pruner",
            callbacks=[tfmot.sparsity.keras.UpdatePruningStep()],
            early_stopping_from_epoch=stop_from,
            compile_args=compile_args,
        )

    control = one_shot = None
    if config.accuracy_control is not None or config.layer_sensitivity:
        one_shot = sensitivity.one_shot_drops(
            model,
            selection.selected,
            prunable_weights,
            lambda values: magnitude_pruned(values, config.effective_sparsity),
            eval_ds,
            task,
            accuracy_before,
        )
    if config.accuracy_control is None:
        tuned = tune(selection.selected)
        accuracy_after = training.accuracy(tuned.model, eval_ds, task)
    else:
        tuned, pruned, accuracy_after, control = sensitivity.controlled_fine_tune(
            model,
            selection.selected,
            tune,
            eval_ds,
            task,
            accuracy_before,
            config.accuracy_control,
            one_shot,
            "layers left unpruned",
        )
        selection = selection.keeping(pruned, "left out by accuracy_control")
    stripped = tuned.model
    per_layer = layer_sparsity(stripped, selection.selected)
    for name, entry in per_layer.items():
        entry["target_sparsity"] = config.effective_sparsity
        if entry["sparsity"] + 0.01 < config.effective_sparsity:
            log.warning("pruner: layer %s reached sparsity %.3f only", name, entry["sparsity"])
    pruned_weights = sum(e["weights"] for e in per_layer.values())
    pruned_zeros = sum(e["zeros"] for e in per_layer.values())
    kernels = weights_lib.kernel_stats(weights_lib.keras_weight_stats(stripped))
    record = {
        "technique": "pruning",
        "config": config.model_dump(mode="json"),
        "schedule": schedule,
        "pruned_layers": selection.selected,
        "skipped_layers": selection.skipped,
        "coverage": _coverage(model, selection),
        "kernel_numbers": layer_report.kernel_numbers(stripped, selection.selected),
        "layers": per_layer,
        "target_sparsity": config.effective_sparsity,
        "achieved_sparsity": pruned_zeros / pruned_weights if pruned_weights else 0.0,
        "model_sparsity": weights_lib.summarize(kernels)["sparsity"],
        **optimization.metric_fields(task, accuracy_before, accuracy_after),
        "fine_tuning": tuned.record_section(config.fine_tuning),
        "wall_time_s": time.time() - started,
    }
    if one_shot is not None:
        record["layer_sensitivity"] = {"method": "one_shot", "layers": one_shot}
    if control is not None:
        record["accuracy_control"] = control
    log.warning(
        "pruner: sparsity %.4f, eval %s %.4f -> %.4f",
        record["achieved_sparsity"],
        task.metric,
        accuracy_before,
        accuracy_after,
    )
    return stripped, record, tuned.fit["history"]


def run(
    model_uri: str, examples_uri: str, output_uri: str, config: PrunerConfig, data: DataConfig
) -> dict:
    """Prunes the model at ``model_uri`` and writes the new model artifact at ``output_uri``.

    Writes ``Format-Serving/`` (the stripped SavedModel), ``pruning.json`` (the record) and
    ``fine_tuning_history.json``; nothing when anything fails.

    Returns:
      The record.
    """
    return optimization.run_technique(
        model_uri,
        examples_uri,
        data,
        config,
        output_uri,
        plan=plan,
        optimize=lambda model, train_ds, eval_ds, steps, args: prune_model(
            model, train_ds, eval_ds, config, steps, args
        ),
        record_file=PRUNING_RECORD_FILE,
        history_file=HISTORY_FILE,
    )


def key_numbers(record: dict) -> dict:
    """The custom properties of the output Model artifact."""
    return {
        OPTIMIZATION: "pruned",
        TARGET_SPARSITY: record["target_sparsity"],
        ACHIEVED_SPARSITY: record["achieved_sparsity"],
        MODEL_SPARSITY: record["model_sparsity"],
        PER_LAYER_SPARSITY: {n: round(e["sparsity"], 6) for n, e in record["layers"].items()},
        **optimization.metric_numbers(record),
        FINE_TUNING_EPOCHS: record["fine_tuning"]["epochs_run"],
        FINE_TUNING_WALL_TIME_S: record["fine_tuning"]["wall_time_s"],
    }
