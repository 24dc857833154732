"""Shared fixtures: the reference inputs (built once per session) and tiny models."""

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"  # before anything imports TensorFlow
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

import components  # noqa: F401,E402 - pins tf_keras


@pytest.fixture(scope="session")
def reference_data(tmp_path_factory):
    """{'examples': dir, 'model': dir, ...}: the digits Examples and the trained baseline CNN.

    Set TFXOPT_REFERENCE_DIR to reuse a directory `tfxopt example-data` wrote (faster locally).
    """
    import json

    from pipelines import reference_data as ref

    existing = os.environ.get("TFXOPT_REFERENCE_DIR")
    if existing and os.path.exists(os.path.join(existing, ref.COMPLETE_MARKER)):
        with open(os.path.join(existing, "reference.json")) as f:
            return json.load(f)
    return ref.write_reference_data(str(tmp_path_factory.mktemp("reference")))


@pytest.fixture
def tiny_model():
    """A random-weight tf_keras classifier on 64 inputs (seconds to build, convert, profile)."""
    from tests.artifacts import tiny_classifier

    return tiny_classifier()


@pytest.fixture
def tiny_examples(tmp_path):
    """Small TFX Examples (64 floats + int64 label) with train and eval splits."""
    from pipelines.reference_data import write_examples

    rng = np.random.default_rng(0)
    root = tmp_path / "examples"
    for split, n in (("train", 64), ("eval", 32)):
        x = rng.random((n, 64), dtype=np.float32)
        y = rng.integers(0, 10, n).astype(np.int64)
        write_examples(str(root / f"Split-{split}" / "data.gz"), x, y)
    return str(root)


@pytest.fixture
def eval_top1():
    """``top1(model, examples_uri, split="eval")``: top-1 accuracy worked out here, independently.

    For checking a recorded accuracy against the model it describes: the examples are read with
    the default mapping and the arg-max compared with the labels in numpy.
    """

    def top1(model, examples_uri: str, split: str = "eval") -> float:
        from components.common.examples import DataConfig, load_arrays

        x, y = load_arrays(examples_uri, split, DataConfig(), model)
        predictions = model.predict(x, verbose=0)
        return float(np.mean(np.argmax(predictions, axis=-1) == y))

    return top1


def pytest_report_header(config):
    """The processor and the instruction set TensorFlow's kernels may use: trained weights,
    accuracies and latencies move with them, so the tests assert relationships (issue 14)."""
    model, flags = "unknown", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    features = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni") if f in flags]
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "default")
    return f"processor: {model} ({', '.join(features) or 'no AVX2'}); ONEDNN_MAX_CPU_ISA={isa}"
