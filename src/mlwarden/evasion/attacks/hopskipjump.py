"""HopSkipJump: decision-based (label-only) black-box attack, L2 and Linf.

Chen, Jordan & Wainwright 2020, "HopSkipJumpAttack: A Query-Efficient Decision-Based
Attack", arXiv:1904.02144 (IEEE S&P 2020), Algorithm 2.

Starting from any adversarial point (uniform noise, ``init_tries`` draws), each
iteration (1) binary-searches the boundary between the input and the current point,
(2) estimates the boundary's normal from ``B_t = init_evals * sqrt(t)`` label queries
around the boundary point (Monte Carlo with a baseline), (3) steps along it with a
geometric step-size search starting at ``||x_t - x|| / sqrt(t)``. Defaults as
published: ``gamma=1.0`` (binary-search threshold ``theta = gamma / d^{3/2}`` for L2,
``gamma / d^2`` for Linf), ``init_evals=100``, ``max_evals=10000``, ``max_iter=64``;
plus a per-input query budget ``max_queries=5000``.

It minimises the perturbation: with ``eps=None`` the output is the closest adversarial
point found; with ``eps`` set the output is projected onto the eps-ball and counts as a
success only if it is still adversarial there.

Example::

    attack = HopSkipJump(norm="l2", eps=None, max_queries=2000)
    x_adv = attack.generate(label_only_target, x, y)
    attack.last.norms   # L2 size of each perturbation
"""

from __future__ import annotations

import math

import torch

from mlwarden.core.errors import UserError
from mlwarden.evasion.attacks.base import Attack, ModelAccess, flat_norm


class HopSkipJump(Attack):
    """HopSkipJump (Chen et al. 2020, arXiv:1904.02144); needs predicted labels only."""

    name = "hopskipjump"
    access = "label"
    atlas = "AML.T0043.001"

    def __init__(
        self,
        norm: str = "l2",
        eps: float | None = None,
        max_queries: int = 5000,
        max_iter: int = 64,
        init_evals: int = 100,
        max_evals: int = 10000,
        gamma: float = 1.0,
        init_tries: int = 100,
        **kw: object,
    ) -> None:
        super().__init__(norm=norm, eps=eps, **kw)  # type: ignore[arg-type]
        self.max_queries = max_queries
        self.max_iter = max_iter
        self.init_evals = init_evals
        self.max_evals = max_evals
        self.gamma = gamma
        self.init_tries = init_tries

    def _check_params(self) -> None:
        super()._check_params()
        if self.max_queries < 1 or self.max_iter < 1 or self.init_evals < 1:
            raise UserError("hopskipjump: max_queries, max_iter and init_evals must be >= 1")

    def _run(
        self,
        access: ModelAccess,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        gen: torch.Generator,
    ) -> torch.Tensor:
        n = len(x)
        lo, hi = self.bounds
        goal = target if (self.targeted and target is not None) else y
        used = self.last.queries
        d = x[0].numel()
        theta = self.gamma / (d**1.5 if self.norm == "l2" else d**2)
        shape = [-1] + [1] * (x.ndim - 1)

        def is_adv(points: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            used.index_add_(0, rows, torch.ones(len(rows), dtype=torch.long))
            pred = access.labels(points)
            return pred == goal[rows] if self.targeted else pred != goal[rows]

        def left(rows: torch.Tensor, need: int = 1) -> torch.Tensor:
            return rows[self.max_queries - used[rows] >= need]

        # 1. an adversarial starting point per input
        x_b = x.clone()
        found = torch.zeros(n, dtype=torch.bool)
        for _ in range(self.init_tries):
            rows = left((~found).nonzero()[:, 0])
            if len(rows) == 0:
                break
            noise = torch.rand(x[rows].shape, generator=gen) * (hi - lo) + lo
            noise = self._free(noise, x[rows])
            ok = is_adv(noise, rows)
            x_b[rows[ok]] = noise[ok]
            found[rows[ok]] = True
        self._best = x_b
        rows = found.nonzero()[:, 0]
        if len(rows):
            x_b[rows] = self._binary_search(x[rows], x_b[rows], rows, is_adv, theta, blend=True)
        dist = self._dist(x_b, x)

        # 2. gradient estimation, geometric step, boundary search
        for t in range(1, self.max_iter + 1):
            rows = left(found.nonzero()[:, 0], need=10 + 2 * int(math.log2(1 / theta) + 1))
            if len(rows) == 0:
                break
            xr, xbr = x[rows], x_b[rows]
            if t == 1:
                delta = torch.full((len(rows),), 0.1 * (hi - lo))
            else:
                mult = math.sqrt(d) if self.norm == "l2" else float(d)
                delta = mult * theta * dist[rows]
            budget = self.max_queries - used[rows]
            evals = torch.clamp(budget - 40, min=1).clamp(
                max=min(int(self.init_evals * math.sqrt(t)), self.max_evals)
            )
            grad = self._estimate_grad(xbr, delta, evals, rows, is_adv, gen)
            update = (
                grad.sign()
                if self.norm == "linf"
                else grad / flat_norm(grad, "l2").clamp_min(1e-12).view(shape)
            )
            step = self._dist(xbr, xr) / math.sqrt(t)
            cand = (xbr + step.view(shape) * update).clamp(lo, hi)
            pending = torch.ones(len(rows), dtype=torch.bool)
            for _ in range(25):
                sel = pending.nonzero()[:, 0]
                sel = sel[self.max_queries - used[rows[sel]] >= 1]
                if len(sel) == 0:
                    break
                trial = (xbr[sel] + step[sel].view(shape) * update[sel]).clamp(lo, hi)
                ok = is_adv(self._free(trial, xr[sel]), rows[sel])
                cand[sel[ok]] = self._free(trial[ok], xr[sel[ok]])
                pending[sel[ok]] = False
                step[sel[~ok]] /= 2.0
            moved = ~pending
            if bool(moved.any()):
                m = moved.nonzero()[:, 0]
                new_b = self._binary_search(xr[m], cand[m], rows[m], is_adv, theta, blend=False)
                better = self._dist(new_b, xr[m]) <= dist[rows[m]]
                x_b[rows[m[better]]] = new_b[better]
            dist = self._dist(x_b, x)

        success = found.clone()
        if self.eps is not None:
            proj = self.project(x_b, x)
            rows = found.nonzero()[:, 0]
            if len(rows):
                inside = dist[rows] <= float(self.eps) + 1e-6
                success[rows] = inside
                x_b = proj
        self.last.success[:] = success
        return x_b

    def _free(self, p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Bounds and tabular constraints, without the eps-ball (HSJ minimises the norm)."""
        eps, self.eps = self.eps, None
        try:
            return self.project(p, x)
        finally:
            self.eps = eps

    def _dist(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return flat_norm(a - b, self.norm)

    def _binary_search(self, x, x_adv, rows, is_adv, theta, blend: bool):  # type: ignore[no-untyped-def]
        """Shrink each adversarial point towards its input while it stays adversarial."""
        shape = [-1] + [1] * (x.ndim - 1)
        use_linf = self.norm == "linf" and not blend
        if use_linf:
            dist = self._dist(x_adv, x)
            high = dist.clone()
            thresh = torch.minimum(dist * theta, torch.full_like(dist, theta))
        else:
            high = torch.ones(len(x))
            thresh = torch.full((len(x),), theta)
        low = torch.zeros(len(x))

        def point(alpha: torch.Tensor) -> torch.Tensor:
            a = alpha.view(shape)
            if use_linf:
                return self._free(torch.minimum(torch.maximum(x_adv, x - a), x + a), x)
            return self._free((1 - a) * x + a * x_adv, x)

        for _ in range(60):
            open_ = ((high - low) > thresh).nonzero()[:, 0]
            open_ = open_[self.max_queries - self.last.queries[rows[open_]] >= 1]
            if len(open_) == 0:
                break
            mid = (high[open_] + low[open_]) / 2
            sub = point(torch.zeros(len(x)).index_copy(0, open_, mid))[open_]
            ok = is_adv(sub, rows[open_])
            high[open_[ok]] = mid[ok]
            low[open_[~ok]] = mid[~ok]
        return point(high)

    def _estimate_grad(self, xb, delta, evals, rows, is_adv, gen):  # type: ignore[no-untyped-def]
        """Monte Carlo estimate of the boundary normal at ``xb`` with a baseline (eq. 9)."""
        lo, hi = self.bounds
        counts = evals.long()
        rep = torch.repeat_interleave(torch.arange(len(xb)), counts)
        base = xb[rep]
        if self.norm == "l2":
            u = torch.randn(base.shape, generator=gen)
        else:
            u = torch.rand(base.shape, generator=gen) * 2 - 1
        u = u / flat_norm(u, "l2").clamp_min(1e-12).view([-1] + [1] * (u.ndim - 1))
        shape = [-1] + [1] * (u.ndim - 1)
        pert = (base + delta[rep].view(shape) * u).clamp(lo, hi)
        u = (pert - base) / delta[rep].view(shape).clamp_min(1e-12)
        phi = is_adv(pert, rows[rep]).float() * 2 - 1
        k = counts.clamp_min(1).float()
        mean = torch.zeros(len(xb)).index_add_(0, rep, phi) / k
        # a baseline removes the bias of one-sided decisions (eq. 9); all-same falls back
        saturated = mean.abs() == 1.0
        centred = torch.where(saturated[rep], phi, phi - mean[rep])
        grads = torch.zeros_like(xb).index_add_(0, rep, centred.view(shape) * u)
        return grads / k.view(shape)
