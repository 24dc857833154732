"""Peak resident memory of loading and running one model, in a fresh process.

Run as ``python -m components.profiler.memory_probe --kind tflite|saved_model --path P``; prints
one JSON line. A fresh process per model keeps one model's memory out of another's figure.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys

import components  # noqa: F401 - pins tf_keras before TensorFlow loads


def _status_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        return None
    return None


def _reset_high_water_mark() -> bool:
    """Resets VmHWM (Linux >= 4.0) so the peak counts the model, not the runtime's import spikes."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int:
    hwm = _status_bytes("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def probe(kind: str, path: str, runs: int, num_threads: int) -> dict:
    import gc

    import numpy as np

    from components.common import tflite

    if kind == "tflite":
        import ai_edge_litert.interpreter  # noqa: F401 - the runtime, before the baseline RSS
    else:
        import tensorflow as tf

    gc.collect()
    reset = _reset_high_water_mark()
    before = _status_bytes("VmRSS") or _peak_rss_bytes()  # runtime imported, no model yet
    if kind == "tflite":
        # The LiteRT interpreter (what devices run), mapping the file as a device app does.
        interpreter = tflite.interpreter(model_path=path, num_threads=num_threads)
        try:
            interpreter.allocate_tensors()
        except RuntimeError as e:  # XNNPACK took nodes it cannot prepare: run without it
            if not tflite.is_delegate_failure(e):
                raise
            interpreter = tflite.interpreter(
                model_path=path, num_threads=num_threads, default_delegates=False
            )
            interpreter.allocate_tensors()
        for _ in range(runs):
            for detail in interpreter.get_input_details():
                interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
            interpreter.invoke()
    else:
        loaded = tf.saved_model.load(path)
        fn = loaded.signatures["serving_default"]
        _, kwargs = fn.structured_input_signature
        feeds = {
            name: tf.zeros([1 if d is None else d for d in spec.shape], spec.dtype)
            for name, spec in kwargs.items()
        }
        for _ in range(runs):
            fn(**feeds)
    after = _peak_rss_bytes()
    return {
        "runtime_rss_bytes": before,
        "peak_rss_bytes": after,
        "model_peak_rss_bytes": max(0, after - before),
        "method": "VmHWM after clear_refs" if reset else "ru_maxrss (includes runtime import)",
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kind", choices=["tflite", "saved_model"], required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--num-threads", type=int, default=1)
    args = parser.parse_args(argv)
    print(json.dumps(probe(args.kind, args.path, args.runs, args.num_threads)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
