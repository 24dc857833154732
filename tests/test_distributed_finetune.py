"""Pruning and clustering fine-tune under tf.distribute strategies named in config.

``mirrored`` runs on two logical CPU devices. Logical devices must be configured before
TensorFlow initialises its devices, so the body runs in a fresh interpreter.
"""

import textwrap

from tests.small_inputs import script_result

BODY = textwrap.dedent(
    """
    import json

    import components  # noqa: F401 - pins tf_keras
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )

    import numpy as np
    import tf_keras

    from components.clusterer import clusterer
    from components.clusterer.config import ClustererConfig
    from components.pruner import pruner
    from components.pruner.config import PrunerConfig

    def model():
        tf_keras.utils.set_random_seed(1)
        return tf_keras.Sequential([
            tf_keras.layers.Input((64,), name="image"),
            tf_keras.layers.Dense(32, activation="relu", name="hidden"),
            tf_keras.layers.Dense(10, activation="softmax", name="out"),
        ])

    rng = np.random.default_rng(0)
    x = rng.random((128, 64), dtype=np.float32)
    y = rng.integers(0, 10, 128).astype(np.int64)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    fine_tuning = {"epochs": 2, "batch_size": 16, "learning_rate": 1e-3}
    result = {"logical_cpus": len(tf.config.list_logical_devices("CPU"))}

    def prune(strategy):
        config = PrunerConfig.parse({
            "target_sparsity": 0.75,
            "schedule": {"frequency_steps": 2},
            "fine_tuning": {**fine_tuning, "strategy": strategy},
        })
        pruned, record, _ = pruner.prune_model(model(), ds, ds, config, steps_per_epoch=8)
        result[f"pruner_{strategy}"] = {
            "replicas": record["fine_tuning"]["replicas"],
            "epochs": record["fine_tuning"]["epochs_run"],
            "sparsity": {
                n: float(1 - np.count_nonzero(pruned.get_layer(n).kernel.numpy())
                         / pruned.get_layer(n).kernel.numpy().size)
                for n in ("hidden", "out")
            },
        }
        return pruned

    pruned = prune("mirrored")
    config = ClustererConfig.parse({
        "number_of_clusters": 8,
        "preserve_sparsity": True,
        "fine_tuning": {**fine_tuning, "strategy": "mirrored"},
    })
    clustered, record, _ = clusterer.cluster_model(pruned, ds, ds, config)
    result["clusterer_mirrored"] = {
        "replicas": record["fine_tuning"]["replicas"],
        "unique": {n: int(np.unique(clustered.get_layer(n).kernel.numpy()).size)
                   for n in ("hidden", "out")},
        "zeros_kept": all(
            np.all(clustered.get_layer(n).kernel.numpy()[pruned.get_layer(n).kernel.numpy() == 0]
                   == 0)
            for n in ("hidden", "out")
        ),
    }
    # Last: a MultiWorkerMirroredStrategy configures collective ops for the whole process.
    prune("multi_worker_mirrored")
    print("RESULT " + json.dumps(result))
    """
)


def test_mirrored_fine_tuning_on_two_logical_cpus():
    result = script_result(BODY)
    assert result["logical_cpus"] == 2

    mirrored = result["pruner_mirrored"]
    assert mirrored["replicas"] == 2 and mirrored["epochs"] == 2
    for name, sparsity in mirrored["sparsity"].items():
        assert abs(sparsity - 0.75) < 0.01, (name, sparsity)
    # multi_worker_mirrored without TF_CONFIG is one worker: it must still run and prune.
    single = result["pruner_multi_worker_mirrored"]
    assert single["replicas"] >= 1 and single["epochs"] == 2
    assert all(abs(s - 0.75) < 0.01 for s in single["sparsity"].values())

    clustered = result["clusterer_mirrored"]
    assert clustered["replicas"] == 2
    assert max(clustered["unique"].values()) <= 8
    assert clustered["zeros_kept"] is True
