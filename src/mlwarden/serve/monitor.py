"""Stateful attack detection: watch each key's stream of queries, not single inputs.

Three detectors, all per key, after one filter:

* **exact repeats are dropped first**: an input identical to one of the key's recent
  inputs (a retry; a client drawing from a fixed set) reaches no detector, so it is
  never counted as probing and ``block`` never fires on a retry (see :class:`Monitor`);
* :class:`Blacklight` — Li, Shan, Wenger, Zhang, Zheng & Zhao, "Blacklight: Scalable
  Defense for Neural Networks against Query-Based Black-Box Attacks" (USENIX Security
  2022, arXiv:2006.14042). Query-based attacks (Square, HopSkipJump, NES, boundary
  attacks) send long runs of near-identical inputs. Each query is quantised (bins of
  ``quantization`` input units), flattened, cut into sliding windows of ``window``
  values (stride 1), every window hashed (the paper uses SHA-256; see
  :func:`fingerprint`), and the ``top`` largest distinct hashes kept as the query's
  fingerprint. A query whose fingerprint shares at least ``threshold`` hashes with an
  earlier query of the same key *matches* it (the earlier query it shares most hashes
  with). A query is flagged when it ends a *chain* of ``chain`` matches, each with a
  query at most 64 queries before it (:meth:`Blacklight._chain`): a search steps from
  its last query, so its queries match, query after query; one match is what a benign
  client re-sending a slightly different copy of an input produces, at a random time.
  On image keys a match that is its owner moved by a pixel or two and nothing else
  (:func:`shifted_copy`: a roll, or a crop padded with the input's lowest value, which
  shares most of its owner's windows) passes its owner's depth on without adding a link
  (session 14: a key sending digits and their one-pixel rolls chained three rolls of
  one digit sent within 39 queries, at its 3,696th query); it holds no value its owner
  lacks but the moved strip, so a search padded with such copies chains at the same
  steps.
  Until session 5 the rule was ``chain`` matches among the last 64 queries, whatever
  they matched: over 10,000 distinct digits and their one-pixel shifts (near-duplicates
  by Blacklight's measure, sent hundreds of queries apart) it flagged 718 of every
  1,000 queries at a history of 10,000, 317 at 1,000 and 100 at the calibrated
  threshold; chains flag 0.1-0.2 (``benchmarks/gateway_detection_long.py``), and a
  search spread one query in 50 among benign ones still chains. Matches are sought
  among the key's last ``history`` queries (default 1,000, the length of ``gateway
  calibrate``'s benign streams). Searches that return to inputs sent long ago are the
  similarity detector's. The
  paper's settings for 32x32 CIFAR images are bins of 50/255, windows of 20, the top
  50 hashes and a threshold of 25; our defaults (bins of 0.1, windows of 20, top 50,
  threshold 20) are calibrated for small inputs such as 8x8 digits, where an input
  has only 45 windows. On audio (``input.modality: audio``) a window whose samples all
  lie within one bin of zero is not hashed (``blacklight.silence``, default: the bin
  width): the pauses and quiet low tones of speech quantise to the same runs of bins
  in every clip, and distinct recordings matched on them; a window that continues the
  key's previous one (a stream's overlapping windows: the same samples at another
  offset) chains on its new samples alone (:mod:`mlwarden.serve.stream`,
  :meth:`Monitor._streamed`). Fresh noise on every query
  breaks the hashes (Feng et al., CCS 2023, arXiv:2303.06280), hence:
* :class:`Similarity` — the count of the key's recent queries within a small
  distance of the new one, on a reduced representation (:func:`reduce`); it holds
  against per-query Gaussian noise, spreading queries over time and mixing in benign
  queries (it counts queries, not seconds). ``min_neighbours`` is met over the last
  ``window`` queries (default 1,000): benign neighbours accumulate with the number of
  queries remembered (on 10,000 distinct table rows a whole-history count flagged 29
  per 1,000 at the radius calibrated on 1,000-query streams, the window none), a
  search's queries cluster in time. A search diluted below ``min_neighbours`` per
  ``window`` (one query in 50 at the defaults) answers to ``long_neighbours``, a
  count over the whole ``history`` that ``gateway calibrate`` sets above the benign
  counts it extrapolates to a full history.
  ``similarity.projection`` (set by ``gateway calibrate`` when no radius on all values
  separates benign inputs from a noisy search, as on tabular rows) measures the
  distance along the leading principal axes of the deployment's benign inputs only;
* :class:`Prada` — Juuti, Szyller, Marchal & Asokan, "PRADA: Protecting against DNN
  Model Stealing Attacks" (EuroS&P 2019, arXiv:1805.02628). For each query the L2
  distance to the closest earlier query of the same predicted class is recorded
  (``prada.references: all``, the default off text and audio: the latest ``history``
  distinct queries of all classes together). The paper's Algorithm 1 (``growing``)
  measures against a growing set instead: queries farther than the class threshold
  join it and raise the threshold to ``max(T, mean - std)`` of its distances; those
  sets kept 2-15 rows a class and Papernot et al.'s Jacobian augmentation was never
  flagged on held-out MNIST (W 0.97-0.99; against every query: at query 279, its
  129th step). A query
  within ``prada.resend`` of its class's nearest reference is a resend of it (fresh
  noise, a typo) and is dropped like an exact retry (:meth:`Prada.observe`). On image
  keys a query that renders a recent input (a thumbnail size of one upload; at most 8
  queries an input: :mod:`mlwarden.serve.renders`) is measured past that input's own
  row and not kept. With ``prada.blinding`` (default on) an image key's query that
  14 or more other inputs of its last 100 queries render in a view a random rotation,
  zoom, shift and light barely move is flagged ``blinding`` (query blinding, Chen et
  al. 2020: :mod:`mlwarden.serve.blinding`). Natural
  queries give roughly normally distributed distances; synthetic extraction queries
  (small steps around seeds) do not. Once ``min_queries`` distances exist, a
  Shapiro-Wilk statistic ``W < delta`` flags the key. On image keys the test leaves
  out the record's values 3 std or more from its mean (``prada.outliers``), as the
  authors' own code does: a labelled folder walked class by class puts each class's
  first distances, measured against a set of one, as a tail on the last class's. The paper tests after every
  query; we test after every ``test_every`` queries (default 10) because one test
  costs about 0.5 ms. ``delta`` 0.85 is calibrated on digits (benign streams of 100
  held-out digits had W >= 0.91); the paper tuned it per dataset.

A similarity, dilution or Blacklight alert is dropped when the query's own cloud of
earlier copies stays put in time and tight (:mod:`mlwarden.serve.stationary`): one
input resent with fresh small noise (pauses resent with noise are all one hiss), not
a search, whose centre drifts (unless the cloud is a slice of a wider one or its copies
differ in a few values each: a search stuck at one point, ``stationary.sliced`` and
``stationary.coordinate``). With ``similarity.stationary`` (on by default for every
input since session 8, text too; all but text in session 7, audio only before) every
such alert passes this test:
a client resending 100 inputs ~100 times each with fresh noise 0.01 (``few`` in
``benchmarks/gateway_detection_long.py``) raised ~800 false alarms per 1,000 on
digits, images and tables, 33 of them Blacklight chains on digits (noise 0.01 seldom
crosses a bin of values on a 1/16 grid). An alert whose cloud is a resend's but too
small to judge (a burst's first copies) waits for its ball to fill, at most 250 later
queries of the key (:func:`mlwarden.serve.stationary.settle`; not on audio), and is then reported
late, by a negative offset as :meth:`Monitor.submit` reports batched alerts (dropped
when fewer than 20 of those queries came within 2.5 radii of it: the key left); one still
waiting at a restart keeps waiting (its cloud is in the key's blob from version 3; from
an older blob it stands). On text a window count met only by neighbours spread over
a quarter of the window or more (and a whole-history count) is judged on the drift of
its whole ball within the radius (``Monitor._spread_out``): typo copies of a short text
are no own cloud of each other. On tensors of 64 values or more, a query's cloud within
two radii also excuses it when that is one input re-encoded (brightness, shifts, JPEG:
variation along a few directions around a still centre;
:func:`mlwarden.serve.stationary.recoded`); on images a cloud too small to judge is
gathered again up to a shift of 2 pixels (:meth:`Monitor._shifted`,
:func:`mlwarden.serve.stationary.aligned`): a burst's shifted copies are one input. With it off, only the whole history's alerts
(the dilution test, ``long_neighbours``) do: the window's count and Blacklight flag a
fast search without waiting for its drift to show. Inputs with more values than the
reduced vector (images, audio) are excused only when their cloud is still in a secret
sketch of the raw input too (:mod:`mlwarden.serve.sketch`; ``similarity.sketch``): the
reduction's null space (steps with zero block means, or keeping each frame's energy)
hides no search from the rule.

Text typed on (``texts`` handed to :meth:`Monitor.submit`; the gateway does): a text
that extends the key's previous one, or backtracks a few characters within its chain's
budget (:class:`mlwarden.serve.text.TypingChain`), counts each other typing chain once
among its neighbours and its own chain not at all (:meth:`Monitor._typed`), and raises
no Blacklight alert below the similarity count: growing prefixes are one text, not a
search (263 false alarms per 1,000 on a typist before, session 9). Chains are saved
with the histories (blob version 2, session 10): after a restart the next text goes on
the chain it was on and the old rows keep theirs; the rows of bits are restored exactly
and counted by bits again (session 13; before, by distance from the restart on).

A search diluted among many benign queries of the key (fewer than ``min_neighbours``
per ``window``) answers to :mod:`mlwarden.serve.dilution` (``detection.dilution``, set
by ``gateway calibrate``): a tight ball of queries on the similarity history, which it
reads and does not copy.

One search spread over several keys (Sybil accounts) answers to
:mod:`mlwarden.serve.crosskey` (``detection.crosskey``): every key's reduced queries in
one gateway-wide ring, fed from :meth:`Monitor._detect`.

The gateway analyses a key's queries in batches (:meth:`Monitor.submit`,
``detection.batch``, default 8; 1 with ``action: block``): the request that fills the
key's queue runs the detectors on the whole queue, one pass over each history instead
of one per query, with exactly the comparisons of one query at a time (the alerts of
:meth:`Monitor.inspect`), reported up to ``batch - 1`` queries late.

Memory per active key is bounded by the histories, not by traffic: at the defaults,
after 10,000 distinct queries, 7.3 MB on 8x8 digits, 13.0-13.1 MB on 3x32x32 images and
28x28 MNIST, 5.8 MB on a 30-value table with every table part on, 9.8 MB on 8,000-sample
audio, 8.6 MB on text (session 13, ``benchmarks/gateway_load.py``'s memory part).
Blacklight's table 1.1 MB (and on image keys its last 64 inputs: 16 KB on digits, 0.2
MB on 28x28, 0.8 MB on 3x32x32, from session 14); the similarity history 3.3-5.9 MB (text: its packed bits too);
PRADA's sets 1.3-2.6 MB of rows, up to 4.2 MB with growth slack and norms, filled to
``history`` since ``references: all``; on images the secret sketches 1.3 MB, blinding and
renderings 0.2 MB; the repeat filter ~1.2 MB; with ``similarity.projection`` and
``dilution.residual`` a second similarity history of the unprojected rows, at most 5.8
MB. Only two parts scale with the raw input: the queue (copies of at most ``batch - 1``
inputs, analysed early at ``QUEUE_BYTES``, 1 MiB) and audio's tail (one input).
:meth:`Monitor.nbytes` counts all of it, within 3% of every array reachable from the key
(``tests/serve/test_serve_memory.py``); figures in ``docs/benchmarks/gateway.md``.
Detection and false-alarm rates: ``benchmarks/gateway_load.py``.

Example::

    monitor = Monitor(config.detection, shape=[1, 8, 8])
    flagged = monitor.inspect("alice", x_batch, labels)   # e.g. {"similarity": [3, 4]}
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import itertools
import math
import os
import sys
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import special, stats

from mlwarden.serve.answers import Answers, steady
from mlwarden.serve.approach import approach, scores_of
from mlwarden.serve.blinding import INPUTS, Blinding, grid, usable, views
from mlwarden.serve.config import Blacklight as BlacklightConfig
from mlwarden.serve.config import Detection
from mlwarden.serve.config import Prada as PradaConfig
from mlwarden.serve.config import Similarity as SimilarityConfig
from mlwarden.serve.copies import distinct, window_slots
from mlwarden.serve.crosskey import CrossKey
from mlwarden.serve.dilution import Dilution, Residual, off_axes, reach, sq_distances
from mlwarden.serve.manifold import Window
from mlwarden.serve.profiles import lighting_directions, unlit
from mlwarden.serve.renders import Renders
from mlwarden.serve.sketch import Ring, Sketch, new_secret
from mlwarden.serve.sketch import quiet as still_in_sketch
from mlwarden.serve.spread import Spread, crowded, narrow
from mlwarden.serve.stationary import (
    LEFT,
    MIN_VALUES,
    TIGHT,
    WIDE,
    Clip,
    Cloud,
    Vet,
    settle,
    still,
)
from mlwarden.serve.stream import lag, tolerance
from mlwarden.serve.text import TypingChain

_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant (golden ratio)
_SKETCH = 16  # values per query in the similarity detector's first, coarse scan
# Monitor.dump's blob: 2 adds the answers to the history's rows and the typing chains;
# 3 Blacklight's table, PRADA's sets, the spread window, the audio tail, the waiting
# alerts' clouds, the queue of queries not analysed yet and the key's query count (and
# from session 13, without a new version, text's rows' one value: Similarity.dump)
_BLOB_VERSION = 3
# a key's queue is analysed once its raw inputs reach this size, even short of a batch:
# a memory bound for large inputs (7 queued clips of 30 s at 16 kHz would be 13.4 MB)
QUEUE_BYTES = 1 << 20
# the translations (rows, columns) of an image up to which two queries are one input: a
# re-encoding's crop shift (1 px; the opposite shift of another copy: 2 apart)
SHIFT = 2
SHIFTS = [(dy, dx) for dy in range(-SHIFT, SHIFT + 1) for dx in range(-SHIFT, SHIFT + 1)
          if dy or dx]  # fmt: skip
# position -> a query's offsets to its shifted copies' rows and its gain (Monitor._shifted)
Shifted = Callable[[int], tuple[np.ndarray, np.ndarray]]
Views = tuple[Shifted | None, Clip | None]  # a batch's shifted copies and clipped values
# positions -> those whose own cloud is still (resends) and those waiting (Monitor._judge)
Judge = Callable[[list[int]], tuple[set[int], dict[int, Cloud]]]
# a query's values this share of its range from its lowest (highest) are at a bound: where
# clipped noise of up to 0.05 of the range moves its mean with its level (Monitor._clipped)
CLIP_REACH = 0.1


def _off(rows: np.ndarray, along: np.ndarray) -> np.ndarray:
    """``rows`` (n, k) without their component along the direction ``along`` (k,)."""
    norm = float(along @ along)
    if norm <= 0:
        return rows
    u = np.asarray(along, np.float64) / np.sqrt(norm)
    return rows - np.outer(rows @ u, u)


def _rolled(x: np.ndarray) -> np.ndarray:
    """``x`` (..., H, W) rolled by each of :data:`SHIFTS` along its last two axes, (24,
    ...): ``np.roll(x, s, axis=(-2, -1))`` for each, from one wrapped copy."""
    k = SHIFT
    wrap = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(k, k), (k, k)], mode="wrap")
    h, w = x.shape[-2:]
    # np.roll by (dy, dx) takes the window starting at (k - dy, k - dx) of the wrapped copy
    return np.stack([wrap[..., k - dy : k - dy + h, k - dx : k - dx + w] for dy, dx in SHIFTS])


def shifted_copy(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether ``b`` (..., H, W) is ``a`` moved by one of :data:`SHIFTS` and nothing else:
    every value that stays in the frame equal (exactly), and the strip moved in either
    ``a``'s values rolled in from the other edge or ``a``'s lowest value throughout (a
    crop padded with the background). Not any one value: two such moves would set an
    edge line to any constant, a search over the edges' values whose copies never chain
    (the red team's fill walk: first flags 4-15 -> 9-93 on digits, wrong answers before).

    Blacklight's windows run along the flattened rows: a copy moved a column shares 43-45
    of a digit's 45 window hashes, a row 36-38, so three rolls of one digit sent within
    64 queries chained like a search (a key sending the digits and their one-pixel shifts
    was flagged at its 3,696th query). Such a copy adds no step to a search: it holds no
    value the owner lacks but the strip: ``a``'s own values or its background."""
    h, w = a.shape[-2:]
    source, inside = _moves(h, w)  # (24, H * W) each
    flat_a, flat_b = a.reshape(-1, h * w), b.reshape(-1, h * w)  # channels, values
    same = flat_a[:, source] == flat_b[:, None, :]  # a moved by each shift, wrapped
    kept = np.all(same | ~inside, axis=(0, 2))
    low = flat_a.min()  # a crop's padding: the input's background, its lowest value
    for k in np.flatnonzero(kept).tolist():
        moved = flat_b[:, ~inside[k]]
        if same[:, k].all() or (moved.min() == low and moved.max() == low):
            return True
    return False


@functools.lru_cache(maxsize=8)
def _moves(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """For each of :data:`SHIFTS` (24, H * W): the flat position in ``a`` each value of
    ``np.roll(a, shift)`` comes from, and whether it comes from inside the frame (the
    rest: the strip moved in)."""
    y, x = np.divmod(np.arange(h * w), w)
    source = np.stack([((y - dy) % h) * w + (x - dx) % w for dy, dx in SHIFTS])
    inside = np.stack([(y - dy >= 0) & (y - dy < h) & (x - dx >= 0) & (x - dx < w)
                       for dy, dx in SHIFTS])  # fmt: skip
    source.setflags(write=False)
    inside.setflags(write=False)
    return source, inside


_MISSING = itertools.repeat(-1)  # dict.get's default for every hash, without a lambda


def fingerprint(
    x: np.ndarray, quantization: float, window: int, top: int, silence: float = 0.0
) -> frozenset[int]:
    """The fingerprint of :func:`_fingerprints` for one input, as a set of ints (tests, tools)."""
    _, hashes = _fingerprints(np.asarray(x)[None], quantization, window, top, silence)
    return frozenset(hashes.tolist())


@functools.lru_cache(maxsize=16)
def _powers(n: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """``Q^t`` for ``t < n`` and ``P^(i + w)`` for each of the ``n - w + 1`` windows (mod 2^64)."""
    inverse = np.uint64(pow(int(_MULTIPLIER), -1, 1 << 64))
    with np.errstate(over="ignore"):
        q_pow = np.cumprod(np.full(n, inverse, dtype=np.uint64), dtype=np.uint64) * _MULTIPLIER
        p_pow = np.cumprod(np.full(n, _MULTIPLIER, dtype=np.uint64), dtype=np.uint64)
    q_pow.flags.writeable = False
    p_pow = p_pow[w - 1 :]  # P^(w) for the first window
    p_pow.flags.writeable = False
    return q_pow, p_pow


def _fingerprints(
    xs: np.ndarray, quantization: float, window: int, top: int, silence: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Blacklight's probabilistic fingerprints of a batch ``xs`` (B, ...): top window hashes.

    Returns ``(query, hash)`` pairs as two flat arrays, query by query, each query's
    hashes distinct and ascending: its ``top`` largest. Values are binned as
    ``floor(x / quantization)`` (input units), flattened in C order, and every run of
    ``window`` consecutive bins (stride 1) is hashed. The paper hashes windows with
    SHA-256; we use a 64-bit polynomial hash over the bins (one vectorised pass for the
    whole batch instead of one SHA-256 call per window). Any hash with negligible
    collisions serves: a fingerprint is compared only with the same key's own history,
    so a crafted collision could only flag the crafter.

    ``silence`` > 0 (input units) is a gate: a window whose values all lie strictly
    within ``(-silence, silence)`` is not hashed. Pauses in speech quantise to the same
    few bins in every clip, so distinct clips shared their hashes (:class:`Blacklight`).
    Gating hides nothing from the detector: a perturbation big enough to change a bin
    there makes the window loud, and the windows it does not touch still match. (A
    window whose hash is 0, one in 2^64, is dropped too: 0 marks a gated window.)
    """
    return _largest(_window_hashes(xs, quantization, window, silence), top)


def _window_hashes(xs: np.ndarray, quantization: float, window: int,
                   silence: float = 0.0) -> np.ndarray:  # fmt: skip
    """The hash of every window of :func:`_fingerprints` (B, n - window + 1): window ``i``
    holds values ``i`` to ``i + window - 1`` of the flattening; 0: gated (silence)."""
    raw = np.asarray(xs, dtype=np.float64).reshape(len(xs), -1)
    flat = np.floor(raw / quantization).astype(np.int64)
    n = flat.shape[1]
    w = min(window, n)
    q_pow, p_pow = _powers(n, w)
    # Rolling form of sum_j flat[i + j] * P^(w - j) (mod 2^64): with Q = 1/P mod 2^64,
    # prefix sums of flat[t] * Q^t give each window in O(1), times P^(i + w). (Integer
    # arrays wrap silently: no errstate, which costs more than the arithmetic here.)
    prefix = np.cumsum(flat.view(np.uint64) * q_pow, axis=1, dtype=np.uint64)
    sums = prefix[:, w - 1 :].copy()
    sums[:, 1:] -= prefix[:, : n - w]
    hashes = sums * p_pow
    hashes ^= hashes >> np.uint64(29)
    hashes *= _MULTIPLIER
    if silence > 0:
        loud = np.zeros((len(raw), n + 1), dtype=np.int64)
        np.cumsum(np.abs(raw) >= silence, axis=1, out=loud[:, 1:])
        hashes[loud[:, w:] <= loud[:, : n + 1 - w]] = 0
    return hashes


def _largest(hashes: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``top`` largest distinct nonzero values, ascending: (row, value) pairs.

    Window hashes are uniform over 64 bits, so with many more windows than ``top`` (a
    3x32x32 image has 3,053, a second of audio 7,981) about ``4 * top`` of a row lie above
    ``2^64 * (1 - 4 top / windows)``: only those are sorted (a sort of every window was
    70% of Blacklight's cost on audio). A row with fewer than ``top`` distinct values
    above the bar (repeated or gated windows) is sorted whole. Same output as
    :func:`_largest_sorted`, value for value.
    """
    count, width = hashes.shape
    if width <= 8 * top:
        return _largest_sorted(hashes, top)
    above = hashes >= np.uint64(int((1.0 - 4.0 * top / width) * 2.0**64))
    per = np.count_nonzero(above, axis=1)
    if not per.any():
        return _largest_sorted(hashes, top)
    small = np.zeros((count, int(per.max())), dtype=np.uint64)  # 0: padding, dropped
    # each value above the bar at its rank within its row, right-aligned
    at = np.flatnonzero(above)
    rows = at // width
    ends = np.cumsum(per)
    small[rows, np.arange(len(at)) - ends[rows] + small.shape[1]] = hashes.ravel()[at]
    rows, values = _largest_sorted(small, top)
    got = np.bincount(rows, minlength=count)
    short = np.flatnonzero(got < top)
    if not len(short):
        return rows, values
    keep = np.isin(rows, short, invert=True)
    again_rows, again = _largest_sorted(hashes[short], top)
    rows = np.concatenate([rows[keep], short[again_rows]])
    order = np.argsort(rows, kind="stable")  # each row from one of the two: still ascending
    return rows[order], np.concatenate([values[keep], again])[order]


def _largest_sorted(hashes: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_largest` by sorting every row (``hashes`` is sorted in place)."""
    hashes.sort(axis=1)  # a sort and masks: np.unique per row would be several times slower
    width = hashes.shape[1]
    keep = np.empty((len(hashes), width), dtype=bool)
    np.not_equal(hashes[:, 1:], hashes[:, :-1], out=keep[:, :-1])
    keep[:, -1] = True
    keep &= hashes != 0
    if width > top:
        # the largest ``top`` distinct hashes: those with at most ``top`` kept at or after them
        keep &= np.cumsum(keep[:, ::-1], axis=1)[:, ::-1] <= top
    rows = np.flatnonzero(keep) // width  # np.nonzero of a 2-D mask: ~10x slower
    return rows, hashes[keep]


def _top_of(hashes: np.ndarray, top: int) -> np.ndarray:
    """One query's fingerprint, as :func:`_largest` gives it (its ``top`` largest distinct
    nonzero window ``hashes``, ascending), from a partition: pauses gate most windows of
    speech to 0, where :func:`_largest` sorts the whole row."""
    nz = hashes[hashes != 0]
    if len(nz) > 8 * top:
        # hashes are uniform: about 4 top of them lie above this bar (as in _largest, but
        # over the windows hashed); when those hold top distinct values, they are the largest
        most = np.unique(nz[nz >= np.uint64(int((1.0 - 4.0 * top / len(nz)) * 2.0**64))])
        if len(most) >= top:
            return most[-top:]
    return np.unique(nz)[-top:]


def _first_at(hashes: np.ndarray, top: np.ndarray, start: int) -> np.ndarray:
    """Of a query's fingerprint ``top`` (its largest distinct window hashes, ascending;
    ``hashes``: every window's, in order), those whose first window is window ``start``
    or later. Every hash at least ``top[0]`` is one of ``top``: no search of the rest."""
    if not len(top):
        return top
    at = np.flatnonzero(hashes >= top[0])
    values, first = np.unique(hashes[at], return_index=True)
    return values[at[first] >= start]


def _link(by: np.ndarray, threshold: int, top: int) -> tuple[int, int]:
    """A stream window's Blacklight link on its new samples' hashes, ``by`` the query
    carrying each (-1: none): (owner, 2) when their carried share is at least ``threshold
    / top`` (a match's share of a fingerprint), (owner, 1) from half that (half a match),
    else (-1, 0); the owner is the query most of them point to, the newest on a tie."""
    known = by[by >= 0]
    if not len(known):
        return -1, 0
    ids, counts = np.unique(known, return_counts=True)
    owner = int(ids[len(ids) - 1 - int(np.argmax(counts[::-1]))])
    share = len(known) * top  # compared with threshold * len(by): no division
    return owner, 2 if share >= threshold * len(by) else 1 if 2 * share >= threshold * len(
        by
    ) else 0


class Blacklight:
    """One key's Blacklight history: the hashes of its last ``history`` queries.

    The paper's design: a hash table from each window hash to the newest query that
    produced it, so a lookup costs the same at any history length. Here it is one fixed
    numpy array of ``2 * history * top`` slots (rounded up to a power of two; 8 bytes a
    slot: 1 MB at the defaults, 8 MB at a history of 10,000) in buckets of 32: a slot holds
    32 bits of the hash (a tag) and a 32-bit query id. A hash lives in the bucket given
    by the high bits of its product with a random odd number drawn per key (so nobody
    can aim hashes at one bucket); one gather and compare finds every hash of a batch of
    queries. A slot whose query left the history is free again. A bucket never fills
    with live hashes by chance (at most half the slots are live: 16 a bucket on average,
    more than 32 with probability ~5e-5); if it does, the extra hashes go to a small
    dict, so nothing is forgotten early, and return to their bucket once a slot frees
    (:meth:`_rehome`: numpy runs while the dict holds anything). The tag and bucket keep 47 bits of a hash: a
    false match of one hash has a chance of about 2^-27 per 1,000 queries, and a query
    needs ``threshold`` of them. Ids are offsets from a base moved forward every 2^31
    queries.

    A match with the most recent earlier query carrying a hash is what counts: in a
    stream of near-duplicates that is the previous query.
    """

    _WAYS = 32  # slots per bucket: 256 bytes, four cache lines gathered per hash
    _WINDOW = 64  # queries over which matches are counted
    _REBASE = 1 << 31  # query ids move to a new base this often (they are 32 bits)

    def __init__(self, config: BlacklightConfig, silence: float = 0.0,
                 frame: tuple[int, ...] | None = None) -> None:  # fmt: skip
        self.config = config
        self.silence = silence  # the gate of :func:`_fingerprints`, input units
        # images: the last 64 queries' values (a ring, slot = id % 64, with each slot's id;
        # -1: none), so a match that is an exact shift of its owner is no link (:meth:`_moved`)
        self.frame = frame
        size = math.prod(frame) if frame is not None else 0
        self._rows = np.zeros((self._WINDOW if size else 0, size), dtype=np.float32)
        self._row_ids = np.full(len(self._rows), -1, dtype=np.int64)
        self._batch: tuple[int, np.ndarray] | None = None  # the batch being observed
        need = max(2, -(-2 * config.history * config.top // self._WAYS))
        buckets = 1 << (need - 1).bit_length()  # a power of two, at least 2
        self._shift = np.uint64(65 - buckets.bit_length())  # high bits of a product: bucket
        # Tags and ids in two arrays: a probe gathers and compares only the tags (4 bytes
        # a slot), and reads the ids of the few slots that matched.
        self._tags = np.zeros((buckets, self._WAYS), dtype=np.uint32)
        self._ids = np.zeros((buckets, self._WAYS), dtype=np.uint32)  # offset; 0: empty
        self._owner = np.zeros(buckets, dtype=np.intp)  # scratch of _place
        self._salt = np.uint64(int.from_bytes(os.urandom(8), "little") | 1)
        self._spill: dict[int, int] = {}  # salted hash -> query id, for full buckets
        self._pruned = 0
        self._base = 0  # the query id stored as offset 1 (0: an empty slot)
        self._next = 0
        self._depths: deque[int] = deque(maxlen=self._WINDOW)  # of the last 64 queries
        self._copies: deque[bool] = deque(maxlen=self._WINDOW)  # each an excused shifted copy?
        self.depth = 0

    def observe(self, x: np.ndarray) -> int:
        """Add one query; return how many of its hashes the key's remembered queries share.

        Only the newest query of each hash is kept, so the hashes shared with one earlier
        near-duplicate spread over its successors: all remembered hashes count.
        """
        return self.observe_many(np.asarray(x)[None])[0][0]

    def observe_many(self, xs: np.ndarray, links: dict[int, tuple[int, int]] | None = None,
                     ) -> tuple[list[int], list[int]]:  # fmt: skip
        """Add the queries ``xs`` (B, ...) in order, each as :meth:`observe` would.

        Returns each query's count of shared hashes and its chain :attr:`depth` (see
        :meth:`_chain`). A query is compared with the batch's earlier queries too:
        identical to B calls of :meth:`observe`, at the cost of about one. ``links``:
        query id (:attr:`_next` numbers them) -> the (owner, link) its chain takes
        instead of its own match's (a stream's window: serve/stream.py).
        """
        n0, count = self._next, len(xs)
        if self._spill:
            self._rehome()
        if len(self._rows) and np.size(xs) == count * self._rows.shape[1]:
            self._batch = (n0, np.asarray(xs, dtype=np.float32).reshape(count, -1))
        try:
            return self._observe_both(xs, links)
        finally:
            if self._batch is not None:
                self._remember(*self._batch)
                self._batch = None

    def _observe_both(self, xs: np.ndarray, links: dict[int, tuple[int, int]] | None,
                      ) -> tuple[list[int], list[int]]:  # fmt: skip
        """:meth:`observe_many` by the compiled kernel where it can, numpy for the rest."""
        n0, count = self._next, len(xs)
        if not self._spill and n0 + count - self._base < self._REBASE:
            done = self._observe_compiled(xs, links)
            if done is not None:
                if len(done[0]) == count:
                    return done
                # a spill, or values numpy decides
                rest = self._observe_numpy(xs[len(done[0]) :], links)
                return done[0] + rest[0], done[1] + rest[1]
        return self._observe_numpy(xs, links)

    def _remember(self, n0: int, rows: np.ndarray) -> None:
        """Keep the last 64 of queries ``n0``, ``n0 + 1``, ... (``rows``) in the ring."""
        self._remember_ids(np.arange(n0, n0 + len(rows)), rows)

    def _remember_ids(self, ids: np.ndarray, rows: np.ndarray) -> None:
        keep = len(self._rows)
        if keep and len(ids):
            self._rows[ids[-keep:] % keep] = rows[-keep:]
            self._row_ids[ids[-keep:] % keep] = ids[-keep:]

    def _row(self, query: int) -> np.ndarray | None:
        """Query ``query``'s values: from the batch being observed or the ring (None: gone)."""
        if self._batch is not None and query >= self._batch[0]:
            return self._batch[1][query - self._batch[0]]
        slot = query % len(self._rows)
        return self._rows[slot] if self._row_ids[slot] == query else None

    def _moved_ok(self, query: int, owner: int) -> bool:
        """Whether ``query``'s match with ``owner`` may be excused as a shifted copy: the
        owner one of the last 64 queries and not itself an excused copy. A walk of moves
        (each query its predecessor moved a pixel: a translation search) then adds a link
        every other query; rolls of one digit sent together (a few copies) add none."""
        back = query - owner
        if not 0 < back <= self._WINDOW:
            return False
        return not (back <= len(self._copies) and self._copies[-back])

    def _moved(self, query: int, owner: int) -> bool:
        """Whether image query ``query`` is its match ``owner`` moved by up to ``SHIFT``
        pixels and nothing else (:func:`shifted_copy`): a crop or roll of one input
        (Blacklight's windows run along the rows, so such copies share most hashes)."""
        if self.frame is None or not len(self._rows):
            return False
        a, b = self._row(owner), self._row(query)
        if a is None or b is None:
            return False
        return shifted_copy(a.reshape(self.frame), b.reshape(self.frame))

    def _rehome(self) -> None:
        """Move spilled hashes back into their buckets where a slot has come free, and
        forget those whose query has left the history (before query :attr:`_next`).

        A lookup finds a hash's newest query in the table or in the dict, the same id
        either way, and a forgotten one was no longer live: every count and depth is
        unchanged. The compiled kernel does not read the dict, so numpy runs while it
        holds anything: until session 8 that was until the spilled hash's query left
        the history (up to ``history`` + 256 queries, numpy's ~35 us a query instead of
        ~5 at digits); now only while its bucket stays full (a slot frees when one of
        its 32 queries leaves the history).
        """
        oldest = self._next - self.config.history
        limit = max(oldest - self._base + 1, 1)  # a slot below this offset is free
        spill: dict[int, int] = {}
        for key, query in self._spill.items():
            if query < oldest:
                continue
            bucket = key >> int(self._shift)
            free = np.flatnonzero(self._ids[bucket] < limit)
            if len(free):
                self._tags[bucket, free[0]] = np.uint32(key & 0xFFFFFFFF) | np.uint32(1)
                self._ids[bucket, free[0]] = query - (self._base - 1)
            else:
                spill[key] = query
        self._spill = spill

    def _observe_numpy(self, xs: np.ndarray, links: dict[int, tuple[int, int]] | None = None,
                       ) -> tuple[list[int], list[int]]:  # fmt: skip
        """:meth:`observe_many` in numpy: one pass over the table for the whole batch."""
        c = self.config
        n0, count = self._next, len(xs)
        if n0 + count - self._base >= self._REBASE:
            # before the probe: a rebase after it cleared the tags of slots the probe had
            # found (their queries older than the history), and the store then wrote the
            # batch's ids beside tag 0, where no probe finds them
            self._rebase()
        rows, hashes = _fingerprints(xs, c.quantization, c.window, c.top, self.silence)
        m = hashes * self._salt  # uint64 arrays wrap silently (mod 2^64)
        if count > 1:
            order = np.argsort(m, kind="stable")  # by hash, then by query (rows ascend)
            m, rows = m[order], rows[order]
        bucket, col, last = self._find(m)
        ids = n0 + rows
        if count > 1:
            again = np.zeros(len(m), dtype=bool)
            np.equal(m[1:], m[:-1], out=again[1:])
            # a hash an earlier query of this batch carried: that query is its newest
            last[again] = ids[:-1][again[1:]]
            live = last >= np.maximum(ids - c.history, 0)
            best = np.bincount(rows[live], minlength=count).tolist()
            near = 2 * max(best) >= c.threshold  # owners matter from half a match on
            owners = _owners(rows[live], last[live], count) if near else [-1] * count
            newest = np.ones(len(m), dtype=bool)
            newest[:-1] = ~again[1:]
            m, ids, bucket, col = m[newest], ids[newest], bucket[newest], col[newest]
        else:  # one query: its hashes are distinct
            shared = last[last >= max(n0 - c.history, 0)]
            best, owners = [len(shared)], [-1]
            if 2 * len(shared) >= c.threshold:
                ids_, counts = np.unique(shared, return_counts=True)  # ids ascending
                owners = [int(ids_[len(ids_) - 1 - int(np.argmax(counts[::-1]))])]  # newest
        self._next = n0 + count
        self._store(m, ids, bucket, col)
        return best, self._chains(n0, best, list(owners), links)

    def _chains(self, n0: int, best: list[int], owners: list[int],
                links: dict[int, tuple[int, int]] | None) -> list[int]:  # fmt: skip
        """The chain depths of queries ``n0``, ``n0 + 1``, ... (:meth:`_chain`) from their
        shared counts ``best`` and ``owners``, or the (owner, link) ``links`` gives."""
        c, depths = self.config, []
        for j, (b, owner) in enumerate(zip(best, owners, strict=True)):
            link = 2 if b >= c.threshold else 1 if 2 * b >= c.threshold else 0
            if links and n0 + j in links:
                owner, link = links[n0 + j]
            moved = link == 2 and self._moved_ok(n0 + j, owner) and self._moved(n0 + j, owner)
            if moved:
                link = 1  # a shifted copy: its owner's depth passes on, no step added
            depth = self._chain(n0 + j, owner, link)
            self._copies.append(moved)
            self.depth = depth if link == 2 else 0  # only a match is flagged
            depths.append(self.depth)
        return depths

    def _observe_compiled(self, xs: np.ndarray, links: dict[int, tuple[int, int]] | None = None,
                          ) -> tuple[list[int], list[int]] | None:  # fmt: skip
        """:meth:`observe_many` by the compiled kernel of :mod:`mlwarden.serve.kernels`,
        query after query (the same fingerprints, the same slots as one-query calls);
        ``None``: no kernel here. May stop early (a full bucket, a value out of range):
        the counts and depths of the queries it did."""
        kernels = _kernels()
        if kernels is None:
            return None
        c = self.config
        raw = np.asarray(xs, dtype=np.float64).reshape(len(xs), -1)
        n = raw.shape[1]
        w = min(c.window, n)
        q_pow, p_pow = _powers(n, w)
        width = n - w + 1
        # many windows: sort only those above the bar of :func:`_largest`
        bar = int((1.0 - 4.0 * c.top / width) * 2.0**64) if width > 8 * c.top else 0
        n0 = self._next
        best, owners, done, spilled = kernels.observe_batch(
            raw, c.quantization, w, c.top, self.silence, q_pow, p_pow, np.uint64(bar),
            self._tags, self._ids, self._salt, self._shift, self._base, n0, c.history,
            c.threshold)  # fmt: skip
        self._next = n0 + done
        for m in spilled.tolist():  # a full bucket: the dict keeps it
            self._spill[int(m)] = n0 + done - 1
        return best[:done].tolist(), self._chains(n0, best[:done].tolist(),
                                                  owners[:done].tolist(), links)  # fmt: skip

    def _chain(self, query: int, owner: int, link: int) -> int:
        """The chain depth of ``query``, whose most shared hashes are ``owner``'s.

        ``link`` 2: a match (``threshold`` hashes shared), 1: half a match, 0: less.
        A match's depth is 1, plus the depth of ``owner`` when that is one of the last
        64 queries; half a match passes the recent owner's depth on unchanged (a search
        step that moved more windows than usual does not break the chain), anything
        less is 0. A search steps from its last query, so each query matches one sent
        just before, which matched one before it: the depth grows by one a query
        (interleaved benign queries only lengthen the steps, up to 63 between them).
        Distinct benign inputs that resemble each other (a digit and its one-pixel
        shifts, resends of one input with fresh noise) match copies sent at random
        times, hundreds of queries apart: a depth of 1, rarely 2. Counting matches
        among the last 64 queries instead (until session 5) flagged such a stream, 100
        of every 1,000 shifted digits, though no match was with a recent query.
        Capped at 64 (an allowance above 64 switches Blacklight off for a key).
        """
        back = query - owner  # the owner's position from the end of _depths
        recent = self._depths[-back] if link and 0 < back <= len(self._depths) else 0
        depth = min(recent + 1, self._WINDOW) if link == 2 else recent
        self._depths.append(depth)
        return depth

    def _find(self, m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Bucket, slot (-1: none) and newest query id (-1: none) of salted hashes ``m``."""
        bucket = (m >> self._shift).astype(np.intp)
        tag = m.astype(np.uint32) | np.uint32(1)  # the low 32 bits; never 0 (an empty slot)
        # np.take of whole rows: several times faster than indexing with ``[bucket]``
        rows = np.take(self._tags, bucket, axis=0)
        at, hit = np.divmod(np.flatnonzero(rows == tag[:, None]), self._WAYS)
        col = np.full(len(m), -1, dtype=np.intp)
        col[at[::-1]] = hit[::-1]  # the first matching slot of a bucket (one, but for 2^-47)
        last = np.full(len(m), -1, dtype=np.int64)
        found = col >= 0
        last[found] = self._ids[bucket[found], col[found]].astype(np.int64) + (self._base - 1)
        if self._spill:
            spilled = np.fromiter(map(self._spill.get, m.tolist(), _MISSING), np.int64, len(m))
            np.maximum(last, spilled, out=last)
        return bucket, col, last

    def _store(self, m: np.ndarray, ids: np.ndarray, bucket: np.ndarray, col: np.ndarray) -> None:
        """Remember distinct salted hashes ``m`` as carried last by queries ``ids``."""
        offsets = (ids - (self._base - 1)).astype(np.uint32)
        there = col >= 0
        self._ids[bucket[there], col[there]] = offsets[there]  # seen again: newest query
        new = ~there
        if self._spill:
            spill = self._spill
            for i in np.flatnonzero(new).tolist():
                key = int(m[i])
                if key in spill:
                    spill[key] = int(ids[i])
                    new[i] = False
            if self._next - self._pruned >= 256:  # forget what left the history
                oldest = self._pruned = self._next - self.config.history
                self._spill = {k: v for k, v in spill.items() if v >= oldest}
        if new.any():
            self._place(m[new], ids[new], bucket[new], offsets[new])

    def _place(
        self, m: np.ndarray, ids: np.ndarray, bucket: np.ndarray, offsets: np.ndarray
    ) -> None:
        """New hashes into the first free slots of their buckets, one per bucket a round.

        Free: empty (offset 0) or holding a query that has left the history. Two new
        hashes of one batch share a bucket often (400 hashes, 32,768 buckets), rarely
        three: a scratch array picks one hash per bucket each round, without a sort.
        """
        limit = max(self._next - self.config.history - self._base + 1, 1)
        tags = m.astype(np.uint32) | np.uint32(1)
        todo = np.arange(len(bucket))
        while len(todo):
            self._owner[bucket[todo]] = todo  # one of the hashes aimed at a bucket wins it
            win = self._owner[bucket[todo]] == todo
            now = todo[win]
            free = np.take(self._ids, bucket[now], axis=0) < limit
            col = free.argmax(axis=1)
            fits = free[np.arange(len(now)), col]
            at, where = bucket[now[fits]], col[fits]
            self._tags[at, where] = tags[now[fits]]
            self._ids[at, where] = offsets[now[fits]]
            for i in now[~fits].tolist():  # a full bucket: the dict keeps it
                self._spill[int(m[i])] = int(ids[i])
            todo = todo[~win]

    def _rebase(self) -> None:
        """Move the id base to the oldest remembered query; forget older slots."""
        shift = max(self._next - self.config.history - self._base, 0)
        gone = self._ids <= shift
        self._ids -= np.uint32(shift)
        self._ids[gone] = 0
        self._tags[gone] = 0
        self._base += shift

    def carried(self, hashes: np.ndarray) -> np.ndarray:
        """The newest query still in the history that carries each of ``hashes`` (uint64,
        as :func:`_fingerprints` gives them; -1: none). Reads the table, stores nothing."""
        if not len(hashes):
            return np.zeros(0, dtype=np.int64)
        _, _, last = self._find(np.asarray(hashes, dtype=np.uint64) * self._salt)
        return np.where(last >= max(self._next - self.config.history, 0), last, -1)

    def flags(self, x: np.ndarray) -> bool:
        """Whether ``x`` ends a chain of at least ``chain`` matches (:meth:`_chain`)."""
        self.observe(x)
        return self.depth >= self.config.chain

    def nbytes(self) -> int:
        """Approximate memory held, bytes."""
        parts = (self._tags, self._ids, self._owner, self._rows, self._row_ids)
        return sum(p.nbytes for p in parts) + len(self._spill) * 100

    def dump(self) -> dict[str, np.ndarray]:
        """The live slots of the table (12 bytes each: at most ``history x top``, 600 KB
        at the defaults, against the table's 1 MB; slots of queries that left the history
        are free, so leaving them out changes no lookup), the per-key salt (the DB is
        0600), the spill and the last 64 chain depths: the next query's count and chain
        after :meth:`load` are the ones it would have had."""
        limit = max(self._next - self.config.history - self._base + 1, 1)
        ids = self._ids.ravel()
        at = np.flatnonzero(ids >= limit).astype(np.uint32)
        return {
            "at": at, "tags": self._tags.ravel()[at], "ids": ids[at],
            "meta": np.array([len(self._tags), self._base, self._next, self._pruned, self.depth],
                             dtype=np.int64),
            "salt": np.array([self._salt], dtype=np.uint64),
            "spill": np.array(sorted(self._spill.items()), dtype=np.uint64).reshape(-1, 2),
            "depths": np.array(self._depths, dtype=np.int64),
            "copies": np.array(self._copies, dtype=bool),
            "rows": self._rows[self._row_ids >= 0], "row_ids": self._row_ids[self._row_ids >= 0],
        }  # fmt: skip

    def load(self, state: dict[str, np.ndarray]) -> bool:
        """Restore :meth:`dump`'s table into a fresh one; False (left fresh) when its
        size differs (another ``history`` or ``top``)."""
        buckets, base, nxt, pruned, depth = (int(v) for v in state["meta"])
        at = state["at"].astype(np.intp)
        if buckets != len(self._tags) or (len(at) and int(at.max()) >= self._tags.size):
            return False
        self._tags.ravel()[at] = state["tags"]
        self._ids.ravel()[at] = state["ids"]
        self._salt = np.uint64(int(state["salt"][0]))
        self._spill = {int(k): int(v) for k, v in state["spill"].tolist()}
        self._base, self._next, self._pruned, self.depth = base, nxt, pruned, depth
        self._depths = deque(state["depths"].tolist(), maxlen=self._WINDOW)
        copies = state.get("copies")  # none before session 14: no copy excused
        self._copies = deque(
            copies.tolist() if copies is not None else [False] * len(self._depths),
            maxlen=self._WINDOW,
        )
        rows, ids = state.get("rows"), state.get("row_ids")  # none before session 14
        if rows is not None and ids is not None and rows.shape[1:] == self._rows.shape[1:]:
            self._remember_ids(ids.astype(np.int64), rows.astype(np.float32))
        return True


_COMPILED: list[Any] = []  # the kernels module once compiled (or None: unavailable)
_BUILDING: list[threading.Thread] = []
_BUILD_LOCK = threading.Lock()


def _kernels(wait: bool = False) -> Any:
    """:mod:`mlwarden.serve.kernels` (numba) once compiled, else ``None`` (numpy runs
    meanwhile: the same results). The first call starts compiling in a background thread
    (a few seconds on a cold cache), so no query waits for it; ``wait=True`` waits.
    ``None`` for good when numba is missing or ``MLW_KERNELS=numpy``."""
    if _COMPILED:
        return _COMPILED[0]
    if os.environ.get("MLW_KERNELS", "").lower() == "numpy":
        return None
    with _BUILD_LOCK:
        if not _BUILDING:
            _BUILDING.append(threading.Thread(target=_build_kernels, daemon=True))
            _BUILDING[0].start()
    if wait:
        _BUILDING[0].join()
    return _COMPILED[0] if _COMPILED else None


def compile_kernels() -> bool:
    """Compile the detectors' numba kernels now (or load them from numba's cache beside
    :mod:`mlwarden.serve.kernels`: about 1.5 s; 7-8 s cold on a quiet 2-core machine) and
    say whether they are in use. ``serve`` calls it before it accepts requests, so its
    first answers do not share the CPU with the compiler (keep-alive p50 12-24 ms in the
    first seconds after a start, 1.3 ms once compiled). Example: ``compile_kernels()``
    -> ``True``; ``False`` where numba is missing or ``MLW_KERNELS=numpy``."""
    return _kernels(wait=True) is not None


def _build_kernels() -> None:
    try:
        from mlwarden.serve import kernels

        q_pow, p_pow = _powers(4, 2)  # compile (or load from the cache) before first use
        table = np.zeros((2, 2), dtype=np.uint32)
        kernels.observe_batch(np.zeros((1, 4)), 0.1, 2, 2, 0.0, q_pow, p_pow, np.uint64(0),
                              table, table.copy(), np.uint64(1), np.uint64(63), 1, 0, 1, 2)  # fmt: skip
        kernels.prada_candidates(np.zeros((2, 2), np.float32), 2, np.zeros(2, np.float32), 1.0, 0.0)
        two = np.zeros((2, 2), np.float32)
        kernels.prada_gather(two, 2, np.zeros(2, np.float32), 1.0, 0.0, two.copy(), 0)
        kernels.merge_record(np.zeros(2), np.zeros(1), np.zeros(1))
        kernels.hamming_counts(np.zeros((2, 2), np.float32), np.zeros((1, 1), np.uint64),
                               np.zeros((1, 2), np.int64), 1, 1, 1, 0, np.zeros((2, 1), np.uint64))  # fmt: skip
        kernels.crosskey_near(two, np.zeros((3, 2), np.float32), 2, np.zeros(2, np.int64),
                              np.zeros(2, np.int64), 1, two, np.zeros(2, np.float32), 1.0)  # fmt: skip
        one, flag = np.zeros(2, np.float32), np.zeros(2, np.bool_)
        kernels.crosskey_add(two, one, two, one, two.copy(), one.copy(), np.zeros((3, 2), np.float32),
                             np.zeros(2, np.int32), np.zeros(2, np.int64), flag, 0, 0, 0)  # fmt: skip
    except Exception:  # numba missing or broken here: numpy does the same work
        _COMPILED.append(None)
        return
    _COMPILED.append(kernels)


def _owners(rows: np.ndarray, ids: np.ndarray, count: int) -> np.ndarray:
    """Per query (``rows`` in ``range(count)``) the id it shares most hashes with, the
    newest on a tie (-1: none); ``rows``/``ids``: one (query, remembered id) pair a hash."""
    out = np.full(count, -1, dtype=np.int64)
    if not len(rows):
        return out
    order = np.lexsort((ids, rows))
    r, o = rows[order], ids[order]
    start = np.ones(len(r), dtype=bool)
    start[1:] = (r[1:] != r[:-1]) | (o[1:] != o[:-1])
    at = np.flatnonzero(start)
    runs = np.diff(np.append(at, len(r)))
    r, o = r[at], o[at]
    best = np.lexsort((o, runs, r))  # by query, then count, then id: each query's last wins
    last = np.ones(len(best), dtype=bool)
    last[:-1] = r[best][1:] != r[best][:-1]
    out[r[best][last]] = o[best][last]
    return out


class Similarity:
    """One key's near-neighbour count on a reduced representation, robust to noise.

    Blacklight's hashes of quantised windows break when an attacker adds fresh noise to
    every query (Feng et al., "Stateful Defenses for Machine Learning Models Are Not Yet
    Secure Against Black-box Attacks", CCS 2023, arXiv:2303.06280, show this for
    Blacklight and PIHA). This detector keeps the key's last ``history`` queries as
    reduced vectors (:func:`reduce`) and counts how many lie within ``radius`` of a new
    query, as root-mean-square distance per value in units of the input range:
    :meth:`observe` returns the count among the last ``window`` queries and leaves the
    whole history's in :attr:`total`. A
    random search around one input (with or without per-query Gaussian noise up to
    sigma ~0.06 of the range) puts nearly every query within the radius of the others,
    so the count grows by one per query and reaches ``min_neighbours`` after about
    that many queries; distinct natural inputs rarely have more than a handful of
    neighbours that close (12 at most among all 1,797 digits at the default radius).
    Exact repeats never reach it: :class:`Monitor` drops them first.

    Cost: the history is first scanned on a sketch of ``_SKETCH`` values per query
    (sums over blocks of the reduced vector, scaled by one over the square root of the
    block length: an orthogonal projection, so its distance is a lower bound of the
    true one and no neighbour is missed); only the queries the sketch cannot rule out
    are compared in full. Distinct benign queries leave few such candidates, so a
    query costs a scan of ``history x 16`` floats instead of ``history x dims``.

    Memory: ``history * (dims + 18) * 4`` bytes (3.3 MB at 10,000 queries of 64 values).
    """

    def __init__(self, config: SimilarityConfig, dims: int, binary: bool = False) -> None:
        self.config = config
        # text (``binary``): rows of MinHash bits, every value 0 or one scale; their bits
        # packed beside the ring, so neighbours are counted by Hamming distance
        # (:meth:`_bits_of`); None: not (or no longer) such rows
        self._bits = np.zeros((config.history, -(-dims // 64)), np.uint64) if binary else None
        self._one = 0.0  # the one nonzero value of the rows so far (0: none yet)
        self._ring = np.zeros((config.history, dims), dtype=np.float32)
        self._norms = np.zeros(config.history, dtype=np.float32)
        k = min(_SKETCH, dims)
        self._starts = (np.arange(k, dtype=np.int64) * dims) // k
        self._scale = (1.0 / np.sqrt(np.diff(np.append(self._starts, dims)))).astype(np.float32)
        # The sketches stored by column (k + 1, history), the last row minus half each
        # sketch's squared norm: one product of the query's (s, 1) with it gives
        # ``s . h - |h|^2 / 2`` for every remembered h, over long contiguous rows (a
        # (history, k) layout made BLAS walk 10,000 rows of 16 values: ~2.5x slower).
        self._sketch = np.zeros((k + 1, config.history), dtype=np.float32)
        self._filled = 0
        self._next = 0
        self.total = 0  # the last query's neighbours over the whole history
        # the last batch's neighbours as :meth:`_counts` found them, kept only when
        # ``keep`` (a reader asks: serve/approach.py, which drops them once read):
        # (batch position, ring slot) pairs, the first query's number, the batch's own
        # (later, earlier) pairs; None where no distances decided (text's bits)
        self.keep = False
        self.near: tuple[np.ndarray, np.ndarray, int, np.ndarray | None] | None = None

    def _sketch_of(self, v: np.ndarray) -> np.ndarray:
        return np.add.reduceat(v, self._starts, axis=-1) * self._scale

    def observe(self, v: np.ndarray) -> int:
        """Add one reduced query; return how many of the last ``window`` queries lie within
        the radius (those of the whole history: :attr:`total`)."""
        recent, total = self.observe_many(np.asarray(v)[None])
        self.total = int(total[0])
        return int(recent[0])

    def observe_many(self, vs: np.ndarray, whole: bool = True,
                     scan: bool = True) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """Add reduced queries ``vs`` (B, dims) in order; each one's neighbours among the
        last ``window`` queries and among the whole history, as :meth:`observe` counts.
        ``whole=False``: only the window is scanned (a tenth of the work at the defaults)
        and the whole history's counts are those of the window; for a key without
        ``long_neighbours``, whose decision never reads them.

        Query j of the batch is compared with the remembered queries and with the
        batch's queries before it, each at its age when j arrives (an entry of a full
        ring that j - 1 earlier queries of the batch would have overwritten is out): the
        counts of B calls of :meth:`observe`, with one pass over the history in all.
        ``scan=False``: added only, no counts (zeros; :mod:`mlwarden.serve.crosskey`).
        """
        hist = self.config.history
        count = len(vs)
        n = self._filled
        limit = (self.config.radius**2) * vs.shape[1]
        s = self._sketch_of(vs)
        k = s.shape[1]
        query = np.empty((count, k + 1), dtype=np.float32)  # (s, 1): the last row's term
        query[:, :k] = s
        query[:, k] = 1.0
        half = np.einsum("ij,ij->i", s, s) / 2
        norms = np.einsum("ij,ij->i", vs, vs)
        self.near = None
        bits = self._bits_of(vs, limit, whole) if scan else None
        if not scan:
            recent = total = np.zeros(count, dtype=np.int64)
        elif bits is not None:
            recent, total = bits[1], bits[2]
        else:
            recent, total = self._counts(vs, norms, query, half, limit, whole)
        if count <= hist:
            first = self._next % hist
            if first + count <= hist:  # one contiguous run of slots: slices, not gathers
                self._put(slice(first, first + count), vs, norms, s, half, bits)
            else:
                self._put((first + np.arange(count)) % hist, vs, norms, s, half, bits)
        else:
            slots = (self._next + np.arange(count - hist, count)) % hist
            tail = slice(count - hist, count)
            self._put(slots, vs[tail], norms[tail], s[tail], half[tail], None)
        self._next += count
        self._filled = min(n + count, hist)
        return recent, total

    def _counts(self, vs: np.ndarray, norms: np.ndarray, query: np.ndarray, half: np.ndarray,
                limit: float, whole: bool) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """Each query's neighbours among the last ``window`` and the whole history (the
        batch's earlier queries included), by distances: :meth:`observe_many`'s counts."""
        hist, window = self.config.history, self.config.window
        count, n = len(vs), self._filled
        if n:
            bound = (half - (limit * 1.001 + 1e-4) / 2)[:, None]
            found = [
                self._near(vs, norms, query, bound, limit, a, b) for a, b in self._spans(whole)
            ]
            j, slot = found[0] if len(found) == 1 else map(np.concatenate, zip(*found, strict=True))
            if self.keep:
                self.near = (j, slot, self._next, None)
            if count == 1 and (not whole or n <= window):
                # every slot scanned is one of the last ``window`` queries: no ages needed
                recent = total = np.array([len(j)])
            elif count == 1:  # every slot is within the history; ages 1..hist
                total = np.array([len(j)])
                recent = np.array([np.count_nonzero((self._next - slot - 1) % hist < window)])
            else:
                # the query in slot s is (next - s - 1) % hist + 1 queries old before the batch
                age = (self._next - slot - 1) % hist + 1 + j
                total = np.bincount(j[age <= hist], minlength=count)
                recent = np.bincount(j[age <= window], minlength=count)
        else:
            recent, total = np.zeros(count, dtype=np.int64), np.zeros(count, dtype=np.int64)
            if self.keep:
                self.near = (np.zeros(0, np.int64), np.zeros(0, np.int64), self._next, None)
        if count > 1:  # the batch's own earlier queries, j - i queries old
            near = sq_distances(vs, norms, vs, norms) < limit
            within_hist, within_window = _earlier(count, hist, window)
            if self.near is not None:
                self.near = self.near[:3] + (near & within_hist,)
            total = total + np.count_nonzero(near & within_hist, axis=1)
            recent = recent + np.count_nonzero(near & within_window, axis=1)
        return recent, total

    def neighbours(self, j: int) -> np.ndarray | None:
        """The query numbers of the last batch's query ``j``'s neighbours, as its counts
        found them (the history scanned, then the batch's earlier queries; oldest first),
        None where none were kept (``keep`` off) or no distances decided (rows of bits).
        Read only: no new scan."""
        if self.near is None:
            return None
        pos, slot, first, inner = self.near
        hist = self.config.history
        age = (first - slot[pos == j] - 1) % hist + 1 + j  # queries old when j came
        ids = first + j - age[age <= hist]  # not overwritten by the batch's earlier ones
        if inner is not None:
            ids = np.concatenate([ids, first + np.flatnonzero(inner[j])])
        return np.sort(ids)

    def _bits_of(self, vs: np.ndarray, limit: float, whole: bool) -> tuple[np.ndarray, ...] | None:
        """For rows of bits (text), the batch packed and its counts by Hamming distance
        (:func:`mlwarden.serve.kernels.hamming_counts`): (packed, recent, total); None
        where the distances decide (not such rows, and then never again for this ring).

        Exact: a row is 0 or ``c`` in each value, so each distance the numpy code
        computes is ``c^2 H`` (H: the differing bits) up to float32 rounding, well under
        ``_lattice``'s margin; the radius cuts at one H whatever the order of the sums.
        A TF-IDF or restored (float16) ring is never such a ring: its bits are dropped.
        """
        kernels = _kernels()
        if self._bits is None or kernels is None or len(vs) > self.config.history:
            self._bits = None
            return None
        top = float(vs.max()) if vs.size else 0.0
        one = self._one or top
        cut = _lattice(one, limit, vs.shape[1]) if one > 0 else -1
        if top not in (0.0, one) or cut is None or not ((vs == 0) | (vs == one)).all():
            self._bits = None  # distances decide from here on
            return None
        self._one = one
        spans = np.array(self._spans(whole) if self._filled else [], np.int64).reshape(-1, 2)
        packed = np.zeros((len(vs), self._bits.shape[1]), np.uint64)
        recent, total = kernels.hamming_counts(
            vs, self._bits, spans, self._next, self.config.history, self.config.window, cut,
            packed)  # fmt: skip
        return packed, recent, total

    def _put(self, slots: Any, vs: np.ndarray, norms: np.ndarray, s: np.ndarray,
             half: np.ndarray, bits: tuple[np.ndarray, ...] | None) -> None:  # fmt: skip
        """Write queries into ring ``slots`` (a slice or an index array)."""
        k = s.shape[1]
        self._ring[slots] = vs
        self._norms[slots] = norms
        self._sketch[:k, slots] = s.T
        self._sketch[k, slots] = -half
        if self._bits is not None:
            if bits is None:
                self._bits = None  # rows whose bits were not packed: distances decide
            else:
                self._bits[slots] = bits[0]

    def _spans(self, whole: bool) -> list[tuple[int, int]]:
        """Ring slots to scan: all, or only those of the last ``window`` queries."""
        n, hist, window = self._filled, self.config.history, self.config.window
        if whole or n <= window:
            return [(0, n)]
        start = (self._next - window) % hist  # the oldest of the last ``window``
        if start + window <= hist:
            return [(start, start + window)]
        return [(start, hist), (0, start + window - hist)]

    def _near(
        self,
        vs: np.ndarray,
        norms: np.ndarray,
        query: np.ndarray,
        bound: np.ndarray,
        limit: float,
        a: int,
        b: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(query, slot) pairs within the radius among ring slots ``a:b``."""
        # sketch distance^2 = 2 half + |s|^2 - 2 dot < limit; a little slack for rounding
        cand = (query @ self._sketch[:, a:b]) > bound
        # flat indices: np.nonzero of a 2-D mask costs ~10x more
        if len(vs) == 1:
            slot = np.flatnonzero(cand)
            j = np.zeros(len(slot), dtype=slot.dtype)
        else:
            j, slot = np.divmod(np.flatnonzero(cand), b - a)
        if 4 * len(j) > (b - a) * len(vs):  # most are candidates (an attack): no gather
            d2 = sq_distances(vs, norms, self._ring[a:b], self._norms[a:b])
            j, slot = np.divmod(np.flatnonzero((d2 < limit) & cand), b - a)
        elif len(j):
            dot = np.einsum("ij,ij->i", np.take(self._ring, slot + a, axis=0), vs[j])
            near = self._norms[slot + a] + norms[j] - 2.0 * dot < limit
            j, slot = j[near], slot[near]
        return j, slot + a

    def flags(self, v: np.ndarray) -> bool:
        """Whether ``v`` has ``min_neighbours`` among the last ``window`` queries, or
        ``long_neighbours`` among the whole history."""
        c = self.config
        recent = self.observe(v)
        return recent >= c.min_neighbours or self.total >= (c.long_neighbours or math.inf)

    def nearest(self, v: np.ndarray, k: int, recent: int) -> np.ndarray:
        """The ``k`` rows nearest ``v`` (Euclidean) among the last ``recent`` queries
        added, oldest first (fewer while fewer were added): one pass of ``recent x dims``
        over the stored rows and norms, in at most two contiguous runs of the ring.
        :mod:`mlwarden.serve.spread`'s neighbourhood window."""
        hist, n = self.config.history, min(self._filled, recent)
        start = (self._next - n) % hist  # the oldest of the last n
        end = start + n
        q = np.asarray(v, dtype=np.float32)
        if end <= hist:
            d2 = self._norms[start:end] - 2.0 * (self._ring[start:end] @ q)
        else:  # the two runs in time order: the older from start to the ring's end
            runs = (slice(start, hist), slice(0, end - hist))
            d2 = np.concatenate([self._norms[r] - 2.0 * (self._ring[r] @ q) for r in runs])
        # positions in d2 are in time order: the kept ones, sorted, are oldest first
        keep = np.sort(np.argpartition(d2, k - 1)[:k]) if k < n else np.arange(n)
        return self._ring[(start + keep) % hist].astype(np.float64)

    def nbytes(self) -> int:
        parts = (self._ring, self._norms, self._sketch, self._starts, self._scale)
        bits = 0 if self._bits is None else self._bits.nbytes
        return sum(p.nbytes for p in parts) + bits

    def dump(self) -> dict[str, np.ndarray]:
        """The filled part of the history in float16 (a summary: 2 bytes a value); rows of
        bits (text) also their one nonzero value, ``one``: they load exactly, bits and all."""
        ring = _half(self._ring[: self._filled])
        out = {"ring": ring, "meta": np.array([self._filled, self._next])}
        if self._bits is not None:
            out["one"] = np.array([self._one], dtype=np.float32)
        return out

    def load(self, state: dict[str, np.ndarray]) -> None:
        ring = _exact(state) if self._bits is not None else None
        if ring is None:
            self._bits = None  # float16 values: no longer 0 or one scale (distances decide)
            ring = state["ring"].astype(np.float32)
        if ring.ndim != 2 or ring.shape[1] != self._ring.shape[1]:
            self._bits = None
            return  # the config changed: start afresh rather than compare unlike vectors
        n = min(len(ring), len(self._ring))
        if self._bits is not None:  # rows of bits: packed again, counted by Hamming distance
            self._one = float(state["one"][0])
            self._bits[:n] = _pack(ring[:n] != 0, self._bits.shape[1])
        self._ring[:n] = ring[:n]
        self._norms[:n] = np.einsum("ij,ij->i", ring[:n], ring[:n])
        sketch = self._sketch_of(ring[:n])
        k = sketch.shape[1]
        self._sketch[:k, :n] = sketch.T
        self._sketch[k, :n] = -np.einsum("ij,ij->i", sketch, sketch) / 2
        filled, nxt = (int(v) for v in state["meta"])
        self._filled = min(filled, n)
        # a ring not full is in order from slot 0 (a stored history longer than this one
        # is cut to its first rows): the next query goes after its last
        self._next = nxt % len(self._ring) if self._filled == len(self._ring) else self._filled


def _exact(state: dict[str, np.ndarray]) -> np.ndarray | None:
    """A stored ring of bits (:meth:`Similarity.dump`'s ``one``) as it was before float16:
    each value 0 or ``one``; None when it is not such a ring (an older blob, TF-IDF rows)."""
    one = state.get("one")
    ring = state["ring"]
    if one is None or len(one) != 1 or not np.isfinite(one).all():
        return None
    if not np.isin(ring, np.array([0, one[0]], dtype=np.float16)).all():
        return None
    return (ring != 0).astype(np.float32) * np.float32(one[0])


def _pack(on: np.ndarray, words: int) -> np.ndarray:
    """Rows of booleans (n, dims) packed as :func:`mlwarden.serve.kernels.hamming_counts`
    packs a batch: value k of a row is bit ``k % 64`` of word ``k // 64``."""
    packed = np.packbits(on, axis=1, bitorder="little")
    out = np.zeros((len(on), words * 8), np.uint8)
    out[:, : packed.shape[1]] = packed
    return out.view("<u8").astype(np.uint64)


def _half(a: np.ndarray) -> np.ndarray:
    """``a.astype(np.float16)``, bit for bit, by torch's vectorised cast where torch is
    loaded (the gateway: a history of 10,000 x 64 in 0.8 instead of 2.6 ms, most of a
    key's state blob written every 1,024 queries). Both round to nearest even, with the
    same subnormals, zeros and infinities; NaN payloads differ, so a NaN goes to numpy."""
    torch = sys.modules.get("torch")
    if torch is None or a.dtype != np.float32 or not a.size or np.isnan(a).any():
        return a.astype(np.float16)
    out: np.ndarray = torch.from_numpy(np.ascontiguousarray(a)).to(torch.float16).numpy()
    return out


def _feature_scale(
    config: Detection, shape: list[int] | None
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``detection.feature_scale`` as float32 arrays (``None``, ``None``: not set); a scale
    that does not fit the declared input shape is a :class:`UserError`."""
    fs = config.feature_scale
    if fs is None:
        return None, None
    if shape is None or math.prod(shape) != len(fs.spread):
        from mlwarden.core.errors import UserError

        raise UserError(
            f"detection.feature_scale has {len(fs.spread)} values, but the input has "
            f"{math.prod(shape) if shape else 'an undeclared number of'}; declare input.shape "
            "and calibrate again ('mlwarden gateway calibrate')"
        )
    return np.asarray(fs.centre, dtype=np.float32), np.asarray(fs.spread, dtype=np.float32)


@functools.lru_cache(maxsize=64)
def _lattice(one: float, limit: float, dims: int) -> int | None:
    """The most differing bits H of two rows of ``dims`` values 0 or ``one`` whose
    squared distance ``one^2 H`` passes ``d2 < limit`` (compared as float32 or float64),
    -1: none; None when some ``one^2 H`` lies within float32 rounding of the limit (the
    sums of :meth:`Similarity._counts` are within ``4 dims^2 2^-24 one^2`` of it)."""
    sq = float(np.float32(one) * np.float32(one))  # each nonzero term of the float32 sums
    tol = 8.0 * dims * (dims + 4) * 2.0**-24 * sq
    cuts = set()
    for bar in (limit, float(np.float32(limit))):
        if any(abs(sq * h - bar) <= tol for h in range(dims + 1)):
            return None
        cuts.add(sum(sq * h < bar for h in range(dims + 1)) - 1)
    return cuts.pop() if len(cuts) == 1 else None


@functools.lru_cache(maxsize=64)
def _earlier(count: int, hist: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Masks over a batch's (later j, earlier i) pairs: i < j, and j - i within
    ``hist``, within ``window`` queries (:meth:`Similarity.observe_many`)."""
    j, i = np.indices((count, count))
    gap = j - i
    masks = ((gap > 0) & (gap <= hist), (gap > 0) & (gap <= window))
    for m in masks:
        m.flags.writeable = False
    return masks


def stat_sketch(config: Detection, modality: str) -> bool:
    """Whether the still-ball rule asks a secret sketch too (``similarity.sketch``; not
    on text)."""
    return config.similarity.sketch and modality != "text"


def reduce(x: np.ndarray, max_dims: int, scale: float) -> np.ndarray:
    """A query as at most ``max_dims`` float32 values in units of the input range.

    Inputs with more values are averaged over consecutive blocks of the C-order
    flattening (rows of an image: a low-pass filter that also divides white noise by
    the square root of the block length); ``scale`` is the width of the input range.

    Example::

        reduce(np.ones((3, 32, 32)), 128, 1.0).shape   # (128,): blocks of 24 values
    """
    return reduce_many(np.asarray(x)[None], max_dims, scale)[0]


def reduce_many(xs: np.ndarray, max_dims: int, scale: float) -> np.ndarray:
    """:func:`reduce` of each input of a batch ``xs`` (B, ...) at once: (B, dims) float32,
    row for row the values of :func:`reduce` (one ``reduceat`` over the batch)."""
    flat = np.asarray(xs, dtype=np.float32).reshape(len(xs), -1) / np.float32(scale)
    n = flat.shape[1]
    if n <= max_dims:
        return flat
    # exactly max_dims blocks of floor or ceil(n / max_dims) values: the detectors' rings
    # are sized max_dims (blocks of one fixed length left 127 values for 8,000 inputs)
    starts = (np.arange(max_dims, dtype=np.int64) * n) // max_dims
    sums = np.add.reduceat(flat.astype(np.float64), starts, axis=1)
    return (sums / np.diff(np.append(starts, n))).astype(np.float32)


_FLOOR_DB = 96.0  # the envelope's floor: the dynamic range of 16-bit PCM
_HEARD_DB = 6.0  # above the floor: a clip with no frame louder is silence (Monitor._heard)


def reduce_audio(x: np.ndarray, max_dims: int, scale: float) -> np.ndarray:
    """A clip as the log-energy envelope of ``max_dims`` frames, in [0, 1].

    Block means (:func:`reduce`) average a waveform to about 0, so every clip looks
    near every other. Instead each of at most ``max_dims`` consecutive frames of the
    C-order flattening (about 8 ms each for 1 s at 8 kHz and 128 frames) becomes its
    mean power in dB relative to full scale (a constant of amplitude
    ``scale / 2``), clipped at -96 dB (16-bit PCM) and mapped to [0, 1] (0: silence).
    Distinct utterances differ in where their syllables and pauses fall; a clip and a
    copy with small added noise differ only in the quiet frames. Unit: fraction of the
    96 dB span, so the similarity radius keeps its meaning (RMS per value). Clips that
    are silence throughout all look alike (their envelopes are the noise floor).

    Example::

        reduce_audio(np.zeros(8000), 128, 2.0)   # 128 zeros: silence
    """
    return reduce_audio_many(np.asarray(x)[None], max_dims, scale)[0]


def reduce_audio_many(xs: np.ndarray, max_dims: int, scale: float) -> np.ndarray:
    """:func:`reduce_audio` of each clip of a batch ``xs`` (B, ...) at once, row for row."""
    flat = np.asarray(xs, dtype=np.float64).reshape(len(xs), -1) / (scale / 2.0)
    n = flat.shape[1]
    frames = min(max_dims, n)
    starts = (np.arange(frames, dtype=np.int64) * n) // frames
    power = np.add.reduceat(flat * flat, starts, axis=1) / np.diff(np.append(starts, n))
    db = 10.0 * np.log10(np.maximum(power, 10.0 ** (-_FLOOR_DB / 10.0)))
    return (np.clip(db, -_FLOOR_DB, 0.0) / _FLOOR_DB + 1.0).astype(np.float32)


class Prada:
    """One key's PRADA state: per-class reference sets, thresholds and distances.

    Queries arrive reduced (:func:`reduce`); the reference sets of all classes together
    hold at most ``history`` vectors (``history * dims * 4`` bytes: 1.3 MB at the
    defaults for 64 values).
    """

    _BIG = 512  # rows of a class's set from which :meth:`_nearest` ranks before it subtracts

    def __init__(self, config: PradaConfig, resend: float = 0.0, every: bool | None = None) -> None:
        self.config = config
        self.resend = resend  # RMS per value: closer to a reference is a resend of it
        self._sets: dict[int, np.ndarray] = {}  # growing reference set per class, rows
        self._sq: dict[int, np.ndarray] = {}  # squared norms of a large set's rows
        self._sizes: dict[int, int] = {}
        self._moments: dict[int, list[float]] = {}
        self._thresholds: dict[int, float] = {}
        self._oldest: dict[int, int] = {}  # "all": the next row a full class set overwrites
        # every earlier query a reference (``references``; the Monitor resolves the
        # default per modality and passes it as ``every``)
        self.every = config.references != "growing" if every is None else every
        # the record's outliers left out of the test (``outliers``; the Monitor sets the
        # default per kind of input: 3 on image keys, :meth:`Monitor._equip`)
        self.outliers = 0.0 if config.outliers is None else config.outliers
        # the last ``history`` distances in a ring (oldest overwritten first)
        self._dists = np.zeros(config.history, dtype=np.float64)
        self._n_dists = 0
        # the record kept sorted between tests: a sort of 5,000 values was most of
        # PRADA's cost; the distances in and out since the last test are merged instead
        self._sorted: np.ndarray | None = np.empty(0)
        self._in: list[float] = []
        self._out: list[float] = []
        self._total = 0
        self._pending = 0
        self.last_w: float | None = None
        self.lowest_w = math.inf  # the lowest W tested so far (calibrate reads it)
        # a key's renderings of one input (thumbnail sizes) measured past it (renders.py);
        # only with every earlier query a reference (text and audio: the growing sets)
        self._rend: Renders | None = None
        self.renders = False  # images: the Monitor turns it on (renders.py)
        self._slot = -1  # the row the last kept query went to (-1: not kept)
        # image keys: the renderings of one input in a view a rendering barely moves,
        # counted by distinct inputs (blinding.py); the Monitor makes it
        self.blinding: Blinding | None = None

    def observe(self, x: np.ndarray, label: int) -> None:
        """Add one query with its predicted class (updates the distance record).

        A query within ``resend`` (RMS per value) of its class's nearest reference is a
        resend of that reference, with fresh noise or a typo, and is dropped like an
        exact retry: PRADA's normality test assumes distinct natural inputs, and a client
        resending a few inputs with noise piles up tiny distances that fail it (audio
        clips resent with noise of 0.01 of the range: 38.6 false alarms per 1,000 at
        the calibrated delta, text with one typo: 99.1). Extraction's synthetic queries
        step farther (Papernot et al.'s Jacobian steps: about 0.1 per value) and still
        count; near-copies are the similarity detector's to count.
        """
        v = np.asarray(x, dtype=np.float32).ravel()
        ref = self._sets.get(label)
        if ref is None:
            self._pending += 1
            self._first(label, v)
            return
        n = self._sizes[label]
        e = self._nearest(label, ref, n, v)
        root = self._render(v, e)
        if math.sqrt(e) < self.resend * math.sqrt(v.size):
            return  # a resend (see :meth:`observe`): counted as the input it copies
        self._pending += 1
        if root is not None:  # a rendering of a recent input: measured past it, not kept
            past = self._past(label, ref, n, v, root, e)
            if past is not None:
                self._record(math.sqrt(past))
            return
        d = math.sqrt(e)
        self._record(d)
        kept = self._keep(label, ref, n, v, self.every or d > self._thresholds[label])
        if self._slot >= 0:
            self._placed(label, self._slot, v)
        if kept:
            self._moment(label, d)

    def _first(self, label: int, v: np.ndarray) -> None:
        """A class's first query starts its set (none once all sets hold ``history``)."""
        self._render(v, math.inf)
        if self._total >= self.config.history:
            return
        ref = np.empty((16, v.size), dtype=np.float32)
        ref[0] = v
        self._sets[label] = ref
        self._sizes[label] = 1
        self._total += 1
        self._moments[label] = [0, 0.0, 0.0]
        self._thresholds[label] = 0.0
        self._placed(label, 0, v)

    _LINK = 4.0  # a rendering's bar: 4 x ``resend`` (twice the similarity radius), RMS per value
    _FAR = 4.0  # offset per value that takes an input's own row out of reach for a moment

    def _render(self, v: np.ndarray, e: float) -> int | None:
        """Add ``v`` (its class's nearest reference at squared distance ``e``) to the
        key's recent queries; the root of the input it renders, or None (renders.py)."""
        rend = self._rend
        if rend is None:
            if not (self.renders and self.every) or self.resend <= 0:
                return None
            rend = self._rend = Renders(v.size)
        k, near = rend.nearest(v)
        bar = self._LINK * self.resend
        return rend.add(v, k if near <= bar * bar * v.size and near <= e else -1)

    def _placed(self, label: int, slot: int, v: np.ndarray) -> None:
        if self._rend is not None:
            self._rend.place(label, slot, v)

    def _past(self, label: int, ref: np.ndarray, n: int, v: np.ndarray, root: int,
              e: float) -> float | None:  # fmt: skip
        """The squared distance from ``v`` to its class's nearest reference that is not
        its input's own row (``e``: with it); None when that row is the only one."""
        slot = None if self._rend is None else self._rend.row(root, label, ref, n)
        if slot is None:
            return e
        if n == 1:
            return None
        keep = ref[slot].copy()
        sq = self._sq.get(label)
        old = None if sq is None else float(sq[slot])
        ref[slot] = v + np.float32(self._FAR)
        if sq is not None:
            sq[slot] = ref[slot] @ ref[slot]
        try:
            return self._nearest(label, ref, n, v)
        finally:
            ref[slot] = keep
            if sq is not None and old is not None:
                sq[slot] = old

    def _keep(self, label: int, ref: np.ndarray, n: int, v: np.ndarray, far: bool) -> bool:
        """``v`` into the class's set of ``n`` rows, as :meth:`observe` keeps a measured
        query (``far``: ``references: all``, or beyond the class threshold); True: appended
        (its distance then joins the set's moments, :meth:`_moment`)."""
        self._slot = -1
        if self.every and self._total >= self.config.history:
            self._replace(label, ref, n, v)
            return False
        if not far or self._total >= self.config.history:
            return False
        if n == len(ref):
            grow = min(len(ref), self.config.history)
            ref = self._sets[label] = np.concatenate([ref, np.empty((grow, v.size), ref.dtype)])
            if label in self._sq:
                self._sq[label] = np.concatenate([self._sq[label], np.empty(grow, np.float32)])
        ref[n] = v
        if label in self._sq:
            self._sq[label][n] = v @ v
        self._sizes[label] = n + 1
        self._total += 1
        self._slot = n
        return True

    def _moment(self, label: int, d: float) -> None:
        """Running count, sum and sum of squares of a set's distances: ``mean - std`` in O(1)."""
        m = self._moments[label]
        m[0] += 1
        m[1] += d
        m[2] += d * d
        mean = m[1] / m[0]
        std = math.sqrt(max(m[2] / m[0] - mean * mean, 0.0))
        self._thresholds[label] = max(self._thresholds[label], mean - std)

    def _replace(self, label: int, ref: np.ndarray, n: int, v: np.ndarray) -> None:
        """``v`` over the class's oldest row, once all sets together hold ``history``.

        Frozen sets would let an attacker pad: 5,000 natural queries first, then steps
        around seeds the sets never saw, each far from every remembered query.
        """
        slot = self._oldest.get(label, 0) % n
        ref[slot] = v
        if label in self._sq:
            self._sq[label][slot] = v @ v
        self._oldest[label] = slot + 1
        self._slot = slot

    def _nearest(self, label: int, ref: np.ndarray, n: int, v: np.ndarray) -> float:
        """The smallest squared distance from ``v`` to the class's ``n`` remembered rows.

        Always the value of ``einsum`` over ``ref[:n] - v`` row by row. A large set
        (a class most queries fall in; a model of two classes) is first ranked by
        ``|r|^2 - 2 r.v`` (one product, no copy of the set), and only the rows within
        the rounding bound of the smallest are subtracted exactly. Compiled
        (:func:`mlwarden.serve.kernels.prada_candidates`, once numba has built it), one
        pass in float64 over the set, no copy, finds the rows within the rounding bound
        of the smallest (:func:`_prada_bounds`), and only those are subtracted: the
        same value, 36.6 -> ~15 us a query at a full history of 10 classes.
        """
        kernels = _kernels()
        if kernels is not None and n >= 8 and v.dtype == np.float32 and ref.flags.c_contiguous:
            close = kernels.prada_candidates(ref, n, v, *_prada_bounds(v.size))
            if len(close):  # none: NaN somewhere; numpy below gives what it always gave
                diff = ref[close] - v
                return float(np.einsum("ij,ij->i", diff, diff).min())
        if n < self._BIG:
            diff = ref[:n] - v
            return float(np.einsum("ij,ij->i", diff, diff).min())
        sq = self._sq.get(label)
        if sq is None:
            sq = self._sq[label] = np.empty(len(ref), dtype=np.float32)
            sq[:n] = np.einsum("ij,ij->i", ref[:n], ref[:n])
        rank = sq[:n] - 2.0 * (ref[:n] @ v)
        # Both forms round in float32: each is within ~4 x size x 2^-24 of |r|^2 + |v|^2
        # of the true value, so the exact nearest row ranks within 16 x size x 2^-24.
        slack = 16 * v.size * 2.0**-24 * (float(sq[:n].max()) + float(v @ v))
        close = np.flatnonzero(rank <= rank.min() + slack)
        diff = ref[close] - v
        return float(np.einsum("ij,ij->i", diff, diff).min())

    def test(self) -> float | None:
        """Shapiro-Wilk W of the distances, or ``None`` when too few or tested recently.

        The test runs once ``test_every`` new queries have arrived (it costs about half a
        millisecond), so a flag comes at most ``test_every - 1`` queries late.
        """
        n = min(self._n_dists, len(self._dists))
        if n < self.config.min_queries or self._pending < self.config.test_every:
            return None
        self._pending = 0
        self.last_w = _w_sorted(_inliers(self._sorted_record(n), self.outliers))
        self.lowest_w = min(self.lowest_w, self.last_w)
        return self.last_w

    def _record(self, d: float) -> None:
        slot = self._n_dists % len(self._dists)
        if self._sorted is not None:
            if self._n_dists >= len(self._dists):
                self._out.append(float(self._dists[slot]))
            self._in.append(d)
            if len(self._in) > len(self._dists) // 4:  # cheaper to sort afresh
                self._sorted, self._in, self._out = None, [], []
        self._dists[slot] = d
        self._n_dists += 1

    def _sorted_record(self, n: int) -> np.ndarray:
        """``np.sort(self._dists[:n])``, by merging the changes into the last one (compiled:
        :func:`mlwarden.serve.kernels.merge_record`, one call instead of a dozen)."""
        kernels = _kernels()
        if kernels is not None and self._sorted is not None:
            done, merged = kernels.merge_record(self._sorted, np.array(self._out, dtype=np.float64),
                                                np.array(self._in, dtype=np.float64))  # fmt: skip
            if done and len(merged) == n:
                self._in, self._out = [], []
                self._sorted = merged
                return merged
        out, new = np.sort(self._out), np.sort(self._in)
        self._in, self._out = [], []
        if self._sorted is None or np.isnan(new).any() or np.isnan(out).any():
            self._sorted = np.sort(self._dists[:n])
            return self._sorted
        # each value that left, at its own position among equal ones
        at = np.searchsorted(self._sorted, out) + np.arange(len(out)) - np.searchsorted(out, out)
        kept = np.delete(self._sorted, at)
        self._sorted = np.insert(kept, np.searchsorted(kept, new), new)
        return self._sorted

    def flags(self, x: np.ndarray, label: int) -> bool:
        self.observe(x, label)
        w = self.test()
        return w is not None and w < self.config.delta

    def flags_many(self, vs: np.ndarray, labels: list[int]) -> list[bool]:
        """:meth:`flags` of each row of ``vs`` (B, dims) in turn: the same flags, W and state.

        With ``references: all`` and the compiled kernels, the sets are updated query
        after query first, each query's candidate rows copied out as differences
        (:func:`mlwarden.serve.kernels.prada_gather`); one ``einsum`` then measures the
        whole batch's, and the distances are recorded and tested in order. A set's
        update reads a distance only through the resend bar there, which the kernel's
        own sum decides wherever its rounding bound allows (else that query is measured
        at once, as :meth:`observe` does): 24-30 -> 12-17 us a query at 8 a batch
        (``benchmarks/gateway_monitor_cost.py``, digits).
        """
        kernels = _kernels()
        if kernels is None or not self.every or vs.dtype != np.float32 or vs.ndim != 2:
            return [self.flags(v, label) for v, label in zip(vs, labels, strict=True)]
        steps = self._gather(kernels, np.ascontiguousarray(vs), labels)
        out = []
        for label, (kind, d, grew) in zip(labels, steps, strict=True):
            if kind:  # 0: a resend, dropped
                self._pending += 1
                if kind == 2:
                    self._record(d)
                    if grew:
                        self._moment(label, d)
            w = self.test()
            out.append(w is not None and w < self.config.delta)
        return out

    def _gather(self, kernels: Any, vs: np.ndarray, labels: list[int]) -> list[list[Any]]:
        """The sets updated as :meth:`observe` updates them, query by query; per query
        ``[kind, distance, appended]``, kind 0: a resend, 1: its class's first, 2: measured."""
        size = vs.shape[1]
        ratio, slack = _prada_bounds(size)
        bar = self.resend * math.sqrt(size)
        lo, hi = bar * bar * (1 - 1e-9), bar * bar * (1 + 1e-9)
        buf = np.empty((4 * len(vs), size), dtype=np.float32)
        at, starts, owners = 0, [], []
        steps: list[list[Any]] = []
        link = (self._LINK * self.resend) ** 2 * size
        for j, label in enumerate(labels):
            v, ref = vs[j], self._sets.get(label)
            if ref is None:
                self._first(label, v)
                steps.append([1, 0.0, False])
                continue
            n = self._sizes[label]
            count, least = kernels.prada_gather(ref, n, v, ratio, slack, buf, at)
            ok = 0 <= count <= len(buf) - at
            span = (least / ratio - slack, least * ratio + slack) if ok else (-math.inf, math.inf)
            root, e = self._push(label, ref, n, v, link, span)
            if e is None and root is not None and span[1] < lo:
                steps.append([0, 0.0, False])  # surely a resend (of its rendered input)
                continue
            if root is not None or e is not None:  # a rendering, or measured to decide
                steps.append(self._step(label, ref, n, v, bar, root, e))
                continue
            # the exact (einsum) minimum lies within [least / ratio - slack, least * ratio + slack]
            if 0 <= count <= len(buf) - at and least * ratio + slack < lo:
                steps.append([0, 0.0, False])  # surely within the resend bar
                continue
            if 0 <= count <= len(buf) - at and least / ratio - slack > hi:
                starts.append(at)
                owners.append(j)
                at += count
                d = math.nan  # measured below, with the batch's other candidates
            else:
                d = math.sqrt(self._nearest(label, ref, n, v))
                if d < bar:
                    steps.append([0, 0.0, False])
                    continue
            steps.append([2, d, self._keep(label, ref, n, v, True)])
            if self._slot >= 0:
                self._placed(label, self._slot, v)
        if starts:
            least2 = np.minimum.reduceat(np.einsum("ij,ij->i", buf[:at], buf[:at]), starts)
            for j, e in zip(owners, least2.tolist(), strict=True):
                steps[j][1] = math.sqrt(e)
        return steps

    def _push(self, label: int, ref: np.ndarray, n: int, v: np.ndarray, link: float,
              span: tuple[float, float]) -> tuple[int | None, float | None]:  # fmt: skip
        """:meth:`_render` in :meth:`_gather`, the class's nearest squared distance known
        to lie in ``span``: the root, and that distance where it had to be measured."""
        rend = self._rend
        if rend is None:
            return self._render(v, math.inf), None
        k, probe = rend.nearest(v)
        if probe > link or probe > span[1]:
            return rend.add(v, -1), None  # an input of its own
        if probe <= span[0]:
            return rend.add(v, k), None  # surely nearer than the class's nearest
        e = self._nearest(label, ref, n, v)
        return rend.add(v, k if probe <= e else -1), e

    def _step(self, label: int, ref: np.ndarray, n: int, v: np.ndarray, bar: float,
              root: int | None, e: float | None) -> list[Any]:  # fmt: skip
        """:meth:`_gather`'s step for a query :meth:`_push` linked to a recent one or
        measured, as :meth:`observe` takes it (a rendering is measured past its input)."""
        e = self._nearest(label, ref, n, v) if e is None else e
        if math.sqrt(e) < bar:
            return [0, 0.0, False]
        if root is not None:
            past = self._past(label, ref, n, v, root, e)
            return [1, 0.0, False] if past is None else [2, math.sqrt(past), False]
        kept = self._keep(label, ref, n, v, True)
        if self._slot >= 0:
            self._placed(label, self._slot, v)
        return [2, math.sqrt(e), kept]

    def nbytes(self) -> int:
        sets = sum(r.nbytes for r in self._sets.values())
        rend = 0 if self._rend is None else self._rend.nbytes()
        rend += 0 if self.blinding is None else self.blinding.nbytes()
        record = 0 if self._sorted is None else self._sorted.nbytes  # the sorted record
        record += 32 * (len(self._in) + len(self._out))  # floats in and out since a test
        return sets + sum(q.nbytes for q in self._sq.values()) + self._dists.nbytes + rend + record

    def dump(self) -> dict[str, np.ndarray]:
        """The reference sets (float32, as kept: ``history x dims x 4`` bytes at most),
        their moments and thresholds, the distance record and the renderings
        (renders.py): after :meth:`load` the next query's W is the one it would have been."""
        labels = sorted(self._sets)
        big = [k for k in labels if k in self._sq]
        dims = next(iter(self._sets.values())).shape[1] if labels else 0
        rows = [(k, self._sizes[k], len(self._sets[k]), self._oldest.get(k, -1)) for k in labels]
        moments = [self._moments[k] + [self._thresholds[k]] for k in labels]
        out = {
            "classes": np.array(rows, dtype=np.int64).reshape(-1, 4),
            "refs": np.concatenate(
                [self._sets[k][:n] for k, n, _, _ in rows] + [np.zeros((0, dims), np.float32)]
            ),  # fmt: skip
            "sq": np.concatenate(
                [self._sq[k][: self._sizes[k]] for k in big] + [np.zeros(0, np.float32)]
            ),  # fmt: skip
            "big": np.array(big, dtype=np.int64),
            "moments": np.array(moments, dtype=np.float64).reshape(-1, 4),
            "dists": self._dists[: min(self._n_dists, len(self._dists))].copy(),
            "meta": np.array([self._n_dists, self._total, self._pending], dtype=np.int64),
            "w": np.array([math.nan if self.last_w is None else self.last_w, self.lowest_w]),
        }
        if self._rend is not None:
            out.update({f"rend.{k}": v for k, v in self._rend.dump().items()})
        if self.blinding is not None:  # blinding.py's window
            out.update({f"blind.{k}": v for k, v in self.blinding.dump().items()})
        return out

    def load(self, state: dict[str, np.ndarray]) -> bool:
        """Restore :meth:`dump`'s state into a fresh Prada; False (left fresh) when the
        stored record is of another history length."""
        n_dists, total, pending = (int(v) for v in state["meta"])
        dists, classes = state["dists"], state["classes"]
        if len(dists) != min(n_dists, self.config.history) or total > self.config.history:
            return False
        refs, at, sq, sq_at = state["refs"], 0, state["sq"], 0
        big = set(state["big"].tolist())
        for (label, n, cap, oldest), m in zip(
            classes.tolist(), state["moments"].tolist(), strict=True
        ):
            ref = self._sets[label] = np.empty((max(cap, n), refs.shape[1]), np.float32)
            ref[:n] = refs[at : at + n]
            at += n
            self._sizes[label] = n
            if label in big:
                self._sq[label] = np.empty(len(ref), np.float32)
                self._sq[label][:n] = sq[sq_at : sq_at + n]
                sq_at += n
            if oldest >= 0:
                self._oldest[label] = oldest
            self._moments[label], self._thresholds[label] = [int(m[0]), m[1], m[2]], m[3]
        self._dists[: len(dists)] = dists
        self._n_dists, self._total, self._pending = n_dists, total, pending
        self._sorted, self._in, self._out = None, [], []  # sorted afresh at the next test
        last, self.lowest_w = (float(v) for v in state["w"])
        self.last_w = None if math.isnan(last) else last
        rend = {k[5:]: v for k, v in state.items() if k.startswith("rend.")}
        if rend and self.renders and self.every and self.resend > 0:
            self._rend = Renders(rend["ring"].shape[1])
            if not self._rend.load(rend):
                self._rend = None
        blind = {k[6:]: v for k, v in state.items() if k.startswith("blind.")}
        if blind and self.blinding is not None:  # refused on another shape: left empty
            self.blinding.load(blind)
        return True


@functools.lru_cache(maxsize=8)
def _prada_bounds(dims: int) -> tuple[float, float]:
    """``(ratio, slack)`` for :func:`mlwarden.serve.kernels.prada_candidates`: every row
    whose ``einsum`` squared distance can equal the smallest one has a kernel distance
    within ``ratio`` times the kernel's smallest plus ``slack``.

    Both are float32 sums of ``dims`` non-negative terms, each a rounded difference
    squared and rounded, summed in any order: each is within a factor ``1 +- g`` of the
    exact value, ``g = (dims + 4) u / (1 - (dims + 4) u)``, ``u = 2^-24`` (Higham,
    *Accuracy and Stability of Numerical Algorithms*, 2002, ch. 3; a fused multiply-add
    only rounds less), and products below float32's smallest normal add at most
    ``dims * 2^-149`` each. Row ``j`` can be the einsum minimum only if its exact
    distance ``t_j (1 - g) - e <= t_min (1 + g) + e``; in kernel values that is within
    ``((1 + g) / (1 - g))^2`` plus the slack.
    """
    g = (dims + 4) * 2.0**-24 / (1 - (dims + 4) * 2.0**-24)
    ratio = ((1 + g) / (1 - g)) ** 2 * (1 + 1e-9)
    return ratio, 8.0 * dims * 2.0**-126 / (1 - g) ** 2


@functools.lru_cache(maxsize=32)
def _shapiro_coefficients(n: int) -> np.ndarray:
    """Royston's (1995, AS R94) approximate Shapiro-Wilk coefficients for ``n >= 6``.

    The same algorithm as ``scipy.stats.shapiro`` (Fortran ``swilk``), returned as the
    full antisymmetric vector for sorted data; cached because a key's distance record
    has the same length (``history``) once full, so each test is a sort and a dot (less
    its outliers, :func:`_inliers`: a few lengths near ``history``, 32 kept: 1.3 MB).
    """
    half = n // 2
    m = special.ndtri((np.arange(1, half + 1) - 0.375) / (n + 0.25))  # negative, ascending
    summ2 = 2.0 * float(m @ m)
    ssumm2 = math.sqrt(summ2)
    u = 1.0 / math.sqrt(n)
    a1 = -m[0] / ssumm2 + _horner((-2.706056, 4.434685, -2.07119, -0.147981, 0.221157, 0.0), u)
    a2 = -m[1] / ssumm2 + _horner((-3.582633, 5.682633, -1.752461, -0.293762, 0.042981, 0.0), u)
    fac = math.sqrt((summ2 - 2 * m[0] ** 2 - 2 * m[1] ** 2) / (1 - 2 * a1**2 - 2 * a2**2))
    a = -m / fac
    a[0], a[1] = a1, a2
    full = np.zeros(n)
    full[:half] = -a
    full[n - half :] = a[::-1]
    full.flags.writeable = False
    return full


def _horner(coefficients: tuple[float, ...], u: float) -> float:
    """``np.polyval(coefficients, u)`` for a float ``u``, bit for bit (the same Horner steps
    in IEEE doubles: ``y * u + c``, no fused multiply-add) without its array set-up, ~20x
    cheaper; a young key's record grows, so each test computes its coefficients anew."""
    y = 0.0
    for c in coefficients:
        y = y * u + c
    return y


def shapiro_w(x: np.ndarray) -> float:
    """The Shapiro-Wilk statistic W of a sample (Shapiro & Wilk 1965; Royston 1995).

    Equal to ``scipy.stats.shapiro(x).statistic`` (to ~1e-6) at a fraction of its cost
    for the sizes PRADA tests again and again: coefficients are cached per size. A
    sample with no spread gives 0 (as far from normal as it gets).

    Example::

        shapiro_w(np.random.default_rng(0).normal(size=500))   # close to 1
    """
    return _w_sorted(np.sort(np.asarray(x, dtype=np.float64)))


def _inliers(x: np.ndarray, k: float) -> np.ndarray:
    """The sorted ``x`` without its values ``k`` standard deviations or more from its
    mean (Juuti et al.'s code: ``abs(d - mean) < 3 * std``); ``x`` when ``k`` is 0 or
    fewer than 3 values would remain."""
    n = len(x)
    if k <= 0 or n < 3:
        return x
    mean = float(x.sum()) / n
    reach = k * math.sqrt(max(float(x @ x) / n - mean * mean, 0.0))
    lo = int(np.searchsorted(x, mean - reach, "right"))
    hi = int(np.searchsorted(x, mean + reach, "left"))
    return x[lo:hi] if hi - lo >= 3 else x


def _w_sorted(x: np.ndarray) -> float:
    """:func:`shapiro_w` of a sample ``x`` already sorted ascending (float64)."""
    n = len(x)
    if n < 3:
        raise ValueError("the Shapiro-Wilk test needs at least 3 values")
    if x[-1] == x[0]:
        return 0.0
    if n < 6:  # another polynomial for tiny samples: scipy has it, and it is cheap there
        return float(stats.shapiro(x).statistic)
    a = _shapiro_coefficients(n)
    xc = x - x.mean()
    num = float(a @ xc)
    return num * num / (_norm2(n) * float(xc @ xc))


@functools.lru_cache(maxsize=8)
def _norm2(n: int) -> float:
    a = _shapiro_coefficients(n)
    return float(a @ a)


def _queued(state: _KeyState) -> int:
    """Bytes of the raw inputs waiting in the key's queue (:meth:`Monitor.submit`)."""
    return sum(p[0].nbytes for p in state.pending)


def _digest(x: np.ndarray) -> int:
    return int.from_bytes(hashlib.blake2b(x.tobytes(), digest_size=8).digest(), "little")


def _draws(secret: bytes) -> np.random.Generator:
    """The gateway's generator of the spread rule's draws (:meth:`Spread.drawn`), seeded
    from its ``secret`` (a benchmark that fixes the secret draws the same queries)."""
    seed = hashlib.blake2b(b"spread draws" + secret, digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(seed, "little"))


class _Recent:
    """The digests of a key's last ``size`` distinct inputs (exact-repeat filter)."""

    def __init__(self, size: int) -> None:
        self._set: set[int] = set()
        self._order: deque[int] = deque()
        self.size = size

    def seen(self, digest: int) -> bool:
        """Whether ``digest`` is remembered; remember it if not."""
        if digest in self._set:
            return True
        self._set.add(digest)
        self._order.append(digest)
        if len(self._order) > self.size:
            self._set.discard(self._order.popleft())
        return False


class _KeyState:
    def __init__(
        self,
        config: Detection,
        dims: int,
        silence: float,
        sim_dims: int,
        resend: float,
        prada_every: bool | None = None,
        binary: bool = False,
        frame: tuple[int, ...] | None = None,
    ) -> None:
        self.recent = _Recent(max(config.similarity.history, config.blacklight.history))
        bl = config.blacklight
        self.blacklight = Blacklight(bl, silence, frame) if bl.enabled else None
        self.similarity = (
            Similarity(config.similarity, sim_dims, binary) if config.similarity.enabled else None
        )
        if self.similarity is not None:  # serve/approach.py reads the counted neighbours
            self.similarity.keep = config.approach.enabled
        self.prada = Prada(config.prada, resend, prada_every) if config.prada.enabled else None
        # a search diluted among benign queries: reads the similarity history, adds none
        dil = config.dilution
        self.dilution = (
            Dilution(dil, config.similarity.radius)
            if dil.enabled and self.similarity is not None
            else None
        )
        # the attacker who knows similarity.projection: the residual off its axes
        self.residual = (
            Similarity(config.similarity.model_copy(update={"radius": dil.residual}), dims)
            if self.dilution is not None and dil.residual and config.similarity.projection
            else None
        )
        self.residual_test = (
            Residual(dil, config.similarity.radius) if self.residual is not None else None
        )
        # the model's answers to the similarity history's rows (serve/answers.py)
        self.answers = (
            Answers(config.similarity.history)
            if (config.answers.spread or config.approach.enabled) and self.similarity is not None
            else None
        )
        self.lock = threading.Lock()
        self.dims = dims
        self.unsaved = 0
        self.seq = 0  # queries of this key so far, repeats included
        # distinct queries not analysed yet: (input, predicted class, sequence number,
        # log-odds of that class: NaN without the model's scores)
        self.pending: list[tuple[np.ndarray, int, int, float]] = []
        # text: each pending query's typing chain (TypingChain.step: on it?, its number),
        # and the chain of each ring slot (-1: none known)
        self.owns: list[tuple[bool, int]] = []
        self.typing = TypingChain() if binary else None
        self.chains = np.full(config.similarity.history, -1, np.int64) if binary else None
        # alerts waiting on a small cloud (stationary.settle), and those that stood since
        # the last analysis: kind -> sequence numbers
        self.held: list[Cloud] = []
        self.late: dict[str, list[int]] = {}
        # the secret sketches of the similarity history's rows (serve/sketch.py), slot for
        # slot; made on the first batch of inputs that have more values than max_dims
        self.sketch: Ring | None = None
        # audio: the key's last query, which the next may continue (Monitor._streamed)
        self.tail: np.ndarray | None = None
        # the spread of the key's last distinct queries (serve/spread.py), made on first use
        self.spread: Spread | None = None
        # its last distinct queries off the benign rows' manifold (serve/manifold.py, tables)
        mf = config.manifold
        self.manifold = Window(mf, dims) if mf.enabled and mf.axes is not None else None

    def nbytes(self) -> int:
        """Memory the key holds, bytes: every detector's arrays, the sketches, the queue
        of queries not analysed yet, the waiting alerts' clouds and the repeat filter
        (~120 bytes a digest: its int, set slot and deque slot); within ~3% of every array
        reachable from the key plus that filter (tests/serve/test_serve_memory.py)."""
        parts = (self.blacklight, self.similarity, self.prada, self.residual, self.answers,
                 self.spread, self.manifold)  # fmt: skip
        arrays = [self.chains, self.tail]
        arrays += [a for c in self.held for a in (c.q, c.rows, c.ids, c.far, c.far_ids)]
        queue = _queued(self) + 100 * len(self.pending)  # each with its tuple and ints
        held = sum(a.nbytes for a in arrays if a is not None) + queue
        held += self.sketch.nbytes if self.sketch is not None else 0
        return (
            len(self.recent._order) * 120 + held + sum(p.nbytes() for p in parts if p is not None)
        )


# the _KeyState fields whose state is one ``dump() -> dict`` / ``load(dict) -> bool`` pair,
# stored under their name as the blob's prefix; a new per-key detector adds its name here
# (one made lazily also gets a line in Monitor._load_parts' factories)
_PARTS = ("blacklight", "prada", "spread", "manifold")


def _parts(state: _KeyState) -> dict[str, Any]:
    """A key's detectors whose state is one ``dump`` / ``load`` pair, by blob prefix."""
    parts = {name: getattr(state, name, None) for name in _PARTS}
    return {name: part for name, part in parts.items() if part is not None}


def _dump_clouds(held: list[Cloud]) -> dict[str, np.ndarray]:
    """The waiting alerts' clouds (:class:`~mlwarden.serve.stationary.Cloud`), each under
    ``cloud.<i>.``; ``clouds``: per cloud its number, sequence number and kinds;
    ``clouds.around``: its later queries near it so far (``Cloud.around``)."""
    out = {"clouds": np.array([[c.gid, c.seq] for c in held], dtype=np.int64).reshape(-1, 2),
           "clouds.kinds": np.array([",".join(c.kinds) for c in held], dtype="U64"),
           "clouds.around": np.array([c.around for c in held], dtype=np.int64)}  # fmt: skip
    for i, c in enumerate(held):
        out.update({f"cloud.{i}.q": c.q, f"cloud.{i}.rows": c.rows, f"cloud.{i}.ids": c.ids})
        if c.far is not None and c.far_ids is not None:
            out.update({f"cloud.{i}.far": c.far, f"cloud.{i}.far_ids": c.far_ids})
    return out


def _load_clouds(arrays: dict[str, np.ndarray], shift: int) -> list[Cloud]:
    """:func:`_dump_clouds`'s clouds, renumbered as the restored history (``shift``)."""
    held = []
    kinds = arrays["clouds.kinds"].tolist()
    # a blob without the counts: each as if the key stayed near (it stands at HOLD)
    around = arrays.get("clouds.around", np.full(len(kinds), LEFT, np.int64)).tolist()
    for i, ((gid, seq), kind) in enumerate(zip(arrays["clouds"].tolist(), kinds, strict=True)):
        far, far_ids = arrays.get(f"cloud.{i}.far"), arrays.get(f"cloud.{i}.far_ids")
        held.append(Cloud(gid - shift, arrays[f"cloud.{i}.q"], arrays[f"cloud.{i}.rows"],
                          arrays[f"cloud.{i}.ids"] - shift, seq, tuple(kind.split(",")) if kind else (),
                          far, None if far_ids is None else far_ids - shift, int(around[i])))  # fmt: skip
    return held


def _dump_pending(state: _KeyState) -> dict[str, np.ndarray]:
    """The key's queries queued for its next analysis (at most ``batch - 1``)."""
    if not state.pending:
        return {}
    return {
        "pending.xs": np.array([p[0] for p in state.pending]),
        "pending.meta": np.array([[p[1], p[2]] for p in state.pending], dtype=np.int64),
        "pending.scores": np.array([p[3] for p in state.pending], dtype=np.float64),
        "pending.owns": np.array(state.owns, dtype=np.int64).reshape(-1, 2),
    }


def _load_pending(state: _KeyState, arrays: dict[str, np.ndarray]) -> None:
    """:func:`_dump_pending`'s queue, ahead of the key's next queries."""
    if "pending.xs" not in arrays:
        return
    meta, scores = arrays["pending.meta"].tolist(), arrays["pending.scores"].tolist()
    xs = arrays["pending.xs"].astype(np.float32)
    state.pending = [(np.ascontiguousarray(x), int(m[0]), int(m[1]), float(sc))
                     for x, m, sc in zip(xs, meta, scores, strict=True)] + state.pending  # fmt: skip
    owns = [(bool(a), int(b)) for a, b in arrays["pending.owns"].tolist()]
    state.owns = owns + state.owns


class Monitor:
    """Per-key detectors; :meth:`inspect` returns the kinds of alert a request raised.

    An input identical to one the key sent recently (a retry, or a benign client
    drawing from a fixed set) is not fed to any detector: repeating a query teaches an
    attacker nothing, so it is not probing, and ``block`` never fires on a retry.

    A key whose client legitimately resends one input with fresh noise (test-time
    augmentation, client-side smoothing) looks, query for query, like the start of a
    noisy random search around that input, and is flagged after 5-50 such copies
    (Blacklight's chain at small noise, similarity's ``min_neighbours`` at larger):
    the gateway cannot tell them apart and fails closed. Its operator grants that key
    an allowance instead (``keys.NAME.near_duplicates: N`` in the config, kept in
    :attr:`allowances`): N replaces the similarity threshold and Blacklight's chain
    for that key only (N above 64 switches Blacklight off for it, since matches are
    counted over 64 queries; PRADA still runs). Every other key is unaffected.

    Args:
        config: the detection section of the gateway config.
        shape: the shape of one input, when declared (sizes the reduced vectors).
        scale: the width of the declared input range (distances are in its units).
        modality: ``input.modality``; ``"audio"`` summarises inputs with
            :func:`reduce_audio` instead of :func:`reduce`.
        secret: the gateway's sketch secret (:mod:`mlwarden.serve.sketch`; None: a fresh
            one, for this process only; the gateway keeps its own in the state database).
    """

    def __init__(
        self,
        config: Detection,
        shape: list[int] | None = None,
        scale: float = 1.0,
        modality: str = "tensor",
        secret: bytes | None = None,
    ) -> None:
        self.config = config
        self.scale = scale
        # tabular rows in raw units: each feature's own spread, not one input.range
        self._centre, self._spread = _feature_scale(config, shape)
        if self._spread is not None:
            self.scale = 1.0  # rows arrive in units of each feature's spread already
        # audio: a log-energy envelope, since block means flatten a waveform to ~0
        self._reduce = reduce_audio if modality == "audio" else reduce
        self._reduce_many = reduce_audio_many if modality == "audio" else reduce_many
        # text: MinHash bits (0 or one scale), counted by Hamming distance (Similarity._bits_of)
        self.text = modality == "text"
        # PRADA's renderings (renders.py) on frames of at least 16 x 16: on 8 x 8 digits PRADA
        # is what flags query blinding, and its bursts between natural digits would pass
        self.pictures = (shape is not None and len(shape) >= 2 and min(shape[-2:]) >= 16
                         and modality not in ("audio", "text"))  # fmt: skip
        # PRADA's record tested without its outliers (config.py Prada.outliers): image keys
        self.images = (shape is not None and len(shape) >= 2
                       and modality not in ("audio", "text"))  # fmt: skip
        # query blinding (serve/blinding.py): image keys of frames of at least 8 x 8
        blind = config.prada.blinding and modality == "tensor" and shape is not None
        self.blind_frame = tuple(shape) if blind and usable(shape) else None  # type: ignore[arg-type]
        # still balls (one clip resent with fresh noise) are resends: serve/stationary.py
        stat = config.similarity.stationary
        self.stationary = True if stat is None else stat  # on for every input by default
        # a resend's own cloud: its copies within 0.6 of the radius (stationary.TIGHT),
        # no farther apart than the radius; on audio's log-energy envelopes fresh noise
        # alone spreads them ~0.9 of the radius (pauses become hiss): the whole ball
        self.still_bar = None if modality == "audio" else TIGHT
        # audio: a ball that moves is judged again on the query's copies within TIGHT of the
        # radius (stationary._apart): two nearby clips resent one after the other move it
        self.still_inner = TIGHT if modality == "audio" else None
        # alerts on clouds too small to judge wait (stationary.settle) on tensors only:
        # measured there; on audio a search's steps are each other's copies (see _moving)
        self.hold = modality not in ("audio", "text")
        # and there a cloud of re-encodings (brightness, shifts, JPEG: ~2 radii) is a resend
        self.wide = WIDE if self.hold else None
        # and a cloud is excused only when still in a secret sketch of the raw input too
        # (serve/sketch.py); not on text, whose MinHash bits are the input's own view
        secret = secret or new_secret()
        self.sketch = Sketch(secret) if stat_sketch(config, modality) else None
        # which queries' neighbourhoods the spread rule judges (Spread.drawn), drawn from
        # the secret: a client cannot time its search's queries between them
        self.draws = _draws(secret)
        self._lit_cache: dict[tuple[int, ...], tuple[Sketch, np.ndarray]] = {}  # _lit_sketch
        self._origins: dict[int, np.ndarray] = {}  # _origin
        # a key working on one input (serve/spread.py): tensors, not audio envelopes or text,
        # and reduced vectors of MIN_VALUES or more values only (where the white-noise gate
        # tells a noisy search from one class's natural rows: on tables' few features it
        # cannot, and benign loggers and rescoring clients were flagged)
        self.narrow = config.spread.enabled and modality == "tensor"
        # tables (rows of fewer than MIN_VALUES values): the similarity alerts count
        # distinct inputs (serve/copies.py); an excuse of resends, off with the still-ball rule
        self.table = (modality == "tensor" and shape is not None and len(shape) == 1
                      and shape[0] < MIN_VALUES and self.stationary)  # fmt: skip
        # images (a frame of at least 16 x 16 last): a copy shifted by a pixel or two (a
        # crop) is the same input; own clouds are gathered up to a shift (stationary.aligned).
        # Not on 8 x 8 digits, where 2 pixels are a quarter of the frame: a noiseless search
        # there went unflagged in 300 queries in 1 of 5 runs (long benchmark; main: 5/5)
        frame = shape is not None and len(shape) >= 2 and min(shape[-2:]) >= 16
        self.frame = tuple(shape) if self.hold and frame and shape is not None else None
        # image keys (8 x 8 digits too): a Blacklight match that is its owner moved by a
        # pixel or two and nothing else adds no link to a chain (shifted_copy)
        pic = modality == "tensor" and shape is not None and len(shape) >= 2
        self.moved_frame = (
            tuple(shape) if pic and shape is not None and min(shape[-2:]) > SHIFT else None
        )
        bl = config.blacklight
        # audio: windows within one bin of zero (pauses) are not hashed; see _fingerprint
        default_gate = bl.quantization if modality == "audio" else 0.0
        self.silence = default_gate if bl.silence is None else bl.silence
        # audio: a stream's overlapping windows continue each other (serve/stream.py)
        self.stream = modality == "audio"
        self.dims = min(math.prod(shape), config.similarity.max_dims) if shape else None
        # PRADA's resend bar (RMS per value): half the similarity radius, where a search's
        # noisy steps sit; on text the radius itself, the shingle Jaccard ``near`` (0.6 by
        # default): a tweet and a copy with one typo share 0.91 of their shingles (median;
        # 0.82 at the 10th percentile), distinct tweets' nearest 0.11 (0.38 at the 99th)
        radius = config.similarity.radius
        half = radius if modality == "text" else radius / 2
        self.resend = half if config.prada.resend is None else config.prada.resend
        refs = config.prada.references
        self.prada_every = (modality not in ("text", "audio")) if refs is None else refs == "all"
        self._mean: np.ndarray | None = None
        self._axes: np.ndarray | None = None
        self._projection = 0  # digest of the projection: a stored history must match it
        proj = config.similarity.projection
        if proj is not None:
            if self.dims != len(proj.mean):
                from mlwarden.core.errors import UserError

                raise UserError(
                    f"detection.similarity.projection takes {len(proj.mean)} values, but the "
                    f"reduced input has {self.dims or 'an undeclared number of'}; declare "
                    "input.shape and calibrate again ('mlwarden gateway calibrate')"
                )
            self._mean = np.asarray(proj.mean, dtype=np.float32)
            self._axes = np.ascontiguousarray(np.asarray(proj.components, dtype=np.float32).T)
            self._projection = _digest(np.concatenate([self._mean, self._axes.ravel()]))
        if self._centre is not None and self._spread is not None:
            # histories measured in other units are not comparable either
            self._projection ^= _digest(np.concatenate([self._centre, self._spread]))
        self._keys: dict[str, _KeyState] = {}
        self._guard = threading.Lock()
        # block must refuse the flagged query itself, so it analyses every request at once
        self.batch = config.batch or (1 if config.action == "block" else 8)
        #: key -> near-duplicate allowance (similarity threshold and Blacklight chain)
        self.allowances: dict[str, int] = {}
        #: key -> its declared workload (``keys.NAME.profile``: serve/profiles.py)
        self.profiles: dict[str, str] = {}
        #: one search over several keys: a ring of every key's reduced queries (crosskey.py)
        sim, ck = config.similarity, config.crosskey
        ring = sim.model_copy(update={"history": ck.window, "window": ck.window})
        self.crosskey: CrossKey | None = None
        if ck.enabled and sim.enabled:
            self.crosskey = CrossKey(ck, sim.radius, sim.min_neighbours,
                                     lambda d: Similarity(ring, d, self.text), self._projection,
                                     _kernels)  # fmt: skip

    def use_secret(self, secret: bytes) -> None:
        """Measure sketches under the gateway's stored ``secret`` (before any key's state
        is loaded: rings stored under another secret are not restored)."""
        if self.sketch is not None:
            self.sketch = Sketch(secret)
        self.draws = _draws(secret)

    @property
    def enabled(self) -> bool:
        c = self.config
        return c.blacklight.enabled or c.prada.enabled or c.similarity.enabled

    def _state(self, key: str, dims: int) -> _KeyState:
        with self._guard:
            state = self._keys.get(key)
            if state is None:
                sim_dims = dims if self._axes is None else self._axes.shape[1]
                state = self._keys[key] = _KeyState(
                    self.config, dims, self.silence, sim_dims, self.resend, self.prada_every,
                    self.text, self.moved_frame)  # fmt: skip
                if state.prada is not None:
                    self._equip(state.prada, dims)
            return state

    def summarise(self, x: np.ndarray) -> np.ndarray:
        """One input as the detectors' reduced vector (:func:`reduce` or :func:`reduce_audio`)."""
        return self._reduce(self.standardise(np.asarray(x)[None])[0],
                            self.config.similarity.max_dims, self.scale)  # fmt: skip

    def standardise(self, xs: np.ndarray) -> np.ndarray:
        """A batch ``xs`` (B, ...) as every detector sees it: ``(x - centre) / spread`` per
        feature with ``detection.feature_scale``, else unchanged (the same array)."""
        if self._centre is None or self._spread is None:
            return xs
        flat = np.asarray(xs, dtype=np.float32).reshape(len(xs), -1)
        return ((flat - self._centre) / self._spread).reshape(np.shape(xs))

    def project(self, v: np.ndarray) -> np.ndarray:
        """A reduced vector as the similarity detector measures it (``projection``, if set)."""
        if self._axes is None or self._mean is None:
            return v
        return (v - self._mean) @ self._axes

    def inspect(self, key: str, x: np.ndarray, labels: np.ndarray,
                probs: np.ndarray | None = None, texts: Any = None) -> dict[str, list[int]]:  # fmt: skip
        """Feed a batch of queries ``x`` (N, ...) with their predicted ``labels`` (N,)
        and, optionally, the model's scores ``probs`` (N, classes): with
        ``detection.answers.spread``, alerts on balls whose answers stay put drop
        (:mod:`mlwarden.serve.answers`; without scores they stand). On text, ``texts``:
        the N texts ``x`` are the features of (typing chains:
        :class:`mlwarden.serve.text.TypingChain`; None: every query counted in full).

        Returns detector kind -> indices of the flagged inputs (kinds with none left out).
        The batch is analysed at once, with the alerts of N one-query calls.
        """
        state = self._state(key, self._dims(x))
        with state.lock:
            self._queue(state, x, labels, probs, texts)
            return self._drain(key, state, state.seq - len(x))

    def submit(self, key: str, x: np.ndarray, labels: np.ndarray,
               probs: np.ndarray | None = None, texts: Any = None) -> dict[str, list[int]]:  # fmt: skip
        """:meth:`inspect`, deferred until the key has :attr:`batch` new queries.

        ``batch`` is ``detection.batch``: by default 8, and 1 with ``action: block``
        (a block must refuse the flagged query itself, not one up to 7 queries later).

        The gateway's request path: distinct queries wait in the key's queue, and the
        request that fills it analyses the whole queue at once (one pass over each
        history instead of one per query; at the defaults about a third of the CPU). A
        query is compared with exactly what :meth:`inspect` compares it with, so the
        alerts are the same, only later: up to ``batch - 1`` queries of the same key.
        Indices are relative to ``x``: negative ones flag this key's earlier queries
        (-1: the query just before ``x[0]``), also from :meth:`inspect`: an alert that
        waited on a small cloud (:func:`mlwarden.serve.stationary.settle`) comes up to
        250 distinct queries late. Nothing runs off the request path, so
        nothing can pile up: a key has at most ``batch - 1`` queries waiting, and the
        queue is analysed early once its inputs reach ``QUEUE_BYTES`` (1 MiB: large
        inputs; the same alerts, sooner).
        """
        state = self._state(key, self._dims(x))
        with state.lock:
            self._queue(state, x, labels, probs, texts)
            # a full batch, or queued inputs of QUEUE_BYTES (large inputs: the queue holds
            # copies of the raw inputs, up to batch - 1 of them a key)
            if len(state.pending) < self.batch and _queued(state) < QUEUE_BYTES:
                return {}
            return self._drain(key, state, state.seq - len(x))

    def flush(self, key: str) -> dict[str, list[int]]:
        """Analyse the key's waiting queries now (at shutdown); indices as :meth:`submit`."""
        state = self._keys.get(key)
        if state is None:
            return {}
        with state.lock:
            return self._drain(key, state, state.seq)

    def _dims(self, x: np.ndarray) -> int:
        return self.dims or min(math.prod(x.shape[1:]), self.config.similarity.max_dims)

    def _queue(self, state: _KeyState, x: np.ndarray, labels: np.ndarray,
               probs: np.ndarray | None, texts: Any = None) -> None:  # fmt: skip
        """Queue the inputs that are not exact repeats of the key's recent ones."""
        queued = len(state.pending)
        scores = (scores_of(probs, labels) if probs is not None and state.answers is not None
                  else [math.nan] * len(x))  # fmt: skip
        chain = state.typing if texts is not None else None
        for i, (xi, li) in enumerate(zip(x, labels, strict=True)):
            # a copy: a row of the request's batch is a view that would keep the whole
            # batch (up to max_batch inputs) alive while it waits in the queue
            xi = np.array(xi, dtype=np.float32, order="C")
            step = chain.step(str(texts[i])) if chain is not None else (False, -1)
            if not state.recent.seen(_digest(xi)):
                state.pending.append((xi, int(li), state.seq + i, scores[i]))
                state.owns.append(step)
        state.unsaved += len(state.pending) - queued
        state.seq += len(x)

    def _drain(self, key: str, state: _KeyState, origin: int) -> dict[str, list[int]]:
        """Run the detectors on the queue; flagged queries as sequence numbers - ``origin``."""
        if not state.pending:
            return {}
        pending, state.pending = state.pending, []
        owns, state.owns = state.owns, []
        xs = np.array([p[0] for p in pending])  # np.stack's values, a third of its cost
        found: dict[str, list[int]] = {}
        labels = [p[1] for p in pending]
        seqs = [p[2] for p in pending]
        allowance = self.allowances.get(key)
        scores = np.array([p[3] for p in pending], dtype=np.float32)
        for kind, hits in self._detect(state, xs, labels, allowance, seqs, key, scores,
                                       owns).items():  # fmt: skip
            if hits:
                found[kind] = [seqs[j] - origin for j in hits]
        late, state.late = state.late, {}
        for kind, seen in late.items():  # waiting alerts that stood (stationary.settle)
            found[kind] = sorted(found.get(kind, []) + [s - origin for s in seen])
        return found

    def _detect(self, state: _KeyState, xs: np.ndarray, labels: list[int], allowance: int | None,
                seqs: list[int], key: str = "", scores: np.ndarray | None = None,
                owns: list[tuple[bool, int]] | None = None) -> dict[str, list[int]]:  # fmt: skip
        """Each detector's flagged positions in ``xs``, a key's distinct queries in order
        (``seqs``: their sequence numbers, for waiting alerts that stand later; ``scores``:
        the log-odds of their ``labels``, NaN unknown; ``owns``: on a typing chain within
        its budget, and its number: :meth:`_typed`)."""
        c = self.config
        need = allowance or c.similarity.min_neighbours
        chain = allowance or c.blacklight.chain
        out: dict[str, list[int]] = {}
        xs = self.standardise(xs)
        if state.blacklight is not None:
            streamed = self._streamed(state, xs)  # audio windows of one stream (stream.py)
            _, matches = state.blacklight.observe_many(xs, streamed)
            out["blacklight"] = [j for j, r in enumerate(matches) if r >= chain]
        if state.manifold is not None and allowance is None:  # tables off their data's manifold
            out["manifold"] = state.manifold.observe_many(
                xs / self.scale if self.scale != 1 else xs
            )
        if state.similarity is None and state.prada is None:
            return out
        # reduce() of each, at once: the same values, row for row
        vs = self._reduce_many(xs, c.similarity.max_dims, self.scale)
        heard = self._heard(vs)
        if state.similarity is not None and len(heard):
            # the whole history's bar: never below the allowance (a granted client's copies)
            long_need = max(c.similarity.long_neighbours or math.inf, allowance or 0)
            # without a whole-history bar only the window decides: scan only the window
            dil = state.dilution
            whole = long_need != math.inf or dil is not None
            hvs = vs if len(heard) == len(vs) else vs[heard]  # all but silent audio
            pvs = self.project(hvs)
            # dilution and the still-ball rule read what the batch overwrites
            before = Dilution.snapshot(state.similarity, len(pvs))
            sk = self._sketched(state, xs if len(heard) == len(vs) else xs[heard])
            old = self._answer(state, before, heard, labels, scores)
            owns = owns or [(False, -1)] * len(pvs)
            typed = self._typed(state, pvs, owns) if state.chains is not None else None
            recent, total = state.similarity.observe_many(pvs, whole)
            if typed is not None:  # text typed on: a chain's prefixes are one text
                on = [j for j, (go, _) in enumerate(owns) if go]
                recent, total = recent.copy(), total.copy()
                total[on] += typed[on] - recent[on]
                recent[on] = typed[on]
                quiet = {j for j in on if recent[j] < need}
                out["blacklight"] = [j for j in out.get("blacklight", []) if j not in quiet]
            if state.answers is not None and c.approach.enabled:  # answers walking down
                found_near = approach(state.similarity, state.answers, total, before.first,
                                      c.approach.bar, c.approach.min_rows)  # fmt: skip
                out["approach"] = [int(heard[j]) for j in found_near]
            if self.crosskey is not None:  # every key's queries together (crosskey.py)
                out["crosskey"] = [int(heard[j]) for j in self.crosskey.observe(key, pvs, recent)]
            counts = enumerate(zip(recent.tolist(), total.tolist(), strict=True))
            found = {"similarity": [j for j, (r, t) in counts if r >= need or t >= long_need]}
            # the whole history's alerts (a thin ball, a count over 10,000 queries), and the
            # window's when its count is spread over it, stand only on a moving ball: a few
            # inputs resent with fresh noise are still (delaying a search concentrated in
            # time, the window's own prey, is what similarity.stationary decides)
            if dil is not None:
                found.update(self._diluted(state, dil, hvs, pvs, total, before, allowance))
            chains = self.stationary and bool(out.get("blacklight"))
            sim = state.similarity
            held: list[Cloud] = []
            lit = self._lit(key, pvs.shape[1])
            vet = self._vet(state, sk, before.first, self._lit_sketch(key, xs))
            # each query judged once for _narrow and _moving (its views built once)
            judge = self._judge(sim, pvs, before, lit, vet, xs, heard)
            if self.narrow and allowance is None and pvs.shape[1] >= MIN_VALUES:
                found["spread"] = self._narrow(state, pvs, before, judge)
            if found["similarity"] or found.get("dilution") or chains:
                only = None if self.stationary else self._slow(sim, pvs, recent, need, before)
                found, held = self._moving(sim, pvs, found, before, heard, out, self.still_bar,
                                           only, self.wide, lit, vet,
                                           judge=judge if only is None else None)  # fmt: skip
                if self.text and self.stationary and found["similarity"]:
                    found["similarity"] = self._spread_out(sim, pvs, found["similarity"],
                                                           recent, need, before)  # fmt: skip
                if old is not None and state.answers is not None and c.answers.spread:
                    found = self._steady(state.answers, sim, pvs, found, before, old)
            if self.table and found["similarity"]:  # a small table re-read (serve/copies.py)
                found["similarity"] = self._copied(sim, pvs, found["similarity"], total,
                                                   need, long_need, before.first)  # fmt: skip
            out.update({k: [int(heard[j]) for j in v] for k, v in found.items()})
            if held or state.held:
                self._hold(state, sim, pvs, before, held, heard, out, seqs, lit, vet)
            if sk is not None and state.sketch is not None:
                state.sketch.put(sk, before.first)
        if state.prada is not None:
            every = len(heard) == len(vs)
            hv = vs if every else vs[heard]  # the queries heard (not exact repeats)
            hits = state.prada.flags_many(
                hv, labels if every else [labels[j] for j in heard.tolist()]
            )
            out["prada"] = [int(heard[i]) for i, hit in enumerate(hits) if hit]
            if state.prada.blinding is not None and self.profiles.get(key) != "camera":
                hx = xs if every else xs[heard]
                out["blinding"] = self._blinded(state.prada.blinding, hx, hv, heard)
        return out

    def _blinded(self, blind: Blinding, hx: np.ndarray, hv: np.ndarray,
                 heard: np.ndarray) -> list[int]:  # fmt: skip
        """Positions (in the request: ``heard``) of the queries heard, ``hx`` with their
        reduced vectors ``hv``, that :data:`~mlwarden.serve.blinding.INPUTS` or more other
        inputs of the key's recent queries render (query blinding: serve/blinding.py)."""
        frame = self.blind_frame
        assert frame is not None
        counts = blind.observe_many(views(hx, frame), hv)
        return [int(heard[i]) for i, c in enumerate(counts) if c >= INPUTS]

    def _narrow(self, state: _KeyState, pvs: np.ndarray, before: Any,
                judge: Judge) -> list[int]:  # fmt: skip
        """Positions of ``pvs`` (just added to the similarity history) whose key's last
        ``spread.window`` distinct queries spread less than ``spread.bar``, or (every
        ``spread.STRIDE``-th query) less than ``spread.net`` of that above their noise floor
        (:mod:`mlwarden.serve.spread`), or (one query in ``STRIDE``, drawn:
        :meth:`~mlwarden.serve.spread.Spread.drawn`) whose neighbourhood is such a window
        (:func:`~mlwarden.serve.spread.crowded`), less those whose own cloud of copies is still
        (one input resent: :func:`mlwarden.serve.stationary.still`, as the similarity
        alerts are judged; a cloud too small to judge is left for the next query, whose
        window is as narrow) and, on inputs of ``MIN_VALUES`` values or more, those whose
        window's variation spans few directions (:func:`mlwarden.serve.spread.white`: a
        few natural inputs, not noise). ``judge``: the batch's still-ball verdicts
        (:meth:`_judge`)."""
        if state.spread is None:
            state.spread = Spread(self.config.spread.window, pvs.shape[1])
        sp, c = state.spread, self.config.spread
        prev = sp.rows() if len(pvs) > 1 else None  # each position's own window, below
        spreads = sp.observe_many(pvs)
        rows = lambda: sp.rows() if prev is None else np.concatenate([prev, pvs])  # noqa: E731
        net = None if c.net is None else c.net * c.bar
        low = narrow(spreads, rows, sp.seen, sp.window, c.bar, net)
        sim = state.similarity
        if c.near is not None and sim is not None:  # the query's neighbourhood (a batch's
            # later queries are in the ring already: a batch is one request's inputs)
            due = [j for j in sp.drawn(len(pvs), self.draws) if j not in low]
            near = lambda j: sim.nearest(pvs[j], sp.window, int(c.near or 0))  # noqa: E731
            low = sorted(low + crowded(near, due, spreads, sp.window, c.bar, net))
        if not low or not self.stationary or state.similarity is None:
            return low
        resends, small = judge(low)
        return [j for j in low if j not in resends and j not in small]

    def _judge(self, sim: Similarity, pvs: np.ndarray, before: Any, lit: np.ndarray | None,
               vet: Vet | None, xs: np.ndarray, heard: np.ndarray) -> Judge:  # fmt: skip
        """The still-ball verdicts (:func:`mlwarden.serve.stationary.still`, at the
        monitor's ``still_bar`` and ``wide``, with the batch's :meth:`_views` of ``xs``,
        built on the first verdict asked for) of positions of the batch ``pvs``, each
        position judged once: the spread rule (:meth:`_narrow`) and the similarity alerts
        (:meth:`_moving`) ask about the same queries with the same history, and a query's
        verdict is its own (what it saw alone), whoever else is judged with it."""
        resends: set[int] = set()
        small: dict[int, Cloud] = {}
        judged: set[int] = set()
        views: list[Views] = []

        def judge(cand: list[int]) -> tuple[set[int], dict[int, Cloud]]:
            new = [j for j in cand if j not in judged]
            if new:
                if not views:
                    views.append(self._views(xs, pvs, heard))
                r, w = still(sim, pvs, new, before, self.still_bar, self.wide, lit, vet,
                             *views[0], inner=self.still_inner)  # fmt: skip
                resends.update(r)
                small.update(w)
                judged.update(new)
            return {j for j in cand if j in resends}, {j: small[j] for j in cand if j in small}

        return judge

    def _sketched(self, state: _KeyState, xs: np.ndarray) -> np.ndarray | None:
        """The secret sketches of the queries ``xs`` (standardised) the similarity history
        adds; None where there is none: text, or inputs of at most ``max_dims`` values
        (the reduced vector is the input: no null space) but on audio."""
        if self.sketch is None or not len(xs):
            return None
        if xs[0].size <= self.config.similarity.max_dims and self._reduce is reduce:
            return None
        if state.sketch is None:
            state.sketch = Ring(self.config.similarity.history, self.sketch.k)
        return self.sketch.of(xs, self.scale)

    @staticmethod
    def _vet(state: _KeyState, sk: np.ndarray | None, first: int,
             lit: np.ndarray | None = None) -> Vet | None:  # fmt: skip
        """Whether a cloud (its rows' similarity numbers) is still in the sketch as well:
        its sketches from the ring and the batch's ``sk`` (numbered from ``first``); on a
        camera key without what a change of light explains (``lit``: the sketch's offset
        direction; :func:`~mlwarden.serve.profiles.unlit`), as its reduced clouds are; with
        ``off=`` (a direction in the sketch: a query's clipped values, :meth:`_clipped`)
        judged without it."""
        ring = state.sketch
        if sk is None or ring is None:
            return None

        def vet(ids: np.ndarray, off: np.ndarray | None = None) -> bool:
            rows = ring.take(ids, sk, first)
            rows = rows if lit is None else unlit(rows, lit)
            return still_in_sketch(rows if off is None else _off(rows, off))

        return vet

    def _lit_sketch(self, key: str, xs: np.ndarray) -> np.ndarray | None:
        """A ``camera`` key's offset direction (an input of ones) in the secret sketch,
        computed once per input shape and secret (read only by its callers)."""
        if self.sketch is None or self.profiles.get(key) != "camera" or not len(xs):
            return None
        shape = tuple(xs.shape[1:])
        known = self._lit_cache.get(shape)
        if known is None or known[0] is not self.sketch:  # a new secret: measured again
            ones = np.ones((1, *shape), np.float32)
            known = self._lit_cache[shape] = (self.sketch, self.sketch.of(ones, self.scale))
        return known[1]

    def _answer(self, state: _KeyState, before: Any, heard: np.ndarray, labels: list[int],
                scores: np.ndarray | None) -> tuple[np.ndarray, np.ndarray] | None:  # fmt: skip
        """Record the batch's answers (the ``heard`` queries, from ``before.first`` on) in
        ``state.answers``; the answers of the rows it overwrites (None: no answers kept)."""
        ans = state.answers
        if ans is None:
            return None
        old = ans.take(before.ids)
        if scores is None:
            ans.write(before.first, None, None, len(heard))
        else:
            ans.write(before.first, np.asarray(labels)[heard], scores[heard], len(heard))
        return old

    def _steady(self, ans: Answers, sim: Similarity, pvs: np.ndarray,
                found: dict[str, list[int]], before: Any,
                old: tuple[np.ndarray, np.ndarray]) -> dict[str, list[int]]:  # fmt: skip
        """``found`` without the similarity, dilution and residual alerts of balls whose
        answers stayed put (:func:`mlwarden.serve.answers.steady`)."""
        kinds = ("similarity", "dilution", "residual")
        cand = sorted({j for k in kinds for j in found.get(k, [])})
        spread = self.config.answers.spread
        assert spread is not None
        quiet = steady(sim, pvs, cand, before, ans, old, spread)
        if not quiet:
            return found
        return {k: [j for j in v if j not in quiet] if k in kinds else v
                for k, v in found.items()}  # fmt: skip

    @staticmethod
    def _typed(state: _KeyState, pvs: np.ndarray, owns: list[tuple[bool, int]]) -> Any:
        """Text typed on (:class:`mlwarden.serve.text.TypingChain`): for each query of the
        batch on a chain, the other chains among its neighbours in the window (one each;
        a query of no known chain one each; its own chain none; 0 for queries not on a
        chain), or None when no query is; the batch's chains are written beside the ring."""
        sim, chains = state.similarity, state.chains
        assert sim is not None and chains is not None
        hist, window, n = sim.config.history, sim.config.window, len(pvs)
        ids = np.array([c for _, c in owns], dtype=np.int64)
        on = [j for j, (go, _) in enumerate(owns) if go]
        out = None
        if on:
            out = np.zeros(n, dtype=np.int64)
            old = min(sim._filled, window)  # the ring's newest ``old`` slots, oldest first
            ring = (sim._next - old + np.arange(old)) % hist
            rows = np.concatenate([sim._ring[ring], pvs])
            limit = (sim.config.radius**2) * pvs.shape[1]
            q = pvs[on]
            sq = sq_distances(
                q, np.einsum("ij,ij->i", q, q), rows, np.einsum("ij,ij->i", rows, rows)
            )
            every = np.concatenate([chains[ring], ids])
            for row, j in zip(sq < limit, on, strict=True):
                near = np.flatnonzero(row[: old + j])  # earlier rows only
                who = every[near[old + j - near <= window]]  # old + j - r: row r's age
                who = who[who != ids[j]]
                out[j] = len(np.unique(who[who >= 0])) + np.count_nonzero(who < 0)
        chains[((sim._next + np.arange(n)) % hist)[-hist:]] = ids[-hist:]
        return out

    def _lit(self, key: str, dims: int) -> np.ndarray | None:
        """A ``camera`` key's lighting directions in the similarity history's vectors (its
        clouds are judged without them: :mod:`mlwarden.serve.profiles`), else None."""
        if self.profiles.get(key) != "camera":
            return None
        return lighting_directions(dims, self._mean, self._axes)

    def _streamed(self, state: _KeyState, xs: np.ndarray) -> dict[int, tuple[int, int]]:
        """Audio: for each query of the batch ``xs`` (before Blacklight stores it) that
        continues the key's previous query (:func:`mlwarden.serve.stream.lag`), the
        (owner, link) its Blacklight chain takes (:meth:`Blacklight.observe_many`'s
        ``links``, by query id): a match on its *new* samples alone. Of its fingerprint's
        hashes whose windows touch them, the share carried by the key's remembered queries
        (or the batch's earlier ones) is a match from ``threshold / top`` on, half a
        match from half that, with the query most of them point to (the newest on a tie).
        Its overlap was answered before (:mod:`mlwarden.serve.stream`)."""
        bl = state.blacklight
        if not self.stream or bl is None or not len(xs):
            return {}
        prev, state.tail = state.tail, np.array(xs[-1], dtype=np.float32)
        tol = tolerance(self.scale)
        lags = [lag(p, x, tol) if p is not None else None
                for p, x in zip([prev, *xs[:-1]], xs, strict=True)]  # fmt: skip
        if all(h is None for h in lags):
            return {}
        c, n0 = bl.config, bl._next
        last = max(j for j, h in enumerate(lags) if h is not None)
        wins = _window_hashes(xs[: last + 1], c.quantization, c.window, bl.silence)
        tops = [_top_of(row, c.top) for row in wins]  # _fingerprints' rows
        w = xs[0].size - wins.shape[1] + 1  # values a window
        out = {}
        for j, h in enumerate(lags):
            if h is not None:
                # hashes that first occur in the new samples: not the overlap's own
                # repeats (a voiced sound's pitch periods quantise alike, ms apart)
                new = _first_at(wins[j], tops[j], max(xs[j].size - h - w + 1, 0))
                by = bl.carried(new)
                for k in range(j):  # the batch's earlier queries are newer than the table
                    by[np.isin(new, tops[k])] = n0 + k
                out[n0 + j] = _link(by, c.threshold, c.top)
        return out

    def _heard(self, vs: np.ndarray) -> np.ndarray:
        """Positions of the queries the similarity detector counts: all but audio clips
        that are digital silence throughout (every frame below ``-96 + _HEARD_DB`` dB).

        Silent clips have one envelope (the floor), so on real speech streams (pauses
        between prompts: 2.8% of 1 s clips at random offsets) every silent clip was the
        neighbour of every other and they alone raised 24 of 29 false alarms per 1,000
        (``benchmarks/gateway_detection_long.py``). A search step that stays below -90
        dBFS changes no sample of 16-bit audio by more than about one step; any larger
        perturbation makes the clip heard and counted.
        """
        if self._reduce is not reduce_audio:
            return np.arange(len(vs))
        return np.flatnonzero(vs.max(axis=1) > _HEARD_DB / _FLOOR_DB)

    @staticmethod
    def _slow(sim: Similarity, pvs: np.ndarray, recent: np.ndarray, need: int,
              before: Any) -> set[int]:  # fmt: skip
        """Positions whose similarity alert the still-ball rule may drop without
        ``similarity.stationary``: the window's count below ``need`` (a whole-history
        alert), or met only by neighbours spread over a quarter of the window or more (at
        most one query in ``window / (4 need)`` of the key's: 1 in 12.5 at the defaults;
        a client resending 50 inputs, 20 copies each per window, reached 32 copies of one
        in a window and its 20th newest came 425 queries back)."""
        counts = recent.tolist()
        slow = {j for j, r in enumerate(counts) if r < need}
        full = [j for j, r in enumerate(counts) if r >= need]
        if full and before is not None:
            wide = sim.config.window // 4
            back = reach(sim, pvs, full, before, need)
            slow |= {j for j, b in zip(full, back, strict=True) if b >= wide}
        return slow

    @staticmethod
    def _spread_out(sim: Similarity, pvs: np.ndarray, hits: list[int], recent: np.ndarray,
                    need: int, before: Any) -> list[int]:  # fmt: skip
        """Text: ``hits`` (similarity alerts the still-ball rule left standing) less those
        met only by neighbours spread over a quarter of the window or more (the
        ``need``-th newest 250 or more queries back at the defaults; a whole-history
        alert) whose ball within the radius stays put (:func:`still` on the whole ball).

        Two typo copies of a short tweet share too few shingles to be each other's own
        cloud (two typos change ~10 of a 40-character tweet's ~36 shingles), so a client
        resending 50 tweets with typos was flagged (12 per 1,000 at 20 neighbours) on
        balls that no test tells from a sampler drawing one random word a query around
        its text. A count spread over the window is at most one query in 12.5 of the
        key's: such a ball is judged by its drift alone. A search concentrated in time
        (one text's queries, or ten round robin: ~200 back) keeps the tight cloud."""
        wide = sim.config.window // 4
        full = [j for j in hits if recent[j] >= need]
        back = dict(zip(full, reach(sim, pvs, full, before, need), strict=True))
        slow = [j for j in hits if back.get(j, wide) >= wide]
        resends, _ = still(sim, pvs, slow, before, None)
        return [j for j in hits if j not in resends]

    def _views(self, xs: np.ndarray, pvs: np.ndarray, heard: np.ndarray) -> Views:
        """The batch's :meth:`_shifted` and :meth:`_clipped`, built once for the spread
        rule's and the similarity alerts' still-ball verdicts (a query judged by both is
        shifted and clipped once)."""
        return self._shifted(xs, pvs, heard), self._clipped(xs, heard)

    def _origin(self, dims: int) -> np.ndarray:
        """The projected row of a reduced vector of ``dims`` zeros (the projection is
        fixed at construction: computed once per ``dims``)."""
        known = self._origins.get(dims)
        if known is None:
            known = self._origins[dims] = self.project(np.zeros(dims, np.float32))
        return known

    def _shifted(self, xs: np.ndarray, pvs: np.ndarray, heard: np.ndarray,
                 ) -> Shifted | None:  # fmt: skip
        """For images (:attr:`frame`), position ``j`` of ``pvs`` -> the offsets from its
        row to the rows of its input shifted by up to ``SHIFT`` pixels along the last two
        axes (:data:`SHIFTS`, rolled: a one-pixel crop shift but for one edge row), and
        the direction a gain on the input moves its row, as
        :func:`mlwarden.serve.stationary.still` gathers own clouds up to a shift; each
        position's computed once (kept for the batch)."""
        frame = self.frame
        if frame is None:
            return None
        c = self.config.similarity
        origin = self._origin(pvs.shape[1] if self._axes is None else len(self._axes))
        done: dict[int, tuple[np.ndarray, np.ndarray]] = {}

        def offsets(j: int) -> tuple[np.ndarray, np.ndarray]:
            if j not in done:
                x = np.asarray(xs[int(heard[j])], dtype=np.float32).reshape(frame)
                rows = self.project(self._reduce_many(_rolled(x), c.max_dims, self.scale))
                done[j] = (rows - pvs[j], pvs[j] - origin)
            return done[j]

        return offsets

    def _clipped(self, xs: np.ndarray, heard: np.ndarray) -> Clip | None:
        """Tensors of ``MIN_VALUES`` values or more (not text, audio or tables): position
        ``j`` of the queries heard -> the direction a change of noise level moves its
        values at the input's bounds (its values within ``CLIP_REACH`` of the query's
        range of its lowest or highest value: +1 and -1), reduced and projected as its
        row, and in the secret sketch (None without one); each position's computed once
        (kept for the batch). Clipped noise has a mean that grows with its level (about
        0.4 sigma at a bound): a camera whose sensor noise wanders moves its frames'
        centre along this one direction."""
        if self._reduce is not reduce or self.text or xs[0].size < MIN_VALUES:
            return None
        c = self.config.similarity
        origin = self._origin(min(xs[0].size, c.max_dims))
        done: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}

        def clip(j: int) -> tuple[np.ndarray, np.ndarray | None]:
            if j not in done:
                x = np.asarray(xs[int(heard[j])], dtype=np.float32)
                lo, hi = float(x.min()), float(x.max())
                reach = CLIP_REACH * (hi - lo)
                u = ((x <= lo + reach).astype(np.float32) - (x >= hi - reach))[None]
                row = self.project(self._reduce_many(u, c.max_dims, self.scale))[0] - origin
                sk = self.sketch.of(u, self.scale)[0] if self.sketch is not None else None
                done[j] = (row, sk)
            return done[j]

        return clip

    @staticmethod
    def _moving(sim: Similarity, pvs: np.ndarray, found: dict[str, list[int]], before: Any,
                heard: np.ndarray, out: dict[str, list[int]], tight: float | None,
                only: set[int] | None = None, wide: float | None = WIDE,
                lit: np.ndarray | None = None, vet: Vet | None = None,
                judge: Judge | None = None) -> tuple[dict[str, list[int]], list[Cloud]]:  # fmt: skip
        """``found`` without the similarity and dilution alerts of still balls: one input
        resent with fresh noise, not a search (:func:`mlwarden.serve.stationary.still`),
        and the alerts that wait on a cloud too small to judge (:meth:`_hold`; none with
        ``only``, ``similarity.stationary`` off: its alerts stand).
        ``only``: the positions whose similarity alert may be dropped (None: all, and
        Blacklight's alerts in ``out``, positions of the batch, are judged the same way:
        fresh noise of 0.01 on digits, values on a grid of 1/16, seldom crosses its bins,
        so a client resending 100 digits chained 33 per 1,000); a dilution alert always
        may. ``lit``: a camera key's lighting directions (:meth:`_lit`); ``vet``: the
        secret sketch's word on each cloud (:meth:`_vet`); ``judge``: the batch's verdicts
        at these settings, with its shifted copies and clipped values, kept
        (:meth:`_judge`), instead of judging again (without it: no such views, as when
        ``only`` is set)."""
        at = {int(h): p for p, h in enumerate(heard.tolist())}
        chained = {at[j] for j in out.get("blacklight", []) if j in at} if only is None else set()
        cand = sorted({j for k in ("similarity", "dilution") for j in found.get(k, [])
                       if k == "dilution" or only is None or j in only} | chained)  # fmt: skip
        resends, small = (
            judge(cand) if judge is not None
            else still(sim, pvs, cand, before, tight, wide if only is None else None, lit, vet)
        )  # fmt: skip
        if only is not None or wide is None:
            # nothing waits with the rule off, nor on audio, whose own cloud is the ball
            # within the radius: a search's steps are each other's copies there, and a
            # search sending each step twice went unflagged in 700 queries (i21e); nor
            # on text (the rule's text settings were measured without waiting)
            small = {}
        for j, cloud in small.items():  # they wait (_hold): no alert now
            cloud.kinds = tuple(k for k in ("similarity", "dilution") if j in found.get(k, ()))
            cloud.kinds += ("blacklight",) if j in chained else ()
        drop = resends | set(small)
        if not drop:
            return found, []
        if chained:  # positions of the batch, heard or not
            out["blacklight"] = [j for j in out["blacklight"] if at.get(j, -1) not in drop]

        def kept(k: str, j: int) -> bool:
            return j not in drop or (k == "similarity" and only is not None and j not in only)

        kinds = ("similarity", "dilution")
        return {k: [j for j in v if kept(k, j)] if k in kinds else v
                for k, v in found.items()}, list(small.values())  # fmt: skip

    def _hold(self, state: _KeyState, sim: Similarity, pvs: np.ndarray, before: Any,
              held: list[Cloud], heard: np.ndarray, out: dict[str, list[int]],
              seqs: list[int], lit: np.ndarray | None = None,
              vet: Vet | None = None) -> None:  # fmt: skip
        """Let ``held`` (clouds of the batch ``pvs``) wait, and settle every waiting alert
        on the batch (:func:`mlwarden.serve.stationary.settle`): those that stand join
        ``out`` (a query of this batch) or ``state.late`` (of an earlier one)."""
        first = before.first
        for cloud in held:
            cloud.seq = seqs[int(heard[cloud.gid - first])]
        stand, state.held = settle(sim, pvs, before, state.held + held, self.still_bar, self.wide,
                                   lit, vet)  # fmt: skip
        for cloud in stand:
            j = cloud.gid - first
            for kind in cloud.kinds:
                if 0 <= j < len(pvs):
                    out[kind] = sorted(set(out.get(kind, [])) | {int(heard[j])})
                else:
                    state.late.setdefault(kind, []).append(cloud.seq)

    def _copied(self, sim: Similarity, pvs: np.ndarray, flagged: list[int], total: np.ndarray,
                need: int, long_need: float, first: int) -> list[int]:  # fmt: skip
        """The similarity alerts ``flagged`` (positions of the batch ``pvs``, just added
        to ``sim`` from query number ``first``) whose neighbours hold ``need`` distinct
        inputs among the last ``window`` queries, or ``long_need`` among the whole
        history where the whole history's count reached it: a table re-read is a few
        inputs resent (:mod:`mlwarden.serve.copies`)."""
        c, nxt = sim.config, sim._next
        limit = (c.radius**2) * pvs.shape[1]

        def near(j: int, span: int, n: int) -> int:
            slots = window_slots(first, j, span, nxt, c.history)
            return distinct(sim._ring, sim._norms, slots, pvs[j], limit, n)

        return [j for j in flagged if near(j, c.window, need) >= need or (
            total[j] >= long_need and near(j, c.history, int(long_need)) >= long_need)]  # fmt: skip

    def _diluted(self, state: _KeyState, dil: Dilution, vs: np.ndarray, pvs: np.ndarray,
                 total: np.ndarray, before: Any, allowance: int | None) -> dict[str, list[int]]:  # fmt: skip
        """The dilution test (and its residual form, with a projection) on a batch just
        added to the similarity history; see :mod:`mlwarden.serve.dilution`."""
        assert state.similarity is not None
        # a granted client's copies: a ball, flagged past its allowance only
        least = max(dil.config.min_neighbours, allowance or 0)
        out = {"dilution": dil.flags(state.similarity, pvs, total, before, vs, least)}
        if state.residual is not None and self._mean is not None and self._axes is not None:
            # pvs is already (vs - mean) @ axes: the projection is not computed twice
            rs = off_axes(vs, self._mean, self._axes, along=pvs)
            snap = dil.snapshot(state.residual, len(rs))
            _, res_total = state.residual.observe_many(rs)
            assert state.residual_test is not None
            out["residual"] = state.residual_test.flags(state.residual, rs, res_total, snap,
                                         state.similarity, pvs, before, least)  # fmt: skip
        return out

    def dump(self, key: str) -> bytes | None:
        """The key's detector state as one ``.npz`` blob (``None``: nothing seen yet)."""
        state = self._keys.get(key)
        if state is None:
            return None
        arrays: dict[str, Any] = {
            "recent": np.array(state.recent._order, dtype=np.uint64),
            "dims": np.array([state.dims]),
            "projection": np.array([self._projection], dtype=np.uint64),
            "version": np.array([_BLOB_VERSION]),
        }
        with state.lock:
            arrays["seq"] = np.array([state.seq], dtype=np.int64)
            for name, part in _parts(state).items():  # Blacklight, PRADA, spread, manifold
                arrays.update({f"{name}.{k}": v for k, v in part.dump().items()})
            if state.similarity is not None:
                arrays.update({f"similarity.{k}": v for k, v in state.similarity.dump().items()})
            if state.residual is not None:
                arrays.update({f"residual.{k}": v for k, v in state.residual.dump().items()})
            if state.sketch is not None and state.similarity is not None and self.sketch:
                filled, tag = state.similarity._filled, self.sketch.tag  # the tag, no secret
                arrays.update({f"sketch.{k}": v for k, v in state.sketch.dump(filled, tag).items()})
            if state.held:  # alerts waiting on a small cloud: their clouds, and their kinds
                arrays["held"] = np.array([k for c in state.held for k in c.kinds], dtype="U16")
                arrays.update(_dump_clouds(state.held))
            if state.answers is not None:  # the model's answers to the history's rows
                arrays.update({f"answers.{k}": v.copy() for k, v in state.answers.dump().items()})
            if state.typing is not None and state.chains is not None:  # text typed on
                arrays.update({f"typing.{k}": v for k, v in state.typing.dump().items()})
                arrays["chains"] = state.chains.copy()
            if state.tail is not None:  # audio: the last query, which the next may continue
                arrays["tail"] = state.tail.copy()
            arrays.update(_dump_pending(state))
            state.unsaved = 0
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    def load(self, key: str, blob: bytes) -> None:
        """Restore what :meth:`dump` wrote; a blob that does not fit the config is ignored.

        Stored: the exact-repeat filter, the similarity history (float16, a few MB; text's
        rows of bits exactly, with their scale: :meth:`Similarity.dump`), the
        model's answers to its rows (:mod:`mlwarden.serve.answers`) and, on text, the
        typing chain (its last text) and each row's chain (:class:`TypingChain`); blobs
        without the last two (before session 10, version 1) still load, without them.
        From version 3 (session 12): Blacklight's table, PRADA's reference sets and
        record, the spread window, the audio tail, the clouds of alerts waiting on them
        (:func:`mlwarden.serve.stationary.settle`), the queries queued for the next
        analysis and the key's query count, each as it was: every rule's verdict on the
        next query is the one it would have had without the restart (the similarity
        history's float16 rows aside). From an older blob those start afresh and the
        waiting alerts stand: the key's next analysis reports them, as queries before
        the restart.
        """
        try:
            with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
            dims = int(arrays["dims"][0])
        except (ValueError, KeyError, OSError, EOFError):
            return
        state = self._state(key, dims)
        with state.lock:
            for digest in arrays["recent"].tolist():
                state.recent.seen(int(digest))
            part = {k[11:]: v for k, v in arrays.items() if k.startswith("similarity.")}
            stored = arrays.get("projection", np.zeros(1, dtype=np.uint64))
            if int(stored[0]) != self._projection:
                part = {}  # measured along other axes: not comparable, start afresh
            clouds = False
            if state.similarity is not None and part:
                with contextlib.suppress(KeyError, ValueError, IndexError):
                    state.similarity.load(part)  # a history of another shape: start afresh
                    self._load_sketch(state, arrays)
                    clouds = self._restore_rows(state, arrays, int(part["meta"][1]))
            if not clouds:  # waiting alerts without their clouds stand: the query before
                last = int(arrays.get("seq", np.zeros(1))[0]) - 1
                for kind in arrays.get("held", np.empty(0, dtype="U16")).tolist():
                    if kind in ("blacklight", "similarity", "dilution"):
                        state.late.setdefault(kind, []).append(last)
            res = {k[9:]: v for k, v in arrays.items() if k.startswith("residual.")}
            if state.residual is not None and res and part:
                with contextlib.suppress(KeyError, ValueError, IndexError):
                    state.residual.load(res)
            self._load_parts(state, arrays, bool(part))

    def _load_parts(self, state: _KeyState, arrays: dict[str, np.ndarray], sim: bool) -> None:
        """Blacklight, PRADA, the spread window (on a restored similarity history: it
        reads the same projected vectors), the audio tail, the queue and the query count
        from a version-3 blob; a part that does not fit the config starts afresh."""
        c = self.config
        make: dict[str, Callable[[int], Any]] = {
            "blacklight": lambda _: Blacklight(c.blacklight, self.silence, self.moved_frame),
            "prada": lambda _: self._fresh_prada(state.dims),
            "spread": lambda dims: Spread(c.spread.window, dims),
        }
        spread = sim and self.narrow and state.similarity is not None
        for name in _PARTS:
            part = {k[len(name) + 1 :]: v for k, v in arrays.items() if k.startswith(name + ".")}
            have: Any = getattr(state, name, None)
            if not part or (have is None if name != "spread" else not spread):
                continue  # not stored, or the detector is off in this config
            with contextlib.suppress(KeyError, ValueError, IndexError, TypeError):
                # a fresh detector (or the key's own, made with its state: still fresh)
                obj = make[name](len(part.get("sum", ()))) if name in make else have
                if obj.load(part):
                    setattr(state, name, obj)
        tail = arrays.get("tail")
        if self.stream and tail is not None:
            state.tail = tail.astype(np.float32)
        if "seq" in arrays:
            state.seq = int(arrays["seq"][0])
        _load_pending(state, arrays)

    def _fresh_prada(self, dims: int) -> Prada:
        return self._equip(Prada(self.config.prada, self.resend, self.prada_every), dims)

    def _equip(self, prada: Prada, dims: int) -> Prada:
        """A new key's PRADA with this gateway's image parts: renderings (renders.py) and
        the blinding window (blinding.py); the one place both are set."""
        prada.renders = self.pictures
        prada.blinding = self._blinder(dims)
        if self.config.prada.outliers is None and self.images:
            prada.outliers = 3.0  # Juuti et al.'s code (config.py: why image keys only)
        return prada

    def _blinder(self, dims: int) -> Blinding | None:
        """An image key's blinding window (blinding.py), or None where the rule is off."""
        frame = self.blind_frame
        return None if frame is None else Blinding(dims, self.resend, grid(frame))

    @staticmethod
    def _restore_rows(state: _KeyState, arrays: dict[str, np.ndarray], stored_next: int) -> bool:
        """After the similarity history is restored: the answers to its rows, the
        typing chains they were on and the clouds of waiting alerts (blobs from session
        10 on, the clouds from version 3; an older blob, or one of another history
        length, leaves them unknown: their alerts stand, as before). True: the waiting
        alerts' clouds were restored (they go on waiting)."""
        sim = state.similarity
        if sim is None or not sim._filled:
            return False
        shift = stored_next - sim._next  # the history renumbers by a multiple of its length
        ans = {k[8:]: v for k, v in arrays.items() if k.startswith("answers.")}
        if state.answers is not None and ans:
            state.answers.load(ans, shift)
        typing = {k[7:]: v for k, v in arrays.items() if k.startswith("typing.")}
        if state.typing is not None and typing:
            state.typing.load(typing)  # the next text goes on the chain it was on
        chains, mine = arrays.get("chains"), state.chains
        whole = not (shift % sim.config.history)  # the same history length
        if mine is not None and chains is not None and len(chains) == len(mine) and whole:
            mine[:] = chains
        filled = int(arrays["similarity.meta"][0])  # a history cut or renumbered: no clouds
        same = filled == sim._filled and (filled == sim.config.history or stored_next == filled)
        if not (whole and same) or "clouds" not in arrays:
            return False
        state.held = _load_clouds(arrays, shift)
        return True

    def _load_sketch(self, state: _KeyState, arrays: dict[str, np.ndarray]) -> None:
        """The key's stored sketches, beside its restored similarity history (rows stored
        under another secret, or none: unknown, left out of every cloud's sketch test)."""
        part = {k[7:]: v for k, v in arrays.items() if k.startswith("sketch.")}
        if self.sketch is None or not part:
            return
        state.sketch = Ring(self.config.similarity.history, self.sketch.k)
        state.sketch.load(part, self.sketch.tag)

    def unsaved(self, key: str) -> int:
        """Distinct queries of ``key`` seen since its last :meth:`dump`."""
        state = self._keys.get(key)
        return 0 if state is None else state.unsaved

    def nbytes(self, key: str) -> int:
        """Approximate memory held for ``key``, bytes."""
        state = self._keys.get(key)
        return 0 if state is None else state.nbytes()

    def prada_lowest_w(self, key: str) -> float | None:
        """The lowest Shapiro-Wilk W PRADA has tested for ``key`` (``None``: none yet)."""
        state = self._keys.get(key)
        if state is None or state.prada is None or state.prada.lowest_w == math.inf:
            return None
        return state.prada.lowest_w
