"""A key working on one input: the spread of its last distinct queries.

The similarity count (:class:`mlwarden.serve.monitor.Similarity`) sees a noisy random
search only while its per-query noise keeps the queries within the radius of each other.
OARS (Feng et al., "Stateful Defenses for Machine Learning Models Are Not Yet Secure
Against Black-box Attacks", CCS 2023, arXiv:2303.06280) grows the noise until the
defence stops answering with rejections; learnt on an attacker's own copy of the gateway
it lands at sigma 0.10-0.17 of the range, 2-3x the radius's fit, where no query has a
neighbour (``benchmarks/gateway_detection_redteam11.py``, ``oars-blind``).

What such a search cannot hide is where its queries are: all of them are one input plus
small steps plus fresh noise, so the key's last ``window`` distinct queries spread over a
ball of about sigma per value around one point, while distinct natural inputs spread
over the data. The statistic, per query, over the key's last ``window`` distinct queries
(exact repeats never reach it), as the similarity detector measures them (reduced,
projected): the root mean square over values of their variance, in units of the input
range (``sqrt(mean_d var_d)``). On 8x8 digits, windows of 50: any 50 queries of the
benign streams (distinct, drawn with replacement, with noise 0.02, 100 inputs resent)
spread 0.248 or more; a noisy search at sigma 0.05 / 0.10 / 0.15 / 0.20 / 0.30 at most
0.067 / 0.096 / 0.129 / 0.163 / 0.223. Noise cannot help an attacker here without
drowning its own search: it moves the spread up only as fast as sigma.

A query is flagged when that spread is below ``detection.spread.bar``. Natural inputs
can be narrow too: a client resending one input (test-time augmentation, a still camera),
a burst of a few photos re-encoded, 50 digits of one class in a row (0.139 for zeros).
They differ from a search's window in how many directions their variation spans: Box's
effective dimensions of the window's successive differences
(:func:`mlwarden.serve.stationary.dims`) are 5-18 for one-class runs of digits and for
bursts of re-encoded MNIST digits, 38-47 for a noisy search's white noise at sigma
0.05-0.2 (windows of 50). So on inputs of at least ``stationary.MIN_VALUES`` values a
narrow window flags only when it spans more than ``WHITE_DIMS`` dimensions, and the rule
runs only there: tables' few features are not told apart so (benign loggers, long
rescoring streams and a raw breast-cancer sample were flagged in tests/serve; wine
``burst20`` 10 -> 16 per 1,000), so on reduced vectors of fewer than ``MIN_VALUES``
values the rule is off (lead, session 11; i24g measured tabular oars-blind 1/5 -> 4/5
flagged with it on). An alert stands only where the still-ball rule
(:func:`mlwarden.serve.stationary.still`) does not find the query's own cloud of copies
still (:meth:`mlwarden.serve.monitor.Monitor._narrow`). Limits: an attacker who puts its
noise in a few fixed directions instead of white noise passes the gate; one who
interleaves decoys far from its input widens the window, at the cost of its budget.

The attacker's answer to an absolute bar is more noise (OARS learns sigma 0.15-0.17 of
the range on digits, 0.4-0.5 on images, against the bar alone). So the window is also
measured net of its noise (:func:`above_floor`, session 12): its covariance spectrum is
white noise's Marchenko-Pastur bulk plus the spikes of a few natural directions; the
floor is read off the bulk's median, and only what the spikes hold above white noise's
largest eigenvalue counts. Fresh white noise, however loud, only raises the floor: a
search's windows keep its steps (digits, windows of 50, sigma 0.05-0.8: at most 0.033;
calibrated 3x32x32 images: 0.007), distinct inputs and one class at a time most of their
spread (digits >= 0.119, images >= 0.026). A white window under ``spread.net`` times
``bar`` is flagged too, checked every ``STRIDE``-th query (an eigendecomposition of a
50 x 50 Gram matrix, ~0.1 ms); the white-noise gate and the still-ball veto stand as for
the bar. Limits: noise shaped into fewer than ``WHITE_DIMS`` directions (a few fixed
directions, a coarse grid, a subset of the values) is no white window and passes both.

A key's last ``window`` queries are a time window: 10 distinct benign queries before each
search query (the literature's dilution, redteam12's ``--mix 10``) leave 5 of the
search's in it, and natural inputs' spikes. So on one query in ``STRIDE`` (drawn at
random from the gateway's secret, :meth:`Spread.drawn`, session 14: a fixed stride let a
client time its search between the checks) the same tests run on the query's
*neighbourhood* too (:func:`crowded`, session 13): its ``window``
nearest among the key's last ``spread.near`` distinct queries (the similarity history's
rows, :meth:`mlwarden.serve.monitor.Similarity.nearest`), where a search's queries are
each other's nearest while their noise is under the distance to the natural inputs
mixed in (8x8 digits, 10 distinct digits a query, fixed sigma 0.2 / 0.3 / 0.4: flagged
5/5 / 5/5 / 3/5 within 300, main 0/5), when that neighbourhood is a cluster of the key's
traffic (spread under ``CLUSTER`` times the time window's): the nearest 50 of 1,000
random tensors lean towards the query as a search's centre does. Limits: louder noise
(digits sigma 0.5, what OARS learns then) puts natural inputs nearer than the search's
own queries; natural inputs nearest the attacked one, mixed in, make its neighbourhood
natural; a search spread over more than ``spread.near`` queries has fewer than
``window`` in the neighbourhood's reach.

Cost: running sums over the window, a few vector operations of ``dims`` values a query;
every ``STRIDE``-th query the white-noise gate, on a white window one eigenvalue
decomposition, and the neighbourhood: one pass over ``spread.near x dims`` stored values
and its white-noise gate. A window's tests read one Gram matrix (:func:`gram_of`: its
spread, its differences' dimensions, its spectrum), not the rows each time (session 14:
the neighbourhood +25.7 -> +14.6 us a benign digits query under load 6, same alerts). State: the
window's rows (``window x dims`` float64: 25 KB at 50 x 64); the neighbourhood's rows
are the similarity history's.

Example::

    sp = Spread(window=50, dims=64)
    spreads = sp.observe_many(vs)   # NaN until 50 queries were seen
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np

from mlwarden.serve.stationary import CAP, dims

WHITE_DIMS = 24.0  # effective dimensions above which a narrow window's variation is noise
STRIDE = 10  # the floor test (an eigendecomposition of the window) runs every STRIDE-th query
CENTRED = 1.5  # a window's mean an input: its spread over the noise a mean of its rows keeps
CLUSTER = 0.75  # a neighbourhood window's spread under this of the key's window: a cluster
_REPS = 200  # white windows simulated for the noise law (fixed seed: the same law each run)


class Spread:
    """The spread of one key's last ``window`` distinct reduced queries (see module doc).

    Kept as running sums over the window (the rows' sum and their squared norms' sum),
    so a query costs a few vector operations; the sums are taken again from the window's
    rows every ``REFRESH`` windows (no rounding drift over a long history)."""

    REFRESH = 64

    def __init__(self, window: int, dims: int) -> None:
        self.window = window
        self._ring = np.zeros((window, dims), dtype=np.float64)
        self._sq = np.zeros(window, dtype=np.float64)  # each row's squared norm
        self._sum = np.zeros(dims, dtype=np.float64)
        self._norms = 0.0
        self._seen = 0  # queries added so far
        self._refresh = self.REFRESH * window  # when the sums are taken again
        self._due: int | None = None  # the query count whose neighbourhood is judged next

    def observe_many(self, vs: np.ndarray) -> np.ndarray:
        """Add queries ``vs`` (B, dims) in order; the spread of the last ``window``
        queries after each one (NaN while fewer than ``window`` were seen)."""
        vs = np.asarray(vs, dtype=np.float64)
        if len(vs) == 1:
            out = np.array([self._add(vs[0])])
        else:  # chunks of at most a window: the rows each chunk pushes out are distinct
            w = self.window
            out = np.concatenate([self._chunk(vs[a : a + w]) for a in range(0, len(vs), w)])
        if self._seen >= self._refresh:
            self._sum = self._ring.sum(axis=0)
            self._norms = float(self._sq.sum())
            self._refresh = self._seen + self.REFRESH * self.window
        return out

    def _add(self, v: np.ndarray) -> float:
        """One query (the common case: a request of one input analysed alone)."""
        w = self.window
        slot = self._seen % w
        sq = float(v @ v)
        self._sum += v
        self._sum -= self._ring[slot]  # zeros until the window is full
        self._norms += sq - self._sq[slot]
        self._ring[slot] = v
        self._sq[slot] = sq
        self._seen += 1
        if self._seen < w:
            return math.nan
        var = self._norms / w - float(self._sum @ self._sum) / (w * w)
        return math.sqrt(max(var, 0.0) / len(v))

    def _chunk(self, vs: np.ndarray) -> np.ndarray:
        """At most ``window`` queries at once: running sums by cumulative sums."""
        w = self.window
        slots = (self._seen + np.arange(len(vs))) % w
        sq = np.einsum("ij,ij->i", vs, vs)
        sums = self._sum + np.cumsum(vs - self._ring[slots], axis=0)
        norms = self._norms + np.cumsum(sq - self._sq[slots])
        var = norms / w - np.einsum("ij,ij->i", sums, sums) / (w * w)
        out = np.sqrt(np.maximum(var, 0.0) / vs.shape[1])
        out[self._seen + np.arange(len(vs)) + 1 < w] = np.nan
        self._ring[slots], self._sq[slots] = vs, sq
        self._sum, self._norms = sums[-1].copy(), float(norms[-1])
        self._seen += len(vs)
        return out

    @property
    def seen(self) -> int:
        """Queries added so far."""
        return self._seen

    def drawn(self, n: int, draws: np.random.Generator) -> list[int]:
        """Positions of the last ``n`` queries added whose neighbourhood is judged
        (:func:`crowded`): one query in ``STRIDE`` on average, at gaps drawn from
        ``draws`` (geometric, mean ``STRIDE``: the gateway's secret generator). Not every
        ``STRIDE``-th query counted from the key's first: a client knows its own count,
        and a search mixed 9:1 with its queries one past a multiple of ten had its
        neighbourhood never judged (redteam's ``--mix 9`` one query late: 0/5)."""
        first = self._seen - n + 1  # the count of position 0
        if self._due is None:
            self._due = first - 1 + int(draws.geometric(1.0 / STRIDE))
        out = []
        while self._due <= self._seen:
            if self._due >= first:
                out.append(self._due - first)
            self._due += int(draws.geometric(1.0 / STRIDE))
        return out

    def rows(self) -> np.ndarray:
        """The last ``window`` queries (fewer before the window is full), oldest first."""
        n = min(self._seen, self.window)
        return self._ring[(self._seen - n + np.arange(n)) % self.window]

    def nbytes(self) -> int:
        return int(self._ring.nbytes + self._sq.nbytes + self._sum.nbytes)

    def dump(self) -> dict[str, np.ndarray]:
        """The window and its running sums as they are (a restart's next spread is the
        one it would have been: 25 KB at 50 x 64)."""
        return {"ring": self._ring.copy(), "sq": self._sq.copy(), "sum": self._sum.copy(),
                "meta": np.array([self._seen, self._refresh], dtype=np.int64),
                "norms": np.array([self._norms])}  # fmt: skip

    def load(self, state: dict[str, np.ndarray]) -> bool:
        """Restore :meth:`dump`'s window; False (left as it was) when its window or
        dimensions differ from this one's."""
        ring = state["ring"]
        if ring.shape != self._ring.shape or state["sum"].shape != self._sum.shape:
            return False
        self._ring[:], self._sq[:], self._sum[:] = ring, state["sq"], state["sum"]
        self._seen, self._refresh = (int(v) for v in state["meta"])
        self._norms = float(state["norms"][0])
        return True


def white(rows: np.ndarray, gram: np.ndarray | None = None) -> bool:
    """Whether a window's variation (``rows`` in time order) spans more than
    ``WHITE_DIMS`` effective dimensions (:func:`mlwarden.serve.stationary.dims`): noise,
    not a few natural inputs. ``gram``: the window's Gram matrix (:func:`gram_of`), from
    which the same statistic is read (:func:`_dims`) without the rows' differences."""
    if gram is None or len(rows) > CAP:
        return dims(rows) > WHITE_DIMS
    return _dims(gram) > WHITE_DIMS


def gram_of(rows: np.ndarray) -> np.ndarray:
    """The Gram matrix ``x x'`` of a window's rows: the one product its tests read, its
    spread (:func:`spread_of`), its differences' dimensions (:func:`_dims`) and its
    spectrum (:func:`_floor`, centred there)."""
    return rows @ rows.T


def spread_of(gram: np.ndarray, values: int) -> float:
    """A window's spread (RMS over its ``values`` values of their variance) from its
    :func:`gram_of`: the centred trace ``tr(G) - sum(G) / n`` over ``n x values``."""
    n = len(gram)
    return math.sqrt(max(float(np.trace(gram)) - float(gram.sum()) / n, 0.0) / (n * values))


def _dims(gram: np.ndarray) -> float:
    """:func:`mlwarden.serve.stationary.dims` of rows in time order (at most ``CAP``)
    from their Gram matrix: the successive differences' Gram is its second difference
    along both axes (``(x_i+1 - x_i) . (x_j+1 - x_j)``),
    and ``tr(S)`` and ``tr(S^2)`` are its diagonal and its non-adjacent pairs, as
    :func:`mlwarden.serve.stationary._traces` sums them (a window of 50 x 64: one
    49 x 49 difference instead of a 49 x 49 x 64 product)."""
    n = len(gram)
    if n < 4:
        return math.inf
    a = gram[1:] - gram[:-1]
    inner = a[:, 1:] - a[:, :-1]
    sq, adj = np.diagonal(inner).copy(), np.diagonal(inner, 1).copy()  # contiguous: faster
    tr1 = float(sq.sum()) / (2 * (n - 1))
    far = float(np.vdot(inner, inner)) - float(sq @ sq) - 2 * float(adj @ adj)
    tr2 = max(far, 0.0) / ((n - 1) ** 2 - (n - 1) - 2 * (n - 2)) / 4
    return tr1 * tr1 / tr2 if tr1 > 0 and tr2 > 0 else math.inf


def narrow(spreads: np.ndarray, rows: Callable[[], np.ndarray], seen: int, window: int,
           bar: float, net: float | None) -> list[int]:  # fmt: skip
    """Positions ``j`` of a batch (``spreads`` after each query; ``rows()``: the rows the
    windows are cut from in time order, the batch's last; ``seen``: queries seen after
    the batch) whose window is a search's: white (:func:`white`) and either narrow
    (spread below ``bar``) or, every ``STRIDE``-th query counted from the key's first,
    spreading less than ``net`` above its white-noise floor around an input
    (:func:`searching`)."""
    n = len(spreads)
    due = strided(n, seen) if net is not None else []
    low = [j for j in range(n) if spreads[j] < bar or (j in due and not np.isnan(spreads[j]))]
    if not low:
        return []
    every = rows()
    last = len(every) - n  # position j's window ends at row last + j
    out = []
    for j in low:
        win = every[max(last + j + 1 - window, 0) : last + j + 1]
        gram = gram_of(win)
        if white(win, gram) and (spreads[j] < bar or searching(win, float(net or 0.0), gram)):
            out.append(j)
    return out


def strided(n: int, seen: int) -> list[int]:
    """Positions of a batch of ``n`` queries (``seen``: the key's queries after it) that
    are every ``STRIDE``-th query counted from the key's first."""
    first = seen - n + 1  # the count after position 0
    return [j for j in range(n) if (first + j) % STRIDE == 0]


def crowded(near: Callable[[int], np.ndarray], due: list[int], spreads: np.ndarray,
            window: int, bar: float, net: float | None) -> list[int]:  # fmt: skip
    """Positions ``j`` among ``due`` whose query's neighbourhood (``near(j)``: its
    ``window`` nearest rows among the key's recent queries, oldest first) is a search's
    window: a cluster within the key's traffic (its spread under ``CLUSTER`` times
    ``spreads[j]``, the key's last ``window`` queries'), judged as :func:`narrow` judges a
    time window (white, and narrow or, with ``net``, under ``net`` above its noise floor
    around an input). Benign queries mixed in between a search's (``--mix``) dilute the
    key's last ``window`` queries, not the search's own neighbourhood: its queries are
    nearer each other than the natural inputs are (8x8 digits, 10 distinct digits before
    each query, the search's 50 nearest of the last 1,000 at sigma 0.05-0.3: 0.15-0.70 of
    the time window's spread). ``CLUSTER`` spares the near side of one cloud: the nearest
    50 of 1,000 random tensors spread 0.85-0.95 of the key's window, and their mean leans
    towards the query as an input's would (:func:`on_input` cannot tell them apart)."""
    out = []
    for j in due:
        win = near(j)
        if len(win) < window or np.isnan(spreads[j]):
            continue
        gram = gram_of(win)
        spread = spread_of(gram, win.shape[1])
        if spread >= CLUSTER * spreads[j] or not white(win, gram):
            continue
        if spread < bar or (net is not None and searching(win, net, gram)):
            out.append(j)
    return out


def searching(rows: np.ndarray, net: float, gram: np.ndarray | None = None) -> bool:
    """A white window's test beyond the bar: under ``net`` above its noise floor
    (:func:`above_floor`), around an input (:func:`on_input`). ``gram``: the window's
    :func:`gram_of`, if made already."""
    above, floor = _floor(rows, gram)
    return above < net and on_input(rows, floor)


def above_floor(rows: np.ndarray) -> float:
    """The RMS per value of a window's variation above its white-noise floor.

    The centred window's covariance spectrum (its ``k = min(rows - 1, values)`` non-zero
    eigenvalues, per value) is white noise's Marchenko-Pastur bulk plus a few natural
    directions' spikes. The floor (the noise's variance per value) is the median
    eigenvalue over white noise's (:func:`_white_law`); what a spike holds above white
    noise's largest eigenvalue at that floor (its 99th percentile) is variation noise
    cannot make. A noisy search (one input, small steps, fresh white noise a query)
    holds none at any sigma; distinct natural inputs, one class's, hold most of theirs."""
    return _floor(rows)[0]


def on_input(rows: np.ndarray, floor: float) -> bool:
    """Whether a window's mean is an input rather than a constant plus its noise: its
    values' RMS about their average is over ``CENTRED`` times what the window's noise
    floor leaves in a mean of its rows (``floor / sqrt(rows)``). A search's window is
    centred on the input worked on (8x8 digits and calibrated 3x32x32 images, sigma
    0.05-0.8: 2.4 times or more); a client of random tensors (a load test) on a
    constant: 0.8-1.2. ``floor``: the window's noise variance per value (:func:`_floor`)."""
    m = rows.mean(axis=0)
    return float(np.mean((m - m.mean()) ** 2)) > CENTRED**2 * floor / len(rows)


def _floor(rows: np.ndarray, gram: np.ndarray | None = None) -> tuple[float, float]:
    """(:func:`above_floor`, the floor: noise variance per value) of a window
    (``gram``: its :func:`gram_of`, if made already)."""
    w, d = rows.shape
    if gram is not None and w <= d:  # centred: c c' = G - r 1' - 1 r' + mean(G)
        r = gram.mean(axis=0)
        gram = gram - r[:, None] - r[None, :] + r.mean()
    else:  # c c' or c' c: the same non-zero eigenvalues
        c = rows - rows.mean(axis=0)
        gram = c @ c.T if w <= d else c.T @ c
    e = np.linalg.eigvalsh(gram / d)[-min(w - 1, d) :]
    median, top = _white_law(w, d)
    floor = float(np.median(e)) / median
    return math.sqrt(float(np.maximum(e - floor * top, 0.0).sum()) / w), floor


@functools.lru_cache(maxsize=16)
def _white_law(window: int, values: int) -> tuple[float, float]:
    """White noise of variance 1 in windows of ``window`` rows of ``values`` values, as
    :func:`above_floor` measures them: the mean median eigenvalue and the 99th
    percentile of the largest (simulated, fixed seed)."""
    rng = np.random.default_rng(0)
    k = min(window - 1, values)
    medians, tops = np.empty(_REPS), np.empty(_REPS)
    for i in range(_REPS):
        x = rng.standard_normal((window, values))
        c = x - x.mean(axis=0)
        e = np.linalg.eigvalsh((c @ c.T if window <= values else c.T @ c) / values)[-k:]
        medians[i], tops[i] = np.median(e), e[-1]
    return float(medians.mean()), float(np.quantile(tops, 0.99))
