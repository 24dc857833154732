"""A Pruner fine-tuning under ``multi_worker_mirrored`` across two worker processes (issue 22).

Each worker is a real Python process with its own ``TF_CONFIG`` (a two-worker cluster on
127.0.0.1, free ports), running the Pruner's own ``run`` on the same model and Examples, as the
replicas of a Kubeflow Training Operator TFJob would. They all-reduce gradients every step, so both
end with the same weights; the chief (worker 0) writes the output artifact, the other worker a
scratch copy that is removed.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WORKER = textwrap.dedent(
    """
    import json, sys

    import components  # noqa: F401 - pins tf_keras
    from components.common.examples import DataConfig
    from components.pruner import pruner
    from components.pruner.config import PrunerConfig

    model_uri, examples_uri, output_uri = sys.argv[1:4]
    config = PrunerConfig.parse({
        "target_sparsity": 0.75,
        "schedule": {"frequency_steps": 2},
        "fine_tuning": {"epochs": 2, "batch_size": 16, "learning_rate": 1e-3,
                        "strategy": "multi_worker_mirrored"},
    })
    record = pruner.run(model_uri, examples_uri, output_uri, config, DataConfig())
    print("RESULT " + json.dumps({
        "replicas": record["fine_tuning"]["replicas"],
        "epochs": record["fine_tuning"]["epochs_run"],
        "achieved_sparsity": record["achieved_sparsity"],
        "chief": record["fine_tuning"].get("chief"),
    }))
    """
)


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def test_pruner_fine_tunes_across_two_worker_processes(tmp_path, tiny_model, tiny_examples):
    from components.common import model_io

    model_uri = str(tmp_path / "model")
    model_io.save_keras_model(tiny_model, model_uri)
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    outputs = [str(tmp_path / f"pruned-{i}") for i in range(2)]
    procs = []
    for index, output in enumerate(outputs):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = dict(
            os.environ,
            TF_CONFIG=json.dumps(tf_config),
            TF_USE_LEGACY_KERAS="1",
            TF_CPP_MIN_LOG_LEVEL="2",
            PYTHONPATH=REPO,
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", WORKER, model_uri, tiny_examples, output],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=420)
            assert proc.returncode == 0, err[-4000:]
            line = [x for x in out.splitlines() if x.startswith("RESULT ")][-1]
            results.append(json.loads(line[len("RESULT ") :]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    # Two workers with one CPU replica each: one global batch split over two processes.
    for result in results:
        assert result["replicas"] == 2 and result["epochs"] == 2
        assert abs(result["achieved_sparsity"] - 0.75) < 0.01
    assert [r["chief"] for r in results] == [True, False]
    # The chief's artifact is a valid pruned model; the other worker left no artifact behind.
    pruned = model_io.load_keras_model(outputs[0])
    assert not os.path.exists(os.path.join(outputs[1], model_io.SERVING_DIR))
    for name in ("hidden", "out"):
        kernel = pruned.get_layer(name).kernel.numpy()
        assert abs(1 - np.count_nonzero(kernel) / kernel.size - 0.75) < 0.01
    x = np.random.default_rng(0).random((4, 64), dtype=np.float32)
    assert np.allclose(pruned(x).numpy().sum(axis=1), 1.0, atol=1e-5)
