"""The serving interface is the input's: signatures read, rebuilt around optimised models, verified.

A model exported as TFX's templates export it (``serving_default`` parses serialized tf.Examples)
keeps that signature through pruning: the pruned SavedModel answers a tf.Example request by its
SignatureDef tensor names (as TF Serving runs it: a session, not Python). A signature that
cannot be rebuilt without help is refused with a message naming it and the hook; the hook
(``serving_signatures(model)`` in ``data.module_file``) rebuilds it, and a hook that computes
something else than the input's signature is refused.
"""

from __future__ import annotations

import os
import textwrap

import numpy as np
import pytest

from tests import zoo


@pytest.fixture(scope="module")
def tfx_case(tmp_path_factory):
    return zoo.tfx_template_cnn(str(tmp_path_factory.mktemp("tfx_template")))


def _serialized(case, n=16):
    from components.common import examples as examples_lib

    files = examples_lib.split_files(case.examples_dir, "eval")
    return [r for _, r in zip(range(n), examples_lib.iter_serialized(files), strict=False)]


def tf_serving_predict(saved_model_dir: str, serialized: list[bytes], key="serving_default"):
    """What TF Serving does with a Predict request: load the SavedModel into a session and run the
    signature's output tensors, fed by its input tensors' names from the SignatureDef."""
    import tensorflow as tf

    graph = tf.Graph()
    with tf.compat.v1.Session(graph=graph) as session:
        meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], saved_model_dir)
        signature = meta.signature_def[key]
        (input_info,) = signature.inputs.values()
        names = sorted(signature.outputs)
        fetched = session.run(
            [signature.outputs[n].name for n in names], {input_info.name: serialized}
        )
    return dict(zip(names, fetched, strict=True)), signature


def test_a_tfx_template_signature_is_read_as_its_parse_spec(tfx_case):
    from components.common import model_io, signatures

    model = model_io.load_keras_model(tfx_case.model_dir)
    interface = signatures.plan(tfx_case.model_dir, model)
    (signature,) = interface.signatures.values()
    assert signature.key == "serving_default"
    assert signature.kind == signatures.PARSE_EXAMPLE
    assert signature.feature_spec == {"image": ("float32", (192,), None)}
    assert list(signature.inputs) == ["examples"] and signature.inputs["examples"].dtype == "string"
    assert list(signature.outputs) == ["outputs"]


def test_a_plain_keras_export_is_the_model_call(tiny_model, tmp_path):
    from components.common import model_io, signatures

    path = str(tmp_path / "plain")
    tiny_model.save(path, save_format="tf")
    model = model_io.load_keras_model(path)
    interface = signatures.plan(path, model)
    assert [s.kind for s in interface.signatures.values()] == [signatures.MODEL_CALL]
    assert interface.only_model_calls


def test_the_pruned_tfx_template_model_answers_tf_example_requests_as_tf_serving_would(
    tfx_case, tmp_path
):
    from components.common.examples import DataConfig
    from components.pruner import pruner
    from components.pruner.config import PrunerConfig

    config = PrunerConfig.parse(
        {
            "target_sparsity": 0.5,
            "schedule": {"kind": "constant", "frequency_steps": 2},
            "fine_tuning": {"epochs": 1, "batch_size": 32},
        }
    )
    out = str(tmp_path / "pruned")
    record = pruner.run(tfx_case.model_dir, tfx_case.examples_dir, out, config, DataConfig())
    kept = {s["key"]: s for s in record["serving_signatures"]}
    assert kept["serving_default"]["kind"] == "parse_example"
    assert kept["serving_default"]["wrapper_max_abs_diff"] <= 1e-5

    serialized = _serialized(tfx_case)
    before, before_sig = tf_serving_predict(os.path.join(tfx_case.model_dir), serialized)
    after, after_sig = tf_serving_predict(os.path.join(out, "Format-Serving"), serialized)
    # The same interface: input key, dtype and shape; output keys, dtypes, shapes.
    assert list(after_sig.inputs) == ["examples"]
    assert after_sig.inputs["examples"].dtype == before_sig.inputs["examples"].dtype
    assert sorted(after_sig.outputs) == sorted(before_sig.outputs) == ["outputs"]
    assert after["outputs"].shape == before["outputs"].shape == (len(serialized), 3)
    # The pruned model answers, with its own (pruned) weights: probabilities that sum to one.
    np.testing.assert_allclose(after["outputs"].sum(axis=1), 1.0, atol=1e-5)
    # Keras loads it too (the next step does).
    from components.common import model_io

    model = model_io.load_keras_model(out)
    assert model.input_names == ["image"]


def _custom_signature_model(path: str, scale: float = 1.0):
    """A model whose serving signature post-processes: probabilities and the class id, from
    serialized examples (two outputs: not readable without the hook)."""
    import tensorflow as tf
    import tf_keras

    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential(
        [
            tf_keras.layers.Input((192,), name="image"),
            tf_keras.layers.Dense(8, activation="relu"),
            tf_keras.layers.Dense(3, activation="softmax"),
        ]
    )
    spec = {"image": tf.io.FixedLenFeature([192], tf.float32)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve(serialized):
        probabilities = model(tf.io.parse_example(serialized, spec)["image"] * scale)
        return {"probabilities": probabilities, "classes": tf.argmax(probabilities, axis=1)}

    model.save(path, save_format="tf", signatures={"serving_default": serve})
    return path


HOOK = textwrap.dedent(
    """
    import tensorflow as tf

    def serving_signatures(model):
        spec = {{"image": tf.io.FixedLenFeature([192], tf.float32)}}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def serve(serialized):
            probabilities = model(tf.io.parse_example(serialized, spec)["image"] * {scale})
            return {{"probabilities": probabilities, "classes": tf.argmax(probabilities, axis=1)}}

        return {{"serving_default": serve}}
    """
)


def test_a_signature_that_cannot_be_rebuilt_is_an_error_naming_it_and_the_hook(tfx_case, tmp_path):
    from components.common import model_io, signatures
    from components.common.errors import ModelInputError

    path = _custom_signature_model(str(tmp_path / "custom"))
    model = model_io.load_keras_model(path)
    with pytest.raises(ModelInputError) as error:
        signatures.plan(path, model)
    message = str(error.value)
    assert "serving signature 'serving_default'" in message
    assert "serving_signatures(model)" in message and "data.module_file" in message
    assert "2 outputs" in message


def test_the_hook_rebuilds_a_custom_signature_and_is_checked_against_the_input(tfx_case, tmp_path):
    from components.common import model_io, signatures
    from components.common.errors import ModelInputError

    path = _custom_signature_model(str(tmp_path / "custom"))
    model = model_io.load_keras_model(path)
    good = tmp_path / "good.py"
    good.write_text(HOOK.format(scale=1.0))
    interface = signatures.plan(path, model, str(good))
    assert interface.signatures["serving_default"].kind == signatures.HOOK
    interface.serialized = _serialized(tfx_case)
    interface.check_wrappers(model)
    assert interface.checked["serving_default"] <= 1e-5
    rebuilt = interface.signatures_for(model)
    import tensorflow as tf

    out = rebuilt["serving_default"](examples=tf.constant(interface.serialized))
    assert sorted(out) == ["classes", "probabilities"]

    # A hook that computes something else than the exported signature is refused.
    wrong = tmp_path / "wrong.py"
    wrong.write_text(HOOK.format(scale=0.5))
    interface = signatures.plan(path, model, str(wrong))
    interface.serialized = _serialized(tfx_case)
    with pytest.raises(ModelInputError, match="does not reproduce the input's signature"):
        interface.check_wrappers(model)


def test_tfxopt_run_refuses_a_signature_it_cannot_rebuild_before_any_step(
    tfx_case, tmp_path, capsys
):
    import yaml

    from pipelines import cli

    path = _custom_signature_model(str(tmp_path / "custom"))
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"quantization": [{"mode": "none", "name": "float32"}]}))
    output = tmp_path / "out"
    rc = cli.main(
        [
            "run",
            "--model",
            path,
            "--examples",
            tfx_case.examples_dir,
            "--config",
            str(config),
            "--output",
            str(output),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "tfxopt: error:" in err and "serving signature 'serving_default'" in err
    assert "serving_signatures(model)" in err
    assert not (output / "pipeline-root").exists()  # nothing ran, nothing written
