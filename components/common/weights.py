"""Weight statistics: parameter counts, sparsity, unique values (clustering), bytes per dtype."""

from __future__ import annotations

from collections import defaultdict

import numpy as np


def tensor_stats(name: str, values: np.ndarray) -> dict:
    """Counts for one weight tensor."""
    flat = np.asarray(values).ravel()
    count = int(flat.size)
    nonzero = int(np.count_nonzero(flat))
    return {
        "name": name,
        "shape": list(np.shape(values)),
        "dtype": np.asarray(values).dtype.name,
        "count": count,
        "nonzero": nonzero,
        "sparsity": (1.0 - nonzero / count) if count else 0.0,
        "unique_values": int(np.unique(flat).size),
        "bytes": int(flat.nbytes),
    }


def summarize(tensors: list[dict]) -> dict:
    """Totals over tensor stats: parameters, non-zero, sparsity, bytes per dtype."""
    total = sum(t["count"] for t in tensors)
    nonzero = sum(t["nonzero"] for t in tensors)
    bytes_per_dtype: dict[str, int] = defaultdict(int)
    for t in tensors:
        bytes_per_dtype[t["dtype"]] += t["bytes"]
    return {
        "total_parameters": total,
        "nonzero_parameters": nonzero,
        "sparsity": (1.0 - nonzero / total) if total else 0.0,
        "bytes_per_dtype": dict(sorted(bytes_per_dtype.items())),
        "max_unique_values": max((t["unique_values"] for t in tensors), default=0),
    }


def keras_weight_stats(model) -> list[dict]:
    """Stats for every weight of a tf_keras model, with the layer that owns it."""
    stats = []
    for layer in model.layers:
        for weight in layer.weights:
            entry = tensor_stats(weight.name, weight.numpy())
            entry["layer"] = layer.name
            entry["kind"] = (
                "kernel" if "kernel" in weight.name else weight.name.split("/")[-1].split(":")[0]
            )
            entry["trainable"] = any(weight is w for w in layer.trainable_weights)
            stats.append(entry)
    return stats


def kernel_stats(stats: list[dict]) -> list[dict]:
    """The kernels (conv, dense, depthwise): the tensors pruning and clustering act on."""
    return [s for s in stats if "kernel" in s["name"]]
