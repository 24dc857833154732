"""Channel scores: how much each channel of a prunable group matters (higher is more important).

The l1/l2 criteria read the producing filters' weights; ``mean_activation`` and ``taylor`` read
the activations (and gradients) of a few train batches.
"""

from __future__ import annotations

import numpy as np

from components.common import training
from components.common.errors import ConfigError, DataError, ModelInputError
from components.pruner.structured.graph import ChannelPlan, TensorKey, flat_tensors, model_layers
from components.pruner.structured.record import FIELD


def _norm(values: np.ndarray, criterion: str, out_axis: int) -> np.ndarray:
    moved = np.moveaxis(values, out_axis, -1).reshape(-1, values.shape[out_axis])
    if criterion == "l1":
        return np.abs(moved).sum(axis=0)
    return np.sqrt(np.square(moved).sum(axis=0))


def _producer_kernel(layer) -> tuple[np.ndarray, int]:
    """The weights that make each output channel, and the axis of output channels."""
    name = type(layer).__name__
    if name.startswith("SeparableConv"):
        return layer.pointwise_kernel.numpy(), -1
    if name.endswith("Transpose"):
        return layer.kernel.numpy(), -2
    return layer.kernel.numpy(), -1


def weight_scores(model, plan: ChannelPlan, criterion: str) -> dict[int, np.ndarray]:
    """l1 or l2 norm of each output channel's filter, summed over a group's producers."""
    scores: dict[int, np.ndarray] = {}
    for group in plan.prunable_groups:
        total = np.zeros(group.channels, dtype=np.float64)
        for name in group.producers:
            kernel, axis = _producer_kernel(model.get_layer(name))
            total += _norm(kernel, criterion, axis)
        scores[group.id] = total
    return scores


def _tensor(model, key: TensorKey):
    name, node_index, tensor_index = key
    layer = model_layers(model)[name]
    return flat_tensors(layer._inbound_nodes[node_index].outputs)[tensor_index]


def _scored_keys(plan: ChannelPlan) -> list[TensorKey]:
    keys: list[TensorKey] = []
    for group in plan.prunable_groups:
        for key, _ in group.scored_tensors:
            if key not in keys:
                keys.append(key)
    return keys


def _activation_sums(model, keys: list[TensorKey], criterion: str, dataset, batches: int):
    """({tensor: per-channel score summed over examples}, examples read)."""
    import tensorflow as tf
    import tf_keras

    probe = tf_keras.Model(model.inputs, [model.outputs[0], *[_tensor(model, k) for k in keys]])
    loss_fn = tf_keras.losses.SparseCategoricalCrossentropy(
        from_logits=not training.outputs_probabilities(model)
    )
    sums = {k: None for k in keys}
    examples = 0
    for x, y in dataset.take(batches):
        with tf.GradientTape() as tape:
            outputs = probe(x, training=False)
            predictions, activations = outputs[0], outputs[1:]
            loss = loss_fn(y, predictions) if criterion == "taylor" else None
        gradients = tape.gradient(loss, activations) if criterion == "taylor" else None
        for i, key in enumerate(keys):
            a = activations[i]
            axes = list(range(1, a.shape.rank - 1))
            if criterion == "taylor":
                per_example = tf.abs(tf.reduce_mean(a * gradients[i], axis=axes))
            else:
                per_example = tf.reduce_mean(tf.abs(a), axis=axes)
            total = tf.reduce_sum(per_example, axis=0).numpy().astype(np.float64)
            sums[key] = total if sums[key] is None else sums[key] + total
        examples += int(tf.shape(predictions)[0])
    return sums, examples


def activation_scores(
    model, plan: ChannelPlan, criterion: str, dataset, batches: int
) -> dict[int, np.ndarray]:
    """Per-channel mean |activation| or first-order Taylor score on ``batches`` train batches.

    The tensors scored are those the next weighted layer (or a Flatten before one) reads, so a
    channel's score is what removing it takes away from the rest of the network. Taylor is
    Molchanov et al. (2017): per example, |mean over positions of activation x dLoss/dActivation|.

    Raises:
      DataError: the dataset yields no batch.
    """
    keys = _scored_keys(plan)
    if not keys:
        return {g.id: np.zeros(g.channels) for g in plan.prunable_groups}
    if len(model.outputs) != 1:
        raise ModelInputError(
            f"{FIELD}.criterion {criterion!r} needs a single-output classifier; model "
            f"{model.name!r} has {len(model.outputs)} outputs. Use criterion l1 or l2."
        )
    sums, examples = _activation_sums(model, keys, criterion, dataset, batches)
    if not examples:
        raise DataError(f"{FIELD}.criterion {criterion!r}: the train dataset yielded no batch")
    scores: dict[int, np.ndarray] = {}
    for group in plan.prunable_groups:
        total = np.zeros(group.channels, dtype=np.float64)
        for key, layout in group.scored_tensors:
            offset = 0
            for gid, channels in layout:
                if plan.root[gid] == group.id:
                    total += sums[key][offset : offset + channels] / examples
                offset += channels
        scores[group.id] = total
    return scores


def channel_scores(
    model, plan: ChannelPlan, criterion: str, dataset=None, batches: int = 8
) -> dict[int, np.ndarray]:
    """Scores of every prunable group's channels (higher is more important)."""
    if criterion in ("l1", "l2"):
        return weight_scores(model, plan, criterion)
    if dataset is None:
        raise ConfigError(f"{FIELD}.criterion {criterion!r} needs train data; pass a dataset")
    return activation_scores(model, plan, criterion, dataset, batches)
