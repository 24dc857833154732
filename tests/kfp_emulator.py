"""Runs a compiled KFP v2 package step by step on a local pipeline root, the way the KFP backend would.

What the KFP backend does for each task, and what this emulator does in its place:

- **Driver** (resolves inputs, provisions outputs): input parameters from ``runtimeValue.constant``,
  ``componentInputParameter`` (the run's parameters and their defaults) and ``taskOutputParameter``;
  input artifacts from ``taskOutputArtifact`` (the producer's ``ExecutorOutput`` artifacts, with their
  metadata, as ML Metadata hands them back); output artifacts at ``<root>/<run_id>/<task>/<key>``.
- **Importer** nodes are not containers: the backend registers an artifact at the (resolved) URI. The
  emulator creates that artifact.
- **Launcher**: runs the executor's ``command + args`` with the ``{{$}}`` placeholder replaced by the
  JSON ``ExecutorInput``, in a subprocess with a clean environment (only ``PATH``, ``HOME``,
  ``TF_USE_LEGACY_KERAS=1`` as the image sets, plus the container's own ``env``), then reads the
  ``ExecutorOutput`` the step wrote to ``outputs.outputFile``.
- ``lifecycle.preCacheCheck`` (TFX's ExampleGen driver) is run only by Vertex AI; the open-source
  backend ignores it, and so does the emulator unless ``run_pre_cache_check=True``.

- **ML Metadata** (with ``metadata_path``): what the backend records, in its schema
  (``backend/src/v2/metadata/client.go``): a ``system.Pipeline`` context, the run as a
  ``system.PipelineRun`` context (its child) named by the run id with a ``pipeline_root`` property,
  each task a ``system.ContainerExecution`` / ``system.ImporterExecution`` with ``task_name``, its
  inputs and outputs as INPUT/OUTPUT events keyed by name, the executor's metadata as the artifacts'
  custom properties. ``tfxopt report --kubeflow`` reads it back.

Independent tasks run concurrently (``max_parallel``), as on the cluster.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

_PLACEHOLDER = "{{$}}"


class StepFailed(RuntimeError):
    """A step exited non-zero or wrote no executor output."""


@dataclass
class TaskResult:
    """What one task produced."""

    task: str
    kind: str  # "container" or "importer"
    artifacts: dict[str, list[dict]] = field(default_factory=dict)
    parameters: dict = field(default_factory=dict)
    executor_input: dict | None = None
    seconds: float = 0.0


def _topological(tasks: dict) -> list[str]:
    order, done = [], set()
    deps = {name: _dependencies(task) for name, task in tasks.items()}
    while len(order) < len(tasks):
        ready = sorted(n for n in tasks if n not in done and deps[n] <= done)
        if not ready:
            raise ValueError(f"cycle among tasks {sorted(set(tasks) - done)}")
        order.extend(ready)
        done.update(ready)
    return order


def _dependencies(task: dict) -> set[str]:
    deps = set(task.get("dependentTasks", []))
    for spec in task.get("inputs", {}).get("artifacts", {}).values():
        if "taskOutputArtifact" in spec:
            deps.add(spec["taskOutputArtifact"]["producerTask"])
    for spec in task.get("inputs", {}).get("parameters", {}).values():
        if "taskOutputParameter" in spec:
            deps.add(spec["taskOutputParameter"]["producerTask"])
    return deps


class KfpEmulator:
    """Runs the tasks of one compiled PipelineSpec dict against a local pipeline root."""

    def __init__(
        self,
        pipeline_spec: dict,
        pipeline_root: str,
        parameters: dict,
        *,
        run_id: str = "run-1",
        cwd: str | None = None,
        max_parallel: int = 2,
        run_pre_cache_check: bool = False,
        timeout_s: float = 600,
        metadata_path: str | None = None,
    ):
        self.spec = pipeline_spec
        self.metadata_path = metadata_path
        self._artifact_ids: dict[tuple[str, str], list[int]] = {}
        self.root = pipeline_root
        self.run_id = run_id
        self.cwd = cwd
        self.max_parallel = max_parallel
        self.run_pre_cache_check = run_pre_cache_check
        self.timeout_s = timeout_s
        self.results: dict[str, TaskResult] = {}
        self.logs: dict[str, str] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        root_inputs = pipeline_spec["root"].get("inputDefinitions", {}).get("parameters", {})
        unknown = set(parameters) - set(root_inputs)
        if unknown:
            raise ValueError(f"unknown run parameters {sorted(unknown)}")
        self.parameters = {
            name: parameters[name] if name in parameters else body.get("defaultValue")
            for name, body in root_inputs.items()
        }
        missing = [n for n, v in self.parameters.items() if v is None]
        if missing:
            raise ValueError(f"run parameters {missing} have no value and no default")

    # -- the driver's part ------------------------------------------------------------------
    def _artifact_name(self) -> str:
        with self._lock:
            return f"artifacts/{next(self._ids)}"

    def _component(self, task: dict) -> dict:
        return self.spec["components"][task["componentRef"]["name"]]

    def _resolve_parameters(self, task: dict) -> dict:
        values = {}
        for name, spec in task.get("inputs", {}).get("parameters", {}).items():
            if "runtimeValue" in spec:
                values[name] = spec["runtimeValue"]["constant"]
            elif "componentInputParameter" in spec:
                values[name] = self.parameters[spec["componentInputParameter"]]
            elif "taskOutputParameter" in spec:
                ref = spec["taskOutputParameter"]
                values[name] = self.results[ref["producerTask"]].parameters[
                    ref["outputParameterKey"]
                ]
            else:
                raise NotImplementedError(f"input parameter {name}: {spec}")
        return values

    def _resolve_artifacts(self, task: dict, component: dict) -> dict:
        defs = component.get("inputDefinitions", {}).get("artifacts", {})
        artifacts = {}
        for name, spec in task.get("inputs", {}).get("artifacts", {}).items():
            ref = spec["taskOutputArtifact"]
            produced = self.results[ref["producerTask"]].artifacts[ref["outputArtifactKey"]]
            artifacts[name] = {
                "artifacts": [
                    {**artifact, "type": defs[name]["artifactType"]} for artifact in produced
                ]
            }
        return artifacts

    def _provision_outputs(self, task_name: str, component: dict) -> dict:
        task_dir = os.path.join(self.root, self.run_id, task_name)
        outputs = {}
        for key, body in component.get("outputDefinitions", {}).get("artifacts", {}).items():
            outputs[key] = {
                "artifacts": [
                    {
                        "name": self._artifact_name(),
                        "type": body["artifactType"],
                        "uri": os.path.join(task_dir, key),
                    }
                ]
            }
        return {"artifacts": outputs, "outputFile": os.path.join(task_dir, "executor_output.json")}

    # -- the launcher's part ----------------------------------------------------------------
    def _environment(self, container: dict) -> dict:
        env = {
            "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", "/tmp"),
            "TF_USE_LEGACY_KERAS": "1",
        }
        env.update({e["name"]: e["value"] for e in container.get("env", [])})
        return env

    def _run_command(self, task_name: str, command: list[str], env: dict) -> None:
        started = time.time()
        proc = subprocess.run(
            command,
            env=env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=self.timeout_s,
        )
        log = proc.stdout + proc.stderr
        with self._lock:
            self.logs[task_name] = self.logs.get(task_name, "") + log
        if proc.returncode != 0:
            raise StepFailed(
                f"step {task_name} exited {proc.returncode} after {time.time() - started:.0f}s:\n"
                + log[-6000:]
            )

    def _run_container(self, task_name: str, task: dict, component: dict, executor: dict):
        container = executor["container"]
        executor_input = {
            "inputs": {
                "parameterValues": self._resolve_parameters(task),
                "artifacts": self._resolve_artifacts(task, component),
            },
            "outputs": self._provision_outputs(task_name, component),
        }
        serialized = json.dumps(executor_input)
        env = self._environment(container)

        def command(cmd: list[str], args: list[str]) -> list[str]:
            resolved = [serialized if a == _PLACEHOLDER else a for a in args]
            leftover = [a for a in resolved if "{{$" in a]
            if leftover:
                raise NotImplementedError(f"step {task_name}: unsupported placeholders {leftover}")
            # `python` in the image is the interpreter the package is installed in.
            cmd = [sys.executable if c == "python" else c for c in cmd]
            return cmd + resolved

        pre = container.get("lifecycle", {}).get("preCacheCheck")
        if pre and self.run_pre_cache_check:
            self._run_command(task_name, command(pre["command"], pre["args"]), env)
        self._run_command(task_name, command(container["command"], container["args"]), env)

        output_file = executor_input["outputs"]["outputFile"]
        if not os.path.exists(output_file):
            raise StepFailed(f"step {task_name} wrote no executor output at {output_file}")
        with open(output_file) as f:
            executor_output = json.load(f)
        artifacts = {}
        for key, provisioned in executor_input["outputs"]["artifacts"].items():
            written = executor_output.get("artifacts", {}).get(key, {}).get("artifacts")
            # The backend records what the executor reported (uri + metadata), typed as declared.
            artifacts[key] = [
                {**p, **(w or {}), "type": p["type"]}
                for p, w in zip(provisioned["artifacts"], written or [None], strict=False)
            ]
        return TaskResult(
            task_name,
            "container",
            artifacts,
            executor_output.get("parameterValues", {}),
            executor_input,
        )

    def _run_importer(self, task_name: str, task: dict, component: dict, executor: dict):
        importer = executor["importer"]
        uri_spec = importer["artifactUri"]
        if "runtimeParameter" in uri_spec:
            uri = self._resolve_parameters(task)[uri_spec["runtimeParameter"]]
        else:
            uri = uri_spec["constant"]
        (key,) = component["outputDefinitions"]["artifacts"]
        artifact = {
            "name": self._artifact_name(),
            "type": importer["typeSchema"],
            "uri": uri,
            "metadata": importer.get("metadata", {}),
        }
        return TaskResult(task_name, "importer", {key: [artifact]})

    def _run_task(self, task_name: str) -> TaskResult:
        started = time.time()
        task = self.spec["root"]["dag"]["tasks"][task_name]
        component = self._component(task)
        executor = self.spec["deploymentSpec"]["executors"][component["executorLabel"]]
        if "container" in executor:
            result = self._run_container(task_name, task, component, executor)
        elif "importer" in executor:
            result = self._run_importer(task_name, task, component, executor)
        else:
            raise NotImplementedError(f"task {task_name}: executor kind {sorted(executor)}")
        result.seconds = time.time() - started
        return result

    # -- ML Metadata, as the backend records a run ------------------------------------------
    def _store(self):
        from ml_metadata.metadata_store import metadata_store
        from ml_metadata.proto import metadata_store_pb2

        config = metadata_store_pb2.ConnectionConfig()
        config.sqlite.filename_uri = self.metadata_path
        config.sqlite.connection_mode = 3  # READWRITE_OPENCREATE
        return metadata_store.MetadataStore(config)

    def _run_context(self, store):
        from ml_metadata.proto import metadata_store_pb2

        existing = store.get_context_by_type_and_name("system.PipelineRun", self.run_id)
        if existing is not None:
            return existing
        pipeline_type = store.put_context_type(
            metadata_store_pb2.ContextType(name="system.Pipeline")
        )
        run_type = store.put_context_type(metadata_store_pb2.ContextType(name="system.PipelineRun"))
        name = self.spec["pipelineInfo"]["name"]
        pipeline = store.get_context_by_type_and_name("system.Pipeline", name)
        if pipeline is None:
            (pipeline_id,) = store.put_contexts(
                [metadata_store_pb2.Context(type_id=pipeline_type, name=name)]
            )
        else:
            pipeline_id = pipeline.id
        run = metadata_store_pb2.Context(type_id=run_type, name=self.run_id)
        run.custom_properties["pipeline_root"].string_value = os.path.join(self.root, self.run_id)
        (run_id,) = store.put_contexts([run])
        store.put_parent_contexts(
            [metadata_store_pb2.ParentContext(child_id=run_id, parent_id=pipeline_id)]
        )
        return store.get_contexts_by_id([run_id])[0]

    def _record(self, result: TaskResult) -> None:
        from google.protobuf import struct_pb2
        from ml_metadata.proto import metadata_store_pb2

        store = self._store()
        run = self._run_context(store)
        kind = (
            "system.ContainerExecution"
            if result.kind == "container"
            else ("system.ImporterExecution")
        )
        execution = metadata_store_pb2.Execution(
            type_id=store.put_execution_type(metadata_store_pb2.ExecutionType(name=kind)),
            last_known_state=metadata_store_pb2.Execution.COMPLETE,
        )
        execution.custom_properties["task_name"].string_value = result.task
        pairs = []
        task = self.spec["root"]["dag"]["tasks"][result.task]
        for spec in task.get("inputs", {}).get("artifacts", {}).values():
            ref = spec["taskOutputArtifact"]
            for artifact_id in self._artifact_ids[(ref["producerTask"], ref["outputArtifactKey"])]:
                event = metadata_store_pb2.Event(type=metadata_store_pb2.Event.INPUT)
                pairs.append((metadata_store_pb2.Artifact(id=artifact_id), event))
        for key, artifacts in result.artifacts.items():
            for artifact in artifacts:
                title = artifact["type"].get("schemaTitle", "system.Artifact")
                type_id = store.put_artifact_type(metadata_store_pb2.ArtifactType(name=title))
                record = metadata_store_pb2.Artifact(
                    type_id=type_id, uri=artifact["uri"], state=metadata_store_pb2.Artifact.LIVE
                )
                # As the backend's StructValueToMLMDValue: JSON numbers are doubles, strings
                # strings, anything else a struct.
                for name, value in (artifact.get("metadata") or {}).items():
                    if isinstance(value, str):
                        record.custom_properties[name].string_value = value
                    elif isinstance(value, int | float) and not isinstance(value, bool):
                        record.custom_properties[name].double_value = float(value)
                    else:
                        record.custom_properties[name].struct_value.CopyFrom(
                            _struct({"value": value}, struct_pb2)
                        )
                event = metadata_store_pb2.Event(type=metadata_store_pb2.Event.OUTPUT)
                event.path.steps.add().key = key
                pairs.append((record, event))
        _, artifact_ids, _ = store.put_execution(execution, pairs, [run])
        for (_, event), artifact_id in zip(pairs, artifact_ids, strict=True):
            if event.type == metadata_store_pb2.Event.OUTPUT:
                key = event.path.steps[0].key
                self._artifact_ids.setdefault((result.task, key), []).append(artifact_id)

    def run(self, only: set[str] | None = None) -> dict[str, TaskResult]:
        """Runs every task (or the tasks in ``only``, which must hold their dependencies) once its
        dependencies are done; raises StepFailed on the first failure."""
        tasks = self.spec["root"]["dag"]["tasks"]
        _topological(tasks)  # rejects cycles before anything runs
        deps = {name: _dependencies(task) for name, task in tasks.items()}
        pending = set(tasks) if only is None else set(only)
        missing = {dep for name in pending for dep in deps[name]} - pending
        if missing:
            raise ValueError(f"tasks {sorted(pending)} need {sorted(missing)} too")
        running: dict[concurrent.futures.Future, str] = {}
        with concurrent.futures.ThreadPoolExecutor(self.max_parallel) as pool:
            while pending or running:
                for name in sorted(pending):
                    if deps[name] <= set(self.results) and len(running) < self.max_parallel:
                        running[pool.submit(self._run_task, name)] = name
                        pending.discard(name)
                if not running:
                    raise StepFailed(f"tasks {sorted(pending)} can never run")
                done, _ = concurrent.futures.wait(
                    running, return_when=concurrent.futures.FIRST_COMPLETED
                )
                for future in done:
                    name = running.pop(future)
                    self.results[name] = future.result()  # re-raises StepFailed
                    if self.metadata_path:
                        with self._lock:
                            self._record(self.results[name])
        return self.results


def _struct(value: dict, struct_pb2):
    struct = struct_pb2.Struct()
    struct.update(value)
    return struct
