"""Latency measurement stability: the same model timed five times; how far p50 and p95 move.

The model is the reference CNN's float32 TFLite flavour, timed as the Profiler times it
(``components.common.measure.time_calls`` on a ``TFLiteModel``: batch 1, one thread, warm-up,
then timed runs). Five measurements in one process show the noise a single step sees; five in
fresh processes show what separate pipeline runs see (new interpreter, new allocation, whatever
the neighbours are doing at the time).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from benchmarks import markdown

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Children run `python -m benchmarks....`: from the repository root, whatever the caller's cwd.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

REPEATS = 5
WARMUP_RUNS = 100
TIMED_RUNS = 1000


def measure_once(flatbuffer_path: str, sample_path: str, warmup: int, runs: int) -> dict:
    """p50/p95/p99 (ms) of one measurement."""
    import numpy as np

    import components  # noqa: F401
    from components.common import measure, tflite

    with open(flatbuffer_path, "rb") as f:
        runner = tflite.TFLiteModel(f.read(), num_threads=1)
    runner.set_inputs(np.load(sample_path))
    stats = measure.summarize_ms(measure.time_calls(runner.invoke, warmup, runs))
    return {k: round(stats[k], 5) for k in ("p50_ms", "p95_ms", "p99_ms", "mean_ms")}


def spread(values: list[float]) -> dict:
    """min, max, median, (max - min) / median and the coefficient of variation, in percent."""
    median = statistics.median(values)
    return {
        "values": values,
        "min": min(values),
        "max": max(values),
        "median": median,
        "range_pct_of_median": round(100 * (max(values) - min(values)) / median, 1),
        "cv_pct": round(100 * statistics.stdev(values) / statistics.mean(values), 1),
    }


def run(reference_dir: str, work_dir: str, repeats: int = REPEATS, runs: int = TIMED_RUNS) -> dict:
    """``repeats`` measurements in this process, then ``repeats`` in fresh processes."""
    import numpy as np

    import components  # noqa: F401
    from benchmarks.hand_recipe import load_split
    from components.common import model_io, tflite

    os.makedirs(work_dir, exist_ok=True)
    flatbuffer = tflite.convert_float32(
        model_io.serving_model_dir(os.path.join(reference_dir, "model"))
    )
    model_path = os.path.join(work_dir, "baseline_float32.tflite")
    with open(model_path, "wb") as f:
        f.write(flatbuffer)
    x, _ = load_split(os.path.join(reference_dir, "examples"), "eval")
    sample_path = os.path.join(work_dir, "sample.npy")
    np.save(sample_path, x[:1])

    in_process = [measure_once(model_path, sample_path, WARMUP_RUNS, runs) for _ in range(repeats)]
    fresh = []
    for _ in range(repeats):
        command = [sys.executable, "-m", "benchmarks.stability", "--child", model_path, sample_path]
        command += ["--runs", str(runs)]
        done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPO)
        fresh.append(json.loads(done.stdout.strip().splitlines()[-1]))
    out = {
        "what": "reference CNN, float32 TFLite, batch 1, 1 thread",
        "warmup_runs": WARMUP_RUNS,
        "timed_runs": runs,
    }
    for name, measurements in (("in_one_process", in_process), ("fresh_processes", fresh)):
        out[name] = {
            stat: spread([m[f"{stat}_ms"] for m in measurements]) for stat in ("p50", "p95")
        }
    return out


def render_section(section: dict, number: int) -> list[str]:
    """The RESULTS.md lines of this section: p50 and p95 of five measurements, two ways."""
    title = f"## {number}. Latency measurement stability"
    if "error" in section:
        return markdown.failed(title, section["error"])
    rows = []
    for where in ("in_one_process", "fresh_processes"):
        for stat in ("p50", "p95"):
            v = section[where][stat]
            rows.append(
                [
                    where.replace("_", " "),
                    stat,
                    ", ".join(f"{x:.4f}" for x in v["values"]),
                    f"{v['median']:.4f}",
                    f"{v['range_pct_of_median']}%",
                    f"{v['cv_pct']}%",
                ]
            )
    return [
        title,
        "",
        f"{section['what']}: {section['timed_runs']} timed runs after {section['warmup_runs']} "
        "warm-up, 5 measurements in one process, then 5 in fresh processes.",
        "",
        *markdown.table(
            ["where", "statistic", "5 measurements (ms)", "median", "range/median", "CV"], rows
        ),
        "",
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", nargs=2, metavar=("TFLITE", "SAMPLE_NPY"))
    parser.add_argument("--runs", type=int, default=TIMED_RUNS)
    parser.add_argument("--reference")
    parser.add_argument("--work-dir")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure_once(*args.child, WARMUP_RUNS, args.runs)))
        return 0
    import tempfile

    work = args.work_dir or tempfile.mkdtemp(prefix="tfxopt-stability-")
    print(json.dumps(run(args.reference, work), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
