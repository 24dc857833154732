"""Which latency figures the gate judges a candidate on: measured in this step or external.

The Evaluator can time every model itself (batch 1, interleaved after warm-up) and read figures
measured elsewhere (a LatencyBenchmark's report, ``latency.external_path``). A candidate and the
baseline are always compared on figures from one source, so the ratio is fair; a configured
source that is broken fails closed, with no fallback.
"""

from __future__ import annotations

import logging

from components.common import candidate as candidate_lib
from components.common import examples as examples_lib
from components.common.errors import DataError
from components.evaluator import accuracy, latency
from components.evaluator.config import EvaluatorConfig
from components.evaluator.models import BASELINE, ModelRef, PreparedModel

log = logging.getLogger(__name__)


def measure(
    prepared: dict[str, PreparedModel],
    entries: dict[str, dict],
    split: tuple[str, str, accuracy.EvalInputs],
    config: EvaluatorConfig,
) -> dict:
    """Batch-1 latency of every prepared model, interleaved, on one eval example (when
    ``latency.measure``); written into the entries. A candidate that cannot run fails here."""
    if not config.latency.measure:
        return {}
    examples_uri, eval_split, inputs = split
    sample = latency.sample_input(
        inputs.input_shapes, _first_example(examples_uri, eval_split, inputs)
    )
    measured = latency.measure_interleaved(
        list(prepared.values()),
        sample,
        config.latency.warmup_runs,
        config.latency.timed_runs,
        config.latency.num_threads,
        multi_thread_threads(config),
    )
    for name, figures in measured.items():
        entries[name]["latency_measured"] = figures
    _latency_failures(measured, entries)
    return measured


def multi_thread_threads(config: EvaluatorConfig) -> int:
    """Threads of the second, recorded-only latency: configured, else the CPUs we may use."""
    from components.common.measure import available_cpus

    return config.latency.multi_thread_threads or available_cpus()


def choose_for_candidates(
    candidates: list[ModelRef],
    entries: dict[str, dict],
    measured: dict,
    external: dict,
    prepared: dict[str, PreparedModel],
    config: EvaluatorConfig,
) -> None:
    """Records the external figures, then the pair of figures (candidate, baseline) each
    candidate is judged on, from one source (see :func:`choose_latency`)."""
    for name, entry in entries.items():
        if name in external["models"]:
            entry["latency_external"] = external["models"][name]
    for ref in candidates:
        cand_lat, base_lat, notes = choose_latency(ref.name, measured, external, prepared, config)
        entries[ref.name].update(latency_used=cand_lat, baseline_latency_used=base_lat, notes=notes)


def _first_example(examples_uri: str, split: str, inputs: accuracy.EvalInputs):
    first = next(examples_lib.iter_serialized(examples_lib.split_files(examples_uri, split)))
    x, _ = accuracy.make_parser(inputs)([first])
    return x


def external_latency(config: EvaluatorConfig, latency_report_uri: str | None) -> dict:
    """Merged external figures: name -> figures with their source; errors noted, never raised."""
    merged: dict = {"models": {}, "errors": [], "sources": []}
    documents = []
    if latency_report_uri:
        documents.append(f"{latency_report_uri}/{latency.REPORT_FILE}")
    if config.latency.external_path:
        documents.append(config.latency.external_path)  # later entries win per model
    for path in documents:
        try:
            doc = latency.read_latency_file(path)
        except DataError as e:
            merged["errors"].append(str(e))
            continue
        merged["sources"].append(doc["source"])
        for name, figures in doc["models"].items():
            merged["models"][name] = {**figures, "source": f"external: {doc['source']}"}
    return merged


def choose_latency(
    name: str, measured: dict, external: dict, prepared: dict, config: EvaluatorConfig
) -> tuple[dict | None, dict | None, list[str]]:
    """(candidate figures, baseline figures, notes) from one source, so the ratio is fair."""
    notes = []
    ext = external["models"]

    def usable(model_name):
        entry = ext.get(model_name)
        if entry is None:
            return None
        digest = entry.get("sha256")
        if digest and model_name in prepared and digest != prepared[model_name].sha256:
            notes.append(
                f"external latency of {model_name!r} measured other bytes (sha256 "
                f"{digest[:12]}... vs {prepared[model_name].sha256[:12]}...): not used"
            )
            return None
        return entry

    source = config.latency.source
    if external["errors"] and source != "measured":
        notes.extend(f"external latency unusable: {e}" for e in external["errors"])
        return None, None, notes  # a configured but broken source fails closed, no fallback
    cand_ext, base_ext = usable(name), usable(BASELINE)
    if source in ("external", "auto") and cand_ext is not None and base_ext is not None:
        if cand_ext["source"] == base_ext["source"]:
            return cand_ext, base_ext, notes
        notes.append("candidate and baseline external latencies come from different sources")
        if source == "external":
            return cand_ext, None, notes
    if source == "external":
        notes.append(f"no external latency for {name!r} and the baseline")
        return cand_ext, base_ext, notes
    cand = measured.get(name)
    base = measured.get(BASELINE)
    if cand is None:
        return None, None, notes
    cand = (
        {**cand, "source": "measured in this step (interleaved)"} if "error" not in cand else None
    )
    base = (
        {**base, "source": "measured in this step (interleaved)"}
        if base and "error" not in base
        else None
    )
    return cand, base, notes


def _latency_failures(measured: dict, entries: dict) -> None:
    """A candidate that cannot run at batch 1 for its latency failed its latency measurement."""
    for name, figures in measured.items():
        entry = entries[name]
        if name == BASELINE or "error" not in figures or entry.get("failure"):
            continue
        failure = candidate_lib.failure_record(
            "latency",
            "Evaluator",
            f"batch-1 latency could not be measured: {figures['error']}",
            detail=f"does not run at batch 1: {figures['error']}"[:160],
        )
        entry.update(failure=failure, error=failure["summary"])
        log.warning("candidate %s fails: %s", name, failure["summary"])
