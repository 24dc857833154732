"""Evaluator scaling: throughput and peak memory of its Beam accuracy core at 1k, 10k, 100k examples.

The eval splits are made from the reference eval split (360 digits) by drawing examples with
replacement and adding Gaussian jitter (sigma 0.03 on pixel values in [0, 1], clipped), written
as gzipped TFRecords of tf.Example like the originals. Two models are judged per example, as the
Evaluator does with a baseline and one candidate: the reference CNN's float32 TFLite flavour and
its dynamic-range int8 flavour.

Each size runs in a fresh process (so peak RSS belongs to that size alone) through
``components.evaluator.accuracy.run_accuracy`` with the Evaluator's defaults: DirectRunner in
memory, one worker, ``EvaluatorConfig.batch_size``'s default batch, per-example rows written.
A 64-example warm-up run first absorbs Beam's and TFLite's one-time start-up, so the timed run
shows the per-example cost.
Peak memory is the process's high-water RSS (``VmHWM``); its growth over the RSS before the timed
run is what the split's size adds.
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

# Children run `python -m benchmarks....`: from the repository root, whatever the caller's cwd.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SIZES = (1_000, 10_000, 100_000)
JITTER = 0.03
WARMUP_EXAMPLES = 64


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def write_split(
    reference_examples: str, n: int, out_dir: str, seed: int = 0, files: int = 1
) -> str:
    """Writes ``n`` jittered eval examples under ``<out_dir>/Split-eval/`` (``data.gz``, or
    ``files`` shards ``data-0000i-of-0000N.gz`` in turn, as ExampleGen shards); returns out_dir."""
    import numpy as np

    from benchmarks.hand_recipe import load_split
    from pipelines.reference_data import write_examples

    x, y = load_split(reference_examples, "eval")
    rng = np.random.default_rng(seed)
    index = rng.integers(0, x.shape[0], size=n)
    jittered = np.clip(x[index] + rng.normal(0.0, JITTER, size=(n, x.shape[1])), 0.0, 1.0)
    jittered, labels = jittered.astype("float32"), y[index]
    for shard in range(files):
        name = "data.gz" if files == 1 else f"data-{shard:05d}-of-{files:05d}.gz"
        path = os.path.join(out_dir, "Split-eval", name)
        write_examples(path, jittered[shard::files], labels[shard::files])
    return out_dir


def write_models(reference_model: str, out_dir: str) -> dict[str, str]:
    """Model artifacts (``Format-TFLite/model.tflite``) of the float32 and dynamic-range flavours."""
    import tensorflow as tf

    import components  # noqa: F401
    from components.common import model_io, tflite

    saved_model = model_io.serving_model_dir(reference_model)
    flavours = {"baseline": tflite.convert_float32(saved_model)}
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    flavours["candidate"] = converter.convert()
    uris = {}
    for name, data in flavours.items():
        uri = os.path.join(out_dir, name)
        os.makedirs(os.path.join(uri, "Format-TFLite"), exist_ok=True)
        with open(os.path.join(uri, "Format-TFLite", "model.tflite"), "wb") as f:
            f.write(data)
        uris[name] = uri
    return uris


def measure_size(examples_dir: str, warmup_dir: str, models: dict[str, str], work_dir: str) -> dict:
    """One size, in this (fresh) process: warm-up run, then the timed run."""
    import components  # noqa: F401
    from components.common.examples import DataConfig
    from components.evaluator import accuracy
    from components.evaluator.config import EvaluatorConfig
    from components.evaluator.models import ModelRef, prepare

    prepared = [prepare(ModelRef(name, uri)) for name, uri in models.items()]
    batch_size = EvaluatorConfig().batch_size
    data = DataConfig(label_key="label", feature_keys=["image"])
    settings = accuracy.AccuracySettings()

    def once(split_dir, out):
        inputs = accuracy.resolve_inputs(
            split_dir, "eval", data, prepared[0].input_shapes, "classification"
        )
        return accuracy.run_accuracy(
            prepared, split_dir, "eval", inputs, settings, out, batch_size=batch_size
        )

    started = time.perf_counter()
    once(warmup_dir, os.path.join(work_dir, "warmup"))
    warmup_seconds = time.perf_counter() - started
    rss_before_kb = _status_kb("VmRSS")
    started = time.perf_counter()
    result = once(examples_dir, os.path.join(work_dir, "timed"))
    seconds = time.perf_counter() - started
    n = result["examples"]
    return {
        "examples": n,
        "seconds": round(seconds, 3),
        "warmup_run_seconds": round(warmup_seconds, 3),  # 64 examples: ~the fixed cost of a run
        "examples_per_s": round(n / seconds, 1),
        "us_per_example": round(1e6 * seconds / n, 1),
        "rss_before_mb": round(rss_before_kb / 1024, 1),
        "peak_rss_mb": round(_status_kb("VmHWM") / 1024, 1),
        "peak_growth_mb": round((_status_kb("VmHWM") - rss_before_kb) / 1024, 1),
        "accuracy": {k: v.get("top1_accuracy") for k, v in result["models"].items()},
    }


def linear_fit(sizes: list[int], seconds: list[float]) -> dict:
    """Least squares ``seconds = fixed + n * per_example``: a flat per-example cost fits well."""
    import numpy as np

    n, t = np.asarray(sizes, dtype=float), np.asarray(seconds, dtype=float)
    per_example, fixed = np.polyfit(n, t, 1)
    residual = t - (fixed + per_example * n)
    return {
        "fixed_s": round(float(fixed), 3),
        "us_per_example": round(float(per_example) * 1e6, 1),
        "max_residual_pct": round(float(np.max(np.abs(residual) / t)) * 100, 1),
    }


def run(reference_dir: str, work_dir: str, sizes=SIZES) -> dict:
    """Every size in its own process; returns the table and the marginal cost per example."""
    examples = os.path.join(reference_dir, "examples")
    models = write_models(os.path.join(reference_dir, "model"), os.path.join(work_dir, "models"))
    warmup = write_split(examples, WARMUP_EXAMPLES, os.path.join(work_dir, "split-warmup"), 1)
    rows = []
    for n in sizes:
        split = write_split(examples, n, os.path.join(work_dir, f"split-{n}"))
        command = [
            sys.executable,
            "-m",
            "benchmarks.scaling",
            "--child",
            split,
            "--warmup",
            warmup,
            "--models",
            json.dumps(models),
            "--work",
            os.path.join(work_dir, f"eval-{n}"),
        ]
        load = os.getloadavg()[0]
        with open(os.path.join(work_dir, f"eval-{n}.log"), "w") as log:
            done = subprocess.run(command, stdout=subprocess.PIPE, stderr=log, text=True, cwd=REPO)
        if done.returncode != 0:
            raise RuntimeError(f"scaling at {n} examples failed; see {log.name}")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        row["load_average_1m"] = [round(load, 2), round(os.getloadavg()[0], 2)]
        rows.append(row)
    out = {
        "what": "Evaluator Beam accuracy core (2 TFLite models per example, DirectRunner)",
        "jitter_sigma": JITTER,
        "rows": rows,
    }
    if len(rows) >= 2:
        a, b = rows[-2], rows[-1]
        marginal = (b["seconds"] - a["seconds"]) / (b["examples"] - a["examples"])
        out["marginal_us_per_example"] = round(1e6 * marginal, 1)
        out["throughput_ratio_largest_vs_smallest"] = round(
            rows[-1]["examples_per_s"] / rows[0]["examples_per_s"], 3
        )
        out["fit"] = linear_fit([r["examples"] for r in rows], [r["seconds"] for r in rows])
        out["peak_rss_ratio_largest_vs_smallest"] = round(
            rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"], 3
        )
    return out


def render_section(section: dict, number: int) -> list[str]:
    """The RESULTS.md lines of this section: one row per size, then the fitted costs."""
    if "error" in section:
        return markdown.failed(f"## {number}. Evaluator scaling", section["error"])
    return [
        f"## {number}. Evaluator scaling",
        "",
        f"{section['what']}; eval splits drawn from the reference eval split with jitter "
        f"(sigma {section['jitter_sigma']}). Each size in a fresh process, after a 64-example "
        "warm-up run.",
        "",
        *markdown.table(
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
                for r in section["rows"]
            ],
        ),
        "",
        _fit_sentence(section),
        "",
    ]


def _fit_sentence(section: dict) -> str:
    fit = section.get("fit", {})
    return (
        f"A least-squares fit of seconds = fixed + n x per-example over the sizes gives "
        f"{fit.get('fixed_s')} s fixed and {fit.get('us_per_example')} us per example (largest "
        f"residual {fit.get('max_residual_pct')}% of a size's time). Marginal cost between the "
        f"two largest sizes: {section.get('marginal_us_per_example')} us per example. "
        f"Throughput largest/smallest: {section.get('throughput_ratio_largest_vs_smallest')}x "
        "(the smallest split still carries each run's fixed cost: building and starting the Beam "
        "pipeline); peak RSS largest/smallest: "
        f"{section.get('peak_rss_ratio_largest_vs_smallest')}x."
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", metavar="SPLIT_DIR", help="(internal) measure one split")
    parser.add_argument("--warmup")
    parser.add_argument("--models")
    parser.add_argument("--work")
    parser.add_argument("--reference", help="dir with examples/ and model/")
    parser.add_argument("--work-dir")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure_size(args.child, args.warmup, json.loads(args.models), args.work)))
        return 0
    import tempfile

    work = args.work_dir or tempfile.mkdtemp(prefix="tfxopt-scaling-")
    print(json.dumps(run(args.reference, work), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
