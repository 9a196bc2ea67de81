"""serve/manifold.py: a key whose table rows leave the benign data's manifold as noise does."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_breast_cancer, load_wine, make_classification

from mlwarden.serve.calibrate import calibrate
from mlwarden.serve.config import Detection, GatewayConfig
from mlwarden.serve.manifold import MIN_ROWS, Window, fit
from mlwarden.serve.monitor import Monitor


def _minmax(x: np.ndarray) -> np.ndarray:
    return ((x - x.min(axis=0)) / (x.max(axis=0) - x.min(axis=0))).astype(np.float32)


def _cancer() -> tuple[np.ndarray, np.ndarray]:
    d = load_breast_cancer()
    order = np.random.default_rng(0).permutation(len(d.target))
    return _minmax(d.data)[order], d.target[order]


def _detection(x: np.ndarray) -> Detection:
    found = fit(x, 0.01)
    assert found is not None
    det = Detection()
    det.manifold.axes, det.manifold.scales = found[0].tolist(), found[1].tolist()
    det.manifold.centre = (found[0] @ x.mean(axis=0)).tolist()
    return det


def _manifold_flags(det: Detection, xs: np.ndarray) -> list[int]:
    mon = Monitor(det, shape=[xs.shape[1]])
    mon.crosskey = None
    labels = np.zeros(1, dtype=np.int64)
    return [i for i in range(len(xs)) if "manifold" in mon.inspect("k", xs[i : i + 1], labels)]


def _search(x0: np.ndarray, sigma: float, n: int, seed: int) -> np.ndarray:
    """The issue's noisy random search on a row: one feature +-0.1 a step, fresh noise."""
    rng = np.random.default_rng(seed)
    delta, out = np.zeros_like(x0), []
    for _ in range(n):
        cand = delta.copy()
        cand[rng.integers(len(x0))] = rng.choice([-0.1, 0.1])
        out.append(np.clip(x0 + cand + rng.normal(0, sigma, x0.shape), 0, 1))
        if rng.random() < 0.25:
            delta = cand
    return np.asarray(out, dtype=np.float32)


def _form(x: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Rows edited field by field, from the column medians to a real row, rescored each time."""
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    while len(out) < n:
        row, target = np.median(x, axis=0), x[rng.integers(len(x))]
        for f in range(len(row)):
            row[f] = target[f]
            out.append(np.round(row, 2))
    return np.asarray(out[:n], dtype=np.float32)


def test_fit_finds_redundant_features_and_nothing_on_wine() -> None:
    x, _ = make_classification(600, 20, n_informative=6, n_redundant=6, random_state=0)
    found = fit(_minmax(x), 0.01)
    assert found is not None and len(found[0]) == 6  # the 6 redundant features' null space
    np.testing.assert_allclose(found[1], 0.01, rtol=1e-3)  # no benign variance: the floor
    np.testing.assert_allclose(found[0] @ found[0].T, np.eye(6), atol=1e-9)
    assert fit(_minmax(load_wine().data), 0.01) is None  # no direction of little variance


def test_window_in_batches_flags_as_query_by_query() -> None:
    x, _ = _cancer()
    det = _detection(x[:300])
    rng = np.random.default_rng(1)
    rows = np.concatenate([x[300:340], _search(x[350], 0.1, 60, 1), x[400:440]])
    rows = rows + rng.normal(0, 1e-6, rows.shape)
    one, many = Window(det.manifold, 30), Window(det.manifold, 30)
    a = [i for i in range(len(rows)) if one.observe_many(rows[i : i + 1])]
    b = [i + j for i in range(0, len(rows), 7) for j in many.observe_many(rows[i : i + 7])]
    assert a == b and a and a[0] > 40  # flags only once the search is in the window
    np.testing.assert_array_equal(one.last.rows, many.last.rows)
    lv = Window(det.manifold, 30).levels(rows)
    assert np.isnan(lv[: MIN_ROWS - 1]).all()
    want = (rows[50:100] @ one.proj).var(axis=0).mean()
    assert abs(lv[99] - want) < 1e-9 * want


def test_noisy_search_flagged_benign_rows_and_field_edits_not() -> None:
    x, y = _cancer()
    det = _detection(x[:300])
    for k in range(2):
        hits = _manifold_flags(det, _search(x[300 + k], 0.1, 80, seed=k))
        assert hits and hits[0] < MIN_ROWS + 5  # a fresh key: its first full-enough window
    held = x[300:]
    assert not _manifold_flags(det, held)  # distinct rows, calibration never saw them
    assert not _manifold_flags(det, held[np.argsort(y[300:], kind="stable")])  # one class
    form = _form(held, 300, 0)  # off the manifold, but one field a step
    assert not _manifold_flags(det, form)
    assert Window(det.manifold, 30).levels(form)[MIN_ROWS:].max() > det.manifold.bar


def test_rows_coarser_than_the_data_are_not_noise() -> None:
    x, _ = make_classification(3000, 20, n_informative=6, n_redundant=6, random_state=0)
    x = _minmax(x)
    det = _detection(x[:1000])
    coarse = x[1000:1600].copy()
    coarse[:, :6] = np.round(coarse[:, :6] * 3) / 3  # a third of the columns at 4 levels
    win = Window(det.manifold, 20)
    assert np.nanmedian(win.levels(coarse)) > det.manifold.bar  # off the manifold, distinct rows
    assert not _manifold_flags(det, coarse)  # but their variation is the data's, not white
    assert _manifold_flags(det, _search(x[1700], 0.05, 60, 0))


def test_window_dump_load_round_trip() -> None:
    x, _ = _cancer()
    det = _detection(x[:300])
    a, b = Window(det.manifold, 30), Window(det.manifold, 30)
    search = _search(x[310], 0.1, 60, 3)
    a.observe_many(np.concatenate([x[300:310], search[:40]]))
    assert b.load(a.dump())
    assert a.observe_many(search[40:]) == b.observe_many(search[40:]) != []
    c = Window(det.manifold, 30)
    assert not c.load({"rows": np.zeros((3, 2)), "steps": np.zeros(3, bool)})
    assert len(c.last.rows) == 0


def test_calibrate_sets_the_manifold_on_tables_only() -> None:
    x, y = _cancer()
    cfg = GatewayConfig.model_validate({"input": {"range": [0, 1]}})
    result = calibrate(cfg, x[:300], y[:300], benign=100, searches=1, seed=5)
    m = result.detection.manifold
    assert m.axes is not None and m.scales is not None and len(m.axes) >= 2
    assert m.bar >= Detection().manifold.bar
    assert any(n.startswith("manifold:") for n in result.notes)
    wine = _minmax(load_wine().data)
    result = calibrate(cfg, wine, benign=100, searches=1, seed=5)
    assert result.detection.manifold.axes is None
    assert any(n.startswith("manifold off") for n in result.notes)


def test_calibrate_in_raw_units_measures_as_the_gateway_does() -> None:
    d = load_breast_cancer()
    x = d.data.astype(np.float32)[np.random.default_rng(0).permutation(len(d.target))]
    cfg = GatewayConfig.model_validate({"input": {"range": [0, 5000]}})
    result = calibrate(cfg, x[:300], d.target[:300], benign=100, searches=1, seed=5)
    det = result.detection
    assert det.feature_scale is not None and det.manifold.axes is not None
    assert max(result.false_alarms.values()) == 0  # calibrate's benign streams, as served
    mon = Monitor(det, shape=[30], scale=5000.0)
    mon.crosskey = None
    labels = np.zeros(1, dtype=np.int64)
    held = [i for i in range(300, 569) if "manifold" in mon.inspect("k", x[i : i + 1], labels)]
    assert not held  # rows calibration never saw, in raw units
    spread = np.asarray(det.feature_scale.spread, dtype=np.float32)
    noisy = (
        x[300] + np.random.default_rng(1).normal(0, 1, (60, 30)).astype(np.float32) * spread * 0.1
    )
    hits = [i for i in range(60) if "manifold" in mon.inspect("s", noisy[i : i + 1], labels)]
    assert hits and hits[0] < 30


def test_the_window_survives_a_restart_in_the_key_blob() -> None:
    x, _ = _cancer()
    det = _detection(x[:300])
    rows = np.concatenate([x[300:330], _search(x[350], 0.1, 60, 4)])
    labels = np.zeros(1, dtype=np.int64)

    def flags(mon: Monitor, xs: np.ndarray, key: str = "k") -> list[int]:
        return [i for i in range(len(xs)) if "manifold" in mon.inspect(key, xs[i : i + 1], labels)]

    one, two = Monitor(det, shape=[30]), Monitor(det, shape=[30])
    one.crosskey = two.crosskey = None
    flags(one, rows[:45])
    blob = one.dump("k")
    assert blob is not None
    two.load("k", blob)
    later = flags(one, rows[45:])
    assert later and flags(two, rows[45:]) == later
    fresh = Monitor(det, shape=[30])
    fresh.crosskey = None
    assert flags(fresh, rows[45:]) != later  # a fresh window judges the search later


def _diluted(search: np.ndarray, benign: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``k`` benign rows (in turn) before each of ``search``'s; the rows and which are the search's."""
    rows, mine = [], []
    for i, q in enumerate(search):
        rows += [benign[(i * k + j) % len(benign)] for j in range(k)] + [q]
        mine += [False] * k + [True]
    return np.asarray(rows), np.asarray(mine)


def test_a_search_diluted_by_benign_rows_is_flagged_on_its_rows_off_the_data() -> None:
    x, _ = _cancer()
    det = _detection(x[:300])
    rows, mine = _diluted(_search(x[300], 0.1, 40, 5), x[301:], 6)
    hits = Window(det.manifold, 30).observe_many(rows)
    assert hits and all(mine[hits])  # only the search's rows
    assert int(mine[: hits[0] + 1].sum()) < MIN_ROWS + 8
    det.manifold.centre = None  # the last 50 rows alone: each holds ~7 of the search's
    assert not Window(det.manifold, 30).observe_many(rows)
    det.manifold.centre = (np.asarray(det.manifold.axes) @ x[:300].mean(axis=0)).tolist()
    one = Window(det.manifold, 30)  # one row at a time (block): the same verdicts
    assert [i for i in range(len(rows)) if one.observe_many(rows[i : i + 1])] == hits


def test_the_off_data_window_survives_a_restart_and_old_blobs_load() -> None:
    x, _ = _cancer()
    det = _detection(x[:300])
    rows, _ = _diluted(_search(x[302], 0.1, 40, 6), x[303:], 6)
    a, b = Window(det.manifold, 30), Window(det.manifold, 30)
    a.observe_many(rows[:150])
    assert len(a.off.rows) and b.load(a.dump())
    assert a.observe_many(rows[150:]) == b.observe_many(rows[150:]) != []
    c = Window(det.manifold, 30)
    old = {k: v for k, v in a.dump().items() if not k.startswith("off_")}
    assert c.load(old) and len(c.last.rows) == len(a.last.rows) and len(c.off.rows) == 0
