"""Zstandard (``.zst``) and LZ4 frame (``.lz4``) streams: decompressed as they are read
(never whole in memory) and scanned as the file they hold (a pickle, a tar of weights).

Every decompressed byte counts against the scan's budget, as for gzip, bz2 and xz.
"""

from __future__ import annotations

import io
from typing import Any

from mlwarden.supplychain.formats.base import FormatScanner, Scan
from mlwarden.supplychain.stream import Source, TooLarge, Truncated

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
LZ4_MAGIC = b"\x04\x22\x4d\x18"
CHUNK = 1 << 20


#: compressed bytes fed per call: a zstd decompressor has no output cap, and an RLE block
#: of 4 bytes makes 128 KiB, so 2 KiB of input yields at most 64 MiB in one call
ZSTD_STEP = 2048


class Frames(io.RawIOBase):
    """The decompressed content of zstd or LZ4 frames (one or more, back to back), read
    from ``src`` as needed, at most ``limit`` bytes; a frame cut short raises Truncated."""

    def __init__(self, src: Source, kind: str, limit: int) -> None:
        self.src, self.kind, self.limit = src, kind, limit
        self.produced = 0
        self.pending = b""
        self.d: Any = self._new()
        self.started = False  #: the current frame has consumed input
        self.carry = b""  #: input read past the end of the last frame

    def _new(self) -> Any:
        if self.kind == "zstd":
            import zstandard

            return zstandard.ZstdDecompressor().decompressobj()
        import lz4.frame

        return lz4.frame.LZ4FrameDecompressor()

    def readable(self) -> bool:
        return True

    def _input(self, n: int) -> bytes:
        if self.carry:
            raw, self.carry = self.carry, b""
            return raw
        raw = self.src.peek(n)
        self.src.skip(len(raw))
        return raw

    def _step(self) -> bytes | None:
        """More output; None at the clean end of the last frame."""
        if self.kind == "lz4" and not self.d.needs_input and self.started:
            raw = b""  # it still holds input whose output was capped
        else:
            raw = self._input(ZSTD_STEP if self.kind == "zstd" else CHUNK)
        if not raw and (not self.started or self.d.eof):
            return None
        if not raw and self.kind == "zstd":
            raise Truncated(f"{self.kind} stream ends inside a frame")
        self.started = True
        try:
            if self.kind == "zstd":
                out = self.d.decompress(raw)
            else:
                out = self.d.decompress(raw, max_length=CHUNK)
                if not raw and not out and self.d.needs_input:
                    raise Truncated(f"{self.kind} stream ends inside a frame")
        except RuntimeError as exc:  # ZstdError, LZ4 frame errors
            raise Truncated(f"corrupt {self.kind} data ({exc})") from None
        if self.d.eof:
            self.carry = bytes(self.d.unused_data or b"")  # the start of the next frame
            self.d, self.started = self._new(), False
        return bytes(out)

    def readinto(self, b: Any) -> int:
        while not self.pending:
            out = self._step()
            if out is None:
                return 0
            self.pending = out
        n = min(len(b), len(self.pending))
        b[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        self.produced += n
        if self.produced > self.limit:
            raise TooLarge(f"decompressed data exceeds the limit of {self.limit} bytes")
        return n


def _scanner(kind: str) -> Any:
    def scan(src: Source, scan: Scan) -> str:
        stream = Frames(src, kind, scan.budget())
        inner = scan.nested(io.BufferedReader(stream, CHUNK), None, "")  # type: ignore[arg-type]
        scan.charge(stream.produced)
        return f"{inner}+{kind}"

    scan.__doc__ = f"Scan the stream {kind} frames hold."
    return scan


ZSTD = FormatScanner("zstd", lambda head, size: head.startswith(ZSTD_MAGIC), _scanner("zstd"))
LZ4 = FormatScanner("lz4", lambda head, size: head.startswith(LZ4_MAGIC), _scanner("lz4"))
