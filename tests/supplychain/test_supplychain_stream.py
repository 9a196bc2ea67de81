"""Streaming decompression: long outputs, capped reads, truncation."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import pickle
import zlib

import numpy as np
import pytest

from mlwarden.supplychain import scan_bytes
from mlwarden.supplychain import stream as st


@pytest.mark.parametrize(
    ("kind", "compress"),
    [
        ("zlib", zlib.compress),
        ("gzip", gzip.compress),
        ("bz2", bz2.compress),
        ("xz", lzma.compress),
        ("lzma", lambda d: lzma.compress(d, format=lzma.FORMAT_ALONE)),
    ],
)
def test_thousands_of_capped_reads_do_not_recurse(
    monkeypatch: pytest.MonkeyPatch, kind: str, compress: object
) -> None:
    # a 1 KiB output cap turns 4 MB of zeros into ~4,000 reads: the old reader nested one
    # wrapper per read and hit RecursionError (at the real 1 MiB cap: outputs over ~1 GB)
    monkeypatch.setattr(st, "CHUNK", 1024)
    raw = pickle.dumps({"w": np.zeros(500_000)}, protocol=4)
    data = compress(raw)  # type: ignore[operator]
    d = st.Decompressed(io.BytesIO(data), kind, 1 << 30)
    out = bytearray()
    buf = bytearray(4096)
    while n := d.readinto(buf):
        out += buf[:n]
    assert bytes(out) == raw
    assert scan_bytes(data).verdict.value == "safe"


def test_truncated_streams_are_errors() -> None:
    raw = pickle.dumps(list(range(10_000)), protocol=4)
    for data in (zlib.compress(raw), gzip.compress(raw), bz2.compress(raw), lzma.compress(raw)):
        assert scan_bytes(data[: len(data) // 2]).verdict.value == "error"
