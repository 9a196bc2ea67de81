"""Differential: the monitor's fast detectors against plain reference code, alert for alert.

The Blacklight and similarity detectors keep their histories in layouts chosen for speed
(sorted hash arrays merged in batches, a column-major sketch scanned before the exact
check). These references keep the same histories the obvious way (a dict of each hash's
newest query; every remembered vector compared in float64) and must raise the same
alerts on recorded benign and attack streams, also across a restart from stored state.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from mlwarden.serve.config import Detection
from mlwarden.serve.monitor import Monitor, fingerprint


class _RefBlacklight:
    def __init__(self, det: Detection, start: int = 0) -> None:
        self.c = det.blacklight
        self.last: dict[int, int] = {}  # hash -> newest query carrying it
        self.matches: deque[bool] = deque(maxlen=64)
        self.next = start

    def flags(self, x: np.ndarray) -> bool:
        c = self.c
        fp = fingerprint(x, c.quantization, c.window, c.top)
        oldest = max(self.next - c.history, 0)
        best = sum(self.last.get(h, -1) >= oldest for h in fp)
        self.matches.append(best >= c.threshold)
        for h in fp:
            self.last[h] = self.next
        self.next += 1
        return best >= c.threshold and sum(self.matches) >= c.chain


class _RefSimilarity:
    def __init__(self, det: Detection) -> None:
        self.c = det.similarity
        self.seen: list[np.ndarray] = []

    def counts(self, v: np.ndarray) -> tuple[tuple[int, int], tuple[int, int]]:
        """Neighbours surely within the radius, and possibly within it (float rounding),
        among the last ``window`` queries and among the whole history."""
        hist = np.array(self.seen[-self.c.history :], dtype=np.float64).reshape(-1, len(v))
        d2 = ((hist - v.astype(np.float64)) ** 2).sum(axis=1)
        limit = self.c.radius**2 * len(v)
        self.seen.append(v)
        recent = d2[-self.c.window :]
        return (
            (int(np.count_nonzero(recent < limit * (1 - 1e-5))),
             int(np.count_nonzero(recent < limit * (1 + 1e-5)))),
            (int(np.count_nonzero(d2 < limit * (1 - 1e-5))),
             int(np.count_nonzero(d2 < limit * (1 + 1e-5)))),
        )  # fmt: skip

    def restart(self) -> None:
        """What a restart keeps: the history, stored in float16."""
        self.seen = [v.astype(np.float16).astype(np.float32) for v in self.seen[-self.c.history :]]


def _streams(digits, model, search) -> dict[str, np.ndarray]:
    xtr, _, xte, yte = digits
    rng = np.random.default_rng(3)
    pool = np.concatenate([xtr] + [np.roll(xtr, s, axis=a) for a in (2, 3) for s in (-1, 1)])
    benign = pool[rng.permutation(len(pool))[:1200]]
    out = {"benign": benign.astype(np.float32)}
    for sigma in (0.0, 0.02, 0.05):  # a random search with fresh noise (Feng et al. 2023)
        x0, y0 = xte[int(sigma * 100)], int(yte[int(sigma * 100)])
        sent = search(model, x0, y0, 300, sigma, rng)
        # the attack hidden among benign queries: one attack query in every two
        mixed = np.empty((600, *x0.shape), dtype=np.float32)
        mixed[0::2], mixed[1::2] = np.stack(sent), benign[-300:]
        out[f"search{sigma}"] = mixed
    return out


@pytest.mark.parametrize("kind", ["benign", "search0.0", "search0.02", "search0.05"])
def test_fast_detectors_raise_the_alerts_of_the_reference_code(
    digits, digits_model, noisy_search, kind
):
    xs = _streams(digits, digits_model, noisy_search)[kind]
    det = Detection.model_validate(
        {
            "blacklight": {"history": 400},
            # a window shorter than the history, and a bar for the whole history
            "similarity": {"history": 500, "window": 30, "long_neighbours": 60},
            "prada": {"enabled": False},
        }
    )
    mon = Monitor(det, shape=[1, 8, 8])
    ref_bl, ref_sim = _RefBlacklight(det), _RefSimilarity(det)
    restart_at = len(xs) // 2
    alerts = {"blacklight": 0, "similarity": 0}
    sent: set[bytes] = set()
    for i, x in enumerate(xs):
        if i == restart_at:  # a restart: the stored state, in a new monitor
            blob = mon.dump("k")
            assert blob is not None
            mon = Monitor(det, shape=[1, 8, 8])
            mon.load("k", blob)
            ref_bl = _RefBlacklight(det, start=ref_bl.next)  # Blacklight's hashes restart
            ref_sim.restart()
        found = mon.inspect("k", x[None], np.zeros(1, dtype=np.int64))
        if x.tobytes() in sent:  # an exact repeat reaches no detector (a retry)
            assert not found
            continue
        sent.add(x.tobytes())
        assert ("blacklight" in found) == ref_bl.flags(x), (kind, i)
        recent, whole = ref_sim.counts(mon.summarise(x))
        bars = (det.similarity.min_neighbours, det.similarity.long_neighbours or 0)
        sure = any(c[0] >= bar for c, bar in zip((recent, whole), bars, strict=True))
        maybe = any(c[1] >= bar for c, bar in zip((recent, whole), bars, strict=True))
        if sure or not maybe:  # not on the rounding edge: the alert is decided
            assert ("similarity" in found) == sure, (kind, i, recent, whole)
        for k in found:
            alerts[k] += 1
    if kind != "benign":  # the streams do exercise the alerting paths
        assert sum(alerts.values()) > 0
