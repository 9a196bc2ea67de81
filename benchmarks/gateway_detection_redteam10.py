"""Gateway stream detectors against session 10's red team: searches shaped to fit the excuses.

Session 10 adds excuses for moving benign workloads (a camera's lighting drift, audio
windows, forms), for resends (one-pixel shifts, JPEG re-shares), a secret sketch beside
the block means, bounds on the detectors' CPU and cross-key detection over 20+ keys.
Each excuse gets the attacker who reads the code and shapes the issue's noisy random
search to fit it. Built on ``gateway_detection_realworld.py`` (its kinds, calibration,
warm keys and first-flag loop: in-process ``Monitor``, one row a request, the settings
``gateway calibrate`` picks on the kind's plain calibration inputs).

Attackers, 5 runs of 300 queries after 2,000 distinct benign queries of the key:

* ``gainsearch`` (images, MNIST CNN): the issue's search (Square's blocks of +-0.1 of the
  range, fresh N(0, 0.01) noise a query) sent under a fresh global gain U(0.85, 1.15) a
  query, 8-bit pixels: its cloud's main variation is along the input's own direction,
  what a lighting excuse reads as a camera;
* ``lightsearch``: the same under :func:`realworld.camera`'s own lighting model (a
  30-minute +-8% cycle and a random walk, a query a second), sensor noise N(0, 0.004),
  8-bit pixels: the search sent as a fixed camera's frames;
* ``shiftsearch``: each query shifted by one pixel (or none) at random, edges repeated:
  a burst of one-pixel shifts, as a shift-invariant identity reads a resend;
* ``jpegsearch``: each query JPEG-coded at quality U(70, 95): a re-share;
* ``sybil1`` (images, tabular): the search over 300 keys, one query each, every key a
  fresh account of 20 distinct benign queries; ``sybilbusy20``: over 20 keys on a busy
  gateway (10 distinct benign queries of 100 other users before each step);
  ``sybilpad``: over 20 keys, each step followed by 2 near-copies (N(0, 0.002)) sent by
  two other accounts, so the gateway-wide ball reads as a dense stream (100 steps);
  ``sybilselfpad``: the same with the copies sent by the step's own account;
* ``griefcam3`` (images): ``realworld.griefcam`` (10 griefer keys send each of a public
  webcam's 500 frames before the victim does) with noise N(0, 0.03) instead of 0.01, so
  the griefers' copies are no dense stream; the victim's flagged queries per 1,000;
* ``neshop`` (images, MNIST CNN, audio): against a secret sketch that excuses a cloud
  still in 32 secret projections (the gap its docstring names): NES (Ilyas et al., 2018,
  arXiv:1804.08598) at one point at a time, 50 antithetic draws N(0, 0.01) around it,
  then one signed step of 0.02 (Linf ball 0.1): every cloud is one fixed distribution;
  ``neshopd`` (images, MNIST CNN, audio): each centre also a fresh offset of +-0.04 on each of
  ``reduce``'s blocks, so no two centres share a ball (each cloud still in every view);
  ``neshop7`` / ``neshop7d`` (session 15, against an excuse for a moving ball whose query
  has 6 or more copies of its own: a folder of clips resent class by class): the same
  with 7 queries a centre (the centre and 6 draws) of sigma 0.02, the excused resends'
  noise: each centre is a resent clip;
* ``signopt`` (images, MNIST CNN, tabular; held out): Sign-OPT (Cheng et al., 2020,
  arXiv:1909.10773), label-only: a direction ``theta`` from ``x0``, its distance to the
  boundary ``g(theta)`` by a coarse then binary search, the sign of each directional
  derivative from one query (``K`` = 20 random probes a step), a line search on the step.

A shaped query is judged against the clean input under the same shaping: ``wrong`` is
an answer of another class within Linf 0.15 of the range (the search's blocks of 0.1 and
5 sigma of its own noise) of the shaped clean input that the model still gives the true
class.

Benign clients (``--n`` queries, seeds), held out (nobody built them before):

* ``scanner`` (images, MNIST CNN): a document-scanner app: each page (an input) scanned
  at a rotation U(-2, 2) degrees, a shift of 0-1 pixels, gain U(0.9, 1.1), a slight blur,
  sensor noise, 8-bit pixels; 30% of pages rescanned once or twice (a new pose each);
* ``wakeword`` (audio): a voice assistant's wake word: the first 0.4-0.7 s of a prompt
  placed at a random offset in 1 s of room noise, a caller's gain and a speaking rate of
  0.95-1.05; 40% of attempts retried once or twice (a new offset, gain, rate, noise).

``--profile camera``: the attacker's, benign client's and victim's keys declare a
fixed camera (``keys.NAME.profile``, :mod:`mlwarden.serve.profiles`): its clouds are
judged without brightness and contrast.

Detector CPU (``--cpu``): thread CPU of ``Monitor.inspect`` a query (median, p99, max,
microseconds; ``--cpu-batch`` rows a request, its CPU divided by them) on a key after
2,000 distinct benign queries, for distinct benign
queries, resends of one input with fresh N(0, 0.01) noise (every query a similarity
candidate), the issue's search and the shaped searches.

Run (parts with ``--only`` / ``--plans`` / ``--clients``)::

    OMP_NUM_THREADS=1 timeout 3600 nice -n 10 .venv/bin/python \\
        benchmarks/gateway_detection_redteam10.py --only images --out redteam10.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).parent))
import gateway_detection_long as long  # noqa: E402
import gateway_detection_outside as outside  # noqa: E402
import gateway_detection_realworld as rw  # noqa: E402
from gateway_detection_modalities import _block  # noqa: E402
from mlwarden.serve.config import Detection, Similarity  # noqa: E402
from mlwarden.serve.monitor import Monitor  # noqa: E402

CLIENTS = ("scanner", "wakeword")
SHAPED = ("gainsearch", "lightsearch", "shiftsearch", "jpegsearch")
ATTACKS = (
    *SHAPED,
    "neshop",
    "neshopd",
    "neshop7",
    "neshop7d",
    "sybil1",
    "sybilbusy20",
    "sybilpad",
    "sybilselfpad",
    "griefcam3",
    "signopt",
)
IMAGES = {"images", "mnist28"}
APPLIES = {"scanner": IMAGES, "wakeword": {"audio"}, "sybil1": {"images", "tabular"},
           "sybilbusy20": {"images", "tabular"},
           "sybilpad": {"images", "tabular"}, "sybilselfpad": {"images", "tabular"},
           "griefcam3": {"images"}, "signopt": IMAGES | {"tabular"},
           "neshop": IMAGES | {"audio"}, "neshopd": IMAGES | {"audio"},
           "neshop7": IMAGES | {"audio"}, "neshop7d": IMAGES | {"audio"}} | {
    p: IMAGES for p in SHAPED}  # fmt: skip
Shape = Callable[[np.ndarray, int], np.ndarray]  # (clean or candidate input, query index)


PROFILE: str | None = None  # --profile: the workload declared for the client's keys


class _Declared(dict):  # type: ignore[type-arg]
    """``Monitor.profiles`` (key -> declared workload, session 10) for the benchmark's
    own client keys: the attacker's (``k``, ``s<j>``) and a benign client's or a
    victim's (``k0``); other keys (griefers, other users) declare nothing."""

    def get(self, key: str, default: Any = None) -> Any:
        return PROFILE if key in ("k", "k0") or key.startswith("s") else default


def _declare(mon: Monitor) -> Monitor:
    """``mon`` with the client keys' profile declared (``--profile``; none: as it is)."""
    if PROFILE is not None:
        if not hasattr(mon, "profiles"):
            raise SystemExit("--profile needs a Monitor with per-key profiles (session 10)")
        mon.profiles = _Declared()
    return mon


# -- shapings an excuse reads as benign ------------------------------------------------
def _eight_bit(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, 0, 1) * 255) / 255


def shaping(plan: str, seed: int, n: int) -> Shape:
    """The transform a shaped search applies to its ``i``-th query (images in [0, 1]);
    the parameters are drawn once per query index, so the clean input shaped the same
    way is the reference its answers are judged against."""
    rng = np.random.default_rng(1000 + seed)
    if plan == "gainsearch":
        gains = rng.uniform(0.85, 1.15, n)
        return lambda x, i: _eight_bit(x * gains[i])
    if plan == "lightsearch":
        walk = np.clip(np.cumsum(rng.normal(0, 0.002, n)), -0.15, 0.15)
        gains = 1 + 0.08 * np.sin(2 * np.pi * np.arange(n) / 1800) + walk
        seeds = rng.integers(0, 2**32, n)  # a seed a query: the same noise on clean and sent
        return lambda x, i: _eight_bit(
            x * gains[i] + np.random.default_rng(int(seeds[i])).normal(0, 0.004, x.shape)
        )
    if plan == "shiftsearch":
        shifts = rng.integers(-1, 2, (n, 2))
        return lambda x, i: ndimage.shift(x, (0, *shifts[i]), order=0, mode="nearest")
    if plan == "jpegsearch":
        quality = rng.uniform(70, 95, n)
        return lambda x, i: np.stack([outside.jpeg(np.clip(c, 0, 1), quality[i]) for c in x])
    raise ValueError(f"unknown shaped plan {plan!r}; expected one of {SHAPED}")


def shaped_search(kind: long.Kind, x0: np.ndarray, y0: int, budget: int, seed: int,
                  shape: Shape, sigma: float = 0.01) -> np.ndarray:  # fmt: skip
    """The issue's noisy random search (``gateway_detection_modalities.attack``: Square's
    blocks set to +-0.1 of the range, fresh N(0, sigma) noise a query), each query sent
    through ``shape``; a step is kept when the shaped query's true-class score drops."""
    lo, hi = kind.bounds
    span = hi - lo
    rng = np.random.default_rng(seed)
    delta, best, sent = np.zeros_like(x0, dtype=np.float64), np.inf, []
    for i in range(budget):
        cand = delta.copy()
        cand[_block(rng, x0.shape)] = rng.choice([-0.1, 0.1]) * span
        q = np.clip(x0 + cand + rng.normal(0, sigma * span, x0.shape), lo, hi)
        q = np.clip(shape(q, i), lo, hi).astype(np.float32)
        sent.append(q)
        p = float(rw.proba(kind, q[None], np.array([y0]))[0])
        if p < best:
            best, delta = p, cand
    return np.stack(sent)


def achieved_shaped(kind: long.Kind, x0: np.ndarray, y0: int, qs: np.ndarray, upto: int,
                    shape: Shape) -> dict[str, Any]:  # fmt: skip
    """``realworld.achieved`` against the clean input shaped as each query was: a wrong
    answer within Linf 0.15 of it (the search's blocks of 0.1, 5 sigma of its noise),
    where the shaped clean input is still the true class."""
    if upto == 0:
        return {"drop": 0.0, "wrong": False, "rms": None}
    refs = np.stack([shape(x0.astype(np.float64), i) for i in range(upto)]).astype(np.float32)
    ys = np.full(upto, y0)
    drop = float((rw.proba(kind, refs, ys) - rw.proba(kind, qs[:upto], ys)).max())
    bad = (kind.labels(qs[:upto]) != y0) & (kind.labels(refs) == y0)
    span = kind.bounds[1] - kind.bounds[0]
    diff = (qs[:upto].astype(np.float64) - refs).reshape(upto, -1) / span
    linf, rms = np.abs(diff).max(axis=1), np.sqrt((diff**2).mean(axis=1))
    close = float(rms[bad].min()) if bad.any() else None
    return {"drop": round(drop, 3), "wrong": bool((bad & (linf <= 0.15 + 1e-6)).any()),
            "rms": None if close is None else round(close, 4)}  # fmt: skip


def _decoy(x0: np.ndarray, rng: np.random.Generator, size: float) -> np.ndarray:
    """A fresh offset of +-``size`` on each of :func:`reduce`'s blocks (the documented
    ``max_dims`` of contiguous values): it moves the reduced vector by ``size`` per value."""
    n, dims = x0.size, min(Similarity().max_dims, x0.size)
    starts = (np.arange(dims, dtype=np.int64) * n) // dims
    sizes = np.diff(np.append(starts, n))
    return np.repeat(rng.choice([-size, size], dims), sizes).reshape(x0.shape)


def neshop(kind: long.Kind, x0: np.ndarray, y0: int, budget: int, seed: int, m: int = 51,
           sigma: float = 0.01, step: float = 0.02, decoy: float = 0.0) -> np.ndarray:  # fmt: skip
    """NES (Ilyas et al., 2018, arXiv:1804.08598) one point at a time: at each centre the
    clean centre, then ``m - 1`` draws ``c +- sigma u`` (antithetic, fresh ``u``), the true
    class's score gradient estimated from them, then one signed step of ``step`` of the
    range (Linf ball 0.1): each cloud is one fixed distribution around one point, what
    the still-ball rule and a secret sketch both read as a noisy resend. ``decoy``: each
    centre also a fresh offset of +-``decoy`` per reduced block (:func:`_decoy`), so no
    two centres share a ball of the similarity history (the search keeps ``0.1 - decoy``)."""
    lo, hi = kind.bounds
    span = hi - lo
    rng = np.random.default_rng(seed)
    x0 = x0.astype(np.float64)
    base, room = x0.copy(), (0.1 - decoy) * span
    sent: list[np.ndarray] = []
    while len(sent) < budget:
        c = np.clip(base + _decoy(x0, rng, decoy * span), lo, hi) if decoy else base
        sent.append(c.astype(np.float32))
        us = rng.normal(0, 1, ((m - 1) // 2, *x0.shape))
        pairs = np.concatenate([c + sigma * span * us, c - sigma * span * us])
        pairs = np.clip(pairs[np.argsort(rng.random(len(pairs)))], lo, hi).astype(np.float32)
        sent += list(pairs)
        p = rw.proba(kind, pairs, np.full(len(pairs), y0))
        grad = ((p[:, None] * (pairs - c).reshape(len(pairs), -1)).sum(axis=0)).reshape(x0.shape)
        base = np.clip(np.clip(base - step * span * np.sign(grad), x0 - room, x0 + room), lo, hi)
    return np.stack(sent[:budget])


# -- Sign-OPT (held out) -------------------------------------------------------------
class _Oracle:
    """Label-only access to the model that records every query it is asked."""

    def __init__(self, kind: long.Kind, x0: np.ndarray, y0: int, budget: int) -> None:
        self.kind, self.x0, self.y0, self.budget = kind, x0.astype(np.float64), y0, budget
        self.sent: list[np.ndarray] = []

    @property
    def spent(self) -> bool:
        return len(self.sent) >= self.budget

    def adv(self, lam: float, theta: np.ndarray) -> bool:
        """Is ``x0 + lam theta`` (clipped to the range) of another class? One query."""
        lo, hi = self.kind.bounds
        q = np.clip(self.x0 + lam * theta, lo, hi).astype(np.float32)
        self.sent.append(q)
        return bool(self.kind.labels(q[None])[0] != self.y0)

    def boundary(self, theta: np.ndarray, hi: float, tol: float = 5e-3) -> float:
        """``g(theta)``: the distance along ``theta`` to the boundary, by bisection in
        ``[0, hi]`` (``hi`` adversarial) to ``tol`` of ``hi``."""
        lo_ = 0.0
        while hi - lo_ > tol * hi and not self.spent:
            mid = (lo_ + hi) / 2
            if self.adv(mid, theta):
                hi = mid
            else:
                lo_ = mid
        return hi


def _signopt_start(o: _Oracle, rng: np.random.Generator, starts: int = 3) -> tuple[Any, float]:
    """The closest of the first ``starts`` natural inputs of another class: (theta, g)."""
    best: tuple[Any, float] = (None, np.inf)
    tried = 0
    for i in rng.permutation(len(o.kind.data)):
        if tried >= starts or o.spent:
            break
        d = np.asarray(o.kind.data[int(i)], dtype=np.float64) - o.x0
        norm = float(np.linalg.norm(d))
        if norm == 0 or not o.adv(norm, d / norm):
            continue
        tried += 1
        g = o.boundary(d / norm, norm)
        if g < best[1]:
            best = (d / norm, g)
    return best


def signopt(kind: long.Kind, x0: np.ndarray, y0: int, budget: int, seed: int,
            k: int = 20, beta: float = 0.005) -> np.ndarray:  # fmt: skip
    """Sign-OPT (Cheng et al., 2020, arXiv:1909.10773), untargeted, L2, label-only: the
    queries it sends, in order. ``k`` sign probes a step of size ``beta`` (unit ``theta``)."""
    rng = np.random.default_rng(seed)
    o = _Oracle(kind, x0, y0, budget)
    theta, g = _signopt_start(o, rng)
    alpha = 0.2
    while theta is not None and not o.spent:
        grad = np.zeros_like(theta)
        for _ in range(k):
            u = rng.normal(0, 1, theta.shape)
            u /= np.linalg.norm(u)
            probe = theta + beta * u
            # adversarial at g along theta + beta u: g(theta + beta u) <= g(theta)
            grad += (-1.0 if o.adv(g, probe / np.linalg.norm(probe)) else 1.0) * u
            if o.spent:
                break
        for _ in range(3):  # the line search: a step that still crosses at g, else halve it
            new = theta - alpha * grad / k
            new /= np.linalg.norm(new)
            if o.spent or o.adv(g, new):
                theta, g, alpha = new, o.boundary(new, g), alpha * 1.5
                break
            alpha /= 2
    return np.stack(o.sent[:budget]) if o.sent else np.stack([x0.astype(np.float32)])


# -- held-out benign clients ----------------------------------------------------------
def _scan(page: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One scan of ``page`` (C, H, W) in [0, 1]: pose, gain, blur, sensor noise, 8 bits."""
    ang, (dy, dx) = rng.uniform(-2, 2), rng.uniform(-1, 1, 2)
    gain, blur = rng.uniform(0.9, 1.1), rng.uniform(0, 0.5)
    out = np.empty_like(page, dtype=np.float64)
    for c in range(page.shape[0]):
        im = ndimage.rotate(page[c], ang, reshape=False, order=1, mode="nearest")
        im = ndimage.shift(im, (dy, dx), order=1, mode="nearest")
        out[c] = ndimage.gaussian_filter(im, blur) if blur > 0.05 else im
    return _eight_bit(out * gain + rng.normal(0, 0.004, out.shape))


def scanner(data: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """A document-scanner app: each page scanned, 30% rescanned once or twice."""
    out: list[np.ndarray] = []
    while len(out) < n:
        page = data[int(rng.integers(len(data)))]
        again = int(rng.integers(1, 3)) if rng.random() < 0.3 else 0
        out += [_scan(page, rng) for _ in range(1 + again)]
    return np.stack(out[:n]).astype(np.float32)


def _utter(clip: np.ndarray, rng: np.random.Generator, rate: float) -> np.ndarray:
    """One attempt: ``clip`` at speaking rate ``rate`` at a random offset of 1 s of room
    noise, a caller's gain, 16-bit samples."""
    m = int(len(clip) / rate)
    said = np.interp(np.arange(m) * rate, np.arange(len(clip)), clip)
    said = said * rng.uniform(0.3, 1.0)
    win = ndimage.uniform_filter1d(rng.normal(0, 1, 8000), 8) * rng.uniform(0.002, 0.01)
    at = int(rng.integers(0, 8000 - min(m, 8000) + 1))
    win[at : at + m] += said[: 8000 - at]
    return np.round(np.clip(win, -1, 1) * 32767) / 32767


def wakeword(n: int, rng: np.random.Generator) -> np.ndarray:
    """A voice assistant's wake word: a prompt's first 0.4-0.7 s said by a caller in a
    1 s window; 40% of attempts retried once or twice (new offset, gain, rate, noise)."""
    clips, out = rw._recordings(), []  # type: list[np.ndarray], list[np.ndarray]
    while len(out) < n:
        c = clips[int(rng.integers(len(clips)))]
        word = c[: int(rng.uniform(0.4, 0.7) * 8000)]
        tries = 1 + (int(rng.integers(1, 3)) if rng.random() < 0.4 else 0)
        out += [_utter(word, rng, rng.uniform(0.95, 1.05)) for _ in range(tries)]
    return np.stack(out[:n])[:, None, :].astype(np.float32)


# -- runs ------------------------------------------------------------------------------
def _accounts(kind: long.Kind, det: Detection, k: int, m: int) -> Monitor:
    """One gateway with ``k`` fresh accounts of ``m`` distinct benign queries each."""
    mon = _declare(kind.monitor(det))
    bf, bl, bp = rw._benign(kind, det)
    for j in range(k):
        for i in range(m * j, m * j + m):
            rw._ask(mon, f"s{j}", bf, bl, bp, i)
    return mon


def queries(kind: long.Kind, plan: str, run: int, budget: int) -> tuple[Any, list[str], Any]:
    """The attack's queries, the key of each, and how to judge what it achieved."""
    x0, y0 = rw._target(kind, run)
    if plan in SHAPED:
        shape = shaping(plan, run, budget)
        qs = shaped_search(kind, x0, y0, budget, run, shape)
        return qs, ["k"] * budget, lambda up: achieved_shaped(kind, x0, y0, qs, up, shape)
    if plan == "signopt":
        qs = signopt(kind, x0, y0, budget, run)
    elif plan.startswith("neshop"):
        few = {"m": 7, "sigma": 0.02} if plan.startswith("neshop7") else {}
        qs = neshop(kind, x0, y0, budget, run, decoy=0.04 if plan.endswith("d") else 0.0, **few)
    elif plan in ("sybilpad", "sybilselfpad"):
        return padded(kind, x0, y0, budget, run, own=plan == "sybilselfpad")
    else:  # sybil1 / sybilbusy20: the noisy search over fresh accounts
        qs = long.search(kind, x0, y0, 0.01, run)[:budget]
    k = 300 if plan == "sybil1" else 20 if plan == "sybilbusy20" else 1
    keys = [f"s{i % k}" for i in range(len(qs))] if k > 1 else ["k"] * len(qs)
    return qs, keys, lambda up: rw.achieved(kind, x0, y0, qs, up)


def padded(kind: long.Kind, x0: np.ndarray, y0: int, budget: int, run: int,
           keys: int = 20, pads: int = 2, own: bool = False) -> tuple[Any, list[str], Any]:  # fmt: skip
    """``sybilpad``: the issue's search (sigma 0.01) round robin over ``keys`` accounts,
    each step followed by ``pads`` near-copies of it (N(0, 0.002) of the range) from two
    other accounts: every step has a neighbour a hair away, so the ball reads as a dense
    stream (a camera polled by many apps), and no account resends its own query
    (``own``: the step's own account sends the copies, ``sybilselfpad``)."""
    lo, hi = kind.bounds
    rng = np.random.default_rng(100 + run)
    steps = long.search(kind, x0, y0, 0.01, run)[: budget // (1 + pads)]
    qs, who = [], []
    for i, q in enumerate(steps):
        qs.append(q)
        who.append(f"s{i % keys}")
        for p in range(pads):
            qs.append(np.clip(q + rng.normal(0, 0.002 * (hi - lo), q.shape), lo, hi))
            who.append(f"s{(i if own else i + 7 * (p + 1)) % keys}")
    arr = np.stack(qs).astype(np.float32)
    return arr, who, lambda up: rw.achieved(kind, x0, y0, arr, up)


def griefcam3(kind: long.Kind, det: Detection, n: int = 500, griefers: int = 10,
              noise: float = 0.03) -> dict[str, Any]:  # fmt: skip
    """``realworld.griefcam`` with copies kept apart: before each of a public webcam's
    frames (the victim's key) the griefers send it with noise N(0, ``noise``), enough
    that their copies are no dense stream; the victim's flagged queries per 1,000 alone
    and with them (per detector: a cross-key alert on the victim is the griefers')."""
    rng = np.random.default_rng(9)
    pick = rng.choice(len(kind.data), 5, replace=False)
    frames = rw.camera(kind.data[pick[0]], kind.data[pick[1:]], n, rng)
    alone = rw.feed(kind, det, _declare(kind.monitor(det)), frames, [0] * n)
    rows, keys = [], []
    for f in frames:
        for g in range(griefers):
            rows.append(np.clip(f + rng.normal(0, noise, f.shape), 0, 1))
            keys.append(g + 1)
        rows.append(f)
        keys.append(0)
    mark = np.asarray(keys) == 0
    xs = np.stack(rows).astype(np.float32)
    return {
        "alone": alone,
        "griefed": rw.feed(kind, det, _declare(kind.monitor(det)), xs, keys, mark),
    }


def run_attack(kind: long.Kind, det: Detection, plan: str, run: int, budget: int,
               mon: Monitor) -> dict[str, Any]:  # fmt: skip
    qs, keys, judge = queries(kind, plan, run, budget)
    every = 10 if plan == "sybilbusy20" else 0
    first, by = rw.first_flag(kind, det, rw._copy(mon), qs, keys, every)
    upto = first - 1 if first else len(qs)
    return {"first": first, "by": by, "at_flag": judge(upto), "all": judge(len(qs))}


def cpu(name: str, kind: long.Kind, det: Detection, warm: Monitor, n: int = 300,
        batch: int = 1) -> dict[str, Any]:  # fmt: skip
    """Thread CPU of ``inspect`` a query (us: median, p99, max over requests of ``batch``
    rows, each request's CPU divided by its rows) on a warm key, per stream."""
    lo, hi = kind.bounds
    rng = np.random.default_rng(11)
    bf = rw._benign(kind, det)[0]
    x0, y0 = rw._target(kind, 0)
    streams: dict[str, Any] = {"distinct": bf[long.WARM : long.WARM + n]}
    if kind.modality != "text":
        one = np.repeat(np.asarray(x0)[None], n, axis=0)
        streams["resend"] = np.clip(one + rng.normal(0, 0.01 * (hi - lo), one.shape), lo, hi)
    streams["search"] = long.search(kind, x0, y0, 0.01, 0)[:n]
    if name in IMAGES:
        streams["nullnoise"] = rw.nullspace(kind, x0, y0, n, 0, 0.005)
        for plan in SHAPED:
            streams[plan] = shaped_search(kind, x0, y0, n, 0, shaping(plan, 0, n))
    out = {}
    for label, xs in streams.items():
        mon = rw._copy(warm)
        feats, labels = kind.feats(det, xs), kind.labels(xs)
        probs = rw._answers(kind, det, xs)
        us = []
        for i in range(0, len(feats), batch):
            j = min(i + batch, len(feats))
            extra = () if probs is None else (probs[i:j],)
            t = time.thread_time_ns()
            mon.inspect("k", feats[i:j], labels[i:j], *extra)
            us.append((time.thread_time_ns() - t) / 1000 / (j - i))
        a = np.asarray(us)
        out[label] = {"median": round(float(np.median(a))), "p99": round(float(np.percentile(a, 99))),
                      "max": round(float(a.max()))}  # fmt: skip
    return out


def benign(kind: long.Kind, det: Detection, client: str, n: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    xs = scanner(kind.data, n, rng) if client == "scanner" else wakeword(n, rng)
    return rw.feed(kind, det, _declare(kind.monitor(det)), xs, [0] * n)


def run_kind(name: str, kind: long.Kind, args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.time()
    det, row = rw.calibrated_clients(name, kind, args, APPLIES,
                                     lambda det, c, s: benign(kind, det, c, args.n, s))  # fmt: skip
    plans = [p for p in args.plans if name in APPLIES[p]]
    warm = (
        _declare(rw._warm(kind, det))
        if args.cpu or {p for p in plans if "sybil" not in p}
        else None
    )
    for plan in plans:
        if plan == "griefcam3":
            row[plan] = griefcam3(kind, det)
            print(f"{name} {plan}: {json.dumps(row[plan])}", flush=True)
            continue
        mon = (_accounts(kind, det, 300, 20) if plan == "sybil1" else
               _accounts(kind, det, 20, 200) if plan in ("sybilbusy20", "sybilpad", "sybilselfpad") else warm)  # fmt: skip
        for run in range(args.runs):
            res = run_attack(kind, det, plan, run, args.budget, mon)  # type: ignore[arg-type]
            row.setdefault(plan, []).append(res)
            print(f"{name} {plan} run {run}: {json.dumps(res)}", flush=True)
    if args.cpu:
        row["cpu"] = cpu(name, kind, det, warm, batch=args.cpu_batch)  # type: ignore[arg-type]
        print(f"{name} cpu: {json.dumps(row['cpu'])}", flush=True)
    row["seconds"] = round(time.time() - t0)
    return row


def table(results: dict[str, Any]) -> None:
    """The markdown tables of ``docs/benchmarks/gateway.md`` (the realworld benchmark's
    layout, this benchmark's clients and plans), then the detector CPU rows."""
    rw.table(results, CLIENTS, ATTACKS)
    for name, row in results.items():
        if "cpu" in row:
            cells = ", ".join(
                f"{k} {v['median']} / {v['p99']} / {v['max']}" for k, v in row["cpu"].items()
            )
            print(f"\n{name} detector CPU us a query (median / p99 / max): {cells}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    rw.add_common_args(ap, "images", "images, mnist28, audio, tabular", CLIENTS, ATTACKS,
                       "a workload declared for the client keys (camera)")  # fmt: skip
    ap.add_argument("--cpu", action="store_true", help="also the detector CPU a query, per stream")
    ap.add_argument("--cpu-batch", type=int, default=1, help="rows a request in --cpu")
    args = ap.parse_args()
    global PROFILE
    PROFILE = args.profile
    rw.parse_common(args, CLIENTS, ATTACKS)
    rw.run_all(args, lambda name, kind, _raw, args: run_kind(name, kind, args), table)


if __name__ == "__main__":
    main()
