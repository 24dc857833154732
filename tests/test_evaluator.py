"""Evaluator and LatencyBenchmark on real models: Beam accuracy, the executor, the standard Pusher."""

import json
import os

import numpy as np
import pytest

from components.common import model_io
from components.common.errors import ConfigError
from components.common.examples import DataConfig

BEAM_ARGS = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]


# --------------------------------------------------------------------------- helpers


def _to_tflite(keras_model, float16=False) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    if float16:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


def _artifact(cls, uri, **props):
    artifact = cls()
    artifact.uri = str(uri)
    os.makedirs(artifact.uri, exist_ok=True)
    for key, value in props.items():
        artifact.set_string_custom_property(key, value)
    return artifact


def _examples_artifact(uri):
    from tfx.types import artifact_utils, standard_artifacts

    examples = _artifact(standard_artifacts.Examples, uri)
    examples.split_names = artifact_utils.encode_split_names(["train", "eval"])
    return examples


def _run_evaluator(tmp_path, baseline_uri, candidates: dict, examples_uri, config, **inputs):
    """Runs our Evaluator executor like TFX does; returns (blessing, model, evaluation)."""
    from tfx.dsl.components.base import base_beam_executor
    from tfx.types import standard_artifacts

    from components.common.types import EvaluationReport
    from components.evaluator import constants as c
    from components.evaluator.executor import Executor

    input_dict = {
        c.BASELINE_MODEL_KEY: [_artifact(standard_artifacts.Model, baseline_uri)],
        c.EXAMPLES_KEY: [_examples_artifact(examples_uri)],
        **inputs,
    }
    for i, uri in enumerate(candidates.values()):
        input_dict[c.candidate_key(i)] = [
            _artifact(standard_artifacts.Model, uri, made_by=f"branch {i}")
        ]
    out = tmp_path / "outputs"
    blessing = _artifact(standard_artifacts.ModelBlessing, out / "blessing")
    model = _artifact(standard_artifacts.Model, out / "model")
    evaluation = _artifact(EvaluationReport, out / "evaluation")
    context = base_beam_executor.BaseBeamExecutor.Context(
        beam_pipeline_args=BEAM_ARGS, tmp_dir=str(tmp_path / "tmp")
    )
    Executor(context).Do(
        input_dict,
        {c.BLESSING_KEY: [blessing], c.MODEL_KEY: [model], c.EVALUATION_KEY: [evaluation]},
        {
            "config": json.dumps(config),
            "data_config": DataConfig().model_dump_json(),
            c.CANDIDATE_NAMES_KEY: json.dumps(list(candidates)),
        },
    )
    return blessing, model, evaluation


def _push(tmp_path, model, blessing):
    """Runs the standard TFX Pusher executor on our outputs; returns (pushed artifact, dir)."""
    from tfx.components.pusher import executor as pusher_executor
    from tfx.types import standard_artifacts

    serving = tmp_path / "serving"
    serving.mkdir()
    pushed = _artifact(standard_artifacts.PushedModel, tmp_path / "pushed")
    pusher_executor.Executor().Do(
        {"model": [model], "model_blessing": [blessing]},
        {"pushed_model": [pushed]},
        {
            "push_destination": json.dumps(
                {"filesystem": {"base_directory": str(serving), "versioning": "AUTO"}}
            )
        },
    )
    return pushed, serving


def _record(artifact):
    with open(os.path.join(artifact.uri, "evaluation.json")) as f:
        return json.load(f)


def _candidate(record, name):
    return next(c for c in record["candidates"] if c["name"] == name)


# --------------------------------------------------------------------------- reference models


@pytest.fixture(scope="module")
def reference_candidates(reference_data, tmp_path_factory):
    """A float16 candidate (the float SavedModel plus a float16 TFLite flavour, as a quantizer
    writes it) and a TFLite-only candidate whose weights are perturbed to lose accuracy."""
    import shutil

    import tf_keras

    root = tmp_path_factory.mktemp("candidates")
    model = tf_keras.models.load_model(reference_data["model"], compile=False)
    float16 = str(root / "float16")
    shutil.copytree(reference_data["model"], os.path.join(float16, model_io.SERVING_DIR))
    model_io.write_tflite(_to_tflite(model, float16=True), float16)
    # Classes 0 and 1 swap places in the output layer: their eval examples (about a fifth) are
    # misclassified whatever weights training found on this processor.
    head = model.get_layer("predictions")
    for variable in (head.kernel, head.bias):
        values = variable.numpy()
        values[..., [0, 1]] = values[..., [1, 0]]
        variable.assign(values)
    perturbed = str(root / "perturbed")
    model_io.write_tflite(_to_tflite(model), perturbed)
    return {"float16": float16, "perturbed": perturbed}


def test_beam_accuracy_equals_in_memory_accuracy(reference_data, reference_candidates, tmp_path):
    import tf_keras

    from components.common import examples as examples_lib
    from components.common.tflite import TFLiteModel
    from components.evaluator import accuracy, models, outcomes

    examples = reference_data["examples"]
    baseline = models.prepare(
        models.ModelRef("baseline", reference_data["model"]), "saved_model", str(tmp_path)
    )
    float16 = models.prepare(models.ModelRef("float16", reference_candidates["float16"]))
    assert (baseline.flavour, float16.flavour) == ("saved_model", "tflite")
    inputs = accuracy.resolve_inputs(
        examples, "eval", DataConfig(), baseline.input_shapes, "classification"
    )
    result = accuracy.run_accuracy(
        [baseline, float16],
        examples,
        "eval",
        inputs,
        accuracy.AccuracySettings(),
        str(tmp_path / "beam"),
        batch_size=50,
        beam_pipeline_args=BEAM_ARGS,
    )

    # The plain in-memory computation: the whole split as numpy, both models, argmax.
    keras_model = tf_keras.models.load_model(reference_data["model"], compile=False)
    x, y = examples_lib.load_arrays(examples, "eval", DataConfig(), keras_model)
    keras_correct = np.argmax(keras_model.predict(x, verbose=0), -1) == y
    with open(float16.path, "rb") as f:
        tflite_correct = np.argmax(TFLiteModel(f.read()).predict_each(x), -1) == y
    assert result["examples"] == len(y) == reference_data["eval_examples"]
    assert result["models"]["baseline"]["top1_accuracy"] == pytest.approx(keras_correct.mean())
    assert result["models"]["float16"]["top1_accuracy"] == pytest.approx(tflite_correct.mean())
    assert result["models"]["baseline"]["top1_accuracy"] == pytest.approx(
        reference_data["eval_accuracy"], abs=1e-6
    )
    # Per example, matched by the digest of the serialized example.
    keys = [
        outcomes.example_key(s)
        for s in examples_lib.iter_serialized(examples_lib.split_files(examples, "eval"))
    ]
    rows = {r["key"]: r for r in accuracy.read_per_example(result["per_example_dir"])}
    assert len(rows) == len(set(keys))
    for key, base_ok, cand_ok, label in zip(keys, keras_correct, tflite_correct, y, strict=True):
        assert rows[key]["label"] == label
        assert rows[key]["outcomes"]["baseline"]["correct"] == int(base_ok)
        assert rows[key]["outcomes"]["float16"]["correct"] == int(cand_ok)
    table = result["paired"]["float16"]
    assert table["n11"] + table["n10"] == int(keras_correct.sum())
    assert table["n11"] + table["n01"] == int(tflite_correct.sum())


def test_executor_blesses_float16_rejects_the_perturbed_and_the_pusher_pushes(
    reference_data, reference_candidates, tmp_path
):
    config = {
        "rules": {"max_accuracy_drop_points": 1.0, "min_compression_ratio": 1.5},
        "objective": "smallest",
        "latency": {"warmup_runs": 5, "timed_runs": 30},
    }
    blessing, model, evaluation = _run_evaluator(
        tmp_path, reference_data["model"], reference_candidates, reference_data["examples"], config
    )
    record = _record(evaluation)
    assert record == _record(blessing)
    assert record["decision"]["selected"] == "float16"
    assert blessing.get_int_custom_property("blessed") == 1
    assert os.path.exists(os.path.join(blessing.uri, "BLESSED"))
    assert not os.path.exists(os.path.join(blessing.uri, "NOT_BLESSED"))
    assert blessing.get_string_custom_property("selected_candidate") == "float16"

    f16 = _candidate(record, "float16")
    assert (
        f16["flavour"] == "tflite" and record["baseline"]["flavour_source"] == "float32 conversion"
    )
    assert f16["metrics"]["accuracy_drop_points"] <= 1.0
    assert f16["metrics"]["compression_ratio"] > 1.5
    assert all(r["passed"] for r in f16["rules"])
    bad = _candidate(record, "perturbed")
    by_rule = {r["rule"]: r for r in bad["rules"]}
    assert by_rule["max_accuracy_drop_points"]["passed"] is False
    assert by_rule["max_accuracy_drop_points"]["value"] > 1.0
    assert not bad["eligible"]
    assert bad["comparison"]["mcnemar_p"] < 0.01
    assert bad["comparison"]["interval"]["drop_points"][0] > 1.0
    for cand in (f16, bad):
        for key in ("p50_ms", "p95_ms", "p99_ms"):
            assert cand["latency_used"][key] > 0
        assert cand["size"]["gzip_bytes"] < cand["size"]["raw_bytes"]

    # The model output is the judged candidate, byte for byte, with where it came from.
    with open(os.path.join(model.uri, "Format-TFLite", "model.tflite"), "rb") as f:
        copied = f.read()
    with open(
        os.path.join(reference_candidates["float16"], "Format-TFLite", "model.tflite"), "rb"
    ) as f:
        assert copied == f.read()
    assert model.get_string_custom_property("selected_candidate") == "float16"
    assert model.get_string_custom_property("made_by") == "branch 0"
    with open(os.path.join(blessing.uri, "production_metrics.json")) as f:
        production = json.load(f)
    assert production["accuracy"] == f16["metrics"]["top1_accuracy"]
    assert production["size_gzip_bytes"] == f16["size"]["gzip_bytes"]

    pushed, serving = _push(tmp_path, model, blessing)
    assert pushed.get_int_custom_property("pushed") == 1
    (version,) = os.listdir(serving)
    assert os.path.exists(serving / version / "saved_model.pb")


# --------------------------------------------------------------------------- tiny models


@pytest.fixture(scope="module")
def speed_models(tmp_path_factory):
    """A big-but-fast baseline (one wide dense layer) and a small-but-slow conv candidate."""
    import tf_keras

    layers = tf_keras.layers
    tf_keras.utils.set_random_seed(0)
    fast = tf_keras.Sequential(
        [
            layers.Input(shape=(64,), name="image"),
            layers.Dense(512, "relu"),
            layers.Dense(10, "softmax"),
        ]
    )
    convs = [layers.Conv2D(16, 3, padding="same", activation="relu") for _ in range(5)]
    slow = tf_keras.Sequential(
        [layers.Input(shape=(64,), name="image"), layers.Reshape((8, 8, 1)), *convs]
        + [layers.Conv2D(1, 1), layers.Flatten(), layers.Dense(10, activation="softmax")]
    )
    tmp_path = tmp_path_factory.mktemp("speed_models")
    baseline = str(tmp_path / "baseline")
    model_io.write_tflite(_to_tflite(fast), baseline)
    slow_uri = str(tmp_path / "slow_small")
    model_io.write_tflite(_to_tflite(slow), slow_uri)  # a TFLite-only candidate artifact
    corrupt = tmp_path / "corrupt" / "Format-TFLite"
    corrupt.mkdir(parents=True)
    (corrupt / "model.tflite").write_bytes(b"not a flatbuffer")
    return {"baseline": baseline, "slow_small": slow_uri, "corrupt": str(tmp_path / "corrupt")}


def test_min_speedup_rejects_a_smaller_but_slower_candidate_and_nothing_is_pushed(
    speed_models, tiny_examples, tmp_path
):
    config = {
        "rules": {"min_speedup": 1.0, "latency_statistic": "p50", "min_compression_ratio": 1.0},
        "latency": {"warmup_runs": 20, "timed_runs": 200, "multi_thread_threads": 2},
    }
    candidates = {"slow_small": speed_models["slow_small"], "corrupt": speed_models["corrupt"]}
    blessing, model, evaluation = _run_evaluator(
        tmp_path, speed_models["baseline"], candidates, tiny_examples, config
    )
    record = _record(evaluation)
    slow = _candidate(record, "slow_small")
    rules_by_name = {r["rule"]: r for r in slow["rules"]}
    assert slow["metrics"]["compression_ratio"] > 1.5  # smaller...
    assert rules_by_name["min_compression_ratio"]["passed"] is True
    assert slow["metrics"]["speedup"] < 1.0  # ...but slower: rejected
    assert rules_by_name["min_speedup"]["passed"] is False
    # The rule names the figure it judged (p50 at one thread); two threads are recorded beside.
    assert rules_by_name["min_speedup"]["num_threads"] == 1
    assert "(p50, batch 1, 1 thread)" in rules_by_name["min_speedup"]["detail"]
    from components.evaluator.evaluator import rules_table

    assert "[p50, 1 thread]" in rules_table(record)
    for measured in (record["baseline"], slow):
        assert measured["latency_measured"]["num_threads"] == 1
        assert measured["latency_measured"]["multi_thread"]["num_threads"] == 2
        assert measured["latency_measured"]["multi_thread"]["p50_ms"] > 0
    assert record["latency_sources"]["num_threads"] == 1
    assert record["latency_sources"]["multi_thread_threads"] == 2
    corrupt = _candidate(record, "corrupt")
    assert "does not load" in corrupt["error"]
    assert not corrupt["eligible"]
    assert not record["decision"]["blessed"] and record["decision"]["selected"] is None
    assert blessing.get_int_custom_property("blessed") == 0
    assert os.path.exists(os.path.join(blessing.uri, "NOT_BLESSED"))
    assert os.listdir(model.uri) == ["NOT_SELECTED"]

    pushed, serving = _push(tmp_path, model, blessing)
    assert pushed.get_int_custom_property("pushed") == 0
    assert os.listdir(serving) == []


def test_latency_benchmark_report_and_external_file_feed_the_rules(
    speed_models, tiny_examples, tmp_path
):
    from tfx.types import standard_artifacts

    from components.common.types import LatencyReport
    from components.evaluator import evaluator
    from components.evaluator.latency import read_latency_file
    from components.evaluator.models import ModelRef
    from components.latency_benchmark.executor import Executor as LatencyExecutor

    report = _artifact(LatencyReport, tmp_path / "latency_report")
    LatencyExecutor().Do(
        {
            "baseline_model": [_artifact(standard_artifacts.Model, speed_models["baseline"])],
            "candidate_0": [_artifact(standard_artifacts.Model, speed_models["slow_small"])],
            "examples": [_examples_artifact(tiny_examples)],
        },
        {"latency_report": [report]},
        {
            "config": json.dumps({"timed_runs": 50}),
            "data_config": DataConfig().model_dump_json(),
            "candidate_names": json.dumps(["slow_small"]),
        },
    )
    doc = read_latency_file(os.path.join(report.uri, "latency.json"))
    assert set(doc["models"]) == {"baseline", "slow_small"}
    assert doc["models"]["slow_small"]["p95_ms"] > 0
    assert report.get_float_custom_property("slow_small_p95_ms") > 0

    # A device run: benchmark_model's text output for both models, judged on the mean.
    device = {
        "source": "test device",
        "models": {
            "baseline": {
                "benchmark_model_output": "Inference timings in us: Init: 10, "
                "First inference: 900, Warmup (avg): 850, Inference (avg): 800"
            },
            "slow_small": {"mean_ms": 0.4},
        },
    }
    device_path = tmp_path / "device_latency.json"
    device_path.write_text(json.dumps(device))
    from components.evaluator.config import EvaluatorConfig

    def judge_slow_small(config: dict, work: str) -> dict:
        return evaluator.evaluate(
            ModelRef("baseline", speed_models["baseline"]),
            [ModelRef("slow_small", speed_models["slow_small"])],
            tiny_examples,
            DataConfig(),
            EvaluatorConfig.parse({**config, "write_per_example": False}),
            str(tmp_path / work),
            latency_report_uri=report.uri,
            beam_pipeline_args=BEAM_ARGS,
        )

    rules = {"min_speedup": 1.5, "latency_statistic": "mean"}
    latency = {"measure": False, "source": "external", "external_path": str(device_path)}
    record = judge_slow_small({"rules": rules, "latency": latency}, "work")
    slow = _candidate(record, "slow_small")
    assert slow["latency_used"]["source"] == "external: test device"
    assert slow["metrics"]["speedup"] == pytest.approx(2.0)  # 0.8 ms / 0.4 ms
    assert record["decision"]["blessed"]
    assert "latency_measured" not in slow

    # The same with the in-pipeline LatencyBenchmark only: its (slower) figures reject it.
    rules = {"min_speedup": 1.0, "latency_statistic": "p50"}
    latency = {"measure": False, "source": "external"}
    config = {"rules": rules, "latency": latency, "require_saved_model": True}
    record = judge_slow_small(config, "work2")
    slow = _candidate(record, "slow_small")
    assert slow["latency_used"]["source"].startswith("external: LatencyBenchmark step")
    assert slow["latency_used"]["p50_ms"] > slow["baseline_latency_used"]["p50_ms"]
    # A TFLite-only candidate cannot go to TF Serving: not eligible when that is required.
    assert "no SavedModel flavour" in slow["error"]
    assert not record["decision"]["blessed"]


def test_regression_task_mae_and_paired_interval(tiny_examples, tmp_path):
    import tf_keras

    from components.common import examples as examples_lib
    from components.evaluator import evaluator
    from components.evaluator.config import EvaluatorConfig
    from components.evaluator.models import ModelRef

    tf_keras.utils.set_random_seed(3)
    model = tf_keras.Sequential(
        [tf_keras.layers.Input(shape=(64,), name="image"), tf_keras.layers.Dense(1)]
    )
    base_uri, cand_uri = str(tmp_path / "base"), str(tmp_path / "cand")
    model_io.save_keras_model(model, base_uri)
    kernel = model.layers[0].kernel
    kernel.assign(kernel.numpy() * 1.01)
    model_io.save_keras_model(model, cand_uri)
    config = EvaluatorConfig.parse(
        {
            "task": "regression",
            "baseline_flavour": "saved_model",
            "rules": {"max_error_increase": 5.0, "accuracy_drop_bound": "upper_confidence"},
            "objective": "most_accurate",
            "latency": {"measure": False},
        }
    )
    record = evaluator.evaluate(
        ModelRef("baseline", base_uri),
        [ModelRef("scaled", cand_uri)],
        tiny_examples,
        DataConfig(),
        config,
        str(tmp_path / "work"),
        beam_pipeline_args=BEAM_ARGS,
    )
    loaded = model_io.load_keras_model(base_uri)
    x, y = examples_lib.load_arrays(tiny_examples, "eval", DataConfig(), loaded)
    base_pred = loaded.predict(x, verbose=0)[:, 0]
    assert record["baseline"]["accuracy"]["mae"] == pytest.approx(np.mean(np.abs(base_pred - y)))
    cand = _candidate(record, "scaled")
    lo, hi = cand["comparison"]["interval"]["increase"]
    assert lo <= cand["comparison"]["increase"] <= hi
    assert cand["rules"][0]["metric"] == "error_increase_upper"
    assert record["decision"]["selected"] == "scaled"


# --------------------------------------------------------------------------- component


def test_component_maps_candidates_onto_slots_and_validates_at_build_time():
    from tfx.dsl.components.common.importer import Importer
    from tfx.types import standard_artifacts

    from components.evaluator.component import Evaluator
    from components.latency_benchmark.component import LatencyBenchmark

    def model_channel(name):
        importer = Importer(source_uri=f"/models/{name}", artifact_type=standard_artifacts.Model)
        return importer.with_id(name).outputs["result"]

    examples = Importer(source_uri="/examples", artifact_type=standard_artifacts.Examples).outputs[
        "result"
    ]
    base = model_channel("base")
    latency = LatencyBenchmark(base, {"int8": model_channel("q8")})
    evaluator = Evaluator(
        base,
        {"float16": model_channel("q16"), "int8": model_channel("q8")},
        examples,
        latency_report=latency.outputs["latency_report"],
        config={"rules": {"max_accuracy_drop_points": 1, "min_speedup": 1.0}},
    )
    assert json.loads(evaluator.exec_properties["candidate_names"]) == ["float16", "int8"]
    assert set(evaluator.inputs) >= {"candidate_0", "candidate_1", "baseline_model", "examples"}
    assert "candidate_2" not in evaluator.inputs
    assert set(evaluator.outputs) == {"blessing", "model", "evaluation"}
    assert evaluator.outputs["blessing"].type_name == "ModelBlessing"
    assert evaluator.outputs["evaluation"].type_name == "tfxopt.EvaluationReport"

    with pytest.raises(ConfigError, match="at most 8"):
        Evaluator(base, [model_channel(f"m{i}") for i in range(9)], examples)
    with pytest.raises(ConfigError, match="reserved"):
        Evaluator(base, {"baseline": model_channel("x")}, examples)
    with pytest.raises(ConfigError, match="2 name"):
        Evaluator(base, [model_channel("x")], examples, candidate_names=["a", "b"])
    with pytest.raises(ConfigError, match="latency.measure is false"):
        Evaluator(
            base,
            [model_channel("x")],
            examples,
            config={"objective": "fastest", "latency": {"measure": False}},
        )
    with pytest.raises(ConfigError, match="max_relative_accuracy_drop"):
        Evaluator(
            base,
            [model_channel("x")],
            examples,
            config={"rules": {"max_relative_accuracy_drop": -1}},
        )


def test_a_broken_baseline_fails_before_heavy_work_and_leaves_outputs_empty(
    tiny_examples, tmp_path
):
    from components.common.errors import ModelInputError

    empty = tmp_path / "empty_model"
    empty.mkdir()
    with pytest.raises(ModelInputError, match="empty"):
        _run_evaluator(
            tmp_path,
            str(empty),
            {"c": str(empty)},
            tiny_examples,
            {"rules": {"max_size_bytes": 10**9}},
        )
    outputs = tmp_path / "outputs"
    assert all(os.listdir(outputs / name) == [] for name in ("blessing", "model", "evaluation"))


def test_a_model_the_benchmark_could_not_time_leaves_the_others_figures_usable(tmp_path):
    """A LatencyBenchmark report records a failed candidate as {"error": ...}: that candidate is
    unmeasured (and fails closed), the others are judged on the report's figures."""
    from components.evaluator import latency_sources
    from components.evaluator.config import EvaluatorConfig

    doc = {
        "models": {
            "baseline": {"p50_ms": 2.0},
            "good": {"p50_ms": 1.0},
            "broken": {"error": "does not load: no saved_model.pb", "uri": "/m/broken"},
        }
    }
    (tmp_path / "latency.json").write_text(json.dumps(doc))
    config = EvaluatorConfig.parse(
        {"rules": {"min_speedup": 1.0, "latency_statistic": "p50"},
         "latency": {"measure": False, "source": "external"}}
    )  # fmt: skip
    external = latency_sources.external_latency(config, str(tmp_path))
    assert external["errors"] == []
    good, base, _ = latency_sources.choose_latency("good", {}, external, {}, config)
    assert good["p50_ms"] == 1.0 and base["p50_ms"] == 2.0
    broken, _, notes = latency_sources.choose_latency("broken", {}, external, {}, config)
    assert broken is None and "no external latency for 'broken'" in notes[-1]


def test_external_latency_that_is_broken_or_for_other_bytes_fails_closed(tmp_path):
    from components.evaluator import latency_sources
    from components.evaluator.config import EvaluatorConfig
    from components.evaluator.models import PreparedModel

    measured = {"baseline": {"p95_ms": 1.0}, "c": {"p95_ms": 0.5}}
    prepared = {
        name: PreparedModel(name, "/m", "tflite", "/m/model.tflite", "artifact", ((64,),), digest)
        for name, digest in (("baseline", "aa" * 32), ("c", "bb" * 32))
    }
    config = EvaluatorConfig.parse(
        {"rules": {"min_speedup": 1.0}, "latency": {"external_path": str(tmp_path / "no.json")}}
    )
    external = latency_sources.external_latency(config, None)
    cand, base, notes = latency_sources.choose_latency("c", measured, external, prepared, config)
    assert cand is None and base is None  # configured but missing: no silent fallback
    assert "does not exist" in notes[0]

    doc = {
        "models": {
            "baseline": {"p95_ms": 2.0, "sha256": "aa" * 32},
            "c": {"p95_ms": 1.0, "sha256": "cc" * 32},  # measured some other flatbuffer
        }
    }
    (tmp_path / "lat.json").write_text(json.dumps(doc))
    config = EvaluatorConfig.parse(
        {"rules": {"min_speedup": 1.0}, "latency": {"external_path": str(tmp_path / "lat.json")}}
    )
    external = latency_sources.external_latency(config, None)
    cand, base, notes = latency_sources.choose_latency("c", measured, external, prepared, config)
    assert cand["source"].startswith("measured")  # auto: falls back to this step's figures
    assert "other bytes" in notes[0]
    strict = config.model_copy(
        update={"latency": config.latency.model_copy(update={"source": "external"})}
    )
    cand, base, _ = latency_sources.choose_latency("c", measured, external, prepared, strict)
    assert cand is None and base["p95_ms"] == 2.0
