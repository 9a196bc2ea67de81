"""A zip reader that tolerates what PyTorch's loader tolerates.

Python's :mod:`zipfile` refuses members whose CRC is wrong or whose flag bits claim
encryption, while ``torch.load`` (miniz) reads them anyway — a known way to slip a
pickle past scanners built on :mod:`zipfile`. This reader parses the central
directory itself (ZIP64 included), ignores CRCs and flag bits (reporting them), and
falls back to walking local headers when the central directory is missing. It never
reads a member it is not asked for, so a multi-GB checkpoint costs only its pickles.

Format reference: PKWARE APPNOTE.TXT 6.3.10, sections 4.3.7 (local header),
4.3.12 (central directory), 4.3.14-16 (ZIP64 end records).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import IO

from mlwarden.supplychain.stream import Decompressed, Window

EOCD = b"PK\x05\x06"
EOCD64 = b"PK\x06\x06"
EOCD64_LOC = b"PK\x06\x07"
CENTRAL = b"PK\x01\x02"
LOCAL = b"PK\x03\x04"
MAX_ENTRIES = 200_000

METHODS = {0: "stored", 8: "deflate", 12: "bz2"}


class ZipFormatError(Exception):
    """The archive cannot be read (message says why)."""


@dataclass
class ZipEntry:
    name: str
    method: int
    flags: int
    csize: int
    usize: int
    crc: int
    header_offset: int
    data_offset: int = -1
    local_name: str | None = None

    @property
    def is_dir(self) -> bool:
        return self.name.endswith("/")


def read_entries(f: IO[bytes], size: int) -> tuple[list[ZipEntry], list[str]]:
    """Entries of the archive and the irregularities noticed (as messages)."""
    notes: list[str] = []
    try:
        entries = _central_directory(f, size, notes)
    except ZipFormatError as exc:
        notes.append(f"central directory unreadable ({exc}); members found by local headers")
        entries = _walk_local_headers(f, size)
    confused: list[str] = []
    for e in entries:
        _locate(f, size, e, confused)
    if confused:
        more = f" (and {len(confused) - 1} more)" if len(confused) > 1 else ""
        notes.append(f"{confused[0]}{more}")
    overlap = _overlapping(entries)
    if overlap:
        notes.append(overlap)
    slip = [e.name for e in entries if _escapes(e.name)]
    if slip:
        more = f" (and {len(slip) - 1} more)" if len(slip) > 1 else ""
        notes.append(
            f"member name {slip[0]!r}{more} is absolute or climbs out with '..': "
            "extracting the archive would write outside its folder (zip slip)"
        )
    return entries, notes


def _escapes(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    drive = len(parts[0]) == 2 and parts[0][1] == ":"  # a drive letter
    return name.startswith(("/", "\\")) or drive or ".." in parts


def _overlapping(entries: list[ZipEntry]) -> str | None:
    """One note when members' byte ranges overlap: several entries pointing at the same
    data, or one member's data holding the next one's header (David Fifield's
    non-recursive zip bomb). No archiver writes either; Python's zipfile refuses them."""
    count = 0
    first = ""
    end, owner = -1, ""
    for e in sorted(entries, key=lambda e: (e.header_offset, e.data_offset)):
        if e.header_offset < end:
            count += 1
            first = first or f"{owner!r} and {e.name!r}"
        stop = e.data_offset + e.csize
        if stop > end:
            end, owner = stop, e.name
    if not count:
        return None
    return (
        f"{count} member(s) overlap another member's bytes, first {first} "
        "(overlapping entries, a zip-bomb technique)"
    )


def _tail(f: IO[bytes], size: int) -> tuple[bytes, int]:
    """The end of the file holding its last end-of-central-directory record, and where
    that record starts in it (-1: none in the last 64 KiB + 22 bytes, the most an
    archive comment allows).

    Archives rarely carry a comment, so the last KiB is read first; the full window is
    read only when the record is not found there with the 20 bytes before it (where a
    ZIP64 locator sits).
    """
    short = min(size, 1024)
    f.seek(size - short)
    tail = f.read(short)
    pos = tail.rfind(EOCD)
    if pos >= 20 or short == size:
        return tail, pos
    tail_len = min(size, 65535 + 22)
    f.seek(size - tail_len)
    tail = f.read(tail_len)
    return tail, tail.rfind(EOCD)


def has_central_directory(f: IO[bytes], size: int) -> bool:
    """True when the file ends with a readable zip central directory (a zip, or a polyglot)."""
    if _tail(f, size)[1] < 0:
        return False
    try:
        return bool(_central_directory(f, size, []))
    except (ZipFormatError, struct.error, OSError, ValueError):
        return False


def _central_directory(f: IO[bytes], size: int, notes: list[str]) -> list[ZipEntry]:
    tail, pos = _tail(f, size)
    if pos < 0 or len(tail) - pos < 22:
        raise ZipFormatError("no end-of-central-directory record")
    eocd_at = size - len(tail) + pos
    (_, _, _, n_entries, cd_size, cd_offset, _) = struct.unpack(
        "<HHHHIIH", tail[pos + 4 : pos + 22]
    )
    zip64 = n_entries == 0xFFFF or cd_size == 0xFFFFFFFF or cd_offset == 0xFFFFFFFF
    loc = tail.rfind(EOCD64_LOC, 0, pos)
    if loc >= 0 and pos - loc == 20:
        (_, eocd64_off, _) = struct.unpack("<IQI", tail[loc + 4 : loc + 20])
        f.seek(eocd64_off)
        rec = f.read(56)
        if rec[:4] == EOCD64 and len(rec) == 56:
            n_entries, _, cd_size, cd_offset = struct.unpack("<QQQQ", rec[24:56])
            eocd_at = eocd64_off
        elif zip64:
            raise ZipFormatError("ZIP64 end record missing")
    elif zip64:
        raise ZipFormatError("ZIP64 sizes without a ZIP64 end record")
    shift = eocd_at - cd_size - cd_offset  # bytes prepended to the archive
    if shift < 0:
        raise ZipFormatError("central directory offset points past its end record")
    if shift:
        notes.append(f"{shift} bytes precede the archive")
    if n_entries > MAX_ENTRIES:
        raise ZipFormatError(f"{n_entries} entries (limit {MAX_ENTRIES})")
    f.seek(cd_offset + shift)
    cd = f.read(cd_size)
    if len(cd) != cd_size:
        raise ZipFormatError("central directory truncated")
    entries: list[ZipEntry] = []
    p = 0
    while p + 46 <= len(cd) and cd[p : p + 4] == CENTRAL:
        (flags, method, _, _, crc, csize, usize, nlen, xlen, clen) = struct.unpack(
            "<HHHHIIIHHH", cd[p + 8 : p + 34]
        )
        (offset,) = struct.unpack("<I", cd[p + 42 : p + 46])
        name = _decode(cd[p + 46 : p + 46 + nlen], flags)
        extra = cd[p + 46 + nlen : p + 46 + nlen + xlen]
        usize, csize, offset = _zip64_extra(extra, usize, csize, offset)
        entries.append(ZipEntry(name, method, flags, csize, usize, crc, offset + shift))
        p += 46 + nlen + xlen + clen
        if len(entries) > MAX_ENTRIES:
            raise ZipFormatError(f"more than {MAX_ENTRIES} entries")
    if len(entries) != n_entries:
        notes.append(
            f"end record declares {n_entries} entries, central directory holds {len(entries)}"
        )
    if not entries and n_entries:
        raise ZipFormatError("central directory has no readable entries")
    return entries


def _zip64_extra(extra: bytes, usize: int, csize: int, offset: int) -> tuple[int, int, int]:
    p = 0
    while p + 4 <= len(extra):
        tag, ln = struct.unpack("<HH", extra[p : p + 4])
        body = extra[p + 4 : p + 4 + ln]
        if tag == 1:
            q = 0
            if usize == 0xFFFFFFFF and q + 8 <= len(body):
                (usize,) = struct.unpack("<Q", body[q : q + 8])
                q += 8
            if csize == 0xFFFFFFFF and q + 8 <= len(body):
                (csize,) = struct.unpack("<Q", body[q : q + 8])
                q += 8
            if offset == 0xFFFFFFFF and q + 8 <= len(body):
                (offset,) = struct.unpack("<Q", body[q : q + 8])
        p += 4 + ln
    return usize, csize, offset


def _decode(raw: bytes, flags: int) -> str:
    return raw.decode("utf-8" if flags & 0x800 else "cp437", "replace")


def _locate(f: IO[bytes], size: int, e: ZipEntry, notes: list[str]) -> None:
    f.seek(e.header_offset)
    head = f.read(30)
    if len(head) < 30 or head[:4] != LOCAL:
        raise ZipFormatError(f"member {e.name!r}: no local header at offset {e.header_offset}")
    nlen, xlen = struct.unpack("<HH", head[26:30])
    local_name = _decode(f.read(nlen), e.flags)
    e.local_name = local_name
    if local_name != e.name:
        notes.append(
            f"member {e.name!r} is named {local_name!r} in its local header (name confusion)"
        )
    e.data_offset = e.header_offset + 30 + nlen + xlen
    if e.data_offset + e.csize > size:
        raise ZipFormatError(f"member {e.name!r} extends past the end of the file")


def _walk_local_headers(f: IO[bytes], size: int) -> list[ZipEntry]:
    """Recover members from local headers alone (central directory damaged or missing)."""
    entries: list[ZipEntry] = []
    pos = 0
    while pos + 30 <= size and len(entries) < MAX_ENTRIES:
        f.seek(pos)
        head = f.read(30)
        if head[:4] != LOCAL:
            break
        (flags, method, _, _, crc, csize, usize, nlen, xlen) = struct.unpack(
            "<HHHHIIIHH", head[6:30]
        )
        name = _decode(f.read(nlen), flags)
        extra = f.read(xlen)
        usize, csize, _ = _zip64_extra(extra, usize, csize, 0)
        data = pos + 30 + nlen + xlen
        if flags & 0x8 and csize == 0:
            csize = _find_member_end(f, data, size, method)
        entries.append(ZipEntry(name, method, flags, csize, usize, crc, pos))
        pos = data + csize
        f.seek(pos)
        if f.read(4) == b"PK\x07\x08":
            pos += 16
        elif flags & 0x8:
            pos += 12
    if not entries:
        raise ZipFormatError("no zip members found")
    return entries


def _find_member_end(f: IO[bytes], data: int, size: int, method: int) -> int:
    """Length of a member written with a data descriptor (sizes not in its header)."""
    if method == 8:
        import zlib

        d = zlib.decompressobj(-15)
        f.seek(data)
        fed = 0
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                raise ZipFormatError("a compressed member ends before its data does (truncated)")
            fed += len(chunk)
            d.decompress(chunk, 1 << 16)
            while d.unconsumed_tail and not d.eof:
                d.decompress(d.unconsumed_tail, 1 << 16)
            if d.eof:
                return fed - len(d.unused_data)
    f.seek(data)
    buf = f.read(min(size - data, 1 << 26))
    for sig in (b"PK\x07\x08", LOCAL, CENTRAL):
        i = buf.find(sig)
        if i >= 0:
            return i
    if len(buf) == size - data:
        raise ZipFormatError("a member runs to the end of the file with no end marker (truncated)")
    return len(buf)


def open_member(f: IO[bytes], e: ZipEntry, limit: int) -> tuple[IO[bytes], int | None]:
    """A readable stream of the member's bytes and its length when trustworthy."""
    raw = Window(f, e.data_offset, e.csize)
    if e.method == 0:
        return raw, e.csize  # type: ignore[return-value]
    if e.method == 8:
        return Decompressed(raw, "deflate", limit), None  # type: ignore[arg-type,return-value]
    if e.method == 12:
        return Decompressed(raw, "bz2", limit), None  # type: ignore[arg-type,return-value]
    if e.method == 14:  # LZMA, as Python's zipfile (and so numpy.load's npz) reads it
        head = raw.read(4)
        if len(head) < 4:
            raise ZipFormatError(f"member {e.name!r}: LZMA header cut short")
        props = raw.read(int.from_bytes(head[2:4], "little"))
        stream = Decompressed(raw, "zip-lzma", limit, props=props)  # type: ignore[arg-type]
        return stream, None  # type: ignore[return-value]
    raise ZipFormatError(f"member {e.name!r} uses unsupported compression method {e.method}")
