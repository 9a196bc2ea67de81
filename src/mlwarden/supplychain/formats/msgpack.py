"""MessagePack documents: Flax/JAX checkpoints (``flax_model.msgpack``, written by
``flax.serialization.to_bytes``: a map of parameter names to arrays as extension type 1,
complex numbers as 2, NumPy scalars as 3).

MessagePack holds data only; nothing in it names code, and Flax rebuilds arrays from
(shape, dtype name, bytes). The whole stream is walked (one top-level value, nesting
capped, string/binary/extension payloads skipped by their lengths), so a file that only
starts like MessagePack is not passed: its first byte is also a pickle opcode, and the
dispatcher runs the pickle machine over it first.
"""

from __future__ import annotations

import io

from mlwarden.supplychain.formats.base import FormatScanner, Scan
from mlwarden.supplychain.stream import Source, Truncated

MAX_DEPTH = 512
_FIXED = {0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8, 0xD0: 1, 0xD1: 2, 0xD2: 4}
_FIXED[0xD3] = 8
_FIXEXT = {0xD4: 1, 0xD5: 2, 0xD6: 4, 0xD7: 8, 0xD8: 16}
_LEN = {0xC4: 1, 0xC5: 2, 0xC6: 4, 0xD9: 1, 0xDA: 2, 0xDB: 4}  # bin8/16/32, str8/16/32
_EXT = {0xC7: 1, 0xC8: 2, 0xC9: 4}
_MAP = (0xDE, 0xDF)


def _recognise(head: bytes, size: int | None) -> bool:
    """A map whose first key is a string, and the window walks as MessagePack."""
    if not head or not (0x81 <= head[0] <= 0x8F or head[0] in _MAP):
        return False
    key = head[1 if head[0] < 0x90 else 3 if head[0] == 0xDE else 5 :][:1]
    if not key or not (0xA1 <= key[0] <= 0xBF or key[0] in (0xD9, 0xDA, 0xDB)):
        return False
    try:
        walk(Source(io.BytesIO(head)))
    except Truncated as exc:
        return "ended" in str(exc)  # cut by the window, not malformed
    return size is None or size == len(head)


def walk(src: Source) -> None:
    """Walk one MessagePack value to its end; Truncated if malformed or cut short."""
    pending = [1]  # values still to read at each open level
    while pending:
        if pending[-1] == 0:
            pending.pop()
            continue
        pending[-1] -= 1
        b = src.byte()
        if b < 0:
            raise Truncated(f"MessagePack ended inside a value at offset {src.pos}")
        if b <= 0x7F or b >= 0xE0 or b in (0xC0, 0xC2, 0xC3):
            continue
        if b <= 0x8F:
            pending.append(2 * (b & 0x0F))
        elif b <= 0x9F:
            pending.append(b & 0x0F)
        elif b <= 0xBF:
            src.skip(b & 0x1F)
        elif b in _FIXED:
            src.skip(_FIXED[b])
        elif b in _FIXEXT:
            src.skip(1 + _FIXEXT[b])
        elif b in _LEN:
            src.skip(int.from_bytes(src.read(_LEN[b]), "big"))
        elif b in _EXT:
            src.skip(int.from_bytes(src.read(_EXT[b]), "big") + 1)
        elif b in (0xDC, 0xDD, *_MAP):
            n = int.from_bytes(src.read(2 if b in (0xDC, 0xDE) else 4), "big")
            pending.append(2 * n if b in _MAP else n)
        else:
            raise Truncated(f"byte 0xc1 (never used by MessagePack) at offset {src.pos - 1}")
        if len(pending) > MAX_DEPTH:
            raise Truncated(f"MessagePack nested deeper than {MAX_DEPTH} levels")


def scan_msgpack(src: Source, scan: Scan) -> str:
    """Walk the whole document; anything after its one value is refused."""
    walk(src)
    if not src.at_eof():
        raise Truncated(f"bytes after the MessagePack document at offset {src.pos}")
    return "msgpack"


FORMAT = FormatScanner("msgpack", _recognise, scan_msgpack)
