"""Gateway stream detectors against session 11's red team: the literature's adaptive attacks.

The detection literature's own adaptive attacks on stateful defences, run against what a
client of ``mlwarden serve`` can see. Built on ``gateway_detection_realworld.py`` (its
kinds, calibration, warm keys and judges: in-process ``Monitor``, one row a request, the
settings ``gateway calibrate`` picks on the kind's plain calibration inputs), plus the
issue's own setting, ``digits``: the SmallCNN of ``benchmarks/gateway_load.py`` on 8x8
digits, the default ``detection:`` config, fresh keys, scores rounded to 2 decimals (the
``scores`` role), the issue's five held-out digits and its 2x2 search blocks.

Every attacker here talks to a :class:`Gate`: one gateway, its keys, and the answer a
client gets under an ``action``:

* ``block``: the flagged query is refused (403) and the key is blocked for good: the
  attacker sees the rejection, loses that answer and goes on with a fresh key (a
  *burnt* key each time);
* ``throttle``: the flagged query is answered, and the key's rate is cut (a 429 that
  says why on its next fast request): the attacker sees the rejection and goes on with
  a fresh key to keep its speed (a burnt key each time);
* ``log``: nothing shows; the attacker is blind.

Attackers, 5 runs of ``--budget`` queries (300) on the kind's attack inputs:

* ``oars-block`` / ``oars-throttle``: OARS (oracle-guided adaptive rejection sampling;
  Feng, Hooda, Mangaokar, Fawaz, Jha & Prakash, "Stateful Defenses for Machine Learning
  Models Are Not Yet Secure Against Black-box Attacks", CCS 2023, arXiv:2303.06280), on
  the issue's noisy random search (Square's blocks of +-0.1 of the range, fresh Gaussian
  noise a query). Built from the paper's description, not its code: the defence's
  rejections are an oracle of what it calls too similar. (1) *Adaptive step size*: the
  search starts at the issue's noise (sigma 0.05 of the range) and multiplies its
  proposal scale (the per-query noise: the block step is already the ball's edge) by ``GROW`` after every
  rejection, until its proposals pass; the rejection rate over the last ``PROBE``
  queries is the signal, and a long run without rejections shrinks the scale back by
  ``SHRINK`` (never below the start) so the search keeps as much precision as the
  defence lets it. (2) *Rejection sampling with an adaptive proposal*: a rejected
  proposal is not used (under ``block`` it was never answered); the search draws a new
  one, and the proposal distribution moves away from what was rejected: each block
  position keeps a weight, multiplied by ``AVOID`` when a proposal that changed it was
  rejected, and blocks are drawn in proportion to the weights. Reported: the first
  flag, the keys burnt, and whether it held an adversarial input before its first flag
  and within the budget (``wrong``: an answer of another class within Linf 0.1 of the
  range of the clean input, the issue's ball; ``clean``: the search's current
  perturbation, without its noise, is adversarial, i.e. one more query would confirm it);
* ``oars-blind``: ``log`` gives no oracle, so the attacker learns the scale on a gateway
  of its own with the same configuration (the white-box case: it has the code and the
  config; its gateway is built as the target's, on the same ``--secret-seed`` secret, so
  it knows the secret sketch too: :func:`_own`, another secret, was written for it but
  never called until session 12, whose ``redteam12 --own-secret`` uses it): it runs
  ``oars-block`` there on another input (the next run's target), takes the scale it
  ended at, and runs the noisy search at that fixed scale against the target (no
  rejection feedback);
* ``oars-rotate`` (``block``): OARS's oracle read for what a count-based gateway leaks:
  each rejection also tells how many queries the key got answered first, and the
  attacker sends at most one fewer on each fresh key (the fewest seen, minus one),
  keeping the issue's noise (no scale growth): a search spread over keys, its length
  per key learnt from the rejections (the gateway's cross-key rule is what is left);
* ``blind`` (images): query blinding (Chen, Carlini & Wagner, "Stateful Detection of
  Black-Box Adversarial Attacks", SPAI 2020, arXiv:1907.05587; the baseline adaptive
  attack of Feng et al. against Blacklight): the issue's search (sigma 0.01), each query
  sent through a fresh random transform of the image (rotation U(-8, 8) degrees, a shift
  of U(-1, 1) pixels, zoom U(0.93, 1.07), brightness U(-0.05, 0.05), contrast U(0.9,
  1.1), noise N(0, U(0, 0.03))), judged as ``redteam10``'s shaped searches are (against
  the clean input under the same transform); ``blindw`` (session 15, against a rule that
  counts a renderer only when the aligned difference of two views is smooth): the same
  with its sensor noise always N(0, 0.03) (white: it roughens every difference);

Benign clients held out (nobody built them before), flagged per 1,000:

* ``crm`` (tables): a sales team's lead scorer. Each lead (a real row) is scored when
  it is opened; the CRM's autocomplete then fills a block of 3-6 adjacent fields from a
  similar existing customer (the nearest row of the table) and the lead is scored
  again; the rep types the deal's figures into 1-3 fields (values rounded to 2
  significant digits of the range), rescoring after each; a quarter of leads are
  reopened later (scored again as they are), a tenth are a duplicate of an earlier lead
  with one field differing;
* ``thumbsizes`` (images): an image service that renders each photo at several thumbnail
  sizes (each side scaled to 1/4, 3/8, 1/2, 3/4 and 1 with bilinear resampling), each
  brought back to the model's input size (the model's fixed shape) and 8-bit coded,
  and classifies every size; a tenth of photos are uploaded again later.

``--mix K`` (OARS plans): the attack key sends ``K`` distinct benign queries of the pool
before each attack query (the literature's "mix in benign traffic"; the budget counts
attack queries only), on its own gateway too. The pool's rows past the warm-up's are
mixed in; a pool no longer than the warm-up (breast cancer 285 rows, wine 89) is split
in half, disjoint warm-up and mixed-in parts (:func:`split`, printed), and once its
mixed-in rows are used up each is sent again as a sensor logger reads it another hour
(an exact resend is dropped by the gateway's repeat filter, which would end the mix).

``--calib-sigma S``: every kind (digits too) calibrated by ``gateway calibrate --sigma S``
instead of its default 0.05: whether a deployment that calibrates against a noisier
search flags ``oars-blind`` and still passes its benign clients.

Run (parts with ``--only`` / ``--plans`` / ``--clients``)::

    OMP_NUM_THREADS=1 timeout 3600 nice -n 10 .venv/bin/python \\
        benchmarks/gateway_detection_redteam11.py --only digits,images --out redteam11.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).parent))
import gateway_detection_long as long  # noqa: E402
import gateway_detection_outside as outside  # noqa: E402
import gateway_detection_realworld as rw  # noqa: E402
import gateway_detection_redteam10 as rt10  # noqa: E402
from gateway_detection_clients import _Cnn  # noqa: E402
from mlwarden.serve import monitor  # noqa: E402
from mlwarden.serve.config import Detection  # noqa: E402
from mlwarden.serve.monitor import Monitor  # noqa: E402

CLIENTS = ("crm", "thumbsizes")
ATTACKS = ("oars-block", "oars-throttle", "oars-blind", "oars-rotate", "blind", "blindw")
IMAGES = {"digits", "images", "mnist28"}
TABLES = {"tabular", "breast cancer", "wine"}
APPLIES = {"crm": TABLES, "thumbsizes": IMAGES, "blind": IMAGES, "blindw": IMAGES} | {
    p: IMAGES | TABLES for p in ATTACKS[:4]}  # fmt: skip
SIGMA0 = 0.05  # the per-query noise, fraction of the range
EPS = 0.1  # the Linf ball (and Square's block step), fraction of the range
GROW, SHRINK, AVOID, PROBE = 1.5, 0.9, 0.5, 50


# -- the client's view of a gateway ------------------------------------------------------
def scores(kind: long.Kind, xs: np.ndarray) -> np.ndarray:
    """The model's class scores (N, classes), columns in label order."""
    m = kind.model
    if hasattr(m, "predict_proba"):
        return np.asarray(m.predict_proba(np.asarray(xs).reshape(len(xs), -1)))
    return np.asarray(m.proba(np.asarray(xs, dtype=np.float32)))


def _column(kind: long.Kind, y: int) -> int:
    classes = getattr(kind.model, "classes_", None)
    return int(np.searchsorted(classes, y)) if classes is not None else int(y)


@dataclass
class Gate:
    """One gateway as a client sees it: answers rounded to 2 decimals (the ``scores``
    role), and under ``block`` / ``throttle`` each flag shown to the client and its key
    replaced by a fresh one (``burnt``); under ``log`` flags are counted, never shown."""

    kind: long.Kind
    det: Detection
    mon: Monitor
    action: str
    sent: int = 0
    burnt: int = 0
    used: int = 0  # keys used besides the first ("k"), burnt or set aside
    flags: int = 0
    first: int | None = None
    by: set[str] = field(default_factory=set)
    queries: list[np.ndarray] = field(default_factory=list)
    mix: int = 0  # distinct benign queries the key sends before each attack query
    decoys: Any = None  # (features, labels, answers) of the benign pool, rw._benign's
    used_decoys: int = 0
    lead: int = 0  # extra benign queries before the first attack query's mix (its timing)

    @property
    def key(self) -> str:
        return "k" if self.used == 0 else f"a{self.used}"  # "k": the warmed key

    def rotate(self) -> None:
        """Go on with a fresh key (the old one set aside, not burnt)."""
        self.used += 1

    def _flag(self, found: dict[str, list[int]], at: int) -> bool:
        """Record a flag seen at attack query ``at``; whether the client saw it (and
        lost the key)."""
        self.flags += 1
        self.first = self.first or at
        self.by |= set(found)
        if self.action == "log":
            return False
        self.burnt += 1  # blocked for good (block) or slowed tenfold (throttle): a new key
        self.used += 1
        return True

    def _mixed(self) -> bool:
        """``mix`` distinct benign queries of the pool's mixing part (:func:`split`: past
        the warm-up's rows) on the key before an attack query; once the part is used up
        (breast cancer's 143 rows, wine's 45), its rows again as a sensor logger reads
        them another hour (:func:`_again`: an exact resend would be dropped as a repeat);
        whether one was flagged where the client sees it."""
        feats, labels, probs = self.decoys
        start = split(len(labels))
        if start >= len(labels):
            raise ValueError(f"--mix needs benign rows past the warm-up's {start}: "
                             f"this kind's pool has {len(labels)}")  # fmt: skip
        shown = False
        for _ in range(self.mix + (self.lead if self.sent == 0 else 0)):
            cycle, j = divmod(self.used_decoys, len(labels) - start)
            self.used_decoys += 1
            if cycle:
                found = self._again(np.asarray(feats[start + j]), cycle)
            else:
                found = rw._ask(self.mon, self.key, feats, labels, probs, start + j)
            shown |= bool(found) and self._flag(found, self.sent + 1)
        return shown

    def _again(self, row: np.ndarray, cycle: int) -> dict[str, list[int]]:
        """``row`` read again ``cycle`` hours later by ``gateway_detection_outside.logger``
        (x (1 + N(0, 0.002)), a daily cycle of +-1%, CSV rounding), sent on the key."""
        raw = tuple(self.kind.bounds) != (0.0, 1.0)
        rng = np.random.default_rng([cycle, self.used_decoys])
        xs = outside.logger(self.kind.bounds, raw)(row, rng, {}, cycle)[None]
        return self.mon.inspect(self.key, self.kind.feats(self.det, xs), self.kind.labels(xs),
                                rw._answers(self.kind, self.det, xs))  # fmt: skip

    def ask(self, q: np.ndarray) -> tuple[np.ndarray | None, bool]:
        """Send ``q`` (after ``mix`` benign queries): (its rounded scores, None when
        refused; whether a flag showed)."""
        before = self._mixed() if self.mix else False
        q = np.asarray(q, dtype=np.float32)
        self.sent += 1
        self.queries.append(q)
        xs = q[None]
        found = self.mon.inspect(self.key, self.kind.feats(self.det, xs), self.kind.labels(xs),
                                 rw._answers(self.kind, self.det, xs))  # fmt: skip
        answer = np.round(scores(self.kind, xs)[0], 2)
        if not found:
            return answer, before
        shown = self._flag(found, self.sent)
        return (None if shown and self.action == "block" else answer), shown or before


def split(n: int) -> int:
    """Where a benign pool of ``n`` rows stops warming the attack key and starts being
    mixed in (``--mix``): past the warm-up's ``long.WARM`` rows, or, for a pool no longer
    than the warm-up (breast cancer 285 rows, wine 89), at its half: the first half warms
    the key, the second half (disjoint from it) is mixed in."""
    return long.WARM if n > long.WARM else n // 2


def pool_note(name: str, kind: long.Kind) -> str:
    """What ``--mix`` mixes in on ``name`` (printed by the benchmarks that mix)."""
    w, total = long.WARM, len(kind.pool)
    n = min(total, w) + max(0, total - w - 1000)  # rw._benign's rows: 1,000 held for calibration
    s = split(n)
    text = f"{name}: benign pool of {n} rows: warm-up rows 0-{min(s, long.WARM) - 1}, "
    text += f"mixed-in rows {s}-{n - 1}"
    if s < long.WARM:
        text += " (a pool no longer than the warm-up split in half; past its rows, "
        text += "each row again as a sensor logger reads it another hour)"
    return text


def _warm(kind: long.Kind, det: Detection, mixing: bool) -> Monitor:
    """``rw._warm``; when the key mixes in benign rows, only the pool's warm-up part
    (:func:`split`: the same rows on a pool longer than the warm-up)."""
    if not mixing:
        return rw._warm(kind, det)
    mon = kind.monitor(det)
    bf, bl, bp = rw._benign(kind, det)
    for j in range(min(long.WARM, split(len(bl)))):
        rw._ask(mon, "k", bf, bl, bp, j)
    return mon


# -- OARS (Feng et al., CCS 2023) on the noisy random search ---------------------
def _positions(shape: tuple[int, ...], digits: bool) -> list[tuple[slice, ...]]:
    """The search's block positions: 2x2 on 8x8 digits (the issue's), 4x4 across the
    channels of images, one feature of a table (``gateway_detection_modalities._block``)."""
    if digits:
        return [(slice(None), slice(r, r + 2), slice(c, c + 2)) for r in range(7) for c in range(7)]
    if len(shape) == 1:
        return [(slice(i, i + 1),) for i in range(shape[0])]
    h, w = shape[1] - 4, shape[2] - 4
    return [(slice(None), slice(r, r + 4), slice(c, c + 4)) for r in range(h) for c in range(w)]


@dataclass
class Proposal:
    """The search's proposal distribution: its scale (the step size OARS adapts) and a
    weight per block position (OARS's adaptive proposal: away from what was rejected)."""

    positions: list[tuple[slice, ...]]
    scale: float = 1.0
    weights: np.ndarray = field(default_factory=lambda: np.zeros(0))
    recent: list[bool] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.weights = np.ones(len(self.positions))

    def draw(self, rng: np.random.Generator) -> int:
        return int(rng.choice(len(self.positions), p=self.weights / self.weights.sum()))

    def learn(self, pos: int, rejected: bool, adapt: bool) -> None:
        """A rejection grows the scale and makes its block rarer; a window of ``PROBE``
        proposals without one shrinks the scale back toward the start."""
        self.recent = [*self.recent[-(PROBE - 1) :], rejected]
        if not adapt:
            return
        if rejected:
            self.scale *= GROW
            self.weights[pos] *= AVOID
        elif len(self.recent) == PROBE and not any(self.recent):
            self.scale = max(1.0, self.scale * SHRINK)
            self.recent = []


Noise = Callable[[np.random.Generator, float], np.ndarray]  # (rng, sd) -> a query's noise


def oars(gate: Gate, x0: np.ndarray, y0: int, budget: int, seed: int, scale: float = 1.0,
         adapt: bool = True, digits: bool = False, rotate: bool = False,
         noise: Noise | None = None) -> dict[str, Any]:  # fmt: skip
    """The issue's noisy random search under OARS against ``gate``: the proposal scale
    multiplies the per-query noise (``SIGMA0``); the block step is the ball's edge
    already (Square's vertices), so the noise is what OARS grows. ``noise(rng, sd)``:
    a query's noise of ``sd`` per value (default white Gaussian; redteam12's shapes)."""
    lo, hi = gate.kind.bounds
    span = hi - lo
    rng = np.random.default_rng(seed)
    prop = Proposal(_positions(x0.shape, digits), scale)
    col = _column(gate.kind, y0)
    delta, best = np.zeros_like(x0, dtype=np.float64), np.inf
    deltas: list[np.ndarray] = []  # the perturbation in hand after each query
    turn = Turns() if rotate else None
    while gate.sent < budget:
        if turn is not None:
            turn.before(gate)
        pos = prop.draw(rng)
        cand = delta.copy()
        cand[prop.positions[pos]] = rng.choice([-EPS, EPS]) * span
        sd = SIGMA0 * prop.scale * span
        dither = rng.normal(0, sd, x0.shape) if noise is None else noise(rng, sd)
        answer, rejected = gate.ask(np.clip(x0 + cand + dither, lo, hi))
        prop.learn(pos, rejected, adapt)
        if turn is not None:
            turn.after(rejected)
        if answer is not None and answer[col] < best:  # under throttle a flagged one too
            best, delta = float(answer[col]), cand
        deltas.append(delta.copy())
    return {"scale": round(prop.scale, 3), "deltas": deltas}


@dataclass
class Turns:
    """``oars-rotate``: the rejections also say how many queries a key may send; the
    attacker sends at most one fewer than the fewest a key got answered before its
    rejection, then goes on with a fresh key (a search spread over keys, learnt)."""

    length: int | None = None
    answered: int = 0

    def before(self, gate: Gate) -> None:
        if self.length is not None and self.answered >= self.length:
            gate.rotate()
            self.answered = 0

    def after(self, rejected: bool) -> None:
        if rejected:  # the key is gone: learn its length, start counting a fresh one
            self.length = max(1, min(self.length or self.answered, self.answered - 1))
            self.answered = 0
        else:
            self.answered += 1


def judge_oars(gate: Gate, x0: np.ndarray, y0: int, deltas: list[np.ndarray],
               upto: int) -> dict[str, Any]:  # fmt: skip
    """``realworld.achieved`` on the first ``upto`` queries, plus ``clean``: the search's
    perturbation in hand after them, sent without noise, is another class."""
    qs = np.stack(gate.queries)
    out = rw.achieved(gate.kind, x0, y0, qs, upto)
    if upto:
        lo, hi = gate.kind.bounds
        clean = np.clip(x0 + deltas[upto - 1], lo, hi).astype(np.float32)
        out["clean"] = bool(gate.kind.labels(clean[None])[0] != y0)
    else:
        out["clean"] = False
    return out


def run_oars(kind: long.Kind, det: Detection, plan: str, run: int, budget: int,
             target: Monitor, make: Callable[[], Monitor], digits: bool, mix: int = 0,
             noise: Noise | None = None, gate_type: type[Gate] = Gate,
             own_secret: bool = False) -> dict[str, Any]:  # fmt: skip
    """One run of ``oars-block`` / ``-throttle`` / ``-blind`` on a copy of ``target``;
    ``make`` builds a gateway like it: ``oars-blind``'s own gateway shares the target's
    sketch secret unless ``own_secret`` (:func:`_own`: another secret). ``noise``: the
    search's noise shape (:func:`oars`); ``gate_type``: a :class:`Gate` with its own
    ``mix`` (redteam12's decoys)."""
    x0, y0 = rw._target(kind, run)
    x0 = np.asarray(x0, dtype=np.float64)
    scale, adapt, action, learnt = 1.0, plan != "oars-rotate", plan.split("-")[1], None
    action = "block" if action == "rotate" else action
    decoys = rw._benign(kind, det) if mix else None
    if plan == "oars-blind":  # the scale learnt on a gateway of its own, on another input
        xl, yl = rw._target(kind, run + 1)
        own = gate_type(kind, det, _own(make) if own_secret else make(), "block", mix=mix,
                        decoys=decoys)  # fmt: skip
        learnt = oars(own, np.asarray(xl, dtype=np.float64), yl, budget, 100 + run,
                      digits=digits, noise=noise)  # fmt: skip
        scale, adapt, action = learnt["scale"], False, "log"
    gate = gate_type(kind, det, rw._copy(target), action, mix=mix, decoys=decoys)
    res = oars(gate, x0, y0, budget, run, scale, adapt, digits, plan == "oars-rotate", noise)
    upto = gate.first - 1 if gate.first else gate.sent
    return {"first": gate.first, "by": sorted(gate.by), "burnt": gate.burnt, "keys": gate.used + 1,
            "flags": gate.flags,
            "scale": res["scale"], "learnt_on_own": None if learnt is None else learnt["scale"],
            "at_flag": judge_oars(gate, x0, y0, res["deltas"], upto),
            "all": judge_oars(gate, x0, y0, res["deltas"], gate.sent)}  # fmt: skip


SECRET_SEED = 0  # --secret-seed: the target gateways' sketch secret (realworld.fix_secret)


def _own(make: Callable[[], Monitor]) -> Monitor:
    """The attacker's own gateway: built as the target is, on another sketch secret
    (``--secret-seed`` + 1; it has the code and the config, not the target's secret)."""
    keep = monitor.new_secret
    rw.fix_secret(SECRET_SEED + 1)
    try:
        return make()
    finally:
        monitor.new_secret = keep


# -- query blinding (Chen, Carlini & Wagner 2020) -------------------------------------
def blinding(seed: int, n: int, white: float | None = None) -> rt10.Shape:
    """A fresh random transform for each query index (parameters drawn once per index,
    so the clean input blinded the same way is the reference its answer is judged by);
    ``white``: its sensor noise always N(0, ``white``) (``blindw``: 0.03)."""
    rng = np.random.default_rng(2000 + seed)
    ang, (dy, dx) = rng.uniform(-8, 8, n), rng.uniform(-1, 1, (2, n))
    zoom, bright, contrast = (
        rng.uniform(0.93, 1.07, n),
        rng.uniform(-0.05, 0.05, n),
        rng.uniform(0.9, 1.1, n),
    )
    noise, seeds = rng.uniform(0, 0.03, n), rng.integers(0, 2**32, n)
    if white is not None:
        noise = np.full(n, white)

    def shape(x: np.ndarray, i: int) -> np.ndarray:
        out = np.empty_like(x, dtype=np.float64)
        for c in range(x.shape[0]):
            im = ndimage.rotate(x[c], ang[i], reshape=False, order=1, mode="nearest")
            im = ndimage.affine_transform(im, np.eye(2) / zoom[i], order=1, mode="nearest",
                                          offset=(np.array(im.shape) - 1) / 2 * (1 - 1 / zoom[i]))  # fmt: skip
            out[c] = ndimage.shift(im, (dy[i], dx[i]), order=1, mode="nearest")
        out = (out - out.mean()) * contrast[i] + out.mean() + bright[i]
        out += np.random.default_rng(int(seeds[i])).normal(0, noise[i], out.shape)
        return np.clip(out, 0, 1)

    return shape


def run_blind(kind: long.Kind, det: Detection, run: int, budget: int,
              target: Monitor, white: float | None = None) -> dict[str, Any]:  # fmt: skip
    x0, y0 = rw._target(kind, run)
    shape = blinding(run, budget, white)
    qs = rt10.shaped_search(kind, x0, y0, budget, run, shape)
    first, by = rw.first_flag(kind, det, rw._copy(target), qs, ["k"] * len(qs))
    upto = first - 1 if first else len(qs)
    judge = lambda up: rt10.achieved_shaped(kind, x0, y0, qs, up, shape)  # noqa: E731
    return {"first": first, "by": by, "at_flag": judge(upto), "all": judge(len(qs))}


# -- held-out benign clients ----------------------------------------------------------
def crm(data: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """A sales team's lead scorer (rows in [0, 1]): open, autocomplete, typed figures,
    reopened leads and near-duplicate leads."""
    data = np.asarray(data, dtype=np.float64)
    d = data.shape[1]
    out: list[np.ndarray] = []
    leads: list[np.ndarray] = []
    while len(out) < n:
        r = rng.random()
        if leads and r < 0.25:  # reopened: scored again as it is
            out.append(leads[int(rng.integers(len(leads)))])
            continue
        if leads and r < 0.35:  # a duplicate of an earlier lead, one field differing
            dup = leads[int(rng.integers(len(leads)))].copy()
            f = int(rng.integers(d))
            dup[f] = data[int(rng.integers(len(data))), f]
            out.append(dup)
            leads.append(dup)
            continue
        row = data[int(rng.integers(len(data)))].copy()
        out.append(row.copy())
        k = int(rng.integers(3, 7))
        s = int(rng.integers(0, d - k + 1))
        dist = ((data - row) ** 2).sum(axis=1)
        dist[dist == 0] = np.inf
        row[s : s + k] = data[int(dist.argmin()), s : s + k]  # autocomplete from a similar customer
        out.append(row.copy())
        for f in rng.choice(d, int(rng.integers(1, 4)), replace=False):
            row[f] = np.round(data[int(rng.integers(len(data))), f], 2)  # typed, 2 digits
            out.append(row.copy())
        leads.append(row)
    return np.stack(out[:n]).astype(np.float32)


def _resize(im: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resampling of (C, H, W) to (C, h, w)."""
    return np.asarray(ndimage.zoom(im, (1, h / im.shape[1], w / im.shape[2]), order=1,
                                   mode="nearest", grid_mode=True))  # fmt: skip


def thumbsizes(data: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """An image service classifying each photo at five thumbnail sizes, each brought back
    to the model's input size, 8-bit; a tenth of photos uploaded again later."""
    out: list[np.ndarray] = []
    seen: list[int] = []
    while len(out) < n:
        i = seen[int(rng.integers(len(seen)))] if seen and rng.random() < 0.1 else int(
            rng.integers(len(data)))  # fmt: skip
        seen.append(i)
        im = np.asarray(data[i], dtype=np.float64)
        h, w = im.shape[1:]
        for f in (0.25, 0.375, 0.5, 0.75, 1.0):
            small = _resize(im, max(2, round(h * f)), max(2, round(w * f)))
            out.append(rt10._eight_bit(_resize(small, h, w)))
    return np.stack(out[:n]).astype(np.float32)


def benign(kind: long.Kind, det: Detection, client: str, n: int, seed: int,
           make: Callable[[], Monitor]) -> dict[str, Any]:  # fmt: skip
    rng = np.random.default_rng(seed)
    xs = crm(kind.data, n, rng) if client == "crm" else thumbsizes(kind.data, n, rng)
    return rw.feed(kind, det, make(), xs, [0] * n)


# -- the issue's own setting: SmallCNN on 8x8 digits, default detection -----------------
def digits_kind() -> long.Kind:
    """``gateway_load._train``'s model and split: its five held-out digits are the
    attack inputs; the stream pool is every digit and its one-pixel shifts."""
    import torch

    from gateway_load import SEED, _distinct_inputs
    from mlwarden.core.data import load_dataset
    from mlwarden.core.models import SmallCNN, fit

    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    ds = load_dataset("digits")
    x, y = ds.x.astype(np.float32), np.asarray(ds.y)
    idx = np.random.default_rng(SEED).permutation(len(x))
    tr, te = idx[: int(0.75 * len(idx))], idx[int(0.75 * len(idx)) :]
    model = fit(SmallCNN(), x[tr], y[tr], epochs=15, seed=SEED).eval()

    def proba(xs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            t = torch.as_tensor(np.asarray(xs, dtype=np.float32).reshape(-1, *x.shape[1:]))
            return torch.softmax(model(t), dim=1).numpy()

    pool = _distinct_inputs(x)[np.random.default_rng(SEED).permutation(5 * len(x))]
    seeds = [(x[te][i], int(y[te][i])) for i in range(5)]
    return long.Kind(pool, x, (x[tr], y[tr]), _Cnn(proba), seeds, (0.0, 1.0), "tensor", len(pool))


def kinds(only: set[str]) -> dict[str, long.Kind]:
    out = {"digits": digits_kind()} if "digits" in only else {}
    out |= {name: kind for name, (kind, _raw) in rw.kinds(only - {"digits"}).items()}
    return out


# -- runs and tables -------------------------------------------------------------------
def setting(name: str, kind: long.Kind, sigma: float | None = None,
            mixing: bool = False) -> tuple[Detection, dict[str, Any], Callable[[], Monitor]]:  # fmt: skip
    """The detection config, its summary, and how to build the gateway an attack meets:
    digits the issue's (defaults, nothing before the attack), the rest calibrated with
    the attack key warmed by 2,000 distinct benign queries (``mixing``: by the pool's
    warm-up part, :func:`split`). ``sigma``: calibrated against a search of that noise
    (``gateway calibrate --sigma``; default 0.05)."""
    if name == "digits" and sigma is None:
        det = Detection()
        return det, {"config": "defaults"}, lambda: kind.monitor(det)
    if sigma is None:
        det, summary = long._calibrated(kind)
    else:
        from mlwarden.serve.calibrate import calibrate

        result = calibrate(kind.config(), *kind.calib, seed=long.SEED, sigma=sigma)
        det, summary = result.detection, result.summary()
        summary.pop("tried", None)
    if name == "digits":
        return det, summary, lambda: kind.monitor(det)
    if mixing:
        print(pool_note(name, kind), flush=True)
    return det, summary, lambda: _warm(kind, det, mixing)


def run_kind(name: str, kind: long.Kind, args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.time()
    det, summary, make = setting(name, kind, args.calib_sigma, bool(args.mix))
    print(f"{name}: {json.dumps(summary)}", flush=True)
    row: dict[str, Any] = {"calibration": summary}
    for client in args.clients:
        if name in APPLIES[client]:
            fresh = lambda: kind.monitor(det)  # noqa: E731  a client key of its own
            row[client] = [benign(kind, det, client, args.n, s, fresh) for s in args.seeds]
            print(f"{name} {client}: {json.dumps(row[client])}", flush=True)
    plans = [p for p in args.plans if name in APPLIES[p]]
    target = make() if plans else None
    for plan in plans:
        for run in range(args.runs):
            if plan in ("blind", "blindw"):
                white = 0.03 if plan == "blindw" else None
                res = run_blind(kind, det, run, args.budget, target, white)  # type: ignore[arg-type]
            else:
                res = run_oars(
                    kind, det, plan, run, args.budget, target, make, name == "digits", args.mix
                )  # type: ignore[arg-type]
            row.setdefault(plan, []).append(res)
            print(f"{name} {plan} run {run}: {json.dumps(res)}", flush=True)
    row["seconds"] = round(time.time() - t0)
    return row


def _ocell(res: list[dict[str, Any]], budget: int) -> str:
    """An OARS row: flagged runs and first flags, keys burnt, what it held."""
    hit = sorted(r["first"] for r in res if r["first"])
    dets = sorted({d for r in res for d in r["by"]})
    text = f"{len(hit)}/{len(res)}" + (f" at {hit[0]}-{hit[-1]} ({', '.join(dets)})" if hit else "")
    text += f"; keys burnt {', '.join(str(r['burnt']) for r in res)}"
    if any(r.get("keys", 1) > r["burnt"] + 1 for r in res):
        text += f" (keys used {', '.join(str(r['keys']) for r in res)})"
    text += f"; scale at the end {min(r['scale'] for r in res):g}-{max(r['scale'] for r in res):g}"
    for part, label in (("at_flag", "before the flag"), ("all", f"in {budget}")):
        a = [r[part] for r in res]
        text += f"; {label}: {sum(x['wrong'] for x in a)}/{len(a)} wrong in the ball, "
        text += f"{sum(x['clean'] for x in a)}/{len(a)} clean perturbation adversarial"
    return text


def table(results: dict[str, Any], budget: int, plans: tuple[str, ...] = ATTACKS,
          column: str = "attack", clients: tuple[str, ...] = CLIENTS) -> None:  # fmt: skip
    """The markdown tables of ``docs/benchmarks/gateway.md`` (redteam12: its noise shapes
    as ``plans``, headed ``column``, and its own ``clients``)."""
    rw.table({k: {c: v[c] for c in clients if c in v} for k, v in results.items()}, clients, ())
    print(f"\n| input | {column} | flagged (of runs) within the budget, keys burnt, what it held |")
    print("|---|---|---|")
    for name, row in results.items():
        for plan in plans:
            if plan in row:
                blind = plan in ("blind", "blindw")
                cell = rw._acell(row[plan]) if blind else _ocell(row[plan], budget)
                print(f"| {name} | {plan} | {cell} |")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    rw.add_common_args(ap, "digits,images", "digits, images, mnist28, tabular, breast cancer, "
                       "wine", CLIENTS, ATTACKS, "not used here")  # fmt: skip
    ap.add_argument("--calib-sigma", type=float, help="calibrate against a search of this "
                    "noise (gateway calibrate --sigma; digits too, else its defaults)")  # fmt: skip
    ap.add_argument("--mix", type=int, default=0, help="OARS plans: distinct benign queries "
                    "the attack key sends before each attack query")  # fmt: skip
    args = ap.parse_args(argv)
    if args.profile:
        raise SystemExit("--profile: not used by redteam11")
    rw.parse_common(args, CLIENTS, ATTACKS)  # every gateway on --secret-seed's secret
    global SECRET_SEED
    SECRET_SEED = args.secret_seed
    results: dict[str, Any] = {}
    for name, kind in kinds(set(args.only.split(","))).items():
        results[name] = run_kind(name, kind, args)
        if args.out:
            args.out.write_text(json.dumps(results, indent=1))
    table(results, args.budget)
    return results


if __name__ == "__main__":
    main()
