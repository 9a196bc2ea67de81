"""A key sending many renderings of one input: query blinding.

Query blinding (Chen, Carlini & Wagner, "Stateful Detection of Black-Box Adversarial
Attacks", SPAI 2020, arXiv:1907.05587; the baseline adaptive attack in Feng et al., CCS
2023) sends each query of a search through a fresh random transform: a rotation of a
few degrees, a zoom, a sub-pixel shift, brightness and contrast, noise. On 8 x 8 digits
two such renderings of one digit lie farther apart than two distinct digits in the
detectors' reduced view, so the similarity count, Blacklight and the still-ball rules
never see one input; PRADA alone flagged it, at 34-232 queries, after the search held
an adversarial input in every run (``gateway_detection_redteam11.py --plans blind``).

Here each query of an image key is also kept as a *view* a rendering barely moves: its
frame averaged over channels and over a :data:`GRID` x :data:`GRID` grid of cells,
minus its mean, divided by its norm (brightness and contrast gone, noise and sub-pixel
motion averaged out). Two views are compared at the best of the nine whole-cell shifts
of one of them (a shift of a cell or less). A query *renders* another input when their
views lie within :data:`RADIUS` (unit vectors; distinct 8 x 8 digits' nearest among the
last 100 is 0.28-0.40 at the 10th-50th percentile, a blinded search's queries 0.18-0.23
at the median). On frames of :data:`FINE` x :data:`FINE` or more the grid is finer:
at 8 x 8 cells a stream of one class's distinct MNIST digits (all zeros) reads as
renderings of each other (244 flagged per 1,000 on calibrated 3x32x32 images, window
50; 16-27 at 16 x 16 cells).

What is counted is distinct *inputs*: a query whose view is within :data:`SAME` of an
earlier one (a copy re-encoded: a whole-pixel shift, a brightness step, 8-bit coding),
or whose reduced vector is within PRADA's resend bar of one (half the similarity
radius: a resend with noise, the similarity detector's to judge), is that query's
input again. A query is flagged
when :data:`INPUTS` or more other inputs of the key's last :data:`WINDOW` queries render
it: a blinded search is a new input every query, each a rendering of all the others.
A window of 100 holds 20 queries of a search mixed 1:4 with distinct benign ones.

Benign clients that resend a photo re-encoded (``burst20``: twenty copies, a one-pixel
shift half the time) are one input; an upload at five thumbnail sizes is five inputs
near each other (``thumbsizes``), under :data:`INPUTS`. The bar :data:`SAME` is below
one step of the issue's search (a 2 x 2 block of 0.1 of the range moves an 8 x 8
digit's view by about 0.08): a blinded search restricted to whole-pixel shifts and
brightness, to pass as re-encodings, is a new input each step again.

On views of :data:`FINE` cells a side a renderer counts only when the two views'
difference, at the roll that aligns them, is *smooth* (:func:`smoothness`, its lag-1
autocorrelation over the grid, at least :data:`SMOOTH`): a small warp of one frame moves
each cell by about the shift times the frame's gradient, which is spatially coherent
(a blinded search on 3x32x32 images 0.16-0.25 median); fresh sensor noise is white
(about 0). Without it a camera in low light (one scene under fresh noise of 0.02-0.05,
each frame a new input on a calibrated key: redteam12's ``lowlight``) was flagged 84 per
1,000 by this rule. What it gives away: a noisy search with noise of sigma 0.1-0.15 and
no warp is rough too (calibrate's ladder on images: first flags 15 -> 21-38, by the
other rules).

On 8 x 8 digits there is no bar: a labelled folder walked class by class (every 1, then
every 0, ...) differs query to query as roughly (zeros, sixes 0.10 median; ones 0.27) and
as far (0.35) as the issue's noisy search at sigma 0.1 (0.10, 0.36), which this rule
flags first (15, 15, 16, 10, 15; 38, 20, 26, 10, 38 under a bar of 0.3, as before the
rule); a blinded search is 0.37-0.50. The folder stays flagged 39.5 per 1,000 (ones 30 of
184, zeros 29 of 178, sixes 11 of 181), none in mixed traffic.

Not on keys with the ``camera`` profile (a fixed scene whose frames differ by light and
by what moves through it is many inputs rendering each other: the profile's declared
risk), nor on frames smaller than the grid, audio or text.
"""

from __future__ import annotations

import numpy as np

GRID = 8  # cells a side of the view (8 x 8 digits: one pixel a cell)
FINE = 16  # cells a side on frames of at least FINE x FINE (2 x 2 pixels on 32 x 32)
WINDOW = 100  # the key's last queries a query's renderings are looked for among
RADIUS = 0.4  # distance of two views (unit vectors) within which one renders the other
SAME = 0.05  # views this close are one input re-encoded (below one step of a search)
INPUTS = 14  # other inputs rendering a query that flag it
# on a view of FINE cells a side a renderer counts when the difference of the two views
# (at their best roll) is smooth: its lag-1 autocorrelation over the grid at least this
# (on 8 x 8 cells no bar: the noisy search at sigma 0.1 is as rough as a folder)
SMOOTH = {FINE: 0.1}


def grid(frame: tuple[int, ...]) -> int:
    """Cells a side of the view of frames ``frame`` (..., H, W)."""
    return FINE if min(frame[-2:]) >= FINE else GRID


def _cells(n: int, g: int) -> np.ndarray:
    return (np.arange(g, dtype=np.int64) * n) // g


def views(xs: np.ndarray, frame: tuple[int, ...]) -> np.ndarray:
    """Each input of the batch ``xs`` (B, ...) of frames ``frame`` (..., H, W) as a unit
    vector of ``g * g`` float32 values (``g``: :func:`grid`): the channel mean, averaged
    over a grid of cells, centred and divided by its norm (a blank frame: zeros)."""
    h, w = frame[-2:]
    g = grid(frame)
    im = np.asarray(xs, dtype=np.float32).reshape(len(xs), -1, h, w).mean(axis=1)
    if (h, w) != (g, g):
        rows, cols = _cells(h, g), _cells(w, g)
        im = np.add.reduceat(np.add.reduceat(im, rows, axis=1), cols, axis=2)
        im /= np.outer(np.diff(np.append(rows, h)), np.diff(np.append(cols, w)))
    flat = im.reshape(len(xs), -1)
    flat -= flat.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(flat, axis=1, keepdims=True)
    return np.divide(flat, norm, out=np.zeros_like(flat), where=norm > 1e-6)


def _rolls(g: int) -> np.ndarray:
    """(9, g * g) index arrays: a view rolled by -1, 0 or 1 cell on each axis."""
    cells = np.arange(g * g).reshape(g, g)
    return np.stack([np.roll(cells, (dy, dx), axis=(0, 1)).ravel()
                     for dy in (-1, 0, 1) for dx in (-1, 0, 1)])  # fmt: skip


def smoothness(d: np.ndarray, g: int) -> np.ndarray:
    """Each difference of views ``d`` (N, g * g): the lag-1 autocorrelation of its cells
    along rows and columns (sum of neighbours' products over the mean of their squares):
    about 0 for white noise, high for a small warp of one frame."""
    d = d.reshape(len(d), g, g)
    a, b, c, e = d[:, :, 1:], d[:, :, :-1], d[:, 1:, :], d[:, :-1, :]
    num = (a * b).sum(axis=(1, 2)) + (c * e).sum(axis=(1, 2))
    den = ((a * a + b * b).sum(axis=(1, 2)) + (c * c + e * e).sum(axis=(1, 2))) / 2
    return np.asarray(num / np.maximum(den, 1e-12))


def usable(frame: tuple[int, ...] | None) -> bool:
    """Whether inputs of shape ``frame`` have a view (an image of at least GRID x GRID)."""
    return frame is not None and len(frame) >= 2 and min(frame[-2:]) >= GRID


class Blinding:
    """A key's last :data:`WINDOW` queries: their views, reduced vectors and inputs."""

    def __init__(self, dims: int, radius: float, g: int = GRID) -> None:
        self._rolls = _rolls(g)
        self._g = g
        self._bar = SMOOTH.get(g)  # None: every renderer counts
        self._views = np.zeros((WINDOW, g * g), dtype=np.float32)
        self._vs = np.zeros((WINDOW, dims), dtype=np.float32)
        self._inputs = np.full(WINDOW, -1, dtype=np.int64)
        self._n = 0
        self.radius = radius  # RMS per value: reduced vectors this close are one input

    def observe_many(self, views: np.ndarray, vs: np.ndarray) -> list[int]:
        """Add a batch of views (B, g * g) and reduced vectors (B, dims), in order; each
        query's count of other inputs among the key's last :data:`WINDOW` queries that
        render it, exact where it is below :data:`INPUTS` only as a bound (the rows
        near it): the same counts, compared with the bar, as one query at a time."""
        m, b = min(self._n, WINDOW), len(views)
        order = (np.arange(self._n - m, self._n) % WINDOW) if m else np.zeros(0, np.int64)
        allv = np.concatenate([self._views[order], views])
        allr = np.concatenate([self._vs[order], vs]).astype(np.float64)
        ids = np.concatenate([self._inputs[order], np.full(b, -1, np.int64)])
        at = m + np.arange(b)[:, None]
        col = np.arange(m + b)[None, :]
        live = (col < at) & (col >= at - WINDOW)  # each query's window: the rows before it
        # aligned cosine of each new query with every row (the best of nine rolls); views
        # within SAME are 2 - 2 cos < SAME^2 apart
        rolled = views[:, self._rolls]
        cos = (rolled @ allv.T).max(axis=1)
        mine = allr[m:]
        sq = (mine * mine).sum(1)[:, None] + (allr * allr).sum(1)[None, :] - 2.0 * mine @ allr.T
        same = live & ((cos > 1.0 - SAME * SAME / 2) | (sq < self.radius**2 * vs.shape[1]))
        best = np.where(same, cos, -np.inf).argmax(axis=1)
        has = same.any(axis=1)
        for j in range(b):  # in order: a copy of an earlier query of the batch is its input
            ids[m + j] = ids[best[j]] if has[j] else self._n + j
        near = live & (cos > 1.0 - RADIUS * RADIUS / 2) & (ids[None, :] != ids[m:, None])
        out = near.sum(axis=1).tolist()
        for j in np.flatnonzero(near.sum(axis=1) >= INPUTS).tolist():
            rows = near[j] if self._bar is None else self._smooth(rolled[j], allv, near[j])
            out[j] = len(np.unique(ids[rows]))
        self._push(views, vs, ids[m:])
        return out

    def _smooth(self, rolled: np.ndarray, allv: np.ndarray, near: np.ndarray) -> np.ndarray:
        """The rows of ``near`` (a mask over ``allv``) whose difference from the query
        (``rolled``: its nine rolls), at the roll that aligns them best, is smooth
        (:data:`SMOOTH`): a warp of one input, not fresh noise or another writer's hand."""
        rows = np.flatnonzero(near)
        best = (rolled @ allv[rows].T).argmax(axis=0)
        diff = rolled[best] - allv[rows]
        keep = np.zeros_like(near)
        keep[rows] = smoothness(diff, self._g) >= (self._bar or 0.0)
        return keep

    def _push(self, views: np.ndarray, vs: np.ndarray, ids: np.ndarray) -> None:
        skip = max(0, len(views) - WINDOW)  # a batch longer than the window: its tail
        self._n += skip
        views, vs, ids = views[skip:], vs[skip:], ids[skip:]
        slots = np.arange(self._n, self._n + len(views)) % WINDOW
        self._views[slots], self._vs[slots], self._inputs[slots] = views, vs, ids
        self._n += len(views)

    def nbytes(self) -> int:
        return self._views.nbytes + self._vs.nbytes + self._inputs.nbytes + self._rolls.nbytes

    def dump(self) -> dict[str, np.ndarray]:
        """The window as plain arrays (the gateway's state database; :meth:`load`)."""
        return {"views": self._views.copy(), "vs": self._vs.copy(),
                "inputs": self._inputs.copy(), "n": np.array([self._n], dtype=np.int64)}  # fmt: skip

    def load(self, state: dict[str, np.ndarray]) -> bool:
        """Restore :meth:`dump`'s arrays; False (the window left empty) when they do not
        fit this key's shapes."""
        try:
            views, vs, inputs = state["views"], state["vs"], state["inputs"]
            n = int(np.asarray(state["n"]).ravel()[0])
        except (KeyError, IndexError, TypeError, ValueError):
            return False
        if (
            views.shape != self._views.shape
            or vs.shape != self._vs.shape
            or inputs.shape != self._inputs.shape
            or n < 0
        ):
            return False
        self._views[:], self._vs[:], self._inputs[:], self._n = views, vs, inputs, n
        return True
