"""PRADA on differently built cases after ``gateway calibrate`` (issue 19, i20e).

For each case a victim model is trained on one part of the data, ``gateway calibrate``
(the library function) runs on a second part labelled by the victim (PRADA groups
queries by predicted class), and PRADA alone, at the calibrated ``delta`` (and at the
``delta`` the single-stream choice of session 6 picked, ``old``), sees one key each of:

* **natural**: every held-out and calibration row once, ``--orders`` random orders (a
  benign client; ART's Knockoff Nets with its ``random`` strategy queries exactly such
  natural rows, so only a query budget bounds it): orders ever flagged;
* **jacobian**: Papernot et al.'s Jacobian-based augmentation (arXiv:1602.02697,
  :func:`mlwarden.privacy.extraction.jacobian_augmentation`, lambda 0.1 of each feature's
  span: a thief of raw-unit tables steps in min-max units and sends raw rows) from up to
  150 held-out seeds, stopped at ``--cap`` queries: first flag;
* **uniform**: queries drawn uniformly within each feature's min..max: first flag.

Cases: wine (13 features, MLP) and breast cancer (30, scikit-learn GradientBoosting),
each raw (range [0, 1700] / [0, 5000]) and min-max scaled; 8x8 digits (MLP); MNIST
28x28 with a small CNN (``--cases mnist28``, from ``gateway_detection_heldout.py``).

Run: ``OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/gateway_prada_cases.py
--out prada_cases.json`` (about 10 minutes on the loaded 2-core box).
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

from mlwarden.privacy.extraction import jacobian_augmentation
from mlwarden.serve import calibrate as cal
from mlwarden.serve.config import Detection, GatewayConfig
from mlwarden.serve.monitor import Monitor

Table = tuple[np.ndarray, np.ndarray, float, list[int]]


def _table(name: str, raw: bool) -> Table:
    from sklearn.datasets import load_breast_cancer, load_digits, load_wine

    if name == "digits":
        d = load_digits()
        return (d.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8), d.target, 1.0, [1, 8, 8]
    d = load_wine() if name == "wine" else load_breast_cancer()
    x = d.data.astype(np.float32)
    if not raw:
        x = ((x - x.min(axis=0)) / (x.max(axis=0) - x.min(axis=0))).astype(np.float32)
    high = (1700.0 if name == "wine" else 5000.0) if raw else 1.0
    return x, d.target.astype(np.int64), high, [x.shape[1]]


def _victim(name: str, x: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    flat = x.reshape(len(x), -1)
    if name == "breast cancer":
        model: Any = GradientBoostingClassifier(random_state=0).fit(flat, y)
    else:
        model = make_pipeline(StandardScaler(), MLPClassifier((32,), max_iter=2000,
                                                              random_state=0)).fit(flat, y)  # fmt: skip
    return lambda q: model.predict(np.asarray(q).reshape(len(q), -1)).astype(np.int64)


def _lowest_flag(det: Detection, shape: list[int], high: float, xs: np.ndarray,
                 labels: np.ndarray) -> int | None:  # fmt: skip
    """The 1-based query at which PRADA alone first flags one key sending ``xs``."""
    only = cal._only(det, "prada")
    mon = Monitor(only, shape, scale=high)
    flags = mon.inspect("k", xs, labels).get("prada", [])
    return flags[0] + 1 if flags else None


def _deltas(x: np.ndarray, y: np.ndarray, high: float, shape: list[int]) -> dict[str, Detection]:
    cfg = GatewayConfig.model_validate({"input": {"shape": shape, "range": [0.0, high]}})
    new = cal.calibrate(cfg, x, y, seed=0)
    keep = cal.natural_w_bound
    cal.natural_w_bound = lambda lows, target: 1.0  # type: ignore[assignment]
    try:
        old = cal.calibrate(cfg, x, y, seed=0)
    finally:
        cal.natural_w_bound = keep
    return {"new": new.detection, "old": old.detection}


def run_case(name: str, x: np.ndarray, y: np.ndarray, high: float, shape: list[int],
             victim: Callable[[np.ndarray], np.ndarray], split: tuple[np.ndarray, ...],
             orders: int, cap: int) -> dict[str, Any]:  # fmt: skip
    """One case's figures (see the module doc)."""
    t0 = time.time()
    ca, held = split
    dets = _deltas(x[ca], victim(x[ca]), high, shape)
    pool = np.concatenate([held, ca])
    if len(shape) > 1:  # images: the thief steps in the served range itself
        lo, span = np.zeros(x.shape[1:], np.float32), np.full(x.shape[1:], high, np.float32)
    else:
        lo = x[pool].min(axis=0)
        span = np.maximum(x[pool].max(axis=0) - lo, 1e-12)
    out: dict[str, Any] = {"rows": int(len(pool))}
    seeds = x[held][np.random.default_rng(0).permutation(len(held))[:150]]
    asked: list[np.ndarray] = []

    def oracle(q: np.ndarray) -> np.ndarray:  # the thief steps in min-max units
        raw = (q.reshape(len(q), *x.shape[1:]) * span + lo).astype(np.float32)
        if sum(map(len, asked)) < cap:
            asked.append(raw)
        return victim(raw)

    rounds = max(1, int(np.ceil(np.log2(max(cap / len(seeds), 2)))))
    jacobian_augmentation(oracle, (seeds - lo) / span, int(y.max()) + 1, rounds=rounds, seed=0)
    jac = np.concatenate(asked)[:cap]
    uni = (np.random.default_rng(1).random((cap, *x.shape[1:])) * span + lo).astype(np.float32)
    for which, det in dets.items():
        row: dict[str, Any] = {"delta": det.prada.delta if det.prada.enabled else None}
        flagged = []
        for k in range(orders):
            p = pool[np.random.default_rng(10 + k).permutation(len(pool))]
            flagged.append(_lowest_flag(det, shape, high, x[p], victim(x[p])))
        row["natural_orders_flagged"] = f"{sum(f is not None for f in flagged)}/{orders}"
        row["natural_first_flags"] = sorted(f for f in flagged if f is not None)
        row["jacobian_first_flag"] = _lowest_flag(det, shape, high, jac, victim(jac))
        row["jacobian_seeds_queries"] = [int(len(seeds)), int(len(jac))]
        row["uniform_first_flag"] = _lowest_flag(det, shape, high, uni, victim(uni))
        out[which] = row
    out["seconds"] = round(time.time() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="wine raw,wine,breast cancer raw,breast cancer,digits")
    ap.add_argument("--orders", type=int, default=20)
    ap.add_argument("--cap", type=int, default=2000, help="queries of each attack")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    result: dict[str, Any] = {}
    for case in args.cases.split(","):
        if case == "mnist28":
            sys.path.insert(0, str(Path(__file__).parent))
            from gateway_detection_heldout import mnist_case

            mc = mnist_case()
            xs = np.concatenate([mc.calib[0], mc.x])
            ys = np.concatenate([mc.calib[1], mc.y])
            n_cal = len(mc.calib[0])

            def net(q: np.ndarray, mc: Any = mc) -> np.ndarray:
                return mc.proba(q).argmax(axis=1).astype(np.int64)  # type: ignore[no-any-return]

            split = (np.arange(n_cal), np.arange(n_cal, n_cal + 1000))
            result[case] = run_case(case, xs, ys, 1.0, [1, 28, 28], net, split, args.orders,
                                    args.cap)  # fmt: skip
        else:
            name = case.removesuffix(" raw")
            x, y, high, shape = _table(name, case.endswith(" raw"))
            idx = np.random.default_rng(0).permutation(len(x))
            third = len(x) // 3
            victim = _victim(name, x[idx[:third]], y[idx[:third]])
            split = (idx[third : 2 * third], idx[2 * third :])
            result[case] = run_case(case, x, y, high, shape, victim, split, args.orders, args.cap)
        print(case, json.dumps(result[case]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
