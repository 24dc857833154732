"""The benchmark suite (``make bench``): prints its JSON, writes results.json and RESULTS.md.

Sections:

1. ``overhead``: the pipeline's prune 0.8 -> cluster 16 -> full int8 path vs the same steps by
   hand with tfmot and the TFLite converter (:mod:`benchmarks.overhead`); target <= 1.2x.
2. ``scaling``: the Evaluator's Beam accuracy core at 1k, 10k and 100k examples
   (:mod:`benchmarks.scaling`).
3. ``stability``: one model's latency measured 5 times (:mod:`benchmarks.stability`).
4. ``structured_pruning``: :mod:`benchmarks.structured_pruning` (its own JSON, unchanged).
5. ``recipes``: the hand recipe and ``tfxopt run`` with ``recipes.yaml``, a table per recipe
   (:mod:`benchmarks.recipes`).
6. ``throughput``: the Evaluator's accuracy pass vs TFMA vs the bare TFLite interpreter at 1k,
   10k and 100k examples (:mod:`benchmarks.evaluator_throughput`).
7. ``mobilenet``: MobileNetV2 (0.35 at 32x32, 1.0 at 224x224) through the pipeline, per-step
   load / convert / work / save / measure, vs by hand (:mod:`benchmarks.mobilenet`).

Usage::

    .venv/bin/python -m benchmarks.run --reference reference-data [--only overhead,scaling]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = os.path.dirname(os.path.abspath(__file__))
SECTIONS = (
    "overhead",
    "scaling",
    "stability",
    "structured_pruning",
    "recipes",
    "throughput",
    "mobilenet",
)
RESULTS_JSON = os.path.join(HERE, "results.json")
RESULTS_MD = os.path.join(HERE, "RESULTS.md")
NOTES_HEADING = "## Notes"


def machine() -> dict:
    """What the numbers were measured on."""
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    flags: set[str] = set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    memory_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                memory_kb = int(line.split()[1])
    import numpy
    import tensorflow as tf

    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu,
        # int8 kernels win on AVX-512 VNNI and lose to float32 on AVX2-only processors.
        "avx512_vnni": "avx512_vnni" in flags,
        "avx2": "avx2" in flags,
        "memory_gb": round(memory_kb / 1024**2, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "numpy": numpy.__version__,
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
    }


def structured_pruning(reference_dir: str, work_dir: str) -> dict:
    """Runs benchmarks/structured_pruning.py as it is and keeps its JSON."""
    log_path = os.path.join(work_dir, "structured_pruning.log")
    started = time.perf_counter()
    with open(log_path, "w") as log:
        done = subprocess.run(
            [sys.executable, os.path.join(HERE, "structured_pruning.py")]
            + ["--reference-dir", reference_dir],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    if done.returncode != 0:
        return {"error": f"exit status {done.returncode}; see {log_path}"}
    text = done.stdout
    result = json.loads(text[text.index("{") :])
    result["wall_s"] = round(time.perf_counter() - started, 1)
    return result


def _mobilenet():
    from benchmarks import mobilenet

    return mobilenet


def run_suite(reference_dir: str, work_dir: str, only=SECTIONS, repeats: int = 1) -> dict:
    """Runs the chosen sections; each records its wall time and the load around it."""
    from benchmarks import evaluator_throughput, overhead, recipes, scaling, stability

    reference_dir = os.path.abspath(reference_dir)
    results = {
        "generated_at": datetime.datetime.now().isoformat(timespec="seconds"),
        "reference": reference_dir,
        "machine": machine(),
    }
    runners = {
        "overhead": lambda d: overhead.run(reference_dir, d, repeats=repeats),
        "scaling": lambda d: scaling.run(reference_dir, d),
        "stability": lambda d: stability.run(reference_dir, d),
        "structured_pruning": lambda d: structured_pruning(reference_dir, d),
        "recipes": lambda d: recipes.run(reference_dir, d),
        "throughput": lambda d: evaluator_throughput.run(reference_dir, d),
        "mobilenet": lambda d: _mobilenet().run(d),
    }
    for name in only:
        directory = os.path.join(work_dir, name)
        os.makedirs(directory, exist_ok=True)
        load = os.getloadavg()[0]
        started = time.perf_counter()
        print(f"benchmarks: {name} ...", file=sys.stderr, flush=True)
        try:
            section = runners[name](directory)
        except Exception as e:  # noqa: BLE001 - one failed section must not hide the others
            section = {"error": f"{type(e).__name__}: {e}"}
        section["section_wall_s"] = round(time.perf_counter() - started, 1)
        section["generated_at"] = datetime.datetime.now().isoformat(timespec="seconds")
        section["load_average_1m"] = [round(load, 2), round(os.getloadavg()[0], 2)]
        section["cpu_model"] = results["machine"]["cpu_model"]
        print(
            f"benchmarks: {name} done in {section['section_wall_s']} s", file=sys.stderr, flush=True
        )
        results[name] = section
    results["machine"]["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    return results


# --------------------------------------------------------------------------- RESULTS.md


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(headers, rows) -> list[str]:
    return [_row(headers), _row(["---"] * len(headers)), *[_row(r) for r in rows]]


def render_markdown(results: dict) -> str:
    """RESULTS.md: the machine, then one section per benchmark, numbers from ``results``."""
    from benchmarks import evaluator_throughput

    m = results["machine"]
    lines = [
        "# Benchmark results",
        "",
        f"Generated by `make bench` (`python -m benchmarks.run`) on {results['generated_at']}; "
        "the raw numbers are in `benchmarks/results.json`. A run of some sections "
        "(`--only`) keeps the others' last results: each section's own date, processor and "
        "load are in the last table (the machine below is the latest run's).",
        "",
        "## Machine",
        "",
        *_table(
            [
                "CPUs (nproc)",
                "CPU",
                "AVX-512 VNNI",
                "memory",
                "kernel",
                "Python",
                "TensorFlow",
                "load average",
            ],
            [
                [
                    m["nproc"],
                    m["cpu_model"],
                    {True: "yes", False: "no (AVX2 only)" if m.get("avx2") else "no"}.get(
                        m.get("avx512_vnni"), "?"
                    ),
                    f"{m['memory_gb']} GB",
                    m["kernel"],
                    m["python"],
                    m["tensorflow"],
                    f"{m['load_average_at_start'][0]} at start, "
                    f"{m.get('load_average_at_end', ['?'])[0]} at end (1 min)",
                ]
            ],
        ),
        "",
    ]
    if m["load_average_at_start"][0] > m["nproc"]:
        lines += [
            f"The machine was shared: a load average above its {m['nproc']} CPUs means other "
            "processes competed for them during the run, which stretches wall times (both sides "
            "of a comparison alike when they run back to back, but not exactly alike).",
            "",
        ]
    o = results.get("overhead")
    if o and "error" not in o:
        w = o["wall_s"]
        opt = o["prune_cluster_quantize_s"]
        verdict = "met" if o["overhead_ratio"] <= o["overhead_ratio_target"] else "NOT met"
        models = o["models"]
        lines += [
            "## 1. Pipeline overhead vs the hand-written recipe",
            "",
            "Prune 80% (4 epochs) -> cluster 16, sparsity kept (2 epochs) -> full int8 "
            "(100 calibration examples), same data, epochs, schedule and learning rates on every "
            "side; each side in a fresh process, timed from start to exit "
            f"({o['repeats']} round(s), median). `hand` is the tutorials' recipe as written; "
            "`hand, same AutoGraph` adds the one AutoGraph setting the pipeline's fine-tuning "
            "uses (tf_keras internals are not re-converted), so the pipeline is compared with "
            "the same work done by hand.",
            "",
            *_table(
                ["", "process wall (s)", "prune + cluster + quantize (s)"],
                [
                    ["hand (tutorial recipe)", w["hand"], opt["hand"]],
                    [
                        "hand, same AutoGraph",
                        w["hand_same_autograph"],
                        opt["hand_same_autograph"],
                    ],
                    ["pipeline (LocalDagRunner), every step", w["pipeline"], opt["pipeline"]],
                    [
                        "pipeline measure steps (" + ", ".join(o["measure_steps"]) + ")",
                        w["pipeline_measure_steps"],
                        "",
                    ],
                    ["pipeline without them", w["pipeline_without_measure_steps"], ""],
                ],
            ),
            "",
            f"**Overhead ratio (same steps): {o['overhead_ratio']}x** the hand recipe with the "
            f"same AutoGraph setting (target <= {o['overhead_ratio_target']}x: {verdict}); "
            f"{o['overhead_ratio_vs_tutorial_recipe']}x the tutorial recipe as written. With the "
            f"baseline Profiler and the Evaluator counted: "
            f"{o['overhead_ratio_with_measure_steps']}x. The Pruner, Clusterer and Quantizer "
            f"steps alone: {o['optimise_steps_ratio']}x their hand-written counterparts.",
            "",
            *_table(
                [
                    "side",
                    "TFLite bytes",
                    "gzip bytes",
                    "eval accuracy",
                    "p50 ms",
                    "p95 ms",
                    "p99 ms",
                ],
                [
                    [
                        name,
                        f"{r['tflite_bytes']:,}",
                        f"{r['tflite_gzip_bytes']:,}",
                        f"{100 * r['accuracy']:.2f}%",
                        r["latency_ms"]["p50_ms"],
                        r["latency_ms"]["p95_ms"],
                        r["latency_ms"]["p99_ms"],
                    ]
                    for name, r in models.items()
                ],
            ),
            "",
            "Both int8 flatbuffers (the pipeline's, the tutorial recipe's) measured in one "
            "process, interleaved (A B A B ...), batch 1, one thread, "
            f"{models['hand']['latency_ms']['runs']} timed runs after warm-up; accuracy on the "
            "360-example eval split.",
            "",
        ]
    elif o:
        lines += ["## 1. Pipeline overhead", "", f"Failed: {o['error']}", ""]
    s = results.get("scaling")
    if s and "error" not in s:
        lines += [
            "## 2. Evaluator scaling",
            "",
            f"{s['what']}; eval splits drawn from the reference eval split with jitter "
            f"(sigma {s['jitter_sigma']}). Each size in a fresh process, after a 64-example "
            "warm-up run.",
            "",
            *_table(
                [
                    "examples",
                    "seconds",
                    "examples/s",
                    "us/example",
                    "RSS before (MB)",
                    "peak RSS (MB)",
                    "peak growth (MB)",
                    "warm-up run (s)",
                ],
                [
                    [
                        f"{r['examples']:,}",
                        r["seconds"],
                        r["examples_per_s"],
                        r["us_per_example"],
                        r["rss_before_mb"],
                        r["peak_rss_mb"],
                        r["peak_growth_mb"],
                        r.get("warmup_run_seconds", "-"),
                    ]
                    for r in s["rows"]
                ],
            ),
            "",
            f"A least-squares fit of seconds = fixed + n x per-example over the sizes gives "
            f"{s.get('fit', {}).get('fixed_s')} s fixed and "
            f"{s.get('fit', {}).get('us_per_example')} us per example (largest residual "
            f"{s.get('fit', {}).get('max_residual_pct')}% of a size's time). "
            f"Marginal cost between the two largest sizes: {s.get('marginal_us_per_example')} "
            f"us per example. Throughput largest/smallest: "
            f"{s.get('throughput_ratio_largest_vs_smallest')}x (the smallest split still "
            "carries each run's fixed cost: building and starting the Beam pipeline); peak RSS "
            f"largest/smallest: {s.get('peak_rss_ratio_largest_vs_smallest')}x.",
            "",
        ]
    elif s:
        lines += ["## 2. Evaluator scaling", "", f"Failed: {s['error']}", ""]
    st = results.get("stability")
    if st and "error" not in st:
        rows = []
        for where in ("in_one_process", "fresh_processes"):
            for stat in ("p50", "p95"):
                v = st[where][stat]
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
        lines += [
            "## 3. Latency measurement stability",
            "",
            f"{st['what']}: {st['timed_runs']} timed runs after {st['warmup_runs']} warm-up, "
            "5 measurements in one process, then 5 in fresh processes.",
            "",
            *_table(
                ["where", "statistic", "5 measurements (ms)", "median", "range/median", "CV"],
                rows,
            ),
            "",
        ]
    elif st:
        lines += ["## 3. Latency measurement stability", "", f"Failed: {st['error']}", ""]
    sp = results.get("structured_pruning")
    if sp and "error" not in sp:
        ref = sp["reference_digits_cnn"]
        lines += [
            "## 4. Structured pruning (benchmarks/structured_pruning.py)",
            "",
            *_table(
                ["model", "FLOPs ratio", "parameters ratio", "p50 latency ratio", "accuracy drop"],
                [
                    [
                        "digits CNN, 50% channels, fine-tuned",
                        f"{ref['flops_ratio']:.3f}",
                        f"{ref['parameters_ratio']:.3f}",
                        f"{ref['latency']['p50_ratio']:.3f}",
                        f"{ref['accuracy_drop_points']:.2f} pt",
                    ]
                ]
                + (
                    [
                        [
                            "MobileNetV2 0.35 96x96, 50% channels, random weights",
                            f"{sp['mobilenet_v2_035_96']['flops_ratio']:.3f}",
                            f"{sp['mobilenet_v2_035_96']['parameters_ratio']:.3f}",
                            f"{sp['mobilenet_v2_035_96']['latency']['p50_ratio']:.3f}",
                            "-",
                        ]
                    ]
                    if "mobilenet_v2_035_96" in sp
                    else []
                ),
            ),
            "",
        ]
    elif sp:
        lines += ["## 4. Structured pruning", "", f"Failed: {sp['error']}", ""]
    rc = results.get("recipes")
    if rc and "error" not in rc:
        from benchmarks import recipes

        lines += recipes.render(rc, 5)
    elif rc:
        lines += ["## 5. Recipes as candidates", "", f"Failed: {rc['error']}", ""]
    lines += evaluator_throughput.render_markdown(results.get("throughput"))
    if results.get("mobilenet"):
        lines += _mobilenet().render_section(results["mobilenet"], number=7)
    lines += [
        "## Section wall times",
        "",
        *_table(
            ["section", "finished at", "CPU", "wall (s)", "load average (1 min) before / after"],
            [
                [
                    name,
                    results[name].get("generated_at", results.get("generated_at")),
                    results[name].get("cpu_model", m["cpu_model"]),
                    results[name].get("section_wall_s"),
                    " / ".join(str(x) for x in results[name].get("load_average_1m", [])),
                ]
                for name in SECTIONS
                if name in results
            ],
        ),
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", required=True, help="dir with examples/ and model/")
    parser.add_argument("--only", help=f"comma-separated sections (default: all of {SECTIONS})")
    parser.add_argument("--repeats", type=int, default=1, help="overhead rounds (median)")
    parser.add_argument("--work-dir", help="where intermediate runs go (default: a temp dir)")
    parser.add_argument("--results", default=RESULTS_JSON, help="JSON file to write")
    parser.add_argument("--markdown", default=RESULTS_MD, help="RESULTS.md to write ('' skips)")
    args = parser.parse_args(argv)
    only = tuple(args.only.split(",")) if args.only else SECTIONS
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {SECTIONS}")
    if not os.path.isdir(os.path.join(args.reference, "examples")):
        parser.error(f"{args.reference!r} has no examples/: run `tfxopt example-data` first")
    work = args.work_dir or tempfile.mkdtemp(prefix="tfxopt-bench-")
    results = run_suite(args.reference, work, only, args.repeats)
    if args.only and os.path.exists(args.results):
        # A partial run updates its sections; the others keep their last results (and dates).
        with open(args.results) as f:
            previous = json.load(f)
        for name in SECTIONS:  # sections kept from an earlier run keep their own machine
            if name in previous and "cpu_model" not in previous[name]:
                previous[name]["cpu_model"] = previous.get("machine", {}).get("cpu_model", "?")
        results = {**previous, **results}
    text = json.dumps(results, indent=1)
    print(text)
    with open(args.results, "w") as f:
        f.write(text + "\n")
    if args.markdown:
        page = render_markdown(results)
        # A hand-written "## Notes" section at the end of the old file survives a re-run.
        if os.path.exists(args.markdown):
            with open(args.markdown) as f:
                old = f.read()
            if NOTES_HEADING in old:
                page += "\n" + old[old.index(NOTES_HEADING) :]
        with open(args.markdown, "w") as f:
            f.write(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
