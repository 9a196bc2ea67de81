"""The red team's attackers do what ``benchmarks/gateway_detection_realworld.py`` (session 9)
and ``benchmarks/gateway_detection_redteam10.py`` (session 10) say.

Its ``nullspace`` figures mean something only if the search's queries really are one
point to the detectors' reduction (:func:`reduce` / :func:`reduce_audio`, at the default
``max_dims``) while staying in the Linf ball of 0.1, and its ``hsja`` figures only if
HopSkipJump keeps to its budget and ends on the far side of the boundary. Session 10's
shaped searches mean something only if each query is shaped as an excuse reads benign
traffic (a gain along the input itself) and is judged against the clean input shaped the
same way; Sign-OPT only if it crosses the boundary closer than any natural input.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from mlwarden.serve.config import Similarity
from mlwarden.serve.monitor import reduce_audio_many, reduce_many

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _bench(name: str) -> Any:
    """The benchmark module ``benchmarks/<name>.py``, imported by path."""
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def rw() -> Any:
    return _bench("gateway_detection_realworld")


def _kind(rw: Any, shape: tuple[int, ...], bounds: tuple[float, float], modality: str) -> Any:
    rng = np.random.default_rng(0)
    lo, hi = bounds
    x = rng.uniform(lo, hi, (200, *shape)).astype(np.float32)
    y = (x.reshape(200, -1)[:, ::7].mean(axis=1) > (lo + hi) / 2).astype(np.int64)
    model = LogisticRegression(max_iter=500).fit(x.reshape(200, -1), y)
    return rw.long.Kind(x, x, (x, y), model, [], bounds, modality, 200)


@pytest.mark.parametrize(
    ("shape", "bounds", "modality"),
    [((3, 32, 32), (0.0, 1.0), "tensor"), ((1, 8000), (-1.0, 1.0), "audio")],
)
def test_nullspace_queries_are_one_point_to_reduce(rw: Any, shape: Any, bounds: Any,
                                                   modality: str) -> None:  # fmt: skip
    kind = _kind(rw, shape, bounds, modality)
    x0 = kind.data[0]
    y0 = int(kind.labels(x0[None])[0])
    qs = rw.nullspace(kind, x0, y0, 30, 0, 0.005)
    span, dims = bounds[1] - bounds[0], Similarity().max_dims
    red = reduce_audio_many if modality == "audio" else reduce_many
    seen, clean = red(qs, dims, span), red(x0[None], dims, span)
    moved = np.abs(qs - x0).reshape(len(qs), -1).max(axis=1)
    assert moved.max() > 0.02 * span  # the search does move the input
    assert np.abs(seen - clean).max() < 2e-3  # ... where the reduction cannot see it
    assert moved.max() <= 0.1 * span + 1e-5
    assert qs.min() >= bounds[0] and qs.max() <= bounds[1]


def test_hsja_keeps_its_budget_and_crosses_the_boundary(rw: Any) -> None:
    kind = _kind(rw, (64,), (0.0, 1.0), "tensor")
    x0 = kind.data[1]
    y0 = int(kind.labels(x0[None])[0])
    qs = rw.hsja(kind, x0, y0, 120, 0)
    assert qs.shape == (120, 64)
    wrong = kind.labels(qs) != y0
    dist = np.linalg.norm((qs - x0)[wrong], axis=1)
    start = np.linalg.norm(kind.data - x0, axis=1)[kind.labels(kind.data) != y0].min()
    assert wrong.any() and dist.min() < start  # closer than any natural input of another class


def test_audio_wrong_answers_are_also_measured_in_db_of_the_clips_peak(rw: Any) -> None:
    kind = _kind(rw, (1, 8000), (-1.0, 1.0), "audio")
    x0 = kind.data[1] * 0.5
    y0 = int(kind.labels(x0[None])[0])
    other = kind.data[kind.labels(kind.data) != y0][0]
    # x0 with a tenth of the way to another class's clip mixed in, and that clip itself
    qs = np.stack([x0 + 0.1 * (other - x0), other]).astype(np.float32)
    got = rw.achieved(kind, x0, y0, qs, 2)
    bad = kind.labels(qs) != y0
    peaks = np.abs(qs - x0).reshape(2, -1).max(axis=1) / np.abs(x0).max()
    want = 20 * np.log10(peaks[bad].min())  # Carlini & Wagner's dB_x of the closest
    assert bad[1] and got["dbx"] == pytest.approx(want, abs=0.05)
    tensor = _kind(rw, (64,), (0.0, 1.0), "tensor")  # other kinds: as before
    assert "dbx" not in rw.achieved(tensor, tensor.data[0], 0, tensor.data[:3], 3)


@pytest.fixture(scope="module")
def rt() -> Any:
    return _bench("gateway_detection_redteam10")


def test_gainsearch_varies_along_the_input_itself(rt: Any, rw: Any) -> None:
    # what a lighting excuse reads as a camera: the cloud's main axis is the input's own
    kind = _kind(rw, (3, 16, 16), (0.0, 1.0), "tensor")
    x0 = kind.data[2]
    y0 = int(kind.labels(x0[None])[0])
    shape = rt.shaping("gainsearch", 0, 60)
    qs = rt.shaped_search(kind, x0, y0, 60, 0, shape)
    assert qs.shape == (60, 3, 16, 16) and qs.min() >= 0 and qs.max() <= 1
    d = (qs - qs.mean(axis=0)).reshape(60, -1)
    axis = np.linalg.svd(d, full_matrices=False)[2][0]
    assert abs(axis @ x0.reshape(-1)) / np.linalg.norm(x0) > 0.5
    # ... while the search itself moved: the queries are not the gained clean input
    refs = np.stack([shape(x0.astype(np.float64), i) for i in range(60)])
    assert np.abs(qs - refs).reshape(60, -1).max(axis=1).max() > 0.05


@pytest.mark.parametrize("plan", ["lightsearch", "shiftsearch", "jpegsearch"])
def test_shaped_searches_are_judged_against_the_shaped_clean_input(rt: Any, rw: Any,
                                                                   plan: str) -> None:  # fmt: skip
    kind = _kind(rw, (3, 16, 16), (0.0, 1.0), "tensor")
    x0 = kind.data[3]
    y0 = int(kind.labels(x0[None])[0])
    shape = rt.shaping(plan, 1, 30)
    qs = rt.shaped_search(kind, x0, y0, 30, 1, shape)
    got = rt.achieved_shaped(kind, x0, y0, qs, 30, shape)
    assert set(got) == {"drop", "wrong", "rms"}
    # the clean input shaped as query i is as far from it as the shaping alone makes it
    refs = np.stack([shape(x0.astype(np.float64), i) for i in range(30)])
    assert np.abs(refs - x0).max() > 1e-3  # the shaping does change the input
    assert rt.achieved_shaped(kind, x0, y0, refs.astype(np.float32), 30, shape)["wrong"] is False


def test_signopt_keeps_its_budget_and_crosses_the_boundary(rt: Any, rw: Any) -> None:
    kind = _kind(rw, (64,), (0.0, 1.0), "tensor")
    x0 = kind.data[1]
    y0 = int(kind.labels(x0[None])[0])
    qs = rt.signopt(kind, x0, y0, 150, 0)
    assert qs.shape == (150, 64)
    wrong = kind.labels(qs) != y0
    dist = np.linalg.norm((qs - x0)[wrong], axis=1)
    start = np.linalg.norm(kind.data - x0, axis=1)[kind.labels(kind.data) != y0].min()
    assert wrong.any() and dist.min() < 0.9 * start  # closer than any natural input


def test_scanner_rescans_are_near_copies_of_one_page(rt: Any) -> None:
    rng = np.random.default_rng(0)
    pages = rng.uniform(0, 1, (40, 1, 16, 16)).astype(np.float32)
    xs = rt.scanner(pages, 200, np.random.default_rng(1))
    assert xs.shape == (200, 1, 16, 16) and xs.min() >= 0 and xs.max() <= 1
    step = np.linalg.norm(np.diff(xs, axis=0).reshape(199, -1), axis=1)
    apart = np.linalg.norm((pages[0] - pages[1]).reshape(-1))
    near = step < 0.5 * apart
    assert 0.1 < near.mean() < 0.5  # rescans (30% of pages, 1-2 each), not every query


def test_neshop_clouds_are_still_around_each_centre_and_the_centres_move(rt: Any, rw: Any) -> None:
    # each hop: its clean centre, then 25 antithetic pairs: any linear view's mean is the centre
    kind = _kind(rw, (3, 16, 16), (0.0, 1.0), "tensor")
    x0 = kind.data[4]
    y0 = int(kind.labels(x0[None])[0])
    qs = rt.neshop(kind, x0, y0, 153, 0).astype(np.float64).reshape(3, 51, -1)
    centres = qs[:, 0]
    off = qs[:, 1:].mean(axis=1) - centres  # exact but where a draw was clipped to the range
    assert np.sqrt((off**2).mean(axis=1)).max() < 0.002
    assert (qs[:, 1:].std(axis=1).mean(axis=1) > 0.005).all()  # ... of draws N(0, 0.01)
    steps = np.abs(np.diff(centres, axis=0)).max(axis=1)
    assert (steps > 0.015).all()  # a signed step of 0.02 between hops
    assert np.abs(centres - x0.reshape(-1)).max() <= 0.1 + 1e-6


def test_neshop7_resends_each_centre_six_times_with_the_excused_noise(rt: Any, rw: Any) -> None:
    """``neshop7``: 7 queries a centre (the centre, 3 antithetic pairs of sd 0.02), the
    centres a signed step apart: each centre a clip resent with fresh noise."""
    kind = _kind(rw, (3, 16, 16), (0.0, 1.0), "tensor")
    x0 = kind.data[4]
    qs = rt.neshop(kind, x0, int(kind.labels(x0[None])[0]), 70, 0, m=7, sigma=0.02)
    qs = qs.astype(np.float64).reshape(10, 7, -1)
    sd = qs[:, 1:].std(axis=1).mean(axis=1)
    assert ((sd > 0.01) & (sd < 0.03)).all()
    assert (np.abs(np.diff(qs[:, 0], axis=0)).max(axis=1) > 0.015).all()
    assert {"neshop7", "neshop7d"} <= set(rt.ATTACKS) and "audio" in rt.APPLIES["neshop7d"]


def test_neshop_decoy_puts_each_centre_in_a_ball_of_its_own(rt: Any, rw: Any) -> None:
    kind = _kind(rw, (3, 32, 32), (0.0, 1.0), "tensor")
    x0 = kind.data[5]
    y0 = int(kind.labels(x0[None])[0])
    qs = rt.neshop(kind, x0, y0, 153, 0, decoy=0.04)
    centres = qs.reshape(3, 51, *x0.shape)[:, 0]
    red = reduce_many(centres, Similarity().max_dims, 1.0)
    apart = np.sqrt((np.diff(red, axis=0) ** 2).mean(axis=1))
    assert (apart > 0.03).all()  # the calibrated radius on images is 0.015 RMS a value
    assert np.abs(centres - x0).max() <= 0.1 + 1e-6


def test_sybilpad_pads_each_step_with_near_copies_from_other_accounts(rt: Any, rw: Any) -> None:
    kind = _kind(rw, (64,), (0.0, 1.0), "tensor")
    x0 = kind.data[6]
    y0 = int(kind.labels(x0[None])[0])
    qs, who, _ = rt.padded(kind, x0, y0, 90, 0)
    assert len(qs) == len(who) == 90
    steps, pads = qs[0::3], np.stack([qs[1::3], qs[2::3]], axis=1)
    assert np.abs(pads - steps[:, None]).max() < 0.02  # a hair from the step
    assert np.abs(np.diff(steps, axis=0)).max() > 0.05  # ... while the steps move
    owners = np.asarray(who).reshape(30, 3)
    assert all(len(set(row)) == 3 for row in owners)  # no account copies its own step
    _, mine, _ = rt.padded(kind, x0, y0, 90, 0, own=True)  # sybilselfpad: its own copies
    assert all(len(set(row)) == 1 for row in np.asarray(mine).reshape(30, 3))


def test_fix_secret_gives_benchmark_gateways_one_secret(rw: Any, monkeypatch: Any) -> None:
    from mlwarden.serve import app, monitor
    from mlwarden.serve.config import Detection

    monkeypatch.setattr(monitor, "new_secret", monitor.new_secret)  # undone after the test

    def tag() -> int:
        sketch = monitor.Monitor(Detection(), shape=[3, 32, 32]).sketch
        assert sketch is not None
        return int(sketch.tag)

    assert tag() != tag()  # unfixed: a fresh secret a gateway, as mlwarden serve draws
    rw.fix_secret(0)
    zero = tag()
    assert tag() == zero  # a rerun's gateways measure under one secret
    rw.fix_secret(1)
    assert tag() != zero and tag() == tag()  # another seed, another secret
    assert app.new_secret() != app.new_secret()  # the served gateway still draws its own


@pytest.mark.parametrize("plan", ["slidesearch", "slidefine", "slidesquare"])
def test_slide_searches_are_streams_whose_aligned_windows_are_candidates(rw: Any,
                                                                         plan: str) -> None:  # fmt: skip
    """Every window continues the one before (what serve/stream.py takes for a stream),
    and each window aligned with a copy on the tape is a candidate near ``x0``."""
    from mlwarden.serve.stream import lag, tolerance

    kind = _kind(rw, (1, 8000), (-1.0, 1.0), "audio")
    x0 = kind.data[2]
    y0 = int(kind.labels(x0[None])[0])
    hop, sigma = rw.SLIDES[plan]
    qs = rw.slide_search(kind, x0, y0, 40, 0, hop, sigma)
    assert qs.shape == (40, 1, 8000)
    assert all(lag(a, b, tolerance(2.0)) == hop for a, b in zip(qs, qs[1:], strict=False))
    aligned = [q for i, q in enumerate(qs) if (i * hop) % 8000 == 0]
    assert len(aligned) == len(range(0, 40 * hop, 8000))
    dev = np.abs(np.stack(aligned) - x0).reshape(len(aligned), -1)
    assert dev.max() > 0  # candidates differ from x0 ...
    if not sigma:
        assert dev.max() <= 0.2 + 1e-5  # ... a noiseless one within Linf 0.1 of the range
