"""Quantizer verification judges by the task: conversion bugs (wrong outputs, NaN/Inf, a changed
shape or dtype, a flatbuffer that does not load) are still caught, and a borderline example whose
probability flips no longer throws a working candidate out.

Statistics are checked on hand-made outputs (their agreement and differences worked out here),
then on real conversions of a tiny model: a deliberately wrong flatbuffer and a truncated one are
rejected before anything is written.
"""

import numpy as np
import pytest

from components.common.metrics import Task
from components.quantizer import verification
from components.quantizer.config import DEFAULT_TOLERANCES, QuantizerConfig
from components.quantizer.verification import (
    DEFAULT_LIMITS,
    ConversionVerificationError,
    Limits,
)

MULTICLASS = Task("multiclass", (3,))
LOGITS = Task("multiclass", (3,), from_logits=True)
BINARY = Task("binary", (1,))
MULTILABEL = Task("multilabel", (4,))
REGRESSION = Task("regression", (1,))
INT8 = DEFAULT_LIMITS["full_int8"]


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _probabilities(n=100, seed=0):
    """Confident 3-class probabilities (one class well ahead on every example)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, 3))
    logits[np.arange(n), rng.integers(0, 3, n)] += 4.0
    return _softmax(logits).astype(np.float32)


# --------------------------------------------------------------------------- statistics


def test_a_borderline_flip_no_longer_rejects_an_int8_candidate():
    expected = _probabilities()
    # One example on a class boundary: the Keras model says 0.51/0.49, the flatbuffer flips it
    # hard (the "max abs diff 0.886" of issue 29); every other example moves by int8 steps.
    expected[0] = [0.51, 0.49, 0.0]
    got = expected + np.random.default_rng(1).normal(0, 0.004, expected.shape).astype(np.float32)
    got[0] = [0.057, 0.943, 0.0]
    stats = verification.compare(got, expected, MULTICLASS)
    # The old rule (one example's max |diff| <= 0.1) rejected this...
    assert stats["max_abs_diff"] > DEFAULT_TOLERANCES["full_int8"]
    # ...the task's view: 99 of 100 top-1 answers the same, small differences elsewhere.
    assert stats["agreement"] == pytest.approx(0.99)
    result = verification.verify(got, expected, MULTICLASS, INT8)
    assert result["passed"] and result["examples"] == 100
    assert result["p99_abs_diff"] <= result["max_abs_diff"]


@pytest.mark.parametrize(
    "name, corrupt",
    [
        ("classes permuted", lambda p: p[:, [1, 2, 0]]),
        ("rows shuffled", lambda p: p[np.random.default_rng(3).permutation(len(p))]),
        ("uniform", lambda p: np.full_like(p, 1 / 3)),
    ],
)
def test_wrong_outputs_are_caught(name, corrupt):
    expected = _probabilities()
    got = corrupt(expected.copy())
    agreement = float(np.mean(np.argmax(got, -1) == np.argmax(expected, -1)))
    with pytest.raises(ConversionVerificationError, match="differs from the Keras model") as e:
        verification.verify(got, expected, MULTICLASS, INT8)
    # Whatever the bug, it is named by what the task sees.
    assert "agreement" in e.value.detail or "mean abs diff" in e.value.detail, name
    if agreement < INT8.min_agreement:
        assert f"top-1 agreement {agreement:.1%}" in e.value.detail


def test_logits_are_compared_as_probabilities():
    logits = np.random.default_rng(0).normal(size=(50, 3)) * 3
    # A constant shift of every logit changes nothing the softmax shows.
    result = verification.verify(logits + 5.0, logits, LOGITS, DEFAULT_LIMITS["none"])
    assert result["compared"] == "probabilities"
    assert result["agreement"] == 1.0 and result["max_abs_diff"] < 1e-9


def test_nan_shape_and_dtype_changes_are_conversion_bugs_whatever_the_limits():
    expected = _probabilities(20)
    loose = Limits(min_agreement=0.0, max_mean_abs_diff=10.0, max_p95_abs_diff=10.0)
    nan = expected.copy()
    nan[3, 1] = np.nan
    with pytest.raises(ConversionVerificationError, match="NaN or Inf on 1 of 20") as e:
        verification.verify(nan, expected, MULTICLASS, loose)
    assert e.value.detail == "NaN/Inf on 1/20 examples"
    with pytest.raises(ConversionVerificationError, match="output shape"):
        verification.verify(expected[:, :2], expected, MULTICLASS, loose)
    with pytest.raises(ConversionVerificationError, match="output is int8, expected float32"):
        verification.verify(expected, expected, MULTICLASS, loose, output_dtype="int8")
    # integer_only_io promises integer outputs: int8 is right there.
    assert verification.verify(expected, expected, MULTICLASS, loose, "int8", True)["passed"]


def test_binary_and_multilabel_count_decisions():
    rng = np.random.default_rng(0)
    expected = rng.random((100, 4)).astype(np.float32)
    got = expected.copy()
    # 10 of the 400 decisions cross 0.5: 97.5% agreement.
    near = np.argsort(np.abs(expected - 0.5), axis=None)[:10]
    got.reshape(-1)[near] = 1.0 - got.reshape(-1)[near]
    stats = verification.compare(got, expected, MULTILABEL)
    assert stats["agreement"] == pytest.approx(0.975)
    one = expected[:, :1]
    flipped = 1.0 - one  # every decision reversed
    with pytest.raises(ConversionVerificationError, match="same decision answer on only 0.0%") as e:
        verification.verify(flipped, one, BINARY, INT8)
    assert e.value.detail.startswith("decision agreement 0.0% < 80%")


def test_regression_is_judged_relative_to_the_outputs_scale():
    rng = np.random.default_rng(0)
    expected = rng.normal(50.0, 10.0, (100, 1))
    close = expected * (1 + rng.normal(0, 0.01, expected.shape))
    small = verification.compare(close / 1000, expected / 1000, REGRESSION)
    large = verification.compare(close, expected, REGRESSION)
    assert small["agreement"] is None
    # The same relative error reads the same at any scale.
    assert small["mean_abs_diff"] == pytest.approx(large["mean_abs_diff"])
    assert verification.verify(close, expected, REGRESSION, INT8)["passed"]
    with pytest.raises(ConversionVerificationError, match="relative to their scale") as e:
        verification.verify(expected * 1.5, expected, REGRESSION, INT8)
    # 50% off everywhere: a relative MAE of 0.5 (the mean |value| is the scale here).
    assert e.value.detail.startswith("mean abs diff 0.5 > 0.08")


def test_per_mode_limits_and_overrides():
    # Float modes must agree to rounding, int8 modes to calibration: each looser than the last.
    order = ["none", "float16", "dynamic_range", "full_int8"]
    means = [DEFAULT_LIMITS[m].max_mean_abs_diff for m in order]
    assert means == sorted(means) and len(set(means)) == len(means)
    assert set(DEFAULT_LIMITS) == set(DEFAULT_TOLERANCES)  # every mode has its limits
    assert QuantizerConfig(mode="float16").limits == DEFAULT_LIMITS["float16"]
    custom = QuantizerConfig(mode="full_int8", verification={"min_agreement": 0.95})
    assert custom.limits.min_agreement == 0.95
    assert custom.limits.max_mean_abs_diff == INT8.max_mean_abs_diff
    # verify_tolerance is the mean |diff| bound, as before the limits existed.
    assert QuantizerConfig(verify_tolerance=0.5).limits.max_mean_abs_diff == 0.5


# --------------------------------------------------------------------------- real conversions


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny classifier trained on a learnable task (label: argmax of the first 10 features)."""
    from components.common import legacy_keras
    from pipelines.reference_data import write_examples
    from tests.artifacts import tiny_classifier

    legacy_keras.skip_autograph_for_tf_keras()
    root = tmp_path_factory.mktemp("verification")
    rng = np.random.default_rng(0)
    for split, n in (("train", 128), ("eval", 64)):
        x = rng.random((n, 64), dtype=np.float32)
        y = np.argmax(x[:, :10], axis=1).astype(np.int64)
        write_examples(str(root / "examples" / f"Split-{split}" / "data.gz"), x, y)
        if split == "train":
            model = tiny_classifier()
            model.compile("adam", "sparse_categorical_crossentropy")
            model.fit(x, y, epochs=5, verbose=0)
    model.save(str(root / "model"), include_optimizer=False, save_format="tf")
    return {"examples": str(root / "examples"), "model": str(root / "model")}


def _quantize(tiny, **config):
    import tf_keras

    from components.common.examples import DataConfig
    from components.quantizer import quantizer

    model = tf_keras.models.load_model(tiny["model"], compile=False)
    return quantizer.quantize(model, tiny["examples"], DataConfig(), QuantizerConfig(**config))


def test_a_wrong_conversion_is_caught_and_nothing_is_written(tiny, tmp_path, monkeypatch):
    """The converter "returns" the flatbuffer of the same architecture with other weights (what a
    conversion that scrambles a kernel does): same shapes, same dtype, wrong answers."""
    import tf_keras

    from components.common.examples import DataConfig
    from components.quantizer import conversion, quantizer
    from tests.artifacts import tiny_classifier

    real_convert = conversion.convert
    scrambled = tiny_classifier()  # the same layers, random weights
    trained = tf_keras.models.load_model(tiny["model"], compile=False)
    weights = trained.get_weights()
    rng = np.random.default_rng(0)
    scrambled.set_weights([rng.permutation(w.reshape(-1)).reshape(w.shape) for w in weights])

    def wrong_convert(model, config, samples=None, batch_size=1):
        return real_convert(scrambled, config, samples, batch_size)

    monkeypatch.setattr(conversion, "convert", wrong_convert)
    for mode in ("dynamic_range", "full_int8"):
        with pytest.raises(ConversionVerificationError, match="differs from the Keras model") as e:
            _quantize(tiny, mode=mode)
        assert "agreement" in e.value.detail
        assert "top-1 accuracy on the eval split" in str(e.value)  # what the gate would have seen

    # The executor path: the step fails and leaves nothing behind.
    out = tmp_path / "out"
    with pytest.raises(ConversionVerificationError):
        quantizer.run(tiny["model"], tiny["examples"], str(out), QuantizerConfig(), DataConfig())
    assert not out.exists() or not any(out.iterdir())


def test_a_corrupted_flatbuffer_is_caught(tiny, monkeypatch):
    from components.quantizer import conversion

    real_convert = conversion.convert

    def truncated(*args, **kwargs):
        flatbuffer, plan = real_convert(*args, **kwargs)
        return flatbuffer[: len(flatbuffer) // 2], plan

    monkeypatch.setattr(conversion, "convert", truncated)
    for mode in ("float16", "full_int8"):
        with pytest.raises(ConversionVerificationError, match="does not load") as e:
            _quantize(tiny, mode=mode)
        assert e.value.step == "verification"


def test_an_honest_int8_conversion_passes_with_its_statistics_recorded(tiny):
    result = _quantize(tiny, mode="full_int8", representative_samples=64)
    check = result.record["verification"]
    assert check["passed"] and check["examples"] == 64
    assert check["agreement"] >= INT8.min_agreement
    assert 0 <= check["mean_abs_diff"] <= check["p95_abs_diff"] <= check["max_abs_diff"]
    assert check["limits"] == INT8.to_dict()
