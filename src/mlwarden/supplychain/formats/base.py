"""The small interface every format scanner implements, and what it may use of the scan.

A format module recognises its files by content (``recognise(head, size)`` on the first
bytes of a stream), scans them with limits (``scan(src, scan)``) and reports through
``scan.sink``. It never imports the dispatcher (:mod:`mlwarden.supplychain.scanner`):
what it needs of it (scanning an archive member, charging decompressed bytes to the
budget) arrives as the :class:`Scan` object. A format whose first byte is also a pickle
opcode is run through the pickle machine by the dispatcher first (polyglots).

Example::

    def recognise(head: bytes, size: int | None) -> bool:
        return head.startswith(b"7z\\xbc\\xaf\\x27\\x1c")

    FORMAT = FormatScanner("7z", recognise, scan_7z)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from mlwarden.supplychain.results import Sink
from mlwarden.supplychain.stream import Source


class NotScannable(Exception):
    """The file is of a known kind that cannot be checked (RAR, encrypted members)."""


class Scan(Protocol):
    """What a format scanner may use of the scan in progress."""

    @property
    def sink(self) -> Sink: ...

    @property
    def limits(self) -> Any: ...

    @property
    def path(self) -> Path | None:
        """The file on disk, when this stream is a whole file (not a member, not bytes)."""
        ...

    def nested(self, f: IO[bytes], size: int | None, name: str) -> str:
        """Scan ``f`` (an archive member called ``name``) as a file of its own."""
        ...

    def charge(self, n: int) -> None:
        """Count ``n`` decompressed bytes against the budget; raises past it."""
        ...

    def budget(self) -> int:
        """Decompressed bytes still allowed for this top-level file."""
        ...


@dataclass(frozen=True)
class FormatScanner:
    """One format: its name, how it is recognised and how it is scanned."""

    name: str
    recognise: Callable[[bytes, int | None], bool]
    scan: Callable[[Source, Scan], str]
    #: the scanner needs a seekable ``src.f`` at offset 0 (archives read from their end);
    #: the dispatcher spools a stream that is not one to a temporary file first
    seekable: bool = False


def u32le(data: bytes, at: int = 0) -> int:
    """The little-endian unsigned 32-bit integer at ``at``."""
    return int.from_bytes(data[at : at + 4], "little")
