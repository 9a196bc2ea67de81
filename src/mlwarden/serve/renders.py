"""A key's recent inputs and their renderings, for PRADA (:class:`~mlwarden.serve.monitor.Prada`).

An image service renders one upload several ways in a row (thumbnail sizes, crops,
formats) and classifies each rendering. To PRADA each rendering is a new query a small
step from the one before, and a stream of uploads becomes a mixture: one natural
distance a photo, then several small ones. The Shapiro-Wilk test rejects that mixture
(``thumbsizes``, five sizes a photo, calibrated 3x32x32: 77.5 false alarms per 1,000).

A query is a *rendering* of an earlier input when the key's previous query (the last
:data:`SIZE` queries: an upload's sizes are sent back to back) lies within ``bar`` and no
farther than the nearest reference of its own class: it then belongs to that query's
input (its *root*). With the last 8 queries instead, OARS with benign traffic mixed in
(images, redteam11 ``oars-blind --mix 1``) went unflagged in 1 of 5 runs (main: 5/5);
with the previous query only, 5/5 again and ``thumbsizes`` as quiet. PRADA
measures a rendering past its own input (the distance to its class's nearest reference
that is not the root) and does not keep it as a reference, so each input adds one
natural distance and its renderings the distances of other inputs near it. An input
excuses at most :data:`EACH` queries, itself included; later ones are measured and kept
as any query is: a search on one input, blinded or not, is one input whose renderings
run out after seven queries.

What an attacker gets: a thief that orders its synthetic queries depth-first from fresh
natural seeds (each seed, then up to seven steps from it, each from the one before,
before the next seed) is measured past each seed: it needs a natural seed every eight
queries.
"""

from __future__ import annotations

import numpy as np

SIZE = 1  # the key's last queries a rendering's input is looked for in: the previous one
EACH = 8  # queries an input excuses at most, itself included


class Renders:
    """The last :data:`SIZE` reduced queries of a key, each with its input (root) number."""

    def __init__(self, dims: int) -> None:
        self._ring = np.zeros((SIZE, dims), dtype=np.float32)
        self._roots = [-1] * SIZE
        self._n = 0
        self._count: dict[int, int] = {}  # root -> queries of that input seen
        self._live: dict[int, int] = {}  # root -> ring slots holding it
        self._where: dict[int, tuple[int, int, np.ndarray]] = {}  # root -> its reference row

    def nearest(self, v: np.ndarray) -> tuple[int, float]:
        """The recent query nearest ``v`` and its squared distance (``einsum`` of float32
        differences, as PRADA's own); ``(-1, inf)`` when there is none."""
        m = min(self._n, SIZE)
        if not m:
            return -1, float("inf")
        diff = self._ring[:m] - v
        dist = np.einsum("ij,ij->i", diff, diff)
        k = int(dist.argmin())
        return k, float(dist[k])

    def add(self, v: np.ndarray, k: int) -> int | None:
        """Add ``v``, a rendering of recent query ``k``'s input (-1: an input of its own);
        that input's root while it excuses ``v`` (at most :data:`EACH` queries), else None."""
        own = self._n
        root = own if k < 0 else self._roots[k]
        slot = self._n % SIZE
        old = self._roots[slot]
        self._ring[slot], self._roots[slot] = v, root
        self._n += 1
        self._live[root] = self._live.get(root, 0) + 1
        if old >= 0:
            self._live[old] -= 1
            if not self._live[old]:
                del self._live[old]
                self._count.pop(old, None)
                self._where.pop(old, None)
        count = self._count[root] = self._count.get(root, 0) + 1
        return root if root != own and count <= EACH else None

    def place(self, label: int, slot: int, v: np.ndarray) -> None:
        """The query just pushed was kept at row ``slot`` of class ``label``'s set."""
        root = self._roots[(self._n - 1) % SIZE]
        if root == self._n - 1:  # an input of its own: its renderings are measured past it
            self._where[root] = (label, slot, v.copy())

    def row(self, root: int, label: int, ref: np.ndarray, n: int) -> int | None:
        """The row of class ``label``'s set (``n`` rows) that still holds ``root``'s
        input, or None (another class, never kept, or overwritten since)."""
        where = self._where.get(root)
        if where is None or where[0] != label or where[1] >= n:
            return None
        return where[1] if np.array_equal(ref[where[1]], where[2]) else None

    def nbytes(self) -> int:
        rows = sum(w[2].nbytes for w in self._where.values())
        return self._ring.nbytes + 8 * SIZE + rows

    def dump(self) -> dict[str, np.ndarray]:
        """The recent queries, their roots and what each live root excuses and where its
        row is kept (a few rows: :data:`SIZE` live roots at most)."""
        where = sorted(self._where.items())
        dims = self._ring.shape[1]
        return {
            "ring": self._ring.copy(),
            "roots": np.array(self._roots + [self._n], dtype=np.int64),  # the count last
            "count": np.array(sorted(self._count.items()), dtype=np.int64).reshape(-1, 2),
            "live": np.array(sorted(self._live.items()), dtype=np.int64).reshape(-1, 2),
            "where": np.array([(r, w[0], w[1]) for r, w in where], np.int64).reshape(-1, 3),
            "rows": np.array([w[2] for _, w in where], np.float32).reshape(-1, dims),
        }

    def load(self, state: dict[str, np.ndarray]) -> bool:
        """Restore :meth:`dump`'s state; False (left fresh) for another size or shape."""
        ring, roots, where = state["ring"], state["roots"].tolist(), state["where"]
        if ring.shape != self._ring.shape or len(roots) != SIZE + 1:
            return False
        self._ring[:] = ring
        self._roots, self._n = roots[:SIZE], roots[SIZE]
        self._count = {int(r): int(c) for r, c in state["count"].tolist()}
        self._live = {int(r): int(c) for r, c in state["live"].tolist()}
        self._where = {int(r): (int(lab), int(slot), row.copy())
                       for (r, lab, slot), row in zip(where.tolist(), state["rows"], strict=True)}  # fmt: skip
        return True
