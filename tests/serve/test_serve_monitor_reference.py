"""Differential: the monitor's fast detectors against plain reference code, alert for alert.

The Blacklight and similarity detectors keep their histories in layouts chosen for speed
(sorted hash arrays merged in batches, a column-major sketch scanned before the exact
check). These references keep the same histories the obvious way (a dict of each hash's
newest query; every remembered vector compared in float64) and must raise the same
alerts on recorded benign and attack streams, also across a restart from stored state.
"""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest

from mlwarden.serve.config import Detection
from mlwarden.serve.monitor import Blacklight, Monitor, Similarity, fingerprint
from mlwarden.serve.stationary import ALPHA, TIGHT, drift_p, spread


class _RefBlacklight:
    def __init__(self, det: Detection, start: int = 0) -> None:
        self.c = det.blacklight
        self.last: dict[int, int] = {}  # hash -> newest query carrying it
        self.depth: dict[int, int] = {}  # query -> chain depth
        self.sent: dict[int, np.ndarray] = {}  # query -> its values (the last 64)
        self.copies: set[int] = set()  # queries whose match was excused as a shifted copy
        self.next = start

    def flags(self, x: np.ndarray) -> bool:
        c = self.c
        fp = fingerprint(x, c.quantization, c.window, c.top)
        oldest = max(self.next - c.history, 0)
        owners = Counter(o for o in (self.last.get(h, -1) for h in fp) if o >= oldest)
        shared, depth = sum(owners.values()), 0
        match = shared >= c.threshold
        if 2 * shared >= c.threshold:
            # the query sharing most hashes (the newest on a tie); its depth if recent
            owner = max(owners, key=lambda o: (owners[o], o))
            if self.next - owner <= 64:
                depth = self.depth.get(owner, 0)
                # the owner (not itself an excused copy) moved by a pixel or two, nothing
                # else: half a match
                moved = match and owner not in self.copies and _moved_copy(self.sent[owner], x)
                if moved:
                    self.copies.add(self.next)
                match = match and not moved
            if match:  # a match adds a link; half a match passes it on
                depth = min(depth + 1, 64)
        self.depth[self.next] = depth
        for h in fp:
            self.last[h] = self.next
        self.sent[self.next] = np.asarray(x, dtype=np.float32)
        self.sent.pop(self.next - 64, None)
        self.next += 1
        return match and depth >= c.chain


def _moved_copy(a: np.ndarray, b: np.ndarray) -> bool:
    """``b`` is ``a`` shifted by at most 2 pixels (not 0, 0) along its last two axes, the
    uncovered strip filled with ``a``'s wrapped values or its lowest value: pixel by pixel."""
    h, w = a.shape[-2:]
    for dy, dx in itertools.product(range(-2, 3), repeat=2):
        if dy == dx == 0:
            continue
        ok, rolled, fill = True, True, set()
        for y, x in itertools.product(range(h), range(w)):
            sy, sx = y - dy, x - dx
            if 0 <= sy < h and 0 <= sx < w:
                ok &= bool(np.array_equal(b[..., y, x], a[..., sy, sx]))
            else:
                rolled &= bool(np.array_equal(b[..., y, x], a[..., sy % h, sx % w]))
                fill |= set(np.ravel(b[..., y, x]).tolist())
        if ok and (rolled or fill == {float(np.min(a))}):
            return True
    return False


class _RefSimilarity:
    def __init__(self, det: Detection) -> None:
        self.c = det.similarity
        self.seen: list[np.ndarray] = []

    def counts(self, v: np.ndarray) -> tuple[tuple[int, int], tuple[int, int]]:
        """Neighbours surely within the radius, and possibly within it (float rounding),
        among the last ``window`` queries and among the whole history."""
        hist = np.array(self.seen[-self.c.history :], dtype=np.float64).reshape(-1, len(v))
        d2 = ((hist - v.astype(np.float64)) ** 2).sum(axis=1)
        limit = self.c.radius**2 * len(v)
        # the ball the still-ball rule tests: the query's own cloud (earlier queries
        # within TIGHT of the radius) in arrival order, the query last
        own = (TIGHT * self.c.radius) ** 2 * len(v)
        self.ball = (np.vstack([hist[d2 < own], v[None]]), bool(np.any(
            (d2 >= own * (1 - 1e-5)) & (d2 < own * (1 + 1e-5)))))  # fmt: skip
        # how far back the window's min_neighbours-th newest neighbour came
        near = np.flatnonzero(d2 < limit)
        need = self.c.min_neighbours
        self.reach = len(hist) - int(near[-need]) if len(near) >= need else 10**9
        self.seen.append(v)
        recent = d2[-self.c.window :]
        return (
            (int(np.count_nonzero(recent < limit * (1 - 1e-5))),
             int(np.count_nonzero(recent < limit * (1 + 1e-5)))),
            (int(np.count_nonzero(d2 < limit * (1 - 1e-5))),
             int(np.count_nonzero(d2 < limit * (1 + 1e-5)))),
        )  # fmt: skip

    def restart(self) -> None:
        """What a restart keeps: the history, stored in float16."""
        self.seen = [v.astype(np.float16).astype(np.float32) for v in self.seen[-self.c.history :]]


def _streams(digits, model, search) -> dict[str, np.ndarray]:
    xtr, _, xte, yte = digits
    rng = np.random.default_rng(3)
    pool = np.concatenate([xtr] + [np.roll(xtr, s, axis=a) for a in (2, 3) for s in (-1, 1)])
    benign = pool[rng.permutation(len(pool))[:1200]]
    out = {"benign": benign.astype(np.float32)}
    for sigma in (0.0, 0.02, 0.05):  # a random search with fresh noise (Feng et al. 2023)
        x0, y0 = xte[int(sigma * 100)], int(yte[int(sigma * 100)])
        sent = search(model, x0, y0, 300, sigma, rng)
        # the attack hidden among benign queries: one attack query in every two
        mixed = np.empty((600, *x0.shape), dtype=np.float32)
        mixed[0::2], mixed[1::2] = np.stack(sent), benign[-300:]
        out[f"search{sigma}"] = mixed
    # a client resending 8 digits with fresh noise: still balls past the history's bar
    resent = xte[:8][rng.integers(0, 8, 600)] + rng.normal(0, 0.02, (600, *xte.shape[1:]))
    out["resends"] = np.clip(resent, 0, 1).astype(np.float32)
    # digits and their one-pixel rolls, each digit's five sent within a few queries:
    # Blacklight matches them (its windows run along the rows), none is a search's step
    rolls = [np.stack([d] + [np.roll(d, s, axis=a) for a in (1, 2) for s in (-1, 1)])
             for d in xtr[:120]]  # fmt: skip
    order = np.concatenate([rng.permutation(5) + 5 * i for i in range(120)])
    out["rolls"] = np.concatenate(rolls)[order].astype(np.float32)
    return out


_STILL = [0]  # whole-history alerts the reference dropped as still balls (resends)
_DETECTION = {
    "blacklight": {"history": 400},
    # a window shorter than the history, and a bar for the whole history; the still-ball
    # rule off (on by default since session 7): it judges the whole history's alerts
    # only (the window's count and Blacklight with it on: test_serve_audio_resends.py)
    "similarity": {"history": 500, "window": 50, "long_neighbours": 60, "stationary": False},
    "prada": {"enabled": False},
}


def _reference(xs: np.ndarray, det: Detection, mon: Monitor) -> list[tuple[set[str], set[str]]]:
    """Per query: the alerts the reference raises, and those decided (off the rounding edge);
    ``_STILL`` counts the decided alerts the still-ball rule dropped.

    A restart halfway, as the gateway's: Blacklight's table comes back as it was (blob
    version 3, session 12), the similarity history in float16. Exact repeats are no
    query: (set(), all kinds).
    """
    ref_bl, ref_sim = _RefBlacklight(det), _RefSimilarity(det)
    bars = (det.similarity.min_neighbours, det.similarity.long_neighbours or 10**9)
    sent: set[bytes] = set()
    out = []
    for i, x in enumerate(xs):
        if i == len(xs) // 2:
            ref_sim.restart()
        if x.tobytes() in sent:  # an exact repeat reaches no detector (a retry)
            out.append((set(), {"blacklight", "similarity"}))
            continue
        sent.add(x.tobytes())
        want, decided = set(), {"blacklight"}
        if ref_bl.flags(x):
            want.add("blacklight")
        counts = ref_sim.counts(mon.summarise(x))
        sure = any(c[0] >= bar for c, bar in zip(counts, bars, strict=True))
        maybe = any(c[1] >= bar for c, bar in zip(counts, bars, strict=True))
        edge = sure != maybe  # on the rounding edge: undecided
        spread_ = counts[0][0] >= bars[0] and ref_sim.reach >= det.similarity.window // 4
        if maybe and (counts[0][1] < bars[0] or spread_):
            # the whole history's bar alone, or the window's met by neighbours spread over
            # a quarter of it or more: an alert only on a ball that moves (session 7)
            ball, bar = ref_sim.ball[0], det.similarity.radius
            wide = spread(ball) / bar  # copies farther apart than the radius: no resend
            p = 0.0 if wide > 1 else drift_p(ball)
            edge |= ref_sim.ball[1] or ALPHA / 10 < p < ALPHA * 10 or abs(wide - 1) < 1e-3
            _STILL[0] += sure and p >= ALPHA and not edge
            sure = sure and p < ALPHA
        if not edge:  # the alert is decided
            decided.add("similarity")
        if sure:
            want.add("similarity")
        out.append((want, decided))
    return out


@pytest.mark.parametrize(
    "kind", ["benign", "search0.0", "search0.02", "search0.05", "resends", "rolls"]
)
def test_fast_detectors_raise_the_alerts_of_the_reference_code(
    digits, digits_model, noisy_search, kind
):
    """One query at a time through :meth:`Monitor.inspect`, as calibration sends them."""
    xs = _streams(digits, digits_model, noisy_search)[kind]
    det = Detection.model_validate(_DETECTION)
    mon = Monitor(det, shape=[1, 8, 8])
    _STILL[0] = 0
    expected = _reference(xs, det, mon)
    if kind == "resends":  # the rule's path is exercised
        assert _STILL[0] > 50
    alerts = 0
    for i, x in enumerate(xs):
        if i == len(xs) // 2:  # a restart: the stored state, in a new monitor
            blob = mon.dump("k")
            assert blob is not None
            mon = Monitor(det, shape=[1, 8, 8])
            mon.load("k", blob)
        found = set(mon.inspect("k", x[None], np.zeros(1, dtype=np.int64)))
        want, decided = expected[i]
        assert found & decided == want & decided, (kind, i, found, want)
        alerts += len(found)
    if kind not in ("benign", "resends", "rolls"):  # the streams exercise the alerting paths
        assert alerts > 0


@pytest.mark.parametrize("long_bar", [60, None])
@pytest.mark.parametrize("tight", [False, True])
@pytest.mark.parametrize("kind", ["benign", "search0.0", "search0.05", "resends", "rolls"])
def test_batched_detectors_raise_the_same_alerts_late(
    digits, digits_model, noisy_search, kind, tight, long_bar, monkeypatch
):
    """The gateway's path: requests of 1-3 inputs queued and analysed 8 distinct queries
    at a time (:meth:`Monitor.submit`); each alert names its query by offset and must be
    the reference's, for the right query, at most 7 queries late. ``tight``: Blacklight
    buckets of 2 slots (full buckets spill to the dict) and its id base moved every 512
    queries, the rare paths of its table. Without ``long_neighbours`` the similarity
    detector scans only its window."""
    if tight:
        monkeypatch.setattr(Blacklight, "_WAYS", 2)
        monkeypatch.setattr(Blacklight, "_REBASE", 512)
    xs = _streams(digits, digits_model, noisy_search)[kind]
    det = Detection.model_validate(_DETECTION)
    det.similarity.long_neighbours = long_bar
    mon = Monitor(det, shape=[1, 8, 8])
    assert mon.batch == 8
    expected = _reference(xs, det, mon)
    got: list[set[str]] = [set() for _ in xs]
    firsts: set[bytes] = set()
    distinct = [0]  # distinct queries before each query
    for x in xs:
        distinct.append(distinct[-1] + (x.tobytes() not in firsts))
        firsts.add(x.tobytes())
    sizes = itertools.cycle([1, 1, 3, 1, 2])
    i = 0
    while i < len(xs):
        n = min(next(sizes), len(xs) // 2 - i if i < len(xs) // 2 else len(xs) - i)
        if i == len(xs) // 2:  # a clean restart: queued queries first, then the state
            for kind_, offsets in mon.flush("k").items():
                for o in offsets:
                    got[i + o].add(kind_)
            blob = mon.dump("k")
            assert blob is not None
            mon = Monitor(det, shape=[1, 8, 8])
            mon.load("k", blob)
        found = mon.submit("k", xs[i : i + n], np.zeros(n, dtype=np.int64))
        for kind_, offsets in found.items():
            for o in offsets:
                assert o < n and distinct[i] - distinct[i + o] < 8  # at most 7 late
                got[i + o].add(kind_)
        i += n
    for kind_, offsets in mon.flush("k").items():
        for o in offsets:
            got[len(xs) + o].add(kind_)
    for j, (want, decided) in enumerate(expected):
        assert got[j] & decided == want & decided, (kind, j, got[j], want)
    if kind not in ("benign", "resends", "rolls"):
        assert any(got)
    if tight and kind == "benign":
        bl = mon._keys["k"].blacklight
        assert bl is not None and bl._base > 0  # the base did move


@pytest.mark.parametrize(("history", "window"), [(3, 3), (5, 2), (40, 40), (40, 7)])
def test_a_batch_counts_what_its_queries_one_at_a_time_count(history, window):
    """Batches of 1-11 queries (also longer than the history, where a batch's own early
    queries leave it) against the same queries one at a time: clustered inputs, so
    neighbours and matches sit right at the history's edge."""
    from mlwarden.serve.config import Blacklight as BlacklightConfig
    from mlwarden.serve.config import Similarity as SimilarityConfig

    rng = np.random.default_rng(history)
    centres = rng.uniform(0, 1, (4, 64)).astype(np.float32)
    xs = centres[rng.integers(0, 4, 400)] + rng.normal(0, 0.02, (400, 64)).astype(np.float32)
    sim_cfg = SimilarityConfig(history=history, window=window, min_neighbours=2)
    bl_cfg = BlacklightConfig(history=history, quantization=0.2, threshold=5, chain=2)
    one_sim, many_sim = Similarity(sim_cfg, 64), Similarity(sim_cfg, 64)
    window_only = Similarity(sim_cfg, 64)  # scans only the window (no long_neighbours)
    got_recent: list[int] = []
    one_bl, many_bl = Blacklight(bl_cfg), Blacklight(bl_cfg)
    want_sim = [(one_sim.observe(x), one_sim.total) for x in xs]
    want_bl = [(one_bl.observe(x), one_bl.depth) for x in xs]
    got_sim: list[tuple[int, int]] = []
    got_bl: list[tuple[int, int]] = []
    i = 0
    while i < len(xs):
        n = int(rng.integers(1, 12))
        recent_n, total_n = many_sim.observe_many(xs[i : i + n])
        got_sim += list(zip(recent_n.tolist(), total_n.tolist(), strict=True))
        got_recent += window_only.observe_many(xs[i : i + n], whole=False)[0].tolist()
        best, recent = many_bl.observe_many(xs[i : i + n])
        got_bl += list(zip(best, recent, strict=True))
        i += n
    assert got_sim == want_sim
    assert got_recent == [w[0] for w in want_sim]
    # one query at a time over the window only: the path that counts without ages
    window_one = Similarity(sim_cfg, 64)
    one_recent = [int(window_one.observe_many(x[None], whole=False)[0][0]) for x in xs]
    assert one_recent == [w[0] for w in want_sim]
    assert got_bl == want_bl
    assert 0 < sum(w[0] > 0 for w in want_sim) < len(xs)  # neighbours found, not everywhere
    assert 0 < sum(r >= 2 for _, r in want_bl) < len(xs)


@pytest.mark.parametrize(("history", "every"), [(50, 1), (50, 7), (300, 10), (7, 3)])
def test_prada_tests_the_distances_it_keeps(history, every):
    """PRADA keeps its distance record sorted between tests (merging what came in and
    what left the ring): each test's W must be, bit for bit, that of the record sorted
    afresh, also with many equal distances (queries on a coarse grid) and a ring that
    wraps many times. The test leaves out the record's values 3 std from its mean
    (``outliers``, Juuti et al.'s code): W is that of the ring's inliers."""
    from mlwarden.serve import monitor
    from mlwarden.serve.config import Prada as PradaConfig
    from mlwarden.serve.monitor import Prada, shapiro_w

    monitor._kernels(wait=True)  # the compiled merge where numba is (kernels.merge_record)
    rng = np.random.default_rng(history + every)
    xs = np.round(rng.uniform(0, 2, (1500, 4)), 0).astype(np.float32)  # ties galore
    xs[::3] += rng.normal(0, 0.3, (500, 4)).astype(np.float32)
    xs[::97] += 20.0  # far queries: outliers of the record, left out of some tests
    prada = Prada(PradaConfig(history=history, min_queries=5, test_every=every, outliers=3.0))
    tests = trimmed = 0
    for i, x in enumerate(xs):
        prada.observe(x, i % 3)
        w = prada.test()
        if w is not None:
            tests += 1
            ring = np.sort(prada._dists[: min(prada._n_dists, history)])
            kept = monitor._inliers(ring, 3.0)
            want = ring[np.abs(ring - ring.mean()) < 3 * ring.std()]
            assert np.array_equal(kept, want if len(want) >= 3 else ring), i
            trimmed += len(kept) < len(ring)
            assert w == shapiro_w(kept), i
    assert prada._n_dists > 4 * history and tests >= len(xs) // every // 2
    # some tests left values out (of 7 none can be: |z| <= (n - 1) / sqrt(n) = 2.27)
    assert trimmed > 0 or history < 11


@pytest.mark.parametrize("dims", [8, 64, 128])
def test_prada_ranks_large_sets_to_the_same_distances_bit_for_bit(dims, monkeypatch):
    """Large reference sets (a class most queries fall in) are ranked by a product
    before the exact subtraction: every recorded distance, threshold and W must be
    those of subtracting from every row, also for near-ties (queries on a coarse grid
    and tiny steps around seeds, as an extraction attack sends)."""
    from mlwarden.serve import monitor
    from mlwarden.serve.config import Prada as PradaConfig
    from mlwarden.serve.monitor import Prada

    # the numpy paths (the compiled search: tests/serve/test_serve_prada_kernel.py)
    monkeypatch.setattr(monitor, "_kernels", lambda: None)
    rng = np.random.default_rng(dims)
    xs = rng.uniform(0, 1, (3000, dims)).astype(np.float32)  # distinct: the sets grow
    xs[1::4] = xs[::4] + rng.normal(0, 1e-3, (750, dims)).astype(np.float32)  # near copies
    xs[3::8] = np.round(rng.uniform(0, 3, (375, dims)), 0)  # exact ties of distance
    # far from 0 and close together: the product's rounding (|r|^2 ~ 10^5) swamps the
    # differences between distances (~10^-3), so only the exact pass picks the row
    xs[:400] = 50 + rng.normal(0, 0.01, (400, dims))
    xs[2::8] = 50 + rng.normal(0, 0.01, (375, dims))
    labels = rng.integers(0, 2, 3000)  # two classes: sets of 1,000s of rows
    cfg = PradaConfig(history=2500, min_queries=5, test_every=7)
    fast, plain = Prada(cfg), Prada(cfg)
    fast._BIG = 64  # ranks from 64 rows on (the default: 512)
    plain._BIG = 10**9  # always subtracts from every row
    for x, y in zip(xs, labels, strict=True):
        fast.observe(x, int(y))
        plain.observe(x, int(y))
        assert fast.test() == plain.test()
    assert max(fast._sizes.values()) > 2 * fast._BIG  # the ranking path did run
    assert np.array_equal(fast._dists, plain._dists)
    assert fast._thresholds == plain._thresholds


@pytest.mark.parametrize("width", [45, 401, 3053, 7981])
def test_blacklight_keeps_the_largest_hashes_a_full_sort_keeps(width):
    """Fingerprints of inputs with many windows (images, audio) keep only the values above
    a bar before sorting: every row's kept hashes must be those of sorting the whole row,
    also when few values clear the bar (gated silence), when one value repeats across
    half the row (a blank background), when the largest value is 2^64 - 1, and for real
    fingerprints of audio-like and image-like inputs."""
    from mlwarden.serve.monitor import _fingerprints, _largest, _largest_sorted

    rng = np.random.default_rng(width)
    for trial in range(40):
        rows, top = int(rng.integers(1, 10)), int(rng.choice([5, 50]))
        h = rng.integers(0, 2**64 - 1, (rows, width), dtype=np.uint64, endpoint=True)
        if trial % 4 == 1:
            h[rng.random(h.shape) < 0.97] = 0  # gated windows
        elif trial % 4 == 2:
            h[:, : width // 2] = h[:, :1]  # one window repeated
        elif trial % 4 == 3:
            h[0, 0] = np.uint64(2**64 - 1)
        fast, plain = _largest(h.copy(), top), _largest_sorted(h.copy(), top)
        assert np.array_equal(fast[0], plain[0]) and np.array_equal(fast[1], plain[1])
    xs = rng.uniform(-1, 1, (6, width)).astype(np.float32)
    xs[1, : width // 2] = 0  # half silence
    xs[2] = 0  # all silence
    xs[3, ::2] = 0.5  # a repeated pattern
    for silence in (0.0, 0.1):
        got = _fingerprints(xs, 0.1, 20, 50, silence)
        # top 10^6: every distinct hash, by a full sort; the largest 50 of those
        want = [sorted(_fingerprints(x[None], 0.1, 20, 10**6, silence)[1].tolist())[-50:]
                for x in xs]  # fmt: skip
        assert [got[1][got[0] == i].tolist() for i in range(len(xs))] == want


@pytest.mark.parametrize(("history", "restart_every"), [(7, 0), (40, 0), (40, 5), (300, 3)])
def test_dilution_counts_exactly_the_rows_each_query_saw(history, restart_every):
    """The dilution and residual tests read the similarity history in place (ring views,
    the rows a batch overwrote, the batch) with the squared norms the history keeps. For
    every query of batches of 1-11 (longer than a history of 7: a batch's own early rows
    leave it), the rows seen must be exactly the ``history`` queries before it, as
    stored (float16 after a restart from a saved state), each norm that of its row bit
    for bit; and the counts at r/2, r, 2r those of float64 distances (off the rounding
    edge)."""
    from mlwarden.serve.config import Dilution as DilutionConfig
    from mlwarden.serve.config import Similarity as SimilarityConfig
    from mlwarden.serve.dilution import Dilution, _parts

    rng = np.random.default_rng(history + restart_every)
    centres = rng.uniform(0, 1, (3, 16)).astype(np.float32)
    xs = centres[rng.integers(0, 3, 700)] + rng.normal(0, 0.03, (700, 16)).astype(np.float32)
    cfg = SimilarityConfig(history=history, window=history, radius=0.03)
    sim, dil = Similarity(cfg, 16), Dilution(DilutionConfig(enabled=True), 0.03)
    stored: list[np.ndarray] = []  # rows as the history holds them, oldest first
    i = batches = overwritten = 0
    while i < len(xs):
        vs = xs[i : i + int(rng.integers(1, 12))]
        before = dil.snapshot(sim, len(vs))
        overwritten += len(before.rows)
        sim.observe_many(vs)
        me = before.first + np.arange(len(vs))
        parts = _parts(sim, vs, before, me)
        counts = dil._counts(sim, vs, np.arange(len(vs)), before)
        for j, v in enumerate(vs):
            got: list[bytes] = []
            for rows, norms, seen in parts:
                assert np.array_equal(norms, np.einsum("ij,ij->i", rows, rows))
                got += [r.tobytes() for r in (rows if seen is None else rows[seen[j]])]
            want = stored[max(0, len(stored) - history) :]
            assert sorted(got) == sorted(r.tobytes() for r in want), (i, j)
            d2 = ((np.array(want, dtype=np.float64).reshape(-1, 16) - v) ** 2).sum(axis=1)
            for k, s in enumerate((0.5, 1.0, 2.0)):
                limit = (s * 0.03) ** 2 * 16
                sure, maybe = (np.count_nonzero(d2 < limit * e) for e in (1 - 1e-5, 1 + 1e-5))
                assert sure <= counts[j, k] <= maybe, (i, j, k)
            stored.append(v.copy())
        i += len(vs)
        batches += 1
        if restart_every and batches % restart_every == 0:
            state = sim.dump()
            sim = Similarity(cfg, 16)
            sim.load(state)
            stored = [r.astype(np.float16).astype(np.float32) for r in stored[-history:]]
    assert overwritten > 0  # the ring wrapped: batches overwrote rows they may still see


def _plain_reduce(x: np.ndarray, dims: int, scale: float, audio: bool) -> np.ndarray:
    """One input, 1-D: block means in float64 (audio: frame powers in dB), as until session 6."""
    if audio:
        flat = x.astype(np.float64).ravel() / (scale / 2.0)
        frames = min(dims, flat.size)
        starts = (np.arange(frames, dtype=np.int64) * flat.size) // frames
        power = np.add.reduceat(flat * flat, starts) / np.diff(np.append(starts, flat.size))
        db = 10.0 * np.log10(np.maximum(power, 10.0**-9.6))
        return (np.clip(db, -96.0, 0.0) / 96.0 + 1.0).astype(np.float32)
    flat32 = x.astype(np.float32).ravel() / np.float32(scale)
    if flat32.size <= dims:
        return flat32
    starts = (np.arange(dims, dtype=np.int64) * flat32.size) // dims
    sums = np.add.reduceat(flat32.astype(np.float64), starts)
    return (sums / np.diff(np.append(starts, flat32.size))).astype(np.float32)


@pytest.mark.parametrize(("shape", "scale"), [((3, 32, 32), 1.0), ((1, 8000), 2.0), ((40,), 1.0)])
def test_a_batch_is_reduced_to_the_values_of_one_input_at_a_time(shape, scale):
    """The monitor reduces a whole batch at once (:func:`reduce_many`,
    :func:`reduce_audio_many`): every row must be, bit for bit, the plain 1-D reduction
    of that input alone, as is :func:`reduce` / :func:`reduce_audio` (calibration, tools)."""
    from mlwarden.serve.monitor import reduce, reduce_audio, reduce_audio_many, reduce_many

    rng = np.random.default_rng(len(shape))
    xs = rng.normal(0, 0.3, (9, *shape)).astype(np.float32)
    xs[1] = 0  # silence
    for one, many, audio in ((reduce, reduce_many, False), (reduce_audio, reduce_audio_many, True)):
        want = np.stack([_plain_reduce(x, 128, scale, audio) for x in xs])
        assert np.array_equal(np.stack([one(x, 128, scale) for x in xs]), want)
        for size in (1, 2, 9):
            assert np.array_equal(many(xs[:size], 128, scale), want[:size])


@pytest.mark.parametrize("ways", [32, 2])
@pytest.mark.parametrize("silence", [0.0, 0.1])
def test_compiled_blacklight_matches_numpy_slot_for_slot(ways, silence, monkeypatch):
    """One query at a time through the compiled kernels (numba, ``serve/kernels.py``) and
    through the numpy code (``MLW_KERNELS=numpy``'s path): every shared count and chain
    depth, and the table itself (tags, ids, spill dict), must be identical, with full
    buckets (2 slots: the spill path), negative values, gated silence and the id base
    moving every 300 queries."""
    from mlwarden.serve import monitor
    from mlwarden.serve.config import Blacklight as BlacklightConfig

    if monitor._kernels(wait=True) is None:
        pytest.skip("numba is not installed: only the numpy path exists here")
    monkeypatch.setattr(Blacklight, "_WAYS", ways)
    monkeypatch.setattr(Blacklight, "_REBASE", 300)
    rng = np.random.default_rng(ways)
    centres = rng.uniform(-1, 1, (5, 64)).astype(np.float32)
    xs = centres[rng.integers(0, 5, 900)] + rng.normal(0, 0.04, (900, 64)).astype(np.float32)
    xs[::7, :30] = 0.0  # silent stretches
    for i in range(300, 400):  # a search: one value moved a step, query after query
        xs[i] = xs[i - 1]
        xs[i, rng.integers(0, 64)] += 0.3
    cfg = BlacklightConfig(history=120, quantization=0.1, threshold=10, chain=2)
    fast, plain = Blacklight(cfg, silence), Blacklight(cfg, silence)
    # one fixed salt: with a random one the first full bucket came by chance within a
    # handful of queries now and then, and the compiled path had no time to run
    plain._salt = fast._salt = np.uint64(0x2545F4914F6CDD1D)
    compiled = deepest = 0
    for x in xs:
        got = fast.observe_many(x[None])
        monkeypatch.setattr(monitor, "_kernels", lambda: None)
        want = plain.observe_many(x[None])
        monkeypatch.undo()
        monkeypatch.setattr(Blacklight, "_WAYS", ways)
        monkeypatch.setattr(Blacklight, "_REBASE", 300)
        assert got == want
        assert np.array_equal(fast._tags, plain._tags) and np.array_equal(fast._ids, plain._ids)
        assert fast._spill == plain._spill and fast._base == plain._base
        compiled += not fast._spill
        deepest = max(deepest, want[1][0])
    # the compiled path ran (with 2 slots a bucket the spill dict soon holds hashes, and
    # numpy takes over while it does); chains formed
    assert compiled > (100 if ways == 32 else 5) and deepest >= 2
    if ways == 2:
        assert plain._spill  # the spill path ran


@pytest.mark.parametrize(("ways", "width"), [(32, 64), (2, 64), (32, 3072)])
def test_compiled_blacklight_batches_match_numpy_one_query_at_a_time(ways, width, monkeypatch):
    """Batches of 1-11 queries through the compiled kernel (query after query in one
    call) against the numpy code one query at a time: every shared count and chain
    depth equal, and the table slot for slot while no bucket is full; with 2-slot
    buckets a spill stops the kernel mid-batch and numpy does the rest; a value out of
    the integer range (numpy decides it) ends some batches; 3x32x32 inputs take the bar
    of :func:`_largest` (3,053 windows). Fails if the kernel's batch skipped the store
    between its queries (a search's steps would not match each other)."""
    from mlwarden.serve import monitor
    from mlwarden.serve.config import Blacklight as BlacklightConfig

    if monitor._kernels(wait=True) is None:
        pytest.skip("numba is not installed: only the numpy path exists here")
    monkeypatch.setattr(Blacklight, "_WAYS", ways)
    monkeypatch.setattr(Blacklight, "_REBASE", 150)
    rng = np.random.default_rng(ways + width)
    n = 700 if width == 64 else 240
    centres = rng.uniform(-1, 1, (5, width)).astype(np.float32)
    xs = centres[rng.integers(0, 5, n)] + rng.normal(0, 0.04, (n, width)).astype(np.float32)
    xs[::7, : width // 2] = 0.0  # silent stretches
    for i in range(n // 3, n // 2):  # a search: values moved a step, query after query
        xs[i] = xs[i - 1]
        xs[i, rng.integers(0, width, max(1, width // 64))] += 0.3
    cfg = BlacklightConfig(history=120, quantization=0.1, threshold=10, chain=2)
    fast, plain = Blacklight(cfg, 0.1), Blacklight(cfg, 0.1)
    plain._salt = fast._salt = np.uint64(0x2545F4914F6CDD1D)
    i = batches = deepest = same = 0
    with np.errstate(invalid="ignore"):
        while i < n:
            size = int(rng.integers(1, 12))
            batch = xs[i : i + size].copy()
            if batches % 9 == 4:
                batch[-1, 0] = 1e30  # out of int64 range after binning: numpy's path
            clean = not fast._spill
            got = fast.observe_many(batch)
            monkeypatch.setattr(monitor, "_kernels", lambda: None)
            want: tuple[list[int], list[int]] = ([], [])
            for x in batch:
                one = plain.observe_many(x[None])
                want[0].extend(one[0])
                want[1].extend(one[1])
            monkeypatch.setattr(monitor, "_kernels", lambda: monitor._COMPILED[0])
            assert got == want, (i, size)
            if clean and not plain._spill and batches % 9 != 4:
                # slot for slot, except after a batch numpy placed (a rebase, a full
                # bucket): the remembered hashes and their queries, bucket by bucket
                assert _live(fast) == _live(plain)
                same += np.array_equal(fast._tags, plain._tags)
            deepest = max(deepest, *want[1])
            i += size
            batches += 1
    assert deepest >= 2 and fast._base > 0  # chains formed; the id base moved
    if ways == 2:
        assert plain._spill  # the spill path ran
    else:
        assert same >= 10  # the tables were compared slot for slot too


def _live(bl: Blacklight) -> list[list[tuple[int, int]]]:
    """Each bucket's (tag, query id) pairs of the queries still in the history, sorted."""
    limit = max(bl._next - bl.config.history - bl._base + 1, 1)
    return [sorted((int(t), int(o) + bl._base) for t, o in zip(tags, ids, strict=True) if o >= limit)
            for tags, ids in zip(bl._tags, bl._ids, strict=True)]  # fmt: skip


@pytest.mark.parametrize("kept", [0.0, 0.01, 0.3, 1.0])
def test_counts_within_radii_equal_whole_compares(kept):
    """The dilution test's counts at three radii (``dilution._within``: one compare at the
    widest, the inner ones on what it kept, or whole compares when most are kept) must be
    those of comparing every value with every limit, with and without a mask of the rows
    each query saw, values right at a limit included."""
    from mlwarden.serve.dilution import _within

    rng = np.random.default_rng(int(kept * 100))
    limits = [0.25, 1.0, 4.0]
    d2 = (rng.random((7, 3000)) * 4.0 / max(kept, 1e-3)).astype(np.float32)
    d2[:, :3] = limits  # exactly at each limit: not within
    for seen in (None, rng.random(d2.shape) < 0.7):
        want = [[int(np.count_nonzero((d < lim) & (True if s is None else s))) for lim in limits]
                for d, s in zip(d2, seen if seen is not None else [None] * 7, strict=True)]  # fmt: skip
        assert _within(d2, seen, limits).tolist() == want
