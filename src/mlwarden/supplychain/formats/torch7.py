"""Torch7 / Lua Torch files (``.t7``, ``torch.save`` of Lua Torch) walked object by
object (MLW-SCN-024), following torch7's ``File.lua`` binary format.

``torch.load`` rebuilds functions from dumped Lua byte code (``loadstring``: Lua 5.1
and LuaJIT do not verify byte code, so crafted byte code escapes the VM; the function
itself runs when the model calls it): critical. Objects of classes outside Torch's own
packages run that class's Lua ``read`` method, which must be installed: high.
Tensors and storages are skipped by their declared sizes, never read.
"""

from __future__ import annotations

import re
import struct

from mlwarden.core.severity import Severity
from mlwarden.supplychain.formats.base import FormatScanner, Scan
from mlwarden.supplychain.stream import Source, Truncated

RULE = "MLW-SCN-024"
NIL, NUMBER, STRING, TABLE, TORCH, BOOLEAN, FUNCTION, LEGACY_RECUR, RECUR = range(9)
MAX_DEPTH = 200
MAX_OBJECTS = 10_000_000
#: packages whose classes ship with Lua Torch and its standard model libraries
KNOWN = ("torch.", "nn.", "cudnn.", "cunn.", "nngraph.", "rnn.", "dpnn.", "inn.", "cutorch.")
_ELEM = {"Double": 8, "Float": 4, "Half": 2, "Long": 8, "Int": 4, "Short": 2, "Char": 1,
         "Byte": 1, "Cuda": 4, "CudaDouble": 8, "CudaHalf": 2, "CudaLong": 8, "CudaInt": 4,
         "CudaShort": 2, "CudaChar": 1, "CudaByte": 1}  # fmt: skip
_TENSOR = re.compile(r"torch\.(\w*?)(Tensor|Storage)")


def _recognise(head: bytes, size: int | None) -> bool:
    if len(head) < 16 or head[4:8] != b"\x01\x00\x00\x00":
        return False
    if head[:4] == b"\x04\x00\x00\x00":  # a Torch object: a "V <n>" version string first
        n = int.from_bytes(head[8:12], "little")
        return 3 <= n <= 16 and head[12:14] == b"V "
    if head[:4] == b"\x03\x00\x00\x00":  # a table: its size, then a key's type tag
        return int.from_bytes(head[8:12], "little") < 1 << 24 and head[12] <= RECUR
    return False


class _Walk:
    def __init__(self, src: Source) -> None:
        self.src = src
        self.seen: set[int] = set()
        self.count = 0
        self.functions = 0
        self.classes: set[str] = set()

    def i32(self) -> int:
        return int(struct.unpack("<i", self.src.read(4))[0])

    def long(self) -> int:
        return int(struct.unpack("<q", self.src.read(8))[0])

    def string(self) -> str:
        n = self.i32()
        if n < 0:
            raise Truncated(f"negative string length at offset {self.src.pos}")
        if n > 4096:
            self.src.skip(n)
            return ""
        return self.src.read(n).decode("latin-1")

    def obj(self, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise Truncated(f"Torch7 objects nested deeper than {MAX_DEPTH} levels")
        self.count += 1
        if self.count > MAX_OBJECTS:
            raise Truncated(f"more than {MAX_OBJECTS} Torch7 objects")
        t = self.i32()
        if t == NIL:
            return
        if t in (NUMBER, BOOLEAN):
            self.src.skip(8 if t == NUMBER else 4)
            return
        if t == STRING:
            self.string()
            return
        if t not in (TABLE, TORCH, FUNCTION, LEGACY_RECUR, RECUR):
            raise Truncated(f"unknown Torch7 type tag {t} at offset {self.src.pos - 4}")
        index = self.i32()
        if index in self.seen:
            return  # a reference to an object read before
        self.seen.add(index)
        if t == TABLE:
            for _ in range(self.i32()):
                self.obj(depth + 1)
                self.obj(depth + 1)
        elif t == TORCH:
            self._torch(depth)
        else:
            self.functions += 1
            self.src.skip(max(self.i32(), 0))  # dumped byte code
            self.obj(depth + 1)  # upvalues

    def _torch(self, depth: int) -> None:
        version = self.string()
        name = self.string() if version.startswith("V ") else version
        m = _TENSOR.fullmatch(name)
        if m is not None and m.group(1) in _ELEM:
            elem = _ELEM[m.group(1)]
            if m.group(2) == "Tensor":
                dims = self.i32()
                if not 0 <= dims <= 64:
                    raise Truncated(f"{name} with {dims} dimensions")
                self.src.skip(16 * dims + 8)  # sizes, strides, storage offset
                self.obj(depth + 1)  # its storage
            else:
                n = self.long()
                if n < 0:
                    raise Truncated(f"{name} with a negative size")
                self.src.skip(n * elem)
            return
        if not name.startswith(KNOWN):
            self.classes.add(name)
        self.obj(depth + 1)  # the object's fields, a table


def scan_t7(src: Source, scan: Scan) -> str:
    """Walk a Torch7 file; report functions and classes outside Torch's packages."""
    walk = _Walk(src)
    walk.obj(0)
    if walk.functions:
        scan.sink.add(
            RULE,
            Severity.CRITICAL,
            f"{walk.functions} Lua function(s) stored as byte code: torch.load rebuilds them "
            "with loadstring (unverified byte code) and the model runs them when called",
        )
    for name in sorted(walk.classes)[:20]:
        scan.sink.add(
            RULE,
            Severity.HIGH,
            f"object of Lua class {name!r}, outside Torch's packages: torch.load runs that "
            "class's code to rebuild it",
            global_=name,
        )
    return "torch7"


FORMAT = FormatScanner("torch7", _recognise, scan_t7)
