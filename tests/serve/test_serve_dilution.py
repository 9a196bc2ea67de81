"""Adaptive attackers (issue 19): a search diluted among benign queries, spread over
restarts, and the tight-ball test that catches it (:mod:`mlwarden.serve.dilution`).

The attacker's search is the one of issue 19 (a random search with fresh N(0, 0.05)
noise a query) on real digits; the benign traffic of the same key is distinct digits.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from mlwarden.serve.calibrate import calibrate, search_stream
from mlwarden.serve.config import Detection, GatewayConfig
from mlwarden.serve.config import Dilution as DilutionConfig
from mlwarden.serve.config import Similarity as SimilarityConfig
from mlwarden.serve.dilution import Dilution, benign_ratio
from mlwarden.serve.monitor import Monitor, Similarity

_SCALES = (0.5, 1.0, 2.0)


def _reference(xs: np.ndarray, history: int, radius: float, least: int, ratio: float) -> list[bool]:
    """The test in plain code: each query against the ``history`` queries before it."""
    out = []
    for j, x in enumerate(xs):
        seen = xs[max(0, j - history) : j]
        rms = np.sqrt(((seen - x) ** 2).mean(axis=1)) if len(seen) else np.zeros(0)
        half, mid, wide = (int((rms < s * radius).sum()) for s in _SCALES)
        tight = (mid >= least and mid >= ratio * wide) or (half >= least and half >= ratio * mid)
        out.append(bool(tight and x.std() >= radius / 2))
    return out


@pytest.mark.parametrize(("history", "seed"), [(7, 0), (40, 1), (300, 2)])
def test_batches_flag_what_the_plain_code_flags(history, seed):
    """Batches of 1-11 queries (also longer than the history) against the reference:
    tight clusters, looser ones and scattered points, so counts sit at every radius's
    edge and the ratio on both sides of the bar."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 1, (5, 32))
    spread = np.array([0.005, 0.02, 0.04, 0.06, 0.3])  # tight balls ... scattered
    which = rng.integers(0, 5, 600)
    xs = centres[which] + rng.normal(0, 1, (600, 32)) * spread[which, None]
    xs = (np.round(xs * 256) / 256).astype(np.float32)  # exact in float32 sums here
    radius, least, ratio = 0.05, 3, 0.5
    want = _reference(xs, history, radius, least, ratio)
    cfg = SimilarityConfig(history=history, window=history, radius=radius)
    sim = Similarity(cfg, 32)
    dil = Dilution(DilutionConfig(enabled=True, min_neighbours=least, ratio=ratio), radius)
    got: list[bool] = []
    i = 0
    while i < len(xs):
        n = int(rng.integers(1, 12))
        batch = xs[i : i + n]
        before = dil.snapshot(sim, len(batch))
        _, total = sim.observe_many(batch)
        hits = set(dil.flags(sim, batch, total, before))
        got += [j in hits for j in range(len(batch))]
        i += n
    assert got == want
    assert 0 < sum(want) < len(xs) - 100  # the test both fires and stays quiet here


def _detection(**dilution: object) -> Detection:
    # the similarity count alone (its window and whole-history bar) and the dilution test
    return Detection.model_validate(
        {
            "blacklight": {"enabled": False},
            "prada": {"enabled": False},
            "similarity": {"radius": 0.1, "min_neighbours": 20, "window": 1000},
            "dilution": {"enabled": True, **dilution},
        }
    )


def _diluted(benign: np.ndarray, search: np.ndarray, every: int) -> tuple[np.ndarray, np.ndarray]:
    """``every`` distinct benign queries before each search query; which are the search's."""
    rows, mine = [], []
    for i, q in enumerate(search):
        rows += [benign[i * every : (i + 1) * every], q[None]]
        mine += [False] * every + [True]
    return np.concatenate(rows).astype(np.float32), np.array(mine)


def _first_flag(det: Detection, xs: np.ndarray, mine: np.ndarray, restart: int = 0) -> str | None:
    mon = Monitor(det, shape=[1, 8, 8])
    zero = np.zeros(1, dtype=np.int64)
    for i, x in enumerate(xs):
        if restart and i and i % restart == 0:  # what mlwarden serve does on a restart
            blob = mon.dump("k")
            assert blob is not None
            mon = Monitor(det, shape=[1, 8, 8])
            mon.load("k", blob)
        found = mon.inspect("k", x[None], zero)
        if found and mine[i]:
            return f"{int(mine[: i + 1].sum())} {'+'.join(sorted(found))}"
        assert not found, (i, found)  # never on the benign queries
    return None


@pytest.fixture(scope="module")
def diluted_search(digits) -> tuple[np.ndarray, np.ndarray]:
    """A noisy search (sigma 0.05) on a held-out digit, 1 query in 61 (16 in any window of
    1,000: below ``min_neighbours``), among 1,797 distinct digits... recycled as needed."""
    xtr, _, xte, _ = digits
    benign = np.concatenate([xtr, xte])
    benign = benign[np.random.default_rng(0).permutation(len(benign))]
    search = search_stream(xte[0], (0.0, 1.0), 0.05, 40, seed=3)
    # 40 x 60 = 2,400 benign queries: the digits, then each shifted by one pixel
    more = np.concatenate([benign, np.roll(benign, 1, axis=3)])[: 40 * 60]
    return _diluted(more, search, 60)


def test_a_diluted_search_is_flagged_and_was_not(diluted_search) -> None:
    xs, mine = diluted_search
    det = _detection()
    flag = _first_flag(det, xs, mine)
    assert flag is not None and flag.endswith("dilution"), flag
    assert int(flag.split()[0]) <= 25  # min_neighbours (20) of its own queries, and a few
    old = det.model_copy(deep=True)
    old.dilution.enabled = False
    assert _first_flag(old, xs, mine) is None  # the detectors before this one: missed


def test_restarts_do_not_reset_the_count(diluted_search) -> None:
    """Slow pacing: the search spread over many restarts (the detectors count queries,
    not seconds; the similarity history is persisted, and this test reads only it)."""
    xs, mine = diluted_search
    det = _detection()
    assert _first_flag(det, xs, mine, restart=97) == _first_flag(det, xs, mine)


def test_a_paced_search_is_flagged_across_restarts(digits) -> None:
    """Five search queries a 'day', a restart between days: flagged at the query it is
    flagged at without restarts (the similarity window survives the restart)."""
    _, _, xte, _ = digits
    search = search_stream(xte[1], (0.0, 1.0), 0.05, 60, seed=4).astype(np.float32)
    det = Detection.model_validate({"blacklight": {"enabled": False}, "prada": {"enabled": False}})
    mine = np.ones(len(search), dtype=bool)
    at = _first_flag(det, search, mine)
    assert at is not None and int(at.split()[0]) <= 40  # 29 measured
    assert _first_flag(det, search, mine, restart=5) == at


def test_benign_digits_and_their_shifts_stay_quiet(digits) -> None:
    """All 1,797 digits and one shifted copy of each (3,594 distinct queries of one key):
    dense classes, near-copies, and not one dilution alarm."""
    xtr, _, xte, _ = digits
    x = np.concatenate([xtr, xte])
    xs = np.concatenate([x, np.roll(x, 1, axis=2)]).astype(np.float32)
    xs = xs[np.random.default_rng(1).permutation(len(xs))]
    mon = Monitor(_detection(), shape=[1, 8, 8])
    hits = [mon.inspect("k", xi[None], np.zeros(1, dtype=np.int64)) for xi in xs]
    assert sum("dilution" in h for h in hits) == 0


def test_featureless_inputs_and_a_granted_client_are_not_a_search() -> None:
    """Silence (or a blank image) resent with tiny noise by many clients is a ball too;
    a client granted ``near_duplicates`` is flagged only past its allowance."""
    rng = np.random.default_rng(0)
    mon = Monitor(_detection(), shape=[1, 8, 8])
    zero = np.zeros(1, dtype=np.int64)
    blank = np.abs(rng.normal(0, 0.003, (60, 1, 8, 8))).astype(np.float32)
    assert not any(mon.inspect("quiet", b[None], zero).get("dilution") for b in blank)
    x0 = rng.uniform(0, 1, (1, 8, 8))
    copies = np.clip(x0 + rng.normal(0, 0.02, (60, 1, 8, 8)), 0, 1).astype(np.float32)
    # one input resent with fresh noise is a still ball: never a diluted search
    assert not any(mon.inspect("resends", c[None], zero).get("dilution") for c in copies)
    # a ball that moves (a search's centre drifts) is one, past the key's allowance only
    drift = np.linspace(0, 0.03, 60)[:, None, None, None] * rng.choice([-1, 1], (1, 8, 8))
    moving = np.clip(copies + drift, 0, 1).astype(np.float32)
    mon.allowances["tta"] = 40
    flags = [bool(mon.inspect("tta", c[None], zero).get("dilution")) for c in moving]
    assert not any(flags[:40]) and any(flags[40:])


def test_calibrate_turns_the_test_on_where_benign_inputs_allow(digits) -> None:
    xtr, ytr, _, _ = digits
    cfg = GatewayConfig.model_validate({"input": {"shape": [1, 8, 8], "range": [0.0, 1.0]}})
    result = calibrate(cfg, xtr, ytr, benign=300, searches=2, seed=0)
    dil = result.detection.dilution
    assert dil.enabled and 0.5 <= dil.ratio <= 0.9
    assert any("dilution test on" in n for n in result.notes)
    # its benign streams include a few inputs resent with fresh noise, said in its notes,
    # and a client doing that with other digits stays quiet (it raised hundreds of
    # dilution alarms until session 7): 100 digits, ~15 times each, noise 0.01
    assert result.false_alarms["few"] <= 1.0
    assert any(n.startswith("benign stream 'few': 30 of") for n in result.notes), result.notes
    _, _, xte, _ = digits
    rng = np.random.default_rng(5)
    few = xte[rng.permutation(len(xte))[:100]][rng.integers(0, 100, 1500)]
    few = np.clip(few + rng.normal(0, 0.01, few.shape), 0, 1).astype(np.float32)
    mon = Monitor(result.detection, shape=[1, 8, 8])
    zero = np.zeros(1, dtype=np.int64)
    assert sum(bool(mon.inspect("few", q[None], zero)) for q in few) <= 1
    # inputs that are all tight balls (each resent with tiny noise): the test stays off
    rng = np.random.default_rng(0)
    v = np.repeat(rng.uniform(0, 1, (20, 16)), 30, axis=0) + rng.normal(0, 0.001, (600, 16))
    assert benign_ratio(v, v, 0.1, 10_000, 20) > 0.9


@pytest.fixture(scope="module")
def patients() -> tuple[np.ndarray, np.ndarray, Detection, Any]:
    """Breast-cancer rows min-max scaled; similarity along 4 principal axes of one half
    (as ``gateway calibrate`` sets it on these rows), the residual test at 0.04 (what
    it picks), and a logistic regression on the same half for the attacker to query."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression

    d = load_breast_cancer()
    x = ((d.data - d.data.min(axis=0)) / np.ptp(d.data, axis=0)).astype(np.float32)
    idx = np.random.default_rng(0).permutation(len(x))
    fit, held = x[idx[:284]], x[idx[284:]]
    model = LogisticRegression(max_iter=500).fit(fit, d.target[idx[:284]])
    mean = fit.mean(axis=0)
    axes = np.linalg.svd(fit - mean, full_matrices=False)[2][:4]
    det = Detection.model_validate(
        {
            "blacklight": {"enabled": False},
            "prada": {"enabled": False},
            "similarity": {
                "radius": 0.07,
                "projection": {"mean": mean.tolist(), "components": axes.tolist()},
            },
            "dilution": {"enabled": True, "ratio": 0.59, "residual": 0.04},
        }
    )
    return held, axes, det, model


def _aimed_search(model: Any, x0: np.ndarray, axes: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Square's random search (one feature +-0.1 a step, kept when the model's score for
    the first class drops) whose noise, the energy of sigma 0.05 a value, lies on the
    axes the similarity detector measures: the attacker who knows the projection."""
    rng = np.random.default_rng(seed)
    delta, best, out = np.zeros_like(x0), np.inf, []
    for _ in range(n):
        step = delta.copy()
        step[rng.integers(0, len(x0))] = rng.choice([-0.1, 0.1])
        noise = rng.normal(0, 0.05 * np.sqrt(len(x0) / len(axes)), len(axes)) @ axes
        q = np.clip(x0 + step + noise, 0, 1).astype(np.float32)
        out.append(q)
        score = model.predict_proba(q[None])[0, 0]
        if score < best:
            best, delta = score, step
    return np.stack(out)


def _kinds(det: Detection, xs: np.ndarray) -> list[set[str]]:
    mon = Monitor(det, shape=[30])
    zero = np.zeros(1, dtype=np.int64)
    return [set(mon.inspect("k", x[None], zero)) for x in xs]


def test_noise_aimed_at_the_projection_is_flagged_off_its_axes(patients) -> None:
    held, axes, det, model = patients
    without = det.model_copy(deep=True)
    without.dilution.residual = None
    for seed in range(3):
        xs = _aimed_search(model, held[seed], axes, 60, seed)
        got = _kinds(det, xs)
        first = next(i for i, k in enumerate(got) if k)
        assert "residual" in got[first] and first < 40, (seed, first, got[first])
        assert not any(_kinds(without, xs))  # the detectors before it: not flagged


def test_patients_and_their_noisy_resends_are_no_residual_ball(patients) -> None:
    """Distinct patients, then each resent ~14 times with N(0, 0.01): balls on the axes
    and off them alike (a resending client, which the residual test leaves alone)."""
    held, _, det, _ = patients
    rng = np.random.default_rng(1)
    noisy = held[rng.integers(0, len(held), 2000)] + rng.normal(0, 0.01, (2000, 30))
    xs = np.concatenate([held, np.clip(noisy, 0, 1)]).astype(np.float32)
    assert not any("residual" in k for k in _kinds(det, xs))


def test_the_residual_test_in_batches_and_across_restarts(patients) -> None:
    """Batches of 1-11 flag what one query at a time flags; a restart every 13 queries
    (its residual history is persisted with the similarity history) changes nothing."""
    held, axes, det, model = patients
    rng = np.random.default_rng(2)
    benign = held[rng.permutation(len(held))[:30]]  # 30 distinct patients first
    xs = np.concatenate([benign, _aimed_search(model, held[1], axes, 60, 1)])
    zero = np.zeros(len(xs), dtype=np.int64)
    one = _kinds(det, xs)
    mon, got, i = Monitor(det, shape=[30]), [set() for _ in xs], 0
    while i < len(xs):
        n = int(rng.integers(1, 12))
        for kind, hits in mon.inspect("k", xs[i : i + n], zero[i : i + n]).items():
            for j in hits:
                got[i + j].add(kind)
        i += n
    assert got == one, [(i, a, b) for i, (a, b) in enumerate(zip(got, one, strict=True)) if a != b]
    assert any("residual" in k for k in one), one[120:]
    mon, restarted = Monitor(det, shape=[30]), []
    for i, x in enumerate(xs):
        if i and i % 13 == 0:
            blob = mon.dump("k")
            assert blob is not None
            mon = Monitor(det, shape=[30])
            mon.load("k", blob)
        restarted.append(set(mon.inspect("k", x[None], zero[:1])))
    assert restarted == one
