"""Square Attack: score-based black-box random search, Linf and L2.

Andriushchenko, Croce, Flammarion & Hein 2020, "Square Attack: a query-efficient
black-box adversarial attack via random search", arXiv:1912.00049 (ECCV 2020).

Each query changes one random square window (for tables, a run of features): Linf
sets the window to ``x +- eps`` per channel; L2 moves mass between two windows with a
pseudo-Gaussian pattern while keeping the perturbation on the eps-sphere. A change is
kept only when the margin loss ``z_y - max_{j != y} z_j`` (targeted:
``max_{j != t} z_j - z_t``) decreases. The window covers a fraction ``p`` of the
input, halved on the published schedule at 10, 50, 200, 500, 1000, 2000, 4000, 6000
and 8000 of every 10,000 iterations (rescaled to ``n_queries``).

Defaults: ``n_queries=5000`` per input (the initial query included), ``p_init=0.8``
(the AutoAttack setting; the paper uses 0.05 Linf / 0.1 L2 for ImageNet),
``restarts=1``. Only scores are used; every model call is one query per input, counted
on the Target and reported per input in ``attack.last.queries``.

Example::

    x_adv = Square(norm="linf", eps=0.1, n_queries=1000).generate(target, x, y)
    attack.last.queries   # queries spent per input
"""

from __future__ import annotations

import math

import torch

from mlwarden.core.errors import UserError
from mlwarden.evasion.attacks.base import Attack, ModelAccess, margin

_SCHEDULE = (
    (10, 1),
    (50, 2),
    (200, 4),
    (500, 8),
    (1000, 16),
    (2000, 32),
    (4000, 64),
    (6000, 128),
    (8000, 256),
    (10000, 512),
)


def p_selection(p_init: float, it: int, n_iters: int) -> float:
    """Fraction of the input changed at iteration ``it`` (Andriushchenko et al. 2020)."""
    i = int(it / max(n_iters, 1) * 10000)
    div = 1
    for upper, d in _SCHEDULE:
        if i <= upper:
            div = d if i > 10 else 1
            break
    else:
        div = 1
    return p_init / div


def _pseudo_gaussian(h: int, w: int) -> torch.Tensor:
    """Concentric rectangles weighted 1/(k+1)^2, unit L2 norm (the paper's L2 pattern)."""
    d = torch.zeros(h, w)
    if h == 0 or w == 0:
        return d
    ch, cw = h // 2, w // 2
    for k in range(max(ch, cw) + 1):
        d[max(ch - k, 0) : min(ch + k + 1, h), max(cw - k, 0) : min(cw + k + 1, w)] += (
            1.0 / (k + 1) ** 2
        )
    return d / d.norm().clamp_min(1e-12)


def _meta_pattern(h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    """Two pseudo-Gaussian halves of opposite sign, randomly transposed when square."""
    d = torch.zeros(h, w)
    if h >= 2:
        d[: h // 2] = _pseudo_gaussian(h // 2, w)
        d[h // 2 :] = -_pseudo_gaussian(h - h // 2, w)
    elif w >= 2:
        d[:, : w // 2] = _pseudo_gaussian(h, w // 2)
        d[:, w // 2 :] = -_pseudo_gaussian(h, w - w // 2)
    else:
        d[:] = 1.0
    d = d / d.norm().clamp_min(1e-12)
    if h == w and float(torch.rand(1, generator=gen)) > 0.5:
        d = d.t()
    return d


class Square(Attack):
    """Square Attack (Andriushchenko et al. 2020, arXiv:1912.00049); needs scores only."""

    name = "square"
    access = "score"
    atlas = "AML.T0043.001"

    def __init__(
        self,
        norm: str = "linf",
        eps: float = 0.3,
        n_queries: int = 5000,
        p_init: float = 0.8,
        restarts: int = 1,
        **kw: object,
    ) -> None:
        super().__init__(norm=norm, eps=eps, **kw)  # type: ignore[arg-type]
        self.n_queries = n_queries
        self.p_init = p_init
        self.restarts = restarts

    def _check_params(self) -> None:
        super()._check_params()
        if self.n_queries < 1:
            raise UserError(f"square: n_queries must be >= 1; got {self.n_queries}")
        if not 0 < self.p_init <= 1:
            raise UserError(f"square: p_init must be in (0, 1]; got {self.p_init}")
        if self.eps is None and self.snr_db is None:
            raise UserError("square: needs a finite eps")

    def _run(
        self,
        access: ModelAccess,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        gen: torch.Generator,
    ) -> torch.Tensor:
        shape = x.shape
        x4 = _as_4d(x)
        goal = target if (self.targeted and target is not None) else y
        self._best4 = x4.clone()
        # shares storage with _best4: every improvement is kept the moment it is found,
        # so a query budget that stops the search mid-restart loses nothing
        self._best = self._best4.view(shape)
        done = self.last.success
        for _ in range(self.restarts):
            idx = (~done).nonzero()[:, 0]
            if len(idx) == 0:
                break
            self._search(access, x4[idx], goal[idx], gen, idx)
        return self._best4.reshape(shape)

    def _loss(
        self, access: ModelAccess, x4: torch.Tensor, goal: torch.Tensor, shape: torch.Size
    ) -> torch.Tensor:
        scores = access.scores(x4.reshape(len(x4), *shape))
        return margin(scores, goal, self.targeted)

    def _search(
        self,
        access: ModelAccess,
        x: torch.Tensor,
        goal: torch.Tensor,
        gen: torch.Generator,
        rows: torch.Tensor,
    ) -> None:
        """One restart on the inputs ``rows``; improvements go to ``_best4``, successes to
        ``last.success`` and spent queries to ``last.queries`` as they happen."""
        n, c, h, w = x.shape
        orig_shape = self._orig_shape
        # one radius per input (the SNR ball gives each clip its own)
        eps = self.radius(x.reshape(n, *orig_shape))
        proj = lambda a, b: self._proj4(a, b)  # noqa: E731
        queries, done = self.last.queries, self.last.success
        if self.norm == "linf":
            stripes = torch.randint(0, 2, (n, c, 1, w), generator=gen).float() * 2 - 1
            x_best = proj(x + stripes * eps.view(n, 1, 1, 1), x)
        else:
            x_best = proj(x + self._l2_init(x, eps, gen), x)
        loss = self._loss(access, x_best, goal, orig_shape)
        queries[rows] += 1
        self._keep(rows, x_best, loss)
        n_feat = c * h * w
        for it in range(self.n_queries - 1):
            act = (loss > 0).nonzero()[:, 0]
            if len(act) == 0:
                break
            p = p_selection(self.p_init, it, self.n_queries)
            xa, xb = x[act], x_best[act]
            if self.norm == "linf":
                cand = self._linf_step(xa, xb, p, n_feat, eps[act], gen)
            else:
                cand = self._l2_step(xa, xb, p, n_feat, eps[act], gen)
            new_loss = self._loss(access, cand, goal[act], orig_shape)
            queries[rows[act]] += 1
            better = new_loss < loss[act]
            up = act[better]
            x_best[up] = cand[better]
            loss[up] = new_loss[better]
            self._keep(rows[up], cand[better], new_loss[better])
        done[rows] |= loss < 0

    def _keep(self, rows: torch.Tensor, points: torch.Tensor, loss: torch.Tensor) -> None:
        """Save improved points; a negative margin is a success, recorded at once."""
        self._best4[rows] = points
        self.last.success[rows] |= loss < 0

    def _window(
        self, p: float, n_feat: int, c: int, h: int, w: int, minimum: int = 1
    ) -> tuple[int, int]:
        if h == 1:  # a table or a sequence: a run of features
            s = max(int(round(p * w)), minimum)
            return 1, min(s, max(w - 1, 1))
        s = max(int(round(math.sqrt(p * n_feat / c))), minimum)
        return min(s, h - 1 if minimum == 1 else h), min(s, w - 1 if minimum == 1 else w)

    def _positions(
        self, n: int, h: int, w: int, sh: int, sw: int, gen: torch.Generator
    ) -> torch.Tensor:
        """Flat pixel indices (n, sh*sw) of one random window per input."""
        vh = torch.randint(0, h - sh + 1, (n,), generator=gen)
        vw = torch.randint(0, w - sw + 1, (n,), generator=gen)
        rows = vh[:, None, None] + torch.arange(sh)[None, :, None]
        cols = vw[:, None, None] + torch.arange(sw)[None, None, :]
        return (rows * w + cols).reshape(n, sh * sw)

    def _linf_step(
        self,
        x: torch.Tensor,
        xb: torch.Tensor,
        p: float,
        n_feat: int,
        eps: torch.Tensor,
        gen: torch.Generator,
    ) -> torch.Tensor:
        n, c, h, w = x.shape
        eps3 = eps.view(n, 1, 1)
        sh, sw = self._window(p, n_feat, c, h, w)
        pos = self._positions(n, h, w, sh, sw, gen)[:, None, :].expand(n, c, sh * sw)
        xf, bf = x.reshape(n, c, h * w), xb.reshape(n, c, h * w)
        x_win = xf.gather(2, pos)
        b_win = bf.gather(2, pos)
        lo, hi = self.bounds
        cand_win = b_win
        todo = torch.ones(n, dtype=torch.bool)
        for _ in range(10):  # resample windows that would not change (as in the paper's code)
            signs = torch.randint(0, 2, (n, c, 1), generator=gen).float() * 2 - 1
            trial = (x_win + signs * eps3).clamp(lo, hi)
            cand_win = torch.where(todo[:, None, None], trial, cand_win)
            todo = ((cand_win - b_win).abs() < 1e-7).reshape(n, -1).all(1)
            if not bool(todo.any()):
                break
        out = bf.clone().scatter_(2, pos, cand_win).reshape(n, c, h, w)
        return self._proj4(out, x)

    def _l2_init(self, x: torch.Tensor, eps: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n, c, h, w = x.shape
        delta = torch.zeros_like(x)
        s = max(h // 5, 1) if h > 1 else max(w // 5, 1)
        sh = s if h > 1 else 1
        for top in range(0, h - sh + 1, sh):
            for left in range(0, w - s + 1, s):
                pat = _meta_pattern(sh, s, gen)
                sign = torch.randint(0, 2, (n, c, 1, 1), generator=gen).float() * 2 - 1
                delta[:, :, top : top + sh, left : left + s] += pat * sign
        norms = delta.reshape(n, -1).norm(dim=1).clamp_min(1e-12).view(n, 1, 1, 1)
        return delta / norms * eps.view(n, 1, 1, 1)

    def _l2_step(
        self,
        x: torch.Tensor,
        xb: torch.Tensor,
        p: float,
        n_feat: int,
        eps: torch.Tensor,
        gen: torch.Generator,
    ) -> torch.Tensor:
        n, c, h, w = x.shape
        eps = eps.view(n, 1, 1)
        sh, sw = self._window(p, n_feat, c, h, w, minimum=3 if h > 1 else 1)
        if h > 1 and sh % 2 == 0 and sh < min(h, w):
            sh = sw = sh + 1
        delta = (xb - x).reshape(n, c, h * w)
        pos1 = self._positions(n, h, w, sh, sw, gen)
        pos2 = self._positions(n, h, w, sh, sw, gen)
        m1 = torch.zeros(n, 1, h * w).scatter_(2, pos1[:, None, :], 1.0)
        m2 = torch.zeros(n, 1, h * w).scatter_(2, pos2[:, None, :], 1.0)
        norm_win1 = (delta * m1).norm(dim=2, keepdim=True)
        norm_img = delta.reshape(n, -1).norm(dim=1).view(n, 1, 1)
        norm_both = (delta * torch.maximum(m1, m2)).norm(dim=2, keepdim=True)
        pat = _meta_pattern(sh, sw, gen).reshape(1, 1, sh * sw)
        sign = torch.randint(0, 2, (n, c, 1), generator=gen).float() * 2 - 1
        p1 = pos1[:, None, :].expand(n, c, sh * sw)
        new = pat * sign + delta.gather(2, p1) / (1e-10 + norm_win1)
        budget = (torch.clamp(eps**2 - norm_img**2, min=0) / c + norm_both**2).sqrt()
        new = new / new.norm(dim=2, keepdim=True).clamp_min(1e-12) * budget
        delta = delta * (1 - m2)
        delta = delta.scatter(2, p1, new)
        total = delta.reshape(n, -1).norm(dim=1).clamp_min(1e-12).view(n, 1, 1)
        out = (x.reshape(n, c, h * w) + delta / total * eps).reshape(n, c, h, w)
        return self._proj4(out, x)

    def _proj4(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        shape = (len(a), *self._orig_shape)
        return self.project(a.reshape(shape), b.reshape(shape)).reshape(a.shape)

    def generate(self, model, x, y=None, target=None):  # type: ignore[no-untyped-def]
        """As :meth:`Attack.generate`; ``attack.last.queries`` holds queries per input."""
        shp = tuple(x.shape[1:]) if hasattr(x, "shape") else None
        self._orig_shape = shp if shp is not None else ()
        return super().generate(model, x, y, target)


def _as_4d(x: torch.Tensor) -> torch.Tensor:
    if x.ndim == 4:
        return x
    if x.ndim == 2:
        return x.reshape(len(x), 1, 1, x.shape[1])
    if x.ndim == 3:
        return x.reshape(len(x), x.shape[1], 1, x.shape[2])
    return x.reshape(len(x), 1, 1, -1)
