"""PRADA's record tested with and without its outliers (``detection.prada.outliers`` 3,
Juuti et al.'s own code, against 0, the rule until session 15; issue 19, i28a).

PRADA alone (:func:`mlwarden.serve.calibrate._only`), digits defaults (scikit-learn's
8 x 8 digits, an MLP victim as ``gateway_prada_cases.py``'s), one fresh key each of:

* **sorted**: every digit once, sorted by the victim's class (a labelled folder walked
  class by class): flagged per 1,000 and the first flag;
* **natural**: every digit once in ``--orders`` random orders: orders ever flagged;
* the attacker that fits the excuse, **dilute-K**: an extraction hidden among natural
  digits so that its distances are few: after each ``K`` natural digits (the pool, in a
  random order, cycled) one query of Papernot et al.'s Jacobian augmentation (150
  seeds, lambda 0.1, as many rounds as ``--cap`` needs) or one uniform random input (``uniform-K``: Knockoff's
  off-data queries); its first flag counted in attack queries (None: not within
  ``--cap`` attack queries). With few such queries their distances are 3 std from the
  record's mean and the test leaves them out; with more they widen the record.

Run: ``OMP_NUM_THREADS=1 nice -n 10 env PYTHONPATH=src .venv/bin/python
benchmarks/gateway_prada_folder.py`` (a few minutes).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import gateway_prada_cases as cases  # noqa: E402
from mlwarden.privacy.extraction import jacobian_augmentation  # noqa: E402
from mlwarden.serve import calibrate as cal  # noqa: E402
from mlwarden.serve.config import Detection  # noqa: E402
from mlwarden.serve.monitor import Monitor  # noqa: E402

SHAPE = [1, 8, 8]


STACK = [False]  # ``--stack``: every rule at the defaults, not PRADA alone


def _flags(outliers: float, xs: np.ndarray, labels: np.ndarray) -> list[int]:
    """0-based queries PRADA alone (``--stack``: any rule) flags on one fresh key sending ``xs``."""
    det = Detection.model_validate({"prada": {"outliers": outliers}})
    if not STACK[0]:
        det = cal._only(det, "prada")
    found = Monitor(det, SHAPE).inspect("k", xs, labels)
    if not STACK[0]:  # PRADA's own test, not ``prada.blinding``'s flags
        found = {"prada": found.get("prada", [])}
    return sorted({int(i) for rows in found.values() for i in rows})


def _diluted(pool: np.ndarray, attack: np.ndarray, k: int, rng: np.random.Generator
             ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """``k`` natural inputs before each attack query; which rows are the attack's."""
    rows, marks = [], []
    nat = pool[rng.permutation(len(pool))]
    at = 0
    for q in attack:
        for _ in range(k):
            rows.append(nat[at % len(nat)])
            marks.append(False)
            at += 1
        rows.append(q)
        marks.append(True)
    return np.stack(rows).astype(np.float32), np.array(marks)


def _first_attack(flags: list[int], marks: np.ndarray) -> int | None:
    """The first flag, counted in attack queries sent so far (1-based)."""
    return int(marks[: flags[0] + 1].sum()) if flags else None


def run(orders: int, cap: int, ks: list[int]) -> dict[str, Any]:
    x, y, _, _ = cases._table("digits", False)
    victim = cases._victim("digits", x, y)
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {}
    labels = victim(x)
    order = np.argsort(labels, kind="stable")
    for k in (3.0, 0.0):
        f = _flags(k, x[order], labels[order])
        out[f"sorted outliers={k:g}"] = {"per_1000": round(1000 * len(f) / len(x), 1),
                                         "first": f[0] + 1 if f else None}  # fmt: skip
        nat = [_flags(k, x[p], labels[p]) for p in
               (np.random.default_rng(10 + i).permutation(len(x)) for i in range(orders))]  # fmt: skip
        out[f"natural outliers={k:g}"] = f"{sum(bool(f) for f in nat)}/{orders}"
    seeds = x[rng.permutation(len(x))[:150]]
    rounds = max(1, int(np.ceil(np.log2(max(cap / len(seeds), 2)))))
    jac = jacobian_augmentation(victim, seeds, 10, rounds=rounds, seed=0)[0][:cap]
    uni = np.random.default_rng(1).random((cap, *SHAPE)).astype(np.float32)
    for name, attack in (("jacobian", jac), ("uniform", uni)):
        for k in ks:
            xs, marks = _diluted(x, attack, k, np.random.default_rng(20 + k))
            lab = victim(xs)
            row = {f"outliers={o:g}": _first_attack(_flags(o, xs, lab), marks) for o in (3.0, 0.0)}
            out[f"{name}-{k}"] = row
            print(name, k, json.dumps(row), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--orders", type=int, default=5)
    ap.add_argument("--cap", type=int, default=2000, help="attack queries at most")
    ap.add_argument("--dilute", default="0,1,3,9,19", help="natural inputs per attack query")
    ap.add_argument("--stack", action="store_true", help="every rule at the defaults")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    STACK[0] = args.stack
    res = run(args.orders, args.cap, [int(k) for k in args.dilute.split(",")])
    print(json.dumps(res, indent=1))
    if args.out:
        args.out.write_text(json.dumps(res, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
