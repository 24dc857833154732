"""Runs the pipeline on one machine: LocalDagRunner, Beam DirectRunner, ML Metadata on SQLite
(or on a MySQL server when ``TFXOPT_MLMD_MYSQL_HOST`` is set: see pipelines/metadata/config.py)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from components.common.errors import StepFailed
from pipelines.config import PipelineConfig, resolve_paths
from pipelines.local import preflight
from pipelines.metadata import config as metadata_config
from pipelines.metadata import reader

PIPELINE_ROOT_DIR = "pipeline-root"
METADATA_FILE = metadata_config.SQLITE_FILE
ERROR_LOG = "tfxopt-error.log"


def _step_failed(error: BaseException, steps: list[str], output_dir: str) -> StepFailed:
    """The failure as one line for the user; its traceback written to ``ERROR_LOG``."""
    import traceback

    log_path = os.path.join(output_dir, ERROR_LOG)
    with open(log_path, "w") as f:
        f.write(f"step: {', '.join(steps) or 'pipeline'}\n")
        traceback.print_exception(type(error), error, error.__traceback__, file=f)
    return StepFailed(steps, error, log_path)


@dataclass
class LocalRun:
    """Where a local run wrote its results, and what ML Metadata says about it."""

    output_dir: str
    pipeline_root: str
    metadata_path: str  # the SQLite file, or mysql://user@host:port/database
    run_id: str
    steps: list[reader.Step]
    # The ML Metadata ConnectionConfig the run recorded into (SQLite or MySQL), to read it back.
    metadata_connection: object = None
    pipeline_name: str = ""

    def outputs_of(self, node_id: str, key: str) -> list:
        for step in self.steps:
            if step.node_id == node_id:
                return step.outputs.get(key, [])
        return []


def _failed_steps(connection, pipeline_name: str) -> list[str]:
    try:
        _, steps = reader.latest_run(connection, pipeline_name)
    except LookupError:  # failed before ML Metadata recorded any step
        return []
    return [s.node_id for s in steps if s.state == "FAILED"]


def run_local(
    config: PipelineConfig, model_uri: str, examples_uri: str, output_dir: str
) -> LocalRun:
    """Checks the inputs, runs the pipeline to completion and reads the run back from MLMD.

    Raises:
      TfxOptError: a bad input, before anything runs.
      StepFailed: a step failed while running (its cause chained).
    """
    from tfx.orchestration.local.local_dag_runner import LocalDagRunner

    from pipelines.pipeline import create_pipeline

    model_uri = os.path.abspath(model_uri)
    examples_uri = os.path.abspath(examples_uri)
    output_dir = preflight.check_output_dir(output_dir)
    store = metadata_config.metadata_store(output_dir)
    config = resolve_paths(config, output_dir)
    task = preflight.check_inputs(config, model_uri, examples_uri)
    if task is not None:
        print(f"tfxopt: task: {task.describe()}", flush=True)
    metadata_config.check_connection(store)

    pipeline_root = os.path.join(output_dir, PIPELINE_ROOT_DIR)
    metadata_path = store.location
    connection = store.connection_config
    pipeline = create_pipeline(
        config,
        model_uri=model_uri,
        examples_uri=examples_uri,
        pipeline_root=pipeline_root,
        metadata_connection_config=connection,
    )
    from pipelines.local import progress

    with progress.report_progress(total=len(pipeline.components)) as handler:
        try:
            LocalDagRunner().run(pipeline)
        except Exception as e:  # noqa: BLE001 - any executor's failure: named, traceback logged
            steps = _failed_steps(connection, config.pipeline_name)
            if not steps and handler.state.current is not None:
                steps = [handler.state.current.node_id]
            raise _step_failed(e, steps, output_dir) from e
    run_id, steps = reader.latest_run(connection, config.pipeline_name)
    return LocalRun(
        output_dir, pipeline_root, metadata_path, run_id, steps, connection, config.pipeline_name
    )
