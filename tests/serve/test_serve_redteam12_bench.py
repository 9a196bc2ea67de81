"""The red team's session-12 noise shapes, decoys and clients do what
``benchmarks/gateway_detection_redteam12.py`` says.

A shaped-noise figure means something only if the shape costs the search what white
noise of the same scale does (the same root mean square per value) and really lies where
it says (a few directions, blocks, the data's principal directions); decoys only if they
are natural inputs far from the attacked one and do not count against the budget; the
held-out clients only if they send what their docstrings describe.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from tests.serve.conftest import bench_module

from mlwarden.serve.spread import white


@pytest.fixture(scope="module")
def rt() -> Any:
    return bench_module("gateway_detection_redteam12")


def _kind(rt: Any, shape: tuple[int, ...] = (1, 8, 8), n: int = 300) -> Any:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (n, *shape)).astype(np.float32)
    x[:, ..., : shape[-1] // 2] *= 0.2  # one half of each input dim: unequal spreads
    m = x.reshape(n, -1)[:, ::5].mean(axis=1)
    y = (m > np.median(m)).astype(np.int64)
    model = LogisticRegression(max_iter=500).fit(x.reshape(n, -1), y)
    return rt.long.Kind(x, x, (x, y), model, [], (0.0, 1.0), "tensor", n)


def _draws(noise: Any, sd: float, n: int = 200) -> np.ndarray:
    rng = np.random.default_rng(1)
    return np.stack([noise(rng, sd) for _ in range(n)])


@pytest.mark.parametrize("plan", ["dirs8", "dirs16", "blocks", "smooth", "pca"])
def test_each_shape_costs_what_white_noise_does(rt: Any, plan: str) -> None:
    kind = _kind(rt, (3, 16, 16))
    ns = _draws(rt.shaped(plan, kind, (3, 16, 16), 0), 0.1)
    assert ns.shape == (200, 3, 16, 16)
    assert np.sqrt((ns**2).mean()) == pytest.approx(0.1, rel=0.15)
    assert abs(ns.mean()) < 0.02  # zero mean: no drift of the search's point


def test_shapes_lie_where_they_say(rt: Any) -> None:
    kind = _kind(rt, (3, 16, 16))
    flat = lambda plan: _draws(rt.shaped(plan, kind, (3, 16, 16), 0), 0.1).reshape(200, -1)  # noqa: E731
    assert np.linalg.matrix_rank(flat("dirs8")) == 8
    assert np.linalg.matrix_rank(flat("blocks")) == 16  # a 4x4 grid, every channel alike
    b = _draws(rt.shaped("blocks", kind, (3, 16, 16), 0), 0.1)[0]
    assert np.array_equal(b[0], b[2]) and len(np.unique(b[0, :4, :4])) == 1
    pca = flat("pca")
    data = rt.public(kind, 0)
    _, _, vt = np.linalg.svd(data - data.mean(axis=0), full_matrices=False)
    inside = pca @ vt[:8].T @ vt[:8]
    assert np.allclose(inside, pca, atol=1e-9)  # in the data's top 8 directions
    assert np.linalg.matrix_rank(flat("smooth")) > 100  # every direction, low ones most


def test_perfeature_follows_the_data_spread(rt: Any) -> None:
    kind = _kind(rt, (12,))
    ns = _draws(rt.shaped("perfeature", kind, (12,), 0), 0.1, 2000)
    ratio = ns[:, :6].std() / ns[:, 6:].std()  # the first half's data spread is 0.2x
    assert ratio == pytest.approx(0.2, rel=0.2)
    assert rt.shaped("white", kind, (12,), 0) is None  # redteam11's own draw
    sparse = _draws(rt.shaped("sparse2", kind, (12,), 0), 0.1, 2000)
    assert ((sparse != 0).sum(axis=1) == 2).all()  # two fields a query
    assert np.sqrt((sparse**2).mean()) == pytest.approx(0.1, rel=0.1)
    assert len({tuple(np.flatnonzero(r)) for r in sparse[:50]}) > 20  # drawn afresh


def test_a_few_directions_pass_the_white_noise_gate(rt: Any) -> None:
    """What the shapes are for: the spread rule's gate (serve/spread.py ``white``) takes
    a window of white noise for a search and one of 8 directions for natural inputs."""
    kind = _kind(rt)
    rng = np.random.default_rng(3)
    x0 = kind.data[0].reshape(-1).astype(np.float64)
    for plan, noisy in (("white", True), ("dirs8", False)):
        noise = rt.shaped(plan, kind, (64,), 0) or (lambda r, sd: r.normal(0, sd, 64))
        rows = np.stack([x0 + noise(rng, 0.1) for _ in range(50)])
        assert white(rows) is noisy


def test_oars_draws_its_noise_from_the_shape(rt: Any) -> None:
    """redteam11's search takes a query's noise from the shape, at its scale's sd."""
    kind = _kind(rt)
    x0 = kind.data[3].astype(np.float64)
    y0 = int(kind.labels(x0[None])[0])
    asked: list[float] = []

    def offset(rng: np.random.Generator, sd: float) -> np.ndarray:
        asked.append(sd)
        return np.full(x0.shape, sd)

    gate = rt.rt11.Gate(kind, rt.Detection(), _Count(10**6), "log")
    rt.rt11.oars(gate, x0, y0, 60, 0, noise=offset)
    assert asked == [pytest.approx(0.05)] * 60  # the sigma at scale 1
    left = np.stack(gate.queries).astype(np.float64) - x0
    inside = (x0 > 0.1) & (x0 < 0.85)  # not clipped
    vals = np.unique(np.round(left[:, inside], 4))
    assert set(vals.tolist()) <= {0.05, 0.15, -0.05}  # the offset plus Square's +-0.1 steps


class _Count:
    """A defence that counts each key's queries and flags none (or from the ``n``-th)."""

    def __init__(self, n: int) -> None:
        self.n, self.seen = n, {}  # type: int, dict[str, int]
        self.rows: list[np.ndarray] = []

    def inspect(self, key: str, feats: np.ndarray, *_: Any) -> dict[str, list[int]]:
        self.seen[key] = self.seen.get(key, 0) + 1
        self.rows.append(feats[0])
        return {"similarity": [0]} if self.seen[key] >= self.n else {}


def test_decoys_are_far_natural_rows_before_every_kth_query(rt: Any) -> None:
    kind = _kind(rt)
    pool = np.random.default_rng(5).uniform(0, 1, (400, 1, 8, 8)).astype(np.float32)
    mon = _Count(10**6)
    gate = rt.Decoys(kind, rt.Detection(), mon, "log", mix=5,
                     decoys=(pool, np.zeros(400, dtype=np.int64), None))  # fmt: skip
    x0 = kind.data[0]
    for _ in range(20):
        gate.ask(x0)
    assert gate.sent == 20 and mon.seen == {"k": 23} and gate.used_decoys == 3
    sent = np.stack(mon.rows).reshape(23, -1)
    dist = ((pool.reshape(400, -1) - x0.reshape(-1)) ** 2).sum(axis=1)
    cut = np.sort(dist)[-100]  # the farthest quarter
    for j in (5, 11, 17):  # before attack queries 6, 11, 16 (after 5, 10, 15 were sent)
        assert ((sent[j] - x0.reshape(-1)) ** 2).sum() >= cut - 1e-6
    assert len({sent[j].tobytes() for j in (5, 11, 17)}) == 3  # each decoy once


def test_lowlight_is_one_scene_under_sensor_noise(rt: Any) -> None:
    data = np.random.default_rng(0).uniform(0, 1, (20, 1, 8, 8))
    xs = rt.lowlight(data, 500, np.random.default_rng(1))
    assert xs.shape == (500, 1, 8, 8)
    assert np.allclose(xs * 255, np.round(xs * 255), atol=1e-3)  # 8-bit
    step = np.sqrt((np.diff(xs, axis=0) ** 2).reshape(499, -1).mean(axis=1))
    calm = step[step < 0.1]  # frame to frame within a scene: two noise draws apart
    assert 0.02 * np.sqrt(2) * 0.8 < np.median(calm) < 0.05 * np.sqrt(2) * 1.2
    assert 1 <= (step >= 0.1).sum() <= 5  # a new scene every 100-400 frames


def test_jpegq_sends_each_upload_at_a_few_qualities(rt: Any) -> None:
    data = np.random.default_rng(0).uniform(0, 1, (30, 3, 16, 16))
    xs = rt.jpegq(data, 60, np.random.default_rng(2))
    assert xs.shape == (60, 3, 16, 16) and xs.min() >= 0 and xs.max() <= 1
    first = [np.abs(xs[i] - data[np.argmin(np.abs(data - xs[0]).sum(axis=(1, 2, 3)))]).mean()
             for i in range(3)]  # fmt: skip
    assert all(0 < f < 0.2 for f in first)  # versions of one photo, each lossy
    assert len({x.tobytes() for x in xs[:3]}) == 3  # different qualities


def test_whatif_moves_one_feature_a_little_per_rescore(rt: Any) -> None:
    data = np.random.default_rng(0).uniform(0, 1, (100, 10))
    xs = rt.whatif(data, 400, np.random.default_rng(3)).astype(np.float64)
    diff = np.abs(np.diff(xs, axis=0))
    one = (diff > 1e-6).sum(axis=1) == 1
    assert one.mean() > 0.7  # most rescores: one feature edited
    assert diff[one].max() <= 0.05 + 1e-6
    assert xs.min() >= 0 and xs.max() <= 1


def test_intcols_rounds_a_third_of_the_columns(rt: Any) -> None:
    data = np.random.default_rng(0).uniform(0, 1, (100, 12))
    xs = rt.intcols(data, 50, np.random.default_rng(4)).astype(np.float64)
    assert set(np.round(xs[:, :4] * 3, 5).ravel()) <= {0.0, 1.0, 2.0, 3.0}
    assert len(np.unique(xs[:, 4:])) > 100  # the rest natural values
    typed = rt.decimal1(data, 50, np.random.default_rng(4)).astype(np.float64)
    assert np.allclose(typed * 10, np.round(typed * 10), atol=1e-5)
    assert len({r.tobytes() for r in typed}) > 40  # distinct rows


def test_steady_reads_one_point_with_each_sensors_noise(rt: Any) -> None:
    data = np.random.default_rng(0).uniform(0.2, 0.8, (100, 10))
    xs = rt.steady(data, 600, np.random.default_rng(5)).astype(np.float64)
    jump = np.sqrt((np.diff(xs, axis=0) ** 2).mean(axis=1))
    assert 2 <= (jump > 0.1).sum() <= 12  # a new operating point every 50-200 readings
    first = xs[: np.argmax(jump > 0.1) + 1]  # the first point's readings
    sd = first.std(axis=0)
    assert len(first) >= 50 and (sd > 0.006).all() and (sd < 0.04).all()
    assert sd.max() / sd.min() > 1.3  # each sensor its own noise
