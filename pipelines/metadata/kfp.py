"""Reading a Kubeflow Pipelines run back from KFP's ML Metadata, for ``tfxopt report --kubeflow``.

The KFP v2 backend records every run in its own ML Metadata store (``backend/src/v2/metadata`` of
kubeflow/pipelines), with its own schema rather than TFX's:

- the run is a ``system.PipelineRun`` context named by the run id, child of a ``system.Pipeline``
  context named by the pipeline; its ``pipeline_root`` custom property is where its artifacts are
  (``<pipeline root>/<pipeline name>/<run id>``);
- each task is a ``system.ContainerExecution`` (``system.ImporterExecution`` for importers) in that
  context, its node id in the ``task_name`` custom property, its state in ``last_known_state``;
- output artifacts hang off ``OUTPUT`` events whose path key is the output's name, with the
  executor's metadata (our custom properties) as the artifact's custom properties.

:func:`load_kfp_run` turns that into the :class:`~pipelines.metadata.reader.RunInfo` the report
builder reads, so a Kubeflow run gets the same ``report.html`` and ``summary.json`` as a local one.
The records inside artifacts are read from the files; with ``local_root`` a copy of the run's
pipeline root on this machine (``gsutil -m rsync -r gs://.../<pipeline>/<run id> DIR``) stands
in for the recorded one.
"""

from __future__ import annotations

import os
import re

from components.common.errors import ConfigError
from pipelines.metadata.reader import RunInfo, Step

PIPELINE_CONTEXT = "system.Pipeline"
RUN_CONTEXT = "system.PipelineRun"
STEP_EXECUTIONS = ("system.ContainerExecution", "system.ImporterExecution")
TASK_NAME = "task_name"
PIPELINE_ROOT = "pipeline_root"

# KFP does not record a step's component class; our node ids name it (pipelines/pipeline.py).
_COMPONENT_OF_NODE = (
    (re.compile(r"^(Baseline)?Profiler(_|$)"), "Profiler"),
    (re.compile(r"^(Structured)?Pruner(_|$)"), "Pruner"),
    (re.compile(r"^Clusterer(_|$)"), "Clusterer"),
    (re.compile(r"^Quantizer(_|$)"), "Quantizer"),
    (re.compile(r"^Distiller(_|$)"), "Distiller"),
    (re.compile(r"^ModelImporter$"), "ModelImporter"),
    (re.compile(r"^CheckpointImporter$"), "Importer"),
    (re.compile(r"^ExampleGen$"), "FileBasedExampleGen"),
    (re.compile(r"^Evaluator$"), "Evaluator"),
    (re.compile(r"^LatencyBenchmark(_|$)"), "LatencyBenchmark"),
    (re.compile(r"^Pusher$"), "Pusher"),
)


def component_of(node_id: str) -> str:
    """The component class a node id of our pipeline names ('' when it names none)."""
    for pattern, component in _COMPONENT_OF_NODE:
        if pattern.match(node_id):
            return component
    return ""


def connection_config(metadata: str):
    """An ML Metadata connection: ``grpc://HOST:PORT`` (KFP's ``metadata-grpc-service``, e.g.
    after ``kubectl port-forward svc/metadata-grpc-service 8081:8080``) or a SQLite file.

    Raises:
      ConfigError: neither form, or the file is missing.
    """
    from ml_metadata.proto import metadata_store_pb2

    match = re.fullmatch(r"grpc://([^:/]+):(\d+)/?", metadata)
    if match:
        config = metadata_store_pb2.MetadataStoreClientConfig()
        config.host, config.port = match.group(1), int(match.group(2))
        return config
    if "://" in metadata:
        raise ConfigError(
            f"--metadata {metadata!r}: give grpc://HOST:PORT (KFP's metadata-grpc-service) or a "
            "SQLite file."
        )
    from pipelines.metadata.reader import sqlite_readonly

    return sqlite_readonly(metadata)


def _string(properties, key: str) -> str:
    value = properties.get(key)
    return value.string_value if value is not None else ""


def load_kfp_run(
    metadata: str, run_id: str, local_root: str | None = None, output_dir: str | None = None
) -> RunInfo:
    """The KFP run ``run_id`` as a :class:`RunInfo` (its steps in execution order).

    Args:
      metadata: ``grpc://HOST:PORT`` or a SQLite file (see :func:`connection_config`).
      run_id: the KFP run id (``tfxopt submit`` prints it).
      local_root: a local copy of the run's pipeline root: artifact URIs under the recorded root
        are read from here instead.
      output_dir: what the report names as the run's output (default: the recorded root).
    Raises:
      ConfigError: the store holds no such run, or cannot be opened.
    """
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    try:
        store = metadata_store.MetadataStore(connection_config(metadata))
        run = store.get_context_by_type_and_name(RUN_CONTEXT, run_id)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - MLMD raises its own status errors for every cause
        raise ConfigError(
            f"cannot read KFP's ML Metadata at {metadata} ({' '.join(str(e).split())[:300]})."
        ) from None
    if run is None:
        raise ConfigError(
            f"no Kubeflow run {run_id!r} in the ML Metadata at {metadata}: give the run id "
            "`tfxopt submit` printed (the KFP UI shows it under Run details)."
        )
    parents = store.get_parent_contexts_by_context(run.id)
    pipeline_name = next((c.name for c in parents), "")
    recorded_root = _string(run.custom_properties, PIPELINE_ROOT).rstrip("/")

    def local(uri: str) -> str:
        if local_root and recorded_root and uri.startswith(recorded_root):
            return os.path.join(local_root, uri[len(recorded_root) :].lstrip("/"))
        return uri

    type_names = {t.id: t.name for t in store.get_execution_types()}
    executions = [
        e
        for e in store.get_executions_by_context(run.id)
        if type_names.get(e.type_id) in STEP_EXECUTIONS
    ]
    executions.sort(key=lambda e: (e.create_time_since_epoch, e.id))
    node_of = {e.id: _string(e.custom_properties, TASK_NAME) or str(e.id) for e in executions}
    events = store.get_events_by_execution_ids(list(node_of))
    outputs = [ev for ev in events if ev.type == metadata_store_pb2.Event.OUTPUT]
    artifacts = {a.id: a for a in store.get_artifacts_by_id([ev.artifact_id for ev in outputs])}
    for artifact in artifacts.values():
        artifact.uri = local(artifact.uri)
        for value in artifact.custom_properties.values():
            # KFP records every JSON number as a double; counts read back as counts.
            if value.WhichOneof("value") == "double_value" and value.double_value.is_integer():
                value.int_value = int(value.double_value)
    producer = {ev.artifact_id: node_of[ev.execution_id] for ev in outputs}
    upstream: dict[str, set] = {}
    for ev in events:
        if ev.type == metadata_store_pb2.Event.INPUT and ev.artifact_id in producer:
            source, target = producer[ev.artifact_id], node_of[ev.execution_id]
            if source != target:
                upstream.setdefault(target, set()).add(source)
    steps = []
    for execution in executions:
        node_id = node_of[execution.id]
        step_outputs: dict = {}
        for ev in outputs:
            if ev.execution_id == execution.id:
                key = ev.path.steps[0].key if ev.path.steps else "output"
                step_outputs.setdefault(key, []).append(artifacts[ev.artifact_id])
        duration = (
            execution.last_update_time_since_epoch - execution.create_time_since_epoch
        ) / 1e3
        state = metadata_store_pb2.Execution.State.Name(execution.last_known_state)
        steps.append(
            Step(
                node_id,
                state,
                duration,
                step_outputs,
                component_of(node_id),
                sorted(upstream.get(node_id, ())),
            )
        )
    return RunInfo(
        output_dir or local_root or recorded_root,
        metadata,
        pipeline_name,
        run_id,
        steps,
    )
