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

from mlwarden.core.severity import Severity
from mlwarden.supplychain.results import Sink
from mlwarden.supplychain.stream import Truncated
from mlwarden.supplychain.tf_scan import LEN, fields  # the protobuf wire reader

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
        _external_data(where, loc, sink, base)
    for node, where in _nodes(model.graph, "graph"):
        _operator(where, node.name, node.domain, node.op_type, local_domains, sink)


def _external_data(where: str, location: str | None, sink: Sink, base: Path | None) -> None:
    """Report an external-data location outside the model folder (or none); record one
    inside it, resolved, so that scan_paths credits that file as the model's weights."""
    if location is None:
        sink.add("MLW-SCN-007", Severity.HIGH, f"{where}: external data without a location")
    elif _escapes(location, base):
        sink.add(
            "MLW-SCN-007",
            Severity.CRITICAL,
            f"{where}: external data location {location!r} is outside the model folder",
            global_=location,
        )
    elif base is not None and len(sink.result.external_data) < 100_000:
        target = base / os.path.normpath(location.replace("\\", "/"))
        with contextlib.suppress(OSError, RuntimeError):  # unresolvable: not credited
            sink.result.external_data.append(str(target.resolve()))


def _operator(
    where: str, name: str, domain: str, op_type: str, local: set[str], sink: Sink
) -> None:
    """Report a node whose operator domain is neither standard nor a model-local function."""
    if domain not in STANDARD_DOMAINS and domain not in local:
        sink.add(
            "MLW-SCN-008",
            Severity.HIGH,
            f"{where}: node {name or op_type!r} uses custom operator {domain}.{op_type}",
            global_=f"{domain}.{op_type}",
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


# --- large models: the protobuf wire format, walked in place ----------------------------------

MAX_GRAPH_DEPTH = 64  #: subgraphs (If/Loop/Scan bodies) nested in one another
MAX_WALK = 10_000_000  #: messages visited in one model


def scan_onnx_wire(buf: Any, sink: Sink, base: Path | None) -> None:
    """:func:`scan_onnx` for models too big to parse in memory (up to protobuf's 2 GiB).

    ``buf`` is any indexable byte buffer (a memory map of the file): only the message
    headers are read, tensor payloads (``raw_data``) are skipped by their lengths, so
    memory does not grow with the weights. The checks are the same: external data
    locations, and operator domains that are neither standard nor model-local functions.
    """
    walk = _Walk(buf, sink, base)
    functions: list[tuple[int, int]] = []
    graphs: list[tuple[tuple[int, int], str, int]] = []
    for num, wt, value in fields(buf, 0, len(buf)):
        if wt != LEN:
            continue
        if num == 7:  # graph
            graphs.append((value, "graph", 0))
        elif num == 25:  # functions
            functions.append(value)
        elif num == 20:  # training_info: initialization (1) and algorithm (2) graphs
            for n2, w2, v2 in fields(buf, *value):
                if w2 == LEN and n2 in (1, 2):
                    graphs.append((v2, "training graph", 0))
    local: set[str] = set()
    for span in functions:
        name, domain = "", ""
        for num, wt, value in fields(buf, *span):
            if wt == LEN and num == 1:
                name = walk.text(value)
            elif wt == LEN and num == 10:
                domain = walk.text(value)
        local.add(domain)
        for num, wt, value in fields(buf, *span):
            if wt == LEN and num == 7:  # node
                walk.node(value, f"function {name}", 0, graphs)
    walk.local = local
    while graphs:
        span, where, depth = graphs.pop()
        walk.graph(span, where, depth, graphs)
    walk.report_nodes()


class _Walk:
    def __init__(self, buf: Any, sink: Sink, base: Path | None) -> None:
        self.buf, self.sink, self.base = buf, sink, base
        self.local: set[str] = set()
        self.nodes: list[tuple[str, str, str, str]] = []  #: (where, name, domain, op_type)
        self.visited = 0

    def text(self, span: tuple[int, int]) -> str:
        return bytes(self.buf[span[0] : min(span[1], span[0] + 4096)]).decode("utf-8", "replace")

    def _count(self) -> None:
        self.visited += 1
        if self.visited > MAX_WALK:
            raise Truncated(f"ONNX model has more than {MAX_WALK} messages")

    def graph(self, span: tuple[int, int], where: str, depth: int, todo: list[Any]) -> None:
        if depth > MAX_GRAPH_DEPTH:
            raise Truncated(f"ONNX subgraphs nested deeper than {MAX_GRAPH_DEPTH}")
        self._count()
        for num, wt, value in fields(self.buf, *span):
            if wt != LEN:
                continue
            if num == 1:  # node
                self.node(value, where, depth, todo)
            elif num == 5:  # initializer
                self.tensor(value, f"{where} initializer")
            elif num == 15:  # sparse_initializer: values (1) is a tensor
                for n2, w2, v2 in fields(self.buf, *value):
                    if w2 == LEN and n2 == 1:
                        self.tensor(v2, f"{where} sparse initializer")

    def node(self, span: tuple[int, int], where: str, depth: int, todo: list[Any]) -> None:
        self._count()
        name = domain = op_type = ""
        for num, wt, value in fields(self.buf, *span):
            if wt != LEN:
                continue
            if num == 3:
                name = self.text(value)
            elif num == 4:
                op_type = self.text(value)
            elif num == 7:
                domain = self.text(value)
            elif num == 5:  # attribute
                for n2, w2, v2 in fields(self.buf, *value):
                    if w2 != LEN:
                        continue
                    if n2 in (5, 10):  # t, tensors
                        self.tensor(v2, f"{where} node {name!r} attribute")
                    elif n2 in (6, 11):  # g, graphs
                        todo.append((v2, f"{where}/{name or op_type}", depth + 1))
        self.nodes.append((where, name, domain, op_type))

    def tensor(self, span: tuple[int, int], where: str) -> None:
        self._count()
        external = False
        tname = ""
        entries: list[tuple[int, int]] = []
        for num, wt, value in fields(self.buf, *span):
            if num == 14 and wt == 0:
                external = value == 1
            elif num == 13 and wt == LEN:
                entries.append(value)
            elif num == 8 and wt == LEN:
                tname = self.text(value)
        if not external:
            return
        location = None
        for entry in entries:
            key = value_ = None
            for num, wt, value in fields(self.buf, *entry):
                if wt == LEN and num == 1:
                    key = self.text(value)
                elif wt == LEN and num == 2:
                    value_ = self.text(value)
            if key == "location":
                location = value_
        _external_data(f"{where} {tname!r}", location, self.sink, self.base)

    def report_nodes(self) -> None:
        for where, name, domain, op_type in self.nodes:
            _operator(where, name, domain, op_type, self.local, self.sink)
