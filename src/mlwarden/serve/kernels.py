"""Compiled kernels of :class:`mlwarden.serve.monitor.Blacklight` (numba).

A batch of queries through Blacklight's numpy code is ~30 numpy calls of a few
microseconds each (fingerprint, table probe, store, owners), plus a sort of every
window hash of large inputs; compiled, :func:`observe_batch` runs the same steps query
after query in one call (digits: ~5 us a query instead of ~35 at batch 8; images: the
window hashes above a bar sorted, as the numpy code does).

The kernel computes exactly what one-query calls of the numpy code compute: the
fingerprint is integer arithmetic (mod 2^64) on ``floor(x / quantization)``, and the
table is probed and written slot for slot as :meth:`Blacklight._find`,
:meth:`Blacklight._store` and :meth:`Blacklight._place` do for one query
(``tests/serve/test_serve_monitor_reference.py`` runs the same streams through both and
compares every count, depth and table slot). This module imports numba;
:func:`mlwarden.serve.monitor._kernels` imports it lazily and falls back to numpy when
numba is missing or ``MLW_KERNELS=numpy`` is set. Compiled code is cached beside this
file when that is writable (numba's own fallbacks otherwise); ``nogil``: a detection
thread does not hold the interpreter.

Example::

    best, owners, done, spilled = observe_batch(xs, 0.1, 20, 50, 0.0, q_pow, p_pow,
                                                bar, tags, ids, salt, shift, 1, 0, 1000, 20)
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from numba.core import types
from numba.extending import intrinsic

_MIX = np.uint64(0x9E3779B97F4A7C15)  # monitor._MULTIPLIER
_LIMIT = 4.0e18  # |x / quantization| beyond this: int64 casts differ; numpy decides


def _jit(fn: Any) -> Any:
    try:
        return numba.njit(cache=True, nogil=True)(fn)
    except RuntimeError:  # no writable cache location: compile in each process
        return numba.njit(nogil=True)(fn)


@_jit
def _fingerprint(  # pragma: no cover - compiled
    x: np.ndarray,
    q: float,
    w: int,
    top: int,
    silence: float,
    qpow: np.ndarray,
    ppow: np.ndarray,
    bar: np.uint64,
    scratch: np.ndarray,
    out: np.ndarray,
) -> int:
    """``monitor._fingerprints`` of one flat float64 input into ``out``: its ``top``
    largest distinct nonzero window hashes, ascending; returns how many (-1: a value out
    of range). ``bar`` > 0: only the hashes at or above it are sorted, unless fewer than
    ``top`` distinct ones clear it (as ``monitor._largest``); ``scratch``: n + 1 uint64."""
    n = x.size
    count = n - w + 1
    prefix = scratch[:n]
    acc = np.uint64(0)
    for t in range(n):
        v = np.floor(x[t] / q)
        if not abs(v) < _LIMIT:
            return -1
        acc += np.uint64(np.int64(v)) * qpow[t]
        prefix[t] = acc
    loud = np.zeros(n + 1, np.int64)
    if silence > 0:
        for t in range(n):
            loud[t + 1] = loud[t] + (abs(x[t]) >= silence)
    hashes = np.empty(count, np.uint64)
    kept = 0  # hashes at or above the bar, moved to the front
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
    if bar > 0:
        for i in range(count):
            if hashes[i] >= bar:
                scratch[kept] = hashes[i]
                kept += 1
        k = _top_distinct(scratch[:kept], top, out)
        if k == min(top, count):
            return k
    return _top_distinct(hashes, top, out)


@_jit
def _top_distinct(values: np.ndarray, top: int, out: np.ndarray) -> int:  # pragma: no cover
    """The ``top`` largest distinct nonzero ``values`` (sorted in place) into ``out``,
    ascending; returns how many."""
    values.sort()
    k = 0
    for i in range(values.size - 1, -1, -1):
        if k == top or values[i] == 0:
            break
        if i < values.size - 1 and values[i] == values[i + 1]:
            continue
        k += 1
    j = k
    for i in range(values.size - 1, -1, -1):
        if j == 0:
            break
        if i < values.size - 1 and values[i] == values[i + 1]:
            continue
        j -= 1
        out[j] = values[i]
    return k


@_jit
def observe_batch(  # pragma: no cover - compiled
    xs: np.ndarray,
    q: float,
    w: int,
    top: int,
    silence: float,
    qpow: np.ndarray,
    ppow: np.ndarray,
    bar: np.uint64,
    tags: np.ndarray,
    ids: np.ndarray,
    salt: np.uint64,
    shift: np.uint64,
    base: int,
    first: int,
    history: int,
    threshold: int,
) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """Blacklight's :meth:`observe` of each flat float64 row of ``xs`` in turn, query ids
    ``first``, ``first + 1``, ...: fingerprint, probe and store, each query after the
    one before it was stored (as one-query calls of the numpy code, slot for slot).

    Returns each query's count of shared hashes, the id it shares most with (the newest
    on a tie; -1: under half a match), how many queries were done, and the salted hashes
    of the last done query that found no free slot (for the spill dict: the caller
    hands the rest of the batch to numpy, which reads it). Stops before a query with a
    value out of range (numpy decides those).
    """
    count = xs.shape[0]
    best = np.zeros(count, np.int64)
    owners = np.full(count, -1, np.int64)
    ways = tags.shape[1]
    scratch = np.empty(xs.shape[1] + 1, np.uint64)
    fp = np.empty(top, np.uint64)
    last = np.empty(top, np.int64)
    found = np.empty(top, np.int64)
    spilled = np.empty(top, np.uint64)
    for b in range(count):
        k = _fingerprint(xs[b], q, w, top, silence, qpow, ppow, bar, scratch, fp)
        if k < 0:
            return best, owners, b, spilled[:0].copy()
        query = first + b
        offset = np.uint32(query - (base - 1))
        limit = max(query + 1 - history - base + 1, 1)
        oldest = max(query - history, 0)
        shared = 0
        for i in range(k):
            m = fp[i] * salt
            fp[i] = m
            bk = np.int64(m >> shift)
            tag = np.uint32(m & np.uint64(0xFFFFFFFF)) | np.uint32(1)
            last[i] = -1
            found[i] = -1
            for c in range(ways):
                if tags[bk, c] == tag:
                    found[i] = c
                    last[i] = np.int64(ids[bk, c]) + base - 1
                    break
            if last[i] >= oldest:
                shared += 1
        best[b] = shared
        if 2 * shared >= threshold:
            owners[b] = _most_shared(last[:k], oldest)
        for i in range(k):
            if found[i] >= 0:
                ids[np.int64(fp[i] >> shift), found[i]] = offset
        n_spilled = 0
        for i in range(k - 1, -1, -1):
            if found[i] >= 0:
                continue
            bk = np.int64(fp[i] >> shift)
            placed = False
            for c in range(ways):
                if ids[bk, c] < limit:
                    tags[bk, c] = np.uint32(fp[i] & np.uint64(0xFFFFFFFF)) | np.uint32(1)
                    ids[bk, c] = offset
                    placed = True
                    break
            if not placed:
                spilled[n_spilled] = fp[i]
                n_spilled += 1
        if n_spilled:
            return best, owners, b + 1, spilled[:n_spilled].copy()
    return best, owners, count, spilled[:0].copy()


@_jit
def _most_shared(last: np.ndarray, oldest: int) -> int:  # pragma: no cover - compiled
    """The id at or after ``oldest`` that occurs most often in ``last``, the newest on a tie."""
    live = np.sort(last[last >= oldest])
    owner, most, run = -1, 0, 0
    for i in range(live.size):
        run = run + 1 if i > 0 and live[i] == live[i - 1] else 1
        if run >= most:  # ascending ids: a later run of equal length is newer
            owner, most = live[i], run
    return owner


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _prada_sq(  # pragma: no cover - compiled
    ref: np.ndarray, n: int, v: np.ndarray
) -> tuple[np.ndarray, np.float32, bool]:
    """Squared float32 distances of ``ref[:n]`` to ``v`` (summed in whatever order
    vectorises), the smallest, and False where one is NaN (then ``s`` is partial)."""
    s = np.empty(n, np.float32)
    best = np.float32(np.inf)
    for i in range(n):
        acc = np.float32(0.0)
        for k in range(v.size):
            t = ref[i, k] - v[k]
            acc += t * t
        if acc != acc:
            return s, best, False
        s[i] = acc
        best = min(best, acc)
    return s, best, True


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def prada_candidates(  # pragma: no cover - compiled
    ref: np.ndarray, n: int, v: np.ndarray, ratio: float, slack: float
) -> np.ndarray:
    """The rows among ``ref[:n]`` (float32) that may be nearest to ``v`` once measured as
    :meth:`Prada._nearest` measures (``einsum`` of the rounded differences): those whose
    squared distance, summed here in float32 in whatever order vectorises, is within
    ``ratio`` times the smallest plus ``slack`` (the caller derives both from the
    rounding of the two sums). Empty when any distance is NaN: the caller's numpy
    path then gives what it always gave."""
    s, best, ok = _prada_sq(ref, n, v)
    if not ok:
        return np.empty(0, np.int64)
    limit = best * ratio + slack
    out = np.empty(n, np.int64)
    m = 0
    for i in range(n):
        if s[i] <= limit:
            out[m] = i
            m += 1
    return out[:m].copy()


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def prada_gather(  # pragma: no cover - compiled
    ref: np.ndarray, n: int, v: np.ndarray, ratio: float, slack: float, buf: np.ndarray, at: int
) -> tuple[int, float]:
    """:func:`prada_candidates`, each row's difference ``ref[i] - v`` written into
    ``buf[at:]`` instead of its index (a batch's candidates then cost one ``einsum``,
    :meth:`mlwarden.serve.monitor.Prada.flags_many`); returns how many and the smallest
    float32 distance summed here. -1: a NaN distance; a count past ``len(buf) - at``:
    nothing copied (the caller measures that query alone)."""
    dims = v.size
    s, best, ok = _prada_sq(ref, n, v)
    if not ok:
        return -1, 0.0
    limit = best * ratio + slack
    m = 0
    for i in range(n):
        m += s[i] <= limit
    if at + m > buf.shape[0]:
        return m, float(best)
    m = at
    for i in range(n):
        if s[i] <= limit:
            for k in range(dims):  # one IEEE subtraction each, as numpy's ``ref - v``
                buf[m, k] = ref[i, k] - v[k]
            m += 1
    return m - at, float(best)


@_jit
def merge_record(  # pragma: no cover - compiled
    old: np.ndarray, gone: np.ndarray, new: np.ndarray
) -> tuple[bool, np.ndarray]:
    """The sorted float64 ``old`` with one copy of each value of ``gone`` taken out and
    ``new`` merged in: ``np.sort`` of that multiset, value for value (PRADA's distance
    record between two tests, :meth:`mlwarden.serve.monitor.Prada._sorted_record`).
    False: a NaN, or a value of ``gone`` not in ``old`` (the caller sorts afresh)."""
    gone = np.sort(gone)
    new = np.sort(new)
    out = np.empty(old.size - gone.size + new.size)
    for v in gone:
        if v != v:
            return False, out
    for v in new:
        if v != v:
            return False, out
    g, j, k = 0, 0, 0
    for x in old:
        if x != x:
            return False, out  # NaN sorts last in numpy; the caller decides
        if g < gone.size and gone[g] < x:
            return False, out  # not there
        if g < gone.size and x == gone[g]:
            g += 1
            continue
        while j < new.size and new[j] < x:
            out[k] = new[j]
            j += 1
            k += 1
        out[k] = x
        k += 1
    if g < gone.size:
        return False, out
    while j < new.size:
        out[k] = new[j]
        j += 1
        k += 1
    return True, out


def _ctpop(typingctx: Any, x: Any) -> Any:  # pragma: no cover - compiled
    """The set bits of a uint64 (LLVM's ctpop: one instruction where the CPU has it)."""

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.ctpop(args[0])

    return types.uint64(types.uint64), codegen


_popcount: Any = intrinsic(_ctpop)


@_jit
def hamming_counts(  # pragma: no cover - compiled
    vs: np.ndarray,
    bits: np.ndarray,
    spans: np.ndarray,
    nxt: int,
    hist: int,
    window: int,
    cut: int,
    packed: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """:meth:`mlwarden.serve.monitor.Similarity.observe_many`'s counts for rows of bits
    (each value 0 or one scale): the batch ``vs`` packed into ``packed`` (bit k of a row
    in word k // 64), and per query the remembered rows of ring ``spans`` (``[a, b)``
    pairs of slots; ``bits``: their packed rows) and the batch's earlier rows that
    differ in at most ``cut`` bits, counted when within ``hist`` and within ``window``
    queries of it (slot s is ``(nxt - s - 1) % hist + 1 + j`` queries old to query j)."""
    count, dims = vs.shape
    words = bits.shape[1]
    for j in range(count):
        for w in range(words):
            packed[j, w] = 0
        for k in range(dims):
            if vs[j, k] != 0:
                packed[j, k >> 6] |= np.uint64(1) << np.uint64(k & 63)
    recent = np.zeros(count, np.int64)
    total = np.zeros(count, np.int64)
    for p in range(spans.shape[0]):
        for slot in range(spans[p, 0], spans[p, 1]):
            base = (nxt - slot - 1) % hist + 1
            for j in range(count):
                h = 0
                for w in range(words):
                    h += _popcount(bits[slot, w] ^ packed[j, w])
                if h <= cut:
                    total[j] += base + j <= hist
                    recent[j] += base + j <= window
    for j in range(count):
        for i in range(j):
            h = 0
            for w in range(words):
                h += _popcount(packed[i, w] ^ packed[j, w])
            if h <= cut:
                total[j] += j - i <= hist
                recent[j] += j - i <= window
    return recent, total


_ROUND32 = 2.0**-24  # float32's unit roundoff


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def crosskey_near(  # pragma: no cover - compiled
    vs: np.ndarray,
    sketch: np.ndarray,
    filled: int,
    slots: np.ndarray,
    when: np.ndarray,
    start: int,
    ring: np.ndarray,
    norms: np.ndarray,
    limit: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The earlier neighbours in the cross-key window of a batch ``vs`` (float32, just
    written to ring ``slots``; row j arrived at ``start + j``, slot s at ``when[s]``), as
    :meth:`mlwarden.serve.crosskey.CrossKey._touched` finds them in numpy: the ring's
    sketch (``sketch[:, :filled]``, a lower bound of each distance, with its slack) for
    candidates, then each candidate's squared distance, here in float64. Returns the pairs
    ``j * filled + s`` (by j, then s) within the radius (``limit``: squared) and, for
    each, whether it lies within float32 rounding of it (``4 (dims + 3) u (|h|^2 +
    |v|^2)``, a bound of the numpy sum's error): numpy's own float32 distance decides
    those, so the pairs are the ones numpy keeps."""
    count, dims = vs.shape
    k = sketch.shape[0] - 1
    slack = (limit * 1.001 + 1e-4) / 2
    # a bound of the float32 rounding of s.h - |h|^2 / 2, here and in numpy:
    # e (|s|^2 + |h|^2), |h|^2 = -2 sketch[k, h]
    e = 4.0 * (k + 3) * _ROUND32
    acc = np.empty(filled, np.float32)
    pairs = np.empty(count * filled, np.int64)
    close = np.empty(count * filled, np.bool_)
    m = 0
    for j in range(count):
        sj = slots[j]
        for s in range(filled):
            acc[s] = sketch[k, s] * (1.0 - 2.0 * e)  # less e |h|^2 (<= 0)
        for c in range(k):
            qc = sketch[c, sj]
            for s in range(filled):
                acc[s] += qc * sketch[c, s]
        ss = -2.0 * sketch[k, sj]
        bound = ss / 2 - slack - e * ss  # |s|^2 / 2 less numpy's slack and the rounding
        vv = 0.0
        for c in range(dims):
            vv += np.float64(vs[j, c]) * vs[j, c]
        at = start + j
        for s in range(filled):
            if acc[s] > bound and when[s] < at:
                d = 0.0
                for c in range(dims):
                    t = np.float64(ring[s, c]) - np.float64(vs[j, c])
                    d += t * t
                margin = 4.0 * (dims + 3) * _ROUND32 * (norms[s] + vv)
                if d < limit + margin:
                    pairs[m] = j * filled + s
                    close[m] = d > limit - margin
                    m += 1
    return pairs[:m].copy(), close[:m].copy()


@_jit
def crosskey_add(  # pragma: no cover - compiled
    vs: np.ndarray,
    vn: np.ndarray,
    sk: np.ndarray,
    half: np.ndarray,
    ring: np.ndarray,
    norms: np.ndarray,
    sketch: np.ndarray,
    who: np.ndarray,
    when: np.ndarray,
    copied: np.ndarray,
    kid: int,
    start: int,
    first: int,
) -> None:
    """Write a batch into the cross-key window's slots ``first, first + 1, ...`` as
    :meth:`mlwarden.serve.monitor.Similarity._put` and
    :meth:`mlwarden.serve.crosskey.CrossKey._add` write it: each row, its squared norm
    ``vn``, its sketch ``sk`` and ``-half`` (the numpy values, copied), key ``kid``,
    arrival ``start + j``, not copied to the kept ring."""
    k = sk.shape[1]
    for j in range(vs.shape[0]):
        slot = first + j
        for c in range(vs.shape[1]):
            ring[slot, c] = vs[j, c]
        norms[slot] = vn[j]
        for c in range(k):
            sketch[c, slot] = sk[j, c]
        sketch[k, slot] = -half[j]
        who[slot] = kid
        when[slot] = start + j
        copied[slot] = False
