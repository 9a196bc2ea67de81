"""Weight containers of other frameworks that hold tensors and no code, recognised by
their headers so that a hub snapshot's files are not ``unknown``:

* MXNet ``.params`` (``mx.nd.save``): magic 0x112, a reserved zero, then NDArrays;
* PaddlePaddle ``.pdiparams`` (``paddle.jit.save``/``save_inference_model``): LoDTensors
  back to back, each walked to its end (version, LoD levels, a ``TensorDesc`` with the
  data type and dimensions, then the data, skipped);
* ExecuTorch ``.pte`` programs: a flatbuffer with the file identifier ``ET`` + 2 digits
  (its delegates are native backends built into the runtime, not code in the file);
* Core ML ``weight.bin`` blobs of an ``.mlpackage`` (MIL blob storage, version 2).

PaddlePaddle ``.pdparams`` are pickles (``paddle.save``) and go through the pickle machine.
"""

from __future__ import annotations

import re
import struct

from mlwarden.supplychain.formats.base import FormatScanner, Scan
from mlwarden.supplychain.stream import Source, Truncated

MXNET = struct.pack("<QQ", 0x112, 0)
#: bytes per element of Paddle's VarType data types (BOOL=0 ... FP64=6, FP16=4, ...)
PADDLE_ELEM = {0: 1, 1: 2, 2: 4, 3: 8, 4: 2, 5: 4, 6: 8, 20: 1, 21: 1, 22: 2, 23: 8, 24: 16}
_ET = re.compile(rb"ET\d\d")


def _mxnet(src: Source, scan: Scan) -> str:
    return "mxnet-params"


def _is_pdiparams(head: bytes, size: int | None) -> bool:
    if len(head) < 21 or head[:4] != b"\x00\x00\x00\x00":
        return False
    (levels,) = struct.unpack_from("<Q", head, 4)
    return levels == 0 and head[12:16] == b"\x00\x00\x00\x00" and head[20] == 0x08


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(data) and shift < 70:
        b = data[pos]
        value |= (b & 0x7F) << shift
        pos += 1
        if not b & 0x80:
            return value, pos
        shift += 7
    raise Truncated("malformed varint in a Paddle TensorDesc")


def _tensor_bytes(desc: bytes) -> int:
    """Bytes of data a ``TensorDesc`` (data_type = 1, dims = 2) declares."""
    dtype, dims, pos = None, [], 0
    while pos < len(desc):
        tag, pos = _varint(desc, pos)
        if tag == 0x08:
            dtype, pos = _varint(desc, pos)
        elif tag == 0x10:
            d, pos = _varint(desc, pos)
            dims.append(d - (1 << 64) if d >= 1 << 63 else d)
        elif tag == 0x12:  # dims, packed
            n, pos = _varint(desc, pos)
            end = pos + n
            while pos < end:
                d, pos = _varint(desc, pos)
                dims.append(d - (1 << 64) if d >= 1 << 63 else d)
        else:
            raise Truncated(f"unexpected field {tag >> 3} in a Paddle TensorDesc")
    if dtype not in PADDLE_ELEM or any(d < 0 for d in dims):
        raise Truncated(f"Paddle tensor with data type {dtype} and dimensions {dims}")
    count = 1
    for d in dims:
        count *= d
    return count * PADDLE_ELEM[dtype]


def _pdiparams(src: Source, scan: Scan) -> str:
    """Walk every LoDTensor to the end of the file."""
    while not src.at_eof():
        if src.read(4) != b"\x00\x00\x00\x00":
            raise Truncated(f"Paddle LoDTensor of an unknown version at offset {src.pos - 4}")
        (levels,) = struct.unpack("<Q", src.read(8))
        if levels > 64:
            raise Truncated(f"Paddle LoDTensor with {levels} LoD levels")
        for _ in range(levels):
            (n,) = struct.unpack("<Q", src.read(8))
            src.skip(n)
        version, size = struct.unpack("<Ii", src.read(8))
        if version != 0 or not 0 < size <= 1 << 16:
            raise Truncated(f"Paddle tensor header (version {version}, desc {size} bytes)")
        src.skip(_tensor_bytes(src.read(size)))
    return "paddle-params"


def _executorch(src: Source, scan: Scan) -> str:
    return "executorch"


def _coreml_blob(head: bytes, size: int | None) -> bool:
    # MIL blob storage: u32 count, u32 version (2), reserved; then per blob a metadata
    # record opening with the sentinel 0xDEADBEEF, at offset 64
    return (
        len(head) >= 68 and head[4:8] == b"\x02\x00\x00\x00" and head[64:68] == b"\xef\xbe\xad\xde"
    )


MXNET_FORMAT = FormatScanner("mxnet-params", lambda h, s: h.startswith(MXNET), _mxnet)
PADDLE_FORMAT = FormatScanner("paddle-params", _is_pdiparams, _pdiparams)
EXECUTORCH_FORMAT = FormatScanner(
    "executorch", lambda h, s: len(h) >= 8 and _ET.fullmatch(h[4:8]) is not None, _executorch
)
COREML_BLOB_FORMAT = FormatScanner(
    "coreml-weights", _coreml_blob, lambda src, scan: "coreml-weights"
)
