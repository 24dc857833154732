"""Measuring baseline and candidates on this machine (no TFX here)."""

from __future__ import annotations

from components.common.errors import TfxOptError
from components.common.examples import DataConfig
from components.evaluator import accuracy, latency, models
from components.evaluator.models import ModelRef
from components.latency_benchmark.config import LatencyBenchmarkConfig


def run_benchmark(
    baseline: ModelRef,
    candidates: list[ModelRef],
    examples_uri: str | None,
    data: DataConfig,
    config: LatencyBenchmarkConfig,
    work_dir: str,
) -> dict:
    """Batch-1 latency of every model, interleaved after warm-up, as a ``latency.json`` record.

    The input is the first eval example when Examples are given, else zeros. A candidate that
    cannot be prepared is recorded with its error (the Evaluator then fails it closed).

    Raises:
      ModelInputError / DataError: the baseline or the Examples are unusable.
    """
    base = models.prepare(baseline, config.baseline_flavour, work_dir)
    prepared, failed = [base], {}
    for ref in candidates:
        try:
            prepared.append(models.prepare(ref, "auto", work_dir))
        except TfxOptError as e:
            failed[ref.name] = {"error": f"does not load: {e}"[:300], "uri": ref.uri}
    first = None
    if examples_uri is not None:
        inputs = accuracy.resolve_inputs(
            examples_uri, data.eval_split, data, base.input_shapes, "regression"
        )
        from components.common import examples as examples_lib

        files = examples_lib.split_files(examples_uri, data.eval_split)
        first, _ = accuracy.make_parser(inputs)([next(examples_lib.iter_serialized(files))])
    sample = latency.sample_input(base.input_shapes, first)
    record = latency.benchmark_record(
        prepared, sample, config.warmup_runs, config.timed_runs, config.num_threads
    )
    record["models"].update(failed)
    record["config"] = config.model_dump()
    return record


def key_numbers(record: dict) -> dict:
    """``<model>_p50_ms`` / ``<model>_p95_ms`` custom properties of the report."""
    out = {"source": record["source"]}
    for name, figures in record["models"].items():
        for stat in ("p50", "p95"):
            if f"{stat}_ms" in figures:
                out[f"{name}_{stat}_ms"] = figures[f"{stat}_ms"]
    return out
