"""Checks of user inputs before any heavy work: paths, model format, Examples against the config,
signing keys, and whether the optimisation stages can work on this model at all."""

from __future__ import annotations

import math
import os

from components.common import examples as examples_lib
from components.common.errors import ConfigError, DataError, TfxOptError
from pipelines.config import PipelineConfig, QuantizationCandidate

# Preflight counts at most this many train examples to check the pruning schedule.
MAX_COUNTED_EXAMPLES = 100_000


def check_output_dir(path: str) -> str:
    """Creates ``path`` if needed and checks that it is writable; returns its absolute path."""
    path = os.path.abspath(path)
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, ".tfxopt-write-test")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise TfxOptError(
            f"output directory {path!r} is not writable ({e.strerror}); pass --output with a "
            "directory you can write to."
        ) from None
    return path


def check_inputs(config: PipelineConfig, model_uri: str, examples_uri: str):
    """Validates the checkpoint and the Examples against the config and each other.

    Returns:
      The task (components/common/metrics.Task) every step will use, or None with a module_file.
    Raises:
      TfxOptError: a ModelInputError, DataError or ConfigError naming what is wrong.
    """
    from components.importer import importer

    # A Keras 3 file is checked (intact, every layer convertible) without loading Keras 3.
    source = importer.check_source(model_uri, config.importer, config.data)
    for split in (config.data.train_split, config.data.eval_split):
        examples_lib.split_files(examples_uri, split)
    check_pusher(config)
    if config.data.module_file:
        return None  # the user's input_fn decides what the model is fed
    # The stages see the ModelImporter's output: converted and flattened, so judge that model.
    model = importer.model_to_check(source, config.importer, config.data)
    mappings = [
        examples_lib.resolve_mapping(examples_uri, split, config.data, model)
        for split in (config.data.train_split, config.data.eval_split)
    ]
    task = mappings[0].task
    check_serving_signatures(source, model, examples_uri, config)
    check_rules_fit(config, task)
    check_accuracy_control_fits(config, task)
    if task.kind != "multiclass":
        structured = [
            f"candidates.{n}.structured" for n, r in config.candidates.items() if r.structured
        ]
        if config.pruner is not None and config.pruner.mode == "structured":
            structured.insert(0, "pruner.mode: structured")
        if structured:
            raise ConfigError(
                f"{structured[0]}: structured pruning scores and fine-tunes multiclass "
                f"classifiers; this model's task is {task.kind}. Use magnitude pruning "
                "(`pruner` with mode unstructured) instead."
            )
    check_stages(config, model, examples_uri)
    return task


def task_for_default_recipe(
    config: PipelineConfig, model_uri: str, examples_uri: str, label_key_given: bool
) -> tuple[str, object]:
    """The label key and the task of a run of the default recipe, before it picks its recipes.

    With ``label_key_given`` false and no ``data.label_key`` feature in the Examples, the label is
    the one feature that no model input takes by name (:func:`label_candidates`).

    Returns:
      (the label key, the task: components/common/metrics.Task).
    Raises:
      TfxOptError: the model or Examples are unusable, the label is not a feature, or which
        feature is the label cannot be told (naming the candidates and ``--label-key``).
    """
    from components.importer import importer

    data = config.data
    source = importer.check_source(model_uri, config.importer, data)
    files = examples_lib.split_files(examples_uri, data.train_split)
    examples_lib.split_files(examples_uri, data.eval_split)
    infos = examples_lib.inspect_features(files)
    model = importer.model_to_check(source, config.importer, data)
    label_key = data.label_key
    if label_key not in infos:
        if label_key_given:
            raise DataError(
                f"--label-key {label_key!r} is not a feature of the Examples at "
                f"{examples_uri!r} (features: {sorted(infos)})."
            )
        label_key = _only_label_candidate(examples_uri, data, infos, model)
    data = data.model_copy(update={"label_key": label_key})
    return label_key, examples_lib.resolve_task(examples_uri, data, model)


def label_candidates(infos: dict, model) -> list[str]:
    """The features that may hold the label: those no model input takes by name, as
    components/common/examples.match_features matches them. When the inputs are not all named
    like features they are fed in order, from every feature but the label: any feature may be it
    (none when there are no more features than inputs)."""
    inputs = [name for name, _ in examples_lib.input_specs(model)]
    if set(inputs) <= set(infos):
        return sorted(set(infos) - set(inputs))
    return sorted(infos) if len(infos) > len(inputs) else []


def _only_label_candidate(examples_uri: str, data, infos: dict, model) -> str:
    candidates = label_candidates(infos, model)
    if len(candidates) == 1:
        return candidates[0]
    inputs = ", ".join(name for name, _ in examples_lib.input_specs(model))
    missing = (
        f"label key {data.label_key!r} is not a feature of the Examples at {examples_uri!r} "
        f"(features: {sorted(infos)})"
    )
    if not candidates:
        raise DataError(
            f"{missing}, and no feature is left for the label once each model input ({inputs}) "
            "has its own. Pass --label-key KEY (data.label_key in a config)."
        )
    raise DataError(
        f"{missing}, and {len(candidates)} features could be the label: "
        f"{', '.join(repr(c) for c in candidates)} (the model's inputs: {inputs}). Pass "
        "--label-key KEY naming the one that holds the label."
    )


def check_serving_signatures(source, model, examples_uri: str, config: PipelineConfig) -> None:
    """Every serving signature of a tf_keras checkpoint can be rebuilt around the optimised
    models, and a rebuilt wrapper gives what the checkpoint's gives on the eval examples.

    Raises:
      ModelInputError: naming the signature and the ``serving_signatures`` hook.
    """
    from components.common import signatures
    from components.importer import importer

    if source.kind != importer.TF_KERAS:
        return  # a Keras 3 file holds no serving signature: the model's call serves
    interface = signatures.interface_for(source.path, model, examples_uri, config.data)
    interface.check_wrappers(model)


def check_rules_fit(config: PipelineConfig, task) -> None:
    """A gate rule that does not fit the task (an accuracy drop for a regression model) fails here.

    Raises:
      ConfigError: naming the rule and the rules that fit.
    """
    if not config.has_candidates:
        return
    from components.evaluator.config import EvaluatorConfig

    evaluator = config.evaluator or EvaluatorConfig()
    problems = evaluator.rule_problems(task.kind)
    if problems:
        raise ConfigError(f"{'; '.join(problems)} (task: {task.describe()})")


def check_accuracy_control_fits(config: PipelineConfig, task) -> None:
    """An ``accuracy_control`` budget the task's metric cannot express (accuracy points for a
    regression model, an error increase for a classifier) fails here, naming the key.

    Raises:
      ConfigError: ``<stage>.accuracy_control.<key>`` and the key that fits.
    """
    from components.common import sensitivity

    stages = [("pruner", config.pruner), ("clusterer", config.clusterer)]
    stages += [(f"quantization.{q.candidate_name}", q) for q in config.quantization]
    for name, recipe in config.candidates.items():
        stages += [(f"candidates.{name}.{kind}", stage) for kind, stage in recipe.stages()]
    for where, stage in stages:
        sensitivity.check_fits(getattr(stage, "accuracy_control", None), task, where)


def check_pusher(config: PipelineConfig) -> None:
    """Loads every OTA signing key and the metrics file now, not when the push step runs.

    Raises:
      ConfigError: naming ``pusher.ota.<i>`` and the key path or variable, or
        ``pusher.metrics_path``.
    """
    if config.pusher is None:
        return
    from components.pusher import metrics as push_metrics
    from components.pusher import ota, push

    for i, destination in enumerate(config.pusher.ota):
        try:
            # The signing key and a threshold's extra keys, checked against the repository's
            # roles where it exists: a wrong or missing key stops the run before any training.
            keys = push.destination_keys(destination)
            ota.check_signing_keys(destination.base_directory, config.pusher.model_name, keys)
        except ConfigError as e:
            raise ConfigError(f"pusher.ota.{i}: {e}") from None
    if config.pusher.metrics_path:
        push_metrics.collect(metrics_path=config.pusher.metrics_path)


def check_stages(config: PipelineConfig, model, examples_uri: str) -> None:
    """Runs the stages' own cheap checks against the checkpoint, before anything trains.

    Magnitude pruning, clustering and quantization keep the model's layers (the wrappers are
    stripped), so their layer selections, the pruning schedule and the quantization layer checks
    can be judged on the checkpoint itself. Behind a Distiller, or after structured pruning, the
    later stages see a new, smaller model and check it when they run; sparsity- or
    cluster-preserving quantization modes need the pruned / clustered model and are checked in
    their step.

    Raises:
      ModelInputError / ConfigError / DataError: the stage's own message, naming the layer or field.
    """
    if config.candidates:
        _check_recipes(config, model, examples_uri)
        return
    if config.distiller is not None:
        return
    if config.pruner is not None and config.pruner.mode == "structured":
        from components.pruner import structured

        # Structured pruning rebuilds the model with fewer units: later stages check it then.
        structured.check_model(model, config.pruner.structured)
        return
    if config.pruner is not None:
        from components.pruner import pruner

        pruner.plan(model, config.pruner)
        tuning = config.pruner.fine_tuning
        cap = tuning.max_train_examples or MAX_COUNTED_EXAMPLES
        count = examples_lib.count_examples(examples_uri, config.data.train_split, limit=cap)
        if count < cap or tuning.max_train_examples:
            # A longer split makes more steps; the Pruner checks the schedule on it again.
            pruner.resolve_schedule(config.pruner, max(1, math.ceil(count / tuning.batch_size)))
    if config.clusterer is not None:
        from components.clusterer import clusterer

        clusterer.plan(model, config.clusterer)
    if config.quantization:
        from components.quantizer import quantizer
        from components.quantizer.config import (
            CLUSTER_PRESERVING_MODES,
            SPARSITY_PRESERVING_MODES,
        )

        for candidate in config.quantization:
            if candidate.mode in SPARSITY_PRESERVING_MODES | CLUSTER_PRESERVING_MODES:
                continue
            try:
                quantizer.check_inputs(
                    model, examples_uri, config.data, candidate.quantizer_config()
                )
            except TfxOptError as e:
                raise type(e)(f"quantization candidate {candidate.candidate_name!r}: {e}") from None


def _check_recipes(config: PipelineConfig, model, examples_uri: str) -> None:
    """:func:`check_stages` for each recipe, as the one chain it is; errors name the recipe."""
    for name, recipe in config.candidates.items():
        stages = dict(recipe.stages())
        quantization = stages.get("quantization")
        chain = config.model_copy(
            update={
                "candidates": {},
                "distiller": stages.get("distiller"),
                # structured pruning comes first and rebuilds the model: only it is checked then
                "pruner": stages.get("structured") or stages.get("pruner"),
                "clusterer": stages.get("clusterer"),
                "quantization": [
                    QuantizationCandidate.parse({**quantization.model_dump(), "name": name})
                ]
                if quantization is not None
                else [],
            }
        )
        try:
            check_stages(chain, model, examples_uri)
        except TfxOptError as e:
            raise type(e)(f"candidates.{name}: {e}") from None
