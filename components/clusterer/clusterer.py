"""Weight clustering with fine-tuning, on plain objects and paths (no TFX here).

The selected layers are wrapped with tensorflow-model-optimization's ``cluster_weights`` (each
clustered tensor then holds at most ``number_of_clusters`` distinct values), the centroids are
fine-tuned on the train split, and the wrappers are stripped before saving.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from components.clusterer.config import ClustererConfig
from components.common import layer_report, optimization, sensitivity, training
from components.common import weights as weights_lib
from components.common.errors import ConfigError
from components.common.examples import DataConfig
from components.common.keys import (
    CLUSTERING_RECORD_FILE,
    FINE_TUNING_EPOCHS,
    FINE_TUNING_WALL_TIME_S,
    HISTORY_FILE,
    MODEL_SPARSITY,
    OPTIMIZATION,
)

log = logging.getLogger(__name__)

FIELD = "clusterer"

# Custom property names of the output Model artifact.
NUMBER_OF_CLUSTERS = "number_of_clusters"
CLUSTERS_PER_LAYER = "clusters_per_layer"
UNIQUE_VALUES_PER_LAYER = "unique_values_per_layer"
MAX_UNIQUE_VALUES = "max_unique_values"
SPARSITY_PRESERVED = "sparsity_preserved"

_INITIALIZATIONS = {
    "kmeans++": "KMEANS_PLUS_PLUS",
    "linear": "LINEAR",
    "density-based": "DENSITY_BASED",
    "random": "RANDOM",
}


def clusterable_weights(layer) -> list | None:
    """The weights clustering acts on ([] for none), or None when the toolkit cannot wrap the layer."""
    from tensorflow_model_optimization.python.core.clustering.keras import (
        clusterable_layer,
        clustering_registry,
    )

    if isinstance(layer, clusterable_layer.ClusterableLayer):
        return [w for _, w in layer.get_clusterable_weights()]
    registry = clustering_registry.ClusteringRegistry
    if not registry.supports(layer):
        return None
    if not layer.trainable_weights:
        return []
    return [w for _, w in registry.make_clusterable(layer).get_clusterable_weights()]


def _per_channel(layer, config: ClustererConfig) -> bool:
    import tf_keras

    # The toolkit clusters per channel for Conv2D only.
    return config.cluster_per_channel and isinstance(layer, tf_keras.layers.Conv2D)


def _channel_axis(layer) -> int:
    return 1 if getattr(layer, "data_format", "channels_last") == "channels_first" else -1


def distinct_values(values: np.ndarray, per_channel_axis: int | None, nonzero: bool) -> int:
    """Distinct (non-zero, with sparsity preserved) values of a tensor; the fewest in any
    channel when clustered per channel. Clustering needs more of them than clusters."""

    def count(part: np.ndarray) -> int:
        unique = np.unique(part)
        return int(np.count_nonzero(unique)) if nonzero else int(unique.size)

    if per_channel_axis is None:
        return count(values)
    return min(count(channel) for channel in np.moveaxis(values, per_channel_axis, 0))


def _too_small(layer, config: ClustererConfig) -> str | None:
    """Why ``layer`` is left out (too few distinct weights to make the clusters), or None."""
    per_channel = _per_channel(layer, config)
    axis = _channel_axis(layer) if per_channel else None
    fewest = min(
        distinct_values(np.asarray(w.numpy()), axis, config.preserve_sparsity)
        for w in clusterable_weights(layer)
    )
    # k-means++ samples its centroids among the weights (the non-zero ones when sparsity is
    # preserved, a centroid being pinned to zero): fewer distinct weights than clusters crash it,
    # and such a tensor already holds no more values than the clusters would give it.
    needed = config.number_of_clusters - (1 if config.preserve_sparsity else 0)
    if fewest > needed:
        return None
    what = "distinct non-zero weights" if config.preserve_sparsity else "distinct weights"
    unit = " per channel" if per_channel else ""
    return (
        f"left out: {fewest} {what}{unit} <= {needed} (number_of_clusters "
        f"{config.number_of_clusters}): it already holds no more values than clustering gives"
    )


def plan(model, config: ClustererConfig) -> optimization.Selection:
    """Checks the model against the config and picks the layers to cluster, before any training.

    A tensor with no more distinct weights than clusters (non-zero ones with sparsity preserved;
    per channel, when clustering per channel) is left out, with the reason in the record: it
    cannot gain from clustering, and the toolkit's k-means++ would fail on it.

    Raises:
      ModelInputError: a subclassed model or an unsupported selected layer (the message names it).
      ConfigError: the selection matches nothing clusterable.
    """
    optimization.check_functional(model, "clustering", f"{FIELD}.layers")
    selection = optimization.select_layers(
        model, config.layers, clusterable_weights, "clustering", f"{FIELD}.layers"
    )
    kept = []
    for name in selection.selected:
        reason = _too_small(model.get_layer(name), config)
        if reason:
            selection.skipped[name] = reason
            continue
        kept.append(name)
    if not kept:
        raise ConfigError(
            f"{FIELD}: no selected layer has more distinct weights than number_of_clusters "
            f"{config.number_of_clusters}: {selection.skipped}. Lower number_of_clusters or "
            "leave the clusterer out."
        )
    return optimization.Selection(kept, selection.skipped)


def one_shot_clustered(values: np.ndarray, clusters: int, preserve_zeros: bool) -> np.ndarray:
    """``values`` replaced by their nearest of ``clusters`` centroids (1-D k-means from linearly
    spaced centroids, a few iterations): what clustering a tensor costs before fine-tuning.
    With ``preserve_zeros`` zeros stay zero and one centroid is spent on them."""
    flat = values.reshape(-1).astype(np.float64)
    mask = flat != 0 if preserve_zeros else np.ones(flat.shape, dtype=bool)
    data = flat[mask]
    k = max(1, clusters - (1 if preserve_zeros else 0))
    if data.size == 0 or np.unique(data).size <= k:
        return values
    centroids = np.linspace(data.min(), data.max(), k)
    for _ in range(10):
        nearest = np.argmin(np.abs(data[:, None] - centroids[None, :]), axis=1)
        for i in range(k):
            members = data[nearest == i]
            if members.size:
                centroids[i] = members.mean()
    out = flat.copy()
    out[mask] = centroids[np.argmin(np.abs(data[:, None] - centroids[None, :]), axis=1)]
    return out.reshape(values.shape)


def tensor_clusters(values: np.ndarray, per_channel_axis: int | None) -> dict:
    """Distinct values of one tensor (and the most in any channel, when clustered per channel)."""
    entry = {
        "shape": list(values.shape),
        "unique_values": int(np.unique(values).size),
        "sparsity": float(1.0 - np.count_nonzero(values) / values.size),
    }
    if per_channel_axis is not None:
        channels = np.moveaxis(values, per_channel_axis, 0)
        entry["max_unique_values_per_channel"] = int(
            max(np.unique(channel).size for channel in channels)
        )
    return entry


def _layer_record(original, clustered, config: ClustererConfig) -> dict:
    per_channel = _per_channel(clustered, config)
    tensors = []
    for before, after in zip(
        clusterable_weights(original), clusterable_weights(clustered), strict=True
    ):
        before, after = np.asarray(before.numpy()), np.asarray(after.numpy())
        entry = tensor_clusters(after, _channel_axis(clustered) if per_channel else None)
        input_zeros = before == 0
        entry["input_zeros"] = int(input_zeros.sum())
        entry["input_zeros_kept"] = int((after[input_zeros] == 0).sum())
        tensors.append(entry)
    key = "max_unique_values_per_channel" if per_channel else "unique_values"
    return {
        "type": type(clustered).__name__,
        "number_of_clusters": config.number_of_clusters,
        "per_channel": per_channel,
        "tensors": tensors,
        # What "at most N values" is checked against: per tensor, or per channel.
        "unique_values": max(t[key] for t in tensors),
        "zeros_kept": all(t["input_zeros_kept"] == t["input_zeros"] for t in tensors),
    }


def cluster_model(model, train_ds, eval_ds, config: ClustererConfig, compile_args=None):
    """Clusters and fine-tunes ``model`` (not changed); returns (stripped model, record, history).

    Args:
      model: a Sequential or functional tf_keras classifier.
      train_ds / eval_ds: batched (inputs, labels) datasets (global batch = fine_tuning.batch_size).
      config: the Clusterer configuration.
    """
    import tensorflow_model_optimization as tfmot

    started = time.time()
    selection = plan(model, config)
    clustering = tfmot.clustering.keras
    params = {
        "number_of_clusters": config.number_of_clusters,
        "cluster_centroids_init": getattr(
            clustering.CentroidInitialization, _INITIALIZATIONS[config.centroid_initialization]
        ),
        "preserve_sparsity": config.preserve_sparsity,
        "cluster_per_channel": config.cluster_per_channel,
    }
    task = optimization.task_of(compile_args, model)
    accuracy_before = training.accuracy(model, eval_ds, task)
    log.warning(
        "clusterer: clustering %s to %d values (%s%s), eval %s before %.4f",
        selection.selected,
        config.number_of_clusters,
        config.centroid_initialization,
        ", sparsity preserved" if config.preserve_sparsity else "",
        task.metric,
        accuracy_before,
    )

    def tune(layers):
        return optimization.fine_tune_wrapped(
            model,
            layers,
            lambda layer: clustering.cluster_weights(layer, **params),
            clustering.strip_clustering,
            train_ds,
            eval_ds,
            config.fine_tuning,
            "clusterer",
            compile_args=compile_args,
        )

    control = one_shot = None
    if config.accuracy_control is not None or config.layer_sensitivity:
        one_shot = sensitivity.one_shot_drops(
            model,
            selection.selected,
            clusterable_weights,
            lambda values: one_shot_clustered(
                values, config.number_of_clusters, config.preserve_sparsity
            ),
            eval_ds,
            task,
            accuracy_before,
        )
    if config.accuracy_control is None:
        tuned = tune(selection.selected)
    else:
        tuned, kept, _, control = sensitivity.controlled_fine_tune(
            model,
            selection.selected,
            tune,
            eval_ds,
            task,
            accuracy_before,
            config.accuracy_control,
            one_shot,
            "layers left unclustered",
        )
        selection = selection.keeping(kept, "left out by accuracy_control")
    from tensorflow_model_optimization.python.core.clustering.keras import cluster_wrapper

    clustered = [
        layer.layer.name
        for layer in tuned.wrapped.layers
        if isinstance(layer, cluster_wrapper.ClusterWeights)
    ]
    skipped = dict(selection.skipped)
    for name in selection.selected:
        if name not in clustered:
            skipped[name] = "left unclustered by the toolkit (too few weights)"
    stripped = tuned.model
    accuracy_after = training.accuracy(stripped, eval_ds, task)
    layers = {
        name: _layer_record(model.get_layer(name), stripped.get_layer(name), config)
        for name in clustered
    }
    kernels = weights_lib.kernel_stats(weights_lib.keras_weight_stats(stripped))
    record = {
        "technique": "clustering",
        "config": config.model_dump(mode="json"),
        "clustered_layers": clustered,
        "skipped_layers": skipped,
        "coverage": layer_report.coverage(
            model,
            optimization.Selection(selection.selected, skipped),
            clustered,
            clusterable_weights,
            "clustering",
            f"{FIELD}.layers",
        ),
        "kernel_numbers": layer_report.kernel_numbers(stripped, clustered),
        "layers": layers,
        "number_of_clusters": config.number_of_clusters,
        "max_unique_values": max(e["unique_values"] for e in layers.values()),
        "sparsity_preserved": all(e["zeros_kept"] for e in layers.values()),
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
        "clusterer: at most %d values per clustered tensor%s, eval %s %.4f -> %.4f",
        record["max_unique_values"],
        " (per channel)" if config.cluster_per_channel else "",
        task.metric,
        accuracy_before,
        accuracy_after,
    )
    return stripped, record, tuned.fit["history"]


def run(
    model_uri: str, examples_uri: str, output_uri: str, config: ClustererConfig, data: DataConfig
) -> dict:
    """Clusters the model at ``model_uri`` and writes the new model artifact at ``output_uri``.

    Writes ``Format-Serving/`` (the stripped SavedModel), ``clustering.json`` (the record) and
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
        optimize=lambda model, train_ds, eval_ds, _steps, args: cluster_model(
            model, train_ds, eval_ds, config, args
        ),
        record_file=CLUSTERING_RECORD_FILE,
        history_file=HISTORY_FILE,
    )


def key_numbers(record: dict) -> dict:
    """The custom properties of the output Model artifact."""
    return {
        OPTIMIZATION: "clustered",
        NUMBER_OF_CLUSTERS: record["number_of_clusters"],
        CLUSTERS_PER_LAYER: {n: e["number_of_clusters"] for n, e in record["layers"].items()},
        UNIQUE_VALUES_PER_LAYER: {n: e["unique_values"] for n, e in record["layers"].items()},
        MAX_UNIQUE_VALUES: record["max_unique_values"],
        SPARSITY_PRESERVED: record["sparsity_preserved"],
        MODEL_SPARSITY: record["model_sparsity"],
        **optimization.metric_numbers(record),
        FINE_TUNING_EPOCHS: record["fine_tuning"]["epochs_run"],
        FINE_TUNING_WALL_TIME_S: record["fine_tuning"]["wall_time_s"],
    }
