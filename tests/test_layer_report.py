"""What was not optimised and why: per-layer coverage and kernel numbers in the records,
on a tiny MobileNet-style model (conv, batch norm, depthwise, 1x1 conv, pooled dense head)."""

import numpy as np
import pytest

FAST = {"batch_size": 8, "epochs": 1, "learning_rate": 1e-3}


def _mobilenet_like():
    import tf_keras

    tf_keras.utils.set_random_seed(5)
    layers = tf_keras.layers
    inputs = tf_keras.Input((8, 8, 3), name="image")
    x = layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    x = layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = layers.Conv2D(16, 1, name="project")(x)
    x = layers.Conv2D(2, 1, name="tiny")(x)  # 16 x 2 = 32 weights
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(10, activation="softmax", name="head")(x)
    return tf_keras.Model(inputs, outputs)


def _datasets(model, n=32):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.random((n, 8, 8, 3), dtype=np.float32)
    y = rng.integers(0, 10, n).astype(np.int64)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    return ds, ds


def _by_layer(record):
    return {e["layer"]: e for e in record["coverage"]["layers"]}


def test_clusterer_says_which_layers_it_left_and_why():
    from components.clusterer import clusterer
    from components.clusterer.config import ClustererConfig

    model = _mobilenet_like()
    config = ClustererConfig.parse(
        {
            "number_of_clusters": 40,
            "layers": {"exclude_names": ["head"]},
            "fine_tuning": FAST,
        },
        where="clusterer",
    )
    _, record, _ = clusterer.cluster_model(model, *_datasets(model), config)
    layers = _by_layer(record)
    assert {n for n, e in layers.items() if e["optimised"]} == {"stem", "project"}
    assert "DepthwiseConv2D" in layers["dw"]["reason"]
    assert "non-clusterable" in layers["dw"]["reason"]
    assert layers["head"]["reason"] == "excluded by name"
    assert "distinct weights <= 40 (number_of_clusters 40)" in layers["tiny"]["reason"]
    assert "no weights clustering acts on" in layers["stem_bn"]["reason"]
    assert "pool" in layers and not layers["pool"]["optimised"]
    assert record["coverage"]["left_out"] == len(layers) - 2
    numbers = record["kernel_numbers"]
    # Over the targeted layers the config's bound holds; over every kernel it need not.
    assert numbers["targeted_layers"]["max_unique_values"] <= 40
    assert numbers["targeted_layers"]["max_unique_values"] == record["max_unique_values"]
    assert numbers["all_kernels"]["max_unique_values"] > 40
    assert numbers["all_kernels"]["max_unique_values_layer"] in ("dw", "head")
    assert numbers["all_kernels"]["kernels"] > numbers["targeted_layers"]["kernels"] == 2


def test_pruner_numbers_match_the_target_over_the_layers_it_pruned():
    from components.pruner import pruner
    from components.pruner.config import PrunerConfig

    model = _mobilenet_like()
    config = PrunerConfig.parse(
        {
            "target_sparsity": 0.5,
            "schedule": {"kind": "constant", "begin_step": 0, "frequency_steps": 1},
            "layers": {"exclude_names": ["stem", "head"]},
            "fine_tuning": FAST,
        },
        where="pruner",
    )
    _, record, _ = pruner.prune_model(model, *_datasets(model), config, steps_per_epoch=4)
    layers = _by_layer(record)
    assert {n for n, e in layers.items() if e["optimised"]} == {"project", "tiny"}
    assert "prunes no weight of DepthwiseConv2D" in layers["dw"]["reason"]
    assert layers["stem"]["reason"] == layers["head"]["reason"] == "excluded by name"
    assert "prunes no weight of BatchNormalization" in layers["stem_bn"]["reason"]
    numbers = record["kernel_numbers"]
    assert numbers["targeted_layers"]["sparsity"] == pytest.approx(0.5, abs=0.02)
    assert numbers["targeted_layers"]["sparsity"] == pytest.approx(record["achieved_sparsity"])
    # The excluded kernels stay dense: over every kernel the sparsity is lower, as it should be.
    assert numbers["all_kernels"]["sparsity"] < numbers["targeted_layers"]["sparsity"] - 0.05


def test_report_section_lists_reasons_and_both_kernel_numbers(tmp_path):
    import json
    from types import SimpleNamespace

    from pipelines.report import layers as layer_report

    record = {
        "coverage": {
            "technique": "clustering",
            "optimised": 2,
            "left_out": 3,
            "left_out_by_reason": {"excluded by name": ["head"], "DepthwiseConv2D: x": ["dw"]},
        },
        "kernel_numbers": {
            "targeted_layers": {
                "kernels": 2,
                "sparsity": 0.6,
                "max_unique_values": 16,
                "max_unique_values_layer": "stem",
            },
            "all_kernels": {
                "kernels": 4,
                "sparsity": 0.5,
                "max_unique_values": 3024,
                "max_unique_values_layer": "dw",
            },
        },
    }
    (tmp_path / "clustering.json").write_text(json.dumps(record))
    step = SimpleNamespace(
        component="Clusterer",
        node_id="Clusterer",
        outputs={"m": [SimpleNamespace(uri=str(tmp_path))]},
    )
    other = SimpleNamespace(component="Pusher", node_id="Pusher", outputs={})
    entries = layer_report.layer_coverage(SimpleNamespace(steps=[other, step]))
    assert [e["step"] for e in entries] == ["Clusterer"]
    page = "\n".join(layer_report.html_section({"layer_coverage": entries}))
    assert "clustering of 2 layers, 3 left as they were" in page
    assert "excluded by name" in page and "dw" in page
    assert "60.0% over the 2 targeted kernels, 50.0% over all 4" in page
    assert "3,024 in any kernel (dw)" in page
    assert layer_report.html_section({"layer_coverage": []}) == []
