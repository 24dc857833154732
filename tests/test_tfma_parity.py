"""Our Evaluator's accuracy equals TensorFlow Model Analysis's on the same model and eval split.

TFMA is what the standard TFX Evaluator runs, so the gate's numbers are the ones a TFX user would
get from it (issue 22).
"""

import pytest


def test_accuracy_equals_tfma_on_the_reference_model(tmp_path, reference_data):
    from benchmarks.tfma_reference import tfma_accuracy
    from components.common.examples import DataConfig
    from components.evaluator import accuracy
    from components.evaluator.models import ModelRef, prepare

    model, examples = reference_data["model"], reference_data["examples"]
    prepared = [
        prepare(ModelRef("baseline", model), "tflite", str(tmp_path / "work")),
        prepare(ModelRef("saved_model", model), "saved_model"),
    ]
    inputs = accuracy.resolve_inputs(
        examples, "eval", DataConfig(), prepared[0].input_shapes, "classification"
    )
    ours = accuracy.run_accuracy(
        prepared, examples, "eval", inputs, accuracy.AccuracySettings(), str(tmp_path / "ours")
    )
    theirs = tfma_accuracy(model, examples, "eval", str(tmp_path / "tfma"))

    n = theirs["examples"]
    assert ours["examples"] == n == reference_data["eval_examples"]
    # The same SavedModel: the same accuracy (TFMA keeps it as a float32 mean).
    assert ours["models"]["saved_model"]["top1_accuracy"] == pytest.approx(
        theirs["accuracy"], abs=1e-6
    )
    # The float32 flatbuffer the gate judges by default: at most one borderline example apart.
    assert abs(ours["models"]["baseline"]["top1_accuracy"] - theirs["accuracy"]) <= 1 / n + 1e-6
