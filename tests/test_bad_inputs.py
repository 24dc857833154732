"""The bad-input table: every case fails through the CLI before any heavy work.

Each row feeds ``tfxopt run`` (or ``tfxopt schedule``) one bad input and checks what a user sees:
exit status 2, a one-line ``tfxopt: error:`` naming the field or path, no traceback, and nothing
written: no ``pipeline-root``, no ML Metadata, no serving repository or OTA channel. Cases run
in-process through ``pipelines.cli.main`` (one TensorFlow import for the table); one case runs as a
real subprocess too, as a user would start it.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable

import numpy as np
import pytest
import yaml

from tests.small_inputs import tfxopt_run

IMAGE_KEY, LABEL_KEY = "image", "label"
# Generous: a case that reaches training or conversion takes far longer than any check on a
# loaded CI machine; the real proof is that nothing was written.
MAX_CASE_SECONDS = 60.0


# ----------------------------------------------------------------------------- inputs


def _write_records(path: str, features: list[dict]) -> None:
    import tensorflow as tf

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for feature in features:
            writer.write(
                tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
            )


def _floats(values) -> object:
    import tensorflow as tf

    return tf.train.Feature(float_list=tf.train.FloatList(value=list(values)))


def _ints(values) -> object:
    import tensorflow as tf

    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def _bytes(values) -> object:
    import tensorflow as tf

    return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def _examples(root: str, make: Callable[[np.random.Generator], dict], splits=("train", "eval")):
    rng = np.random.default_rng(0)
    for split in splits:
        _write_records(
            os.path.join(root, f"Split-{split}", "data.gz"), [make(rng) for _ in range(40)]
        )
    return root


def _good_example(rng) -> dict:
    return {IMAGE_KEY: _floats(rng.random(64)), LABEL_KEY: _ints([int(rng.integers(10))])}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny tf_keras model, matching Examples, a signing key, and the bad variants of each."""
    root = tmp_path_factory.mktemp("bad-inputs")
    # Keras 3 (the `keras` package, without TF_USE_LEGACY_KERAS): an exported SavedModel and a
    # .keras file, as a user of current Keras would hand them over. Started first and collected
    # last: it loads TensorFlow while this process builds the rest.
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    script = textwrap.dedent(
        f"""
        import keras
        assert keras.__version__.startswith("3"), keras.__version__
        model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10, activation="softmax")])
        model.export({str(root / "keras3-export")!r})
        model.save({str(root / "keras3.keras")!r})
        inputs = keras.Input((64,))
        squared = keras.layers.Lambda(lambda t: keras.ops.square(t), name="square")(inputs)
        keras.Model(inputs, keras.layers.Dense(10)(squared)).save({str(root / "lambda.keras")!r})
        """
    )
    keras3_log = open(root / "keras3.log", "w+")  # noqa: SIM115 - closed below
    keras3 = subprocess.Popen(
        [sys.executable, "-c", script], env=env, stdout=keras3_log, stderr=subprocess.STDOUT
    )

    # Import what the CLI imports once, here, so each case's time is its own checks'.
    import tensorflow_model_optimization  # noqa: F401
    import tf_keras
    from tfx import v1  # noqa: F401

    from components.pusher import signing

    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential(
        [
            tf_keras.layers.Input(shape=(64,), name=IMAGE_KEY),
            tf_keras.layers.Dense(16, activation="relu", name="hidden"),
            tf_keras.layers.Dense(10, activation="softmax", name="out"),
        ]
    )
    model.save(str(root / "model"), save_format="tf")

    class Scale(tf_keras.layers.Layer):  # a layer the toolkit has no pruning/QAT rule for
        def build(self, input_shape):
            self.scale = self.add_weight(name="scale", shape=(input_shape[-1],), initializer="ones")

        def call(self, inputs):
            return inputs * self.scale

    custom = tf_keras.Sequential(
        [
            tf_keras.layers.Input(shape=(64,), name=IMAGE_KEY),
            Scale(name="custom_scale"),
            tf_keras.layers.Dense(10, activation="softmax", name="out"),
        ]
    )
    custom.save(str(root / "custom-layer-model"), save_format="tf")

    examples = _examples(str(root / "examples"), _good_example)
    _examples(str(root / "no-label"), lambda rng: {IMAGE_KEY: _floats(rng.random(64))})
    _examples(
        str(root / "short-features"),
        lambda rng: {IMAGE_KEY: _floats(rng.random(32)), LABEL_KEY: _ints([1])},
    )
    _examples(
        str(root / "bytes-features"),
        lambda rng: {IMAGE_KEY: _bytes([b"\x00" * 64]), LABEL_KEY: _ints([1])},
    )
    empty_eval = root / "empty-eval"
    _examples(str(empty_eval), _good_example, splits=("train",))
    (empty_eval / "Split-eval").mkdir()
    (empty_eval / "Split-eval" / "data.gz").write_bytes(b"")
    no_records = root / "no-eval-records"
    _examples(str(no_records), _good_example, splits=("train",))
    _write_records(str(no_records / "Split-eval" / "data.gz"), [])  # a gzip stream, no records

    signing.write_keypair(str(root / "keys" / "ota.pem"))
    (root / "keys" / "garbage.pem").write_text("this is not a key\n")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    ec_key = ec.generate_private_key(ec.SECP256R1())
    (root / "keys" / "ec.pem").write_bytes(
        ec_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (root / "a-file").write_text("not a directory\n")
    keras3.wait(timeout=600)
    keras3_log.seek(0)
    assert keras3.returncode == 0, keras3_log.read()[-3000:]
    keras3_log.close()
    whole = (root / "keras3.keras").read_bytes()
    (root / "truncated.keras").write_bytes(whole[: len(whole) // 2])
    return {
        "root": str(root),
        "model": str(root / "model"),
        "examples": examples,
        "key": str(root / "keys" / "ota.pem"),
    }


# ----------------------------------------------------------------------------- the table


@dataclasses.dataclass
class Case:
    """One row: what to change from the good inputs, and what the message must name."""

    id: str
    expect: tuple[str, ...]
    model: str | None = None  # relative to the world's root; None: the good model
    examples: str | None = None
    config: dict | str | None = None  # a dict is dumped as YAML; a str is written as is
    output: str | None = None  # relative to the case's tmp dir, or an absolute path
    env: dict = dataclasses.field(default_factory=dict)
    argv: list[str] | None = None  # a whole command line instead of `run ...`
    xfail: str | None = None


PUSH_CANDIDATE = {"quantization": [{"mode": "none", "name": "float32"}]}


def _ota(key_settings: dict) -> dict:
    return {
        **PUSH_CANDIDATE,
        "pusher": {
            "model_name": "tiny",
            "serving": [{"base_directory": "serving"}],
            "ota": [{"base_directory": "ota", "channel": "canary", **key_settings}],
        },
    }


CASES = [
    # --- the model
    Case(
        "model-missing", ("model path", "does-not-exist", "does not exist"), model="does-not-exist"
    ),
    Case("model-empty-dir", ("empty-model", "is empty"), model="empty-model"),
    Case(
        "model-corrupt-saved-model-pb",
        ("corrupt-model", "saved_model.pb", "not a valid SavedModel"),
        model="corrupt-model",
    ),
    Case(
        "model-keras3-export",
        ("keras3-export", "not written by tf_keras", "save with `model.save('model.keras')`"),
        model="keras3-export",
    ),
    Case(
        "model-keras3-file-truncated",
        ("truncated.keras", "is damaged", "model.save('model.keras')"),
        model="truncated.keras",
    ),
    Case(
        "model-keras3-lambda",
        ("'square' (Lambda", "keras.ops", "build_tf_keras_model()"),
        model="lambda.keras",
    ),
    Case(
        "model-custom-layer-pruner",
        ("layer 'custom_scale'", "not supported by pruning", "pruner.layers.exclude_names"),
        model="custom-layer-model",
        config={"pruner": {"target_sparsity": 0.5}},
    ),
    Case(
        "model-custom-layer-qat",
        ("quantization candidate 'qat'", "custom_scale", "quantizer.exclude_layers"),
        model="custom-layer-model",
        config={"quantization": [{"mode": "qat"}]},
    ),
    # --- the Examples
    Case("examples-missing", ("no-such-examples", "no split 'train'"), examples="no-such-examples"),
    Case(
        "examples-missing-label-key",
        ("label key 'label'", "not a feature", "data.label_key"),
        examples="no-label",
    ),
    Case(
        "examples-label-key-misnamed",
        ("label key 'digit'", "data.label_key"),
        config={"data": {"label_key": "digit"}},
    ),
    Case(
        "examples-wrong-feature-length",
        ("feature 'image' has 32 values", "expects shape (64,)"),
        examples="short-features",
    ),
    Case("examples-empty-eval-split", ("split 'eval'", "is empty"), examples="empty-eval"),
    Case(
        "examples-eval-split-without-records",
        ("no records in", "Split-eval"),
        examples="no-eval-records",
    ),
    Case(
        "examples-non-numeric-values",
        ("feature 'image' holds bytes", "data.module_file"),
        examples="bytes-features",
    ),
    # --- the config
    Case("config-unknown-top-level-key", ("prunr",), config={"prunr": {"target_sparsity": 0.5}}),
    Case(
        "config-unknown-nested-key",
        ("profiler.timed_run",),
        config={"profiler": {"timed_run": 5}},
    ),
    Case(
        "config-sparsity-out-of-range",
        ("pruner.target_sparsity",),
        config={"pruner": {"target_sparsity": 1.5}},
    ),
    Case(
        "config-clusters-out-of-range",
        ("clusterer.number_of_clusters",),
        config={"clusterer": {"number_of_clusters": 1}},
    ),
    Case(
        "config-threshold-out-of-range",
        ("evaluator.rules.max_accuracy_drop_points",),
        config={**PUSH_CANDIDATE, "evaluator": {"rules": {"max_accuracy_drop_points": -1}}},
    ),
    Case(
        "config-min-accuracy-out-of-range",
        ("evaluator.rules.min_accuracy",),
        config={**PUSH_CANDIDATE, "evaluator": {"rules": {"min_accuracy": 1.5}}},
    ),
    Case(
        "config-contradicting-rules-task",
        ("max_error_increase", "does not fit task multiclass"),
        config={**PUSH_CANDIDATE, "evaluator": {"rules": {"max_error_increase": 0.1}}},
    ),
    Case(
        "config-contradicting-production-rule",
        ("max_accuracy_drop_vs_production_points", "production.metrics_path"),
        config={
            **PUSH_CANDIDATE,
            "evaluator": {"rules": {"max_accuracy_drop_vs_production_points": 1.0}},
        },
    ),
    Case(
        "config-contradicting-schedule",
        ("end_step 50 must be after begin_step 100",),
        config={"pruner": {"schedule": {"begin_step": 100, "end_step": 50}}},
    ),
    Case(
        "config-schedule-beyond-fine-tuning",
        ("pruner.schedule", "after the last fine-tuning step"),
        config={"pruner": {"fine_tuning": {"epochs": 1}, "schedule": {"frequency_steps": 1000}}},
    ),
    Case(
        "config-pruner-unknown-layer",
        ("pruner.layers.names", "conv9"),
        config={"pruner": {"layers": {"names": ["conv9"]}}},
    ),
    Case(
        "config-structured-pruning-unknown-layer",
        ("skip_layers", "conv9"),
        config={"pruner": {"mode": "structured", "structured": {"skip_layers": ["conv9"]}}},
    ),
    Case(
        "config-quantizer-unknown-exclude-layer",
        ("quantizer.exclude_layers", "conv9"),
        config={"quantization": [{"mode": "full_int8", "exclude_layers": ["conv9"]}]},
    ),
    Case(
        "config-unknown-quantization-mode",
        ("quantization.0.mode", "int4"),
        config={"quantization": [{"mode": "int4"}]},
    ),
    Case(
        "config-duplicate-candidates",
        ("candidate names must be unique",),
        config={"quantization": [{"mode": "full_int8"}, {"mode": "full_int8"}]},
    ),
    Case(
        "config-pusher-without-candidate",
        ("pusher is configured but no stage makes a candidate",),
        config={"pusher": {"model_name": "tiny", "serving": [{"base_directory": "serving"}]}},
    ),
    Case("config-not-yaml", ("is not valid YAML",), config="pruner: [unclosed\n"),
    Case("config-not-a-mapping", ("must hold a mapping",), config="- a\n- list\n"),
    # --- the output directory
    Case("output-under-a-file", ("a-file/out", "is not writable"), output="@root/a-file/out"),
    Case("output-is-a-file", ("a-file", "is not writable"), output="@root/a-file"),
    Case("output-under-dev-null", ("/dev/null/out", "is not writable"), output="/dev/null/out"),
    # --- the signing key
    Case(
        "signing-key-missing",
        ("pusher.ota.0", "signing_key_path", "keys/missing.pem", "cannot be read"),
        config=_ota({"signing_key_path": "keys/missing.pem"}),
    ),
    Case(
        "signing-key-malformed",
        ("pusher.ota.0", "garbage.pem", "not an Ed25519 private key"),
        config=_ota({"signing_key_path": "@root/keys/garbage.pem"}),
    ),
    Case(
        "signing-key-wrong-type",
        ("pusher.ota.0", "ec.pem", "not Ed25519"),
        config=_ota({"signing_key_path": "@root/keys/ec.pem"}),
    ),
    Case(
        "signing-key-env-unset",
        ("pusher.ota.0", "TFXOPT_TEST_UNSET_KEY", "is not set"),
        config=_ota({"signing_key_env": "TFXOPT_TEST_UNSET_KEY"}),
    ),
    Case(
        "signing-key-none-configured",
        ("pusher.ota.0", "signing_key_path or signing_key_env"),
        config=_ota({}),
    ),
    # --- the metadata store
    Case(
        "mlmd-mysql-port-malformed",
        ("TFXOPT_MLMD_MYSQL_PORT", "'abc'"),
        env={"TFXOPT_MLMD_MYSQL_HOST": "127.0.0.1", "TFXOPT_MLMD_MYSQL_PORT": "abc"},
    ),
    Case(
        "mlmd-mysql-user-missing",
        ("TFXOPT_MLMD_MYSQL_USER",),
        env={"TFXOPT_MLMD_MYSQL_HOST": "127.0.0.1"},
    ),
    # --- the schedule
    Case(
        "schedule-cron-not-cron",
        ("cron 'every day'", "5 fields"),
        argv=["schedule", "--cron", "every day", "--model", "gs://b/m", "--package", "p.yaml"],
    ),
    Case(
        "schedule-cron-too-few-fields",
        ("cron '0 3 * *'",),
        argv=["schedule", "--cron", "0 3 * *", "--model", "gs://b/m", "--package", "p.yaml"],
    ),
    Case(
        "schedule-cron-out-of-range",
        ("cron '61 3 * * *'", "minute field '61' is out of range"),
        argv=["schedule", "--cron", "61 3 * * *", "--model", "gs://b/m", "--package", "p.yaml"],
    ),
]


def _abs(world, path: str | None, default: str) -> str:
    if path is None:
        return default
    if path.startswith("@root/"):
        return os.path.join(world["root"], path[len("@root/") :])
    return path if os.path.isabs(path) else os.path.join(world["root"], path)


def _prepare(world, case: Case, tmp_path) -> tuple[list[str], str]:
    root = world["root"]
    os.makedirs(os.path.join(root, "empty-model"), exist_ok=True)
    corrupt = os.path.join(root, "corrupt-model")
    if not os.path.exists(corrupt):
        os.makedirs(os.path.join(corrupt, "variables"))
        with open(os.path.join(corrupt, "saved_model.pb"), "wb") as f:
            f.write(b"\x0a\xff\xff\xff garbage, not a protobuf" * 8)
    output = str(tmp_path / "out")
    if case.output is not None:
        output = _abs(world, case.output, output)
    if case.argv is not None:
        return [a.replace("p.yaml", str(tmp_path / "p.yaml")) for a in case.argv], output
    argv = [
        "run",
        "--model",
        _abs(world, case.model, world["model"]),
        "--examples",
        _abs(world, case.examples, world["examples"]),
        "--output",
        output,
    ]
    if case.config is not None:
        text = case.config
        if isinstance(text, dict):
            text = (
                yaml.safe_dump(text).replace("'@root/", f"'{root}/").replace("@root/", f"{root}/")
            )
        path = tmp_path / "config.yaml"
        path.write_text(text)
        argv += ["--config", str(path)]
    return argv, output


def _written(path: str) -> list[str]:
    if not os.path.isdir(path):
        return []
    return sorted(
        os.path.relpath(os.path.join(d, name), path)
        for d, dirs, files in os.walk(path)
        for name in files + dirs
    )


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(c, id=c.id, marks=[pytest.mark.xfail(reason=c.xfail, strict=True)])
        if c.xfail
        else pytest.param(c, id=c.id)
        for c in CASES
    ],
)
def test_bad_input_fails_before_heavy_work(case, world, tmp_path, capsys, monkeypatch):
    from pipelines import cli

    for name in ("HOST", "PORT", "DATABASE", "USER", "PASSWORD"):
        monkeypatch.delenv(f"TFXOPT_MLMD_MYSQL_{name}", raising=False)
    monkeypatch.delenv("TFXOPT_TEST_UNSET_KEY", raising=False)
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    argv, output = _prepare(world, case, tmp_path)
    before = set(_written(output)) if os.path.isdir(output) else set()

    started = time.monotonic()
    code = cli.main(argv)
    seconds = time.monotonic() - started
    captured = capsys.readouterr()

    assert code == 2, (code, captured.err[-2000:])
    # Libraries may warn on stderr as TFX loads; the error comes last, once.
    assert captured.err.count("tfxopt: error: ") == 1, captured.err[-2000:]
    message = captured.err[captured.err.index("tfxopt: error: ") :].strip()
    assert "Traceback" not in captured.err + captured.out
    for fragment in case.expect:
        assert fragment in message, f"{fragment!r} not in: {message}"
    assert seconds < MAX_CASE_SECONDS, f"{case.id} took {seconds:.1f} s: it did heavy work"
    # nothing written: no pipeline root, no metadata, no pushes (an empty output dir may remain)
    assert set(_written(output)) == before, _written(output)
    assert not os.path.exists(os.path.join(output, "pipeline-root"))
    print(f"[{case.id}] {seconds:.2f}s {message}")


@pytest.mark.slow  # reason: ~30 s of TensorFlow import for one more process; the table above
# checks the same path in-process, and test_pipeline_local checks a real process's exit status
def test_a_bad_input_through_a_real_process(world, tmp_path):
    """The user's view: `tfxopt run` as its own process, exit 2, the message, no traceback."""
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(_ota({"signing_key_path": f"{world['root']}/keys/garbage.pem"}))
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TFXOPT_MLMD_MYSQL_")}
    done = tfxopt_run(
        world["model"], world["examples"], config, tmp_path / "out", env=env, timeout=300
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("tfxopt: error: pusher.ota.0: signing_key_path"), done.stderr[-2000:]
    assert "not an Ed25519 private key" in last
    assert _written(str(tmp_path / "out")) == []


def test_guarantees_md_counts_the_cases_of_this_table():
    """docs/GUARANTEES.md quotes how many bad inputs this table holds: the number stays true."""
    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "docs", "GUARANTEES.md")
    with open(path) as f:
        quoted = re.search(r"`tests/test_bad_inputs\.py`, (\d+) cases", f.read())
    assert quoted, "GUARANTEES.md no longer quotes the number of bad-input cases"
    assert int(quoted.group(1)) == len(CASES)
