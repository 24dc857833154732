"""Reading a finished run back from ML Metadata: each step's state, duration and output artifacts."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class StepResult:
    """One node of one run, as ML Metadata recorded it."""

    node_id: str
    state: str
    duration_s: float
    outputs: dict = field(default_factory=dict)  # output key -> [mlmd Artifact protos]


def sqlite_connection_config(path: str):
    from tfx.orchestration import metadata

    return metadata.sqlite_metadata_connection_config(path)


def _state_name(execution) -> str:
    from ml_metadata.proto import metadata_store_pb2

    return metadata_store_pb2.Execution.State.Name(execution.last_known_state)


def latest_run(connection_config, pipeline_name: str) -> tuple[str, list[StepResult]]:
    """The newest ``pipeline_run`` of ``pipeline_name`` and its steps in execution order."""
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    store = metadata_store.MetadataStore(connection_config)
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
    ctx, executions = max(by_run.values(), key=lambda item: item[0].create_time_since_epoch)
    executions.sort(key=lambda e: (e.create_time_since_epoch, e.id))
    steps = []
    events = store.get_events_by_execution_ids([e.id for e in executions])
    artifact_ids = {ev.artifact_id for ev in events if ev.type == metadata_store_pb2.Event.OUTPUT}
    artifacts = {a.id: a for a in store.get_artifacts_by_id(list(artifact_ids))}
    for execution in executions:
        node_id = _node_id_from_contexts(store, execution.id, pipeline_name)
        outputs: dict = {}
        for ev in events:
            if ev.execution_id != execution.id or ev.type != metadata_store_pb2.Event.OUTPUT:
                continue
            key = ev.path.steps[0].key if ev.path.steps else "output"
            outputs.setdefault(key, []).append(artifacts[ev.artifact_id])
        duration = (
            execution.last_update_time_since_epoch - execution.create_time_since_epoch
        ) / 1e3
        steps.append(StepResult(node_id, _state_name(execution), duration, outputs))
    return ctx.name, steps


def _node_id_from_contexts(store, execution_id: int, pipeline_name: str) -> str:
    prefix = f"{pipeline_name}."
    for ctx in store.get_contexts_by_execution(execution_id):
        if ctx.name.startswith(prefix):
            return ctx.name[len(prefix) :]
    return "?"
