"""Query blinding (serve/blinding.py): a search whose queries each go through a fresh
random rotation, zoom, shift and light is many inputs rendering each other; a photo
resent re-encoded (whole-pixel shifts, brightness, 8-bit) is one input."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from mlwarden.core.data import load_dataset
from mlwarden.serve.blinding import INPUTS, SMOOTH, Blinding, grid, smoothness, views
from mlwarden.serve.config import Detection
from mlwarden.serve.monitor import Monitor


def _digits() -> tuple[np.ndarray, np.ndarray]:
    ds = load_dataset("digits")
    return ds.x.astype(np.float32), np.asarray(ds.y)


def _blinded(x: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` queries of a search on ``x`` (1, 8, 8): a 2x2 block of +-0.1 a query (every
    tenth kept), each rotated U(-8, 8) degrees, shifted U(-1, 1) pixels, brightness and
    contrast changed, noise N(0, 0.01) (the red team's ``blind`` plan, smaller)."""
    rng = np.random.default_rng(seed)
    out, delta = [], np.zeros_like(x, dtype=np.float64)
    for i in range(n):
        r, c = rng.integers(0, 7, 2)
        cand = delta.copy()
        cand[0, r : r + 2, c : c + 2] = rng.choice([-0.1, 0.1])
        delta = cand if i % 10 == 9 else delta
        im = ndimage.rotate(x[0] + cand[0], rng.uniform(-8, 8), reshape=False, order=1,
                            mode="nearest")  # fmt: skip
        im = ndimage.shift(im, rng.uniform(-1, 1, 2), order=1, mode="nearest")
        im = (im - im.mean()) * rng.uniform(0.9, 1.1) + im.mean() + rng.uniform(-0.05, 0.05)
        out.append(np.clip(im + rng.normal(0, 0.01, im.shape), 0, 1)[None])
    return np.stack(out).astype(np.float32)


def _reencoded(xs: np.ndarray, copies: int, seed: int = 0) -> np.ndarray:
    """Each input sent ``copies`` times: exposure x U(0.8, 1.2), a whole-pixel shift half
    the time, 8-bit (the clients benchmark's ``burst20``, with a wider exposure: copies
    apart in the reduced view, one input in the view)."""
    rng = np.random.default_rng(seed)
    out = []
    for x in xs:
        for _ in range(copies):
            y = x * rng.uniform(0.8, 1.2)
            if rng.random() < 0.5:
                y = np.roll(y, int(rng.choice([-1, 1])), axis=int(rng.integers(1, 3)))
            out.append(np.round(np.clip(y, 0, 1) * 255) / 255)
    return np.stack(out).astype(np.float32)


def _flagged(mon: Monitor, xs: np.ndarray, key: str = "k") -> list[int]:
    labels = np.zeros(len(xs), dtype=np.int64)
    return [
        i
        for i in range(len(xs))
        if mon.inspect(key, xs[i : i + 1], labels[i : i + 1]).get("blinding")
    ]


def test_a_blinded_search_is_flagged_and_off_switch() -> None:
    """A blinded search on one 8x8 digit: flagged by the rule within 50 queries; with
    ``prada.blinding: false`` never by it."""
    x, _ = _digits()
    qs = _blinded(x[0], 60)
    on = _flagged(Monitor(Detection(), [1, 8, 8]), qs)
    assert on and on[0] < 50
    off = Monitor(Detection.model_validate({"prada": {"blinding": False}}), [1, 8, 8])
    assert off.blind_frame is None and _flagged(off, qs) == []


def test_reencoded_resends_and_distinct_digits_are_quiet() -> None:
    """Distinct digits of every class, and a burst of 20 re-encodings of each (shifted a
    pixel half the time, so far apart in the reduced view): never flagged by the rule."""
    x, _ = _digits()
    mon = Monitor(Detection(), [1, 8, 8])
    assert _flagged(mon, x[:120], "distinct") == []
    assert _flagged(mon, _reencoded(x[300:306], 20), "burst") == []


def test_views_ignore_light_and_whole_cell_shifts() -> None:
    """A view is the same under ``a x + b``; a copy rolled by one cell is one input."""
    x, _ = _digits()
    v = views(x[:1], (1, 8, 8))
    assert np.allclose(views(0.7 * x[:1] + 0.2, (1, 8, 8)), v, atol=1e-5)
    blind = Blinding(64, 0.05)
    rolled = np.roll(x[:1], 1, axis=-1)
    blind.observe_many(v, x[:1].reshape(1, -1))
    assert blind.observe_many(views(rolled, (1, 8, 8)), rolled.reshape(1, -1)) == [0]
    assert blind._inputs[1] == blind._inputs[0]  # the same input


def test_a_batch_counts_as_one_query_at_a_time() -> None:
    """``observe_many`` of a batch gives the counts of one query at a time, past the window."""
    x, _ = _digits()
    qs = np.concatenate([_blinded(x[5], 40, 1), x[:30], _blinded(x[9], 40, 2)])
    vw, vs = views(qs, (1, 8, 8)), qs.reshape(len(qs), -1)
    one, many = Blinding(64, 0.05), Blinding(64, 0.05)
    singles = [c for i in range(len(qs)) for c in one.observe_many(vw[i : i + 1], vs[i : i + 1])]
    batched = [
        c for i in range(0, len(qs), 8) for c in many.observe_many(vw[i : i + 8], vs[i : i + 8])
    ]
    assert singles == batched and max(singles) >= INPUTS
    assert np.array_equal(one._inputs, many._inputs)


def test_not_on_camera_keys_rows_or_small_frames() -> None:
    """Off on keys with the camera profile, on rows and on frames under 8 x 8."""
    x, _ = _digits()
    mon = Monitor(Detection(), [1, 8, 8])
    mon.profiles["cam"] = "camera"
    assert _flagged(mon, _blinded(x[0], 60), "cam") == []
    assert Monitor(Detection(), [64]).blind_frame is None
    assert Monitor(Detection(), [1, 4, 4]).blind_frame is None
    assert Monitor(Detection(), [1, 8, 8], modality="audio").blind_frame is None


def test_dump_and_load_keep_the_counts() -> None:
    """A window dumped and loaded gives the next queries the counts of no restart; arrays
    of another shape are refused."""
    x, _ = _digits()
    qs = _blinded(x[3], 60, 4)
    vw, vs = views(qs, (1, 8, 8)), qs.reshape(len(qs), -1)
    a = Blinding(64, 0.05)
    a.observe_many(vw[:40], vs[:40])
    b = Blinding(64, 0.05)
    assert b.load(a.dump())
    assert b.observe_many(vw[40:], vs[40:]) == a.observe_many(vw[40:], vs[40:])
    assert not Blinding(32, 0.05).load(a.dump()) and not Blinding(64, 0.05).load({})


def test_a_restart_keeps_the_window() -> None:
    """A key's blinding window is in its state blob: after ``Monitor.dump`` and ``load``
    into a fresh gateway the rest of a blinded search is flagged as without a restart."""
    x, _ = _digits()
    qs = _blinded(x[0], 60)
    labels = np.zeros(len(qs), dtype=np.int64)
    one = Monitor(Detection(), [1, 8, 8])
    for i in range(30):
        one.inspect("k", qs[i : i + 1], labels[i : i + 1])
    blob = one.dump("k")
    assert blob is not None
    two = Monitor(Detection(), [1, 8, 8])
    two.load("k", blob)
    rest = [_flagged(m, qs[30:]) for m in (one, two)]
    assert rest[0] == rest[1] and rest[0]
    fresh = _flagged(Monitor(Detection(), [1, 8, 8]), qs[30:])
    assert fresh != rest[0]  # the window mattered


def _low_light(x: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` frames of one scene ``x`` under sensor noise N(0, s), s in 0.02-0.05, 8-bit
    (redteam12's ``lowlight`` camera)."""
    rng = np.random.default_rng(seed)
    out = [x + rng.normal(0, rng.uniform(0.02, 0.05), x.shape) for _ in range(n)]
    return (np.round(np.clip(np.stack(out), 0, 1) * 255) / 255).astype(np.float32)


def _counts(qs: np.ndarray, frame: tuple[int, ...]) -> list[int]:
    """The rule's counts of a stream sent one query at a time, no resend merged by the
    reduced vectors (a calibrated key's small resend bar)."""
    vw = views(qs, frame)
    blind = Blinding(qs[0].size, 1e-6, grid(frame))
    return [
        c
        for i in range(len(qs))
        for c in blind.observe_many(vw[i : i + 1], qs[i : i + 1].reshape(1, -1))
    ]


def _scene(x: np.ndarray) -> np.ndarray:
    """A 32 x 32 scene of three channels: an 8 x 8 digit ``x`` (1, 8, 8) enlarged."""
    big = ndimage.zoom(x[0], 4, order=1)
    return np.clip(np.stack([big * g + 0.1 for g in (0.5, 0.6, 0.7)]), 0, 1)


def test_noisy_frames_of_one_scene_are_quiet_a_warped_one_is_not() -> None:
    """Frames of one 32 x 32 scene under fresh sensor noise (views 0.04-0.1 apart, each a
    new input on a calibrated key: rough differences) are not renderings, flagged only
    without the smoothness bar; the scene blinded (rotated, shifted, lit anew: smooth
    differences) is flagged with it."""
    x, _ = _digits()
    frame = (3, 32, 32)
    noisy = _low_light(_scene(x[5]), 100)
    blinded = np.stack([_scene(b) for b in _blinded(x[5], 60)])
    assert max(_counts(noisy, frame)) < INPUTS
    assert max(_counts(blinded, frame)) >= INPUTS
    old = dict(SMOOTH)
    SMOOTH.update({g: -1.0 for g in SMOOTH})  # every renderer counts: main before session 15
    try:
        assert max(_counts(noisy, frame)) >= INPUTS
    finally:
        SMOOTH.update(old)


def test_smoothness_of_noise_and_of_a_warp() -> None:
    """White noise's lag-1 autocorrelation is about 0; a scene moved half a pixel
    differs from itself smoothly (well above the bar)."""
    x, _ = _digits()
    noise = np.random.default_rng(0).normal(0, 1, (200, 256))
    assert abs(float(smoothness(noise, 16).mean())) < 0.05
    scene = _scene(x[0])
    moved = ndimage.shift(scene, (0, 0.5, 0.5), order=1, mode="nearest")
    v = views(np.stack([scene, moved]), (3, 32, 32))
    assert smoothness(v[:1] - v[1:], 16)[0] > 3 * SMOOTH[16]
