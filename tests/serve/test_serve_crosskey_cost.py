"""Cross-key detection's cost a query, and a camera key's (issue 19, session 11).

Session 10's :class:`~mlwarden.serve.crosskey.CrossKey` measured every query that had a
neighbour in the gateway-wide window three times over: the window's sketch scan found
it, then a distance to each of the window's 1,000 rows found its neighbours again, and
a distance to each of the kept ring's 2,000 rows found its ball. The scan now hands its
neighbours on and the ball is found from the kept ring's sketch. The verdicts, the
alerts' parties and the kept ring itself are those of session 10's code, kept here as
the reference and fed the same mixed streams."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from mlwarden.serve.config import CrossKey as CrossKeyConfig
from mlwarden.serve.config import Detection
from mlwarden.serve.config import Similarity as SimilarityConfig
from mlwarden.serve.crosskey import CrossKey, _Kept
from mlwarden.serve.dilution import _ring
from mlwarden.serve.monitor import Monitor, Similarity, _kernels
from mlwarden.serve.sketch import new_secret

DIMS = 64


class _KeptReference(_Kept):
    """Session 10's ball: a distance to every row of the ring."""

    def ball(self, q: np.ndarray, at: int, r2: float) -> tuple[np.ndarray, ...]:
        n = self.filled
        d2 = self.norms[:n] + float(q @ q) - 2.0 * (self.rows[:n] @ q)
        inside = (self.when[:n] < at) & (d2 < r2)
        order = np.flatnonzero(inside)[np.argsort(self.when[:n][inside], kind="stable")]
        return self.rows[order], self.who[order], d2[order]


class _Reference(CrossKey):
    """Session 10's observe: the window's sketch scan says which queries have a
    neighbour; each such query is then measured against every row of the window."""

    def _fresh(self, dims: int) -> None:
        super()._fresh(dims)
        self._kept = _KeptReference(self.config.kept, dims)

    def observe(self, key: str, vs: np.ndarray, own: np.ndarray | None = None) -> list[int]:
        with self.lock:
            if self._sim is None or _ring(self._sim)[0].shape[1] != vs.shape[1]:
                self._fresh(vs.shape[1])
            kid = self._id(key)
            hist, nxt = _ring(self._sim)[2:4]
            start = self._seen
            self._sim.observe_many(vs, whole=False, scan=False)
            slots = (nxt + np.arange(len(vs))) % hist
            self._who[slots] = kid
            self._when[slots] = start + np.arange(len(vs))
            self._copied[slots] = False
            self._seen += len(vs)
            out = []
            for j in self._touched_ref(vs, start).tolist():
                q, at = np.asarray(vs[j], dtype=np.float32), start + j
                if not self._keep_ref(q, kid, at, int(slots[j])):
                    continue
                parties = self._judge(kid, q, at)
                if parties:
                    out.append(j)
                    self.parties[key] = tuple(self._names[k] for k in parties)
            return out

    def _touched_ref(self, vs: np.ndarray, start: int) -> np.ndarray:
        sim, filled = self._sim, _ring(self._sim)[4]
        sk = sim._sketch_of(vs)
        k = sk.shape[1]
        limit = self.radius**2 * vs.shape[1]
        bound = np.einsum("ij,ij->i", sk, sk) / 2 - (limit * 1.001 + 1e-4) / 2
        near = sk @ sim._sketch[:k, :filled] + sim._sketch[k, :filled] > bound[:, None]
        earlier = self._when[None, :filled] < (start + np.arange(len(vs)))[:, None]
        j, slot = np.divmod(np.flatnonzero(near & earlier), filled)
        ring, norms = _ring(sim)[:2]
        dot = np.einsum("ij,ij->i", ring[slot], vs[j])
        d2 = norms[slot] + np.einsum("ij,ij->i", vs[j], vs[j]) - 2.0 * dot
        return np.unique(j[d2 < limit])

    def _keep_ref(self, q: np.ndarray, kid: int, at: int, slot: int) -> bool:
        ring, norms, _, _, filled = _ring(self._sim)
        when = self._when[:filled]
        d2 = norms[:filled] + float(q @ q) - 2.0 * (ring[:filled] @ q)
        inside = (when < at) & (d2 < self.radius**2 * len(q))
        if not inside.any():
            return False
        new = inside & ~self._copied[:filled]
        for s in np.flatnonzero(new)[np.argsort(when[new], kind="stable")].tolist():
            self._kept.add(ring[s], int(self._who[s]), int(self._when[s]))
        self._copied[:filled] |= new
        self._kept.add(q, kid, at)
        self._copied[slot] = True
        return True


def _pair(window: int, kept: int, compiled: bool) -> tuple[CrossKey, CrossKey]:
    det = Detection()
    cfg = CrossKeyConfig(window=window, kept=kept)
    ring = SimilarityConfig(history=window, window=window)

    def make(dims: int) -> Any:
        return Similarity(ring, dims)

    radius, need = det.similarity.radius, det.similarity.min_neighbours
    kernels = None
    if compiled:
        if _kernels(wait=True) is None:
            pytest.skip("numba is not installed here")
        kernels = _kernels
    return CrossKey(cfg, radius, need, make, 0, kernels), _Reference(cfg, radius, need, make)


def _search(rng: np.random.Generator, n: int, noise: float = 0.01) -> list[np.ndarray]:
    """A noisy random search (tests/serve/test_serve_crosskey.py's)."""
    cur, out = rng.uniform(0.2, 0.8, DIMS), []
    for _ in range(n):
        cand = np.clip(cur + rng.choice([-0.02, 0.02], DIMS) * (rng.random(DIMS) < 0.2), 0, 1)
        out.append(cand + rng.normal(0, noise, DIMS))
        if rng.random() < 0.5:
            cur = cand
    return out


def _mixed(seed: int, n: int) -> list[tuple[str, np.ndarray]]:
    """Searches over 3 and over 12 keys, distinct queries of 30 users, popular inputs
    re-sent by everyone (byte for byte and with noise), a camera polled by 6 apps."""
    rng = np.random.default_rng(seed)
    few, many = iter(_search(rng, n)), iter(_search(rng, n, 0.005))
    popular = rng.uniform(0.2, 0.8, (4, DIMS))
    scene = rng.uniform(0.2, 0.8, DIMS)
    out: list[tuple[str, np.ndarray]] = []
    for i in range(n):
        r = rng.random()
        if r < 0.15:
            out.append((f"few-{i % 3}", next(few)))
        elif r < 0.3:
            out.append((f"many-{i % 12}", next(many)))
        elif r < 0.45:
            p = popular[int(rng.integers(4))]
            noisy = rng.random() < 0.5
            out.append((f"user-{rng.integers(30)}", p + rng.normal(0, 0.01, DIMS) if noisy else p))
        elif r < 0.6:
            scene = scene + rng.normal(0, 0.003, DIMS)
            out.append((f"app-{rng.integers(6)}", np.round(np.clip(scene, 0, 1) * 255) / 255))
        else:
            out.append((f"user-{rng.integers(30)}", rng.uniform(0, 1, DIMS)))
    return out


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize(("window", "kept", "seed"), [(1000, 2000, 0), (120, 200, 1)])
def test_the_cheaper_scans_flag_what_session_10s_flagged(
    window: int, kept: int, seed: int, compiled: bool
) -> None:
    """Batches of 1 to 9 queries of one key each; small rings wrap many times; the
    window written and scanned by the compiled kernels and by numpy."""
    new, ref = _pair(window, kept, compiled)
    stream = _mixed(seed, 2400)
    rng = np.random.default_rng(seed + 10)
    flagged, i = 0, 0
    while i < len(stream):
        key, size = stream[i][0], int(rng.integers(1, 10))
        batch = [x for k, x in stream[i : i + size] if k == key] or [stream[i][1]]
        i += len(batch)
        vs = np.asarray(batch, dtype=np.float32)
        got, want = new.observe(key, vs), ref.observe(key, vs)
        assert got == want, (i, key, got, want)
        flagged += len(got)
    assert flagged >= 20  # the searches are flagged: the comparison is not vacuous
    assert new.parties == ref.parties
    for name in ("rows", "who", "when"):
        np.testing.assert_array_equal(getattr(new._kept, name), getattr(ref._kept, name))
    assert (new._kept.next, new._kept.filled) == (ref._kept.next, ref._kept.filled)
    np.testing.assert_array_equal(new._copied, ref._copied)
    for name in ("_ring", "_norms", "_sketch"):  # the window, as observe_many writes it
        np.testing.assert_array_equal(getattr(new._sim, name), getattr(ref._sim, name))
    assert (new._sim._next, new._sim._filled) == (ref._sim._next, ref._sim._filled)
    np.testing.assert_array_equal(new._who, ref._who)
    np.testing.assert_array_equal(new._when, ref._when)


def test_neighbours_within_rounding_of_the_radius_are_those_numpy_keeps() -> None:
    """Rows at the radius give or take 2e-5 of it from a query: the kernel's float64 distance leaves
    those within float32 rounding to numpy's float32 sum, so both keep the same rows."""
    kernels = _kernels(wait=True)
    if kernels is None:
        pytest.skip("numba is not installed here")
    rng = np.random.default_rng(7)
    det = Detection()
    limit = det.similarity.radius**2 * DIMS
    v0 = rng.uniform(0.3, 0.7, DIMS)
    u = rng.normal(0, 1, (41, DIMS))  # each row its own direction: 1.4 radii apart
    u /= np.linalg.norm(u, axis=1)[:, None]
    rows = v0 + np.sqrt(limit) * (1 + np.linspace(-2e-5, 2e-5, 41))[:, None] * u
    close: list[int] = []

    def near(*args: Any) -> tuple[np.ndarray, np.ndarray]:
        pairs, border = kernels.crosskey_near(*args)
        close.append(int(border.sum()))
        return pairs, border

    fake = SimpleNamespace(crosskey_near=near, crosskey_add=kernels.crosskey_add)
    kept = []
    for compiled in (True, False):
        new = _pair(1000, 2000, compiled)[0]
        new._kernels = (lambda: fake) if compiled else None
        new.observe("a", rows.astype(np.float32))
        new.observe("b", v0[None].astype(np.float32))
        kept.append((new._kept.rows[: new._kept.filled], new._kept.when[: new._kept.filled]))
    assert close[-1] > 0  # the kernel left some to numpy
    np.testing.assert_array_equal(kept[0][0], kept[1][0])
    np.testing.assert_array_equal(kept[0][1], kept[1][1])
    assert 1 < len(kept[0][1]) < 42  # some rows inside the radius, some out (and the query)


def test_a_camera_keys_offset_sketch_is_measured_once_per_shape_and_secret() -> None:
    """Monitor._lit_sketch (an input of ones in the secret sketch) was measured again for
    every batch of a camera key; it is kept, and measured again under a new secret."""
    mon = Monitor(Detection(), shape=[3, 16, 16])
    assert mon.sketch is not None
    mon.profiles["cam"] = "camera"
    xs = np.zeros((2, 3, 16, 16), dtype=np.float32)
    ones = np.ones((1, 3, 16, 16), dtype=np.float32)
    first = mon._lit_sketch("cam", xs)
    assert first is not None and mon._lit_sketch("cam", xs) is first
    np.testing.assert_array_equal(first, mon.sketch.of(ones, mon.scale))
    mon.use_secret(new_secret())
    again = mon._lit_sketch("cam", xs)
    assert again is not None and not np.array_equal(again, first)
    np.testing.assert_array_equal(again, mon.sketch.of(ones, mon.scale))
    assert mon._lit_sketch("other", xs) is None
