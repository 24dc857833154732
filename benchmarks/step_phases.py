"""Where a pipeline step's time goes: load / convert / work / save / measure, per step.

For benchmarks only. :func:`instrument` wraps the functions every step calls to load a model
or data, convert, save and measure (the components are not changed; the wrappers look the
functions up by module attribute, as the components call them) and each executor's ``Do``. Time
inside ``Do`` not spent in a wrapped call is ``work`` (fine-tuning, clustering, checks); a
wrapped call inside another counts for the inner one only. The step (the output artifact's
directory, which names the node) is read from ``Do``'s outputs.
"""

from __future__ import annotations

import functools
import importlib
import os
import time
from collections import defaultdict

PHASES = ("load", "convert", "work", "save", "measure")

# (module, attribute, phase); attributes "Class.method" wrap a method.
WRAPPED = (
    ("components.common.model_io", "load_keras_model", "load"),
    ("components.common.examples", "load_arrays", "load"),
    ("components.common.optimization", "datasets", "load"),
    ("components.profiler.profiler", "_serving_fn", "load"),
    ("components.common.tflite", "convert_float32", "convert"),
    ("components.quantizer.conversion", "convert", "convert"),
    ("components.common.model_io", "save_keras_model", "save"),
    ("components.common.model_io", "copy_serving_model", "save"),
    ("components.common.model_io", "write_tflite", "save"),
    ("components.common.properties", "write_json", "save"),
    ("components.common.training", "accuracy", "measure"),
    ("components.quantizer.conversion", "verify", "measure"),
    ("components.quantizer.quantizer", "_predict", "measure"),
    ("components.common.tflite", "TFLiteModel.predict_each", "measure"),
    ("components.common.measure", "time_calls", "measure"),
    ("components.common.measure", "time_interleaved", "measure"),
    ("components.common.measure", "gzipped_dir_bytes", "measure"),
    ("components.common.weights", "keras_weight_stats", "measure"),
    ("components.profiler.profiler", "_memory", "measure"),
)

EXECUTORS = (
    "components.importer.executor",
    "components.profiler.executor",
    "components.pruner.executor",
    "components.clusterer.executor",
    "components.quantizer.executor",
    "components.evaluator.executor",
    "components.pusher.executor",
)


class Recorder:
    """Seconds per (step, phase); a stack so nested wrapped calls count once."""

    def __init__(self):
        self.seconds: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.step: str | None = None
        self._stack: list[list] = []  # [phase, started_at]

    def enter(self, phase: str) -> None:
        now = time.perf_counter()
        if self._stack:
            top = self._stack[-1]
            self.seconds[self.step][top[0]] += now - top[1]
        self._stack.append([phase, now])

    def leave(self) -> None:
        now = time.perf_counter()
        phase, started = self._stack.pop()
        self.seconds[self.step][phase] += now - started
        if self._stack:
            self._stack[-1][1] = now

    def as_dict(self) -> dict:
        return {
            step: {p: round(phases.get(p, 0.0), 3) for p in PHASES}
            for step, phases in self.seconds.items()
        }


def _wrap(recorder: Recorder, fn, phase: str):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if recorder.step is None:
            return fn(*args, **kwargs)
        recorder.enter(phase)
        try:
            return fn(*args, **kwargs)
        finally:
            recorder.leave()

    return wrapper


def _step_name(output_dict: dict) -> str:
    """``<root>/<node_id>/<output key>/<execution id>`` -> node_id."""
    for artifacts in output_dict.values():
        for artifact in artifacts:
            return os.path.basename(os.path.dirname(os.path.dirname(artifact.uri.rstrip("/"))))
    return "?"


def _wrap_do(recorder: Recorder, do):
    @functools.wraps(do)
    def wrapper(self, input_dict, output_dict, exec_properties):
        recorder.step = _step_name(output_dict)
        recorder.enter("work")
        try:
            return do(self, input_dict, output_dict, exec_properties)
        finally:
            recorder.leave()
            recorder.step = None

    return wrapper


def instrument() -> Recorder:
    """Wraps the functions above in this process; returns the recorder that sums their times."""
    recorder = Recorder()
    for module_name, attribute, phase in WRAPPED:
        owner = importlib.import_module(module_name)
        *path, name = attribute.split(".")
        for part in path:
            owner = getattr(owner, part)
        setattr(owner, name, _wrap(recorder, getattr(owner, name), phase))
    for module_name in EXECUTORS:
        executor = importlib.import_module(module_name).Executor
        executor.Do = _wrap_do(recorder, executor.Do)
    return recorder
