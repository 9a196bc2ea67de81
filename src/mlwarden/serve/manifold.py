"""A key whose queries leave the benign data's manifold as white noise does (tables).

OARS (Feng et al., CCS 2023, arXiv:2303.06280) learns on an attacker's own copy of the
gateway how much per-query noise the count detectors tolerate, then runs the issue's
noisy random search blind at that noise: on tables 1.5-4.6x the issue's sigma 0.05
(``benchmarks/gateway_detection_redteam11.py``, ``oars-blind``), where no query has a
neighbour. The spread rule (:mod:`mlwarden.serve.spread`) cannot run on tables: one
class's natural rows are as narrow as such a search.

What a table's natural rows obey and white noise breaks is the features' correlations:
the benign data's minor principal directions carry almost no variance (a synthetic
table's redundant features none at all; breast cancer's radius, perimeter and area
move together), while fresh noise of sigma per value puts sigma**2 into every
direction. ``gateway calibrate`` keeps those minor directions (:func:`fit`: the
directions of half its sample whose spread, measured on the other half so it is not
underestimated, is under ``MINOR`` of the mean) and the benign spread along each,
plus its benign noise as a floor. Per query the gateway keeps the key's last
``window`` distinct queries' coordinates along them, in those units, and the statistic
is the mean over directions of the window's variance there: any 50 benign rows ~1 (the
``gateway_detection_*`` tables: 0-1.3 on the synthetic table, 0.2-2.3 on breast
cancer), a white-noise search (sigma / scale)**2 (tabular 23-37 at sigma 0.05, 47-72 at
0.075; breast cancer 5-9 / 11-16 / 18-26 at 0.05 / 0.075 / 0.1). Noise cannot help the
attacker here: the statistic grows with it.

Rows edited field by field are off the manifold too (a form rescored after each field,
a CRM's autocomplete from another customer: 5-51 on tabular). Their steps touch a few
fields; fresh white noise changes every field. A step's density
``L1**2 / (values * L2**2)`` is ~0.64 for Gaussian noise or a jump between two
distinct rows and 1/values for a one-field edit; the window flags only when most of its
steps are denser than ``dense`` (0.4; form 0.03-0.05, crm 0.03-0.21).

Benign rows mixed between a search's queries (10 to 1: the issue's "mixed in with
benign traffic") dilute the last 50 rows below the bar. With ``centre`` (the benign
rows' mean along the axes; ``gateway calibrate`` sets it) a key also keeps its last
``window`` rows *off the data* (a row's mean square along the axes about the centre
over ``off`` x ``bar``: tabular's natural rows 0, breast cancer's 5% of them, a
sigma-0.075 search's nearly all), judged by the same test: mixed-in rows on the data
are not in it. Natural rows off the data among a search's (breast cancer's tails, an
attacker's edited rows) make that window anisotropic; it is judged again on its rows
within ``TRIM`` times their median distance of their median (:func:`trimmed`): a
search's rows lie at about one distance from its centre, natural rows far beyond. Both windows are
judged once every ``EVERY`` rows (a search flagged up to 3 queries later, for a quarter
of the cost).

Limits (the attacker who fits the excuses, measured in docs/benchmarks/gateway.md):
noise confined to the data's major directions (estimated from public data of the same
kind) adds nothing off the manifold; noise on a few features a query passes the
density gate; rows off the data mixed in at more than about 1 to 1 (natural rows
with one field edited) outnumber the search's in the off-the-data window and its trim. No still-ball excuse: a client resending one row with fresh noise larger
than the floor is flagged (a search stuck at its input is harmless, but flagged too).

Example::

    m = Window(Manifold(axes=[[...]], scales=[...]), values=20)
    flagged = m.observe_many(rows)   # positions of rows whose window is off the manifold
"""

from __future__ import annotations

import numpy as np

from mlwarden.serve.config import Manifold

MINOR = 0.25  # a direction whose spread is under this fraction of the RMS is minor
MIN_AXES = 2  # fewer minor directions: the rule is off (wine: none)
MIN_ROWS = 20  # a window judged once it holds this many distinct queries
TRIM = 2.0  # the off-the-data window judged again on rows within this of its median
EVERY = 4  # the off-the-data window judged once every this many rows off the data


def fit(x: np.ndarray, floor: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray] | None:
    """The minor directions (k, values) of benign rows ``x`` (N, values) and the spread
    along each (k,), ``sqrt(var + floor**2)``; None when fewer than ``MIN_AXES``.

    Directions from one half of ``x`` (a fixed permutation of ``seed``), spreads from the
    other: the smallest variances of a sample's own principal axes are biased low
    (breast cancer, 284 rows: 0.0017-0.025 on the sample, 1.3-2x that on held rows)."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    if len(x) < 2 * x.shape[1] + 4:
        return None
    order = np.random.default_rng(seed).permutation(len(x))
    a, b = x[order[: len(x) // 2]], x[order[len(x) // 2 :]]
    _, vecs = np.linalg.eigh(np.cov((a - a.mean(axis=0)).T))
    var = ((b - b.mean(axis=0)) @ vecs).var(axis=0)
    minor = np.sqrt(var) < MINOR * np.sqrt(var.mean())
    if int(minor.sum()) < MIN_AXES:
        return None
    return vecs[:, minor].T, np.sqrt(var[minor] + floor * floor)


def density(steps: np.ndarray) -> np.ndarray:
    """``L1**2 / (values * L2**2)`` of each row of ``steps`` (0 for a zero step)."""
    l2 = np.einsum("ij,ij->i", steps, steps)
    l1 = np.abs(steps).sum(axis=1)
    return np.where(l2 > 0, l1 * l1 / (steps.shape[1] * np.maximum(l2, 1e-300)), 0.0)


def _windows(rows: np.ndarray, proj: np.ndarray, scale2: np.ndarray, steps: np.ndarray,
             ends: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """For each window of ``rows`` ending at a row of ``ends``, at most ``window`` rows:
    its level (the mean over the axes ``proj`` of its variance, in units of the benign
    spread: NaN below ``MIN_ROWS`` rows), its anisotropy (:func:`anisotropy`), and
    whether more than half of the steps into its rows (``steps``, the first row's
    excluded) were dense. Running sums, one pass."""
    lo = np.maximum(ends + 1 - window, 0)
    count = (ends + 1 - lo)[:, None].astype(np.float64)

    def var(a: np.ndarray) -> np.ndarray:
        c = a - a[:1]  # sums about a row of the data: no cancellation on a far mean
        c1 = np.concatenate([np.zeros((1, a.shape[1])), np.cumsum(c, axis=0)])
        c2 = np.concatenate([np.zeros((1, a.shape[1])), np.cumsum(c * c, axis=0)])
        mean = (c1[ends + 1] - c1[lo]) / count
        return np.maximum((c2[ends + 1] - c2[lo]) / count - mean * mean, 0.0)

    vz = var(rows @ proj)
    level = vz.mean(axis=1)
    level[count[:, 0] < MIN_ROWS] = np.nan
    iso = anisotropy(var(rows).sum(axis=1), vz @ scale2, rows.shape[1], len(scale2))
    cs = np.concatenate([[0], np.cumsum(steps)])
    return level, iso, 2 * (cs[ends + 1] - cs[lo + 1]) > ends - lo


def anisotropy(total: np.ndarray, minor: np.ndarray, values: int, k: int) -> np.ndarray:
    """A window's variance per direction off the minor axes over that along them, in the
    rows' own units (``total``: its variance summed over the values, ``minor``: along the
    ``k`` axes): white noise ~1 (a search's window 0.5-1.7), natural rows far more even
    off the manifold (rows with a third of their columns rounded to 4 levels >= 4.9)."""
    off = np.maximum(total - minor, 0.0) / max(values - k, 1)
    return np.where(minor > 0, off / np.maximum(minor / k, 1e-300), np.inf)


def level_iso(rows: np.ndarray, proj: np.ndarray, scale2: np.ndarray) -> tuple[float, float]:
    """One window's level (the mean over the axes of its variance along them, in their
    units) and anisotropy (:func:`anisotropy`)."""
    c = rows - rows.mean(axis=0)
    zc = c @ proj
    vz = np.einsum("ij,ij->j", zc, zc) / len(rows)
    total = float(np.einsum("ij,ij->", c, c)) / len(rows)
    iso = anisotropy(np.array([total]), np.array([float(vz @ scale2)]), rows.shape[1], len(vz))
    return float(vz.mean()), float(iso[0])


def trimmed(rows: np.ndarray, proj: np.ndarray, scale2: np.ndarray) -> tuple[float, float]:
    """:func:`level_iso` of the ``rows`` within ``TRIM`` times their median distance of
    their median (value by value; NaN, inf below ``MIN_ROWS`` such rows): a search's
    queries lie at about one distance from its centre, natural rows off the data among
    them (breast cancer's tails: 5% of its rows) far beyond. The median, not a row of
    the window: rows placed where the window is judged move it no more than others."""
    c = rows - np.median(rows, axis=0)
    dist = np.einsum("ij,ij->i", c, c)
    near = rows[dist <= TRIM * TRIM * float(np.median(dist))]
    if len(near) < MIN_ROWS:
        return np.nan, np.inf
    return level_iso(near, proj, scale2)


off_none = np.zeros(0, dtype=np.int64)


class Rows:
    """A window of a key's last ``window`` rows and whether each step into one was
    dense, judged once every ``EVERY`` rows (a search is flagged up to ``EVERY - 1``
    queries later than a judgement of every row would, for a quarter of its cost)."""

    def __init__(self, values: int, window: int, dense: float) -> None:
        self.window, self.dense = window, dense
        self.rows = np.zeros((0, values))  # oldest first
        self.steps = np.zeros(0, dtype=bool)
        self.since = 0  # rows since the window was last judged

    def push(self, new: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """Add ``new`` (B, values) in order; (position, the window's rows, its steps)
        for each row after which the window is judged (it holds ``MIN_ROWS`` or more)."""
        if len(new) == 1:
            return self._push_one(new[0])
        prev = np.concatenate([self.rows[-1:], new[:-1]])
        dense = density(new[len(new) - len(prev) :] - prev) > self.dense
        if not len(self.rows):  # the first row has no step into it
            dense = np.concatenate([[False], dense])
        kept = len(self.rows)
        rows, steps = np.concatenate([self.rows, new]), np.concatenate([self.steps, dense])
        judged = np.flatnonzero((self.since + 1 + np.arange(len(new))) % EVERY == 0)
        self.since = (self.since + len(new)) % EVERY
        self.rows, self.steps = rows[-self.window :], steps[-self.window :]
        out = []
        for i in judged[kept + judged + 1 >= MIN_ROWS]:
            end = kept + int(i) + 1
            lo = max(end - self.window, 0)
            out.append((int(i), rows[lo:end], steps[lo:end]))
        return out

    def _push_one(self, row: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """:meth:`push` of one row (``action: block`` analyses each request alone)."""
        dense = False
        if len(self.rows):
            step = row - self.rows[-1]
            l2 = float(step @ step)
            dense = l2 > 0 and float(np.abs(step).sum()) ** 2 > self.dense * len(step) * l2
        keep = self.window - 1
        self.rows = np.concatenate([self.rows[-keep:] if len(self.rows) > keep else self.rows,
                                    row[None]])  # fmt: skip
        self.steps = np.append(self.steps[-keep:] if len(self.steps) > keep else self.steps, dense)
        self.since = (self.since + 1) % EVERY
        if self.since or len(self.rows) < MIN_ROWS:
            return []
        return [(0, self.rows, self.steps)]

    def dump(self, at: str) -> dict[str, np.ndarray]:
        return {f"{at}rows": self.rows.copy(), f"{at}steps": self.steps.copy(),
                f"{at}since": np.array([self.since])}  # fmt: skip

    def load(self, state: dict[str, np.ndarray], at: str) -> bool:
        """Restore :meth:`dump`'s arrays under ``at``; False (left as it is) when they
        are absent or do not fit."""
        rows = np.asarray(state.get(f"{at}rows", np.zeros(0)), dtype=np.float64)
        steps = np.asarray(state.get(f"{at}steps", np.zeros(0)), dtype=bool)
        if rows.ndim != 2 or rows.shape[1] != self.rows.shape[1] or len(steps) != len(rows):
            return False
        self.rows, self.steps = rows[-self.window :], steps[-self.window :]
        self.since = int(np.asarray(state.get(f"{at}since", [0])).ravel()[0]) % EVERY
        return True

    def nbytes(self) -> int:
        return int(self.rows.nbytes + self.steps.nbytes)


class Window:
    """One key's last ``window`` distinct queries, measured along the minor directions,
    and (with ``centre``) its last ``window`` distinct queries off the data.

    Args:
        config: ``detection.manifold`` with its axes and scales set.
        values: values of one query (the axes' length; other inputs are not judged).
    """

    def __init__(self, config: Manifold, values: int) -> None:
        assert config.axes is not None and config.scales is not None
        axes = np.asarray(config.axes, dtype=np.float64)
        self.on = axes.shape[1] == values
        scales = np.asarray(config.scales, dtype=np.float64)
        # (values, k): a row's coordinates along the axes in units of their benign spread
        self.proj = (axes / scales[:, None]).T
        self.scale2 = scales * scales
        self.window, self.bar, self.iso = config.window, config.bar, config.iso
        self.last = Rows(axes.shape[1], config.window, config.dense)
        # the benign centre along the axes, in their units, and the sum of squares about
        # it over which a row is off the data: those rows alone, in a window of their own
        self.centre = None if config.centre is None else np.asarray(config.centre) / scales
        self.cut = config.off * config.bar * len(scales)
        self.off = Rows(axes.shape[1], config.window, config.dense)

    def observe_many(self, xs: np.ndarray) -> list[int]:
        """Add the rows ``xs`` (B, ...) in order; the positions after which a window
        is judged and flagged (:meth:`_flagged`): the key's last ``window`` rows, or
        (with ``centre``) its last ``window`` rows off the data, judged whole or on
        its rows near their median (:func:`trimmed`): a search diluted by benign rows
        (on the data) between its queries, or by natural rows off the data among them."""
        if not self.on or not len(xs):
            return []
        new = np.asarray(xs, dtype=np.float64).reshape(len(xs), -1)
        hits = [i for i, rows, steps in self.last.push(new) if self._flagged(rows, steps, False)]
        if self.centre is None:
            return hits
        if len(new) == 1:  # one row: no arrays of positions
            z1 = new[0] @ self.proj - self.centre
            off = np.zeros(1, dtype=np.int64) if float(z1 @ z1) > self.cut else off_none
        else:
            z = new @ self.proj - self.centre
            off = np.flatnonzero(np.einsum("ij,ij->i", z, z) > self.cut)
        if not len(off):
            return hits
        judged = self.off.push(new[off])
        hits += [int(off[i]) for i, rows, steps in judged if self._flagged(rows, steps, True)]
        return sorted(set(hits))

    def _flagged(self, rows: np.ndarray, steps: np.ndarray, trim: bool) -> bool:
        """Whether a window has more than half of its steps (the first excluded) dense,
        a level over ``bar`` and an anisotropy under ``iso``; ``trim``: or these on its
        rows near their median (:func:`trimmed`)."""
        if 2 * int(steps[1:].sum()) <= len(rows) - 1:
            return False
        level, iso = level_iso(rows, self.proj, self.scale2)
        if level <= self.bar:
            return False
        if iso < self.iso or not trim:
            return iso < self.iso
        level, iso = trimmed(rows, self.proj, self.scale2)
        return level > self.bar and iso < self.iso

    def levels(self, xs: np.ndarray) -> np.ndarray:
        """The level of each window of a fresh key's rows ``xs`` (NaN below ``MIN_ROWS``),
        steps and anisotropy not considered: what ``gateway calibrate`` sets ``bar`` by."""
        rows = np.asarray(xs, dtype=np.float64).reshape(len(xs), -1)
        none = np.zeros(len(rows), dtype=bool)
        return _windows(rows, self.proj, self.scale2, none, np.arange(len(rows)), self.window)[0]

    def dump(self) -> dict[str, np.ndarray]:
        """The windows as arrays (:meth:`load` restores them)."""
        return self.last.dump("") | self.off.dump("off_")

    def load(self, state: dict[str, np.ndarray]) -> bool:
        """Restore :meth:`dump`'s arrays; False (the windows left fresh) when they do not
        fit these axes. A blob from before the window off the data: that one fresh."""
        if not self.last.load(state, ""):
            return False
        self.off.load(state, "off_")
        return True

    def nbytes(self) -> int:
        arrays = (self.proj, self.scale2, self.centre)
        return (
            self.last.nbytes() + self.off.nbytes() + sum(a.nbytes for a in arrays if a is not None)
        )
