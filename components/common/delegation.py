"""How much of a flatbuffer's graph the XNNPACK delegate takes, measured in the LiteRT interpreter.

The interpreter applies its default delegate (XNNPACK) when tensors are first allocated: each
partition of the graph XNNPACK takes becomes one ``DELEGATE`` node, appended after the model's own
nodes, and the nodes it replaced leave the execution plan; every other node runs on the default
(builtin) kernels. ``_get_ops_details()`` lists the model's nodes (as many as the flatbuffer's
first subgraph has operators) followed by the ``DELEGATE`` nodes, with their input and output
tensors; the nodes of a partition are those that compute the ``DELEGATE`` node's outputs from its
inputs.

A graph converted with a dynamic batch computes its first ``Reshape``'s target shape at run time
(``SHAPE -> STRIDED_SLICE -> PACK -> RESHAPE``): XNNPACK takes no such run-time shape computation,
so those nodes stay on the default kernels, and the graph is split around them (LiteRT 2.3 still
delegates the rest, resized per batch; TensorFlow 2.16's interpreter warns "Attempting to use a
delegate that only supports static-sized tensors ..." and delegates nothing). Other nodes fall
back where XNNPACK has no kernel for the op or its types (an int8 ``SOFTMAX``, say).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections import Counter

import numpy as np

DELEGATE_OP = "DELEGATE"
SHAPE_OP = "SHAPE"
DYNAMIC_WARNING = (
    "Attempting to use a delegate that only supports static-sized tensors with a graph that has "
    "dynamic-sized tensors"
)


def measure_delegation(flatbuffer: bytes, num_threads: int = 1) -> dict:
    """How much of the flatbuffer's main graph XNNPACK took, with ``num_threads`` threads.

    Returns:
      ``{"delegate", "runtime", "num_threads", "nodes", "delegated_nodes", "delegated_share",
      "partitions", "fallback_ops" (op name -> count of nodes on the default kernels),
      "dynamic_tensors" (how many tensors have -1 in their shape signature), "runtime_warnings",
      "delegate_error" (XNNPACK took nodes and failed to prepare them: then none is delegated),
      "reason" (None when the whole graph is delegated)}``.
    """
    from components.common import tflite

    failure = None
    with _native_stderr() as captured:
        interpreter = tflite.interpreter(flatbuffer, num_threads=num_threads)
        try:
            interpreter.allocate_tensors()
        except RuntimeError as e:
            if not tflite.is_delegate_failure(e):
                raise
            failure = str(e).strip()  # then nothing is delegated: the app turns XNNPACK off
            interpreter = tflite.interpreter(flatbuffer, num_threads, default_delegates=False)
            interpreter.allocate_tensors()
    warnings = [
        line.strip()
        for line in captured()
        if "delegate" in line.lower() and not line.startswith("INFO")
    ]
    ops = interpreter._get_ops_details()  # noqa: SLF001 - the only view of the execution plan
    model_nodes = [op for op in ops if op["op_name"] != DELEGATE_OP]
    delegates = [op for op in ops if op["op_name"] == DELEGATE_OP]
    delegated = _partition_nodes(model_nodes, delegates)
    fallback = {op["index"] for op in model_nodes if op["index"] not in delegated}
    dynamic = [
        t for t in interpreter.get_tensor_details() if np.any(np.asarray(t["shape_signature"]) < 0)
    ]
    nodes = len(model_nodes)
    record = {
        "delegate": "XNNPACK",
        "runtime": f"ai-edge-litert {_litert_version()}",
        "num_threads": num_threads,
        "nodes": nodes,
        "flatbuffer_operators": operator_count(flatbuffer),
        "delegated_nodes": len(delegated),
        "delegated_share": len(delegated) / nodes if nodes else None,
        "partitions": len(delegates),
        "fallback_ops": dict(
            sorted(Counter(op["op_name"] for op in model_nodes if op["index"] in fallback).items())
        ),
        "dynamic_tensors": len(dynamic),
        "runtime_warnings": warnings,
        "delegate_error": failure,
    }
    inputs = {int(d["index"]) for d in interpreter.get_input_details()}
    dynamic.sort(key=lambda t: t["index"] not in inputs)  # the inputs first
    record["reason"] = _reason(record, model_nodes, fallback, dynamic, warnings)
    return record


def _partition_nodes(model_nodes: list[dict], delegates: list[dict]) -> set[int]:
    """Indices of the model nodes inside some delegate partition: walking back from each
    ``DELEGATE`` node's outputs through their producers, stopping at its inputs."""
    producer = {t: op["index"] for op in model_nodes for t in op["outputs"] if t >= 0}
    by_index = {op["index"]: op for op in model_nodes}
    inside: set[int] = set()
    for delegate in delegates:
        stop = {int(t) for t in delegate["inputs"]}
        pending = [int(t) for t in delegate["outputs"]]
        seen: set[int] = set()
        while pending:
            tensor = pending.pop()
            if tensor in stop or tensor in seen or tensor < 0:
                continue
            seen.add(tensor)
            node = producer.get(tensor)
            if node is None or node in inside:
                continue
            inside.add(node)
            pending.extend(int(t) for t in by_index[node]["inputs"])
    return inside


def _shape_computation(model_nodes: list[dict], fallback: set[int]) -> set[int]:
    """The fallback nodes computing a shape at run time: each ``SHAPE`` node and the fallback
    nodes fed by it, directly or through others (``STRIDED_SLICE``, ``PACK``, the ``RESHAPE``
    that takes the packed shape)."""
    consumers: dict[int, list[int]] = {}
    for op in model_nodes:
        for tensor in op["inputs"]:
            consumers.setdefault(int(tensor), []).append(op["index"])
    by_index = {op["index"]: op for op in model_nodes}
    found = {i for i in fallback if by_index[i]["op_name"] == SHAPE_OP}
    pending = list(found)
    while pending:
        for tensor in by_index[pending.pop()]["outputs"]:
            for node in consumers.get(int(tensor), []):
                if node in fallback and node not in found:
                    found.add(node)
                    pending.append(node)
    return found


def _counts(ops: list[str]) -> str:
    return ", ".join(f"{name} x{count}" for name, count in sorted(Counter(ops).items()))


def _reason(
    record: dict, model_nodes: list[dict], fallback: set[int], dynamic: list[dict], warnings
) -> str | None:
    """Why part of the graph runs on the default kernels (None when nothing does); ``dynamic``
    lists the dynamic-sized tensors, the inputs among them first."""
    if not fallback:
        return None
    names = {op["index"]: op["op_name"] for op in model_nodes}
    if record["delegate_error"]:
        return (
            f"{_counts(list(names[i] for i in fallback))} run on the default kernels: XNNPACK took "
            f"part of the graph and then failed to prepare it ({record['delegate_error']}), so "
            "the graph runs without it (a device loads it only with the delegate turned off)"
        )
    shape_nodes = _shape_computation(model_nodes, fallback)
    parts = []
    if shape_nodes or any(DYNAMIC_WARNING.lower() in w.lower() for w in warnings):
        which = "the interpreter warns of them"
        if dynamic:
            shape = [int(d) for d in dynamic[0]["shape_signature"]]
            which = f"{len(dynamic)} with -1 in their shape, e.g. {dynamic[0]['name']} {shape}"
        ops = _counts([names[i] for i in shape_nodes]) or "the graph"
        parts.append(
            f"{ops} compute a shape at run time, which XNNPACK does not take, so they run on "
            f"the default kernels: the graph has dynamic-sized tensors ({which}); convert it "
            "with a static batch"
        )
    others = sorted(fallback - shape_nodes)
    if others:
        parts.append(
            f"{_counts([names[i] for i in others])} run on the default kernels: XNNPACK has no "
            "kernel for these ops (or for their types or parameters)"
        )
    return "; ".join(parts)


def operator_count(flatbuffer: bytes) -> int:
    """Operators in the flatbuffer's first (main) subgraph, read from the file itself."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAs(bytearray(flatbuffer), 0)
    return int(model.Subgraphs(0).OperatorsLength()) if model.SubgraphsLength() else 0


def _litert_version() -> str:
    try:
        from importlib.metadata import version

        return version("ai-edge-litert")
    except Exception:  # noqa: BLE001 - only a label
        return "unknown"


@contextlib.contextmanager
def _native_stderr():
    """Captures what native code writes to file descriptor 2 (the interpreter's warnings), then
    writes it back so nothing is lost; yields a function returning the captured lines."""
    lines: list[str] = []
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to capture
        yield lambda: lines
        return
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lambda: lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            data = sink.read()
            if data:
                os.write(2, data)
            lines.extend(data.decode("utf-8", "replace").splitlines())
