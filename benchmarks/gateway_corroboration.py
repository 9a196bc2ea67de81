"""Corroboration: would a key flagged only at its k-th suspicion within W queries keep
the attack rows and drop the benign clients' false alarms?

Every rule's single firing is an alarm today (a flagged query; with ``action: block`` a
blocked key). Stateful detectors in the literature and IDS practice often act on
accumulated evidence instead: k suspicions within a window (a k-of-W rule), a leaky
bucket, CUSUM. This benchmark measures, before any such rule is built, what a k-of-W
rule would do, on the per-query flags the other benchmarks write:

* benign clients: ``gateway_detection_plain.py --out`` (``flags``: every flagged query
  by rule) and ``gateway_detection_clients.py --out`` (``at`` in each rule's cell);
* attacks: the issue's own benchmark, ``gateway_load.py --skip
  load,flood,attribution,memory --out`` (``flags``: every flagged attack query with its
  alerts, ``wrong`` / ``wrong_near``: the first attack query answered wrong, anywhere /
  within Linf 0.1 of the original).

A suspicion at query t raises an alarm under k-of-W when at least k suspicions fell in
the W queries (t-W, t] (itself included); ``--apart``: k suspicions of k different rules
(two detectors agreeing) instead of any k. Reported, per benign cell: flags per 1,000,
how many are isolated (no other flag within W) and the alarms per 1,000 left under each
(k, W); per attack row: the first flag, the second and third, the first alarm under each
(k, W), and whether a wrong answer was in hand before it (``wrong<alarm``) where it was
not before the first flag. Offline, no model: run the other benchmarks first::

    .venv/bin/python benchmarks/gateway_corroboration.py --load load.json \\
        --plain plain.json --clients clients.json --k 2,3 --windows 10,50,200,1000
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

Flags = list[tuple[int, str]]  # (query number, rule) of each suspicion, in order


def alarms(flags: Flags, k: int, w: int, apart: bool = False) -> list[int]:
    """The queries at which a k-of-``w`` rule raises an alarm: a suspicion with at least
    ``k`` suspicions (``apart``: of ``k`` different rules) in the ``w`` queries ending at
    it. ``k`` = 1 is today's rule: every suspicion an alarm."""
    out: list[int] = []
    lo = 0
    for i, (t, _) in enumerate(flags):
        while flags[lo][0] <= t - w:
            lo += 1
        window = flags[lo : i + 1]
        seen = len({r for _, r in window}) if apart else len({q for q, _ in window})
        if seen >= k and (not out or out[-1] != t):
            out.append(t)
    return out


def isolated(flags: Flags, w: int) -> int:
    """Flagged queries with no other flagged query within ``w`` either side."""
    qs = sorted({q for q, _ in flags})
    return sum(
        1
        for i, q in enumerate(qs)
        if (i == 0 or q - qs[i - 1] >= w) and (i == len(qs) - 1 or qs[i + 1] - q >= w)
    )


def _rules(alerts: str) -> list[str]:
    """``gateway_load``'s audit alerts (``kind@index:count,...``) -> rule names."""
    return [a.split("@")[0] for a in alerts.split(",") if a]


def _cells(path: Path, n_of: Callable[[dict[str, Any]], int],
           flags_of: Callable[[dict[str, Any]], Flags]) -> dict[str, tuple[int, Flags]]:  # fmt: skip
    """(queries, suspicions) per kind, client and seed of a benchmark's ``--out``."""
    out: dict[str, tuple[int, Flags]] = {}
    for kind, row in json.loads(path.read_text()).items():
        for client, runs in row.items():
            if not isinstance(runs, list):
                continue
            for s, r in enumerate(runs):
                out[f"{kind} {client} #{s}"] = (n_of(r), sorted(flags_of(r)))
    return out


def plain_cells(path: Path) -> dict[str, tuple[int, Flags]]:
    """``gateway_detection_plain.py --out``: (queries, suspicions) per kind, client, seed."""
    return _cells(
        path,
        lambda r: r["n"],
        lambda r: [(q, k) for k, qs in r["flags"].items() if k != "any" for q in qs],
    )


def clients_cells(path: Path, n: int) -> dict[str, tuple[int, Flags]]:
    """``gateway_detection_clients.py --out`` (``n`` queries a client): the same."""
    return _cells(
        path, lambda r: n, lambda r: [(q, k) for k, v in r.items() if k != "any" for q in v["at"]]
    )


def attack_rows(path: Path) -> dict[str, dict[str, Any]]:
    """``gateway_load.py --out``'s detection part: each attack run's suspicions and first
    wrong answers."""
    det = json.loads(path.read_text())["detection"]
    out = {}
    for name, a in det["attacks"].items():
        fl = [(q, r) for q, alerts in a["flags"] for r in _rules(alerts)]
        out[name] = {"flags": fl, "wrong": (a["wrong"] or [None])[0],
                     "near": (a["wrong_near"] or [None])[0], "sent": a["queries_sent"]}  # fmt: skip
    return out


def _before(wrong: int | None, at: int | None) -> bool:
    """A wrong answer in hand before the alarm (or no alarm at all)."""
    return wrong is not None and (at is None or wrong < at)


def attack_table(rows: dict[str, dict[str, Any]], grid: list[tuple[int, int]], apart: bool) -> None:
    print("\n| attack run | flags 1st / 2nd / 3rd | first wrong (any / Linf 0.1) | "
          + " | ".join(f"k={k} W={w}" for k, w in grid) + " |")  # fmt: skip
    print("|---|---|---|" + "---|" * len(grid))
    for name, a in rows.items():
        qs = sorted({q for q, _ in a["flags"]})
        first = qs[0] if qs else None
        cells = []
        for k, w in grid:
            got = alarms(a["flags"], k, w, apart)
            at = got[0] if got else None
            newly = _before(a["near"], at) and not _before(a["near"], first)
            cells.append(f"{at}{' **wrong<alarm**' if newly else ''}")
        lead = " / ".join(str(q) for q in qs[:3]) or "never"
        print(f"| {name} | {lead} | {a['wrong']} / {a['near']} | {' | '.join(cells)} |")


def benign_table(cells: dict[str, tuple[int, Flags]], grid: list[tuple[int, int]],
                 apart: bool, floor: float) -> None:  # fmt: skip
    """Cells over ``floor`` per 1,000 today: flags, isolated ones, alarms left."""
    print("\n| benign cell | n | flagged /1,000 | isolated (W=50) | "
          + " | ".join(f"k={k} W={w}" for k, w in grid) + " |")  # fmt: skip
    print("|---|---|---|---|" + "---|" * len(grid))
    for name, (n, fl) in cells.items():
        rate = 1000 * len({q for q, _ in fl}) / max(n, 1)
        if rate <= floor:
            continue
        left = [1000 * len(alarms(fl, k, w, apart)) / max(n, 1) for k, w in grid]
        print(f"| {name} | {n} | {rate:.1f} | {isolated(fl, 50)} | "
              + " | ".join(f"{v:.1f}" for v in left) + " |")  # fmt: skip


class Spaced:
    """The attacker that fits a k-of-W rule, fed in-process to one key of a gateway: the
    issue's noisy search (``gateway_load.noisy_random_search``, adaptive to the scores)
    with ``every`` distinct benign queries (the kind's pool from ``start``) before each
    attack query, so its own queries fall ``every + 1`` apart. Records every suspicion in
    the key's numbering and the attack queries answered wrong (``gateway_load._Stream``'s
    ``wrong``: any, within Linf 0.1)."""

    def __init__(self, kind: Any, det: Any, every: int, start: int) -> None:
        self.kind, self.det, self.every, self.b = kind, det, every, start
        self.mon = kind.monitor(det)
        self.flags: Flags = []
        self.attack_no: list[int] = [0]  # key query (1-based) -> attack queries sent so far
        self.attack_queries = 0
        self.wrong: tuple[list[int], list[int]] = ([], [])

    def _send(self, x: np.ndarray) -> np.ndarray:
        import gateway_detection_long as long

        xs = x[None].astype(np.float32)
        probs = self.kind.answers(self.det, xs)
        found = self.mon.inspect("k", self.kind.feats(self.det, xs), self.kind.labels(xs),
                                 long.row(probs, 0))  # fmt: skip
        self.attack_no.append(self.attack_queries)
        self.flags += [(len(self.attack_no) - 1, r) for r in sorted(found)]
        return np.asarray(self.kind.model.proba(xs)[0])  # the scores the attacker reads

    def ask(self, x: np.ndarray, attack: bool) -> np.ndarray:
        pool = self.kind.pool
        for _ in range(self.every):
            self._send(pool[self.b % len(pool)])
            self.b += 1
        self.attack_queries += 1
        return self._send(x)

    def first(self, k: int, w: int, apart: bool) -> int | None:
        """The attack query at which a k-of-``w`` rule first alarms."""
        got = alarms(self.flags, k, w, apart)
        return self.attack_no[got[0]] if got else None


def spaced_table(everies: list[int], grid: list[tuple[int, int]], runs: int, apart: bool) -> None:
    """The issue's digits gateway (defaults), its five searches at sigma 0.05, spaced."""
    import gateway_detection_redteam11 as rt11
    from gateway_load import noisy_random_search
    from mlwarden.serve.config import Detection

    kind, det = rt11.digits_kind(), Detection()
    print("\n| spacing | run | first flag | " + " | ".join(f"k={k} W={w}" for k, w in grid)
          + " | wrong (any / Linf 0.1) |")  # fmt: skip
    print("|---|---|---|" + "---|" * len(grid) + "---|")
    for every in everies:
        for run in range(runs):
            x0, y0 = kind.seeds[run]
            key = Spaced(kind, det, every, run * 300 * every)
            noisy_random_search(key, x0, y0, queries=300, sigma=0.05, benign=None, seed=run)  # type: ignore[arg-type]
            cells = [str(key.first(k, w, apart)) for k, w in [(1, 1), *grid]]
            bad = [str(v[0]) if v else "-" for v in key.wrong]
            print(f"| {every}:1 | {run} | {' | '.join(cells)} | {' / '.join(bad)} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--load", type=Path, help="gateway_load.py --out (the detection part)")
    ap.add_argument("--plain", type=Path, action="append", default=[])
    ap.add_argument("--clients", type=Path, action="append", default=[])
    ap.add_argument("--clients-n", type=int, default=2000, help="the clients' --n")
    ap.add_argument("--k", default="2,3")
    ap.add_argument("--windows", default="10,50,200,1000")
    ap.add_argument("--apart", action="store_true", help="k different rules, not k queries")
    ap.add_argument("--floor", type=float, default=1.0, help="benign cells over this only")
    ap.add_argument("--spaced", help="comma-separated benign queries before each attack "
                    "query (the attacker that fits: e.g. 0,10,50; runs the digits gateway)")  # fmt: skip
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    grid = [(int(k), int(w)) for k in args.k.split(",") for w in args.windows.split(",")]
    if args.spaced:
        spaced_table([int(e) for e in args.spaced.split(",")], grid, args.runs, args.apart)
    if args.load:
        attack_table(attack_rows(args.load), grid, args.apart)
    cells: dict[str, tuple[int, Flags]] = {}
    for p in args.plain:
        cells |= plain_cells(p)
    for p in args.clients:
        cells |= clients_cells(p, args.clients_n)
    if cells:
        benign_table(cells, grid, args.apart, args.floor)


if __name__ == "__main__":
    main()
