"""Conversion from the Keras call with a static input signature (components/common/conversion.py).

An LSTM converts to TFLite's fused kernel only with a static batch (with a dynamic one the
converter fails on TensorList ops, and the error says what to set); the fused kernel keeps its
state between calls, so the runner resets it (without the reset the outputs drift from the Keras
model's); a variable-length input keeps a dynamic signature with the reason; a GRU's loop is
refused for calibrated modes before the calibrator could crash the process.
"""

from __future__ import annotations

import numpy as np
import pytest


def _token_model(recurrent: str, length: int | None = 12):
    import tf_keras

    tf_keras.utils.set_random_seed(0)
    layers = tf_keras.layers
    rnn = {
        "lstm": lambda: layers.LSTM(8, name="lstm"),
        "gru": lambda: layers.Bidirectional(layers.GRU(4), name="bigru"),
    }[recurrent]()
    return tf_keras.Sequential(
        [
            layers.Input((length,), dtype="int64", name="tokens"),
            layers.Embedding(30, 8, name="embedding"),
            rnn,
            layers.Dense(1, activation="sigmoid", name="head"),
        ]
    )


def _ops(flatbuffer: bytes) -> set[str]:
    from components.quantizer import flatbuffer as fb_lib

    return {op["op"] for op in fb_lib.operators(flatbuffer)}


def test_an_lstm_converts_to_the_fused_kernel_with_a_static_batch_only():
    from components.common import conversion
    from components.common.errors import ConversionError

    model = _token_model("lstm")
    flatbuffer, plan = conversion.convert_float32(model, 1)
    assert plan.static and plan.batch_size == 1
    assert plan.inputs == (("tokens", (1, 12), "int64"),)
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in _ops(flatbuffer)
    assert conversion.flatbuffer_plan(flatbuffer)["state_tensors"] == 2

    with pytest.raises(ConversionError) as error:
        conversion.convert_float32(model, None)
    message = str(error.value)
    assert "tf.TensorList" in message and "data.tflite_batch_size" in message


def test_the_fused_lstm_state_is_reset_before_every_call():
    import tensorflow as tf

    from components.common import conversion, tflite

    model = _token_model("lstm")
    # Random weights scaled up, so the state an example leaves behind moves the next output.
    for layer in (model.get_layer("embedding"), model.get_layer("lstm"), model.get_layer("head")):
        layer.set_weights([w * 4 for w in layer.get_weights()])
    flatbuffer, _ = conversion.convert_float32(model, 1)
    x = np.random.default_rng(1).integers(1, 30, (24, 12)).astype(np.int64)
    expected = np.asarray(model(x)).ravel()
    ours = tflite.TFLiteModel(flatbuffer).predict_each(x).ravel()
    np.testing.assert_allclose(ours, expected, atol=1e-5)

    # The same flatbuffer called without the reset carries one example's state into the next.
    interpreter = tf.lite.Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    drifted = []
    for row in x:
        interpreter.set_tensor(inp["index"], row[None])
        interpreter.invoke()
        drifted.append(float(interpreter.get_tensor(out["index"]).ravel()[0]))
    assert abs(drifted[0] - expected[0]) < 1e-5  # the first call starts from zeros
    assert np.max(np.abs(np.array(drifted) - expected)) > 1e-2


def test_a_variable_length_input_keeps_a_dynamic_signature_with_the_reason():
    from components.common import conversion

    plan = conversion.plan_inputs(_token_model("lstm", length=None), 1)
    assert not plan.static and plan.batch_size is None and plan.requested == 1
    assert "input 'tokens' has a variable dimension" in plan.reason
    assert conversion.plan_inputs(_token_model("lstm"), None).reason is None  # asked for


def test_a_gru_loop_is_refused_for_calibrated_modes_before_calibration():
    from components.common import conversion
    from components.common.errors import ConversionError
    from components.quantizer import conversion as quantizer_conversion
    from components.quantizer.config import QuantizerConfig

    model = _token_model("gru")
    flatbuffer, _ = conversion.convert_float32(model, 1)
    assert "WHILE" in _ops(flatbuffer)  # float32 converts: the loop stays a loop
    with pytest.raises(ConversionError, match="'bigru' \\(Bidirectional\\)") as error:
        quantizer_conversion.check_calibratable(model, QuantizerConfig(mode="full_int8"), 1)
    assert "dynamic_range" in str(error.value)
    # An LSTM is fused, not a loop: calibration goes ahead.
    quantizer_conversion.check_calibratable(
        _token_model("lstm"), QuantizerConfig(mode="full_int8"), 1
    )
