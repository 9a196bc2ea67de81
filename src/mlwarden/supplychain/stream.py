"""Buffered, position-tracking readers that never hold a whole file in memory.

:class:`Source` reads a binary file object in chunks (1 MiB by default) and skips
large payloads by seeking when it can, so scanning a multi-GB pickle costs a few
MiB of memory. :class:`Window` exposes a byte range of a file (a stored zip member)
as its own seekable file; :class:`Decompressed` streams a zlib/gzip/bz2/lzma/raw
deflate payload with a cap on the bytes produced (decompression bombs).
"""

from __future__ import annotations

import bz2
import io
import lzma
import os
import zlib
from typing import IO, Any

CHUNK = 1 << 20
FIRST_CHUNK = 64 << 10


class Truncated(Exception):
    """The stream ended before the data it declared."""


class TooLarge(Exception):
    """A decompressed stream produced more bytes than the scan allows."""


class Source:
    """Read exact byte counts, lines and skips from a binary stream, tracking the offset."""

    def __init__(self, f: IO[bytes], size: int | None = None, chunk: int = CHUNK) -> None:
        self.f = f
        self.size = size  #: total length when known (real files, stored members)
        self.chunk = min(chunk, FIRST_CHUNK)  # small first read: most sniffs stop there
        self.full_chunk = chunk
        self.buf = b""
        self.i = 0
        self.base = 0  #: stream offset of ``buf[0]``
        self.seekable = size is not None and _seekable(f)

    @property
    def pos(self) -> int:
        return self.base + self.i

    def remaining(self) -> int | None:
        return None if self.size is None else self.size - self.base - self.i

    def _fill(self, need: int) -> bool:
        """Make at least ``need`` bytes available from ``i``; False at end of stream."""
        have = len(self.buf) - self.i
        if have >= need:
            return True
        parts = [self.buf[self.i :]]
        self.base += self.i
        self.i = 0
        while have < need:
            data = self.f.read(max(self.chunk, need - have))
            self.chunk = self.full_chunk
            if not data:
                self.buf = b"".join(parts)
                return False
            parts.append(data)
            have += len(data)
        self.buf = b"".join(parts)
        return True

    def read(self, n: int) -> bytes:
        i = self.i
        j = i + n
        if n >= 0 and j <= len(self.buf):
            self.i = j
            return self.buf[i:j]
        if n < 0:
            raise Truncated(f"negative length {n}")
        if not self._fill(n):
            raise Truncated(f"needed {n} bytes at offset {self.pos}, stream ended")
        out = self.buf[self.i : self.i + n]
        self.i += n
        return out

    def byte(self) -> int:
        """The next byte, or -1 at the end of the stream."""
        if self.i < len(self.buf):
            b = self.buf[self.i]
            self.i += 1
            return b
        if not self._fill(1):
            return -1
        b = self.buf[self.i]
        self.i += 1
        return b

    def peek(self, n: int) -> bytes:
        self._fill(n)
        return self.buf[self.i : self.i + n]

    def readline(self, limit: int = 1 << 16) -> bytes:
        """Bytes up to (not including) the next newline; Truncated if none within ``limit``."""
        while True:
            j = self.buf.find(b"\n", self.i)
            if j >= 0:
                line = self.buf[self.i : j]
                self.i = j + 1
                return line
            if len(self.buf) - self.i > limit:
                raise Truncated(f"line longer than {limit} bytes at offset {self.pos}")
            if not self._fill(len(self.buf) - self.i + 1):
                raise Truncated(f"line at offset {self.pos} has no newline before the end")

    def skip(self, n: int) -> None:
        """Skip ``n`` bytes, seeking when possible; Truncated past the end."""
        if n < 0:
            raise Truncated(f"negative length {n}")
        have = len(self.buf) - self.i
        if n <= have:
            self.i += n
            return
        rem = self.remaining()
        if rem is not None and n > rem:
            raise Truncated(f"{n} bytes declared at offset {self.pos}, only {rem} remain")
        n -= have
        self.base += len(self.buf)
        self.buf, self.i = b"", 0
        if self.seekable:
            self.f.seek(n, os.SEEK_CUR)
            self.base += n
            return
        while n:
            data = self.f.read(min(n, self.chunk))
            if not data:
                raise Truncated(f"stream ended {n} bytes short of a declared payload")
            n -= len(data)
            self.base += len(data)

    def at_eof(self) -> bool:
        return not self._fill(1)


def _seekable(f: IO[bytes]) -> bool:
    try:
        return bool(f.seekable())
    except (AttributeError, OSError, ValueError):
        return False


class Window(io.RawIOBase):
    """Bytes ``[offset, offset + length)`` of a seekable file as a file of their own."""

    def __init__(self, f: IO[bytes], offset: int, length: int) -> None:
        self.f = f
        self.offset = offset
        self.length = length
        self.p = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.p

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence == 0:
            self.p = pos
        elif whence == 1:
            self.p += pos
        else:
            self.p = self.length + pos
        self.p = max(0, self.p)
        return self.p

    def readinto(self, b: Any) -> int:
        n = min(len(b), self.length - self.p)
        if n <= 0:
            return 0
        self.f.seek(self.offset + self.p)
        data = self.f.read(n)
        b[: len(data)] = data
        self.p += len(data)
        return len(data)


class Decompressed(io.RawIOBase):
    """A streaming decompressor as a readable file, producing at most ``limit`` bytes.

    ``kind`` is ``zlib``, ``deflate`` (raw, as in zip), ``gzip``, ``bz2``, ``xz`` or
    ``lzma`` (the legacy .lzma container). Corrupt input raises :class:`Truncated`.

    Like CPython's ``BZ2File``, ``LZMAFile`` and ``GzipFile``, it reads every stream of a
    concatenation, not only the first: a new stream starts where one ends, and trailing
    bytes that do not start one end the data (bz2 and lzma ignore them). ``streams``
    counts the streams read, ``trailing`` is True when any byte followed the first one
    (joblib's own zlib/gzip reader loops forever on such files).
    """

    def __init__(self, f: IO[bytes], kind: str, limit: int, props: bytes = b"") -> None:
        self.f: Any = f
        self.kind = kind
        self.props = props  #: LZMA properties of a zip member (method 14)
        self.limit = limit
        self.produced = 0
        self.pending = b""
        self.tail = b""  #: compressed input zlib has not consumed yet (output was capped)
        self.d: Any = self._new(first=True)
        self.done = False
        self.streams = 1
        self.trailing = False

    def _new(self, first: bool = False) -> Any:
        if self.kind == "zlib":
            return zlib.decompressobj()
        if self.kind == "deflate":
            return zlib.decompressobj(-15)
        if self.kind == "gzip":
            return zlib.decompressobj(16 + 15)
        if self.kind == "bz2":
            return bz2.BZ2Decompressor()
        if self.kind == "zip-lzma":
            try:
                spec = lzma._decode_filter_properties(lzma.FILTER_LZMA1, self.props)  # type: ignore[attr-defined]
            except (lzma.LZMAError, ValueError) as exc:
                raise Truncated(f"bad LZMA properties in a zip member ({exc})") from None
            return lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[spec])
        if self.kind in ("xz", "lzma"):
            if first:
                fmt = lzma.FORMAT_XZ if self.kind == "xz" else lzma.FORMAT_ALONE
            else:
                fmt = lzma.FORMAT_AUTO  # LZMAFile: each later stream, xz or .lzma alike
            return lzma.LZMADecompressor(format=fmt)
        raise ValueError(f"unknown compression {self.kind!r}")

    def readable(self) -> bool:
        return True

    def _next_stream(self) -> None:
        """At the end of a stream: start the next one if input follows, else finish."""
        rest = self.tail or self.d.unused_data or self.f.read(CHUNK)
        self.tail = b""
        if not rest or self.kind in ("deflate", "zip-lzma"):  # a zip member ends with its stream
            self.done = True
            return
        self.trailing = True
        if self.kind == "gzip":
            rest = rest.lstrip(b"\0")  # GzipFile skips zero padding between members
            while not rest:
                more = self.f.read(CHUNK)
                if not more:
                    self.done = True
                    return
                rest = more.lstrip(b"\0")
        self.d = self._new()
        try:
            self.pending = self._feed(rest)
        except (zlib.error, OSError, lzma.LZMAError, EOFError):
            self.done = True  # not another stream: the readers stop (bz2/lzma) or fail here
            return
        self.streams += 1

    def _feed(self, raw: bytes) -> bytes:
        if self.kind in ("bz2", "xz", "lzma", "zip-lzma"):
            out: bytes = self.d.decompress(raw, max_length=CHUNK) if raw or not self.d.eof else b""
            if not raw and not out and not self.d.eof and self.d.needs_input:
                raise Truncated(f"{self.kind} stream ends early")
            return out
        out = self.d.decompress(raw, CHUNK)
        while self.d.unconsumed_tail and len(out) < CHUNK:
            out += self.d.decompress(self.d.unconsumed_tail, CHUNK - len(out))
        self.tail = self.d.unconsumed_tail
        if not self.d.eof and not raw and not out:
            raise Truncated(f"{self.kind} stream ends early")
        return out

    def readinto(self, b: Any) -> int:
        want = len(b)
        while not self.pending and not self.done:
            if self.d.eof:  # a stream's end comes only after all of its output
                self._next_stream()
                continue
            if self.tail:
                raw, self.tail = self.tail, b""
            elif self.kind in ("bz2", "xz", "lzma", "zip-lzma") and not self.d.needs_input:
                raw = b""  # it still holds input: more would only pile up inside it
            else:
                raw = self.f.read(CHUNK)
            try:
                self.pending = self._feed(raw)
            except (zlib.error, OSError, lzma.LZMAError, EOFError) as exc:
                raise Truncated(f"corrupt {self.kind} data ({exc})") from None
            if not raw and not self.pending and not self.d.eof:
                self.done = True
        n = min(want, len(self.pending))
        b[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        self.produced += n
        if self.produced > self.limit:
            raise TooLarge(f"decompressed data exceeds the limit of {self.limit} bytes")
        return n
