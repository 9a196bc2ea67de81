"""A streaming client's overlapping windows: new content, not a perturbation of the old.

A client classifying a live audio stream sends windows of it that overlap: a 1 s window
every 0.25 s (keyword spotting, voice activity, speaker checks; 10-50% hops, windows of
0.5-2 s at 8 or 16 kHz in other apps). Window k+1 is window k shifted by the hop, with
the hop's new samples at its end: the overlap is *the same samples* at another offset.
Blacklight's hashes are of windows of consecutive values, so they do not care where in
the clip those samples sit: each window shares its overlap's hashes with the one before,
every window matches its predecessor, and the chain flagged a call's windows from the
third on (``slide`` of ``benchmarks/gateway_detection_realworld.py``: 230-248 per
1,000, all Blacklight's, until session 11).

An identity in time (:func:`lag`): a query *continues* the key's previous query when its
head equals that query's tail at some hop, sample for sample up to ``STEPS`` steps of
16-bit PCM (a stream's windows are cut from one buffer: the same samples, whatever noise
the microphone put in them). Its overlap is then no probe: those values were answered
before at another offset and nothing in them changed. The hop lies between ``MIN_HOP``
and ``1 - MIN_OVERLAP`` of the clip: a hop of a few samples would make any query "new",
and a search that hides its candidates in a stream (below) gets one candidate per
``1 / MIN_HOP`` queries at the most. For such a query the monitor
(:meth:`mlwarden.serve.monitor.Monitor._streamed`) gives Blacklight's chain the link of
its *new* samples alone: of its fingerprint's hashes that first occur in them (not
earlier in the query: a voiced sound's pitch periods quantise alike a few ms apart),
the share that the key's remembered queries carry is a match from ``threshold / top``
on, half a match from half that, owned by the query most of them point to
(:meth:`~mlwarden.serve.monitor.Blacklight.observe_many`'s ``links``). A window of new
speech links to nothing (its chain is 0), a phrase the stream repeats links once to
where it was first heard (a chain of 1), and the rest of Blacklight, the similarity
detector, PRADA and the still-ball rule see every window as before.

What an attacker gets from it, and what it does not excuse:

* a search that revisits an input (``x0 + delta``, then ``x0 + delta'``) continues its
  predecessor only through a filler window between them (the candidate's head sent
  first, at the filler's end): one candidate per two queries at the most, and hop by
  hop, one per ``1 / MIN_HOP``;
* a tape of perturbed copies of ``x0`` sent as a stream (windows sliding over
  ``x0 + d1, x0 + d2, ...``) continues at every query, but each copy's new samples
  repeat the copy before: Blacklight chains them while ``d`` changes fewer bins than a
  match allows (a noiseless search); a noisy one (fresh noise breaks the hashes, as it
  does on any search) is left to the similarity detector, which this rule does not
  touch: the windows aligned with a copy are each other's neighbours there, one per
  ``length / hop`` queries of the stream, as a search diluted among benign queries is;
* a sample once sent is frozen: the next windows must carry it unchanged, so a search
  cannot try two values of one sample at one place in a window without breaking the
  continuation.
"""

from __future__ import annotations

import math

import numpy as np

MIN_HOP = 1 / 10  # the smallest hop, a fraction of the clip: 800 samples of 8,000
MIN_OVERLAP = 1 / 4  # the least overlap: hops of up to 75% of the clip
STEPS = 2.0  # steps of 16-bit PCM (the input range / 65,536) two equal samples may differ by
PROBES = 32  # head samples that pick the candidate hops (the head's loudest)
TRIES = 4  # candidate hops whose whole overlap is compared


def tolerance(scale: float) -> float:
    """The largest difference of two equal samples: ``STEPS`` steps of 16-bit PCM over an
    input range ``scale`` wide (``scale / 65,536`` a step)."""
    return STEPS * scale / 65536.0


def hops(n: int) -> tuple[int, int]:
    """The smallest and largest hop (values) a continuation of a clip of ``n`` values may
    have."""
    return max(1, math.ceil(n * MIN_HOP)), n - max(1, math.ceil(n * MIN_OVERLAP))


def lag(prev: np.ndarray, x: np.ndarray, tol: float) -> int | None:
    """The hop ``h`` at which ``x`` continues ``prev`` (``x[:n - h]`` equals ``prev[h:]``
    within ``tol``, flattened, :func:`hops` bounding ``h``), the smallest such; None
    when there is none (or the candidates are too many to compare: a head of one
    repeated value, such as digital silence, fits every hop).

    The candidates are the hops at which the head's loudest samples (within the least
    overlap, where every hop puts them) match ``prev``, narrowed probe by probe (up to
    ``PROBES``) until at most ``TRIES`` are left, each then compared on the whole
    overlap (``O(n)`` each).
    """
    p = np.asarray(prev, dtype=np.float32).reshape(-1)
    q = np.asarray(x, dtype=np.float32).reshape(-1)
    n = len(q)
    lo, hi = hops(n)
    if len(p) != n or hi < lo:
        return None
    head = n - hi  # every candidate hop's overlap holds x[:head]
    loud = np.abs(q[:head])
    first = int(np.argmax(loud))  # on a slice: no gather of 75% of prev
    cand = np.flatnonzero(np.abs(p[lo + first : hi + 1 + first] - q[first]) <= tol) + lo
    if len(cand) > TRIES:  # the next loudest, until few enough to compare whole
        k = min(PROBES, head)
        for t in np.argpartition(-loud, k - 1)[:k].tolist():
            if len(cand) <= TRIES:
                break
            cand = cand[np.abs(p[cand + t] - q[t]) <= tol]
    if len(cand) > TRIES:
        return None
    for h in cand.tolist():
        if float(np.max(np.abs(p[h:] - q[: n - h]))) <= tol:
            return int(h)
    return None
