"""A local pipeline run that can be made to stall at a named point, so a test can SIGKILL it there.

Used by tests/test_faults.py as a subprocess::

  python -m tests.fault_driver run --config CONFIG.json --model M --examples E --output O \
      [--stall POINT --marker FILE]
  python -m tests.fault_driver push --config PUSHER.json [...] --models M1 M2 --times N \
      --report R.json [--ready FILE --go FILE] [--slow-config-write SECONDS]

With ``--stall`` the run wraps one function of the component code in this process only (the local
runner executes every step in-process): when the run reaches POINT it writes ``FILE`` and sleeps,
leaving the step's ML Metadata execution RUNNING and whatever the step had written so far on disk.
The test then kills the process with SIGKILL from outside, exactly as an out-of-memory kill or a
lost node would, and reruns the pipeline. No production code carries a fault hook.

Points (see STALL_POINTS): the middle of the Pruner's fine-tuning (after two batches), the
Quantizer's conversion (inside ``TFLiteConverter.convert()``, once the MLIR converter produced the
flatbuffer), the Evaluator's Beam accuracy pass (after 32 examples were predicted), and three moments of a push: half-way through copying a SavedModel file
into a serving version, after a version directory is published but before its push record, and
after an OTA channel's history and signatures are written but before its manifest.

``push`` pushes models with the Pusher's core (``components.pusher.push.push_model``) in rounds, so
two such processes started together race for the same destinations.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

import components  # noqa: F401 - pins tf_keras before TensorFlow loads


def _stall(marker: str, point: str) -> None:
    with open(marker, "w") as f:
        f.write(point)
    while True:  # until SIGKILL
        time.sleep(60)


def _stall_in_fine_tuning(marker: str) -> None:
    import tf_keras

    from components.common import training

    real_fit = training.fit

    class _StallAfterSecondBatch(tf_keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch >= 1:  # weights already moved: a genuinely half-trained model in memory
                _stall(marker, "pruner.fine_tuning")

    def fit(model, train_ds, eval_ds, config, name, callbacks=()):
        return real_fit(
            model, train_ds, eval_ds, config, name, [*callbacks, _StallAfterSecondBatch()]
        )

    training.fit = fit


def _stall_mid_conversion(marker: str) -> None:
    """Stalls inside the Quantizer's ``TFLiteConverter.convert()``, after the MLIR converter ran.

    The converter has traced the Keras model and converted it to a flatbuffer; the stall comes
    where the converter hands that flatbuffer to its own post-processing
    (``_optimize_tflite_model``, every converter path's last step), so the Quantizer's execution
    is RUNNING with a conversion genuinely in progress. Conversions outside the Quantizer's
    ``convert`` (the Profiler's TFLite flavour) pass untouched.
    """
    from tensorflow.lite.python import lite

    from components.quantizer import conversion

    real_optimize = lite.TFLiteConverterBase._optimize_tflite_model
    real_quantizer_convert = conversion.convert
    inside = {"quantizer": False}

    def quantizer_convert(*args, **kwargs):
        inside["quantizer"] = True
        try:
            return real_quantizer_convert(*args, **kwargs)
        finally:
            inside["quantizer"] = False

    def optimize_tflite_model(self, model, *args, **kwargs):
        if inside["quantizer"] and model:  # the converter's work so far is real; then it dies
            _stall(marker, "quantizer.convert")
        return real_optimize(self, model, *args, **kwargs)

    conversion.convert = quantizer_convert
    lite.TFLiteConverterBase._optimize_tflite_model = optimize_tflite_model


STALL_AFTER_EXAMPLES = 32


def _stall_mid_accuracy_pass(marker: str) -> None:
    """Stalls inside the Evaluator's Beam accuracy pass once STALL_AFTER_EXAMPLES were predicted.

    Wraps ``outcomes.outcome_columns``, which ``PredictFn.process`` calls for each model and batch
    after the models ran on it: by then Beam has read and batched the eval split and the DoFn has
    loaded the models and predicted at least that many examples. The in-memory DirectRunner runs
    the DoFn in this process, so the SIGKILL lands mid-pass.
    """
    from components.evaluator import outcomes as outcomes_lib

    real_outcomes = outcomes_lib.outcome_columns
    seen = {"examples": 0}

    def outcomes(preds, labels, settings):
        result = real_outcomes(preds, labels, settings)
        seen["examples"] += len(labels)
        if seen["examples"] >= STALL_AFTER_EXAMPLES:
            _stall(marker, "evaluator.accuracy")
        return result

    outcomes_lib.outcome_columns = outcomes


def _stall_mid_serving_file(marker: str) -> None:
    from components.pusher import storage

    real_copy = storage.copy_file
    calls = {"n": 0}

    def copy_file(src, dst, atomic=True):
        if not atomic:  # the serving version's files (OTA files are copied atomically)
            calls["n"] += 1
            if calls["n"] == 2:
                with open(src, "rb") as f:
                    data = f.read()
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                with open(dst, "wb") as f:  # half the bytes, as a crash mid-write leaves them
                    f.write(data[: max(1, len(data) // 2)])
                    f.flush()
                _stall(marker, "pusher.serving.mid_file")
        return real_copy(src, dst, atomic=atomic)

    storage.copy_file = copy_file


def _stall_on_write(pattern: str, point: str):
    def install(marker: str) -> None:
        from components.pusher import storage

        real_write = storage.atomic_write

        def atomic_write(path, data):
            if re.search(pattern, path.replace(os.sep, "/")):
                _stall(marker, point)
            return real_write(path, data)

        storage.atomic_write = atomic_write

    return install


STALL_POINTS = {
    "pruner.fine_tuning": _stall_in_fine_tuning,
    "quantizer.convert": _stall_mid_conversion,
    "evaluator.accuracy": _stall_mid_accuracy_pass,
    "pusher.serving.mid_file": _stall_mid_serving_file,
    "pusher.serving.before_record": _stall_on_write(
        r"/versions/\d+\.json$", "pusher.serving.before_record"
    ),
    "pusher.ota.before_manifest": _stall_on_write(
        r"/metadata/timestamp\.json$",
        "pusher.ota.before_manifest",  # TUF's last write
    ),
}


def _run(args) -> int:
    if args.stall:
        STALL_POINTS[args.stall](args.marker)

    from absl import logging as absl_logging

    from pipelines.config import PipelineConfig
    from pipelines.local.runner import run_local

    absl_logging.set_verbosity(absl_logging.WARNING)
    with open(args.config) as f:
        config = PipelineConfig.parse(json.load(f))
    run = run_local(config, args.model, args.examples, args.output)
    print(json.dumps({"run_id": run.run_id, "states": {s.node_id: s.state for s in run.steps}}))
    return 0


def _push(args) -> int:
    """Pushes each model in turn with the Pusher's core, ``--times`` rounds; records every result.

    Waits for ``--go`` to exist first, so two of these start pushing at the same moment.
    """
    from components.pusher import push, storage
    from components.pusher.config import PusherConfig

    if args.slow_config_write:
        # Widens the read-modify-write window of the shared models.config, so that a missing
        # lock shows up as a lost update every time instead of once in a while.
        real_write = storage.atomic_write

        def atomic_write(path, data):
            if path.endswith("models.config"):
                time.sleep(args.slow_config_write)
            return real_write(path, data)

        storage.atomic_write = atomic_write
    configs = []
    for path in args.config:
        with open(path) as f:
            configs.append(PusherConfig.parse(json.load(f)))
    if args.ready:
        with open(args.ready, "w") as f:
            f.write(str(os.getpid()))
    deadline = time.monotonic() + 300
    while args.go and not os.path.exists(args.go) and time.monotonic() < deadline:
        time.sleep(0.01)
    results = []
    for _ in range(args.times):
        for uri in args.models:
            for config in configs:
                record = push.push_model(uri, config, metrics={"pushed_by": os.getpid()})
                results.append({"model_uri": uri, **record})
    with open(args.report, "w") as f:
        json.dump(results, f)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the local pipeline, optionally stalling at a point")
    run.add_argument("--config", required=True, help="PipelineConfig as a JSON file")
    run.add_argument("--model", required=True)
    run.add_argument("--examples", required=True)
    run.add_argument("--output", required=True)
    run.add_argument("--stall", choices=sorted(STALL_POINTS))
    run.add_argument("--marker", help="file written when the run reaches --stall")
    run.set_defaults(func=_run)
    push = sub.add_parser("push", help="push models with the Pusher's core, in rounds")
    push.add_argument(
        "--config", required=True, nargs="+", help="PusherConfig JSON files (each model to each)"
    )
    push.add_argument("--models", nargs="+", required=True, help="model artifact URIs")
    push.add_argument("--times", type=int, default=1)
    push.add_argument("--report", required=True, help="JSON list of every push's record")
    push.add_argument("--ready", help="file written once loaded, before waiting for --go")
    push.add_argument("--go", help="wait for this file before pushing")
    push.add_argument("--slow-config-write", type=float, default=0.0)
    push.set_defaults(func=_push)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
