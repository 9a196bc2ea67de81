"""A batch's queries are judged once, their clipped values and shifted copies built once
(issue 19, session 14).

The spread rule (``Monitor._narrow``) and the similarity alerts (``Monitor._moving``)
both judge their candidates with :func:`mlwarden.serve.stationary.still`, which reads
each query's clipped values (``Monitor._clipped``: a reduction and a secret sketch of
it) and, on images, its shifted copies (``Monitor._shifted``). A query both rules judge
was judged twice and had them computed twice; now once a batch (``Monitor._judge``,
``Monitor._views``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy import ndimage

from mlwarden.serve import monitor
from mlwarden.serve.config import Detection
from mlwarden.serve.monitor import Monitor


def _pool(n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    pool = ndimage.gaussian_filter(rng.uniform(0, 1, (n, 1, 16, 16)), (0, 0, 2, 2))
    return ((pool - pool.min()) / (pool.max() - pool.min())).astype(np.float32)


def _counted(mon: Monitor, calls: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Count the secret sketches taken (one for the batch, one for each clipped value
    computed) and record the positions each still-ball verdict is asked for."""
    assert mon.sketch is not None
    of, still = mon.sketch.of, monitor.still

    def sketched(*a: Any, **k: Any) -> Any:
        calls["sketch"] += 1
        return of(*a, **k)

    def judged(sim: Any, vs: Any, cand: list[int], *a: Any, **k: Any) -> Any:
        calls["judged"] += list(cand)
        return still(sim, vs, cand, *a, **k)

    monkeypatch.setattr(mon.sketch, "of", sketched)
    monkeypatch.setattr(monitor, "still", judged)


def test_a_query_both_rules_judge_is_judged_and_clipped_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool = _pool(301)
    mon = Monitor(Detection(), shape=[1, 16, 16], secret=b"0" * 32)
    for i in range(200):
        mon.inspect("k", pool[i : i + 1], np.array([i % 3]))
    calls: dict[str, Any] = {}
    _counted(mon, calls, monkeypatch)
    rng, both = np.random.default_rng(1), 0
    for _ in range(45):  # the noisy search on one input
        q = np.clip(pool[300] + rng.normal(0, 0.05, pool[300].shape), 0, 1)[None]
        calls.update(sketch=0, judged=[])
        found = mon.inspect("k", q.astype(np.float32), np.array([0]))
        assert len(calls["judged"]) == len(set(calls["judged"]))  # each query judged once
        # the batch's sketch and one clipped value's for each query judged
        assert calls["sketch"] == 1 + len(calls["judged"])
        both += {"similarity", "spread"} <= set(found)  # alerts of both rules, judged
    assert both >= 5  # the path under test was taken


def test_the_views_are_computed_once_a_position_and_as_before() -> None:
    pool = _pool(8)
    mon = Monitor(Detection(), shape=[1, 16, 16], secret=b"0" * 32)
    xs = pool
    pvs = mon.project(monitor.reduce_many(xs, mon.config.similarity.max_dims, mon.scale))
    heard = np.arange(len(xs))
    shifted, clip = mon._views(xs, pvs, heard)
    assert shifted is not None and clip is not None
    assert shifted(3) is shifted(3) and clip(5) is clip(5)  # kept for the batch
    offsets, gain = shifted(3)
    rolled = np.roll(xs[3], (1, -2), axis=(-2, -1))  # SHIFTS holds (1, -2)
    row = mon.project(monitor.reduce_many(rolled[None], mon.config.similarity.max_dims, 1.0))[0]
    s = monitor.SHIFTS.index((1, -2))
    np.testing.assert_allclose(offsets[s], row - pvs[3], atol=1e-5)
    np.testing.assert_allclose(gain, pvs[3], atol=1e-6)  # no projection: the origin is 0
    along, sk = clip(5)
    assert sk is not None and along.shape == pvs[5].shape and np.abs(along).sum() > 0
