"""``Monitor.nbytes`` counts everything a key holds (issue 19: memory per active key).

The figure is checked against a deep measurement made without it: every numpy array
reachable from the key's state (each buffer once), plus the Python objects of the
exact-repeat filter. Every kind of key: digits, images (renderings, blinding window,
sketches), audio (tail), text (typing chains, packed bits), tables (manifold window,
residual history, answers), with a queue of unanalysed queries and alerts waiting on
their clouds.
"""

from __future__ import annotations

import sys
import threading
import types
from collections import deque
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel

from mlwarden.serve.config import Detection
from mlwarden.serve.monitor import Monitor, compile_kernels
from mlwarden.serve.stationary import Cloud

_OPAQUE = (BaseModel, type, types.ModuleType, types.FunctionType, types.MethodType,
           type(threading.Lock()), str, bytes, bool, int, float, type(None), np.generic)  # fmt: skip


def _deep(obj: object) -> int:
    """Bytes of every array reachable from ``obj`` (a view counts its base once)."""
    seen: set[int] = set()
    buffers: dict[int, int] = {}
    stack: list[Any] = [obj]
    while stack:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        if isinstance(o, np.ndarray):
            while isinstance(o.base, np.ndarray):
                o = o.base
            buffers[id(o)] = o.nbytes
        elif isinstance(o, dict):
            stack.extend(o.values())
        elif isinstance(o, list | tuple | set | frozenset | deque):
            stack.extend(o)
        elif not isinstance(o, _OPAQUE):
            stack.extend(vars(o).values() if hasattr(o, "__dict__") else ())
            stack.extend(getattr(o, s) for s in getattr(type(o), "__slots__", ()) if hasattr(o, s))
    return sum(buffers.values())


def _filter(state: Any) -> int:
    """The exact-repeat filter's Python objects: its set, deque and digests."""
    r = state.recent
    return sys.getsizeof(r._set) + sys.getsizeof(r._order) + sum(map(sys.getsizeof, r._set))


def _table() -> tuple[Detection, np.ndarray]:
    from sklearn.datasets import load_breast_cancer

    from mlwarden.serve.manifold import fit

    x = load_breast_cancer().data.astype(np.float32)
    x = (x - x.min(axis=0)) / (x.max(axis=0) - x.min(axis=0))
    axes, scales = fit(x, 0.01) or (None, None)
    centred = x - x.mean(axis=0)
    comps = np.linalg.svd(centred, full_matrices=False)[2][:8]
    det = Detection.model_validate({
        "manifold": {"axes": np.asarray(axes).tolist(), "scales": np.asarray(scales).tolist()},
        "similarity": {"projection": {"mean": x.mean(axis=0).tolist(), "components": comps.tolist()}},
        "dilution": {"enabled": True, "residual": 0.05}, "answers": {"spread": 1.0}})  # fmt: skip
    return det, x


def _inputs(kind: str, rng: np.random.Generator, n: int) -> tuple[Monitor, np.ndarray]:
    if kind == "text":
        mon = Monitor(Detection(), [128], modality="text")
        return mon, (rng.random((n, 128)) < 0.5).astype(np.float32) * np.float32(0.3)
    if kind == "table":
        det, x = _table()
        rows = x[rng.integers(0, len(x), n)] + rng.normal(0, 0.01, (n, 30))
        return Monitor(det, [30]), np.clip(rows, 0, 1).astype(np.float32)
    shape = {"digits": [1, 8, 8], "images": [3, 32, 32], "audio": [8000]}[kind]
    mon = Monitor(Detection(), shape, modality="audio" if kind == "audio" else "tensor")
    if kind == "audio":
        return mon, rng.normal(0, 0.1, (n, *shape)).astype(np.float32)
    return mon, rng.uniform(0, 1, (n, *shape)).astype(np.float32)


@pytest.mark.parametrize("kind", ["digits", "images", "audio", "text", "table"])
def test_nbytes_counts_every_array_a_key_holds(kind: str) -> None:
    compile_kernels()  # text's packed bits need the kernels, as in the gateway
    rng = np.random.default_rng(0)
    mon, xs = _inputs(kind, rng, 240)
    mon.crosskey = None
    probs = rng.dirichlet(np.ones(10), len(xs)).astype(np.float32)
    for i in range(0, 200, 8):  # distinct queries, then bursts of noisy copies of a few
        mon.submit("k", xs[i : i + 8], probs[i : i + 8].argmax(1), probs[i : i + 8])
    for j in range(200, 236):
        copies = np.repeat(xs[j : j + 1], 3, axis=0) + rng.normal(0, 0.005, (3, *xs.shape[1:]))
        copies = copies.astype(np.float32)
        mon.submit("k", copies, probs[j : j + 3].argmax(1), probs[j : j + 3])
    mon.submit("k", xs[236:239], probs[236:239].argmax(1), probs[236:239])
    state = mon._keys["k"]
    assert state.pending  # queries waiting for the batch are counted too
    dims = state.similarity._ring.shape[1]
    for n in (40, 120):  # alerts waiting on their clouds (stationary.settle), as kept
        rows = rng.normal(0, 1, (n, dims)).astype(np.float32)
        state.held.append(Cloud(n, rows[0].copy(), rows, np.arange(n), far=rows[:5].copy(),
                                far_ids=np.arange(5)))  # fmt: skip
    deep = _deep(state) + _filter(state)
    assert abs(mon.nbytes("k") / deep - 1) < 0.03, (mon.nbytes("k"), deep)
    # and without the histories allocated whole at the key's first query (most of it):
    # the parts that grow (PRADA's sets, the queue, the clouds, the filter) counted too
    big = [p for p in (state.similarity, state.blacklight, state.residual) if p is not None]
    rest = mon.nbytes("k") - sum(p.nbytes() for p in big)
    rest -= state.sketch.nbytes if state.sketch is not None else 0
    rest_deep = deep - sum(_deep(p) for p in big) - _deep(state.sketch)
    assert abs(rest / rest_deep - 1) < 0.1, (rest, rest_deep)


def test_a_queued_query_does_not_keep_its_whole_request_alive() -> None:
    """Before session 13 a queued query was a view of its request's batch: 7 requests of
    64 inputs, each with one input not seen before, held 7 whole batches (5.5 MB on
    3x32x32 images; up to 7 bodies of ``max_body_bytes`` a key) until the queue filled."""
    rng = np.random.default_rng(0)
    mon = Monitor(Detection(), [3, 32, 32])
    mon.crosskey = None
    seen = rng.uniform(0, 1, (63, 3, 32, 32)).astype(np.float32)
    mon.inspect("k", seen, np.zeros(63, np.int64))  # remembered: exact repeats from now on
    for _ in range(7):
        batch = np.concatenate([seen, rng.uniform(0, 1, (1, 3, 32, 32))]).astype(np.float32)
        assert mon.submit("k", batch, np.zeros(64, np.int64)) == {}
    state = mon._keys["k"]
    assert len(state.pending) == 7
    assert all(x.base is None and x.nbytes == 3 * 32 * 32 * 4 for x, *_ in state.pending)
    assert _deep(state.pending) == 7 * 3 * 32 * 32 * 4


def test_a_queue_of_large_inputs_is_analysed_before_it_passes_a_mebibyte() -> None:
    """Inputs of 800 KB: the second fills the queue past ``QUEUE_BYTES`` and the queue is
    analysed at once (7 queued 30 s clips at 16 kHz would hold 13.4 MB); the alerts are
    those of the same queries analysed one at a time."""
    from mlwarden.serve.monitor import QUEUE_BYTES

    rng = np.random.default_rng(0)
    det = Detection(blacklight={"enabled": False}, prada={"enabled": False})
    n = 200_000  # a search drifting along one direction, fresh noise a query
    step = np.repeat(rng.choice([-0.003, 0.003], 128), -(-n // 128))[:n]
    walk = rng.uniform(0.3, 0.7, n) + np.arange(40)[:, None] * step
    xs = np.clip(walk + rng.normal(0, 0.01, (40, n)), 0, 1).astype(np.float32)
    one, queued = Monitor(det, [n]), Monitor(det, [n])
    one.crosskey = queued.crosskey = None
    alone: set[tuple[str, int]] = set()
    batched: set[tuple[str, int]] = set()
    zero = np.zeros(1, np.int64)
    for i in range(40):
        alone |= {(k, i + j) for k, v in one.inspect("k", xs[i : i + 1], zero).items() for j in v}
        found = queued.submit("k", xs[i : i + 1], zero)
        batched |= {(k, i + j) for k, v in found.items() for j in v}
        assert sum(x.nbytes for x, *_ in queued._keys["k"].pending) < QUEUE_BYTES
    assert alone and batched == alone
