"""7-Zip archives (``.7z``), read with py7zr: every member is scanned as a file.

Limits are those of zip archives: the bytes the members declare count against the
decompressed-bytes budget before anything is extracted (a 7z of a few KB may declare
terabytes), members are extracted to temporary files capped at ``Limits.max_spool``
bytes in all, and nesting counts toward ``Limits.max_depth``. An archive with encrypted
members or an encrypted header cannot be checked: an error, never safe.
"""

from __future__ import annotations

import tempfile
from typing import IO, Any

from mlwarden.core.severity import Severity
from mlwarden.supplychain.formats.base import FormatScanner, NotScannable, Scan
from mlwarden.supplychain.stream import Source, TooLarge, Truncated

MAGIC = b"7z\xbc\xaf\x27\x1c"


def _recognise(head: bytes, size: int | None) -> bool:
    return head.startswith(MAGIC)


class _Spools:
    """A py7zr writer factory: each member goes to its own spooled temporary file, and
    writing stops with :class:`TooLarge` once ``limit`` bytes were written in all."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.written = 0
        self.files: dict[str, IO[bytes]] = {}

    def create(self, filename: str) -> Any:
        spool = tempfile.SpooledTemporaryFile(max_size=8 << 20)  # noqa: SIM115 (closed by scan_7z)
        self.files[filename] = spool  # type: ignore[assignment]
        return _Writer(self, spool)


class _Writer:
    def __init__(self, owner: _Spools, f: Any) -> None:
        self.owner, self.f = owner, f

    def write(self, s: bytes | bytearray) -> int:
        self.owner.written += len(s)
        if self.owner.written > self.owner.limit:
            raise TooLarge(f"7z members expand beyond {self.owner.limit} bytes")
        return int(self.f.write(s))

    def read(self, size: int | None = None) -> bytes:
        return bytes(self.f.read(size))

    def seek(self, offset: int, whence: int = 0) -> int:
        return int(self.f.seek(offset, whence))

    def flush(self) -> None:
        self.f.flush()

    def size(self) -> int:
        return self.owner.written

    def close(self) -> None:
        """Kept open: the scanner reads the member after extraction."""


def scan_7z(src: Source, scan: Scan) -> str:
    """Scan every member of a 7z archive (``src.f`` seekable, at offset 0)."""
    import py7zr
    from py7zr import exceptions as e7

    sink = scan.sink
    limits = scan.limits
    try:
        archive = py7zr.SevenZipFile(src.f, mode="r")
    except e7.PasswordRequired:
        raise NotScannable(
            "7z archive with an encrypted header: its members cannot be listed or checked "
            "without the password"
        ) from None
    except (e7.ArchiveError, e7.UnsupportedCompressionMethodError, OSError, ValueError) as exc:
        raise Truncated(f"7z archive unreadable ({type(exc).__name__}: {exc})") from None
    with archive:
        if archive.needs_password():
            raise NotScannable(
                "7z archive with encrypted members: their contents cannot be checked "
                "without the password"
            )
        infos = archive.list()
        total = sum(i.uncompressed for i in infos if not i.is_directory)
        compressed = max(src.size or 1, 1)
        cap = min(scan.budget(), max(limits.archive_floor, int(compressed * limits.archive_ratio)))
        if total > cap:
            sink.add(
                "MLW-SCN-010",
                Severity.HIGH,
                f"7z members declare {total} bytes from {compressed} (decompression bomb); "
                "not extracted",
            )
            return "7z"
        for info in infos:
            _note_name(info, sink)
        spools = _Spools(min(total, limits.max_spool))
        if total > limits.max_spool:
            raise TooLarge(f"7z members hold {total} bytes, over {limits.max_spool}")
        try:
            archive.extractall(factory=spools)  # type: ignore[arg-type]
        except TooLarge:
            raise TooLarge("7z members expand beyond the sizes they declare") from None
        except (e7.ArchiveError, e7.DecompressionError, e7.CrcError, OSError) as exc:
            raise Truncated(f"7z member unreadable ({type(exc).__name__}: {exc})") from None
    scan.charge(spools.written)
    try:
        for name, f in spools.files.items():
            size = f.seek(0, 2)
            f.seek(0)
            if size:
                scan.nested(f, size, name)
    finally:
        for f in spools.files.values():
            f.close()
    return "7z"


def _note_name(info: Any, sink: Any) -> None:
    name = str(info.filename)
    if info.is_symlink:
        sink.add("MLW-SCN-011", Severity.LOW, f"7z member {name!r} is a symbolic link")
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or ".." in parts:
        sink.add(
            "MLW-SCN-011",
            Severity.HIGH,
            f"7z member {name!r} extracts outside the folder (zip slip)",
        )


FORMAT = FormatScanner("7z", _recognise, scan_7z, seekable=True)
