"""safetensors header validation (the format cannot run code; its header can still lie).

Checks the 8-byte little-endian header length, that the header is a JSON object of
tensors with known dtypes and non-negative shapes, that every ``data_offsets`` pair
lies inside the data section with ``end - begin == numel * dtype size``, and that the
tensors tile the data section contiguously without overlaps or gaps — the checks the
reference implementation (``safetensors`` crate, ``SafeTensorError``) performs.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from mlwarden.core.severity import Severity
from mlwarden.supplychain.results import Sink
from mlwarden.supplychain.stream import Source

MAX_HEADER = 100_000_000  #: the reference implementation's limit (bytes)

DTYPE_BYTES: dict[str, float] = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "F8_E8M0": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "C64": 8,
    "F64": 8,
    "I64": 8,
    "U64": 8,
    "F4": 0.5,
    "F6_E2M3": 0.75,
    "F6_E3M2": 0.75,
}


def scan_safetensors(src: Source, sink: Sink) -> None:
    """Validate a safetensors stream; problems become MLW-SCN-009 findings."""

    def bad(msg: str) -> None:
        sink.add("MLW-SCN-009", Severity.HIGH, msg, offset=0)

    (n,) = struct.unpack("<Q", src.read(8))
    if n > MAX_HEADER:
        bad(f"header length {n} exceeds the {MAX_HEADER}-byte limit")
        return
    try:
        header = json.loads(src.read(n))
    except (ValueError, RecursionError):
        bad("header is not valid JSON")
        return
    if not isinstance(header, dict):
        bad("header is not a JSON object")
        return
    data_len = src.remaining()
    spans: list[tuple[int, int, str]] = []
    for name, info in header.items():
        if name == "__metadata__":
            if not isinstance(info, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in info.items()
            ):
                bad("__metadata__ must map strings to strings")
            continue
        problem = _check_tensor(name, info)
        if problem:
            bad(problem)
            continue
        begin, end = info["data_offsets"]
        spans.append((begin, end, name))
    spans.sort()
    pos = 0
    for begin, end, name in spans:
        if begin < pos:
            bad(f"tensor {name!r} overlaps the previous tensor (offset {begin} < {pos})")
        elif begin > pos:
            bad(f"gap of {begin - pos} bytes before tensor {name!r} (hidden data)")
        pos = max(pos, end)
    if data_len is not None and pos != data_len:
        bad(f"tensors cover {pos} bytes but the data section holds {data_len}")


def _check_tensor(name: str, info: Any) -> str | None:
    if not isinstance(info, dict):
        return f"entry {name!r} is not an object"
    dtype, shape, offs = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if dtype not in DTYPE_BYTES:
        return f"tensor {name!r} has unknown dtype {dtype!r}"
    if not isinstance(shape, list) or not all(_count(d) for d in shape):
        return f"tensor {name!r} has an invalid shape {shape!r}"
    if (
        not isinstance(offs, list)
        or len(offs) != 2
        or not all(_count(o) for o in offs)
        or offs[0] > offs[1]
    ):
        return f"tensor {name!r} has invalid data_offsets {offs!r}"
    numel = 1
    for d in shape:
        numel *= d
    want = numel * DTYPE_BYTES[dtype]
    if offs[1] - offs[0] != want:
        return (
            f"tensor {name!r} spans {offs[1] - offs[0]} bytes but shape {shape} of {dtype} "
            f"needs {want:g}"
        )
    return None


def _count(value: Any) -> bool:
    """A non-negative JSON integer that fits the format's u64 (``true`` is no number)."""
    return type(value) is int and 0 <= value < 1 << 64
