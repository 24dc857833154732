"""TFX Transform: a model trained on Transform's transformed examples, served on raw tf.Examples.

The model (:func:`tests.zoo.tfx_transform_mlp`) is exported as TFX's templates export it: the
Transform layer attached as ``model.tft_layer`` and ``serving_default`` parsing raw tf.Examples
through it. Its signature is read as a ``transform`` signature, rebuilt around an optimised model
with the same Transform graph (the one the SavedModel embeds, or ``data.transform_graph``),
verified on raw examples (``data.raw_examples``), and the pruned model answers raw tf.Example
requests as TF Serving runs them. The Transform layer never reaches a step's walk over
``model.layers``. Bad inputs (transformed examples only, missing vocabularies, a raw parse with
no Transform graph) are one clear error each.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from tests import zoo
from tests.test_signatures import tf_serving_predict


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    return zoo.tfx_transform_mlp(str(tmp_path_factory.mktemp("tfx_transform")))


def _root(case) -> str:
    return os.path.dirname(case.model_dir)


def _data(case, **overrides):
    from components.common.examples import DataConfig

    return DataConfig(**{**case.config["data"], **overrides})


def _raw_eval(case) -> list[bytes]:
    from components.common import examples as examples_lib

    files = examples_lib.split_files(case.config["data"]["raw_examples"], "eval")
    return list(examples_lib.iter_serialized(files))


def test_a_transform_signature_is_read_with_its_raw_spec_and_the_embedded_graph(case):
    from components.common import model_io, signatures

    model = model_io.load_keras_model(case.model_dir)
    interface = signatures.plan(case.model_dir, model)
    (signature,) = interface.signatures.values()
    assert signature.kind == signatures.TRANSFORM
    # The raw features the signature parses (the label is not one of them), not the model's.
    assert signature.feature_spec == {
        "age": ("float32", (1,), None),
        "color": ("string", (1,), None),
        "size": ("float32", (1,), None),
    }
    assert sorted(model.input_names) == ["age_xf", "color_xf", "size_xf"]
    described = interface.describe()[0]
    assert described["kind"] == "transform"
    assert described["transform_graph"] == "embedded in the SavedModel (tft_layer)"

    # Configured, the Transform component's output is the graph it is rebuilt with.
    graph_dir = os.path.join(_root(case), "transform_graph")
    configured = signatures.plan(case.model_dir, model, transform_graph=graph_dir)
    assert configured.signatures["serving_default"].transform_graph == graph_dir
    assert configured.describe()[0]["transform_graph"] == graph_dir


def test_the_transform_layer_is_kept_out_of_every_layer_walk(case):
    import tf_keras

    from components.common import flops, model_io, transform

    plain = tf_keras.models.load_model(case.model_dir, compile=False)
    assert [layer.name for layer in plain.layers if transform.is_transform_layer(layer)]
    model = model_io.load_keras_model(case.model_dir)
    assert not [layer for layer in model.layers if transform.is_transform_layer(layer)]
    assert not hasattr(model, transform.LAYER_ATTRIBUTE)
    assert len(model.layers) == len(plain.layers) - 1
    # FLOPs (one walk over model.layers among many): the plain load meets the Transform layer,
    # ours does not.
    walked = [entry["layer"] for entry in flops.model_flops(plain)["per_layer"]]
    assert any(name.startswith("transform_features_layer") for name in walked), walked
    counted = flops.model_flops(model)
    assert counted["flops_per_example"] > 0
    layers = [entry["layer"] for entry in counted["per_layer"]]
    assert layers == [layer.name for layer in model.layers]
    assert not any(name.startswith("transform_features_layer") for name in layers), layers
    assert not any("Transform" in entry for entry in counted["uncounted_layers"])


def test_the_importer_copies_a_transform_model_as_it_is(case, tmp_path):
    """The Transform layer is a Keras Model outside the model's graph, not a nested model to
    flatten: the baseline is the checkpoint's bytes, its signature recorded as a transform one."""
    from components.importer import importer
    from components.importer.config import ImporterConfig

    out = tmp_path / "imported"
    out.mkdir()
    record = importer.run(
        case.model_dir, case.examples_dir, _data(case), ImporterConfig(), str(out)
    )
    assert record[importer.ACTION] == "copied"
    assert [s["kind"] for s in record["serving_signatures"]] == ["transform"]
    with open(os.path.join(case.model_dir, "saved_model.pb"), "rb") as f:
        original = f.read()
    with open(out / "Format-Serving" / "saved_model.pb", "rb") as f:
        assert f.read() == original


def test_the_signature_rebuilt_around_the_unchanged_model_is_the_input_s(case, tmp_path):
    """float32, nothing optimised: the rebuilt SavedModel answers raw requests exactly as the
    input does (TF Serving's way), and carries the vocabulary with it."""
    from components.common import artifact_output, model_io, signatures, transform

    model = model_io.load_keras_model(case.model_dir)
    interface = signatures.interface_for(case.model_dir, model, case.examples_dir, _data(case))
    interface.check_wrappers(model)
    assert interface.checked["serving_default"] <= 1e-5
    out = str(tmp_path / "copy")
    artifact_output.write_model(out, model=model, interface=interface)
    assert not hasattr(model, transform.LAYER_ATTRIBUTE)  # attached only while saving
    saved = os.path.join(out, "Format-Serving")
    assert os.listdir(os.path.join(saved, "assets")) == ["color"]
    raw = _raw_eval(case)
    before, _ = tf_serving_predict(case.model_dir, raw)
    after, signature = tf_serving_predict(saved, raw)
    assert list(signature.inputs) == ["examples"]
    np.testing.assert_array_equal(
        np.argmax(after["outputs"], axis=1), np.argmax(before["outputs"], axis=1)
    )
    np.testing.assert_allclose(after["outputs"], before["outputs"], atol=1e-6)


def test_the_pruned_transform_model_answers_raw_tf_examples_as_tf_serving_would(case, tmp_path):
    from components.common import examples as examples_lib
    from components.common import model_io
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
    record = pruner.run(case.model_dir, case.examples_dir, out, config, _data(case))
    (kept,) = record["serving_signatures"]
    assert kept["kind"] == "transform" and kept["wrapper_max_abs_diff"] <= 1e-5
    assert record["achieved_sparsity"] > 0.4
    assert "transform_features_layer" not in " ".join(record["pruned_layers"])

    raw = _raw_eval(case)
    before, before_sig = tf_serving_predict(case.model_dir, raw)
    after, after_sig = tf_serving_predict(os.path.join(out, "Format-Serving"), raw)
    assert list(after_sig.inputs) == list(before_sig.inputs) == ["examples"]
    assert sorted(after_sig.outputs) == sorted(before_sig.outputs) == ["outputs"]
    assert after["outputs"].shape == before["outputs"].shape == (len(raw), 3)
    # Raw examples through the kept Transform graph give what the pruned Keras model gives on
    # the same examples as Transform wrote them: the graph travelled with the model.
    pruned = model_io.load_keras_model(out)
    x, _ = examples_lib.load_arrays(case.examples_dir, "eval", _data(case), pruned)
    np.testing.assert_allclose(after["outputs"], pruned.predict(x, verbose=0), atol=1e-5)
    # ...and the pruned model's own answers, not the input's.
    assert np.max(np.abs(after["outputs"] - before["outputs"])) > 1e-4


def test_a_transform_graph_other_than_the_model_s_is_refused(case, tmp_path):
    """``data.transform_graph`` pointing to another run's Transform (other statistics and
    vocabulary order): the rebuilt signature does not give the input's answers, so it is refused
    before anything is written."""
    from components.common import model_io, signatures
    from components.common.errors import ModelInputError

    other_graph, _, _ = zoo.run_transform(str(tmp_path / "other"), seed=1)
    model = model_io.load_keras_model(case.model_dir)
    data = _data(case, transform_graph=other_graph)
    interface = signatures.interface_for(case.model_dir, model, case.examples_dir, data)
    with pytest.raises(ModelInputError, match="does not reproduce the input's signature"):
        interface.check_wrappers(model)


def test_transformed_examples_without_raw_examples_are_a_clear_error(case, tmp_path, capsys):
    import yaml

    from components.common import model_io, signatures
    from components.common.errors import ModelInputError
    from pipelines import cli

    model = model_io.load_keras_model(case.model_dir)
    with pytest.raises(ModelInputError) as error:
        signatures.interface_for(
            case.model_dir, model, case.examples_dir, _data(case, raw_examples=None)
        )
    message = str(error.value)
    assert "\n" not in message
    assert "serving signature 'serving_default'" in message
    assert "['age', 'color', 'size']" in message  # what the transformed examples lack
    assert "set data.raw_examples" in message

    # tfxopt run: refused at preflight, before any step, nothing written.
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"quantization": [{"mode": "none"}]}))
    output = tmp_path / "out"
    rc = cli.main(
        ["run", "--model", case.model_dir, "--examples", case.examples_dir]
        + ["--config", str(config), "--output", str(output)]
    )
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "tfxopt: error:" in err and "set data.raw_examples" in err
    assert not (output / "pipeline-root").exists()


def test_missing_vocabularies_are_a_clear_error_before_any_step(case, tmp_path, capsys):
    import yaml

    from components.common import model_io
    from components.common.errors import ModelInputError
    from pipelines import cli

    broken = str(tmp_path / "no_assets")
    shutil.copytree(case.model_dir, broken)
    shutil.rmtree(os.path.join(broken, "assets"))
    with pytest.raises(ModelInputError, match=r"missing from its assets/ directory: color"):
        model_io.load_keras_model(broken)

    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump({"data": case.config["data"], "quantization": [{"mode": "none"}]})
    )
    output = tmp_path / "out"
    rc = cli.main(
        ["run", "--model", broken, "--examples", case.examples_dir, "--config", str(config)]
        + ["--output", str(output)]
    )
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "tfxopt: error:" in err and "assets/" in err and "tft_layer" in err
    assert not (output / "pipeline-root").exists()  # nothing ran, nothing written


def test_a_raw_parse_with_no_transform_graph_names_the_key_to_set(case, tmp_path):
    """A signature that parses raw features the model does not take, with no Transform layer
    in the SavedModel and no data.transform_graph: refused, naming the signature and the key."""
    import tensorflow as tf

    from components.common import model_io, signatures
    from components.common.errors import ModelInputError

    model = model_io.load_keras_model(case.model_dir)
    spec = {
        "size": tf.io.FixedLenFeature([1], tf.float32),
        "color": tf.io.FixedLenFeature([1], tf.int64),
        "age": tf.io.FixedLenFeature([1], tf.int64),
    }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve(serialized):
        raw = tf.io.parse_example(serialized, spec)
        features = {
            "size_xf": (raw["size"] - 50.0) / 20.0,
            "color_xf": raw["color"],
            "age_xf": raw["age"] // 20,
        }
        return {"outputs": model(features)}

    path = str(tmp_path / "hand_made")
    model.save(path, save_format="tf", signatures={"serving_default": serve})
    with pytest.raises(ModelInputError) as error:
        signatures.plan(path, model_io.load_keras_model(path))
    message = str(error.value)
    assert "serving signature 'serving_default'" in message
    assert "set data.transform_graph" in message and "serving_signatures(model)" in message


def test_the_profiler_times_the_transform_signature_on_raw_examples(case):
    from components.profiler import profiler
    from components.profiler.config import ProfilerConfig

    config = ProfilerConfig.parse(
        {"warmup_runs": 1, "timed_runs": 3, "throughput_runs": 1, "measure_memory": False}
    )
    record = profiler.profile_model(case.model_dir, case.examples_dir, _data(case), config)
    assert record["latency"]["saved_model_batch1"]["p50_ms"] > 0
    assert record["latency"]["throughput"]["saved_model_examples_per_s"] > 0
    assert record["accuracy"]["saved_model"] == pytest.approx(
        record["accuracy"]["tflite"], abs=0.02
    )


def test_the_raw_feeder_cycles_raw_examples_to_the_batch(case):
    from components.common import model_io, signatures

    loaded = model_io.load_saved_model(case.model_dir)
    function = loaded.signatures["serving_default"]
    model = model_io.load_keras_model(case.model_dir)
    assert signatures.serving_feeder(function, model) is None  # model inputs are not raw
    raw = _raw_eval(case)[:3]
    feeds = signatures.serving_feeder(function, model, raw_records=raw)
    fed = feeds((np.zeros((7, 1), np.float32),))["examples"].numpy().tolist()
    assert fed == [raw[i % 3] for i in range(7)]
    assert function(**feeds((np.zeros((7, 1), np.float32),)))["outputs"].shape == (7, 3)


# ----------------------------------------------------------------------------- raw Examples + graph


def test_raw_examples_and_the_transform_graph_feed_the_model_as_the_transformed_examples(case):
    """``data.transform_graph`` with raw Examples: every step's inputs (tf.data) and the
    Evaluator's (its Beam batches) are what the Transform wrote, example for example."""
    from components.common import examples as examples_lib
    from components.common import model_io
    from components.evaluator import accuracy

    model = model_io.load_keras_model(case.model_dir)
    graph_dir = os.path.join(_root(case), "transform_graph")
    raw_dir = case.config["data"]["raw_examples"]
    transformed_x, transformed_y = examples_lib.load_arrays(
        case.examples_dir, "eval", _data(case), model
    )
    raw_data = _data(case, raw_examples=None, transform_graph=graph_dir)
    mapping = examples_lib.resolve_mapping(raw_dir, "eval", raw_data, model)
    assert mapping.transform_graph == graph_dir
    assert mapping.feature_keys == ("size_xf", "color_xf", "age_xf")
    raw_x, raw_y = examples_lib.load_arrays(raw_dir, "eval", raw_data, model)
    np.testing.assert_array_equal(raw_y, transformed_y)
    for got, expected in zip(raw_x, transformed_x, strict=True):
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)

    inputs = accuracy.inputs_from_mapping(mapping)
    (path,) = examples_lib.split_files(raw_dir, "eval")
    batches = list(accuracy.read_batches(path, 40, inputs))
    assert [len(labels) for _, _, labels in batches] == [40, 40, 16]
    for i, expected in enumerate(transformed_x):
        np.testing.assert_array_equal(np.concatenate([x[i] for _, x, _ in batches]), expected)
    # Without the graph, the raw Examples cannot feed the model: the mapping names the feature.
    from components.common.errors import DataError

    with pytest.raises(DataError, match="feature .color. holds bytes") as error:
        examples_lib.resolve_mapping(raw_dir, "eval", _data(case, raw_examples=None), model)
    assert "set data.transform_graph" in str(error.value)


def test_the_profiler_measures_raw_examples_through_the_graph_as_transformed_ones(case):
    from components.profiler import profiler
    from components.profiler.config import ProfilerConfig

    config = ProfilerConfig.parse(
        {"warmup_runs": 1, "timed_runs": 3, "throughput_runs": 1, "measure_memory": False}
    )
    graph_dir = os.path.join(_root(case), "transform_graph")
    raw_data = _data(case, raw_examples=None, transform_graph=graph_dir)
    raw_dir = case.config["data"]["raw_examples"]
    on_raw = profiler.profile_model(case.model_dir, raw_dir, raw_data, config)
    on_transformed = profiler.profile_model(case.model_dir, case.examples_dir, _data(case), config)
    assert on_raw["accuracy"]["saved_model"] == on_transformed["accuracy"]["saved_model"]
    assert on_raw["accuracy"]["tflite"] == on_transformed["accuracy"]["tflite"]
    assert on_raw["latency"]["saved_model_batch1"]["p50_ms"] > 0


def test_a_transform_graph_without_its_transform_fn_is_named(case, tmp_path):
    from components.common import model_io, signatures
    from components.common.errors import ModelInputError

    model = model_io.load_keras_model(case.model_dir)
    empty = tmp_path / "not_a_graph"
    empty.mkdir()
    with pytest.raises(ModelInputError, match=r"data.transform_graph .* holds no transform_fn/"):
        signatures.plan(case.model_dir, model, transform_graph=str(empty))
