"""Gateway detection on tables served in raw units (issue 19, the red team's open finding).

A model that carries its own scaler is served rows in raw units: breast cancer's 30
features span [0, 4254] (most below 1), wine's 13 span [0, 1680]. The gateway declares a
range wide enough for all of them. For each table the rows are split in two (seed 0):
``gateway calibrate``'s function on the first part (``--benign`` streams, ``action:
block``), then the gateway's own :class:`~mlwarden.serve.monitor.Monitor` (built as
``serve/app.py`` builds it) sees

* one key sending every row of the table once, in ``--orders`` random orders (default 20;
  distinct benign rows, labels: the data's classes, standing in for the model's
  answers): how many orders any detector, and PRADA, ever flags; the defaults too;
* ``--searches`` noisy random searches (:func:`~mlwarden.serve.calibrate.search_stream`,
  sigma 0.05 of each feature's learned spread, 1/4 of the steps kept) around held-out
  rows, one key each, stopped at the first alert or at 300 queries.

Run: ``nice -n 10 .venv/bin/python benchmarks/gateway_raw_tables.py`` (about 10 s).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np
from sklearn.datasets import load_breast_cancer, load_wine

from mlwarden.serve.calibrate import calibrate, search_stream
from mlwarden.serve.config import Detection, GatewayConfig
from mlwarden.serve.monitor import Monitor

TABLES = {"breast cancer": (load_breast_cancer, 300, 5000.0), "wine": (load_wine, 100, 1700.0)}


def _first(mon: Monitor, key: str, xs: np.ndarray, ys: np.ndarray) -> list[tuple[int, list[str]]]:
    """Every alert of ``key`` over the stream: (1-based query, detectors)."""
    out = []
    for i in range(len(xs)):
        found = mon.inspect(key, xs[i : i + 1], ys[i : i + 1])
        if found:
            out.append((i + 1, sorted(found)))
    return out


def run(name: str, benign: int, searches: int, orders: int = 20) -> dict[str, object]:
    """One table's figures (see the module doc)."""
    load, n_cal, high = TABLES[name]
    d = load()
    x, y = d.data.astype(np.float32), d.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    cal, held = order[:n_cal], order[n_cal:]
    cfg = GatewayConfig.model_validate(
        {"input": {"shape": [x.shape[1]], "range": [0.0, high]}, "detection": {"action": "block"}}
    )
    res = calibrate(cfg, x[cal], y[cal], benign=benign, seed=0)
    det = res.detection
    out: dict[str, object] = {"calibrate_meets": res.meets, "notes": res.notes,
                              "summary": res.summary()}  # fmt: skip
    for label, setting in (("calibrated", det), ("defaults", Detection(action="block"))):
        alerts: list[dict[str, Any]] = []
        for k in range(orders):
            p = np.random.default_rng(10 + k).permutation(len(x))
            mon = Monitor(setting, [x.shape[1]], scale=high)
            hits = _first(mon, "benign", x[p], y[p])
            kinds = sorted({k for _, ks in hits for k in ks})
            alerts.append({"first": hits[0] if hits else None, "alerts": len(hits), "by": kinds})
        out[f"benign_all_rows_{label}"] = alerts[:3]
        out[f"orders_flagged_{label}"] = {"orders": orders,
                                          "any": sum(bool(a["alerts"]) for a in alerts),
                                          "prada": sum("prada" in a["by"] for a in alerts)}  # fmt: skip
    if det.feature_scale is None:
        return out
    spread = np.asarray(det.feature_scale.spread, dtype=np.float32)
    mon = Monitor(det, [x.shape[1]], scale=high)
    firsts: list[int | None] = []
    for k in range(searches):
        i = held[k % len(held)]
        qs = search_stream(x[i], (0.0, high), 0.05, 300, seed=1000 + k, spread=spread)
        hits = _first_stop(mon, f"search-{k}", qs, np.full(300, y[i]))
        firsts.append(hits)
    flagged = [f for f in firsts if f is not None]
    out["search_first_flag"] = firsts
    out["searches_flagged"] = f"{len(flagged)}/{searches}"
    out["search_median"] = float(np.median(flagged)) if flagged else None
    return out


def _first_stop(mon: Monitor, key: str, xs: np.ndarray, ys: np.ndarray) -> int | None:
    for i in range(len(xs)):
        if mon.inspect(key, xs[i : i + 1], ys[i : i + 1]):
            return i + 1
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--benign", type=int, default=1000)
    ap.add_argument("--searches", type=int, default=30)
    ap.add_argument("--orders", type=int, default=20, help="random orders of all rows")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    result = {name: run(name, args.benign, args.searches, args.orders) for name in TABLES}
    text = json.dumps(result, indent=1, default=str)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(text)
    for name, r in result.items():
        print(name, {k: v for k, v in r.items() if k not in ("summary", "notes")})


if __name__ == "__main__":
    main()
