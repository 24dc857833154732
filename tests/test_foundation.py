"""Set-up guarantees: tf_keras is pinned everywhere, the CLI answers --help without TensorFlow."""

import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _clean_env():
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return env


def test_package_import_pins_tf_keras_in_a_clean_process():
    code = (
        "import components, os, tensorflow as tf, tf_keras\n"
        "from pipelines.reference_data import build_digits_cnn\n"
        "m = build_digits_cnn()\n"
        "assert os.environ['TF_USE_LEGACY_KERAS'] == '1'\n"
        "assert isinstance(m, tf_keras.Model), type(m)\n"
        "assert tf.keras.Model is tf_keras.Model, tf.keras.__name__\n"
        "print(type(m).__module__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=_clean_env(), cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().startswith("tf_keras"), done.stdout


def test_subprocesses_inherit_the_pin():
    code = (
        "import components, subprocess, sys\n"
        "out = subprocess.run([sys.executable, '-c', "
        "'import os; print(os.environ.get(\"TF_USE_LEGACY_KERAS\"))'], capture_output=True, "
        "text=True).stdout.strip()\n"
        "print(out)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=_clean_env(), capture_output=True, text=True
    )
    assert done.stdout.strip() == "1"


def test_cli_help_is_fast_and_imports_no_tensorflow():
    code = (
        "import sys\n"
        "from pipelines import cli\n"
        "try:\n"
        "    cli.main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('tensorflow', 'tfx', 'apache_beam') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    started = time.time()
    done = subprocess.run(
        [sys.executable, "-c", code], env=_clean_env(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "example-data" in done.stdout and "run" in done.stdout
    assert time.time() - started < 5


def test_console_script_is_installed():
    tfxopt = os.path.join(os.path.dirname(sys.executable), "tfxopt")
    done = subprocess.run([tfxopt, "--help"], capture_output=True, text=True, env=_clean_env())
    assert done.returncode == 0
    assert "usage: tfxopt" in done.stdout


def test_config_errors_name_the_field(tmp_path):
    import pytest

    from components.common.errors import ConfigError
    from pipelines.config import load_config

    bad = tmp_path / "bad.yaml"
    bad.write_text("profiler:\n  timed_runs: 0\n  warmpu_runs: 3\npipeline_name: Bad_Name\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(bad))
    message = str(info.value)
    assert "profiler.timed_runs" in message and "greater than or equal to 1" in message
    assert "profiler.warmpu_runs: unknown key" in message
    assert "pipeline_name" in message
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "missing.yaml"))


def test_shipped_configs_validate():
    from pipelines.config import load_config

    configs = os.path.join(REPO, "pipelines", "configs")
    names = sorted(n for n in os.listdir(configs) if n.endswith(".yaml"))
    assert "demo.yaml" in names and "default.yaml" in names
    for name in names:
        if name == "default.yaml":  # the default recipe: common sections, a recipe per task
            from components.common.metrics import TASKS
            from pipelines.config import default_run_config

            for task in TASKS:
                default_run_config("model", task=task)
            continue
        load_config(os.path.join(configs, name))


def test_reference_training_leaves_op_determinism_as_it_found_it():
    """Reference training is deterministic, but must not switch later training in the process.

    Op determinism picks other kernels: a pipeline run in the same process as the reference data
    fine-tuned to other weights than the same run in a fresh process (a resumed run's flatbuffer
    then differed from the uninterrupted run's).
    """
    import numpy as np
    from tensorflow.python.framework import config as tf_config

    from pipelines import reference_data

    rng = np.random.default_rng(0)
    x = rng.random((16, 64), dtype=np.float32)
    y = rng.integers(0, 10, 16)
    assert not tf_config.is_op_determinism_enabled()
    reference_data.train_reference_model(x, y, x, y, epochs=1)
    assert not tf_config.is_op_determinism_enabled()
