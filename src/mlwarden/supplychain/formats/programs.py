"""Compiled model programs: TensorRT engines and PaddlePaddle ``.pdmodel`` graphs.

* TensorRT engines (``.engine``, ``.plan``: the serialized plan starts with ``ftrt``;
  Ultralytics prefixes a length and a JSON header). TensorRT 10 can serialize plugin
  libraries into the engine (``setPluginsToSerialize``), which are loaded as native code
  when the engine is deserialized: every embedded ELF or PE image is reported
  (MLW-SCN-020, high). The engine is read in chunks, never whole.
* PaddlePaddle ``.pdmodel`` (a ``ProgramDesc`` protobuf: blocks whose root has parent
  -1): a ``py_func`` operator calls Python functions of the loading process (MLW-SCN-008).
"""

from __future__ import annotations

import re

from mlwarden.core.severity import Severity
from mlwarden.supplychain.formats.base import FormatScanner, Scan, u32le
from mlwarden.supplychain.stream import Source

CHUNK = 1 << 20
_PDMODEL = re.compile(rb"\A\x0a[\x80-\xff]{0,4}[\x00-\x7f]\x08\x00\x10\xff{9}\x01", re.S)


def _trt_start(head: bytes) -> int | None:
    if head.startswith(b"ftrt"):
        return 0
    n = u32le(head)
    if len(head) > 4 and head[4:5] == b"{" and head[4 + n : 8 + n] == b"ftrt":
        return 4 + n  # Ultralytics: metadata JSON, then the plan
    return None


def _scan_trt(src: Source, scan: Scan) -> str:
    found: list[int] = []
    tail = b""
    while True:
        chunk = src.peek(CHUNK)
        if not chunk:
            break
        base = src.pos - len(tail)
        src.skip(len(chunk))
        window = tail + chunk
        for m in re.finditer(rb"\x7fELF[\x01\x02][\x01\x02]\x01", window):
            at = base + m.start()
            if not found or found[-1] != at:
                found.append(at)
        tail = window[-7:]
    if found:
        scan.sink.add(
            "MLW-SCN-020",
            Severity.HIGH,
            f"TensorRT engine carries {len(found)} embedded native librar(y/ies) (ELF, first "
            f"at byte {found[0]}): serialized plugin libraries, loaded as native code when "
            "the engine is deserialized",
        )
    return "tensorrt-engine"


def _scan_pdmodel(src: Source, scan: Scan) -> str:
    tail = b""
    hit = False
    while True:
        chunk = src.peek(CHUNK)
        if not chunk:
            break
        src.skip(len(chunk))
        window = tail + chunk
        # an OpDesc's type (field 3, a string): "py_func"
        hit = hit or b"\x1a\x07py_func" in window
        tail = window[-9:]
    if hit:
        scan.sink.add(
            "MLW-SCN-008",
            Severity.HIGH,
            "PaddlePaddle program runs a py_func operator: it calls Python functions of the "
            "process that loads it",
        )
    return "paddle-program"


TENSORRT_FORMAT = FormatScanner(
    "tensorrt-engine", lambda h, s: _trt_start(h) is not None, _scan_trt
)
PDMODEL_FORMAT = FormatScanner(
    "paddle-program", lambda h, s: _PDMODEL.match(h) is not None, _scan_pdmodel
)
