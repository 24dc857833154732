"""The LiteRT runner and the measured XNNPACK delegation, on the reference CNN with random weights.

The same tf_keras model is converted two ways (issue 28): from its SavedModel with a dynamic batch
(the first Reshape's shape is computed at run time: SHAPE -> STRIDED_SLICE -> PACK) and from a
concrete function with a static batch. The static one is delegated whole; the dynamic one only
in part, and the record names the ops left to the default kernels and why.
"""

from __future__ import annotations

import numpy as np
import pytest

from components.common import delegation, tflite


def _dynamic(model, tmp_path) -> bytes:
    import tensorflow as tf

    path = str(tmp_path / "saved_model")
    model.save(path, save_format="tf")
    return tf.lite.TFLiteConverter.from_saved_model(path).convert()


def _static(model, batch: int = 1) -> bytes:
    import tensorflow as tf

    specs = [tf.TensorSpec([batch, *t.shape[1:]], t.dtype) for t in model.inputs]
    fn = tf.function(lambda *x: model(list(x) if len(x) > 1 else x[0], training=False))
    concrete = fn.get_concrete_function(*specs)
    return tf.lite.TFLiteConverter.from_concrete_functions([concrete], model).convert()


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    """(dynamic-batch flatbuffer, static batch 1, static batch 4) of the reference CNN."""
    import tf_keras

    from pipelines.reference_data import build_digits_cnn

    tf_keras.utils.set_random_seed(0)
    model = build_digits_cnn()
    tmp = tmp_path_factory.mktemp("cnn")
    return _dynamic(model, tmp), _static(model, 1), _static(model, 4)


@pytest.fixture(scope="module")
def token_model(tmp_path_factory):
    """(dynamic, static batch 1) flatbuffers of a model fed int32 token ids."""
    import tf_keras

    tf_keras.utils.set_random_seed(1)
    layers = tf_keras.layers
    model = tf_keras.Sequential(
        [
            layers.Input(shape=(12,), dtype="int32", name="tokens"),
            layers.Embedding(50, 8),
            layers.GlobalAveragePooling1D(),
            layers.Dense(3, activation="softmax"),
        ]
    )
    return _dynamic(model, tmp_path_factory.mktemp("tokens")), _static(model, 1)


def test_static_batch_conversion_is_delegated_whole(cnn):
    _, static, _ = cnn
    record = delegation.measure_delegation(static, num_threads=1)
    # RESHAPE, CONV_2D x2, MAX_POOL_2D, CONV_2D, MAX_POOL_2D, RESHAPE, FULLY_CONNECTED x2, SOFTMAX
    assert record["nodes"] == record["flatbuffer_operators"] == 10
    assert record["delegated_nodes"] == 10
    assert record["delegated_share"] == 1.0
    assert record["partitions"] == 1
    assert record["fallback_ops"] == {}
    assert record["dynamic_tensors"] == 0
    assert record["reason"] is None
    assert record["delegate"] == "XNNPACK" and record["runtime"].startswith("ai-edge-litert")


def test_dynamic_batch_conversion_is_delegated_in_part_and_says_why(cnn):
    dynamic, _, _ = cnn
    record = delegation.measure_delegation(dynamic, num_threads=1)
    # The static graph's 10 nodes plus SHAPE, STRIDED_SLICE and PACK computing the first
    # Reshape's shape at run time; that Reshape (its output run-time sized) falls back too.
    assert record["nodes"] == record["flatbuffer_operators"] == 13
    assert record["fallback_ops"] == {"PACK": 1, "RESHAPE": 1, "SHAPE": 1, "STRIDED_SLICE": 1}
    assert record["delegated_nodes"] == 9
    assert record["delegated_share"] == pytest.approx(9 / 13)
    assert record["partitions"] == 1
    assert record["dynamic_tensors"] > 0
    reason = record["reason"]
    assert "dynamic-sized tensors" in reason and "static batch" in reason
    for op in ("SHAPE", "STRIDED_SLICE", "PACK"):
        assert op in reason


def _int8(model, sparse: bool = False) -> bytes:
    import tensorflow as tf

    fn = tf.function(lambda x: model(x, training=False))
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [fn.get_concrete_function(tf.TensorSpec([1, 64], tf.float32))], model
    )
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if sparse:
        converter.optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    rng = np.random.default_rng(3)
    converter.representative_dataset = lambda: (
        [rng.uniform(0, 16, (1, 64)).astype(np.float32)] for _ in range(16)
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter.convert()


def test_an_op_xnnpack_has_no_kernel_for_is_named_with_that_reason():
    import tf_keras

    from pipelines.reference_data import build_digits_cnn

    tf_keras.utils.set_random_seed(0)
    record = delegation.measure_delegation(_int8(build_digits_cnn()))
    # int8 SOFTMAX has no XNNPACK kernel: the rest is one partition before it
    assert record["fallback_ops"] == {"SOFTMAX": 1}
    assert record["delegated_nodes"] == record["nodes"] - 1
    assert record["dynamic_tensors"] == 0
    assert "SOFTMAX x1" in record["reason"] and "no kernel" in record["reason"]
    assert "run time" not in record["reason"]


def test_a_graph_xnnpack_fails_to_prepare_runs_without_it_and_says_so():
    """Sparse-encoded int8 weights: LiteRT 2.3's XNNPACK takes the FULLY_CONNECTED nodes and then
    fails to prepare them; the runner falls back to the default kernels and the record says so."""
    import tf_keras

    from pipelines.reference_data import build_digits_cnn

    tf_keras.utils.set_random_seed(0)
    model = build_digits_cnn()
    kernel, bias = model.get_layer("dense1").get_weights()
    kernel[np.random.default_rng(4).random(kernel.shape) < 0.9] = 0.0
    model.get_layer("dense1").set_weights([kernel, bias])
    flatbuffer = _int8(model, sparse=True)
    runner = tflite.TFLiteModel(flatbuffer)
    x = np.random.default_rng(5).uniform(0, 16, (3, 64)).astype(np.float32)
    assert runner.predict(x).shape == (3, 10)
    record = delegation.measure_delegation(flatbuffer)
    if runner.delegate_error is None:  # a runtime whose XNNPACK prepares it
        assert record["delegate_error"] is None and record["delegated_nodes"] > 0
        return
    assert record["delegate_error"] == runner.delegate_error
    assert record["delegated_nodes"] == record["partitions"] == 0
    assert sum(record["fallback_ops"].values()) == record["nodes"]
    assert "failed to prepare" in record["reason"]


def test_delegation_is_the_same_with_several_threads(cnn):
    dynamic, static, _ = cnn
    for flatbuffer in (dynamic, static):
        one = delegation.measure_delegation(flatbuffer, num_threads=1)
        two = delegation.measure_delegation(flatbuffer, num_threads=2)
        assert two["num_threads"] == 2
        for key in ("nodes", "delegated_nodes", "partitions", "fallback_ops"):
            assert one[key] == two[key]


def test_static_batch_runs_larger_inputs_in_chunks_as_the_dynamic_one_does(cnn):
    dynamic, static1, static4 = cnn
    x = np.random.default_rng(0).uniform(0, 16, (37, 64)).astype(np.float32)
    reference = tflite.TFLiteModel(dynamic)
    assert reference.static_batch is None
    expected = reference.predict(x)
    assert expected.shape == (37, 10)
    for flatbuffer, batch in ((static1, 1), (static4, 4)):
        runner = tflite.TFLiteModel(flatbuffer, num_threads=2)
        assert runner.static_batch == batch
        np.testing.assert_allclose(runner.predict(x), expected, atol=1e-5)
        np.testing.assert_allclose(runner.predict_each(x, batch_size=8), expected, atol=1e-5)
        # fewer rows than the batch: padded, and the padding's outputs dropped
        np.testing.assert_allclose(runner.predict(x[:1]), expected[:1], atol=1e-5)
        # never resized: the baked Reshape would fail on another batch
        assert list(runner.input_details[0]["shape"]) == [batch, 64]
    with pytest.raises(ValueError, match="static batch of 4"):
        tflite.TFLiteModel(static4).set_inputs(x[:5])


def test_int_token_ids_pass_through_unquantized(token_model):
    dynamic, static = token_model
    ids = np.random.default_rng(2).integers(0, 50, (9, 12))
    expected = tflite.TFLiteModel(dynamic).predict(ids.astype(np.int32))
    runner = tflite.TFLiteModel(static)
    assert runner.input_dtype == "int32" and runner.static_batch == 1
    for fed in (ids.astype(np.int32), ids.astype(np.int64), ids.astype(np.float32)):
        np.testing.assert_allclose(runner.predict(fed), expected, atol=1e-5)
        np.testing.assert_allclose(runner.predict_each(fed), expected, atol=1e-5)


def test_cast_input_quantizes_floats_into_a_scaled_int_tensor_only():
    int8 = {"dtype": np.int8, "quantization": (0.5, -3)}
    np.testing.assert_array_equal(
        tflite.cast_input(np.array([[0.0, 1.0, 100.0, -100.0]], np.float32), int8),
        np.array([[-3, -1, 127, -128]], np.int8),
    )
    ids = {"dtype": np.int32, "quantization": (0.0, 0)}
    got = tflite.cast_input(np.array([[3, 49]], np.int64), ids)
    assert got.dtype == np.int32 and got.tolist() == [[3, 49]]
    assert tflite.cast_input(np.array([[2.9999999]], np.float32), ids).tolist() == [[3]]
