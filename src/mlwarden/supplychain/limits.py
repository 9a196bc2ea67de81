"""Scan limits: the bounds that keep a hostile file from exhausting time, memory or
disk, the exception raised when one is hit, and the bounded read every format uses.

Example::

    data = read_bounded(src, Limits().max_json, "JSON document")  # ScanLimit past 64 MiB
"""

from __future__ import annotations

from dataclasses import dataclass

from mlwarden.supplychain.stream import Source


@dataclass
class Limits:
    """Bounds that keep a hostile archive from exhausting time, memory or disk."""

    max_depth: int = 4  #: archives nested in archives
    max_total_bytes: int = 64 << 30  #: decompressed bytes read per top-level file
    max_ratio: float = 200.0  #: uncompressed/compressed above which a big member is a bomb
    ratio_floor: int = 256 << 20  #: ratio check applies to members bigger than this
    max_spool: int = 4 << 30  #: bytes copied to a temporary file to reopen a nested archive
    max_json: int = 64 << 20  #: largest JSON/ONNX member parsed in memory
    #: decompressed bytes per byte of a top-level zip, beyond ``archive_floor``: deflate
    #: alone tops out near 1032:1, so more needs overlapping members or nesting (bombs)
    archive_ratio: float = 1100.0
    archive_floor: int = 1 << 30  #: decompressed bytes any zip may produce
    #: bytes of each top-level file searched for embedded executables (from its start)
    max_exec_search: int = 64 << 20


DEFAULT_LIMITS = Limits()


class ScanLimit(Exception):
    """A limit of :class:`Limits` was hit."""


def read_bounded(src: Source, limit: int, what: str) -> bytes:
    """The rest of ``src``, at most ``limit`` bytes (``what`` names it in the error)."""
    parts: list[bytes] = []
    total = 0
    while True:
        chunk = src.peek(1 << 20)
        if not chunk:
            return b"".join(parts)
        src.skip(len(chunk))
        total += len(chunk)
        if total > limit:
            raise ScanLimit(f"{what} larger than {limit} bytes")
        parts.append(chunk)
