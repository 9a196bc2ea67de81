"""Square attack before the detectors' warm-up: would a shorter one cost false alarms?

ART's Square attack (Andriushchenko et al. 2020, arXiv:1912.00049; Linf eps 0.3, p_init
0.8 as published for MNIST) on the held-out benchmark's MNIST CNN succeeds in 8-29
queries (``gateway_detection_heldout.py``): before the similarity detector can count the
20 neighbours it needs (``similarity.min_neighbours``, and ``dilution.min_neighbours``).
This measures, without changing any rule, what lowering both to k would do at the
radius ``gateway calibrate`` picks on the user's plain sample:

* the query at which each Square run (a fresh key, one row a request, as ART sends
  them) would be flagged, against the query of its first misclassified answer;
* the false alarms per 1,000 of the held-out benign clients of
  ``gateway_detection_clients.py`` (photo10, pool50, burst20, zipf, users4; 5,000
  queries each) on the same CNN at each k.

Run (part of ``gateway_detection_knowing.py --square``, about 5 minutes)::

    OMP_NUM_THREADS=1 timeout 1800 nice -n 10 .venv/bin/python \\
        benchmarks/gateway_detection_knowing.py --square --out square.json
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import gateway_detection_long as long  # noqa: E402
from gateway_detection_clients import _Cnn, flagged, stream, vary_image  # noqa: E402
from gateway_detection_heldout import Case, Stop, calibrated, mnist_case  # noqa: E402
from mlwarden.serve.config import Detection  # noqa: E402

KS = (5, 8, 10, 15, 20)
CLIENTS = ("photo10", "pool50", "burst20", "zipf", "users4")
CAP = 2000


def square_queries(case: Case, i: int) -> tuple[np.ndarray, int | None]:
    """Every row ART's Square sends for held-out input ``i`` (up to ``CAP``), and the
    1-based query of the first misclassified answer."""
    from art.attacks.evasion import SquareAttack
    from art.estimators.classification import BlackBoxClassifierNeuralNetwork

    sent: list[np.ndarray] = []
    y0 = int(case.y[i])

    def predict(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32).reshape(len(x), *case.x.shape[1:])
        sent.extend(x)
        if len(sent) >= CAP:
            raise Stop
        return case.proba(x)

    clf = BlackBoxClassifierNeuralNetwork(predict, tuple(case.x.shape[1:]), case.classes,
                                          clip_values=(0.0, 1.0))  # fmt: skip
    np.random.seed(long.SEED + i)
    with contextlib.suppress(Stop):
        SquareAttack(clf, eps=0.3, p_init=0.8, max_iter=5000, verbose=False).generate(
            case.x[i : i + 1]
        )
    qs = np.stack(sent)
    wrong = np.flatnonzero(case.proba(qs).argmax(axis=1) != y0)
    return qs, (int(wrong[0]) + 1 if len(wrong) else None)


def _at(det: Detection, k: int) -> Detection:
    d = det.model_copy(deep=True)
    d.similarity.min_neighbours = k
    d.dilution.min_neighbours = max(2, k)
    return d


def study(runs: int = 5) -> dict[str, Any]:
    case = mnist_case()
    det, summary = calibrated(case)
    kind = long.Kind(
        case.x, case.x, case.calib, _Cnn(case.proba), [], (0.0, 1.0), "tensor", len(case.x)
    )
    right = [i for i in range(len(case.x)) if case.proba(case.x[i : i + 1]).argmax() == case.y[i]]
    squares = [square_queries(case, i) for i in right[:runs]]
    out: dict[str, Any] = {"calibration": summary, "success_query": [s for _, s in squares]}
    print(f"square: success at {out['success_query']}", flush=True)
    benign = {c: stream(c, case.x, vary_image((0.0, 1.0)), 5000, 0) for c in CLIENTS}
    for k in KS:
        d = _at(det, k)
        firsts = []
        for qs, _ in squares:
            mon = kind.monitor(d)
            labels = kind.labels(qs)
            hit = next((j + 1 for j in range(len(qs))
                        if mon.inspect("k", qs[j : j + 1], labels[j : j + 1])), None)  # fmt: skip
            firsts.append(hit)
        fa = {c: flagged(kind, d, xs)["any"]["per_1000"] for c, xs in benign.items()}
        out[f"k{k}"] = {"square_first_flag": firsts, "benign_per_1000": fa}
        print(f"square k={k}: {json.dumps(out[f'k{k}'])}", flush=True)
    return out
