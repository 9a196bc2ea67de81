"""Which tensors changed between two versions of a model file, and by how much.

Formats, identified by content (never by extension):

- safetensors: the header is parsed here (8-byte little-endian header length, JSON
  header of ``name -> {dtype, shape, data_offsets}``) with every offset checked, and
  tensors are memory-mapped, so nothing executes and a multi-GB file is not read
  into memory at once;
- NumPy ``.npz``: ``np.load(allow_pickle=False)`` (object arrays are refused);
- PyTorch state dicts: only through the model-file scanner's ``safe_load``.

Per tensor: status (added, removed, changed, unchanged, reshaped), max absolute
difference, L2 norm of the difference, that norm relative to the old tensor's, and
the fraction of elements that changed.

Example::

    rows = diff_tensors(read_tensors(Path("v1.safetensors")), read_tensors(Path("v2.safetensors")))
"""

from __future__ import annotations

import importlib
import json
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mlwarden.core.errors import InputFileError

#: Largest safetensors JSON header accepted (bytes), as the safetensors library does.
MAX_HEADER = 100 * 1024 * 1024

_ST_DTYPES: dict[str, np.dtype[Any]] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
    "F8_E4M3": np.dtype("u1"),
    "F8_E5M2": np.dtype("u1"),
}


def sniff(path: Path) -> str | None:
    """``safetensors``, ``npz``, ``torch`` or None (not a tensor file we diff)."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
            size = path.stat().st_size
    except OSError:
        return None
    if len(head) >= 9 and head[8:9] == b"{":
        (n,) = struct.unpack("<Q", head[:8])
        if 2 <= n <= min(MAX_HEADER, size - 8):
            return "safetensors"
    if head[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError):
            return None
        if names and all(n.endswith(".npy") for n in names):
            return "npz"
        if any(n.endswith("data.pkl") for n in names):
            return "torch"
        return None
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "torch"
    return None


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Memory-mapped tensors of a safetensors file, header validated (no library used).

    BF16 is widened to float32 (exactly); 8-bit float types are compared as raw bytes.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise InputFileError(path, "is too short to be a safetensors file")
        (n,) = struct.unpack("<Q", raw)
        if n > min(MAX_HEADER, size - 8):
            raise InputFileError(path, f"safetensors header length {n} exceeds the file")
        try:
            header = json.loads(f.read(n))
        except (ValueError, UnicodeDecodeError) as exc:
            raise InputFileError(path, f"safetensors header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise InputFileError(path, "safetensors header is not a JSON object")
    data_start = 8 + n
    data_len = size - data_start
    out: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = _ST_DTYPES[info["dtype"]]
            shape = tuple(int(s) for s in info["shape"])
            begin, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InputFileError(path, f"tensor {name!r} has a bad header entry ({exc})") from None
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if min(shape, default=0) < 0 or not 0 <= begin <= end <= data_len:
            raise InputFileError(path, f"tensor {name!r} has offsets outside the data")
        if end - begin != count * dtype.itemsize:
            raise InputFileError(path, f"tensor {name!r}: offsets disagree with shape and dtype")
        if count == 0:
            arr = np.zeros(shape, dtype=dtype)
        else:
            arr = np.memmap(path, dtype=dtype, mode="r", offset=data_start + begin, shape=shape)
        if info["dtype"] == "BF16":
            arr = (np.asarray(arr).astype(np.uint32) << 16).view(np.float32)
        out[str(name)] = arr
    return out


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Arrays of an ``.npz``; object (pickle) arrays are refused."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as exc:
        raise InputFileError(path, f"npz holds object arrays or is malformed ({exc})") from None
    except (OSError, zipfile.BadZipFile) as exc:
        raise InputFileError(path, f"is not a readable npz ({exc})") from None


def _flatten(obj: Any, prefix: str, out: dict[str, np.ndarray]) -> None:
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif hasattr(obj, "detach") and hasattr(obj, "numpy"):
        t = obj.detach().cpu()
        try:
            out[prefix] = t.numpy()
        except TypeError:  # dtypes numpy lacks (bfloat16, float8): widen exactly
            out[prefix] = t.float().numpy()
    elif isinstance(obj, np.ndarray):
        out[prefix] = obj


def read_torch(path: Path) -> dict[str, np.ndarray]:
    """Tensors of a PyTorch state dict, loaded ONLY via the scanner's ``safe_load``."""
    safe_load = importlib.import_module("mlwarden.supplychain").safe_load
    obj = safe_load(path)
    out: dict[str, np.ndarray] = {}
    _flatten(obj, "", out)
    if not out:
        raise InputFileError(path, "holds no tensors (not a state dict)")
    return out


def read_tensors(path: Path, fmt: str | None = None) -> dict[str, np.ndarray]:
    """Tensors of a safetensors, npz or torch state-dict file (format sniffed from content)."""
    fmt = fmt or sniff(path)
    if fmt == "safetensors":
        return read_safetensors(path)
    if fmt == "npz":
        return read_npz(path)
    if fmt == "torch":
        return read_torch(path)
    raise InputFileError(path, "is not a safetensors, npz or PyTorch state-dict file")


def diff_tensors(
    old: Mapping[str, np.ndarray], new: Mapping[str, np.ndarray]
) -> list[dict[str, Any]]:
    """One row per tensor name: status and the size of the change (float64 arithmetic)."""
    rows: list[dict[str, Any]] = []
    for name in sorted(set(old) | set(new)):
        if name not in new:
            rows.append({"tensor": name, "status": "removed", "shape": list(old[name].shape)})
            continue
        if name not in old:
            rows.append({"tensor": name, "status": "added", "shape": list(new[name].shape)})
            continue
        a, b = np.asarray(old[name]), np.asarray(new[name])
        row: dict[str, Any] = {"tensor": name, "shape": list(b.shape), "dtype": str(b.dtype)}
        if a.shape != b.shape or a.dtype != b.dtype:
            row.update(status="reshaped", old_shape=list(a.shape), old_dtype=str(a.dtype))
            rows.append(row)
            continue
        if a.dtype.kind in "biuf":
            a64, b64 = a.astype(np.float64), b.astype(np.float64)
            delta = b64 - a64
            changed = ~((a64 == b64) | (np.isnan(a64) & np.isnan(b64)))
            n_changed = int(changed.sum())
            finite = np.where(np.isfinite(delta), np.abs(delta), 0.0)
            l2 = float(np.sqrt(np.sum(finite**2)))
            base = float(np.sqrt(np.sum(np.where(np.isfinite(a64), a64, 0.0) ** 2)))
            row.update(
                status="changed" if n_changed else "unchanged",
                changed_fraction=n_changed / max(1, a.size),
                max_abs_diff=float(finite.max()) if a.size else 0.0,
                l2_diff=l2,
                relative_l2=(l2 / base) if base > 0 else (float("inf") if l2 > 0 else 0.0),
            )
        else:
            same = a.tobytes() == b.tobytes()
            row.update(status="unchanged" if same else "changed")
        rows.append(row)
    return rows
