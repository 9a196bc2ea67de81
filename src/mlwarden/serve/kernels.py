"""Compiled single-query kernels of :class:`mlwarden.serve.monitor.Blacklight` (numba).

One query through Blacklight's numpy code is ~30 numpy calls of a few microseconds each
(fingerprint, table probe, store); compiled, the same steps take ~8 us instead of ~70.
They matter where a key's queries are analysed one at a time: ``action: block``,
``gateway calibrate`` and the detection benchmarks (:meth:`Monitor.inspect`).

Both kernels compute exactly what the numpy code computes: the fingerprint is integer
arithmetic (mod 2^64) on ``floor(x / quantization)``, and the table is probed and
written slot for slot as :meth:`Blacklight._find`, :meth:`Blacklight._store` and
:meth:`Blacklight._place` do (``tests/serve/test_serve_monitor_reference.py`` runs the
same streams through both and compares every count, depth and table slot). This module
imports numba; :func:`mlwarden.serve.monitor._kernels` imports it lazily, only when a
single query reaches Blacklight, and falls back to numpy when numba is missing or
``MLW_KERNELS=numpy`` is set. Compiled code is cached beside this file when that is
writable (numba's own fallbacks otherwise); ``nogil``: a detection thread does not hold
the interpreter.

Example::

    hashes, ok = fingerprint_one(x.ravel(), 0.1, 20, 50, 0.0, q_pow, p_pow)
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

_MIX = np.uint64(0x9E3779B97F4A7C15)  # monitor._MULTIPLIER
_LIMIT = 4.0e18  # |x / quantization| beyond this: int64 casts differ; numpy decides


def _jit(fn: Any) -> Any:
    try:
        return numba.njit(cache=True, nogil=True)(fn)
    except RuntimeError:  # no writable cache location: compile in each process
        return numba.njit(nogil=True)(fn)


@_jit
def fingerprint_one(  # pragma: no cover - compiled
    x: np.ndarray, q: float, w: int, top: int, silence: float, qpow: np.ndarray, ppow: np.ndarray
) -> tuple[np.ndarray, bool]:
    """``monitor._fingerprints`` of one flat float64 input: its ``top`` largest distinct
    nonzero window hashes, ascending; ``False`` (and nothing) for values out of range."""
    n = x.size
    flat = np.empty(n, np.uint64)
    for i in range(n):
        v = np.floor(x[i] / q)
        if not abs(v) < _LIMIT:
            return np.empty(0, np.uint64), False
        flat[i] = np.uint64(np.int64(v))
    count = n - w + 1
    prefix = np.empty(n, np.uint64)
    acc = np.uint64(0)
    for t in range(n):
        acc += flat[t] * qpow[t]
        prefix[t] = acc
    loud = np.zeros(n + 1, np.int64)
    if silence > 0:
        for t in range(n):
            loud[t + 1] = loud[t] + (abs(x[t]) >= silence)
    hashes = np.empty(count, np.uint64)
    for i in range(count):
        s = prefix[i + w - 1]
        if i > 0:
            s -= prefix[i - 1]
        h = s * ppow[i]
        h ^= h >> np.uint64(29)
        h *= _MIX
        if silence > 0 and loud[i + w] <= loud[i]:
            h = np.uint64(0)
        hashes[i] = h
    hashes.sort()
    out = np.empty(min(top, count), np.uint64)
    k = 0
    for i in range(count - 1, -1, -1):
        if k == len(out) or hashes[i] == 0:
            break
        if i < count - 1 and hashes[i] == hashes[i + 1]:
            continue
        out[k] = hashes[i]
        k += 1
    return out[:k][::-1].copy(), True


@_jit
def probe_store(  # pragma: no cover - compiled
    tags: np.ndarray,
    ids: np.ndarray,
    m: np.ndarray,
    shift: np.uint64,
    base: int,
    query: int,
    limit: int,
) -> tuple[np.ndarray, np.ndarray]:
    """One query's distinct salted hashes ``m`` against the table: each one's newest
    query id (-1: none), and the positions of those with no free slot (for the spill
    dict). Stores the query (id ``query``) as ``_store`` does: seen hashes first, then
    new ones into the first free slot (id offset below ``limit``), last hash first."""
    ways = tags.shape[1]
    last = np.full(m.size, -1, np.int64)
    found = np.full(m.size, -1, np.int64)
    offset = np.uint32(query - (base - 1))
    for i in range(m.size):
        b = np.int64(m[i] >> shift)
        tag = np.uint32(m[i] & np.uint64(0xFFFFFFFF)) | np.uint32(1)
        for c in range(ways):
            if tags[b, c] == tag:
                found[i] = c
                last[i] = np.int64(ids[b, c]) + base - 1
                break
    for i in range(m.size):
        if found[i] >= 0:
            ids[np.int64(m[i] >> shift), found[i]] = offset
    spilled = np.empty(m.size, np.int64)
    n_spilled = 0
    for i in range(m.size - 1, -1, -1):
        if found[i] >= 0:
            continue
        b = np.int64(m[i] >> shift)
        placed = False
        for c in range(ways):
            if ids[b, c] < limit:
                tags[b, c] = np.uint32(m[i] & np.uint64(0xFFFFFFFF)) | np.uint32(1)
                ids[b, c] = offset
                placed = True
                break
        if not placed:
            spilled[n_spilled] = i
            n_spilled += 1
    return last, spilled[:n_spilled].copy()
