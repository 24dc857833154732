"""Shared by the end-to-end tests that run the CLI or kill runs: a small learnable classification
problem (TFX Examples of 64 random floats whose label is the arg-max of the first ten, and a
two-layer tf_keras classifier trained on them in seconds), the push section of their configs, and
``tfxopt run`` and Python scripts as their own processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

# The push section of the end-to-end runs: a serving repository and a signed OTA canary channel
# (paths relative to the run's --output).
CANARY_PUSHER = {
    "model_name": "digits",
    "serving": [{"base_directory": "serving", "labels": ["canary"]}],
    "ota": [{"base_directory": "ota", "channel": "canary", "signing_key_path": "keys/ota.pem"}],
}


def write_learnable_examples(examples_dir: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Writes ``Split-train`` (256) and ``Split-eval`` (128) under ``examples_dir``; returns the
    train arrays."""
    from pipelines.reference_data import write_examples

    rng = np.random.default_rng(seed)

    def split(n):
        x = rng.random((n, 64), dtype=np.float32)
        return x, np.argmax(x[:, :10], axis=1).astype(np.int64)  # learnable in a few epochs

    (x_train, y_train), (x_eval, y_eval) = split(256), split(128)
    write_examples(os.path.join(examples_dir, "Split-train", "data.gz"), x_train, y_train)
    write_examples(os.path.join(examples_dir, "Split-eval", "data.gz"), x_eval, y_eval)
    return x_train, y_train


def train_small_classifier(path: str, x: np.ndarray, y: np.ndarray, seed: int) -> str:
    """Trains the 64 -> 32 -> 10 classifier (30 epochs, seeded) and saves it at ``path``."""
    import tf_keras

    tf_keras.utils.set_random_seed(seed)
    model = tf_keras.Sequential(
        [
            tf_keras.layers.Input(shape=(64,), name="image"),
            tf_keras.layers.Dense(32, activation="relu", name="hidden"),
            tf_keras.layers.Dense(10, activation="softmax", name="out"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=30, batch_size=32, verbose=0)
    model.save(path, save_format="tf")
    return path


def tfxopt_run(
    model, examples, config, output, env=None, timeout=900
) -> subprocess.CompletedProcess:
    """``tfxopt run`` (``python -m pipelines.cli run``) as its own process, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "run", "--model", str(model),
         "--examples", str(examples), "--config", str(config), "--output", str(output)],
        capture_output=True, text=True, env=env, timeout=timeout, check=False,
    )  # fmt: skip


RESULT_PREFIX = "RESULT "
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def script_result(script: str, timeout: int = 600) -> dict:
    """Runs ``script`` in a fresh Python (TF_USE_LEGACY_KERAS=1, the repository as cwd) and returns
    the JSON of its last ``RESULT {...}`` line; fails with its stderr when it exits non-zero.

    For what owns a process: a distribution strategy, logical devices, collective ops."""
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    line = [x for x in done.stdout.splitlines() if x.startswith(RESULT_PREFIX)][-1]
    return json.loads(line[len(RESULT_PREFIX) :])
