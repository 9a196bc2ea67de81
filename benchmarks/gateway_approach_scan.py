"""The answers rule ``approach`` (serve/approach.py) along fixed-scale noisy searches.

redteam11's noisy random search (Square's blocks, fresh noise a query) with redteam12's
noise shapes, at a fixed noise scale (no OARS learning), against a gateway with
``detection.approach`` on; every attack query's rule statistic is logged (the z after
the walk correction, on the query's neighbours with answers). Per run: the first query
at ``|z| >= bar``, the first query the model misclassifies, the first flag of any rule
and its kinds, z and the neighbours at queries 50 / 100 / 200 / 300; the bound on any
neighbourhood (the statistic over all the attack's queries so far: ``whole_first``,
``whole_max_abs_z``) and the first query after which the search's clean perturbation is
adversarial (``first_clean``).

``--pad K``: before each attack query, ``K`` copies of the attacked input under fresh
noise of the search's own sd (answers at the start's level: an attacker flattening the
trend); ``--mix K``: redteam11's distinct benign queries. Run::

    OMP_NUM_THREADS=1 timeout 1500 nice -n 10 env PYTHONPATH=src .venv/bin/python \\
        benchmarks/gateway_approach_scan.py --only tabular,wine --plans white --scales 0.5,1.5
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import gateway_detection_long as long  # noqa: E402
import gateway_detection_realworld as rw  # noqa: E402
import gateway_detection_redteam11 as rt11  # noqa: E402
import gateway_detection_redteam12 as rt12  # noqa: E402
from mlwarden.serve import approach as ap  # noqa: E402
from mlwarden.serve.config import Detection  # noqa: E402

LOG: list[tuple[int, float]] = []  # (values judged, z) of each test, in order
_walked = ap.walked


def _logged(values: np.ndarray) -> float:
    z = _walked(values)
    LOG.append((len(values), z))
    return z


@dataclass
class Pad(rt11.Gate):
    """A :class:`~gateway_detection_redteam11.Gate` whose key sends ``mix`` copies of
    ``x0`` under fresh noise of ``sd`` before each attack query."""

    x0: Any = None
    sd: float = 0.0

    def _mixed(self) -> bool:
        rng = np.random.default_rng(10_000 + self.used_decoys)
        lo, hi = self.kind.bounds
        shown = False
        for _ in range(self.mix):
            q = np.clip(self.x0 + rng.normal(0, self.sd, np.shape(self.x0)), lo, hi)
            xs = np.asarray(q, dtype=np.float32)[None]
            self.used_decoys += 1
            found = self.mon.inspect(self.key, self.kind.feats(self.det, xs), self.kind.labels(xs),
                                     rw._answers(self.kind, self.det, xs))  # fmt: skip
            shown |= bool(found) and self._flag(found, self.sent + 1)
        return shown


def _make(name: str, kind: long.Kind, det: Detection) -> Any:
    """redteam11's gateways (digits fresh, the rest warmed) on ``det``."""
    return (lambda: kind.monitor(det)) if name == "digits" else (lambda: rw._warm(kind, det))


def scan(name: str, kind: long.Kind, det: Detection, make: Any, plan: str, run: int,
         scale: float, args: argparse.Namespace) -> dict[str, Any]:  # fmt: skip
    """One fixed-scale run of ``plan``'s search; the rule's statistic per attack query."""
    x0, y0 = rw._target(kind, run)
    x0 = np.asarray(x0, dtype=np.float64)
    noise = rt12.shaped(plan, kind, tuple(np.shape(x0)), 500 + run)
    lo, hi = kind.bounds
    if args.pad:
        gate: rt11.Gate = Pad(kind, det, make(), "log", mix=args.pad, x0=x0,
                              sd=rt11.SIGMA0 * scale * (hi - lo))  # fmt: skip
    else:
        gate = rt11.Gate(kind, det, make(), "log", mix=args.mix,
                         decoys=rw._benign(kind, det) if args.mix else None)  # fmt: skip
    per: list[tuple[int, float] | None] = []
    ask, mixed = gate.ask, gate._mixed
    mark = [0]  # LOG's length once the benign / pad queries before an attack query ran

    def logged_mixed() -> bool:
        shown = mixed()
        mark[0] = len(LOG)
        return shown

    def logged_ask(q: np.ndarray) -> tuple[np.ndarray | None, bool]:
        mark[0] = len(LOG)
        out = ask(q)
        per.append(LOG[-1] if len(LOG) > mark[0] else None)  # the attack query's own test
        return out

    gate.ask, gate._mixed = logged_ask, logged_mixed  # type: ignore[method-assign]
    res = rt11.oars(gate, x0, y0, args.budget, run, scale, False, name == "digits", False, noise)
    qs = np.stack(gate.queries)
    labels = kind.labels(qs)
    bar = det.approach.bar
    marks = [per[i] if i < len(per) else None for i in (49, 99, 199, 299)]
    return {
        "first_approach": next((i + 1 for i, p in enumerate(per) if p and abs(p[1]) >= bar), None),
        "first_wrong": next((i + 1 for i, lab in enumerate(labels) if lab != y0), None),
        "first_flag": gate.first, "by": sorted(gate.by),
        "z": [None if m is None else round(m[1], 2) for m in marks],
        "rows": [0 if m is None else m[0] for m in marks],
        "max_abs_z": round(max((abs(p[1]) for p in per if p), default=0.0), 2),
    } | _whole(kind, x0, y0, qs, res["deltas"], bar)  # fmt: skip


def _whole(kind: long.Kind, x0: np.ndarray, y0: int, qs: np.ndarray, deltas: list[np.ndarray],
           bar: float) -> dict[str, Any]:  # fmt: skip
    """The bound on any neighbourhood: the rule's statistic over *all* the attack's
    queries so far (first at ``|z| >= bar``, largest), and the first query after which
    the search's clean perturbation (no noise) is another class."""
    probs = rt11.scores(kind, qs)
    lab = probs.argmax(axis=1)
    lo = np.array(ap.scores_of(probs, lab), dtype=np.float32)
    zs = [_walked(ap.series(lab[:n].astype(np.int16), lo[:n])) for n in range(20, len(qs) + 1)]  # type: ignore[arg-type]
    lo_b, hi_b = kind.bounds
    clean = kind.labels(np.stack([np.clip(x0 + d, lo_b, hi_b) for d in deltas]).astype(np.float32))
    return {"whole_first": next((i + 20 for i, z in enumerate(zs) if abs(z) >= bar), None),
            "whole_max_abs_z": round(max((abs(z) for z in zs), default=0.0), 2),
            "first_clean": next((i + 1 for i, c in enumerate(clean) if c != y0), None)}  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--only", default="tabular,wine")
    p.add_argument("--plans", default="white")
    p.add_argument("--scales", default="0.5,1.5", help="noise scales (x the issue's 0.05)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--budget", type=int, default=300)
    p.add_argument("--mix", type=int, default=0)
    p.add_argument("--pad", type=int, default=0)
    args = p.parse_args(argv)
    rw.fix_secret(0)
    ap.walked = _logged  # the rule's statistic, logged as it is computed
    out: dict[str, Any] = {}
    for name, kind in rt11.kinds(set(args.only.split(","))).items():
        det, _, _ = rt11.setting(name, kind, None)
        det = det.model_copy(update={"approach": det.approach.model_copy(update={"enabled": True})})
        make = _make(name, kind, det)
        for plan in [q for q in args.plans.split(",") if name in rt12.APPLIES[q]]:
            for scale in [float(s) for s in args.scales.split(",")]:
                for run in range(args.runs):
                    res = scan(name, kind, det, make, plan, run, scale, args)
                    out[f"{name} {plan} {scale} {run}"] = res
                    print(f"{name} {plan} scale {scale} run {run}: {json.dumps(res)}", flush=True)
    return out


if __name__ == "__main__":
    main()
