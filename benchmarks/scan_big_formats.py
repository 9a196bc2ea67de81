"""Issue 14 benchmark: peak memory and time of ``mlwarden`` scanning a 1 GiB file of each
format family the scanner gained (target: peak RSS under 100 MB).

Each file holds 1 GiB of tensor payload, written in 1 MiB pieces into a temporary
folder (deleted afterwards; page cache warm): Core ML ``.mlmodel`` (an inner-product
layer with 1 GiB of packed float weights, then a custom layer the scan must reach), an
Orbax/TensorStore OCDBT node record, an MXNet ``.params`` NDArray, a Paddle
``.pdiparams`` LoDTensor, a Flax MessagePack ``bin 32``, a TensorRT engine (searched
throughout for embedded libraries), an OpenVINO ``.bin`` with its ``.xml``, and the
archives and compressions: 7z (stored), tar.zst, tar.lz4, a NeMo ``.nemo`` (tar.gz) and
a gzip R ``.rds`` double vector. Compressed containers hold 1 GiB *decompressed* (the
payload repeats a random 1 MiB block, so they are small on disk: the scan still reads
and decompresses the full GiB). Each file is scanned by ``scan_file`` in a fresh process
that prints its own peak RSS (``VmHWM``) and the RSS after imports.

    nice -n 10 timeout 3000 .venv/bin/python benchmarks/scan_big_formats.py
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

MIB = 1 << 20
#: payload bytes per file (MLW_BIG_BYTES overrides it for a quick smoke run)
GIB = int(os.environ.get("MLW_BIG_BYTES", 1 << 30)) // MIB * MIB


def _block() -> bytes:
    import numpy as np

    return np.random.default_rng(0).standard_normal(MIB // 4).astype(np.float32).tobytes()


def _payload(n: int = GIB) -> Iterator[bytes]:
    block = _block()
    for _ in range(n // MIB):
        yield block


def _write(path: Path, head: bytes, tail: bytes = b"", n: int = GIB) -> None:
    with path.open("wb") as f:
        f.write(head)
        for piece in _payload(n):
            f.write(piece)
        f.write(tail)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _msg(num: int, body_len: int) -> bytes:
    return _varint(num << 3 | 2) + _varint(body_len)


def coreml(d: Path) -> Path:
    """Model{1: version, 500: NeuralNetwork{1: layer(innerProduct 140: {20: weights
    {1: floatValue packed}}), 1: layer(custom 500: {10: className})}}."""
    weights = _msg(1, GIB)  # WeightParams.floatValue, packed
    ip_body = _msg(20, len(weights) + GIB)
    layer1 = b"\x0a\x02fc" + _msg(140, len(ip_body) + len(weights) + GIB)
    layer1_len = len(layer1) + len(ip_body) + len(weights) + GIB
    custom = _msg(10, 4) + b"Evil"
    layer2 = b"\x0a\x01c" + _msg(500, len(custom)) + custom
    nn_len = len(_msg(1, layer1_len)) + layer1_len + len(_msg(1, len(layer2))) + len(layer2)
    head = b"\x08\x04" + _msg(500, nn_len) + _msg(1, layer1_len) + layer1 + ip_body + weights
    path = d / "big.mlmodel"
    _write(path, head, _msg(1, len(layer2)) + layer2)
    return path


def ocdbt(d: Path) -> Path:
    path = d / "d" / "0123456789abcdef0123456789abcdef"
    path.parent.mkdir()
    (d / "manifest.ocdbt").write_bytes(b"")
    total = 14 + GIB + 4
    _write(path, b"\x0c\xdb\x20\xde" + struct.pack("<Q", total) + b"\x00\x00", b"\x00" * 4)
    return path


def mxnet(d: Path) -> Path:
    path = d / "big-0000.params"
    ndarray = struct.pack("<IIi", 0xF993FAC9, 0, 1) + struct.pack("<q", GIB // 4)
    ndarray += struct.pack("<ii", 1, 0) + struct.pack("<i", 0)  # cpu(0), float32
    _write(path, struct.pack("<QQQ", 0x112, 0, 1) + ndarray, struct.pack("<Q", 0))
    return path


def paddle(d: Path) -> Path:
    desc = b"\x08\x05" + b"\x10" + _varint(GIB // 4)  # FP32, one dimension
    head = struct.pack("<IQIi", 0, 0, 0, len(desc)) + desc
    path = d / "big.pdiparams"
    _write(path, head)
    return path


def flax_msgpack(d: Path) -> Path:
    head = b"\x81\xa6params\x81\xa6kernel" + b"\xc6" + struct.pack(">I", GIB)
    path = d / "flax_model.msgpack"
    _write(path, head)
    return path


def tensorrt(d: Path) -> Path:
    path = d / "big.engine"
    _write(path, b"ftrt" + bytes(60))
    return path


def openvino(d: Path) -> Path:
    (d / "openvino_model.xml").write_bytes(
        b'<?xml version="1.0"?>\n<net name="m" version="11"><layers/></net>\n'
    )
    path = d / "openvino_model.bin"
    _write(path, b"")
    return path


def _npy_header(n: int) -> bytes:
    """A NumPy 1.0 header for ``n`` bytes of float32 (padded to 64 bytes, as np.save)."""
    text = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({n // 4},), }}"
    text += " " * (64 - (10 + len(text) + 1) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode()


def _tar_to(f: IO[bytes], mode: str, name: str, extra: dict[str, bytes] | None = None) -> None:
    class Payload:
        def __init__(self) -> None:
            self.it = iter([_npy_header(GIB), *_payload()])
            self.buf = b""

        def read(self, n: int) -> bytes:
            while len(self.buf) < n:
                piece = next(self.it, None)
                if piece is None:
                    break
                self.buf += piece
            out, self.buf = self.buf[:n], self.buf[n:]
            return out

    with tarfile.open(fileobj=f, mode=mode) as t:  # type: ignore[call-overload]
        for member, data in (extra or {}).items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo(name)
        info.size = len(_npy_header(GIB)) + GIB
        t.addfile(info, Payload())  # type: ignore[arg-type]


def tar_zst(d: Path) -> Path:
    import zstandard

    path = d / "weights.tar.zst"
    with path.open("wb") as raw, zstandard.ZstdCompressor(level=1).stream_writer(raw) as z:
        _tar_to(z, "w|", "w.npy")
    return path


def tar_lz4(d: Path) -> Path:
    import lz4.frame

    path = d / "weights.tar.lz4"
    with lz4.frame.open(path, "wb") as z:
        _tar_to(z, "w|", "w.npy")
    return path


def nemo(d: Path) -> Path:
    path = d / "big.nemo"
    config = b"target: nemo.collections.asr.models.EncDecCTCModel\nsample_rate: 16000\n"
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1) as z:
        _tar_to(z, "w|", "./model_weights.ckpt.npy", {"./model_config.yaml": config})
    return path


def sevenzip(d: Path) -> Path:
    import py7zr

    src = d / "w.npy"
    _write(src, _npy_header(GIB))
    path = d / "weights.7z"
    with py7zr.SevenZipFile(path, "w", filters=[{"id": py7zr.FILTER_COPY}]) as z:
        z.write(src, "w.npy")
    src.unlink()
    return path


def rds(d: Path) -> Path:
    """R serialize version 2, XDR: a REALSXP of 128 Mi doubles, gzip level 1."""
    head = b"X\n" + struct.pack(">iii", 2, 0x040300, 0x020300)
    head += struct.pack(">ii", 14, GIB // 8)
    path = d / "model.rds"
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1) as z:
        z.write(head)
        for piece in _payload():
            z.write(piece)
        z.write(struct.pack(">i", 254))
    return path


FAMILIES: dict[str, Callable[[Path], Path]] = {
    "Core ML .mlmodel": coreml,
    "Orbax OCDBT node": ocdbt,
    "MXNet .params": mxnet,
    "Paddle .pdiparams": paddle,
    "Flax msgpack": flax_msgpack,
    "TensorRT engine": tensorrt,
    "OpenVINO .bin": openvino,
    "7z (stored)": sevenzip,
    "tar.zst": tar_zst,
    "tar.lz4": tar_lz4,
    "NeMo .nemo (tar.gz)": nemo,
    "R .rds (gzip)": rds,
}

CHILD = r"""
import json, sys, time
from pathlib import Path
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
from mlwarden.supplychain import scan_paths
rss0 = hwm()
t0, c0 = time.perf_counter(), time.process_time()
res = scan_paths([Path(p) for p in sys.argv[1:]])
f = [r for r in res.files if r.path == sys.argv[1]][0]
print(json.dumps({"seconds": time.perf_counter() - t0, "cpu": time.process_time() - c0,
                  "rss_mb": hwm(), "rss_import_mb": rss0, "format": f.format,
                  "verdict": f.verdict.value, "rules": sorted({i.rule for i in f.findings})}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="family names (substrings) to run")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args()
    rows: dict[str, dict[str, object]] = {}
    print(
        f"{'format':<22}{'on disk MB':>11}{'wall s':>8}{'CPU s':>7}{'peak RSS MB':>12}"
        f"{'after import':>13}  format / verdict"
    )
    for name, make in FAMILIES.items():
        if args.only and not any(o.lower() in name.lower() for o in args.only):
            continue
        with tempfile.TemporaryDirectory(prefix="mlw-big-") as tmp:
            t = time.perf_counter()
            path = make(Path(tmp))
            built = time.perf_counter() - t
            paths = [str(path)]
            if name.startswith("OpenVINO"):
                paths.append(str(path.with_suffix(".xml")))
            proc = subprocess.run(
                [sys.executable, "-c", CHILD, *paths], capture_output=True, text=True, timeout=1200
            )
            try:
                r = json.loads(proc.stdout.strip().splitlines()[-1])
            except (IndexError, ValueError):
                print(f"{name:<22} failed: {proc.stderr.strip()[-300:]}")
                continue
            r["disk_mb"] = path.stat().st_size / MIB
            r["build_s"] = built
            rows[name] = r
            print(
                f"{name:<22}{r['disk_mb']:>11.0f}{r['seconds']:>8.1f}{r['cpu']:>7.1f}"
                f"{r['rss_mb']:>12.0f}{r['rss_import_mb']:>13.0f}  {r['format']} / "
                f"{r['verdict']} {' '.join(r['rules'])}",
                flush=True,
            )
            shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
