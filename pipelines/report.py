"""The run report: one self-contained HTML page (plots embedded) and a ``summary.json``.

This module reads the run and gathers the numbers; :mod:`pipelines.report_plots` draws the plots
and :mod:`pipelines.report_html` writes the page (the pipeline graph is inline SVG).

Everything comes from what the run recorded: ML Metadata gives the steps, their states, durations
and the artifacts they wrote; the artifacts give the numbers (each Profiler's ``profile.json``, the
Evaluator's ``evaluation.json``, the Pusher's ``push.json``). The page needs no network, no script
and no server: plots are PNGs in ``data:`` URIs, the pipeline graph is inline SVG.

``summary.json`` holds the same numbers for machines (format ``tfxopt.run_report/v1``).
"""

from __future__ import annotations

import datetime
import json
import math
import os
from collections import defaultdict
from dataclasses import dataclass, field

from components.common.keys import (
    BASELINE,
    EVALUATION_FILE,
    EVALUATION_KEY,
    METADATA_FILE,
    PROFILE_FILE,
    PROFILE_KEY,
    PUSH_FILE,
    PUSHED_MODEL_KEY,
)
from pipelines import report_layers

REPORT_FILE = "report.html"
SUMMARY_FILE = "summary.json"
SUMMARY_FORMAT = "tfxopt.run_report/v1"


# --------------------------------------------------------------------------- reading the run


@dataclass
class Step:
    """One step of the run: what ML Metadata says about it, and where it sits in the graph."""

    node_id: str
    state: str
    duration_s: float
    component: str = ""  # the component class (execution type), e.g. "Quantizer"
    upstream: list[str] = field(default_factory=list)
    outputs: dict = field(default_factory=dict)  # key -> [{"id", "uri", "properties"}]


@dataclass
class RunInfo:
    """A finished (or failed) run as the report reads it."""

    output_dir: str
    metadata_path: str
    pipeline_name: str
    run_id: str
    steps: list[Step]


def sqlite_readonly(path: str):
    """A read-only ML Metadata connection to a SQLite file (a report never writes to the store).

    Raises:
      ConfigError: the file does not exist.
    """
    from ml_metadata.proto import metadata_store_pb2

    if not os.path.isfile(path):
        from components.common.errors import ConfigError

        raise ConfigError(
            f"no ML Metadata store at {path!r}: give the --output directory of a `tfxopt run` "
            "(it holds metadata.sqlite and pipeline-root/)."
        )
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return config


def _connection(output_dir: str):
    """(connection config, description) of the store a run in ``output_dir`` recorded into.

    ``metadata.sqlite`` in the directory when it is there; otherwise the MySQL server the
    ``TFXOPT_MLMD_MYSQL_*`` environment names (pipelines.metadata_config), when set.
    """
    path = os.path.join(output_dir, METADATA_FILE)
    if not os.path.isfile(path):
        try:
            from pipelines import metadata_config
        except ImportError:  # a checkout without MySQL support
            metadata_config = None
        if metadata_config is not None and metadata_config.mysql_settings() is not None:
            store = metadata_config.metadata_store(output_dir)
            return store.connection_config, store.location
    return sqlite_readonly(path), path


def _store(connection_config):
    from ml_metadata.metadata_store import metadata_store

    return metadata_store.MetadataStore(connection_config)


def pipeline_names(connection_config) -> list[str]:
    """Names of the pipelines in a metadata store, the most recently run first."""
    store = _store(connection_config)
    pipelines = store.get_contexts_by_type("pipeline")
    runs = store.get_contexts_by_type("pipeline_run")
    newest: dict[str, int] = {}
    for ctx in pipelines:
        newest[ctx.name] = ctx.create_time_since_epoch
    for run in runs:
        for execution in store.get_executions_by_context(run.id)[:1]:
            for ctx in store.get_contexts_by_execution(execution.id):
                if ctx.name in newest:
                    newest[ctx.name] = max(newest[ctx.name], run.create_time_since_epoch)
    return sorted(newest, key=lambda name: -newest[name])


def _run_graph(connection_config, run_id: str) -> tuple[str, dict, dict]:
    """(pipeline name, node id -> component type, node id -> upstream node ids) of one run."""
    from ml_metadata.proto import metadata_store_pb2

    store = _store(connection_config)
    run_ctx = store.get_context_by_type_and_name("pipeline_run", run_id)
    if run_ctx is None:
        raise LookupError(f"no run {run_id!r} in this metadata store")
    executions = store.get_executions_by_context(run_ctx.id)
    type_names = {t.id: t.name for t in store.get_execution_types()}
    node_type = store.get_context_type("node")
    pipeline_type = store.get_context_type("pipeline")

    def describe(execution_ids):
        pipeline, nodes = None, {}
        for execution_id in execution_ids:
            contexts = store.get_contexts_by_execution(execution_id)
            pipeline = pipeline or next(
                (c.name for c in contexts if c.type_id == pipeline_type.id), None
            )
            for ctx in contexts:
                if ctx.type_id == node_type.id and pipeline and ctx.name.startswith(pipeline + "."):
                    nodes[execution_id] = ctx.name[len(pipeline) + 1 :]
        return pipeline, nodes

    pipeline, node_of = describe([e.id for e in executions])
    components = {
        node_of[e.id]: type_names.get(e.type_id, "").rsplit(".", 1)[-1]
        for e in executions
        if e.id in node_of
    }
    events = store.get_events_by_execution_ids([e.id for e in executions])
    producer = {
        ev.artifact_id: node_of.get(ev.execution_id)
        for ev in events
        if ev.type == metadata_store_pb2.Event.OUTPUT
    }
    inputs = [ev for ev in events if ev.type == metadata_store_pb2.Event.INPUT]
    # Inputs made by an earlier run (a cached step's outputs): find their producing node.
    unknown = sorted({ev.artifact_id for ev in inputs if ev.artifact_id not in producer})
    if unknown:
        outside = [
            ev
            for ev in store.get_events_by_artifact_ids(unknown)
            if ev.type == metadata_store_pb2.Event.OUTPUT
        ]
        _, more = describe(sorted({ev.execution_id for ev in outside}))
        for ev in outside:
            producer.setdefault(ev.artifact_id, more.get(ev.execution_id))
    upstream: dict[str, set] = defaultdict(set)
    for ev in inputs:
        source = producer.get(ev.artifact_id)
        target = node_of.get(ev.execution_id)
        if source and target and source != target:
            upstream[target].add(source)
    return pipeline or "", components, {k: sorted(v) for k, v in upstream.items()}


def _property(value):
    kind = value.WhichOneof("value")
    if kind == "struct_value":
        from google.protobuf import json_format

        return json_format.MessageToDict(value.struct_value)
    if kind == "proto_value":
        return None
    return getattr(value, kind) if kind else None


def _artifact(artifact) -> dict:
    properties = {k: _property(v) for k, v in artifact.custom_properties.items()}
    properties.update({k: _property(v) for k, v in artifact.properties.items()})
    return {"id": artifact.id, "uri": artifact.uri, "properties": properties}


def load_run(run_or_output_dir, pipeline_name: str | None = None) -> RunInfo:
    """Reads a run back: a :class:`pipelines.local_runner.LocalRun`, or a run output directory.

    Args:
      run_or_output_dir: the ``LocalRun`` that ``run_local`` returned, or the ``--output``
        directory of a ``tfxopt run`` (its newest run is read).
      pipeline_name: which pipeline of the store (default: the most recently run one).
    Raises:
      ConfigError: the directory holds no metadata store.
      LookupError: the store holds no run of that pipeline.
    """
    from pipelines import metadata

    if isinstance(run_or_output_dir, str | os.PathLike):
        output_dir = os.path.abspath(os.fspath(run_or_output_dir))
        connection, metadata_path = _connection(output_dir)
        names = pipeline_names(connection)
        if pipeline_name is None:
            if not names:
                raise LookupError(f"the metadata store {metadata_path} holds no pipeline run")
            pipeline_name = names[0]
        elif pipeline_name not in names:
            raise LookupError(
                f"no pipeline {pipeline_name!r} in {metadata_path} (pipelines: {names})"
            )
        run_id, raw_steps = metadata.latest_run(connection, pipeline_name)
    else:
        run = run_or_output_dir
        output_dir, metadata_path = run.output_dir, run.metadata_path
        run_id, raw_steps = run.run_id, run.steps
        # A LocalRun on a MySQL store carries its connection; a SQLite one has the file.
        connection = getattr(run, "metadata_connection", None) or sqlite_readonly(metadata_path)
    name, components, upstream = _run_graph(connection, run_id)
    steps = [
        Step(
            node_id=s.node_id,
            state=s.state,
            duration_s=float(s.duration_s),
            component=components.get(s.node_id, ""),
            upstream=upstream.get(s.node_id, []),
            outputs={k: [_artifact(a) for a in v] for k, v in s.outputs.items()},
        )
        for s in raw_steps
    ]
    return RunInfo(output_dir, metadata_path, pipeline_name or name, run_id, steps)


# --------------------------------------------------------------------------- the numbers


def _read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _first_record(run: RunInfo, key: str, filename: str) -> tuple[dict | None, str | None]:
    for step in run.steps:
        for artifact in step.outputs.get(key, []):
            record = _read_json(os.path.join(artifact["uri"], filename))
            if record is not None:
                return record, step.node_id
    return None, None


def finite(value) -> bool:
    """True for an int or float (not bool) that is neither NaN nor infinite."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _num(value):
    return value if finite(value) else None


def get_path(record, *path):
    """``record[path[0]][path[1]]...``, or None where a level is missing or not a dict."""
    for key in path:
        if not isinstance(record, dict):
            return None
        record = record.get(key)
    return record


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """Names of the points no other point beats: smaller-or-equal x and larger-or-equal y, one of
    them strictly (x is a cost such as size or latency, y is accuracy). Sorted by x."""
    usable = {n: p for n, p in points.items() if finite(p[0]) and finite(p[1])}
    front = []
    for name, (x, y) in usable.items():
        dominated = any(
            ox <= x and oy >= y and (ox < x or oy > y)
            for other, (ox, oy) in usable.items()
            if other != name
        )
        if not dominated:
            front.append(name)
    return sorted(front, key=lambda n: (usable[n][0], -usable[n][1]))


def _oriented(model: dict, task: dict):
    """The model's metric, negated when lower is better, so the Pareto front keeps 'higher'."""
    value = get_path(model, "metrics", "score")
    if not finite(value):
        return None
    return value if task["higher_is_better"] else -value


def _per_layer(profile: dict | None) -> dict | None:
    """Per-layer parameters (all and nonzero) and FLOPs of a profile (keras side)."""
    per_layer = get_path(profile, "compute", "per_layer")
    tensors = get_path(profile, "parameters", "per_tensor") or []
    if not per_layer:
        return None
    nonzero: dict[str, int] = defaultdict(int)
    for tensor in tensors:
        if tensor.get("layer") is not None:
            nonzero[tensor["layer"]] += int(tensor.get("nonzero", 0))
    layers = [
        {
            "layer": entry["layer"],
            "type": entry.get("type"),
            "parameters": int(entry.get("parameters", 0)),
            "nonzero_parameters": int(nonzero.get(entry["layer"], entry.get("parameters", 0))),
            "flops": int(entry.get("flops", 0)),
        }
        for entry in per_layer
        if entry.get("parameters") or entry.get("flops")
    ]
    totals = {k: sum(e[k] for e in layers) for k in ("parameters", "nonzero_parameters", "flops")}
    for entry in layers:
        for key in ("parameters", "nonzero_parameters", "flops"):
            entry[f"{key}_share"] = entry[key] / totals[key] if totals[key] else 0.0
    return {"layers": layers, "totals": totals}


def _memory(profile: dict | None) -> dict | None:
    memory = get_path(profile, "memory") or {}
    out = {}
    for kind in ("tflite", "saved_model"):
        entry = memory.get(kind) or {}
        if "peak_rss_bytes" in entry:
            out[f"{kind}_peak_rss_bytes"] = entry["peak_rss_bytes"]
            out[f"{kind}_model_peak_rss_bytes"] = entry.get("model_peak_rss_bytes")
    return out or None


def _latency_stats(stats: dict | None, source: str | None = None) -> dict | None:
    if not stats:
        return None
    out = {k: stats.get(k) for k in ("mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "runs")}
    out["source"] = source or stats.get("source")
    return out


def _profile_entry(profile: dict | None) -> dict:
    """The figures every model row shows that come from its Profiler."""
    if not profile:
        return {}
    kernels = get_path(profile, "parameters", "kernels") or {}
    weight_dtypes = sorted(get_path(profile, "tflite_weights", "summary", "bytes_per_dtype") or {})
    return {
        "saved_model_bytes": get_path(profile, "sizes", "saved_model_bytes"),
        "saved_model_gzip_bytes": get_path(profile, "sizes", "saved_model_gzip_bytes"),
        "tflite_bytes": get_path(profile, "sizes", "tflite_bytes"),
        "tflite_gzip_bytes": get_path(profile, "sizes", "tflite_gzip_bytes"),
        "total_parameters": get_path(profile, "parameters", "total_parameters"),
        "nonzero_parameters": get_path(profile, "parameters", "nonzero_parameters"),
        "kernel_sparsity": kernels.get("sparsity"),
        "max_unique_values_per_kernel": kernels.get("max_unique_values"),
        "flops_per_example": get_path(profile, "compute", "flops_per_example"),
        "tflite_weight_dtypes": weight_dtypes,
        "tflite_io_dtype": get_path(profile, "tflite_io", "input_dtype"),
        "profile_latency_ms": _latency_stats(
            get_path(profile, "latency", "tflite_batch1"), "Profiler, sequential"
        ),
        "throughput_examples_per_s": get_path(
            profile, "latency", "throughput", "tflite_examples_per_s"
        ),
        "peak_memory": _memory(profile),
        "profile_accuracy": _profile_metric(profile),
    }


def _profile_metric(profile: dict | None):
    """The task's metric of a profile's TFLite flavour (top-1 accuracy in older records)."""
    acc = get_path(profile, "accuracy") or {}
    return acc.get("tflite", acc.get("tflite_top1"))


def task_summary(evaluation: dict | None, profiles: dict) -> dict:
    """The task and how its metric reads: ``{"kind", "metric", "label", "percent",
    "higher_is_better", "value_key"}`` (``value_key``: the metric the models' rows hold)."""
    from components.common import metrics

    task = (evaluation or {}).get("task")
    kind = task.get("kind") if task else None
    if kind is None:
        profile = next((p for _, p in profiles.values() if get_path(p, "accuracy")), None)
        kind = get_path(profile, "accuracy", "task") or "multiclass"
    metric = metrics.PRIMARY_METRIC[kind]
    if kind == "regression" and evaluation is not None:
        metric = get_path(evaluation, "config", "regression_metric") or metric
    return {
        "kind": kind,
        "metric": metric,
        "label": metrics.metric_label(metric),
        "percent": metrics.is_accuracy(metric),
        "higher_is_better": kind != "regression",
        "value_key": "error" if kind == "regression" else metric,
    }


def _lineage(run: RunInfo, node_id: str | None) -> list[str]:
    """The node ids upstream of ``node_id`` (inclusive), nearest first."""
    by_id = {s.node_id: s for s in run.steps}
    order, queue, seen = [], [node_id], set()
    while queue:
        current = queue.pop(0)
        if current is None or current in seen or current not in by_id:
            continue
        seen.add(current)
        order.append(current)
        queue.extend(by_id[current].upstream)
    return order


def _optimisations(run: RunInfo, producer: str | None) -> dict:
    """What the chain that made a candidate did: its stages, clusters, target sparsity, mode."""
    by_id = {s.node_id: s for s in run.steps}
    stages, out = [], {}
    for node in reversed(_lineage(run, producer)):
        step = by_id[node]
        props = {}
        for artifacts in step.outputs.values():
            for artifact in artifacts:
                props.update(artifact["properties"])
        component = step.component
        if component in ("Distiller", "Pruner", "Clusterer", "Quantizer"):
            stages.append(node)
        if component == "Clusterer" and props.get("number_of_clusters") is not None:
            out["clusters"] = props["number_of_clusters"]
        if component == "Pruner" and props.get("target_sparsity") is not None:
            out["target_sparsity"] = props["target_sparsity"]
        if component == "Quantizer" and props.get("mode") is not None:
            out["quantization_mode"] = props["mode"]
    out["stages"] = stages
    return out


def _producers(run: RunInfo) -> dict[str, str]:
    """artifact URI -> the node that wrote it (first writer wins: the Evaluator re-exports)."""
    out: dict[str, str] = {}
    for step in run.steps:
        for artifacts in step.outputs.values():
            for artifact in artifacts:
                out.setdefault(os.path.normpath(artifact["uri"]), step.node_id)
    return out


def _threshold_lines(rules: dict, baseline_metrics: dict) -> dict:
    """The gate's thresholds as lines on the plots' axes (accuracy fraction, size, latency)."""
    base_acc = baseline_metrics.get("score")
    base_size = baseline_metrics.get("size_bytes")
    base_latency = baseline_metrics.get("latency_ms")
    suffix = (
        " (upper CI)" if rules.get("accuracy_drop_bound", "point") == "upper_confidence" else ""
    )
    measure = rules.get("size_measure", "gzip")
    stat = rules.get("latency_statistic", "p95")
    no_baseline = 1.0  # for rules whose line does not depend on the baseline
    # (rule, axis, the baseline figure it needs, where its line is, its label), in drawing order
    specs = (
        ("max_accuracy_drop_points", "accuracy", base_acc,
         lambda t: base_acc - t / 100, lambda t: f"max drop {t:g} pt{suffix}"),
        ("max_relative_accuracy_drop", "accuracy", base_acc,
         lambda t: base_acc * (1 - t), lambda t: f"max relative drop {100 * t:g}%{suffix}"),
        ("min_accuracy", "accuracy", no_baseline,
         lambda t: t, lambda t: f"min accuracy {100 * t:g}%"),
        ("max_size_bytes", "size_bytes", no_baseline,
         lambda t: t, lambda t: f"max size ({measure})"),
        ("min_compression_ratio", "size_bytes", base_size,
         lambda t: base_size / t, lambda t: f"min compression {t:g}x"),
        ("max_latency_ms", "latency_ms", no_baseline,
         lambda t: t, lambda t: f"max {stat} {t:g} ms"),
        ("min_speedup", "latency_ms", base_latency,
         lambda t: base_latency / t, lambda t: f"min speed-up {t:g}x"),
    )  # fmt: skip
    lines: dict[str, list] = {"accuracy": [], "size_bytes": [], "latency_ms": []}
    for rule, axis, base, value, label in specs:
        threshold = rules.get(rule)
        if finite(threshold) and finite(base):
            lines[axis].append({"rule": rule, "value": value(threshold), "label": label(threshold)})
    return lines


def build_summary(run: RunInfo) -> tuple[dict, dict]:
    """The report's numbers, and what only the plots need (latency samples, per-layer figures).

    Returns:
      ``(summary, extras)``: ``summary`` is what ``summary.json`` holds; ``extras`` maps model
      name -> ``{"latency_samples_ms": [...], "per_layer": {...}}``.
    """
    producers = _producers(run)
    profiles: dict[str, tuple[str, dict]] = {}  # model uri -> (profiler node, record)
    for step in run.steps:
        for artifact in step.outputs.get(PROFILE_KEY, []):
            record = _read_json(os.path.join(artifact["uri"], PROFILE_FILE))
            if record and record.get("model_uri"):
                profiles[os.path.normpath(record["model_uri"])] = (step.node_id, record)
    evaluation, evaluator_node = _first_record(run, EVALUATION_KEY, EVALUATION_FILE)
    push, _ = _first_record(run, PUSHED_MODEL_KEY, PUSH_FILE)
    task = task_summary(evaluation, profiles)
    value_key = task["value_key"]

    steps = [
        {
            "node_id": s.node_id,
            "component": s.component,
            "state": s.state,
            "duration_s": round(s.duration_s, 3),
            "upstream": s.upstream,
        }
        for s in run.steps
    ]
    summary: dict = {
        "format": SUMMARY_FORMAT,
        "pipeline_name": run.pipeline_name,
        "run_id": run.run_id,
        "output_dir": run.output_dir,
        "generated_at": datetime.datetime.now().isoformat(timespec="seconds"),
        "steps": steps,
        "total_step_time_s": round(sum(s.duration_s for s in run.steps), 3),
        "failed_steps": [s.node_id for s in run.steps if s.state == "FAILED"],
        "task": task,
    }
    extras: dict = {}

    def add_extras(name, profile):
        extras[name] = {
            "latency_samples_ms": get_path(profile, "latency", "tflite_batch1", "samples_ms") or [],
            "per_layer": _per_layer(profile),
        }

    models: list[dict] = []
    if evaluation is not None:
        rules_config = get_path(evaluation, "config", "rules") or {}
        base = evaluation["baseline"]
        base_uri = os.path.normpath(base.get("uri", ""))
        base_profile_node, base_profile = profiles.get(base_uri, (None, None))
        first_metrics = next((c.get("metrics") or {} for c in evaluation["candidates"]), {})
        baseline_metrics = {
            "score": get_path(base, "accuracy", task["metric"]),
            "size_bytes": first_metrics.get("baseline_size_bytes"),
            "latency_ms": first_metrics.get("baseline_latency_ms"),
        }
        if baseline_metrics["size_bytes"] is None:
            size = base.get("size") or {}
            key = "gzip_bytes" if rules_config.get("size_measure", "gzip") == "gzip" else "raw"
            baseline_metrics["size_bytes"] = size.get(key if key == "gzip_bytes" else "raw_bytes")
        models.append(
            {
                "name": BASELINE,
                "role": "baseline",
                "uri": base.get("uri"),
                "producer": producers.get(base_uri),
                "profiler": base_profile_node,
                "flavour": base.get("flavour"),
                "size": base.get("size"),
                "accuracy": baseline_metrics["score"],
                "metrics": baseline_metrics,
                "latency_ms": _latency_stats(
                    base.get("latency_measured"), "Evaluator, interleaved"
                ),
                **_profile_entry(base_profile),
            }
        )
        add_extras(BASELINE, base_profile)
        decision = evaluation["decision"]
        for cand in evaluation["candidates"]:
            uri = os.path.normpath(cand.get("uri", ""))
            profiler_node, profile = profiles.get(uri, (None, None))
            producer = producers.get(uri)
            metrics = cand.get("metrics") or {}
            rules = cand.get("rules") or []
            requirements = cand.get("requirements") or []
            interval = get_path(cand, "comparison", "interval", "drop_points")
            models.append(
                {
                    "name": cand["name"],
                    "role": "candidate",
                    "uri": cand.get("uri"),
                    "producer": producer,
                    "profiler": profiler_node,
                    "flavour": cand.get("flavour"),
                    "size": cand.get("size"),
                    "accuracy": metrics.get(value_key),
                    "accuracy_drop_points": metrics.get("accuracy_drop_points"),
                    "accuracy_drop_interval_points": interval,
                    "metrics": {
                        **{k: _num(v) for k, v in metrics.items()},
                        "score": _num(metrics.get(value_key)),
                    },
                    "latency_ms": _latency_stats(cand.get("latency_used")),
                    "speedup": metrics.get("speedup"),
                    "compression_ratio": metrics.get("compression_ratio"),
                    "rules": rules,
                    "requirements": requirements,
                    "passed_all": bool(rules or requirements)
                    and all(r.get("passed") is not False for r in rules)
                    and all(r.get("passed") for r in requirements),
                    "eligible": cand.get("eligible"),
                    "selected": decision.get("selected") == cand["name"],
                    "rejected_because": cand.get("rejected_because") or [],
                    "failure": _failure(cand.get("failure")),
                    "warnings": cand.get("warnings") or [],
                    **_optimisations(run, producer),
                    **_profile_entry(profile),
                }
            )
            add_extras(cand["name"], profile)
        summary["gate"] = {
            "evaluator": evaluator_node,
            "blessed": bool(decision.get("blessed")),
            "selected": decision.get("selected"),
            "objective": decision.get("objective"),
            "ranking": decision.get("ranking") or [],
            "reason": decision.get("reason"),
            "rules": {k: v for k, v in rules_config.items() if v is not None},
            "rules_configured": evaluation.get("rules_configured") or [],
            "eval_examples": get_path(evaluation, "eval", "examples"),
            "warnings": evaluation.get("warnings") or [],
            "thresholds": _threshold_lines(rules_config, baseline_metrics),
        }
    else:
        # No gate: every profiled model is a row; the baseline is the BaselineProfiler's model.
        for uri, (node, profile) in profiles.items():
            is_base = node == "BaselineProfiler"
            name = BASELINE if is_base else node.removeprefix("Profiler_")
            producer = producers.get(uri)
            lat = _latency_stats(get_path(profile, "latency", "tflite_batch1"), "Profiler")
            sizes = profile.get("sizes") or {}
            models.append(
                {
                    "name": name,
                    "role": "baseline" if is_base else "candidate",
                    "uri": uri,
                    "producer": producer,
                    "profiler": node,
                    "flavour": "tflite",
                    "size": {
                        "raw_bytes": sizes.get("tflite_bytes"),
                        "gzip_bytes": sizes.get("tflite_gzip_bytes"),
                    },
                    "accuracy": _profile_metric(profile),
                    "metrics": {
                        "score": _profile_metric(profile),
                        "size_bytes": sizes.get("tflite_gzip_bytes"),
                        "latency_ms": (lat or {}).get("p95_ms"),
                    },
                    "latency_ms": lat,
                    **({} if is_base else _optimisations(run, producer)),
                    **_profile_entry(profile),
                }
            )
            add_extras(name, profile)
        models.sort(key=lambda m: m["role"] != "baseline")

    summary["models"] = models
    base_row = next((m for m in models if m["role"] == "baseline"), None)
    if base_row is not None:
        for m in models:
            if m["role"] == "candidate" and "accuracy_drop_points" not in m and task["percent"]:
                if finite(m.get("accuracy")) and finite(base_row.get("accuracy")):
                    m["accuracy_drop_points"] = 100 * (base_row["accuracy"] - m["accuracy"])
    summary["pareto"] = {
        axis: pareto_front(
            {m["name"]: (get_path(m, "metrics", axis), _oriented(m, task)) for m in models}
        )
        for axis in ("size_bytes", "latency_ms")
    }
    summary["chosen"] = _chosen(summary)
    summary["layer_coverage"] = report_layers.layer_coverage(run)
    if push is not None:
        summary["push"] = _push_summary(push)
    return summary, extras


def _failure(failure: dict | None) -> dict | None:
    """What the report says of a candidate whose own step failed: step, where, summary, reason."""
    if not failure:
        return None
    keys = ("step", "component", "summary", "reason", "error_type")
    return {k: failure.get(k) for k in keys if failure.get(k) is not None}


def _chosen(summary: dict) -> str | None:
    """The candidate the per-layer plot shows: the blessed one, else the best-ranked one."""
    gate = summary.get("gate") or {}
    if gate.get("selected"):
        return gate["selected"]
    if gate.get("ranking"):
        return gate["ranking"][0]
    candidates = [m["name"] for m in summary["models"] if m["role"] == "candidate"]
    return candidates[0] if candidates else None


def _push_summary(push: dict) -> dict:
    return {
        "pushed": bool(push.get("pushed")),
        "reason": push.get("reason") or push.get("not_pushed_reason"),
        "model_name": push.get("model_name"),
        "candidate": get_path(push, "metrics", "candidate"),
        "serving": [
            {
                "path": d.get("path"),
                "version": d.get("version"),
                "created": d.get("created"),
                "labels": d.get("labels") or {},
                "removed_versions": d.get("removed_versions") or [],
            }
            for d in push.get("serving") or []
        ],
        "ota": [
            {
                "channel": d.get("channel"),
                "manifest_path": d.get("manifest_path"),
                "model_version": d.get("model_version"),
                "manifest_sequence": d.get("sequence"),
                "created": d.get("created"),
                "key_id": d.get("key_id"),
            }
            for d in push.get("ota") or []
        ],
    }


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def write_report(
    run_or_output_dir,
    pipeline_name: str | None = None,
    out: str | None = None,
) -> tuple[str, str]:
    """Writes ``report.html`` and ``summary.json`` for a run.

    Args:
      run_or_output_dir: a :class:`pipelines.local_runner.LocalRun`, or a run's output directory.
      pipeline_name: which pipeline of the metadata store (default: the most recently run).
      out: the HTML file to write (default: ``<output dir>/report.html``); ``summary.json`` is
        written beside it.
    Returns:
      ``(html_path, summary_json_path)``.
    """
    run = load_run(run_or_output_dir, pipeline_name)
    summary, extras = build_summary(run)
    from pipelines.report_html import render_html
    from pipelines.report_plots import make_plots

    plots = make_plots(summary, extras)
    summary["plots"] = sorted(plots)
    html_path = os.path.abspath(out or os.path.join(run.output_dir, REPORT_FILE))
    summary_path = os.path.join(os.path.dirname(html_path), SUMMARY_FILE)
    os.makedirs(os.path.dirname(html_path), exist_ok=True)
    page = render_html(summary, plots)
    # Write-then-rename: a browser or a CI step never reads half a report.
    for path, text in (
        (summary_path, json.dumps(summary, indent=1, sort_keys=True, default=_json_default)),
        (html_path, page),
    ):
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    return html_path, summary_path
