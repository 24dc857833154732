"""The promotion gate on plain paths (no TFX here): measure baseline and candidates, judge, select.

:func:`evaluate` returns the full record written as ``evaluation.json``; :func:`key_numbers` the
figures stored as artifact properties; :func:`rules_table` a plain-text table of every rule per
candidate (value, threshold, verdict) for logs and run summaries. :func:`evaluate` reads as its
phases: cheap checks, models, accuracy, latency (:mod:`.latency_sources`), judging, the record
(with the production record of :mod:`.production`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from components.common import candidate as candidate_lib
from components.common import examples as examples_lib
from components.common import model_io
from components.common.errors import ConfigError, ModelInputError, TfxOptError
from components.common.examples import DataConfig
from components.common.numbers import fmt_value as _fmt
from components.evaluator import accuracy, latency_sources, models, paired, rules
from components.evaluator.config import EvaluatorConfig
from components.evaluator.models import BASELINE, ModelRef, PreparedModel
from components.evaluator.production import production_record, read_production

log = logging.getLogger(__name__)

FORMAT = "tfxopt.evaluation/v1"


def validate_names(names: list[str]) -> None:
    """Candidate names: unique, not ``baseline``, letters/digits/``_.-`` (they key files and rows).

    Raises:
      ConfigError: naming the offending name.
    """
    import re

    seen = set()
    for name in names:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name or ""):
            raise ConfigError(
                f"candidate name {name!r}: use 1-64 letters, digits, '_', '.' or '-', starting "
                "with a letter or digit"
            )
        if name == BASELINE:
            raise ConfigError("candidate name 'baseline' is reserved for the baseline model")
        if name in seen:
            raise ConfigError(f"candidate name {name!r} is used twice: names must be unique")
        seen.add(name)


def check_latency_sources(config: EvaluatorConfig, has_latency_report: bool) -> None:
    """Fails at build time when a latency rule or objective can never get a figure.

    Raises:
      ConfigError: naming the field to set.
    """
    external = has_latency_report or config.latency.external_path is not None
    if config.latency.source == "external" and not external:
        raise ConfigError(
            "evaluator.latency.source is 'external' but there is no external latency: connect a "
            "LatencyBenchmark's latency_report or set evaluator.latency.external_path"
        )
    if config.needs_latency() and not config.latency.measure and not external:
        raise ConfigError(
            "evaluator: a latency rule or objective 'fastest' is set but latency.measure is false "
            "and there is no external latency (latency_report input or latency.external_path)"
        )
    if (
        config.latency.source == "measured"
        and config.needs_latency()
        and not config.latency.measure
    ):
        raise ConfigError("evaluator.latency.source is 'measured' but latency.measure is false")


def _profile_numbers(profile_uri: str | None) -> dict | None:
    if not profile_uri:
        return None
    try:
        from components.common import properties
        from components.common.keys import PROFILE_FILE
        from components.profiler import profiler

        return profiler.key_numbers(properties.read_json(profile_uri, PROFILE_FILE))
    except Exception as e:  # noqa: BLE001 - a profile is context, never a verdict
        return {"error": f"profile at {profile_uri!r} unreadable: {e}"[:300]}


def evaluate(
    baseline: ModelRef,
    candidates: list[ModelRef],
    examples_uri: str,
    data: DataConfig,
    config: EvaluatorConfig,
    work_dir: str,
    latency_report_uri: str | None = None,
    make_pipeline: Callable | None = None,
    beam_pipeline_args: list[str] | None = None,
) -> dict:
    """Measures and judges; returns the evaluation record (JSON-serializable).

    Args:
      baseline / candidates: the model artifacts (candidate names must be unique).
      work_dir: a directory readable by Beam workers (the evaluation artifact): the baseline's
        float32 conversion and the per-example outcomes are written there.
      latency_report_uri: a ``tfxopt.LatencyReport`` artifact directory, if any.
    Raises:
      ModelInputError / DataError / ConfigError: the baseline or the eval split is unusable,
        raised before the heavy work. A candidate that fails is recorded and fails closed.
    """
    started = time.time()
    _check_request(candidates, examples_uri, data, config, latency_report_uri)
    base = models.prepare(baseline, config.baseline_flavour, work_dir, data.tflite_batch_size)
    task, inputs = resolve_task_and_inputs(baseline.uri, examples_uri, data, config, base)
    config = config.model_copy(update={"task": task.kind})
    prepared, entries = _prepare_models(baseline, candidates, base, config, work_dir)
    split = (examples_uri, data.eval_split, inputs)
    beam = {"make_pipeline": make_pipeline, "beam_pipeline_args": beam_pipeline_args}
    acc = _measure_accuracy(prepared, entries, split, task, config, work_dir, **beam)
    measured = latency_sources.measure(prepared, entries, split, config)
    external = latency_sources.external_latency(config, latency_report_uri)
    latency_sources.choose_for_candidates(candidates, entries, measured, external, prepared, config)
    production = read_production(config)
    judged = _judge_candidates(candidates, entries, acc, production, config)
    decision = rules.select(judged, config)
    log.warning("Evaluator decision: %s", decision["reason"])
    record = _record(
        decision,
        candidates,
        entries,
        task,
        config,
        (examples_uri, data.eval_split, acc),
        production,
        external,
    )
    record["wall_time_s"] = time.time() - started
    return record


def _check_request(candidates, examples_uri, data, config, latency_report_uri) -> None:
    """The cheap checks, before any model is loaded or converted.

    Raises:
      ConfigError / DataError: no candidate, a bad name, a latency rule without a source, or no
        eval split.
    """
    if not candidates:
        raise ConfigError("the Evaluator needs at least one candidate model")
    validate_names([c.name for c in candidates])
    check_latency_sources(config, latency_report_uri is not None)
    examples_lib.split_files(examples_uri, data.eval_split)  # cheap: fails before converting


def _prepare_models(
    baseline: ModelRef,
    candidates: list[ModelRef],
    base: PreparedModel,
    config: EvaluatorConfig,
    work_dir: str,
) -> tuple[dict[str, PreparedModel], dict[str, dict]]:
    """(the models to judge by name, one record entry per model): a candidate that failed upstream
    or does not load has its error in its entry and no prepared model."""
    prepared: dict[str, PreparedModel] = {BASELINE: base}
    entries: dict[str, dict] = {}
    for ref in [baseline, *candidates]:
        entries[ref.name] = {
            "name": ref.name,
            "uri": ref.uri,
            "artifact_id": ref.artifact_id,
            "profile": _profile_numbers(ref.profile_uri),
        }
    for ref in candidates:
        failure = _step_failure(ref)
        if failure is not None:
            # Marked failed by its own step (or its Profiler): nothing to load, judged as failed.
            entries[ref.name].update(failure=failure, error=failure["summary"])
            log.warning("candidate %s failed upstream: %s", ref.name, failure["summary"])
            continue
        try:
            prepared[ref.name] = _prepare_candidate(ref, base, config, work_dir)
        except TfxOptError as e:
            entries[ref.name]["error"] = f"does not load: {e}"
            log.warning("candidate %s fails closed: %s", ref.name, e)
    for name, model in prepared.items():
        entries[name].update(
            flavour=model.flavour,
            flavour_source=model.source,
            judged_path=model.path,
            sha256=model.sha256,
            size=models.sizes(model),
        )
    return prepared, entries


def _prepare_candidate(
    ref: ModelRef, base: PreparedModel, config: EvaluatorConfig, work_dir: str
) -> PreparedModel:
    """The candidate's judged flavour, checked against the baseline's inputs.

    Raises:
      TfxOptError: it does not load, lacks the SavedModel a push needs, or takes other inputs.
    """
    model = models.prepare(ref, "auto", work_dir)
    if config.require_saved_model and not models.has_saved_model(ref.uri):
        raise ModelInputError(
            f"{ref.uri!r} has no SavedModel flavour ({model_io.SERVING_DIR}/) and "
            "require_saved_model is set (the push goes to TF Serving)"
        )
    if model.input_shapes != base.input_shapes:
        raise ModelInputError(
            f"inputs {model.input_shapes} differ from the baseline's {base.input_shapes}"
        )
    return model


def _measure_accuracy(
    prepared: dict[str, PreparedModel],
    entries: dict[str, dict],
    split: tuple[str, str, accuracy.EvalInputs],
    task,
    config: EvaluatorConfig,
    work_dir: str,
    make_pipeline: Callable | None,
    beam_pipeline_args: list[str] | None,
) -> dict:
    """Every prepared model's metrics on the eval split ``(examples_uri, split, inputs)``, in one
    Beam pass; written into the entries. Returns what :func:`accuracy.run_accuracy` returns."""
    examples_uri, eval_split, inputs = split
    from_logits = config.loss_from_logits
    if from_logits is None:
        from_logits = task.from_logits
    settings = accuracy.AccuracySettings(
        config.task,
        config.top_k,
        config.compute_loss,
        bool(from_logits),
        task,
        num_threads=config.accuracy_threads,
    )
    need_rows = config.write_per_example or task.kind not in ("multiclass",)
    acc = accuracy.run_accuracy(
        list(prepared.values()),
        examples_uri,
        eval_split,
        inputs,
        settings,
        work_dir,
        batch_size=config.batch_size,
        write_per_example=need_rows,
        make_pipeline=make_pipeline,
        beam_pipeline_args=beam_pipeline_args,
    )
    if task.kind == "binary" and acc["per_example_dir"]:
        for name, metrics in acc["models"].items():
            if "error" not in metrics:
                metrics["auc"] = accuracy.binary_auc(acc["per_example_dir"], name)
    for name, metrics in acc["models"].items():
        entries[name]["accuracy"] = metrics
        if "error" in metrics and name != BASELINE:
            entries[name].setdefault("error", f"accuracy unmeasurable: {metrics['error']}")
    return acc


def _judge_candidates(
    candidates: list[ModelRef],
    entries: dict[str, dict],
    acc: dict,
    production: tuple[str, dict | None, str | None],
    config: EvaluatorConfig,
) -> list[dict]:
    """Every candidate's comparison, metrics and verdict, written into its entry; returns what
    :func:`rules.select` reads. Nothing counts for a candidate with an error (fail closed)."""
    base_entry = entries[BASELINE]
    base_acc = base_entry.get("accuracy") or {}
    baseline_problem = base_acc.get("error") or (None if base_acc else "not evaluated")
    judged = []
    for ref in candidates:
        entry = entries[ref.name]
        error = entry.get("error")
        if baseline_problem and error is None:
            error = f"baseline accuracy unmeasurable: {baseline_problem}"
        verdict = _judge(entry, base_entry, error, acc, production, config)
        judged.append({"name": ref.name, **verdict, "metrics": entry["metrics"]})
        for reason in verdict["rejected_because"]:
            log.warning("candidate %s rejected: %s", ref.name, reason)
    return judged


def _judge(
    entry: dict,
    base_entry: dict,
    error: str | None,
    acc: dict,
    production: tuple[str, dict | None, str | None],
    config: EvaluatorConfig,
) -> dict:
    """One candidate's comparison, metrics and verdict (written into its entry); the verdict."""
    production_state, production_metrics, _ = production
    comparison = None
    if error is None:
        comparison = _compare(entry["name"], entry, base_entry, acc, config)
    entry["comparison"] = comparison
    metrics = rules.derive_metrics(
        {**entry, "latency": entry["latency_used"]},
        {**base_entry, "latency": entry["baseline_latency_used"]},
        comparison,
        production_metrics,
        config,
    )
    if error is not None:
        # Nothing measured for a failed candidate counts, whatever figures it has.
        metrics = {k: (v if k.startswith("baseline_") else None) for k, v in metrics.items()}
    entry["metrics"] = metrics
    if entry.get("failure"):
        verdict = rules.failed_candidate_verdict(entry["failure"]["summary"])
    else:
        verdict = rules.judge_candidate(metrics, config, error, production_state)
    entry.update(verdict)
    entry["warnings"] = (comparison or {}).get("warnings", []) + entry["notes"]
    return verdict


def _record(
    decision: dict,
    candidates: list[ModelRef],
    entries: dict[str, dict],
    task,
    config: EvaluatorConfig,
    evaluated: tuple[str, str, dict],
    production: tuple[str, dict | None, str | None],
    external: dict,
) -> dict:
    """The evaluation record; ``evaluated`` is ``(examples_uri, eval split, accuracy result)``.

    ``wall_time_s`` is left for the caller to fill in.
    """
    examples_uri, eval_split, acc = evaluated
    production_state, production_metrics, production_note = production
    selected = decision["selected"]
    record = {
        "format": FORMAT,
        "decision": _decision_section(decision, candidates, entries, config),
        "task": task.to_dict(),
        "rules_configured": config.rules.configured(),
        "config": config.model_dump(),
        "eval": {
            "examples_uri": examples_uri,
            "split": eval_split,
            "examples": acc["examples"],
            "per_example_dir": acc["per_example_dir"] if config.write_per_example else None,
        },
        "production": {
            "state": production_state,
            "note": production_note,
            "metrics": production_metrics,
        },
        "latency_sources": {
            "measured": _measured_text(config) if config.latency.measure else None,
            "num_threads": config.latency.num_threads,
            "multi_thread_threads": latency_sources.multi_thread_threads(config)
            if config.latency.measure
            else None,
            "external": external["sources"],
            "external_errors": external["errors"],
        },
        "baseline": entries[BASELINE],
        "candidates": [entries[c.name] for c in candidates],
        "warnings": [
            f"{c.name}: {w}" for c in candidates for w in entries[c.name].get("warnings", [])
        ],
        "wall_time_s": None,
    }
    if selected:
        record["production_record"] = production_record(entries[selected], config, eval_split)
    return record


def _decision_section(
    decision: dict, candidates: list[ModelRef], entries: dict[str, dict], config: EvaluatorConfig
) -> dict:
    """The decision of :func:`rules.select`, with the objective and where the selected model is."""
    selected = decision["selected"]
    return {
        **decision,
        "objective": config.objective,
        "selected_index": next((i for i, c in enumerate(candidates) if c.name == selected), None),
        "selected_uri": entries[selected]["uri"] if selected else None,
        "selected_flavour": entries[selected].get("flavour") if selected else None,
    }


def _step_failure(ref: ModelRef) -> dict | None:
    """The failure a candidate step recorded in the candidate's model or its profile, if any."""
    failure = candidate_lib.read_failure(ref.uri)
    if failure is None:
        failure = candidate_lib.read_failure(ref.profile_uri)
    return failure


def effective_task_key(data: DataConfig, config: EvaluatorConfig) -> str:
    """data.task, else the deprecated evaluator.task when it names a task, else auto."""
    from components.common.metrics import TASKS

    if data.task != "auto":
        return data.task
    return config.task if config.task in TASKS else "auto"


def resolve_task_and_inputs(
    baseline_uri: str, examples_uri: str, data: DataConfig, config: EvaluatorConfig, base
):
    """(task, EvalInputs): from the baseline's Keras model when it has one (features matched to
    its inputs by name), else from the config and the judged flavour's input shapes.

    Raises:
      DataError / ConfigError: the eval split does not fit, or a rule does not fit the task.
    """
    from components.common.metrics import Task

    key = effective_task_key(data, config)
    task_data = data.model_copy(update={"task": key})
    try:
        keras_model = model_io.load_keras_model(baseline_uri, shared=True)
    except TfxOptError:
        keras_model = None
    if keras_model is not None:
        if data.module_file:
            accuracy.resolve_inputs(examples_uri, data.eval_split, data, (), "classification")
        mapping = examples_lib.resolve_mapping(
            examples_uri, data.eval_split, task_data, keras_model
        )
        task, inputs = mapping.task, accuracy.inputs_from_mapping(mapping)
    else:
        kind = "multiclass" if key == "auto" else key
        legacy = "regression" if kind == "regression" else "classification"
        inputs = accuracy.resolve_inputs(
            examples_uri, data.eval_split, data, base.input_shapes, legacy
        )
        task = Task(kind, (), bool(config.loss_from_logits), "from the config (no Keras model)")
    problems = config.rule_problems(task.kind)
    if problems:
        raise ConfigError("; ".join(problems))
    return task, inputs


def _compare(name: str, entry: dict, base_entry: dict, acc: dict, config: EvaluatorConfig):
    metric = rules.task_metric(config)
    if config.task in ("multiclass", "binary", "classification", None):
        table = acc["paired"].get(name)
        if not table:
            return None
        return paired.classification_comparison(table, base_entry["accuracy"][metric], config)
    if config.task != "regression":
        base_scores, cand_scores = accuracy.paired_errors(acc["per_example_dir"], name, "score")
        return paired.score_comparison(
            base_scores, cand_scores, base_entry["accuracy"][metric], config
        )
    key = "abs_err" if config.regression_metric == "mae" else "sq_err"
    base_errors, cand_errors = accuracy.paired_errors(acc["per_example_dir"], name, key)
    return paired.regression_comparison(
        base_errors, cand_errors, base_entry["accuracy"][config.regression_metric], config
    )


def key_numbers(record: dict) -> dict:
    """Figures stored as custom properties on the blessing (and the selected model)."""
    decision = record["decision"]
    out = {
        "blessed": int(bool(decision["blessed"])),
        "blessing_message": decision["reason"][:1000],
        "selected_candidate": decision["selected"] or "",
        "objective": decision["objective"],
        "eval_examples": record["eval"]["examples"],
        "candidates": len(record["candidates"]),
        "failed_candidates": sum(1 for c in record["candidates"] if c.get("failure")),
        "all_candidates_failed": int(bool(decision.get("all_candidates_failed"))),
        "task": (record.get("task") or {}).get("kind", "multiclass"),
        "metric": _metric_name(record),
        "baseline_accuracy": (record["baseline"].get("accuracy") or {}).get(_metric_name(record)),
    }
    if decision["selected"]:
        chosen = next(c for c in record["candidates"] if c["name"] == decision["selected"])
        metrics = chosen["metrics"]
        lat = chosen.get("latency_used") or {}
        out.update(
            selected_index=decision["selected_index"],
            evaluated_flavour=chosen["flavour"],
            accuracy=metrics.get(_metric_name(record)),
            accuracy_drop_points=metrics.get("accuracy_drop_points"),
            error=metrics.get("error"),
            speedup=metrics.get("speedup"),
            compression_ratio=metrics.get("compression_ratio"),
            size_bytes=(chosen.get("size") or {}).get("raw_bytes"),
            size_gzip_bytes=(chosen.get("size") or {}).get("gzip_bytes"),
            latency_source=lat.get("source"),
        )
        for stat in ("mean", "p50", "p95", "p99"):
            out[f"latency_{stat}_ms"] = lat.get(f"{stat}_ms")
    return {k: v for k, v in out.items() if v is not None and not _nan(v)}


def _metric_name(record: dict) -> str:
    """The accuracy-like metric of the record's task (top-1 accuracy for older records)."""
    from components.common.metrics import PRIMARY_METRIC

    kind = (record.get("task") or {}).get("kind", "multiclass")
    return "error" if kind == "regression" else PRIMARY_METRIC[kind]


def _nan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _measured_text(config: EvaluatorConfig) -> str:
    threads = config.latency.num_threads
    return (
        f"in this step, batch 1, interleaved after warm-up; the rules judge {threads} "
        f"thread{'' if threads == 1 else 's'}, {latency_sources.multi_thread_threads(config)} "
        "recorded beside (multi_thread)"
    )


def rules_table(record: dict) -> str:
    """Every rule and requirement per candidate: value, threshold, verdict; then the decision."""
    lines = []
    header = f"{'candidate':<16} {'rule':<40} {'value':>12} {'op':>2} {'threshold':>10}  verdict"
    lines.append(header)
    lines.append("-" * len(header))
    for cand in record["candidates"]:
        for rule in cand.get("rules", []):
            verdict = {True: "pass", False: "FAIL", None: "skipped"}[rule["passed"]]
            name = rule["rule"]
            if "latency_statistic" in rule:  # which figure: p95 at 1 thread, say
                setting = rules.latency_setting(rule["latency_statistic"], rule.get("num_threads"))
                name += f" [{setting.replace(', batch 1', '')}]"
            lines.append(
                f"{cand['name']:<16} {name:<40} {_fmt(rule['value']):>12} "
                f"{rule['op']:>2} {_fmt(rule['threshold']):>10}  {verdict}"
            )
        for req in cand.get("requirements", []):
            if not req["passed"]:
                # A failed candidate has no rules to show: its row says why it failed.
                why = f"  {req['detail']}" if req["check"] == rules.CANDIDATE_BUILT else ""
                lines.append(
                    f"{cand['name']:<16} {req['check']:<40} {'':>12} {'':>2} {'':>10}  FAIL{why}"
                )
    decision = record["decision"]
    verdict = f"BLESSED {decision['selected']!r}" if decision["blessed"] else "NOT BLESSED"
    lines.append(f"decision: {verdict} - {decision['reason']}")
    return "\n".join(lines)
