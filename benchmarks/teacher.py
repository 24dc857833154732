"""Teacher-guided fine-tuning on the reference digits CNN: pruning with and without a teacher.

For each target sparsity (0.8, 0.9, 0.95 by default) the Pruner's own ``prune_model`` runs twice
with the same seed, epochs, data order and learning rate: once on the labels alone, once with
``fine_tuning.distillation`` (the baseline as the teacher). With ``--cluster`` the 0.8 model of
each variant is then clustered to 16 values (zeros kept), the teacher of the guided variant
being its input (the 0.8 pruned model), as in a pipeline chain. Accuracy is the Keras model's
on the eval split (one example is 100/360 = 0.28 points), before and after. Prints JSON (and
writes it with ``--out``), with the processor and the load average at start and end: the
machine may be shared.

Usage::

    TFXOPT_REFERENCE_DIR=/tmp/ref python -m benchmarks.teacher [--sparsities 0.8 0.9 0.95]
        [--seeds 0] [--epochs 6] [--alpha 0.5] [--temperature 4] [--cluster] [--out teacher.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import components  # noqa: E402,F401 - pins tf_keras
from components.clusterer import clusterer  # noqa: E402
from components.clusterer.config import ClustererConfig  # noqa: E402
from components.common import examples as examples_lib  # noqa: E402
from components.common import model_io, optimization, training  # noqa: E402
from components.common.examples import DataConfig  # noqa: E402
from components.pruner import pruner  # noqa: E402
from components.pruner.config import PrunerConfig  # noqa: E402

VARIANTS = ("labels_only", "teacher")


def _fine_tuning(epochs: int, seed: int, teacher: dict | None, learning_rate=None) -> dict:
    settings = {"epochs": epochs, "seed": seed}
    if learning_rate is not None:
        settings["learning_rate"] = learning_rate
    if teacher is not None:
        settings["distillation"] = teacher
    return settings


def _figures(record: dict, history: list[dict]) -> dict:
    last = history[-1] if history else {}
    return {
        "last_epoch": {k: round(v, 4) for k, v in last.items()},
        "accuracy_before": record["accuracy_before"],
        "accuracy_after": record["accuracy_after"],
        "drop_points": round(100 * record["accuracy_drop"], 3),
        "fine_tuning_s": round(record["fine_tuning"]["wall_time_s"], 1),
        "teacher": record["fine_tuning"]["teacher"],
    }


class Bench:
    """The reference inputs, read once, and one run per (technique, settings)."""

    def __init__(self, reference_dir: str):
        self.model_uri = os.path.join(reference_dir, "model")
        self.examples = os.path.join(reference_dir, "examples")
        self.data = DataConfig()
        self.model = model_io.load_keras_model(self.model_uri)
        task = examples_lib.resolve_task(self.examples, self.data, self.model)
        self.args = training.compile_args(task, self.model_uri, None)

    def _datasets(self, model, fine_tuning):
        # Made anew per run: the same seed gives the same shuffle order.
        return optimization.datasets(self.examples, self.data, model, fine_tuning)

    def prune(self, sparsity: float, fine_tuning: dict):
        config = PrunerConfig.parse(
            {"target_sparsity": sparsity, "fine_tuning": fine_tuning}, where="pruner"
        )
        train, evaluation, steps = self._datasets(self.model, config.fine_tuning)
        return pruner.prune_model(self.model, train, evaluation, config, steps, self.args)

    def cluster(self, model, fine_tuning: dict):
        config = ClustererConfig.parse(
            {"number_of_clusters": 16, "preserve_sparsity": True, "fine_tuning": fine_tuning},
            where="clusterer",
        )
        train, evaluation, _ = self._datasets(model, config.fine_tuning)
        return clusterer.cluster_model(model, train, evaluation, config, self.args)


def summary(runs: list[dict]) -> dict:
    """Per step: each variant's mean drop vs the baseline (points) over the seeds, and the
    teacher's gain (positive: the teacher recovered that much of the drop)."""
    drops: dict[str, dict[str, list[float]]] = {}
    for row in runs:
        drop = row.get("drop_vs_baseline_points", row["drop_points"])
        drops.setdefault(row["step"], {}).setdefault(row["variant"], []).append(drop)
    out = {}
    for step, variants in drops.items():
        means = {v: round(sum(d) / len(d), 3) for v, d in variants.items()}
        out[step] = {f"{v}_mean_drop_points": m for v, m in means.items()}
        out[step]["seeds"] = len(variants.get("teacher", []))
        if set(means) == set(VARIANTS):
            out[step]["teacher_gain_points"] = round(means["labels_only"] - means["teacher"], 3)
    return out


def run(args) -> dict:
    from benchmarks.run import machine

    started = time.time()
    result = {"machine": machine(), "settings": vars(args).copy(), "runs": []}
    bench = Bench(args.reference_dir)
    teacher = {"alpha": args.alpha, "temperature": args.temperature}
    for seed in args.seeds:
        for sparsity in args.sparsities:
            for variant in VARIANTS:
                guide = teacher if variant == "teacher" else None
                tuning = _fine_tuning(args.epochs, seed, guide, args.learning_rate)
                pruned, record, history = bench.prune(sparsity, tuning)
                row = {"seed": seed, "step": f"prune {sparsity}", "variant": variant}
                row.update(_figures(record, history), achieved_sparsity=record["achieved_sparsity"])
                result["runs"].append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
                if args.cluster and sparsity == min(args.sparsities):
                    cluster_tuning = _fine_tuning(args.cluster_epochs, seed, guide)
                    _, crecord, chistory = bench.cluster(pruned, cluster_tuning)
                    crow = {"seed": seed, "step": f"prune {sparsity} + cluster 16"}
                    crow.update(variant=variant, **_figures(crecord, chistory))
                    # The chain's drop is against the baseline, not the clusterer's input.
                    crow["drop_vs_baseline_points"] = round(
                        100 * (record["accuracy_before"] - crecord["accuracy_after"]), 3
                    )
                    result["runs"].append(crow)
                    print(json.dumps(crow), file=sys.stderr, flush=True)
    result["summary"] = summary(result["runs"])
    result["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    result["wall_time_s"] = round(time.time() - started, 1)
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reference-dir", default=os.environ.get("TFXOPT_REFERENCE_DIR"))
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.8, 0.9, 0.95])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=PrunerConfig().fine_tuning.epochs)
    parser.add_argument(
        "--learning-rate", type=float, help="default: the Pruner's fine-tuning default"
    )
    parser.add_argument("--alpha", type=float, default=training.DistillationConfig().alpha)
    parser.add_argument(
        "--temperature", type=float, default=training.DistillationConfig().temperature
    )
    parser.add_argument("--cluster", action="store_true", help="also cluster the lowest sparsity")
    parser.add_argument("--cluster-epochs", type=int, default=ClustererConfig().fine_tuning.epochs)
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    if not args.reference_dir:
        parser.error("--reference-dir (or TFXOPT_REFERENCE_DIR) is required")
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
