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

Limits (the attacker who fits the excuses, measured in docs/benchmarks/gateway.md):
noise confined to the data's major directions (estimated from public data of the same
kind) adds nothing off the manifold; noise on a few features a query passes the
density gate. No still-ball excuse: a client resending one row with fresh noise larger
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


class Window:
    """One key's last ``window`` distinct queries, measured along the minor directions.

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
        self.window, self.bar, self.dense, self.iso = (config.window, config.bar, config.dense,
                                                       config.iso)  # fmt: skip
        self.rows = np.zeros((0, axes.shape[1]))  # the window's rows, oldest first
        self.steps = np.zeros(0, dtype=bool)  # whether each step into a row was dense

    def observe_many(self, xs: np.ndarray) -> list[int]:
        """Add the rows ``xs`` (B, ...) in order; the positions whose window (ending
        with them) has at least ``MIN_ROWS`` rows, a level above ``bar``, an anisotropy
        under ``iso`` and more than half of its steps dense."""
        if not self.on or not len(xs):
            return []
        new = np.asarray(xs, dtype=np.float64).reshape(len(xs), -1)
        if len(new) == 1:
            return [0] if self._one(new[0]) else []
        prev = np.concatenate([self.rows[-1:], new[:-1]])
        dense = density(new[len(new) - len(prev) :] - prev) > self.dense
        if not len(self.rows):  # the key's first row has no step into it
            dense = np.concatenate([[False], dense])
        rows = np.concatenate([self.rows, new])
        steps = np.concatenate([self.steps, dense])
        ends = len(self.rows) + np.arange(len(new))
        level, iso, noisy = _windows(rows, self.proj, self.scale2, steps, ends, self.window)
        self.rows, self.steps = rows[-self.window :], steps[-self.window :]
        return np.flatnonzero(noisy & (level > self.bar) & (iso < self.iso)).tolist()

    def _one(self, row: np.ndarray) -> bool:
        """:meth:`observe_many` of one row (``action: block`` analyses each request alone)."""
        dense = False
        if len(self.rows):
            step = row - self.rows[-1]
            l2 = float(step @ step)
            dense = l2 > 0 and float(np.abs(step).sum()) ** 2 > self.dense * len(step) * l2
        keep = self.window - 1
        self.rows = np.concatenate([self.rows[-keep:] if len(self.rows) > keep else self.rows,
                                    row[None]])  # fmt: skip
        self.steps = np.append(self.steps[-keep:] if len(self.steps) > keep else self.steps, dense)
        n = len(self.rows)
        if n < MIN_ROWS or 2 * int(self.steps[1:].sum()) <= n - 1:
            return False
        vz = (self.rows @ self.proj).var(axis=0)
        if float(vz.mean()) <= self.bar:
            return False
        total = np.array([self.rows.var(axis=0).sum()])
        return bool(anisotropy(total, vz @ self.scale2, row.size, len(vz))[0] < self.iso)

    def levels(self, xs: np.ndarray) -> np.ndarray:
        """The level of each window of a fresh key's rows ``xs`` (NaN below ``MIN_ROWS``),
        steps and anisotropy not considered: what ``gateway calibrate`` sets ``bar`` by."""
        rows = np.asarray(xs, dtype=np.float64).reshape(len(xs), -1)
        none = np.zeros(len(rows), dtype=bool)
        return _windows(rows, self.proj, self.scale2, none, np.arange(len(rows)), self.window)[0]

    def dump(self) -> dict[str, np.ndarray]:
        """The window as arrays (:meth:`load` restores it)."""
        return {"rows": self.rows.copy(), "steps": self.steps.copy()}

    def load(self, state: dict[str, np.ndarray]) -> bool:
        """Restore :meth:`dump`'s arrays; False (the window left fresh) when they do not
        fit these axes."""
        rows = np.asarray(state.get("rows", np.zeros(0)), dtype=np.float64)
        steps = np.asarray(state.get("steps", np.zeros(0)), dtype=bool)
        if rows.ndim != 2 or rows.shape[1] != len(self.proj) or len(steps) != len(rows):
            return False
        self.rows, self.steps = rows[-self.window :], steps[-self.window :]
        return True

    def nbytes(self) -> int:
        return int(self.rows.nbytes + self.steps.nbytes + self.proj.nbytes + self.scale2.nbytes)
