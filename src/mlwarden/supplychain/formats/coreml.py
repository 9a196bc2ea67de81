"""Core ML models (``.mlmodel``, and the ``model.mlmodel`` inside an ``.mlpackage``):
the ``CoreML.Specification.Model`` protobuf, told apart from ONNX by content and walked
as a stream (MLW-SCN-029).

Both formats open with a varint field 1 (Core ML's ``specificationVersion``, ONNX's
``ir_version``), so an ONNX parser accepts a Core ML file and reports it clean while
skipping everything it does not know. Core ML's field 2 is a ``ModelDescription``
message (feature descriptions, fields 1/10/11/12/20/21/50/100) where ONNX has the
producer's name, and its model is one field of a oneof numbered 200 and up.

What runs code or reads outside the file, as ``Model.proto``, ``NeuralNetwork.proto``
and ``LinkedModel.proto`` of the published specification define them:

* ``CustomLayerParams.className`` (layer field 500): an ``MLCustomLayer`` class the app
  must ship, native code chosen by name; searched in every network, including the
  branches (605) and loop bodies (615) of control-flow layers and pipeline members;
* ``CustomModel.className`` (model field 555): an ``MLCustomModel`` class, likewise;
* ``LinkedModelFile`` (model field 556): another compiled model, looked up by file name
  on a search path: absolute paths or ``..`` reach outside the app (high), a relative
  or bundle path is reported as a model that was not scanned here (medium);
* ``SerializedModel`` (field 3000): an opaque model for another runtime (medium).

Weights and descriptions are skipped by length, never read (constant memory on a
multi-gigabyte file); ML programs (field 502) hold MIL operations, which are data.

Example::

    recognise(open("m.mlmodel", "rb").read(512), None)   # True
"""

from __future__ import annotations

from typing import Any

from mlwarden.core.severity import Severity
from mlwarden.supplychain.formats.base import FormatScanner, Scan
from mlwarden.supplychain.results import Sink
from mlwarden.supplychain.stream import Source, Truncated

RULE = "MLW-SCN-029"
#: Model's oneof Type fields (Model.proto, specification 9)
TYPES = frozenset(
    [200, 201, 202, 300, 301, 302, 303, 304, 400, 401, 402, 403, 404, 500, 501, 502, 555, 556]
    + [560, 600, 601, 602, 603, 604, 606, 607, 609, 610, 900, 3000]
    + list(range(2000, 2007))
)
TOP = TYPES | {1, 2, 10}
#: ModelDescription fields: input, output, predicted names, functions, training, metadata
DESCRIPTION = frozenset([1, 10, 11, 12, 20, 21, 50, 100])
#: what the walk descends into: message kind -> field -> kind ("str" captures a string)
SCHEMA: dict[str, dict[int, str]] = {
    "model": {
        200: "pipewrap",
        201: "pipewrap",
        202: "pipeline",
        303: "nn",
        403: "nn",
        500: "nn",
        555: "custom",
        556: "linked",
        3000: "serialized",
    },
    "pipewrap": {1: "pipeline"},
    "pipeline": {1: "model", 2: "str"},
    "nn": {1: "layer"},
    "layer": {1: "str", 500: "custom", 605: "branch", 615: "loop"},
    "branch": {1: "nn", 2: "nn"},
    "loop": {3: "nn", 4: "nn"},
    "custom": {10: "str"},
    "linked": {1: "linkfile"},
    "linkfile": {1: "param", 2: "param"},
    "param": {1: "str"},
    "serialized": {1: "str"},
}
MAX_DEPTH = 64
MAX_STRING = 4096


def _tags(head: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """(field, wire type, value start, declared value end) of the fields wholly or partly
    in ``head[start:end]``; stops at the first that does not parse (the head is a prefix)."""
    out = []
    pos = start
    while pos < end:
        key, pos = _varint(head, pos, end)
        if key < 0:
            break
        num, wt = key >> 3, key & 7
        if wt == 0:
            value, pos = _varint(head, pos, end)
            out.append((num, wt, pos, pos))
            if value < 0:
                break
        elif wt == 2:
            n, pos = _varint(head, pos, end)
            if n < 0:
                break
            out.append((num, wt, pos, pos + n))
            pos += n
        elif wt in (1, 5):
            out.append((num, wt, pos, pos))
            pos += 8 if wt == 1 else 4
        else:
            out.append((num, wt, pos, pos))
            break
    return out


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while pos < end and shift < 64:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
    return -1, pos


def recognise(head: bytes, size: int | None) -> bool:
    """A Core ML ``Model``: specificationVersion, then only Model's own fields, with a
    ModelDescription or a model type field that ONNX's ModelProto cannot have."""
    if len(head) < 4 or head[0] != 0x08 or not 1 <= head[1] <= 32:
        return False
    fields = _tags(head, 0, len(head))
    if len(fields) < 2 or any(num not in TOP for num, *_ in fields):
        return False
    distinctive = False
    for num, wt, start, end in fields[1:]:
        if num in TYPES:
            distinctive = distinctive or wt == 2
        elif num == 2 and wt == 2 and end > start:
            if not _description(head, start, end):
                return False
            distinctive = True
    return distinctive


def _description(head: bytes, start: int, end: int) -> bool:
    """A ModelDescription: its own fields only; when it runs past the head, its first
    feature must open with a name (field 1), as a FeatureDescription does (a TensorFlow
    MetaInfoDef, also field 1 of field 2 of its file, has no name there)."""
    inner = _tags(head, start, min(end, len(head)))
    if not inner or any(n not in DESCRIPTION or w != 2 for n, w, *_ in inner):
        return False
    if end <= len(head):
        return True
    num, _, s, e = inner[0]
    feature = _tags(head, s, min(e, len(head)))
    return (
        num == 1
        and bool(feature)
        and feature[0][0] == 1
        and all(n in (1, 2, 3) and w == 2 for n, w, *_ in feature)
    )


def scan(src: Source, scan: Scan) -> str:
    """Walk the model (and its pipeline members and nested networks) for custom classes,
    linked models and opaque serialized models."""
    _message(src, src.pos + _size(src), "model", "model", 0, scan)
    return "coreml"


def _size(src: Source) -> int:
    if src.size is not None:
        return src.size - src.pos
    return 1 << 62  # a stream: read to its end


def _message(src: Source, end: int, kind: str, where: str, depth: int, scan: Scan) -> Any:
    """Walk one message ending at stream offset ``end``; returns what the kind keeps."""
    if depth > MAX_DEPTH:
        raise Truncated(f"Core ML messages nested deeper than {MAX_DEPTH} at {where}")
    schema = SCHEMA[kind]
    got: dict[int, Any] = {}
    index: dict[int, int] = {}
    while src.pos < end:
        key = _read_varint(src, end)
        if key < 0:  # a stream's end at a field boundary
            break
        num, wt = key >> 3, key & 7
        if wt == 0:
            _read_varint(src, end)
            continue
        if wt in (1, 5):
            _skip(src, 8 if wt == 1 else 4, end)
            continue
        if wt != 2:
            raise Truncated(f"Core ML field {num} at {where} has wire type {wt}")
        n = _read_varint(src, end)
        if n < 0 or src.pos + n > end:
            raise Truncated(f"Core ML field {num} at {where} runs past its message")
        child = schema.get(num)
        if child is None:
            _skip(src, n, end)
        elif child == "str":
            got[num] = _string(src, n)
        else:
            i = index[num] = index.get(num, -1) + 1
            got[num] = _message(src, src.pos + n, child, f"{where}.{child}[{i}]", depth + 1, scan)
    _report(kind, got, where, scan)
    return got


def _read_varint(src: Source, end: int) -> int:
    value = shift = 0
    while shift < 64:
        if src.pos >= end:
            if shift == 0 and end >= 1 << 62:
                return -1
            raise Truncated("Core ML varint runs past its message")
        b = src.byte()
        if b < 0:
            if shift == 0 and end >= 1 << 62:
                return -1
            raise Truncated("Core ML model ends inside a field")
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value
        shift += 7
    raise Truncated("Core ML varint longer than 10 bytes")


def _skip(src: Source, n: int, end: int) -> None:
    if src.pos + n > end:
        raise Truncated("Core ML field runs past its message")
    src.skip(n)


def _string(src: Source, n: int) -> str:
    keep = min(n, MAX_STRING)
    text = src.read(keep).decode("utf-8", "backslashreplace")
    src.skip(n - keep)
    return text


def _report(kind: str, got: dict[int, Any], where: str, scan: Scan) -> None:
    sink = scan.sink
    if kind == "layer" and isinstance(got.get(500), dict):
        cls = got[500].get(10, "")
        name = got.get(1, "?")
        sink.add(
            RULE,
            Severity.HIGH,
            f"Core ML custom layer {name!r} needs the class {cls!r}: "
            "an MLCustomLayer the app must ship (native code chosen by name)",
            global_=cls,
        )
    elif kind == "model" and isinstance(got.get(555), dict):
        cls = got[555].get(10, "")
        sink.add(
            RULE,
            Severity.HIGH,
            f"Core ML custom model ({where}) needs the class {cls!r}: "
            "an MLCustomModel the app must ship (native code chosen by name)",
            global_=cls,
        )
    elif kind == "linkfile":
        _linked(got, where, scan)
    elif kind == "model" and isinstance(got.get(3000), dict):
        ident = got[3000].get(1, "")
        sink.add(
            RULE,
            Severity.MEDIUM,
            f"Core ML serialized model ({where}) of type {ident!r} "
            "is opaque to this scan (bytes for another runtime, not checked)",
            global_=ident,
        )


def _linked(got: dict[int, Any], where: str, scan: Scan) -> None:
    name = (got.get(1) or {}).get(1, "")
    paths = (got.get(2) or {}).get(1, "")
    parts = [name, *paths.split(":")]
    outside = [
        p for p in parts if p.startswith(("/", "~")) or ".." in p.replace("\\", "/").split("/")
    ]
    severity = Severity.HIGH if outside else Severity.MEDIUM
    why = (
        f"searches {outside[0]!r}, outside the app"
        if outside
        else "a model that is not part of this file and was not scanned with it"
    )
    scan.sink.add(
        RULE,
        severity,
        f"Core ML linked model ({where}) loads the compiled model "
        f"{name!r} from the search path {paths!r}: {why}",
        global_=name,
    )


FORMAT = FormatScanner("coreml", recognise, scan)


def looks_like_package_manifest(doc: Any) -> bool:
    """An ``.mlpackage``'s ``Manifest.json``: format version and item entries."""
    return (
        isinstance(doc, dict)
        and "fileFormatVersion" in doc
        and isinstance(doc.get("itemInfoEntries"), dict)
    )


def check_package_manifest(doc: dict[str, Any], sink: Sink) -> str:
    """Report items whose path leaves the package's ``Data`` folder (absolute, ``..``):
    Core ML would read that file as the model or its weights."""
    for key, item in list(doc["itemInfoEntries"].items())[:1000]:
        path = str(item.get("path", "")) if isinstance(item, dict) else ""
        parts = path.replace("\\", "/").split("/")
        if path.startswith(("/", "~")) or ".." in parts or (len(path) > 1 and path[1] == ":"):
            sink.add(
                RULE,
                Severity.HIGH,
                f"Core ML package item {str(key)[:40]!r} points at {path[:200]!r}, outside the "
                "package: Core ML would read that file as part of the model",
                global_=path[:200],
            )
    return "coreml-manifest"
