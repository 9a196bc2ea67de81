"""RAR archives: recognised, never scanned (no free RAR decoder ships with Python), so
an error with the reason, never safe. Extract the archive and scan its files instead."""

from __future__ import annotations

from mlwarden.supplychain.formats.base import FormatScanner, NotScannable, Scan
from mlwarden.supplychain.stream import Source

MAGICS = (b"Rar!\x1a\x07\x00", b"Rar!\x1a\x07\x01\x00")


def scan_rar(src: Source, scan: Scan) -> str:
    """Refuse a RAR archive with one clear line."""
    raise NotScannable(
        "RAR archive: mlwarden cannot read RAR members, so they were not checked; "
        "extract it and scan the files"
    )


FORMAT = FormatScanner("rar", lambda head, size: head.startswith(MAGICS), scan_rar)
