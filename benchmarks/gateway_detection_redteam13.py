"""Gateway stream detectors against session 13's red team: noise and traffic that change under the rules.

Built on ``gateway_detection_redteam12.py`` / ``gateway_detection_redteam11.py`` (their
kinds, settings, :class:`~gateway_detection_redteam11.Gate`, OARS and noise shapes,
imported, not copied). Every attacker is ``oars-blind``: the issue's noisy random search
(Square's blocks of +-0.1 of the range, fresh noise a query) at the noise scale OARS
(Feng et al., CCS 2023) learns on a gateway of its own with the same configuration and
the same traffic (this plan's gate there too), then run blind (``log``) against the
target. The plans:

* ``morph``: the noise's *shape* drawn afresh each query from redteam12's shapes for
  the kind (images: white, dirs16, blocks, smooth, pca; tables: white, pca, perfeature,
  sparse2), each at the same root mean square per value: a window holds no one shape a
  rule could learn;
* ``wander``: the noise's level wanders as a camera's sensor noise in low light does
  (redteam12's ``lowlight``): each query's sd times a factor on a slow random walk in
  log space between 0.5 and 2 (steps N(0, 0.05)), rescaled to the white noise's root
  mean square over the walk's range: the loud stretches hide the search's kept steps
  from a rule that reads the noise locally;
* ``near``: before each attack query the key sends ``--mix`` (default 1) natural inputs
  *nearest* the attacked one (the benign pool's nearest quarter, each once, nearest
  first): the window looks like a neighbourhood of real inputs (redteam12's ``--decoys``
  sends the farthest);
* ``twin``: the key alternates between two searches: the attacked input's and another
  input's (the next run's target, its own noisy search, every other query): a window of
  two clusters instead of one;
* ``pad``: before each attack query the key sends the attacked input itself under fresh
  noise of the search's own scale (no search step): answers that keep the true class's
  score high, between the search's, so the key's scores never walk one way (against a
  rule reading a key's answers walking toward the decision boundary);
* ``mirror``: before each attack query after the first the key sends the previous one
  reflected through the attacked input (``2 x0 - q``, clipped): as the search's kept
  perturbation lowers its true class's score, the reflection's (to first order) rises
  by as much, at the same distance from ``x0``: a neighbourhood's answers in query order
  hold a fall and a rise of the same ranks (session 11's ``mirror`` pairs, as a pad);
* ``slow``: "spread over time" (the issue's words): between two attack queries the key
  sends 50-100 distinct benign queries (``--slow LO,HI``; drawn afresh each time).
* ``sameclass``: before each attack query ``--mix`` (default 1) natural inputs of the
  pool of the attacked input's class, each once (a folder walked class by class);
  ``near``, ``sameclass`` and ``slow`` also report the first flag on an attack query (``on_attack``)
  and on a benign one (``on_benign``): on 8x8 digits (defaults) the benign pool alone
  is flagged (Blacklight) at a key's 3,696th distinct query, which ``slow`` reaches
  near its 48th attack query in every run;
* ``keys``: the search restarted on a fresh key every ``--per-key`` (40) attack queries
  (keys not warmed: new accounts), the search's state carried over: only a gateway-wide
  rule sees the whole search.

``--fixed S``: no learning, the search blind at scale ``S`` (sigma ``0.05 S``): a
fixed-sigma scan (OARS's learning on tables runs away to pure noise: every table figure
of a learnt scale measures noise). ``--shape S`` runs the traffic plans (``near``, ``twin``, ``slow``, ``keys``) with one
of redteam12's shapes instead of white noise. The columns are redteam11's: flagged within
the budget (attack queries only), keys burnt (0 under ``log``), the scale learnt, and
whether the search held an adversarial input before the flag and in the budget.

Run (parts with ``--only`` / ``--plans``)::

    OMP_NUM_THREADS=1 timeout 3000 nice -n 10 env PYTHONPATH=src .venv/bin/python \\
        benchmarks/gateway_detection_redteam13.py --only digits,images --plans morph,near,twin
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import gateway_detection_long as long  # noqa: E402
import gateway_detection_realworld as rw  # noqa: E402
import gateway_detection_redteam11 as rt11  # noqa: E402
import gateway_detection_redteam12 as rt12  # noqa: E402
from mlwarden.serve.config import Detection  # noqa: E402
from mlwarden.serve.monitor import Monitor  # noqa: E402

PLANS = ("morph", "wander", "near", "twin", "pad", "mirror", "slow", "keys", "sameclass")
IMAGE_SHAPES = ("white", "dirs16", "blocks", "smooth", "pca")
TABLE_SHAPES = ("white", "pca", "perfeature", "sparse2")


# -- noise whose shape changes every query ----------------------------------------------
def morph(kind: long.Kind, shape: tuple[int, ...], seed: int) -> rt11.Noise:
    """Each query's noise from one of the kind's redteam12 shapes, drawn afresh."""
    names = TABLE_SHAPES if len(shape) == 1 else IMAGE_SHAPES
    white: rt11.Noise = lambda rng, sd: rng.normal(0, sd, shape)  # noqa: E731
    draws = [rt12.shaped(n, kind, shape, seed) or white for n in names]

    def draw(rng: np.random.Generator, sd: float) -> np.ndarray:
        return draws[int(rng.integers(len(draws)))](rng, sd)

    return draw


class Wander:
    """A noise draw whose level walks: sd times exp(u), u a random walk clipped to
    [-ln 2, ln 2] (steps N(0, 0.05)), divided by the walk's RMS factor over that range
    (the uniform's, about 1.13) so the search pays what white noise costs."""

    NORM = float(np.sqrt(np.mean(np.exp(2 * np.linspace(-np.log(2), np.log(2), 1001)))))

    def __init__(self, noise: rt11.Noise | None, shape: tuple[int, ...], seed: int) -> None:
        self.noise, self.shape, self.u = noise, shape, 0.0
        self.rng = np.random.default_rng(seed)

    def __call__(self, rng: np.random.Generator, sd: float) -> np.ndarray:
        self.u = float(np.clip(self.u + self.rng.normal(0, 0.05), -np.log(2), np.log(2)))
        s = sd * np.exp(self.u) / self.NORM
        return rng.normal(0, s, self.shape) if self.noise is None else self.noise(rng, s)


# -- gates: what the key sends besides the search ----------------------------------------
def _send(gate: rt11.Gate, q: np.ndarray) -> bool:
    """``q`` as one request of the gate's key, not an attack query; whether a flag showed."""
    xs = np.asarray(q, dtype=np.float32)[None]
    found = gate.mon.inspect(gate.key, gate.kind.feats(gate.det, xs), gate.kind.labels(xs),
                             rw._answers(gate.kind, gate.det, xs))  # fmt: skip
    return bool(found) and gate._flag(found, gate.sent + 1)


@dataclass
class Mixed(rt11.Gate):
    """A gate whose key sends benign queries besides the search (:meth:`_benign`): the
    first flag on an attack query (``on_attack``) and on a benign one (``on_benign``) kept
    apart, so a key flagged by its benign traffic alone (a long run of the pool at the
    same query in every run) is not read as the search detected."""

    on_attack: int | None = None
    on_benign: int | None = None
    mixing: bool = False

    def _flag(self, found: dict[str, list[int]], at: int) -> bool:
        if self.mixing:
            self.on_benign = self.on_benign or at
        else:
            self.on_attack = self.on_attack or at
        return super()._flag(found, at)

    def _mixed(self) -> bool:
        self.mixing = True
        try:
            return self._benign()
        finally:
            self.mixing = False

    def _benign(self) -> bool:
        return super()._mixed()


@dataclass
class Ordered(Mixed):
    """Before each attack query ``mix`` natural inputs of the benign pool in an order of
    the subclass's choosing (``_order``), each once, cycling when used up."""

    order: list[int] | None = None

    def _order(self, feats: Any, labels: Any) -> list[int]:
        raise NotImplementedError

    def _benign(self) -> bool:
        if not self.queries:
            return False
        feats, labels, probs = self.decoys
        if self.order is None:
            self.order = self._order(feats, labels)
        shown = False
        for _ in range(self.mix):
            i = self.order[self.used_decoys % len(self.order)]
            self.used_decoys += 1
            found = rw._ask(self.mon, self.key, feats, labels, probs, i)
            shown |= bool(found) and self._flag(found, self.sent + 1)
        return shown


@dataclass
class Near(Ordered):
    """Before each attack query ``mix`` natural inputs of the benign pool nearest the
    attack's first query (the nearest quarter, each once, nearest first)."""

    def _order(self, feats: Any, labels: Any) -> list[int]:
        x0 = self.queries[0].reshape(-1)
        flat = np.asarray(feats, dtype=np.float64).reshape(len(labels), -1)
        return np.argsort(((flat - x0) ** 2).sum(axis=1))[: len(labels) // 4].tolist()


@dataclass
class SameClass(Ordered):
    """Before each attack query ``mix`` natural inputs of the benign pool of the attacked
    input's class (the model's label of the first attack query), each once: the key's
    traffic looks like a labelled folder walked one class at a time (session 14)."""

    def _order(self, feats: Any, labels: Any) -> list[int]:
        y = self.kind.labels(self.queries[0][None])[0]
        return np.flatnonzero(np.asarray(labels) == y).tolist()


@dataclass
class Slow(Mixed):
    """Between two attack queries ``lo``-``hi`` distinct benign queries (drawn afresh)."""

    lo: int = 50
    hi: int = 100
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(7))

    def _benign(self) -> bool:
        self.mix = int(self.rng.integers(self.lo, self.hi + 1))
        return rt11.Gate._mixed(self)


@dataclass
class Keys(rt11.Gate):
    """A fresh key (not warmed) every ``per_key`` attack queries."""

    per_key: int = 40

    def _mixed(self) -> bool:
        if self.sent and self.sent % self.per_key == 0:
            self.rotate()
        return False


class Heard:
    """A noise draw that remembers the last ``sd`` it was asked for (the search's scale,
    for :class:`Twin`'s second search); white when ``noise`` is None."""

    def __init__(self, noise: rt11.Noise | None, shape: tuple[int, ...]) -> None:
        self.noise, self.shape, self.sd = noise, shape, rt11.SIGMA0

    def __call__(self, rng: np.random.Generator, sd: float) -> np.ndarray:
        self.sd = sd
        return rng.normal(0, sd, self.shape) if self.noise is None else self.noise(rng, sd)


@dataclass
class Twin(rt11.Gate):
    """Every attack query follows one query of a second noisy search on ``other``
    (x1, y1): its own blocks and noise at the attack's current sd (``heard``), greedy
    on its own true class's score; ``walk`` False: ``other`` under fresh noise only
    (``pad``: no search step)."""

    other: Any = None
    heard: Heard | None = None
    delta: Any = None
    best: float = np.inf
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(11))
    walk: bool = True

    def _mixed(self) -> bool:
        x1, y1 = np.asarray(self.other[0], dtype=np.float64), self.other[1]
        lo, hi = self.kind.bounds
        if self.delta is None:
            self.delta = np.zeros_like(x1)
        positions = rt11._positions(x1.shape, x1.shape == (1, 8, 8))
        cand = self.delta.copy()
        if self.walk:
            step = self.rng.choice([-1, 1]) * rt11.EPS * (hi - lo)
            cand[positions[int(self.rng.integers(len(positions)))]] = step
        assert self.heard is not None
        q = np.clip(x1 + cand + self.heard(self.rng, self.heard.sd), lo, hi)
        shown = _send(self, q)
        p = float(
            rt11.scores(self.kind, q[None].astype(np.float32))[0][rt11._column(self.kind, y1)]
        )
        if p < self.best:
            self.best, self.delta = p, cand
        return shown


@dataclass
class Mirror(rt11.Gate):
    """Before each attack query after the first, the previous one reflected through
    ``x0`` (``2 x0 - q``, clipped to the bounds)."""

    x0: Any = None

    def _mixed(self) -> bool:
        if not self.queries:
            return False
        lo, hi = self.kind.bounds
        x0 = np.asarray(self.x0, dtype=np.float64)
        return _send(self, np.clip(2 * x0 - self.queries[-1], lo, hi))


# -- runs and tables -------------------------------------------------------------------
def gate_for(plan: str, kind: long.Kind, run: int, heard: Heard,
             args: argparse.Namespace) -> tuple[Any, int]:  # fmt: skip
    """The plan's gate type (a partial of its class) and the ``mix`` run_oars passes."""
    if plan == "near":
        return Near, args.mix or 1
    if plan == "sameclass":
        return SameClass, args.mix or 1
    if plan == "slow":
        lo, hi = (int(v) for v in args.slow.split(","))
        return partial(Slow, lo=lo, hi=hi), 1
    if plan == "keys":
        return partial(Keys, per_key=args.per_key), 1  # mix: its _mixed runs, sends nothing
    if plan == "twin":
        return partial(Twin, other=rw._target(kind, run + 2), heard=heard), 1
    if plan == "mirror":
        return partial(Mirror, x0=rw._target(kind, run)[0]), 1
    if plan == "pad":
        return partial(Twin, other=rw._target(kind, run), heard=heard, walk=False), 1
    return rt11.Gate, args.mix


def fixed(kind: long.Kind, det: Detection, run: int, args: argparse.Namespace, target: Monitor,
          build: Any, mix: int, heard: Heard, digits: bool) -> dict[str, Any]:  # fmt: skip
    """The search at the fixed scale ``--fixed`` (no learning: OARS's learning on tables
    runs away to pure noise, session 12's caution), blind (``log``), as run_oars reports it."""
    x0, y0 = rw._target(kind, run)
    x0 = np.asarray(x0, dtype=np.float64)
    decoys = rw._benign(kind, det) if mix else None
    gate = build(kind, det, rw._copy(target), "log", mix=mix, decoys=decoys)
    res = rt11.oars(gate, x0, y0, args.budget, run, args.fixed, False, digits, False, heard)
    upto = gate.first - 1 if gate.first else gate.sent
    return {"first": gate.first, "by": sorted(gate.by), "burnt": 0, "keys": gate.used + 1,
            "flags": gate.flags, "scale": args.fixed, "learnt_on_own": None,
            "at_flag": rt11.judge_oars(gate, x0, y0, res["deltas"], upto),
            "all": rt11.judge_oars(gate, x0, y0, res["deltas"], gate.sent)}  # fmt: skip


def run_plan(name: str, kind: long.Kind, det: Detection, plan: str, run: int,
             target: Monitor, make: Any, args: argparse.Namespace) -> dict[str, Any]:  # fmt: skip
    """One ``oars-blind`` run of ``plan`` (its gate on the attacker's gateway too)."""
    x0, _ = rw._target(kind, run)
    shape = tuple(np.shape(x0))
    base = (
        morph(kind, shape, 500 + run)
        if plan == "morph"
        else rt12.shaped(args.shape, kind, shape, 500 + run)
    )
    heard = Heard(Wander(base, shape, 900 + run) if plan == "wander" else base, shape)
    gate, mix = gate_for(plan, kind, run, heard, args)
    lead = getattr(args, "lead", 0)  # a Namespace built by hand may lack it
    gate = partial(gate, lead=lead) if lead else gate
    made: list[rt11.Gate] = []

    def build(*a: Any, **k: Any) -> rt11.Gate:
        made.append(gate(*a, **k))
        return made[-1]

    if args.fixed:
        res = fixed(kind, det, run, args, target, build, mix, heard, name == "digits")
    else:
        res = rt11.run_oars(kind, det, "oars-blind", run, args.budget, target, make,
                            name == "digits", mix, heard, build, args.own_secret)  # fmt: skip
    if isinstance(made[-1], Mixed):  # the target's gate (the own gateway's is made first)
        res |= {"on_attack": made[-1].on_attack, "on_benign": made[-1].on_benign}
    return res


def run_kind(name: str, kind: long.Kind, args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.time()
    mixing = bool(args.mix) or "slow" in args.plans  # redteam11's pool split (rt11.split)
    det, summary, make = rt11.setting(name, kind, args.calib_sigma, mixing)
    print(f"{name}: {json.dumps(summary)}", flush=True)
    row: dict[str, Any] = {"calibration": summary}
    target = make() if args.plans else None
    for plan in args.plans:
        for run in range(args.runs):
            res = run_plan(name, kind, det, plan, run, target, make, args)
            row.setdefault(plan, []).append(res)
            print(f"{name} {plan} run {run}: {json.dumps(res)}", flush=True)
    row["seconds"] = round(time.time() - t0)
    return row


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    rw.add_common_args(ap, "digits,images", "digits, images, mnist28, tabular, breast cancer, "
                       "wine", (), PLANS, "not used here")  # fmt: skip
    ap.add_argument("--calib-sigma", type=float, help="calibrate against a search of this noise")
    ap.add_argument("--mix", type=int, default=0, help="near: natural inputs before each "
                    "attack query (default 1); morph: redteam11's distinct benign queries")  # fmt: skip
    ap.add_argument(
        "--slow", default="50,100", help="slow: LO,HI benign queries between attack queries"
    )
    ap.add_argument("--per-key", type=int, default=40, help="keys: attack queries a key")
    ap.add_argument("--lead", type=int, default=0, help="extra benign queries before the "
                    "first attack query's (shifts the attack's place in the key's count)")  # fmt: skip
    ap.add_argument(
        "--shape", default="white", choices=rt12.SHAPES, help="the traffic plans' noise"
    )
    ap.add_argument("--fixed", type=float, help="no learning: the search at this scale "
                    "(x the issue's sigma 0.05; a fixed-sigma scan)")  # fmt: skip
    ap.add_argument("--own-secret", action="store_true", help="the attacker's gateway on "
                    "another sketch secret (default: the target's)")  # fmt: skip
    args = ap.parse_args(argv)
    if args.profile:
        raise SystemExit("--profile: not used here")
    rw.parse_common(args, (), PLANS)
    rt11.SECRET_SEED = args.secret_seed
    results: dict[str, Any] = {}
    for name, kind in rt11.kinds(set(args.only.split(","))).items():
        results[name] = run_kind(name, kind, args)
        if args.out:
            args.out.write_text(json.dumps(results, indent=1))
    rt11.table(results, args.budget, PLANS, "plan", ())
    return results


if __name__ == "__main__":
    main()
