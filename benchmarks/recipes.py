"""The hand recipe and ``tfxopt run --config pipelines/configs/recipes.yaml``, side by side.

Both run on the reference inputs in fresh processes, one after the other: the TensorFlow Model
Optimization tutorials' recipe by hand (:mod:`benchmarks.hand_recipe`: prune 0.8 -> cluster 16 ->
int8 PTQ) and the pipeline with every recipe of ``recipes.yaml`` as a candidate. Then every
flatbuffer is measured here, the same way, against the baseline's float32 TFLite conversion:

- gzip ratio: fp32 flatbuffer gzipped / candidate gzipped (level 9);
- accuracy drop in points on the eval split, with a paired bootstrap 95% interval;
- p50 / p95 latency ratio vs fp32: batch 1, one thread, all models interleaved after warm-up;
- wall time: the hand recipe's process; per pipeline recipe, the sum of its chain's steps (a
  step shared by several recipes counts in each), and the whole ``tfxopt run`` process.

Targets (issue 19): a blessed candidate >= 14x smaller (gzip) with a drop <= 0.3 points; a
candidate <= 0.5x the fp32 p50 with a drop <= 0.5 points.
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
RECIPES_CONFIG = os.path.join(REPO, "pipelines", "configs", "recipes.yaml")
TARGETS = {
    "size": {"min_gzip_ratio": 14.0, "max_drop_points": 0.3, "blessed": True},
    "speed": {"max_p50_ratio": 0.5, "max_drop_points": 0.5},
}


def run_pipeline_side(reference_dir: str, out_dir: str) -> dict:
    """``tfxopt run`` with recipes.yaml (as the CLI runs it); every candidate's flatbuffer."""
    from components.common import model_io
    from pipelines.config import load_config
    from pipelines.local.runner import run_local
    from pipelines.report import console

    config = load_config(RECIPES_CONFIG)
    run = run_local(
        config,
        os.path.join(reference_dir, "model"),
        os.path.join(reference_dir, "examples"),
        out_dir,
    )
    print(console.render(run), file=sys.stderr)
    plan = config.plan()
    steps = {s.node_id: round(s.duration_s, 3) for s in run.steps}
    candidates = {}
    for name, node_id in plan.candidates.items():
        chain, current = [], node_id
        while current is not None:
            chain.insert(0, current)
            current = plan.node(current).parent
        models = run.outputs_of(node_id, "optimized_model")
        path = model_io.tflite_path(models[0].uri) if models else None
        candidates[name] = {
            # a candidate whose step failed (isolated) has no flatbuffer: reported, not measured
            "tflite_path": path if path and os.path.exists(path) else None,
            "chain": chain,
            "chain_steps_s": round(sum(steps.get(n, 0.0) for n in chain), 3),
        }
    evaluation = console.evaluation_record(run)
    return {
        "steps_s": steps,
        "states": {s.node_id: s.state for s in run.steps},
        "candidates": candidates,
        "decision": {k: evaluation["decision"][k] for k in ("blessed", "selected", "reason")},
    }


def _child(side: str, reference_dir: str, out_dir: str, log_path: str) -> dict:
    command = [sys.executable, "-m", "benchmarks.recipes", "--side", side]
    command += ["--reference", reference_dir, "--out", out_dir]
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    with open(log_path, "w") as log:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=log, text=True, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"the {side} side failed (rc {done.returncode}); see {log_path}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = round(time.perf_counter() - started, 3)
    result["load_average_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    return result


def paired_drop_ci(base_correct, cand_correct, resamples=2000, level=0.95, seed=0):
    """Accuracy drop (points) of a candidate vs the baseline and its paired bootstrap interval."""
    import numpy as np

    base = np.asarray(base_correct, dtype=np.float64)
    cand = np.asarray(cand_correct, dtype=np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, base.size, size=(resamples, base.size))
    drops = 100 * (base[idx].mean(axis=1) - cand[idx].mean(axis=1))
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(drops, [tail, 100 - tail])
    return round(100 * (base.mean() - cand.mean()), 3), [round(low, 3), round(high, 3)]


def measure_all(flatbuffers: dict[str, bytes], examples_dir: str, runs: int) -> dict:
    """Size, accuracy (drop and CI vs ``fp32``) and interleaved latency ratios of every model."""
    import components  # noqa: F401 - pins tf_keras
    from benchmarks.hand_recipe import load_split
    from components.common import measure, tflite

    x_eval, y_eval = load_split(examples_dir, "eval")
    runners, correct, out = {}, {}, {}
    for name, data in flatbuffers.items():
        runner = tflite.TFLiteModel(data, num_threads=1)
        correct[name] = runner.predict_each(x_eval, batch_size=1).argmax(-1) == y_eval
        out[name] = {
            "tflite_bytes": len(data),
            "tflite_gzip_bytes": measure.gzipped_bytes(data),
            "accuracy": round(float(correct[name].mean()), 5),
        }
        runner.set_inputs(x_eval[:1])
        runners[name] = runner
    samples = measure.time_interleaved(
        {name: r.invoke for name, r in runners.items()}, warmup_runs=200, timed_runs=runs
    )
    stats = {name: measure.summarize_ms(s) for name, s in samples.items()}
    base = out["fp32"]
    for name, entry in out.items():
        entry["p50_ms"] = round(stats[name]["p50_ms"], 4)
        entry["p95_ms"] = round(stats[name]["p95_ms"], 4)
        entry["gzip_ratio"] = round(base["tflite_gzip_bytes"] / entry["tflite_gzip_bytes"], 3)
        entry["p50_ratio"] = round(stats[name]["p50_ms"] / stats["fp32"]["p50_ms"], 3)
        entry["p95_ratio"] = round(stats[name]["p95_ms"] / stats["fp32"]["p95_ms"], 3)
        entry["drop_points"], entry["drop_ci95"] = paired_drop_ci(correct["fp32"], correct[name])
    return out


def _targets(models: dict, decision: dict, names: list[str]) -> dict:
    size, speed = TARGETS["size"], TARGETS["speed"]
    selected = decision.get("selected") if decision.get("blessed") else None
    size_met = [
        n
        for n in names
        if models[n]["gzip_ratio"] >= size["min_gzip_ratio"]
        and models[n]["drop_points"] <= size["max_drop_points"]
    ]
    speed_met = [
        n
        for n in names
        if models[n]["p50_ratio"] <= speed["max_p50_ratio"]
        and models[n]["drop_points"] <= speed["max_drop_points"]
    ]
    return {
        "size": {**size, "candidates_meeting": size_met, "met": selected in size_met},
        "speed": {**speed, "candidates_meeting": speed_met, "met": bool(speed_met)},
    }


def run(reference_dir: str, work_dir: str, runs: int = 2000) -> dict:
    """Both sides, then every flatbuffer measured in this process."""
    from components.common import tflite

    hand = _child("hand", reference_dir, os.path.join(work_dir, "hand"), f"{work_dir}/hand.log")
    pipeline = _child(
        "pipeline", reference_dir, os.path.join(work_dir, "pipeline"), f"{work_dir}/pipeline.log"
    )
    flatbuffers = {"fp32": tflite.convert_float32(os.path.join(reference_dir, "model"))}
    measured = {n: c for n, c in pipeline["candidates"].items() if c["tflite_path"]}
    for name, path in [("hand", hand["tflite_path"])] + [
        (name, c["tflite_path"]) for name, c in measured.items()
    ]:
        with open(path, "rb") as f:
            flatbuffers[name] = f.read()
    models = measure_all(flatbuffers, os.path.join(reference_dir, "examples"), runs)
    models["hand"]["wall_s"] = hand["process_wall_s"]
    for name, candidate in measured.items():
        models[name]["wall_s"] = candidate["chain_steps_s"]
        models[name]["chain"] = candidate["chain"]
    return {
        "what": "hand recipe (prune 0.8 -> cluster 16 -> int8 PTQ) vs tfxopt run recipes.yaml",
        "latency_runs": runs,
        "hand_wall_s": hand["process_wall_s"],
        "hand_timings_s": hand["timings_s"],
        "pipeline_wall_s": pipeline["process_wall_s"],
        "pipeline_steps_s": pipeline["steps_s"],
        "pipeline_states": pipeline["states"],
        "decision": pipeline["decision"],
        "models": models,
        "targets": _targets(models, pipeline["decision"], list(measured)),
        "failed_candidates": sorted(set(pipeline["candidates"]) - set(measured)),
        "load_average_1m": {
            "hand": hand["load_average_1m"],
            "pipeline": pipeline["load_average_1m"],
        },
    }


def render_section(section: dict, number: int) -> list[str]:
    """The RESULTS.md section: one row per recipe, then the targets, met or not."""
    if "error" in section:
        return markdown.failed(f"## {number}. Recipes as candidates", section["error"])
    models = section["models"]
    decision = section["decision"]
    rows = []
    for name, m in models.items():
        if name == "fp32":
            label = "fp32 TFLite baseline"
        elif name == "hand":
            label = "hand recipe (tutorial: prune 0.8 -> cluster 16 -> int8 PTQ)"
        else:
            blessed = (
                " **(blessed)**" if decision["blessed"] and decision["selected"] == name else ""
            )
            label = f"`{name}`{blessed}: {' -> '.join(m['chain'])}"
        ci = m["drop_ci95"]
        rows.append(
            [
                label,
                f"{m['tflite_gzip_bytes']:,}",
                f"{m['gzip_ratio']:.2f}x",
                f"{100 * m['accuracy']:.2f}%",
                f"{m['drop_points']:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}]",
                f"{m['p50_ratio']:.3f} ({m['p50_ms']:.4f} ms)",
                f"{m['p95_ratio']:.3f}",
                "-" if name == "fp32" else f"{m['wall_s']:.1f}",
            ]
        )
    size, speed = section["targets"]["size"], section["targets"]["speed"]
    return [
        f"## {number}. Recipes as candidates vs the hand recipe (benchmarks/recipes.py)",
        "",
        "The tutorials' recipe by hand and `tfxopt run --config pipelines/configs/recipes.yaml` "
        "on the reference inputs, one after the other in fresh processes; then every flatbuffer "
        "measured here against the baseline's float32 TFLite conversion: gzip ratio (level 9), "
        "accuracy drop on the 360-example eval split with a paired bootstrap 95% interval, "
        f"p50/p95 latency ratio (batch 1, one thread, all models interleaved, "
        f"{section['latency_runs']} timed runs). Wall time: the hand recipe's process; per "
        "pipeline recipe, the sum of its chain's steps (a shared step counts in each recipe "
        f"using it). The whole `tfxopt run` process took {section['pipeline_wall_s']:.1f} s for "
        f"all recipes; the hand recipe {section['hand_wall_s']:.1f} s for one.",
        "",
        *markdown.table(
            [
                "model",
                "gzip bytes",
                "gzip ratio",
                "accuracy",
                "drop, points [95% CI]",
                "p50 ratio",
                "p95 ratio",
                "wall (s)",
            ],
            rows,
        ),
        "",
        *(
            [f"Candidates whose step failed (not measured): {section['failed_candidates']}.", ""]
            if section.get("failed_candidates")
            else []
        ),
        f"Gate decision: {'BLESSED ' + repr(decision['selected']) if decision['blessed'] else 'NOT BLESSED'}"
        f" - {decision['reason']}",
        "",
        f"- Size target (blessed, >= {size['min_gzip_ratio']:g}x gzip, drop <= "
        f"{size['max_drop_points']:g} pt): **{'met' if size['met'] else 'NOT met'}** "
        f"(candidates meeting it: {size['candidates_meeting'] or 'none'}).",
        f"- Speed target (a candidate <= {speed['max_p50_ratio']:g}x fp32 p50, drop <= "
        f"{speed['max_drop_points']:g} pt): **{'met' if speed['met'] else 'NOT met'}** "
        f"(candidates meeting it: {speed['candidates_meeting'] or 'none'}).",
        "",
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", choices=("hand", "pipeline"), help="run one side (a child)")
    parser.add_argument("--reference", required=True, help="dir with examples/ and model/")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.side == "pipeline":
        result = run_pipeline_side(args.reference, args.out)
    elif args.side == "hand":
        from benchmarks import hand_recipe

        result = hand_recipe.run(args.reference, args.out, skip_keras_autograph=True)
    else:
        result = run(args.reference, args.out)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
