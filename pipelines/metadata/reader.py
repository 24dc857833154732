"""Reading a finished run back from ML Metadata: each step's state, duration, component, place in
the graph and output artifacts.

One reader for everything that looks at a run afterwards: the local runner (what it returns),
the text summary, the HTML report and the tests.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field

from pipelines.metadata import config as metadata_config


@dataclass
class Step:
    """One node of one run, as ML Metadata recorded it."""

    node_id: str
    state: str
    duration_s: float
    outputs: dict = field(default_factory=dict)  # output key -> [mlmd Artifact protos]
    component: str = ""  # the component class (execution type), e.g. "Quantizer"
    upstream: list[str] = field(default_factory=list)  # node ids whose outputs it read


@dataclass
class RunInfo:
    """A finished (or failed) run: where it wrote, which store recorded it, and its steps."""

    output_dir: str
    metadata_path: str
    pipeline_name: str
    run_id: str
    steps: list[Step]


def sqlite_connection_config(path: str):
    """A read-write ML Metadata connection to a SQLite file (TFX's own config)."""
    from tfx.orchestration import metadata

    return metadata.sqlite_metadata_connection_config(path)


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


def connection_for(output_dir: str):
    """(connection config, description) of the store a run in ``output_dir`` recorded into.

    ``metadata.sqlite`` in the directory when it is there; otherwise the MySQL server the
    ``TFXOPT_MLMD_MYSQL_*`` environment names (:mod:`pipelines.metadata.config`), when set.
    """
    path = os.path.join(output_dir, metadata_config.SQLITE_FILE)
    if not os.path.isfile(path) and metadata_config.mysql_settings() is not None:
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


def _state_name(execution) -> str:
    from ml_metadata.proto import metadata_store_pb2

    return metadata_store_pb2.Execution.State.Name(execution.last_known_state)


def _newest_run(store, pipeline_name: str, run_id: str | None = None):
    """(run context, its executions in execution order) of the run ``run_id`` of
    ``pipeline_name``, or of its newest run."""
    pipeline_ctx = store.get_context_by_type_and_name("pipeline", pipeline_name)
    if pipeline_ctx is None:
        raise LookupError(f"no pipeline {pipeline_name!r} in this metadata store")
    run_type = store.get_context_type("pipeline_run")
    by_run: dict = {}
    for execution in store.get_executions_by_context(pipeline_ctx.id):
        for ctx in store.get_contexts_by_execution(execution.id):
            if ctx.type_id == run_type.id:
                by_run.setdefault(ctx.id, (ctx, []))[1].append(execution)
    if not by_run:
        raise LookupError(f"pipeline {pipeline_name!r} has no runs in this metadata store")
    if run_id is not None:
        found = [item for item in by_run.values() if item[0].name == run_id]
        if not found:
            newest = sorted(by_run.values(), key=lambda item: -item[0].create_time_since_epoch)
            names = ", ".join(item[0].name for item in newest[:5])
            raise LookupError(
                f"pipeline {pipeline_name!r} has no run {run_id!r} in this metadata store "
                f"(its newest runs: {names})"
            )
        ctx, executions = found[0]
    else:
        ctx, executions = max(by_run.values(), key=lambda item: item[0].create_time_since_epoch)
    executions.sort(key=lambda e: (e.create_time_since_epoch, e.id))
    return ctx, executions


def latest_run(
    connection_config, pipeline_name: str, run_id: str | None = None
) -> tuple[str, list[Step]]:
    """The ``pipeline_run`` ``run_id`` (default: the newest) of ``pipeline_name`` and its steps
    in execution order.

    Raises:
      LookupError: the store holds no such pipeline, or no run of it.
    """
    from ml_metadata.proto import metadata_store_pb2

    store = _store(connection_config)
    ctx, executions = _newest_run(store, pipeline_name, run_id)
    events = store.get_events_by_execution_ids([e.id for e in executions])
    output_events = [ev for ev in events if ev.type == metadata_store_pb2.Event.OUTPUT]
    artifacts = {
        a.id: a for a in store.get_artifacts_by_id(list({ev.artifact_id for ev in output_events}))
    }
    node_of = _node_ids(store, [e.id for e in executions], pipeline_name)
    components, upstream = _graph(store, executions, events, node_of, pipeline_name)
    steps = []
    for execution in executions:
        node_id = node_of.get(execution.id, "?")
        outputs: dict = {}
        for ev in output_events:
            if ev.execution_id == execution.id:
                key = ev.path.steps[0].key if ev.path.steps else "output"
                outputs.setdefault(key, []).append(artifacts[ev.artifact_id])
        duration = (
            execution.last_update_time_since_epoch - execution.create_time_since_epoch
        ) / 1e3
        steps.append(
            Step(
                node_id,
                _state_name(execution),
                duration,
                outputs,
                components.get(node_id, ""),
                upstream.get(node_id, []),
            )
        )
    return ctx.name, steps


def _node_ids(store, execution_ids, pipeline_name: str) -> dict[int, str]:
    """Execution id -> node id, from the executions' ``node`` contexts."""
    node_type = store.get_context_type("node")
    prefix = f"{pipeline_name}."
    nodes = {}
    for execution_id in execution_ids:
        for ctx in store.get_contexts_by_execution(execution_id):
            if ctx.type_id == node_type.id and ctx.name.startswith(prefix):
                nodes[execution_id] = ctx.name[len(prefix) :]
    return nodes


def _graph(store, executions, events, node_of: dict, pipeline_name: str) -> tuple[dict, dict]:
    """(node id -> component type, node id -> upstream node ids) of one run's executions."""
    from ml_metadata.proto import metadata_store_pb2

    type_names = {t.id: t.name for t in store.get_execution_types()}
    components = {
        node_of[e.id]: type_names.get(e.type_id, "").rsplit(".", 1)[-1]
        for e in executions
        if e.id in node_of
    }
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
        more = _node_ids(store, sorted({ev.execution_id for ev in outside}), pipeline_name)
        for ev in outside:
            producer.setdefault(ev.artifact_id, more.get(ev.execution_id))
    upstream: dict[str, set] = defaultdict(set)
    for ev in inputs:
        source = producer.get(ev.artifact_id)
        target = node_of.get(ev.execution_id)
        if source and target and source != target:
            upstream[target].add(source)
    return components, {k: sorted(v) for k, v in upstream.items()}


def _property(value):
    kind = value.WhichOneof("value")
    if kind == "struct_value":
        from google.protobuf import json_format

        return json_format.MessageToDict(value.struct_value)
    if kind == "proto_value":
        return None
    return getattr(value, kind) if kind else None


def artifact_properties(artifact) -> dict:
    """An MLMD artifact's custom properties and properties as plain Python values."""
    properties = {k: _property(v) for k, v in artifact.custom_properties.items()}
    properties.update({k: _property(v) for k, v in artifact.properties.items()})
    return properties


def pipeline_of_run(connection_config, run_id: str) -> str | None:
    """The pipeline whose run is named ``run_id`` in a store (None: no such run)."""
    store = _store(connection_config)
    ctx = store.get_context_by_type_and_name("pipeline_run", run_id)
    if ctx is None:
        return None
    pipeline_type = store.get_context_type("pipeline")
    for execution in store.get_executions_by_context(ctx.id)[:1]:
        for owner in store.get_contexts_by_execution(execution.id):
            if owner.type_id == pipeline_type.id:
                return owner.name
    return None


def load_run(
    run_or_output_dir, pipeline_name: str | None = None, run_id: str | None = None
) -> RunInfo:
    """Reads a run back: a :class:`pipelines.local.runner.LocalRun`, or a run output directory.

    Args:
      run_or_output_dir: the ``LocalRun`` that ``run_local`` returned, or the ``--output``
        directory of a ``tfxopt run`` (its newest run is read, or ``run_id``).
      pipeline_name: which pipeline of the store (default: ``run_id``'s, else the most recently
        run one).
      run_id: which run (the ``pipeline_run`` name, e.g. ``2026-12-07T14:00:48.019953``;
        default: the newest).
    Raises:
      ConfigError: the directory holds no metadata store.
      LookupError: the store holds no run of that pipeline.
    """
    if not isinstance(run_or_output_dir, str | os.PathLike):
        run = run_or_output_dir  # a LocalRun: its steps were read when it finished
        name = pipeline_name or run.pipeline_name
        return RunInfo(run.output_dir, run.metadata_path, name, run.run_id, run.steps)
    output_dir = os.path.abspath(os.fspath(run_or_output_dir))
    connection, metadata_path = connection_for(output_dir)
    names = pipeline_names(connection)
    if pipeline_name is None and run_id is not None:
        pipeline_name = pipeline_of_run(connection, run_id)
        if pipeline_name is None:
            raise LookupError(f"no run {run_id!r} in {metadata_path}")
    if pipeline_name is None:
        if not names:
            raise LookupError(f"the metadata store {metadata_path} holds no pipeline run")
        pipeline_name = names[0]
    elif pipeline_name not in names:
        raise LookupError(f"no pipeline {pipeline_name!r} in {metadata_path} (pipelines: {names})")
    run_id, steps = latest_run(connection, pipeline_name, run_id)
    return RunInfo(output_dir, metadata_path, pipeline_name, run_id, steps)
