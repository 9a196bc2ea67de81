"""A ball of neighbours that stays put: one input resent with fresh noise, not a search.

A benign client that resends one input many times, each time with fresh small noise,
and a noisy random search both put many queries of a key within the similarity radius
of each other; counts cannot tell them apart. What can is *time*: resends are draws
around a fixed centre, independent of when they were sent, while a search steps from
its last accepted point, so its centre drifts, query after query (Square, NES, boundary
attacks; each accepted step stays in the next query). On audio this was the one benign
stream left above 1 false alarm per 1,000: whole-second windows resent with noise of sd
0.02, whose ~5% silent windows all become the same hiss, resent ~470 times in 10,000
queries (46.6 per 1,000, ``benchmarks/gateway_detection_long.py``).

Since session 7 the rule is on for every input but text, since session 8 on text too
(``similarity.stationary`` left open), and judges Blacklight's chains as well as the similarity and
dilution alerts. On text (1-bit MinHash features of character 5-shingles) ten tweets
resent with a typo half the time and a case change half the time (5,000 queries,
calibrated) raised 48 alarms per 1,000 without it (Blacklight 37), 11 with it (the
copies of short tweets: one typo moves a copy out of the others' own clouds); the word
search's queries walk away from their text (each kept word stays in the next query)
and are flagged at the same queries. The own cloud stays at ``TIGHT`` on text: a
random word-substitution search that draws each candidate afresh around its text
(nothing kept) is a still ball of the whole radius, but its candidates lie farther
apart than ``TIGHT``; with the whole radius as the own cloud it went unflagged
(tests/serve/test_serve_text_resends.py).

**Whose ball.** A flagged query is judged on its *own cloud*: its earlier neighbours
within ``TIGHT`` (0.6) of the similarity radius, a little over PRADA's resend bar (on audio, whose
envelopes of one clip resent with noise spread ~0.9 of the radius, the radius itself),
in the order they came, itself last, the newest ``CAP``. Other inputs' clouds within
the radius stay out: a ball mixing several resent inputs drawn in random order has
runs of one input by chance, which read as drift (a Gaussian reference put 29-86 in
10,000 such 21-row balls below ``ALPHA``). With fewer than ``MIN_ROWS`` rows it is not
tested. Until session 8 its alert then stood, so a client sending one input several
times in a row was flagged on its 4th and 5th copies (Blacklight's chain of 3), before
the rule could judge them (``burst20`` of ``benchmarks/gateway_detection_clients.py``:
45-134 per 1,000). Now such a query *waits* (:func:`still`, :func:`settle`) when it has
at least one earlier copy in its own cloud and those copies are at least half of its
neighbours within the radius: its alert hangs on its ball within the radius, judged
when that holds ``MIN_ROWS`` rows, and stands when it has not filled ``HOLD`` (250)
queries later (fails closed; after a restart too) unless the key *left* it: fewer than
``LEFT`` (20) of those queries came within ``CHAIN`` radii of it (session 12; below).
Not on audio, whose own cloud is the
ball within the radius: a search's steps are each other's copies there, and one sending
each step twice had its alerts settled as resends on 6 rows (i21e, session 8: unflagged
in 700 queries; :class:`~mlwarden.serve.monitor.Monitor` holds nothing there), nor on
text (its settings were measured with alerts standing at once). A search's first query at each new
point has no copy and is never excused; a search hiding under noise of 0.05 (copies
0.07 apart, RMS per value, against the radius 0.1 on digits) has next to no copies
within 0.6 of the radius in high dimensions, and is flagged as without the rule; a
search that resends each point to make its queries look like copies waits at most
``HOLD`` queries. Copies farther apart than the
radius itself (:func:`spread`: RMS per value between successive rows, sigma * sqrt(2)
for fresh N(0, sigma) noise) are no resend either. (An own cloud of half the radius failed a
table resent with noise 0.01 at a calibrated radius of 0.03: copies 0.014 apart.)

**Re-encodings.** An app resending a photo re-encodes it each time (a brightness change,
a one-pixel shift, JPEG): at the calibrated radius one input's copies spread over about
two radii (the shift variants 2-4 apart on 3x32x32 images at 0.015), so its own clouds
held 1-4 copies and burst / pool clients raised 10-114 alarms per 1,000. On tensors of
``MIN_VALUES`` or more values, a query not excused above is also judged on its cloud
within ``WIDE`` (2) radii, and one waiting is judged on it again as each later copy
joins: a resend when it is one input re-encoded (:func:`recoded`): at least
``MIN_ROWS`` rows whose successive differences span at most ``LOW_DIMS`` (8) effective
dimensions (:func:`dims`: Box's ``tr(S)^2 / tr(S^2)``, the statistic's own
estimates) around a centre that does not move. Measured on 20 copies: 2.2-4.8 for a
gain and shifts, 3-4 for a phone's re-shares (rotation, crop, exposure, JPEG q60-95);
white noise ~120 (27 at the least on 6 rows), so a noisy search's cloud is never
excused this way, however wide its spread. Differences, not rows: a search's kept steps
make a walk, whose rows are dominated by a few directions although each step (a
block here, another there) points somewhere new. Other inputs' rows within the reach
make the cloud move or span more: the alert stands (fails closed). What it cannot see:
a search whose candidates vary along at most ~8 fixed directions and whose kept point
does not move (it learns only along those directions); a search hidden in re-encodings
(each query re-encoded) is judged on the sum, whose differences are dominated by the
re-encoding while its steps are small: it is flagged when its kept point has moved
(``tests/serve/test_serve_recoded.py``: at the same queries as before on the runs
flagged there).

**Stuck searches (session 10).** A search whose scores never let it keep a step sends
its candidates around one fixed point: a still ball. On the issue's own benchmark
(``benchmarks/gateway_load.py``, digits, scores rounded to 0.01) the noisy search of
run 3 kept no step in 300 queries (its class stayed at 1.00) and went unflagged, and
Square's runs 2 and 3 too; before the rule they were flagged at 21. Two vetoes keep
such a cloud's alerts standing, on tensors with the wide rule. :func:`sliced`: an own
cloud holding fewer than half of the query's earlier neighbours within the radius,
whose ball varies along more than ``LOW_DIMS`` effective dimensions, is a slice of a
wider noise cloud, not a resend's copies (fresh noise of 0.05 on a digit whose zero
background clips it puts copies 0.5-0.6 of the radius apart: part of them fall inside
``TIGHT`` by chance); the query is then judged as one without an own cloud (the wide
rule may still excuse it). On images at the calibrated radius one input's gain-only
copies are a minority of its re-encodings within the radius (the one-pixel shifts lie
farther out), along a few directions: no veto (without the dimension condition the
clients benchmark's images photo10 rose from 7.5 to 187.5 per 1,000). Its dimensions
are read on the ball's newest ``FULL`` rows (bounded work), and not on a camera key,
whose frames spread along the drifting light: within the radius their sensor noise is
white (the veto flagged 107 of 400 frames there).
:func:`coordinate` (tensors of ``MIN_VALUES`` or more, not text or audio): copies
whose successive differences change at most ``FEW_VALUES`` values each (participation
ratio, median over the cloud) are a coordinate search's candidates (Square's late
windows, SimBA, ZOO); a gain, a one-pixel shift, 8-bit coding, JPEG or sensor noise
change every value (8 values at the least on digits and on 3x32x32 / 28x28 images
reduced to 128). What they cannot see: a search stuck at one point under noise
small enough that all its copies lie within ``TIGHT`` of each other (sigma 0.02 on
digits), or whose candidates change more than ``FEW_VALUES`` values (2x2 windows
without noise): while stuck it is a resend of one input by every measure here (a
fixed camera's frames are such a ball) and learns nothing; its kept steps move the
centre and are flagged as before (the runs that kept steps: 21-23).

**A burst that ended (session 12).** On 8 x 8 digits a burst (one input sent 20 times
in a row, re-encoded: a gain and a one-pixel shift half the time) left each shift's 1-4
copies in a ball of their own, 2-3 radii from the others (digits get no shift alignment,
below): Blacklight chained them (its hashes are shift-invariant), their balls never
filled, and their alerts stood ``HOLD`` queries later: 59 of the 71 flags of
``burst20`` (35.5 per 1,000, 2,000 queries). Each of them had 0-10 later queries of the
key within ``CHAIN`` radii (the burst's rest); a search works within its budget's reach
of its input (the issue's Linf 0.1 on digits is an RMS of at most one radius), so its
later queries are near its alert's and it stands as before, and a search round-robin
over 13 or 20 inputs (one query in 13 or 20 its own, each point sent 1-3 times:
fewer than ``LEFT`` of 250 near each alert) was flagged at the same queries as before
(its similarity alerts, whose balls fill, decide). What it excuses: a run of at most
``LEFT`` copies (or queries within ``CHAIN`` radii) whose ball within the radius never
fills, after which the key goes elsewhere for ``HOLD`` queries: no search's work.

**Many inputs near each other (session 12).** A query with no own cloud (no copy within
``TIGHT``, or a slice) whose ball within the radius holds ``FULL`` rows or more is
excused, on tensors of ``MIN_VALUES`` values (the wide rule's), when that ball is natural
inputs near each other (:func:`natural`): still at ``WIDE_ALPHA``, its newest ``FULL``
rows' successive differences spanning at most ``NATURAL_DIMS`` (16) effective
dimensions, and no coordinate search's. redteam11's ``thumbsizes`` (each photo
classified at 5 thumbnail sizes, each brought back to the input's size) on 8 x 8 digits
puts many photos' 3 x 3 and 4 x 4 renderings within the radius of each other (22-72
neighbours, 0-8 within ``TIGHT``; 5-15 dimensions): 42.5 alarms per 1,000, 14 with
it. A noisy search's white noise spans ~40 (the issue's sigma 0.05 and 0.1: flagged at
the same queries), a search in a low-frequency subspace (noise and steps on a 3 x 3 or
4 x 4 grid brought back to 8 x 8, Guo et al. 2019; SimBA in that basis) moves its
centre or is stuck (gains nothing), and a coordinate search is vetoed. What it
excuses: a search whose queries vary along at most ~16 fixed directions around a
point that does not move, the wide rule's blind spot at a larger reach.

**Nearby inputs one after the other (session 15, audio).** On audio the own cloud is
the ball within the radius; distinct clips of one class lie near each other (at the
calibrated radius 0.035 a clip's nearest other clip is 0.47 radii away at the median,
its copies under noise of sd 0.02 of the range 0.21 apart), so a client walking a
folder class by class, resending each clip with fresh noise, put an earlier class's
clip in its ball, then its own: the ball moves (37.5 alarms per 1,000,
``benchmarks/gateway_detection_plain.py`` ``jitter-sorted``; a single other clip's copy
at the ball's edge in random order, 2.8). A ball that moves is judged again on the
query's copies within ``TIGHT`` of the radius (:func:`_apart`): excused when they are
``MIN_ROWS`` or more, no farther apart than the radius, still, still in the sketch, and
the key's last ``SPAN`` queries within ``CHAIN`` radii do not walk (the tensors'
chain). What it excuses: a search whose points each take ``MIN_ROWS`` or more copies
and lie ``TIGHT`` radii apart or more, while fewer than ``LINKS`` of its last ``SPAN``
queries lie beyond the radius or they do not drift; a hop's first copies, too few to
judge, stand (redteam10's ``neshop`` on audio: one run flagged at 52 instead of 21).

**A second view.** Every cloud above is measured on the reduced vectors, whose
reduction is public: a search whose steps have zero block means (audio: keep each
frame's energy) is one still point there. :func:`still` and :func:`settle` take
``vet``, asked before a cloud is excused; the monitor passes the secret sketch of the
raw input (:mod:`mlwarden.serve.sketch`): the cloud must be still there too.

**Up to a shift** (session 10). A vertical one-pixel shift moves an image's copy 2-5
radii from the unshifted ones, so a burst (one input sent 20 times in a row, re-encoded)
left its shifted copies with clouds of 1-3 and their Blacklight alerts stood (31-65 per
1,000). For images (a frame of 16 x 16 or more; not 8 x 8 digits, where a noiseless search then
went unflagged in 1 of 5 runs), an own cloud too small to judge is
gathered again up to a translation of at most 2 pixels (:func:`aligned`: each earlier
row near one of the query's 24 shifted copies, moved back by that copy's offset; block
means and the projection are linear, so a copy shifted the other way lands where an
unshifted one would) and judged once it holds ``MIN_ROWS`` rows, off the direction of a
gain on the query (:func:`moving` with ``along``: a brightness change varies copies
along the input's own direction far more than a search's steps move them, and hid
their drift; off it a search hidden in re-encodings is seen sooner than before). A
search whose queries are shifted at random is moved back onto its own path, which
drifts as before. What it excuses by design: one input sent at up to 25 translations
within 2 pixels and any gain (a search over those translations alone, Engstrom et al.'s
spatial attack on a grid that small, is not flagged as such; the outside benchmark's
``transform``, a worst-of-k over benign re-encodings of one input, was flagged in 3 of 5
runs on images only through its shifted copies, now 1 of 5).

**Chains (session 11).** A search that samples one point at a time (NES, Ilyas et al.,
2018: 50 draws N(0, 0.01) around a centre, then a signed step) with a fresh decoy offset
of +-0.04 a reduced block at each centre (``neshopd`` of
``benchmarks/gateway_detection_redteam10.py``) puts each hop in a still ball of its own,
1.9-2.6 radii from the others on images (calibrated radius 0.015): every per-cloud view
above, and the secret sketch, reads a noisy resend (0/5 flagged in 300 queries). Distance
alone cannot tell its hops from a resender's inputs: on the same images 7% of random
pairs of distinct inputs lie within 3 radii. Time can: the hops follow each other, so
before a cloud is excused its *chain* (:func:`walked`: the key's rows within ``CHAIN``
(2.5) radii of the query over its last ``SPAN`` (150) queries, judged when ``LINKS`` (40)
or more of them lie beyond the radius, about one hop) must not drift by the test below;
a burst client's inputs one after the other, or a few nearby inputs resent in random
order, do not (random order mixes them in time; their successive differences carry the
jumps). Measured (``docs/benchmarks/gateway.md``, session 11): neshopd on images
flagged at 72 (its second hop), also with a benign query between its queries.
What it cannot see: hops farther apart than ``CHAIN`` radii (a decoy of 0.08: the
search keeps 0.02 of its Linf budget of 0.1, but the decoys themselves are random signs
of 0.08 and turned one of 3 digits), or hops whose predecessors' rows left the last
``SPAN`` queries (2+ benign queries between the search's own: 1:4 went unflagged, one of
3 runs with an adversarial input). Hops of 31 queries are flagged at their third (83),
of 101 at their second (122). Not applied to a waiting cloud's later verdict
(:func:`settle`): a hop's later queries are each judged here.

**The test.** Bai & Saranadasa's high-dimensional two-sample statistic (Bai &
Saranadasa, "Effect of high dimension: by an example of a two sample problem",
Statistica Sinica 6, 1996), for a time contrast ``w`` of the rows (weights summing to
0; :func:`contrasts`: newer half against older half, a linear trend, the newest 4, 8,
... against the rest)::

    M = |sum_i w_i x_i|^2,   E[M] = |w|^2 tr(S),   Var[M] = 2 |w|^4 tr(S^2)

under independent draws with covariance ``S``. ``tr(S)`` and ``tr(S^2)`` come from
successive differences ``d_i = x_(i+1) - x_i`` (von Neumann, "Distribution of the ratio
of the mean square successive difference to the variance", Ann. Math. Statist. 12,
1941): ``E|d_i|^2 = 2 tr(S)`` and, for non-adjacent ``i, j``, ``E(d_i . d_j)^2 = 4
tr(S^2)``; a drifting centre hardly inflates them, so the test keeps its power. ``M /
(|w|^2 tr(S))`` is referred to F(f, f v) with Box's effective dimensions ``f = tr(S)^2 /
tr(S^2)`` (Box, "Some theorems on quadratic forms applied in the study of analysis of
variance problems", Ann. Math. Statist. 25, 1954) and ``v = 2 (n-1)^2 / (3n - 4)``, the
degrees of freedom of von Neumann's variance estimate: the estimate is noisy at 21
rows, and the chi-square reference (until session 7) put 1-4 in 20,000 Gaussian balls
below ``ALPHA``; the F reference none. The ball is *moving* (a search) when the
smallest p-value times the number of contrasts (Bonferroni) is below ``ALPHA``. The
contrasts on the newest rows follow the usual shape of a noisy search: it stands
still while its noisy scores reject every step, then moves; the halves alone saw the
move of a sigma-0.05 search on digits up to 170 queries late.

**Noise that wanders (session 13).** ``E[M]`` is ``sum_i w_i^2 tr(S_i)``: each row's
noise is read from the ``LOCAL`` (32) successive differences around it (its stretch of
the ball), not one level for the whole ball, and ``v`` counts those 32. A camera in low
light (redteam12's ``lowlight``: one scene under sensor noise walking in 0.02-0.05 of the
range) has quiet stretches beside loud ones; with one level the newest rows' contrast
read a loud stretch as drift (digits: 75 of 1,952 balls moving, 1 now). A search's kept
step is one difference among 32 (a 2 x 2 block of 0.1 adds 12% to one difference at
noise 0.05): the issue's search, one whose noise wanders as the camera's, and one that
sends its queries after each kept step three times as noisy all moved at the same
queries as with one level.

Measured on real speech until session 7 (``benchmarks/gateway_detection_long.py``,
audio, calibrated radius 0.035): the hiss of the noisy resends never went below p =
10^-2.2 (466 tested queries). Session 7 figures (every input, the ``few`` client, the
searches, the attackers who know the rule): ``docs/benchmarks/gateway.md``.

What it cannot see: a search whose centre, over its own cloud, moves less than about
the noise's spread divided by the square root of its size (it then gains
correspondingly little per query; a stuck search is a still ball), and a search that
samples ``MIN_ROWS`` or more queries with small noise around one point before jumping
farther than 0.6 of the radius (each cloud is still; NES-style estimates with large
steps). Both stay bounded by the query budget. Two nearby inputs (within 0.6 of the
radius) resent in random order, one far more often than the other, still read as drift
now and then (1:9 at 21 rows: ~3% of balls), a benign pattern the bar cannot separate.

**Cost.** A client chooses how many of its queries are candidates: a search near one
point makes every query one. :func:`still` measures all candidates of a batch against
every row they may see in one matrix product a part of the history (``|q|^2 + |r|^2 -
2 q.r``; until session 10 a pass of ``r - q`` over the whole history per candidate,
~4.5 ms a query at 10,000 rows of images); a distance within float32 rounding of a
limit is computed again as ``(r - q) . (r - q)`` (at most ``EXACT`` a candidate), so
every comparison is the one-query code's, and a cloud takes only the newest ``CAP``
rows of its ball, all that :func:`drift_p`, :func:`spread` and :func:`dims` read
(``tests/serve/test_serve_still_cost.py`` counts the rows; the verdicts are checked
against the one-query code there; ``benchmarks/gateway_detector_worstcase.py``).

Example::

    rows = base + rng.normal(0, 0.01, (40, 128))   # one input resent with noise, in order
    moving(rows)                                   # False: a still ball
    moving(base + np.linspace(0, 0.05, 40)[:, None] + rng.normal(0, 0.01, (40, 128)))  # True
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import special

from mlwarden.serve.dilution import Snapshot, _ring, sq_distances
from mlwarden.serve.profiles import unlit

ALPHA = 1e-5  # Bonferroni-adjusted p-value below which the ball's centre has moved
CAP = 256  # newest neighbours tested: a search is judged on its recent path
TIGHT = 0.6  # a resend lies within this fraction of the radius of its earlier copies
# rows (the query and its earlier copies) below which a ball is not tested and counts as
# moving: a noiseless search's first candidates, a few steps around its start, are a
# ball no test tells from a resend at ALPHA (5 rows of a walk reach p ~ 1e-3 at best)
MIN_ROWS = 6
# later queries of the key a waiting alert's ball has to fill in (settle), then it stands:
# a pool of 50 inputs resends each about every 50 queries, and the 4th copy waits for 2
HOLD = 250
# a re-encoded copy (brightness, a one-pixel shift, JPEG) lies within this multiple of the
# radius of its input's other copies: at the calibrated radius their balls hold 1-4 copies
WIDE = 2.0
# Box's effective dimensions (:func:`dims`) at or below which a cloud's variation is a
# re-encoding's (a gain and a few shifts: 2.2-4.8 measured), not a search's noise (~120)
LOW_DIMS = 8.0
# the p-value below which a wide cloud's centre has moved: stricter than ``ALPHA`` since
# a cloud twice the radius wide takes in other inputs; a few resent in random order make
# large steps along few directions that hide a search among them from ``ALPHA`` (digits,
# noise 0.05: p 1e-4 to 4e-4; one input's re-encodings are still, p about uniform)
WIDE_ALPHA = 1e-3
# rows of a cloud within ``WIDE`` from which its effective dimensions are told apart
# (copies' estimate is heavy-tailed on few rows: 8 copies <= LOW_DIMS 55-77%, 20: 92-98%)
FULL = 24
# values a row needs for the wide rule: in a table's few features a search's white noise
# spans as few dimensions as a re-encoding
MIN_VALUES = 64
# values (participation ratio, :func:`coordinate`) at or below which the copies of a cloud
# differ in a few values only: a coordinate search's candidates (Square's late windows:
# 1-2), not a re-encoding's (a one-pixel shift and a gain on digits: 8 at the least)
FEW_VALUES = 4.0
# the reach, in radii, of a still ball's chain (:func:`walked`): the key's recent rows this
# close to the query. neshopd's hops (NES one point at a time, each centre with a fresh
# decoy offset of 0.04) lie 1.9-2.6 radii apart on images; so do distinct inputs (tinted
# MNIST: 2.7% of random pairs within 2.5 radii, 7% within 3), hence the chain is read in
# time (``SPAN``) and on enough rows (``LINKS``), not by distance alone
CHAIN = 2.5
# queries back (of the key's) that a chain is read over: about 3 hops of NES (51 queries);
# over 300 a burst client's earlier inputs within ``CHAIN`` radii reached ``LINKS`` (images,
# bursts of 20: 4 alarms more in 2,000 queries), over 150 they did not
SPAN = 150
# rows of a chain beyond the radius (earlier balls) from which it is judged: about one hop
# of NES; at 3 radii a burst client's other inputs reached 40 (digits, bursts of 12
# copies of the first 30 digits in a row: 5 alarms more), at 2.5 they did not
LINKS = 40
# later queries of the key, of the ``HOLD`` after a waiting alert, within ``CHAIN`` radii of
# it, below which an alert whose ball never filled is dropped when ``HOLD`` has passed: the
# key left (a burst's shifted copies: 0-10 on digits); a search works within its
# budget's reach of its input, so its later queries are there (a burst of ``LEFT`` copies
# or fewer never reaches it on its own)
LEFT = 20
# Box's effective dimensions (:func:`dims`, newest ``FULL`` rows) at or below which a ball
# within the radius of distinct inputs, none a copy of the query, is natural inputs near
# each other (:func:`natural`): one photo's thumbnails of 3 x 3 and 4 x 4 pixels brought
# back to 8 x 8 digits, 5-15; a noisy search's white noise ~40
NATURAL_DIMS = 16.0
# successive differences each row's noise is read from (:func:`drift_p`): a camera's
# sensor noise in low light wanders (0.02-0.05 of the range over a scene of 100-400
# frames) and one level over a ball read a quiet stretch next to a loud one as drift
# (redteam12's ``lowlight`` on digits: 75 of 1,952 balls, 1 with 32 differences a row)
LOCAL = 32


@functools.lru_cache(maxsize=CAP + 1)
def contrasts(n: int) -> np.ndarray:
    """The time contrasts (m, n) a ball of ``n`` rows is tested on, each summing to 0:
    its newer half against its older half (a centre that moved once, anywhere), a
    least-squares linear trend (a centre that moves a little every query: a walk whose
    steps accumulate along a path), and its newest ``k`` rows against the rest, ``k`` =
    4, 8, ... up to ``n / 2`` (a search that stood still, then moved lately: the usual
    shape of a search whose noisy scores seldom accept a step).

    Example::

        contrasts(8).shape   # (4, 8): halves, trend, newest 4
    """
    rows = []
    h = n // 2
    rows.append(np.r_[np.full(h, -1.0 / h), np.full(n - h, 1.0 / (n - h))])
    t = np.arange(n) - (n - 1) / 2
    rows.append(t / float(t @ t))
    k = 4
    while k <= n // 2:
        rows.append(np.r_[np.full(n - k, -1.0 / (n - k)), np.full(k, 1.0 / k)])
        k *= 2
    out = np.stack(rows)
    out.setflags(write=False)  # cached (one per n up to CAP): shared by every caller
    return out


def _traces(x: np.ndarray) -> tuple[float, float]:
    """``tr(S)`` and ``tr(S^2)`` of the rows' covariance from successive differences."""
    n = len(x)
    d = np.diff(x, axis=0)
    sq = np.einsum("ij,ij->i", d, d)
    tr1 = float(sq.sum()) / (2 * (n - 1))
    # the sum of (d_i . d_j)^2 over non-adjacent pairs (independent differences only):
    # all pairs, |d' d|_F^2 (a dims x dims product: cheaper than the (n-1)^2 Gram),
    # less the diagonal and the adjacent pairs
    inner = d.T @ d if d.shape[1] < len(d) else d @ d.T
    adj = np.einsum("ij,ij->i", d[1:], d[:-1])
    far = float(np.sum(inner * inner)) - float(sq @ sq) - 2 * float(adj @ adj)
    pairs = (n - 1) ** 2 - (n - 1) - 2 * (n - 2)
    return tr1, max(far, 0.0) / pairs / 4


def drift_p(rows: np.ndarray) -> float:
    """The p-value that ``rows`` (n, dims), in time order, are draws around one fixed
    centre, against a centre that moved (the statistic of this module on each of the
    :func:`contrasts`, the smallest p-value times their number: Bonferroni). 0.0 when
    the rows cannot be tested (fewer than ``MIN_ROWS``, or successive differences
    without spread): such a ball counts as moving (fails closed).

    Example::

        drift_p(np.random.default_rng(0).normal(size=(50, 64)))   # about uniform on [0, 1]
    """
    x = np.asarray(rows, dtype=np.float64)[-CAP:]
    n = len(x)
    if n < MIN_ROWS:
        return 0.0
    tr1, tr2 = _traces(x)
    if tr1 <= 0 or tr2 <= 0:
        return 0.0
    dof = tr1 * tr1 / tr2  # Box's effective dimensions of the noise
    # tr(S) is itself estimated, from n - 1 successive differences: von Neumann's
    # estimate has the variance of a chi-square on about 2 (n-1)^2 / (3n - 4) degrees
    # of freedom per dimension, so the ratio is referred to F, not chi-square (as a
    # t-test, not a z-test): few differences carrying a two-input ball's spread (runs
    # of one input by chance) no longer read as drift
    w = contrasts(n)
    # E|w . x|^2 = sum_i w_i^2 tr(S_i): the noise of the rows each contrast weighs, from
    # a weighted sum of the squared differences (weights ``a``), whose effective count of
    # differences (Kish's, (sum a)^2 / sum a^2) is what von Neumann's n - 1 counts
    a, m = _local_weights(n)
    d = np.diff(x, axis=0)
    expect = a @ np.einsum("ij,ij->i", d, d)
    if (expect <= 0).any():
        return 0.0
    den = dof * 2 * m**2 / (3 * m - 1)
    gaps = w @ x  # each contrast's weighted sum of rows: 0 in expectation when still
    ratio = np.einsum("ij,ij->i", gaps, gaps) / expect
    # F's survival function itself (stats.f.sf calls it; ~0.2 ms less of checks a call)
    return min(1.0, float(special.fdtrc(dof, den, ratio).min()) * len(w))


@functools.lru_cache(maxsize=CAP + 1)
def _local_weights(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Weights (contrasts, n - 1) on a ball's squared successive differences whose sum is
    each of :func:`contrasts`' ``sum_i w_i^2 tr(S_i)``, row ``i``'s ``tr(S_i)`` the mean
    of ``|d|^2 / 2`` over the ``LOCAL`` differences around it (a window centred on the
    row, moved inside the ball at its ends: the newest rows take the newest), and each
    contrast's effective count of differences (Kish's ``(sum a)^2 / sum a^2``)."""
    w2 = contrasts(n) ** 2
    m = min(LOCAL, n - 1)
    lo = np.clip(np.arange(n) - m // 2, 0, n - 1 - m)
    edges = np.zeros((len(w2), n), dtype=np.float64)  # each row's window as +w2 .. -w2
    np.add.at(edges.T, lo, w2.T)
    np.add.at(edges.T, lo + m, -w2.T)
    a = np.cumsum(edges, axis=1)[:, : n - 1] / (2 * m)
    count = a.sum(axis=1) ** 2 / np.einsum("ij,ij->i", a, a)
    a.setflags(write=False)  # cached, as contrasts(n)
    count.setflags(write=False)
    return a, count


def spread(rows: np.ndarray) -> float:
    """RMS per value between successive rows (in time order) of the newest ``CAP``:
    about sigma * sqrt(2) for one input resent with fresh N(0, sigma) noise."""
    x = np.asarray(rows, dtype=np.float64)[-CAP:]
    if len(x) < 2:
        return 0.0
    d = np.diff(x, axis=0)
    return float(np.sqrt(np.mean(d * d)))


def dims(rows: np.ndarray) -> float:
    """Box's effective dimensions ``tr(S)^2 / tr(S^2)`` of the newest ``CAP`` rows'
    variation (from successive differences, :func:`_traces`): about 1-5 for one input
    re-encoded (a gain, a few one-pixel shifts), about the number of values for fresh
    white noise; ``inf`` when it cannot be told (fewer than 4 rows, no spread)."""
    x = np.asarray(rows, dtype=np.float64)[-CAP:]
    if len(x) < 4:
        return float("inf")
    tr1, tr2 = _traces(x)
    return tr1 * tr1 / tr2 if tr1 > 0 and tr2 > 0 else float("inf")


def recoded(rows: np.ndarray, lit: np.ndarray | None = None) -> bool:
    """Whether the cloud ``rows`` (n, dims), in time order, is one input re-encoded: at
    least ``MIN_ROWS`` rows of at least ``MIN_VALUES`` values whose successive
    differences span at most ``LOW_DIMS`` effective dimensions (:func:`dims`) around a
    centre that does not move (:func:`drift_p` at least ``WIDE_ALPHA``). Differences,
    not the rows: a search's kept steps make a walk, whose rows' covariance is dominated
    by a few directions although each step (a block here, another there) points
    somewhere new. ``lit``: a camera key's lighting directions, removed first
    (:func:`mlwarden.serve.profiles.unlit`)."""
    if len(rows) < MIN_ROWS or rows.shape[1] < MIN_VALUES:
        return False
    rows = rows if lit is None else unlit(rows[-CAP:], lit)  # the rows judged, alone
    return dims(rows) <= LOW_DIMS and drift_p(rows) >= WIDE_ALPHA


def moving(rows: np.ndarray, bar: float | None = None, lit: np.ndarray | None = None,
           along: np.ndarray | None = None) -> bool:  # fmt: skip
    """Whether the ball ``rows`` (n, dims), in time order, is not a resend: its centre
    drifts (``drift_p < ALPHA``) or, with ``bar``, its copies lie farther apart than
    ``bar`` RMS per value (:func:`spread`). ``lit``: a camera key's lighting directions,
    removed first (:func:`mlwarden.serve.profiles.unlit`). With ``along`` (a direction),
    the drift is tested off it: a re-encoding's gain varies its copies along the input's
    own direction, far more than a search's steps move them, and hid a search's drift."""
    rows = rows if lit is None else unlit(rows[-CAP:], lit)  # the rows judged, alone
    if bar is not None and spread(rows) > bar:
        return True
    if along is not None and float(along @ along) > 0:
        u = np.asarray(along, np.float64) / np.sqrt(float(along @ along))
        rows = rows - np.outer(rows @ u, u)
    return drift_p(rows) < ALPHA


def sliced(own: int, around: int, ball: np.ndarray, tight: float | None) -> bool:
    """Whether a query's own cloud (``own`` earlier copies within ``tight`` times the
    radius) is only a slice of a wider noise cloud: fewer than half of its ``around``
    earlier neighbours within the radius, whose ``ball`` (the newest of them, in time
    order, itself last) has
    successive differences span more than ``LOW_DIMS`` effective dimensions
    (:func:`dims`). A resend's copies lie within ``tight`` of each other (that is what
    ``tight`` measures), so its own cloud is most of its ball, or its ball varies along
    the few directions of a re-encoding (a gain and one-pixel shifts on images at the
    calibrated radius: the gain-only copies make the own cloud); a search whose white
    noise puts its queries about ``tight`` apart has part of them inside by chance (a
    digit's zero background clips the noise of 0.05 to ~0.5-0.6 of the radius), and
    that slice of a stuck search is as still as a resend (the issue's own noisy search,
    run 3: unflagged in 300 queries). Not with ``tight`` None (the own cloud is the
    ball); :func:`still` passes None but on tensors with the wide rule (not on text,
    whose typo copies of short tweets are a minority of their ball of 1-bit MinHash
    features, nor on audio, nor with ``similarity.stationary`` off)."""
    return tight is not None and 2 * own < around and dims(ball) > LOW_DIMS


def coordinate(rows: np.ndarray) -> bool:
    """Whether the cloud ``rows`` (n, dims), in time order, is a coordinate search at a
    point, not a resend: its successive differences change a few values each (the median
    participation ratio ``(sum d^2)^2 / sum d^4`` at most ``FEW_VALUES``). Square's
    candidates (a window of the perturbation flipped; Andriushchenko et al. 2020), SimBA's
    (one coordinate +-eps; Guo et al., ICML 2019) and ZOO's (coordinate finite
    differences; Chen et al., AISec 2017) around a point they cannot leave differ in one
    window each; encoding noise, a gain, a one-pixel shift or JPEG change every value of
    the input (a shift: its edges; 8 values at the least of 64 on digits, of 128 on
    images, but a gain on a thin digit reduced to 128 blocks: 3.1 in 4,097 excused
    clouds of the clients benchmark's images), and do so along a few directions, while
    a search's windows fall anywhere: the differences must also span more than
    ``LOW_DIMS`` effective dimensions (:func:`dims`). Rows of at least ``MIN_VALUES``
    values (in a table's few features noise changes as few); 5 rows at least."""
    x = np.asarray(rows, dtype=np.float64)[-CAP:]
    if len(x) < MIN_ROWS - 1 or x.shape[1] < MIN_VALUES:
        return False
    d = np.diff(x, axis=0)
    sq = np.einsum("ij,ij->i", d, d)
    quad = np.einsum("ij,ij->i", d * d, d * d)
    ok = quad > 0
    if not ok.any() or float(np.median(sq[ok] ** 2 / quad[ok])) > FEW_VALUES:
        return False
    return dims(x) > LOW_DIMS  # not a gain on a thin input (changes along the input itself)


def _resend(rows: np.ndarray, bar: float | None, coords: bool,
            lit: np.ndarray | None = None, along: np.ndarray | None = None) -> bool:  # fmt: skip
    """Whether a cloud judged on its drift is a resend's: still (:func:`moving`, off
    ``along``: the query's clipped values, :func:`still`) and, with ``coords``, no
    coordinate search's (:func:`coordinate`); ``lit`` as :func:`moving`'s."""
    rows = rows if lit is None else unlit(rows[-CAP:], lit)  # the rows judged, alone
    return not (coords and coordinate(rows)) and not moving(rows, bar, None, along)


# a second view of a cloud the rule would excuse: given its rows' numbers (time order),
# whether it is still there too (serve/sketch.py: a secret sketch of the raw input); with
# ``off=`` a direction of that view its drift is judged without (a query's clipped values)
Vet = Callable[..., bool]
# a query's clipped values (position -> the direction a change of its noise level moves
# them, in the reduced view and in the vet's, or None): :func:`still`
Clip = Callable[[int], tuple[np.ndarray, np.ndarray | None]]


def _vetted(vet: Vet | None, ids: np.ndarray) -> bool:
    return vet is None or vet(ids)


def still(sim: object, vs: np.ndarray, cand: list[int], before: Snapshot,
          tight: float | None = TIGHT, wide: float | None = None, lit: np.ndarray | None = None,
          vet: Vet | None = None,
          shifted: Callable[[int], tuple[np.ndarray, np.ndarray]] | None = None,
          clip: Clip | None = None, inner: float | None = None,
          ) -> tuple[set[int], dict[int, Cloud]]:  # fmt: skip
    """The positions of ``cand`` (in a batch ``vs`` just added to the similarity history
    ``sim``) whose own cloud does not move (their alerts are resends), and those whose
    cloud is a resend's but too small to judge yet (:class:`Cloud`; :func:`settle`).

    A query's own cloud is its earlier neighbours within ``tight`` times the radius
    (``sim.config.radius``; ``None``: the radius itself), where a resend's copies lie:
    other inputs' clouds within the radius do not join it (a ball of several resent
    inputs, drawn in random order, has runs of one input by chance that read as drift
    on the newest rows). A query with fewer than ``MIN_ROWS - 1`` earlier copies there
    is not excused now. It *waits* (:func:`settle`) when it has at least one earlier
    copy there and at least half of its earlier neighbours within the radius are such
    copies (a resend of something: a burst's first copies, a pool's); its alert then
    hangs on its ball within the radius (judged now if that already holds ``MIN_ROWS``
    rows). Otherwise (a search's first query at each new point; a search under noise
    that puts no copy within ``tight``, whose neighbours lie farther out) it stands.
    With ``shifted`` (position -> the offsets (S, dims) from the query's row to its
    shifted copies' rows, :func:`aligned`, and the direction of a gain on it), an own
    cloud too small to judge is gathered again up to a shift: a burst's one-pixel-shifted
    copies join their input's cloud, judged off the gain's direction (:func:`moving`
    with ``along``) once it holds ``MIN_ROWS`` rows (moving: the alert stands, as a
    search's; falling through to the rules below let a search hidden in re-encodings
    wait, flagged at 245 instead of 37); smaller, as below.
    With ``wide`` (a multiple of the radius), a query not excused so far is also judged
    on its earlier neighbours within ``wide`` times the radius: excused when they are
    one input re-encoded (:func:`recoded`), waiting while they are fewer than ``FULL``.
    Query ``j`` is judged on what it saw alone (the history before the batch, within
    ``history`` queries of it, and the batch's queries before it), so a batch gives the
    verdicts of one query at a time. ``lit``: a camera key's lighting directions
    (:mod:`mlwarden.serve.profiles`), removed from every cloud before it is judged.
    With ``vet``, a cloud is excused only when ``vet`` also finds it still (given its
    rows' numbers): the monitor's secret sketch of the raw input
    (:mod:`mlwarden.serve.sketch`). With ``clip`` (position -> the directions, reduced and
    in ``vet``'s view, in which a change of noise level moves the query's values at the
    input's bounds), an own cloud and a ball within the radius are judged off them
    (:func:`moving` with ``along``; the module docstring, "Clipped noise").
    """
    if not cand:
        return set(), {}
    hist = _ring(sim)[2]
    radius = sim.config.radius  # type: ignore[attr-defined]
    near = radius if tight is None else tight * radius
    if vs.shape[1] < MIN_VALUES:
        wide = None  # a table's few features: white noise spans as few dimensions there
    reach = radius if wide is None else wide * radius
    coords = wide is not None  # tensors (not text's MinHash bits, nor audio), as the wide rule
    # audio (the own cloud is the ball): a moving ball's copies of the query alone (:func:`_apart`)
    inside = (inner * radius,) if inner is not None and tight is None else ()
    chain = (CHAIN * radius,) if (coords or inside) and CHAIN else ()
    limits = tuple(r * r * vs.shape[1] for r in (near, radius, reach, *chain, *inside))
    bar = None if tight is None else radius  # copies farther apart than this: no resend
    # text's typo copies are no own cloud of each other; a camera key's frames spread
    # along its drifting light, and within the radius their sensor noise is white (the
    # slice veto flagged 107 of 400 frames of tests/serve/test_serve_profiles.py's camera)
    cut = tight if coords and lit is None else None
    sparse = sim.config.window // 4  # type: ignore[attr-defined]
    seen = _Seen(_timeline(sim, vs, before), np.asarray(vs, dtype=np.float32)[cand], limits)
    out, small = set(), {}
    for c, j in enumerate(cand):
        q, me = seen.qs[c], before.first + j
        balls = seen.balls(c, me, hist)
        along, off = clip(j) if clip is not None else (None, None)
        vet_c = functools.partial(vet, off=off) if vet is not None and off is not None else vet
        vet_j = _chained(vet_c, seen, balls, q, me, lit, along) if coords and chain else vet_c
        if len(balls[0]) + 1 < MIN_ROWS and shifted is not None:
            offsets, gain = shifted(j)
            up_to = seen.aligned(c, me, hist, limits[0], offsets)
            if len(up_to.rows) >= MIN_ROWS:  # judged up to a shift, off the gain
                copies = not (coords and coordinate(up_to.rows))  # no coordinate search's
                if copies and not moving(up_to.rows, bar, lit, gain) and _vetted(vet_j, up_to.ids):
                    out.add(j)
                continue
        # its own cloud: judged on its newest CAP rows; a slice of a wider noise cloud is
        # judged as a query without an own cloud (below)
        if len(balls[0]) + 1 >= MIN_ROWS and not _sliced(seen, balls, q, me, cut):
            own = seen.cloud(balls[0], q, me)
            whole = _resend(own.rows, bar, coords, lit, along) and _vetted(vet_j, own.ids)
            if whole or (inside and _apart(seen, balls, q, me, radius, vet_c, lit, along)):
                out.add(j)
            continue
        # a copy of its own, and its copies at least half of its neighbours within the radius
        copy = len(balls[0]) >= 1 and 2 * len(balls[0]) >= len(balls[1])
        held = seen.cloud(balls[1], q, me) if copy else None
        if held is not None and len(balls[1]) + 1 >= MIN_ROWS:
            if _resend(held.rows, bar, coords, lit, along) and _vetted(vet_j, held.ids):
                out.add(j)
            continue
        far = seen.cloud(balls[2], q, me) if wide is not None else None
        if far is not None and recoded(far.rows, lit) and _vetted(vet_j, far.ids):
            out.add(j)
        elif held is not None:  # it waits on its ball within the radius, and on its wide ball
            held.far, held.far_ids = (far.rows, far.ids) if far is not None else (None, None)
            small[j] = held
        elif coords and len(balls[1]) + 1 >= FULL and me - seen.ids[balls[1][1 - FULL]] >= sparse:
            ball = seen.cloud(balls[1], q, me)  # no copies: many inputs near each other?
            if natural(ball.rows, lit) and _vetted(vet_j, ball.ids):
                out.add(j)
    return out, small


def _apart(seen: _Seen, balls: list[np.ndarray], q: np.ndarray, me: int, radius: float,
           vet: Vet | None, lit: np.ndarray | None, along: np.ndarray | None) -> bool:  # fmt: skip
    """Audio: whether query ``me``, whose ball within the radius moves, is a resend of its
    own input all the same: its copies within ``inner`` (:func:`still`) of the radius
    (``balls[-1]``) are
    ``MIN_ROWS`` rows or more, no farther apart than the radius, still, and still in
    ``vet``'s view, and its chain (:func:`_chained`: the key's last ``SPAN`` queries within
    ``CHAIN`` radii) does not walk. A ball of two nearby inputs sent one after the other (a
    folder walked class by class) moves; each one's own copies do not, and the inputs
    near it in the last ``SPAN`` queries are its class's, resent in random order."""
    pos = balls[-1]
    if len(pos) + 1 < MIN_ROWS:
        return False
    own = seen.cloud(pos, q, me)
    if moving(own.rows, radius, lit, along):
        return False
    return _chained(vet, seen, balls, q, me, lit, along)(own.ids)


def natural(rows: np.ndarray, lit: np.ndarray | None = None) -> bool:
    """Whether a query's ball within the radius ``rows`` (n, dims), in time order, with
    no own cloud, is many natural inputs near each other, not a search: its newest
    ``FULL`` rows' successive differences span at most ``NATURAL_DIMS`` effective
    dimensions (:func:`dims`; a search's white noise: ~40 on digits), no coordinate
    search's (:func:`coordinate`), around a centre that does not move (:func:`drift_p`
    at least ``WIDE_ALPHA``). ``lit``: as :func:`recoded`'s."""
    rows = rows[-CAP:] if lit is None else unlit(rows[-CAP:], lit)
    if len(rows) < FULL or rows.shape[1] < MIN_VALUES:
        return False
    if dims(rows[-FULL:]) > NATURAL_DIMS or coordinate(rows):
        return False
    return drift_p(rows) >= WIDE_ALPHA


def walked(rows: np.ndarray, lit: np.ndarray | None = None,
           along: np.ndarray | None = None) -> bool:  # fmt: skip
    """Whether a still ball's chain ``rows`` (n, dims), in time order (the key's recent
    rows within ``CHAIN`` radii of its query, the query last) moves: :func:`drift_p`
    below ``ALPHA``. A search that samples one point at a time (NES: 50 draws around a
    centre, then a step, each centre with a fresh decoy offset, so each hop is a still
    ball of its own) makes a chain of still balls, each a run of queries a few radii
    from the last: its newest rows stand apart from the older ones while the noise
    between successive rows (within a hop) is small. One input's re-encodings, or a few
    nearby inputs resent in random order, mix in time: their successive differences
    carry the jumps between them and their centre stays put. ``lit``: a camera key's
    lighting directions, removed first; ``along``: as :func:`moving`'s."""
    rows = rows if lit is None else unlit(rows[-CAP:], lit)
    return moving(rows, None, None, along)


def _chained(vet: Vet | None, seen: _Seen, balls: list[np.ndarray], q: np.ndarray, me: int,
             lit: np.ndarray | None, along: np.ndarray | None = None) -> Vet:  # fmt: skip
    """``vet`` and, before a cloud of query ``me`` is excused, its chain not
    :func:`walked`: the rows within ``CHAIN`` radii (``balls[3]``) of the key's last
    ``SPAN`` queries, when ``LINKS`` or more of them lie beyond the radius (earlier
    balls; fewer: the ball itself, judged already)."""

    def vetted(ids: np.ndarray) -> bool:
        if not _vetted(vet, ids):
            return False
        chain, near = (p[seen.ids[p] >= me - SPAN] for p in (balls[3], balls[1]))
        if len(chain) - len(near) < LINKS:
            return True
        return not walked(seen.cloud(chain, q, me).rows, lit, along)

    return vetted


def _sliced(seen: _Seen, balls: list[np.ndarray], q: np.ndarray, me: int,
            tight: float | None) -> bool:  # fmt: skip
    """:func:`sliced` of query ``me``'s own cloud (``balls[0]``) among its neighbours within
    the radius (``balls[1]``): the dimensions of its newest ``FULL`` rows, gathered only
    when the count makes it a slice (white noise: 20+ on 24 rows; the bounded work of
    :func:`still`, tests/serve/test_serve_still_cost.py)."""
    own, around = len(balls[0]), len(balls[1])
    if tight is None or 2 * own >= around:
        return False
    return sliced(own, around, seen.cloud(balls[1][-(FULL - 1) :], q, me).rows, tight)


# float32 rounding of |q|^2 + |r|^2 - 2 q.r and of (r - q) . (r - q): each within
# (dims + 3) 2^-24 (|q|^2 + |r|^2) times a few of the true distance, whatever the order of
# the sums (Higham's bound), doubled for room; a distance this close to a limit is
# computed again exactly as the one-query code computes it
_SLACK = 8.0 * 2.0**-24
# distances computed again a candidate, at most (on average over a part): an attacker can
# put its queries at one distance from each other, on a limit; past this the product's own
# distance decides those rows (its rounding, ~1e-6 of the rows' squared norms, is no
# difference that the rule's constants, TIGHT, WIDE and the radius, mean)
EXACT = 4 * CAP
CHUNK = 64  # candidates measured at once (their distances to a full history: 2.6 MB)
#: the work of :func:`still` since start-up: candidates judged, distances computed again
#: row by row (near a limit), rows gathered into clouds (the regression test counts them)
WORK = {"candidates": 0, "exact": 0, "gathered": 0}


def _timeline(sim: object, vs: np.ndarray, before: Snapshot,
              ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:  # fmt: skip
    """(rows, squared norms, query numbers) a query of the batch ``vs`` just added to
    ``sim`` may see, in parts whose numbers ascend from part to part: the rows the batch
    overwrote, the ring's older rows (at most two runs of slots, views: no copy), the
    batch (callers take the numbers ``history`` back from a query, and before it)."""
    ring, norms, hist, nxt, filled = _ring(sim)
    start = nxt % hist if filled == hist else 0
    parts = [(before.rows, before.norms, before.ids)]
    for a, b in ((start, filled), (0, start)):
        ids = nxt - 1 - (nxt - 1 - np.arange(a, b)) % hist  # ascending along a run
        k = int(np.searchsorted(ids, before.first))  # the batch's own slots come last
        parts.append((ring[a : a + k], norms[a : a + k], ids[:k]))
    batch = np.asarray(vs, dtype=np.float32)
    parts.append((batch, np.einsum("ij,ij->i", batch, batch), before.first + np.arange(len(vs))))
    return [p for p in parts if len(p[2])]


class _Seen:
    """The squared distances of the candidates ``qs`` to every row a query of the batch
    may see (:func:`_timeline`): one matrix product a part, not a pass over the history
    per candidate (~4.5 ms a query on a stream whose every query is a candidate, session
    9). Those within :data:`_SLACK` of one of ``limits`` are computed again as ``(r -
    q) . (r - q)``, the one-query code's arithmetic, so every comparison with a limit,
    and every cloud, is the one it made."""

    def __init__(self, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]], qs: np.ndarray,
                 limits: tuple[float, ...]) -> None:  # fmt: skip
        self.parts, self.qs, self.limits = parts, qs, limits
        self.ids = np.concatenate([p[2] for p in parts])  # ascending
        self.ends = np.cumsum([len(p[2]) for p in parts])
        self.first, self.d2 = 0, np.empty((0, len(self.ids)), dtype=np.float32)
        WORK["candidates"] += len(qs)

    def _measure(self, a: int) -> None:
        """The distances of candidates ``a`` to ``a + CHUNK`` (a few MB at a time: a batch
        of thousands of candidates does not hold them all at once)."""
        qs = self.qs[a : a + CHUNK]
        qn = np.einsum("ij,ij->i", qs, qs)
        blocks = []
        for rows, norms, _ in self.parts:
            d2 = sq_distances(qs, qn, rows, norms)
            slack = np.float32(_SLACK * (qs.shape[1] + 3)) * (qn[:, None] + norms[None])
            band = np.zeros(d2.shape, dtype=bool)
            for limit in self.limits:
                band |= np.abs(d2 - np.float32(limit)) <= slack
            i, r = np.nonzero(band)
            if 0 < len(i) <= EXACT * len(qs):  # beyond: rows placed on a limit on purpose
                diff = rows[r] - qs[i]
                d2[i, r] = np.einsum("ij,ij->i", diff, diff)
                WORK["exact"] += len(i)
            blocks.append(d2)
        self.first, self.d2 = a, np.concatenate(blocks, axis=1) if len(blocks) > 1 else blocks[0]

    def balls(self, c: int, me: int, hist: int) -> list[np.ndarray]:
        """For each limit, the positions (ascending numbers) of the rows earlier than query
        ``me`` and within ``hist`` of it that lie closer to candidate ``c``."""
        if not self.first <= c < self.first + len(self.d2):
            self._measure(c - c % CHUNK)
        lo, hi = np.searchsorted(self.ids, [me - hist, me])
        row = self.d2[c - self.first, lo:hi]
        return [np.flatnonzero(row < limit) + lo for limit in self.limits]

    def cloud(self, pos: np.ndarray, q: np.ndarray, me: int) -> Cloud:
        """A :class:`Cloud` of the newest ``CAP - 1`` rows at ``pos``, ``q`` (``me``) last:
        all of a ball that :func:`drift_p`, :func:`spread` and :func:`dims` read."""
        pos = pos[-(CAP - 1) :]
        rows = np.empty((len(pos) + 1, len(q)), dtype=np.float32)
        rows[:-1] = self._rows(pos)
        rows[-1] = q
        WORK["gathered"] += len(pos)
        return Cloud(me, q, rows, np.r_[self.ids[pos], me])

    def _rows(self, pos: np.ndarray) -> np.ndarray:
        """The rows at positions ``pos`` (ascending) of the parts, gathered."""
        rows = np.empty((len(pos), self.qs.shape[1]), dtype=np.float32)
        part = np.searchsorted(self.ends, pos, side="right")
        for p in np.unique(part).tolist():
            at = part == p
            rows[at] = self.parts[p][0][pos[at] - (self.ends[p] - len(self.parts[p][2]))]
        return rows

    def aligned(self, c: int, me: int, hist: int, limit: float, offsets: np.ndarray) -> Cloud:
        """Candidate ``c``'s own cloud up to a shift (:func:`aligned`), as :meth:`cloud`
        gives its plain one (after :meth:`balls` of ``c``): the newest ``CAP - 1`` rows."""
        q = self.qs[c]
        off2 = np.einsum("ij,ij->i", offsets, offsets)
        # a row within sqrt(limit) of q + o lies within sqrt(limit) + |o| of q (the triangle)
        reach = (np.sqrt(limit) + np.sqrt(float(off2.max(initial=0.0)))) ** 2
        lo, hi = np.searchsorted(self.ids, [me - hist, me])
        pos = np.flatnonzero(self.d2[c - self.first, lo:hi] < reach * (1 + 1e-4)) + lo
        keep, moved = aligned(self._rows(pos), q, limit, offsets)
        pos, moved = pos[keep][-(CAP - 1) :], moved[-(CAP - 1) :]
        WORK["gathered"] += len(pos)
        return Cloud(me, q, np.vstack([moved, q[None]]), np.r_[self.ids[pos], me])


def aligned(rows: np.ndarray, q: np.ndarray, limit: float,
            offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Which of ``rows`` (in time order) lie within squared distance ``limit`` of ``q`` or
    of one of its shifted copies ``q + offsets[s]`` (positions), each moved back by its
    nearest copy's offset (``row - offsets[s]``): the query's own cloud up to a shift (an
    identity modulo translation).

    A shift is linear in the reduced rows (block means, an affine projection), so a copy
    of the same input shifted the other way lands, moved back, where an unshifted copy
    would; a search's queries shifted at random land where its path would (moved back,
    ``q + reduce(shift(x_r - x_q))``: the same drift), so the cloud is judged by the
    same test. What it excuses that the plain cloud does not: an input sent at several
    offsets of at most the largest shift (a grid of 25 translations at most)."""
    offs = np.vstack([np.zeros((1, len(q)), np.float32), np.asarray(offsets, np.float32)])
    diff = rows - q
    # |row - (q + o)|^2 for every offset o at once
    sq = (np.einsum("ij,ij->i", diff, diff)[:, None] - 2 * (diff @ offs.T)
          + np.einsum("ij,ij->i", offs, offs))  # fmt: skip
    best = np.argmin(sq, axis=1) if len(rows) else np.zeros(0, np.int64)
    keep = np.flatnonzero(sq[np.arange(len(rows)), best] < limit)
    return keep, rows[keep] - offs[best[keep]]


@dataclass
class Cloud:
    """A flagged query waiting on its ball (:func:`still`, :func:`settle`): its number in
    the similarity history, its row, and its ball so far (itself included) with their
    numbers, in time order; ``far`` / ``far_ids``: its ball within the ``wide`` reach
    (None: not judged so), excused when a re-encoding's (:func:`recoded`). ``seq`` and
    ``kinds``: the key's sequence number of the query and the alerts it raised (set by
    the caller; reported if they stand); ``around``: the key's later queries within
    ``CHAIN`` radii of it so far (:func:`settle`)."""

    gid: int
    q: np.ndarray
    rows: np.ndarray
    ids: np.ndarray
    seq: int = 0
    kinds: tuple[str, ...] = ()
    far: np.ndarray | None = None
    far_ids: np.ndarray | None = None
    around: int = 0


def settle(sim: object, vs: np.ndarray, before: Snapshot, held: list[Cloud],
           tight: float | None = TIGHT, wide: float | None = None, lit: np.ndarray | None = None,
           vet: Vet | None = None) -> tuple[list[Cloud], list[Cloud]]:  # fmt: skip
    """The held alerts after a batch ``vs`` just added to ``sim``: ``(stand, waiting)``;
    the others were resends and are dropped.

    Each held query's ball takes in the batch's later queries within the radius of it
    (and its ``far`` ball those within ``wide`` times the radius), one at a time; the
    first time its ball holds ``MIN_ROWS`` rows (within ``history`` of the newest) it is
    judged as :func:`still` judges a cloud (moving: the alert stands), and each time its
    ``far`` ball gains a row, from ``MIN_ROWS`` rows to ``FULL``, it is excused if that
    is one input re-encoded (:func:`recoded`); one that may not wait on its ball within
    the radius (``near`` False) stands when its ``far`` ball reaches ``FULL`` rows
    unexcused, or drifts. One whose ball has not filled when ``HOLD`` later queries of
    the key have come stands (fails closed): a search kept waiting gains at most ``HOLD``
    queries of delay, and one that fills its balls with copies of its own points gains
    nothing (a copy is no step); but when fewer than ``LEFT`` of those queries came
    within ``CHAIN`` radii of it (``Cloud.around``) the key left it, a short run of
    copies, and it is dropped. Query by query, so the verdicts do not depend on the
    batches. ``lit`` and ``vet``: as :func:`still`'s.
    """
    hist = _ring(sim)[2]
    radius = sim.config.radius  # type: ignore[attr-defined]
    limit = radius * radius * vs.shape[1]
    reach = limit * (1.0 if wide is None else wide * wide)
    bar = None if tight is None else radius
    ids = before.first + np.arange(len(vs))
    batch = np.asarray(vs, dtype=np.float32)
    stand: list[Cloud] = []
    waiting: list[Cloud] = []
    if not held:
        return stand, waiting
    # every held cloud against the batch at once (up to HOLD clouds wait: a Python pass
    # of numpy calls each cost ~20 us a cloud a batch); the same sums, row for row
    gid = np.array([h.gid for h in held])
    dists = _to_batch(np.stack([h.q for h in held]), batch)
    fars = (dists < reach) & np.array([h.far is not None for h in held])[:, None]
    later = (ids > gid[:, None]) & (ids <= gid[:, None] + HOLD)
    touched = (later & ((dists < limit) | fars)).any(axis=1).tolist()
    due = (ids[-1] >= gid + HOLD).tolist()
    chain = (CHAIN * radius) ** 2 * vs.shape[1]
    around = (later & (dists < chain)).sum(axis=1).tolist()
    for h, d2, far, new, seen, gone, k_near in zip(held, dists, fars, later, touched, due, around,
                                                   strict=True):  # fmt: skip
        h.around += k_near
        verdict = None
        hits = np.flatnonzero(new & ((d2 < limit) | far)).tolist() if seen else []
        for k in hits:
            verdict = _join(h, batch[k], int(ids[k]), hist, d2[k] < limit, far[k], bar, lit, vet,
                            wide is not None)  # fmt: skip
            if verdict is not None:
                break
        if verdict is None and gone:
            verdict = h.around >= LEFT  # the key left it: a short run of copies
        if verdict is None:
            waiting.append(h)
        elif verdict:
            stand.append(h)
    return stand, waiting


def _to_batch(qs: np.ndarray, batch: np.ndarray) -> np.ndarray:
    """(len(qs), len(batch)) squared distances ``(r - q) . (r - q)``, each summed as the
    one-query ``einsum`` sums it (bit for bit), in chunks of a few MB."""
    step = max(1, (1 << 20) // max(1, batch.size))
    out = np.empty((len(qs), len(batch)), dtype=np.float32)
    for a in range(0, len(qs), step):
        diff = batch[None] - qs[a : a + step, None]
        out[a : a + step] = np.einsum("hbd,hbd->hb", diff, diff)
    return out


def _join(h: Cloud, row: np.ndarray, gid: int, hist: int, inside: bool, far: bool,
          bar: float | None, lit: np.ndarray | None = None,
          vet: Vet | None = None, coords: bool = False) -> bool | None:  # fmt: skip
    """Add a later query ``row`` (number ``gid``) to the held cloud ``h`` (``inside``: within
    the radius of it; ``far``: within its wide reach) and judge it: True, it stands;
    False, a resend; None, it waits. Its ball within the radius decides once full."""
    if inside:
        keep = h.ids >= gid - hist
        h.rows, h.ids = np.concatenate([h.rows[keep], row[None]]), np.r_[h.ids[keep], gid]
        if len(h.rows) >= MIN_ROWS:
            return not _resend(h.rows, bar, coords, lit) or not _vetted(vet, h.ids)
    if far and h.far is not None and h.far_ids is not None:
        keep = h.far_ids >= gid - hist
        h.far, h.far_ids = np.concatenate([h.far[keep], row[None]]), np.r_[h.far_ids[keep], gid]
        if recoded(h.far, lit) and _vetted(vet, h.far_ids):
            return False
        if len(h.far) >= FULL:
            h.far = h.far_ids = None  # no re-encoding: its ball within the radius decides
    return None


def _numbered(sim: object, vs: np.ndarray, before: Snapshot) -> list[tuple[np.ndarray, np.ndarray]]:
    """(rows, global query numbers) a query of the batch ``vs`` just added to ``sim`` may
    see: the history kept from before the batch, the rows the batch overwrote, and the
    batch itself (callers mask by number: ``history`` back, and earlier than the query)."""
    ring, _, hist, nxt, filled = _ring(sim)
    slots = np.arange(filled)
    ids = nxt - 1 - (nxt - 1 - slots) % hist  # slot s was written last by query ids[s]
    old = ids < before.first  # the batch's own rows are taken from ``vs``
    batch = before.first + np.arange(len(vs))
    return [(ring[:filled][old], ids[old]), (before.rows, before.ids),
            (np.asarray(vs, dtype=np.float32), batch)]  # fmt: skip
