"""A text key's CPU a query after a restart: bit rows restored vs counted by distance.

A text key's similarity history is rows of MinHash bits counted by popcount
(:meth:`mlwarden.serve.monitor.Similarity._bits_of`). Until session 13 a restored history
was float16 and counted by distance from then on. This fills a key with ``HIST`` typo'd
tweets, dumps it, and restores it twice: from the blob as written (the rows' scale
``similarity.one`` in it: bits again) and from the blob without it (as main wrote it:
distances). Then the same 100 new tweets in requests of 8 through ``Monitor.submit`` on
each, in alternated order, ``rounds`` times; ``time.thread_time`` per query.

Run::

    OMP_NUM_THREADS=1 PYTHONPATH=src nice -n 10 .venv/bin/python benchmarks/gateway_text_restart.py
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np

from mlwarden.core.data import load_dataset
from mlwarden.serve.config import Detection
from mlwarden.serve.monitor import Monitor, compile_kernels
from mlwarden.serve.text import text_features, typo


def _blobs(det: Detection, xs: np.ndarray, hist: int) -> tuple[bytes, bytes]:
    """The key's blob after ``hist`` texts, and the same without ``similarity.one``."""
    mon = Monitor(det, scale=1.0, modality="text")
    mon.crosskey = None
    lab = np.zeros(64, np.int64)
    for i in range(0, hist, 64):
        mon.inspect("k", xs[i : i + 64], lab[: len(xs[i : i + 64])])
    blob = mon.dump("k")
    assert blob is not None
    with np.load(io.BytesIO(blob)) as z:
        kept = {k: z[k] for k in z.files if k != "similarity.one"}
    buf = io.BytesIO()
    np.savez(buf, **kept)
    return blob, buf.getvalue()


def _per_query(det: Detection, blob: bytes, q: np.ndarray, bits: bool) -> float:
    mon = Monitor(det, scale=1.0, modality="text")
    mon.crosskey = None
    mon.load("k", blob)
    assert (mon._keys["k"].similarity._bits is not None) == bits
    lab = np.zeros(8, np.int64)
    t0 = time.thread_time()
    for i in range(0, len(q), 8):
        mon.submit("k", q[i : i + 8], lab[: len(q[i : i + 8])])
    return (time.thread_time() - t0) / len(q) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--history", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    assert compile_kernels(), "numba kernels are not in use: no bits to count"
    tweets = [str(t) for t in load_dataset("tweets").x]
    rng = np.random.default_rng(0)
    texts = np.empty(args.history + 100 * args.rounds, dtype=object)
    texts[:] = [typo(tweets[i % len(tweets)], rng) for i in range(len(texts))]
    det = Detection.model_validate({"similarity": {"near": 0.3}})
    s = det.similarity
    xs = text_features(texts, s.max_dims, s.radius, s.near)
    blob, old = _blobs(det, xs, args.history)
    times: dict[str, list[float]] = {"distances (main)": [], "bits (new)": []}
    for r in range(args.rounds):
        q = xs[args.history + 100 * r : args.history + 100 * (r + 1)]
        order = [("distances (main)", old, False), ("bits (new)", blob, True)]
        for name, b, bits in order if r % 2 == 0 else order[::-1]:
            times[name].append(_per_query(det, b, q, bits))
    for name, v in times.items():
        print(f"{name:18s} us a query {[round(x, 1) for x in v]} median {np.median(v):.1f}")
    pairs = [a / b for a, b in zip(times["bits (new)"], times["distances (main)"], strict=True)]
    print(f"pair ratios new/main: median {np.median(pairs):.3f} "
          f"(quartiles {np.percentile(pairs, 25):.2f}-{np.percentile(pairs, 75):.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
