"""ONNX: parse the protobuf (never run it) and check external data and operator domains.

* External data: a tensor stored outside the model names a ``location`` that the
  runtime opens relative to the model's folder. An absolute path or one that climbs
  out with ``..`` (or through a symbolic link) makes loading read an arbitrary file,
  such as a key, into the weights (CVE-2022-25882 in onnx's loader).
* Custom operator domains need a native library registered with the runtime;
  a model that uses them runs native code the user did not choose.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from mlwarden.core.findings import Severity
from mlwarden.supplychain.results import Sink
from mlwarden.supplychain.stream import Truncated

STANDARD_DOMAINS = frozenset(
    {
        "",
        "ai.onnx",
        "ai.onnx.ml",
        "ai.onnx.training",
        "ai.onnx.preview.training",
        "com.microsoft",
        "com.microsoft.nchwc",
        "com.microsoft.mlfeaturizers",
        "ai.onnx.contrib",
    }
)


def scan_onnx(data: bytes, sink: Sink, base: Path | None) -> None:
    """Check a serialized ModelProto; ``base`` is the model's folder (None inside archives)."""
    import onnx
    from google.protobuf.message import DecodeError

    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise Truncated(f"not a valid ONNX protobuf ({exc})") from None
    local_domains = {f.domain for f in model.functions}
    for tensor, where in _tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        loc = next((e.value for e in tensor.external_data if e.key == "location"), None)
        if loc is None:
            sink.add("MLW-SCN-007", Severity.HIGH, f"{where}: external data without a location")
            continue
        if _escapes(loc, base):
            sink.add(
                "MLW-SCN-007",
                Severity.CRITICAL,
                f"{where}: external data location {loc!r} is outside the model folder",
                global_=loc,
            )
        elif base is not None and len(sink.result.external_data) < 100_000:
            target = base / os.path.normpath(loc.replace("\\", "/"))
            with contextlib.suppress(OSError, RuntimeError):  # unresolvable: not credited
                sink.result.external_data.append(str(target.resolve()))
    for node, where in _nodes(model.graph, "graph"):
        if node.domain not in STANDARD_DOMAINS and node.domain not in local_domains:
            sink.add(
                "MLW-SCN-008",
                Severity.HIGH,
                f"{where}: node {node.name or node.op_type!r} uses custom operator "
                f"{node.domain}.{node.op_type}",
                global_=f"{node.domain}.{node.op_type}",
            )


def _escapes(location: str, base: Path | None) -> bool:
    if os.path.isabs(location) or location.startswith(("\\", "/")) or ":" in location[:3]:
        return True
    norm = os.path.normpath(location.replace("\\", "/"))
    if norm == ".." or norm.startswith("../"):
        return True
    if base is not None:
        try:
            target = (base / norm).resolve()
            return not target.is_relative_to(base.resolve())
        except (OSError, RuntimeError):
            return True
    return False


def _tensors(model: Any) -> list[tuple[Any, str]]:
    out: list[tuple[Any, str]] = []
    graphs = [(model.graph, "graph")]
    for f in model.functions:
        for n in f.node:
            graphs.extend(_subgraphs(n, f"function {f.name}"))
    while graphs:
        g, where = graphs.pop()
        out.extend((t, f"{where} initializer {t.name!r}") for t in g.initializer)
        out.extend((s.values, f"{where} sparse initializer") for s in g.sparse_initializer)
        for n in g.node:
            for a in n.attribute:
                if a.HasField("t"):
                    out.append((a.t, f"{where} node {n.name!r} attribute {a.name!r}"))
                out.extend((t, f"{where} node {n.name!r}") for t in a.tensors)
            graphs.extend(_subgraphs(n, where))
    return out


def _subgraphs(node: Any, where: str) -> list[tuple[Any, str]]:
    subs = []
    for a in node.attribute:
        if a.HasField("g"):
            subs.append((a.g, f"{where}/{node.name or node.op_type}.{a.name}"))
        subs.extend((g, f"{where}/{node.name or node.op_type}.{a.name}") for g in a.graphs)
    return subs


def _nodes(graph: Any, where: str) -> list[tuple[Any, str]]:
    out = []
    todo = [(graph, where)]
    while todo:
        g, w = todo.pop()
        for n in g.node:
            out.append((n, w))
            todo.extend(_subgraphs(n, w))
    return out
