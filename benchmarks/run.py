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
   10k, 100k and 1M examples (:mod:`benchmarks.evaluator_throughput`).
7. ``mobilenet``: MobileNetV2 (0.35 at 32x32, 1.0 at 224x224) through the pipeline, per-step
   load / convert / work / save / measure, vs by hand (:mod:`benchmarks.mobilenet`).
8. ``tflite_speed``: each model's float32 / dynamic range / full int8 flatbuffers converted before
   (dynamic batch) and after (static batch 1) issue 28 and by the TFMOT recipe: p50 in LiteRT,
   XNNPACK delegation, bytes, accuracy, and the issue's targets (:mod:`benchmarks.tflite_speed`).
9. ``accuracy_control``: full int8 and prune 80% -> int8, without and with accuracy control, on
   a few zoo models and MobileNetV2 0.35: drop, bytes, p50, layers spared, evaluations
   (:mod:`benchmarks.accuracy_control`).

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

from benchmarks import markdown

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
    "tflite_speed",
    "accuracy_control",
)
RESULTS_JSON = os.path.join(HERE, "results.json")
RESULTS_MD = os.path.join(HERE, "RESULTS.md")
#: The hand-written part of RESULTS.md, kept when the tables are rewritten: dated entries only.
HISTORY_HEADING = "## History"


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


def _accuracy_control():
    from benchmarks import accuracy_control

    return accuracy_control


def run_suite(reference_dir: str, work_dir: str, only=SECTIONS, repeats: int = 1) -> dict:
    """Runs the chosen sections; each records its wall time and the load around it."""
    from benchmarks import (
        evaluator_throughput,
        overhead,
        recipes,
        scaling,
        stability,
        tflite_speed,
    )

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
        "tflite_speed": lambda d: tflite_speed.run(reference_dir, d),
        "accuracy_control": lambda d: _accuracy_control().run(d),
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


def render_markdown(results: dict) -> str:
    """RESULTS.md: the machine, then one section per benchmark, numbers from ``results``."""
    lines = [*_header(results), *_machine_section(results["machine"])]
    for number, name in enumerate(SECTIONS, start=1):
        if results.get(name):
            lines += _section_renderer(name)(results[name], number)
    lines += _wall_times_section(results)
    return "\n".join(lines)


def _section_renderer(name: str):
    """The function that renders section ``name``: ``(section, number) -> lines``."""
    from benchmarks import (
        accuracy_control_report,
        evaluator_throughput,
        mobilenet_report,
        overhead,
        recipes,
        scaling,
        stability,
        tflite_speed_report,
    )

    return {
        "overhead": overhead.render_section,
        "scaling": scaling.render_section,
        "stability": stability.render_section,
        "structured_pruning": _structured_pruning_section,
        "recipes": recipes.render_section,
        "throughput": evaluator_throughput.render_section,
        "mobilenet": mobilenet_report.render_section,
        "tflite_speed": tflite_speed_report.render_section,
        "accuracy_control": accuracy_control_report.render_section,
    }[name]


def _header(results: dict) -> list[str]:
    return [
        "# Benchmark results",
        "",
        f"Generated by `make bench` (`python -m benchmarks.run`) on {results['generated_at']}; "
        "the raw numbers are in `benchmarks/results.json`. A run of some sections "
        "(`--only`) keeps the others' last results: each section's own date, processor and "
        "load are in the last table (the machine below is the latest run's).",
        "",
    ]


def _machine_section(m: dict) -> list[str]:
    vnni = {True: "yes", False: "no (AVX2 only)" if m.get("avx2") else "no"}
    lines = [
        "## Machine",
        "",
        *markdown.table(
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
                    vnni.get(m.get("avx512_vnni"), "?"),
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
    return lines


def _structured_pruning_section(section: dict, number: int) -> list[str]:
    """Here, not in benchmarks/structured_pruning.py: that script imports TensorFlow at once."""
    if "error" in section:
        return markdown.failed(f"## {number}. Structured pruning", section["error"])
    ref = section["reference_digits_cnn"]
    rows = [
        _structured_row(
            "digits CNN, 50% channels, fine-tuned", ref, f"{ref['accuracy_drop_points']:.2f} pt"
        )
    ]
    if "mobilenet_v2_035_96" in section:  # random weights: no accuracy to compare
        rows.append(
            _structured_row(
                "MobileNetV2 0.35 96x96, 50% channels, random weights",
                section["mobilenet_v2_035_96"],
                "-",
            )
        )
    return [
        f"## {number}. Structured pruning (benchmarks/structured_pruning.py)",
        "",
        *markdown.table(
            ["model", "FLOPs ratio", "parameters ratio", "p50 latency ratio", "accuracy drop"],
            rows,
        ),
        "",
    ]


def _structured_row(label: str, model: dict, drop: str) -> list[str]:
    return [
        label,
        f"{model['flops_ratio']:.3f}",
        f"{model['parameters_ratio']:.3f}",
        f"{model['latency']['p50_ratio']:.3f}",
        drop,
    ]


def _wall_times_section(results: dict) -> list[str]:
    return [
        "## Section wall times",
        "",
        *markdown.table(
            ["section", "finished at", "CPU", "wall (s)", "load average (1 min) before / after"],
            [
                [
                    name,
                    results[name].get("generated_at", results.get("generated_at")),
                    results[name].get("cpu_model", results["machine"]["cpu_model"]),
                    results[name].get("section_wall_s"),
                    " / ".join(str(x) for x in results[name].get("load_average_1m", [])),
                ]
                for name in SECTIONS
                if name in results
            ],
        ),
        "",
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", help="dir with examples/ and model/ (required to run)")
    parser.add_argument(
        "--render",
        action="store_true",
        help="run nothing: rewrite RESULTS.md from results.json (its History kept)",
    )
    parser.add_argument("--only", help=f"comma-separated sections (default: all of {SECTIONS})")
    parser.add_argument("--repeats", type=int, default=1, help="overhead rounds (median)")
    parser.add_argument("--work-dir", help="where intermediate runs go (default: a temp dir)")
    parser.add_argument("--results", default=RESULTS_JSON, help="JSON file to write")
    parser.add_argument("--markdown", default=RESULTS_MD, help="RESULTS.md to write ('' skips)")
    args = parser.parse_args(argv)
    if args.render:
        with open(args.results) as f:
            write_markdown(json.load(f), args.markdown or RESULTS_MD)
        return 0
    if not args.reference:
        parser.error("--reference is required (or --render)")
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
        write_markdown(results, args.markdown)
    return 0


def history(path: str) -> str:
    """The hand-written ``## History`` part of an existing RESULTS.md ('' when none)."""
    if not os.path.exists(path):
        return ""
    with open(path) as f:
        old = f.read()
    return old[old.index(HISTORY_HEADING) :] if HISTORY_HEADING in old else ""


def write_markdown(results: dict, path: str) -> None:
    """RESULTS.md: the tables rendered from ``results``, then the file's History as it was."""
    page = render_markdown(results)
    kept = history(path)
    if kept:
        page += "\n" + kept
    with open(path, "w") as f:
        f.write(page)


if __name__ == "__main__":
    sys.exit(main())
