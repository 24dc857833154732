"""Evaluator throughput: its Beam accuracy pass vs TFMA vs the bare TFLite interpreter.

One model, the reference CNN: our accuracy pass judges it as the Evaluator does by default (its
SavedModel converted to a float32 flatbuffer, ``baseline_flavour: tflite``); TFMA, the standard
TFX Evaluator's engine, runs the SavedModel (:mod:`benchmarks.tfma_reference`); the bare
interpreter runs the same flatbuffer with the threads and batch our pass uses by default (all the
process's CPUs; batch 32 on one, 256 on several) on examples parsed beforehand (no Beam, no
parsing, no bookkeeping): the most the hardware gives this model. Eval splits of 1k, 10k, 100k
and 1M examples are drawn as in :mod:`benchmarks.scaling` (1M: ours in memory, TFMA and the
interpreter only).

Every (engine, size) runs in a fresh process: a 64-example warm-up run (Beam's and TensorFlow's
one-time start-up), then the timed run; peak RSS is the process's ``VmHWM``. ``ours_parallel``
is our pass with ``--direct_running_mode=multi_processing --direct_num_workers=2`` (its worker
processes' memory is not in the parent's RSS).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from benchmarks import markdown

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = (1_000, 10_000, 100_000, 1_000_000)
ENGINES = ("bare_interpreter", "ours", "ours_parallel", "tfma")
# Above 100k examples only ours (in memory), TFMA and the interpreter run: the two-worker pass is
# measured at 100k (and below), where the local default is chosen.
LARGE_SPLIT = 100_000
LARGE_SPLIT_ENGINES = ("bare_interpreter", "ours", "tfma")
PARALLEL_CHECK_EXAMPLES = 100_000
IN_MEMORY = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
RATIO_KEYS = ("ours_vs_bare", "ours_vs_tfma", "ours_parallel_vs_bare", "ours_parallel_vs_tfma")


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    raise KeyError(field)


def _ours(parallel: bool):
    from components.common.examples import DataConfig
    from components.evaluator import accuracy
    from components.evaluator.models import ModelRef, prepare

    args = list(accuracy.PARALLEL_BEAM_ARGS) if parallel else IN_MEMORY
    prepared = {}

    def once(model_uri, examples_uri, out):
        if "model" not in prepared:
            work = os.path.join(os.path.dirname(out), "converted")
            prepared["model"] = prepare(ModelRef("baseline", model_uri), "tflite", work)
        model = prepared["model"]
        inputs = accuracy.resolve_inputs(
            examples_uri, "eval", DataConfig(), model.input_shapes, "classification"
        )
        result = accuracy.run_accuracy(
            [model],
            examples_uri,
            "eval",
            inputs,
            accuracy.AccuracySettings(),
            out,
            beam_pipeline_args=args,
        )
        return result["examples"], result["models"]["baseline"]["top1_accuracy"]

    return once


def _tfma(model_uri, examples_uri, out):
    from benchmarks.tfma_reference import tfma_accuracy

    result = tfma_accuracy(model_uri, examples_uri, "eval", out, beam_pipeline_args=IN_MEMORY)
    return result["examples"], result["accuracy"]


def bare_settings() -> tuple[int, int]:
    """(threads, batch) our accuracy pass gives the interpreter by default on this machine."""
    from components.evaluator.models import TFLITE_BATCH, TFLITE_BATCH_THREADED, available_cpus

    threads = available_cpus()
    return threads, TFLITE_BATCH if threads == 1 else TFLITE_BATCH_THREADED


def _bare(model_uri, examples_uri, out):
    """Invokes over pre-parsed inputs (our pass's threads and batch); only the loop is timed."""
    import numpy as np

    from benchmarks.hand_recipe import load_split
    from components.common import model_io, tflite

    x, y = load_split(examples_uri, "eval")
    threads, size = bare_settings()
    flatbuffer = tflite.convert_float32(model_io.serving_model_dir(model_uri))
    runner = tflite.TFLiteModel(flatbuffer, num_threads=threads)
    correct = 0
    started = time.perf_counter()
    for start in range(0, len(y), size):
        runner.set_inputs(x[start : start + size])
        runner.invoke()
        correct += int(np.sum(np.argmax(runner.outputs(), axis=1) == y[start : start + size]))
    _bare.invoke_seconds = time.perf_counter() - started
    return len(y), correct / len(y)


def measure(engine: str, model_uri: str, split: str, warmup: str, work: str) -> dict:
    """One engine on one split, in this (fresh) process: warm-up run, then the timed run."""
    import components  # noqa: F401

    run = {
        "ours": _ours(False),
        "ours_parallel": _ours(True),
        "tfma": _tfma,
        "bare_interpreter": _bare,
    }[engine]
    run(model_uri, warmup, os.path.join(work, "warmup"))
    rss_before = _status_mb("VmRSS")
    started = time.perf_counter()
    examples, accuracy = run(model_uri, split, os.path.join(work, "timed"))
    seconds = time.perf_counter() - started
    if engine == "bare_interpreter":
        seconds = _bare.invoke_seconds  # the hardware's figure: parsing and loading excluded
    return {
        "engine": engine,
        "examples": examples,
        "seconds": round(seconds, 3),
        "examples_per_s": round(examples / seconds, 1),
        "accuracy": accuracy,
        "rss_before_mb": rss_before,
        "peak_rss_mb": _status_mb("VmHWM"),
    }


def run(reference_dir: str, work_dir: str, sizes=SIZES, engines=ENGINES) -> dict:
    """Every (engine, size) in its own process; returns rows and the ratios the issue asks for."""
    from benchmarks.scaling import WARMUP_EXAMPLES, write_split

    examples = os.path.join(reference_dir, "examples")
    model = os.path.join(reference_dir, "model")
    warmup = write_split(examples, WARMUP_EXAMPLES, os.path.join(work_dir, "split-warmup"), 1)
    threads, batch = bare_settings()
    rows = []
    for n in sizes:
        split = write_split(examples, n, os.path.join(work_dir, f"split-{n}"))
        for engine in engines if n <= LARGE_SPLIT else LARGE_SPLIT_ENGINES:
            rows.append(
                _child(engine, model, split, warmup, os.path.join(work_dir, f"{engine}-{n}"))
            )
    return {
        "what": __doc__.split("\n\n")[0],
        "bare_threads": threads,
        "bare_batch": batch,
        "rows": rows,
        "ratios": ratios(rows),
        "local_default": local_default(model, examples, warmup, work_dir),
    }


def local_default(model: str, examples: str, warmup: str, work_dir: str) -> dict:
    """Our pass in memory vs on two worker processes, on a split of two files (one per worker)."""
    from benchmarks.scaling import write_split

    n = PARALLEL_CHECK_EXAMPLES
    split = write_split(examples, n, os.path.join(work_dir, f"split-{n}-2files"), files=2)
    rows = [
        _child(engine, model, split, warmup, os.path.join(work_dir, f"{engine}-{n}-2files"))
        for engine in ("ours", "ours_parallel")
    ]
    fastest = max(rows, key=lambda r: r["examples_per_s"])["engine"]
    return {"examples": n, "files": 2, "rows": rows, "fastest": fastest}


def _child(engine: str, model: str, split: str, warmup: str, work: str) -> dict:
    """Runs :func:`measure` in a fresh process; its row, with the load average around it."""
    os.makedirs(work, exist_ok=True)
    command = [sys.executable, "-m", "benchmarks.evaluator_throughput", "--child"]
    command += [engine, model, split, warmup, work]
    load = os.getloadavg()[0]
    with open(os.path.join(work, "log.txt"), "w") as log:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=log, text=True, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"{engine} on {split} failed; see {log.name}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row["load_average_1m"] = [round(load, 2), round(os.getloadavg()[0], 2)]
    return row


def ratios(rows: list[dict]) -> dict:
    """Per size: ours / bare interpreter and ours / TFMA in examples per second."""
    by = {(r["engine"], r["examples"]): r["examples_per_s"] for r in rows}
    out = {}
    for n in sorted({r["examples"] for r in rows}):
        entry = {}
        for engine in ("ours", "ours_parallel"):
            if (engine, n) not in by:
                continue
            if ("bare_interpreter", n) in by:
                entry[f"{engine}_vs_bare"] = round(by[engine, n] / by["bare_interpreter", n], 3)
            if ("tfma", n) in by:
                entry[f"{engine}_vs_tfma"] = round(by[engine, n] / by["tfma", n], 2)
        out[str(n)] = entry
    return out


def render_section(section: dict, number: int) -> list[str]:
    """The RESULTS.md lines of this section."""
    title = f"## {number}. Evaluator throughput: ours vs TFMA vs the bare interpreter"
    if "error" in section:
        return markdown.failed(title, section["error"])
    names = {
        "bare_interpreter": (
            f"bare TFLite interpreter, batch {section['bare_batch']}, "
            f"{section.get('bare_threads', 1)} thread(s)"
        ),
        "ours": "ours (Beam, in memory, 1 worker)",
        "ours_parallel": "ours (Beam, multi_processing, 2 workers)",
        "tfma": "TFMA 0.47.1 (Beam, in memory, 1 worker)",
    }
    rows = [
        [
            f"{r['examples']:,}",
            names.get(r["engine"], r["engine"]),
            r["seconds"],
            f"{r['examples_per_s']:,.0f}",
            r["peak_rss_mb"],
            f"{r['accuracy']:.4f}",
        ]
        for r in section["rows"]
    ]
    ratio_rows = [
        [f"{int(n):,}", *(entry.get(k, "-") for k in RATIO_KEYS)]
        for n, entry in section["ratios"].items()
    ]
    return [
        title,
        "",
        f"{markdown.plain(section['what'])} The reference CNN; eval splits as in section 2; each engine and size "
        "in a fresh process after a 64-example warm-up run; the bare interpreter's time is its "
        "invokes alone (inputs parsed beforehand). Peak RSS is the process's high-water mark.",
        "",
        *markdown.table(
            ["examples", "engine", "seconds", "examples/s", "peak RSS (MB)", "accuracy"], rows
        ),
        "",
        *markdown.table(["examples", *RATIO_KEYS], ratio_rows),
        "",
        *_local_default_lines(section.get("local_default")),
    ]


def _local_default_lines(check: dict | None) -> list[str]:
    if not check:
        return []
    speeds = {r["engine"]: r["examples_per_s"] for r in check["rows"]}
    return [
        f"Local default: on {check['examples']:,} examples in {check['files']} files (one per "
        f"worker), our pass in memory with one worker ran at {speeds['ours']:,.0f} examples/s, "
        f"on two worker processes (`--direct_running_mode=multi_processing "
        f"--direct_num_workers=2`) at {speeds['ours_parallel']:,.0f} examples/s; fastest: "
        f"`{check['fastest']}`. Local runs default to the DirectRunner in memory, one worker "
        "(`beam_pipeline_args`).",
        "",
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", nargs=5, metavar=("ENGINE", "MODEL", "SPLIT", "WARMUP", "WORK"))
    parser.add_argument("--reference", help="dir with examples/ and model/")
    parser.add_argument("--work-dir")
    parser.add_argument("--sizes", default=",".join(str(n) for n in SIZES))
    parser.add_argument("--engines", default=",".join(ENGINES))
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(*args.child)))
        return 0
    import tempfile

    work = args.work_dir or tempfile.mkdtemp(prefix="tfxopt-throughput-")
    sizes = [int(n) for n in args.sizes.split(",")]
    print(json.dumps(run(args.reference, work, sizes, args.engines.split(",")), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
