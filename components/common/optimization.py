"""Shared by the Pruner and the Clusterer: which layers to wrap, wrapping them, saving the result.

The toolkit (tensorflow-model-optimization) wraps layers of Sequential and functional tf_keras
models only; a layer it does not know fails here with an error that names the layer and shows how
to leave it out, before any heavy work.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pydantic

from components.common import keys
from components.common.config import StrictModel
from components.common.errors import ConfigError, ModelInputError
from components.common.keys import HISTORY_FILE

log = logging.getLogger(__name__)


class LayerSelection(StrictModel):
    """Which layers to optimise; every other layer is left as it is (dense, unclustered).

    With neither ``names`` nor ``types``, every layer the toolkit supports and that has weights
    to act on is selected. ``names`` and ``types`` together select the union of both.
    """

    names: list[str] | None = pydantic.Field(
        None, min_length=1, description="Layer names to optimise (others are left as they are)."
    )
    types: list[str] | None = pydantic.Field(
        None,
        min_length=1,
        description="Layer class names to optimise, e.g. ['Conv2D', 'Dense'].",
    )
    exclude_names: list[str] = pydantic.Field(
        default_factory=list,
        description="Layer names never to optimise, e.g. the first and last layers.",
    )

    @pydantic.field_validator("names", "types", "exclude_names")
    @classmethod
    def _no_blank_names(cls, values):
        if values is not None and any(not str(v).strip() for v in values):
            raise ValueError("names must be non-empty strings")
        return values

    @pydantic.model_validator(mode="after")
    def _names_not_excluded(self):
        both = sorted(set(self.names or ()) & set(self.exclude_names))
        if both:
            raise ValueError(f"layers {both} are both selected (names) and excluded")
        return self

    @property
    def selects_all(self) -> bool:
        """True when no names or types narrow the selection."""
        return self.names is None and self.types is None


@dataclass
class Selection:
    """The outcome of :func:`select_layers`: layer names in model order, and why others were left."""

    selected: list[str]
    skipped: dict[str, str] = field(default_factory=dict)

    def keeping(self, kept: list[str], reason: str) -> Selection:
        """This selection narrowed to ``kept``; the selected layers not kept are skipped for ``reason``."""
        left_out = {name: reason for name in self.selected if name not in kept}
        return Selection(list(kept), {**self.skipped, **left_out})


def check_functional(model, technique: str, field_name: str) -> None:
    """Raises ModelInputError for models the toolkit cannot wrap (subclassed, nested models).

    Args:
      model: the tf_keras model.
      technique: e.g. "pruning", used in the message.
      field_name: the config field of the layer selection, e.g. "pruner.layers".
    """
    import tf_keras

    if not isinstance(model, tf_keras.Sequential) and not getattr(
        model, "_is_graph_network", False
    ):
        raise ModelInputError(
            f"model {model.name!r} ({type(model).__name__}) is a subclassed tf_keras model: "
            f"{technique} can only wrap the layers of a Sequential or functional model. Rebuild "
            "it as a Sequential/functional model (the same layers, same weights); then "
            f"{field_name}.names or {field_name}.types choose which of its layers are optimised."
        )
    nested = [layer.name for layer in model.layers if isinstance(layer, tf_keras.Model)]
    if nested:
        raise ModelInputError(
            f"model {model.name!r} holds nested models {nested}: {technique} here wraps the "
            "layers of one flat Sequential/functional model. Flatten the model (call the inner "
            "model's layers directly) before optimising it."
        )


def select_layers(
    model,
    selection: LayerSelection,
    target_weights: Callable[[object], list | None],
    technique: str,
    field_name: str,
) -> Selection:
    """Resolves a :class:`LayerSelection` against a model.

    Args:
      model: a Sequential or functional tf_keras model (see :func:`check_functional`).
      selection: the configured selection.
      target_weights: for a layer, the weights the technique acts on ([] for none), or None
        when the toolkit cannot wrap the layer at all.
      technique: e.g. "pruning", used in messages.
      field_name: the config field of the selection, e.g. "pruner.layers".

    Returns:
      The selected layer names, in model order.

    Raises:
      ConfigError: a name or type matches no layer, or nothing is left to optimise.
      ModelInputError: a layer the toolkit cannot wrap is selected (named, typed, or, when
        selecting all, a layer with trainable weights); the message names the layer.
    """
    layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    by_name = {layer.name: layer for layer in layers}
    unknown = sorted(set(selection.names or ()) - set(by_name))
    unknown_excluded = sorted(set(selection.exclude_names) - set(by_name))
    if unknown or unknown_excluded:
        what = f"{field_name}.names" if unknown else f"{field_name}.exclude_names"
        raise ConfigError(
            f"{what}: no layer named {unknown or unknown_excluded} in model {model.name!r}; "
            f"its layers are {list(by_name)}."
        )
    types_present = sorted({type(layer).__name__ for layer in layers})
    if selection.types is not None:
        if not set(selection.types) & set(types_present) and not selection.names:
            raise ConfigError(
                f"{field_name}.types: no layer of type {selection.types} in model "
                f"{model.name!r}; its layer types are {types_present}."
            )

    excluded = set(selection.exclude_names)
    result = Selection(selected=[])
    for layer in layers:
        name, kind = layer.name, type(layer).__name__
        if name in excluded:
            result.skipped[name] = "excluded by name"
            continue
        explicit = name in (selection.names or ()) or kind in (selection.types or ())
        if not selection.selects_all and not explicit:
            continue
        weights = target_weights(layer)
        if weights is None and not explicit and _builtin(layer):
            # A tf_keras layer the toolkit has no wrapper for (Bidirectional, TimeDistributed,
            # attention internals): left as it is when selecting every layer, and said why.
            if layer.trainable_weights:
                result.skipped[name] = (
                    f"not {technique}: tensorflow-model-optimization has no {technique} wrapper "
                    f"for {kind}; left as it is"
                )
            continue
        if weights is None:
            if explicit or layer.trainable_weights:
                raise ModelInputError(
                    f"layer {name!r} ({kind}) is not supported by {technique} in "
                    "tensorflow-model-optimization (a custom layer, or a subclass of a built-in "
                    f"one). Leave it out: list it in {field_name}.exclude_names, or select the "
                    f"layers to optimise with {field_name}.names / {field_name}.types "
                    f"(e.g. types: {[t for t in ('Conv2D', 'Dense') if t in types_present]}); "
                    "or implement the toolkit's PrunableLayer / ClusterableLayer interface in it."
                )
            continue
        if not weights:
            if name in (selection.names or ()):
                raise ConfigError(
                    f"{field_name}.names: layer {name!r} ({kind}) has no weights {technique} "
                    "can act on; remove it from the list."
                )
            continue
        result.selected.append(name)
    if not result.selected:
        raise ConfigError(
            f"{field_name}: no layer of model {model.name!r} is left to apply {technique} to "
            f"(layers: {[f'{layer.name} ({type(layer).__name__})' for layer in layers]})."
        )
    return result


def _builtin(layer) -> bool:
    """True for a layer class of tf_keras itself (not a user's, not revived without its class)."""
    module = type(layer).__module__
    return module.startswith("tf_keras.") and ".saved_model." not in module


def _recreate(layer):
    """A new layer with ``layer``'s config and weights, or None when it cannot be re-created.

    Layers revived from a SavedModel without their Python class (custom layers) come back from
    their config without weights; those are reused instead.
    """
    try:
        fresh = layer.__class__.from_config(layer.get_config())
        if layer.weights:
            build = layer.get_build_config() if hasattr(layer, "get_build_config") else None
            if build:
                fresh.build_from_config(build)
            else:
                fresh.build(layer.input_shape)
            shapes = [tuple(w.shape) for w in fresh.weights]
            if shapes != [tuple(w.shape) for w in layer.weights]:
                return None
            fresh.set_weights(layer.get_weights())
        return fresh
    except Exception:  # noqa: BLE001 - any failure means: reuse the layer as it is
        return None


def working_copy(
    model,
    reuse_ok: bool = True,
    wrap: Callable[[object], object] | None = None,
    selected: Sequence[str] = (),
):
    """A copy of ``model`` with the same weights, its variables created in the current scope.

    Optimisation wrappers and fine-tuning run on this copy, so the variables belong to the active
    ``tf.distribute`` strategy and the caller's model is not changed. A layer that cannot be
    re-created (a custom layer revived without its class) is shared with ``model``.

    Args:
      wrap: when given, each ``selected`` layer's copy is wrapped with it (e.g. a pruning or
        clustering wrapper) in the same clone: the wrappers start from the trained weights
        (clustering initialises its centroids from them when the wrapper is built).

    Raises:
      ModelInputError: when such a layer exists and ``reuse_ok`` is False (a distribution
        strategy needs every variable created in its scope).
    """
    import tf_keras

    reused = []
    wanted = set(selected)

    def clone(layer):
        if isinstance(layer, tf_keras.layers.InputLayer):
            return layer.__class__.from_config(layer.get_config())
        fresh = _recreate(layer)
        if fresh is None:
            reused.append(layer.name)
            fresh = layer
        return wrap(fresh) if wrap is not None and layer.name in wanted else fresh

    copy = tf_keras.models.clone_model(model, clone_function=clone)
    if reused and not reuse_ok:
        raise ModelInputError(
            f"layers {reused} cannot be re-created from their config (custom layers loaded "
            "without their Python class), so their variables cannot be placed under the "
            "distribution strategy: use fine_tuning.strategy 'default' for this model."
        )
    return copy


def clean_copy(model):
    """A copy of ``model`` whose variables belong to no distribution strategy, ready to save."""
    return working_copy(model)


def run_technique(
    model_uri: str,
    examples_uri: str,
    data,
    config,
    output_uri: str,
    *,
    plan: Callable,
    optimize: Callable,
    record_file: str,
    history_file: str = HISTORY_FILE,
) -> dict:
    """The shared body of the Pruner's and the Clusterer's ``run``.

    Loads the model, checks it with ``plan(model, config)`` before any data is read, settles the
    task and the loss (:func:`training.compile_args`), makes the fine-tuning datasets, calls
    ``optimize(model, train_ds, eval_ds, steps_per_epoch, compile_args)`` for (stripped model,
    record, history) and writes the model artifact (nothing when anything fails).

    Returns:
      The record, with ``model_uri``, ``task`` and ``loss`` added.
    """
    from components.common import examples as examples_lib
    from components.common import model_io, signatures, training

    # A multi-worker strategy configures collective ops, which TensorFlow accepts only before it
    # has run anything in the process: make it before the model is loaded.
    training.make_local_strategy(config.fine_tuning.strategy)
    # Read only: fine-tuning works on a copy (working_copy), so the model may be shared.
    model = model_io.load_keras_model(model_uri, shared=True)
    plan(model, config)  # fail on the model before reading any data
    # The serving signatures to rebuild around the result, their wrappers checked on the input.
    interface = signatures.interface_for(model_uri, model, examples_uri, data)
    interface.check_wrappers(model)
    task = examples_lib.resolve_task(examples_uri, data, model)
    args = training.compile_args(task, model_uri, data.module_file)
    train_ds, eval_ds, steps_per_epoch = datasets(examples_uri, data, model, config.fine_tuning)
    stripped, record, history = optimize(model, train_ds, eval_ds, steps_per_epoch, args)
    record["model_uri"] = model_uri
    record["task"] = task.to_dict()
    record["loss"] = args.describe()
    record["serving_signatures"] = interface.describe()
    workers, chief = training.cluster_task()
    record.setdefault("fine_tuning", {}).update(workers=workers, chief=chief)
    if chief:
        write_model_artifact(
            stripped,
            output_uri,
            {record_file: record, history_file: history},
            training_config=args.training_config,
            interface=interface,
        )
    else:
        # Every worker ends with the same weights; a second writer would race the chief.
        log.warning("%s: not the chief of %d workers: no artifact written", record_file, workers)
    return record


def write_model_artifact(
    model,
    output_uri: str,
    json_files: dict[str, object],
    training_config: dict | None = None,
    interface=None,
) -> str:
    """Saves ``model`` and JSON files beside it (:func:`artifact_output.write_model`), with the
    input's serving signatures rebuilt around it when ``interface`` is given.

    Returns:
      The SavedModel directory.
    """
    from components.common import artifact_output

    written = artifact_output.write_model(
        output_uri,
        model=model,
        json_files=json_files,
        training_config=training_config,
        interface=interface,
    )
    return written["serving_model_dir"]


@dataclass
class FineTuned:
    """What :func:`fine_tune_wrapped` returns."""

    model: object  # the stripped model, variables outside any strategy
    wrapped: object  # the model with its optimisation wrappers, after fine-tuning
    fit: dict  # training.fit's result: history, epochs_run, wall_time_s
    replicas: int

    def record_section(self, fine_tuning) -> dict:
        """The record's ``fine_tuning`` section: epochs run, wall time, strategy, replicas and
        the teacher (``fine_tuning.distillation``) if one guided the training."""
        from components.common import training

        return {
            "epochs_run": self.fit["epochs_run"],
            "wall_time_s": self.fit["wall_time_s"],
            "strategy": fine_tuning.strategy,
            "replicas": self.replicas,
            "teacher": training.teacher_record(fine_tuning),
        }


def fine_tune_wrapped(
    model,
    selected: list[str],
    wrap: Callable[[object], object],
    strip: Callable[[object], object],
    train_ds,
    eval_ds,
    fine_tuning,
    name: str,
    callbacks=(),
    early_stopping_from_epoch: int = 0,
    compile_args=None,
) -> FineTuned:
    """Wraps the selected layers, fine-tunes under the configured strategy, strips the wrappers.

    Args:
      model: the input tf_keras model (not changed).
      selected: names of the layers to wrap.
      wrap: layer -> wrapped layer (e.g. a pruning or clustering wrapper).
      strip: wrapped model -> model without wrappers.
      train_ds / eval_ds: batched (inputs, labels) datasets; batches are global batches.
      fine_tuning: a FineTuneConfig.
      name: the name progress is logged under.
      callbacks: extra Keras callbacks (e.g. UpdatePruningStep).
      early_stopping_from_epoch: first epoch (0-based) early stopping may keep the weights of,
        so weights from before e.g. the target sparsity is reached are never restored.
      compile_args: the loss and metrics (:class:`training.CompileArgs`); default: sparse
        categorical cross-entropy (a multiclass model).
    """
    import tf_keras

    from components.common import distillation, legacy_keras, training

    legacy_keras.skip_autograph_for_tf_keras()
    tf_keras.utils.set_random_seed(fine_tuning.seed)
    if compile_args is None:
        compile_args = training.CompileArgs.default(training.classifier_task(model))
    strategy = training.make_local_strategy(fine_tuning.strategy)
    with strategy.scope():
        # One clone: fresh layers with the model's weights, the selected ones wrapped.
        wrapped = working_copy(
            model, reuse_ok=fine_tuning.strategy == "default", wrap=wrap, selected=selected
        )
        # With fine_tuning.distillation, the input model guides the wrapped one as a teacher.
        trainer = distillation.guided(wrapped, model, fine_tuning, compile_args.task)
        training.compile_for_task(trainer, fine_tuning, compile_args)
    extra = list(callbacks)
    if fine_tuning.early_stopping_patience and eval_ds is not None:
        extra.append(
            training.early_stopping(
                compile_args.task, fine_tuning.early_stopping_patience, early_stopping_from_epoch
            )
        )
    # Early stopping is ours (above): it must not restore weights from before start_from_epoch.
    plain = fine_tuning.model_copy(update={"early_stopping_patience": None})
    result = training.fit(trainer, train_ds, eval_ds, plain, name, callbacks=extra)
    stripped = clean_copy(strip(wrapped))
    return FineTuned(stripped, wrapped, result, int(strategy.num_replicas_in_sync))


def datasets(examples_uri: str, data, model, fine_tuning):
    """(train_ds, eval_ds, steps_per_epoch) for fine-tuning ``model`` on TFX Examples.

    The train split is shuffled with the fine-tuning seed and capped at ``max_train_examples``.

    Raises:
      DataError: naming the split or key that does not fit the model, before training.
    """
    import tf_keras

    from components.common import examples as examples_lib

    # The shuffle's seeds are fixed when the dataset is made, from the global seed and the op
    # seed: set both, or a second run in the same process would shuffle differently.
    tf_keras.utils.set_random_seed(fine_tuning.seed)
    for split in (data.train_split, data.eval_split):
        if not data.module_file:
            examples_lib.resolve_mapping(examples_uri, split, data, model)
    count = examples_lib.count_examples(examples_uri, data.train_split)
    if fine_tuning.max_train_examples:
        count = min(count, fine_tuning.max_train_examples)
    steps_per_epoch = max(1, math.ceil(count / fine_tuning.batch_size))
    train_ds = examples_lib.make_dataset(
        examples_uri,
        data.train_split,
        data,
        model,
        fine_tuning.batch_size,
        shuffle=True,
        seed=fine_tuning.seed,
        limit=fine_tuning.max_train_examples,
    )
    eval_ds = examples_lib.make_dataset(
        examples_uri, data.eval_split, data, model, fine_tuning.batch_size
    )
    return train_ds, eval_ds, steps_per_epoch


def task_of(compile_args, model):
    """The task of a fine-tuning run (multiclass when the caller gave no compile arguments)."""
    from components.common import training

    return compile_args.task if compile_args is not None else training.classifier_task(model)


def metric_fields(task, before: float, after: float) -> dict:
    """The record's before/after figures of the task's metric.

    ``metric_before``/``metric_after`` always; ``accuracy_before``/``accuracy_after``/
    ``accuracy_drop`` too when the metric is an accuracy (higher is better), so a regression
    model's MAE is never called an accuracy.
    """
    from components.common import metrics

    out = {
        keys.METRIC: task.metric,
        keys.METRIC_BEFORE: before,
        keys.METRIC_AFTER: after,
        keys.METRIC_WORSE_BY: metrics.worse_by(task, before, after),
    }
    if task.higher_is_better:
        out.update(
            {
                keys.ACCURACY_BEFORE: before,
                keys.ACCURACY_AFTER: after,
                "accuracy_drop": before - after,
            }
        )
    return out


METRIC_PROPERTIES = (
    keys.METRIC,
    keys.METRIC_BEFORE,
    keys.METRIC_AFTER,
    keys.METRIC_WORSE_BY,
    keys.ACCURACY_BEFORE,
    keys.ACCURACY_AFTER,
)


def metric_numbers(record: dict) -> dict:
    """The before/after custom properties every model-in/model-out step sets, from its record.

    The record holds :func:`metric_fields` at its top level; ``accuracy_*`` are left out (None)
    when the metric is not an accuracy.
    """
    return {name: record.get(name) for name in METRIC_PROPERTIES}
