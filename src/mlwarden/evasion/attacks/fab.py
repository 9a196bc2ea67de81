"""FAB: the Fast Adaptive Boundary attack, a minimal-perturbation attack for Linf and L2.

Croce & Hein 2020, "Minimally distorted Adversarial Examples with a Fast Adaptive
Boundary Attack", arXiv:1907.02044 (ICML 2020).

Each iteration linearises the classifier at the current point ``x_i`` and, for the
decision boundary nearest under that linearisation (untargeted: the class ``j != y``
minimising ``|f_j - f_y| / ||grad(f_j - f_y)||_q``, ``q`` the dual norm; targeted: the
target class), projects both ``x_i`` and the original ``x_0`` onto the intersection of
that hyperplane with the box of valid inputs, giving ``d_i`` and ``d_0``. The next
point is the biased step

    x_{i+1} = clip((1 - a) (x_i + eta d_i) + a (x_0 + eta d_0)),
    a = min(||d_i|| / (||d_i|| + ||d_0||), alpha_max),

and when ``x_{i+1}`` is adversarial it is recorded if smaller than the best found and
pulled back towards the original: ``x_{i+1} <- (1 - beta) x_0 + beta x_{i+1}``.

The projection onto hyperplane ∩ box is exact: the minimiser of ``||d||_p`` subject to
``w.d = c`` and ``lo - p <= d <= hi - p`` is ``d(s) = clip(s v, lo - p, hi - p)`` with
``v = w`` for L2 (KKT conditions of the separable quadratic) and ``v = sign(w)`` for Linf
(``s`` is then the Linf radius), where the scalar ``s`` solves the monotone equation
``w.d(s) = c``; it is found by batched bisection. When no point of the box reaches the
hyperplane the box corner closest to it is returned.

Published settings, used as defaults: ``steps=100``, ``alpha_max=0.1``, ``eta=1.05``,
``beta=0.9``; ``restarts=1`` starts from the original point, further restarts from a
random point in the ball of half the best radius found so far (or ``eps``).
``FAB(targeted=True)`` without explicit targets is FAB-T of AutoAttack's standard
version: the classes ranked 2nd to ``n_target_classes + 1``-th by the clean logits,
each attacked in turn on the inputs not yet broken.

With ``eps=None`` the attack returns the smallest adversarial found
(``attack.last.norms``); with ``eps`` an input counts as broken only when that
perturbation lies in the ball.

Example::

    attack = FAB(norm="linf", eps=None)
    x_adv = attack.generate(model, x, y)
    attack.last.norms          # minimal perturbation sizes (Linf)
"""

from __future__ import annotations

import torch

from mlwarden.core.errors import UserError
from mlwarden.evasion.attacks.base import Attack, ModelAccess, flat_norm, random_in_ball

#: bisection steps of the projection (the scalar is found to 2**-60 of its range)
_BISECT = 60


def project_hyperplane_box(
    p: torch.Tensor,
    w: torch.Tensor,
    c: torch.Tensor,
    lower: torch.Tensor,
    upper: torch.Tensor,
    norm: str,
) -> torch.Tensor:
    """Smallest ``d`` (in ``norm``) with ``w.d = c`` and ``lower <= p + d <= upper``.

    ``p``, ``w``, ``lower``, ``upper``: batches ``(N, D)``; ``c``: ``(N,)``. Where the
    constraint cannot be met inside the box, the box point nearest the hyperplane
    (``d`` maximising ``sign(c) w.d``) is returned.
    """
    lo = lower - p
    hi = upper - p
    v = w if norm == "l2" else w.sign()
    sgn = torch.where(c >= 0, 1.0, -1.0)[:, None]
    v = v * sgn  # search s >= 0 along +v so that the target is sgn * c >= 0
    target = c.abs()
    # s beyond which every coordinate is clipped: the largest breakpoint
    with torch.no_grad():
        av = v.abs().clamp_min(1e-30)
        bound = torch.where(v > 0, hi, torch.where(v < 0, -lo, torch.zeros_like(v))) / av
        s_hi = bound.amax(1).clamp_min(0.0)
        s_lo = torch.zeros_like(s_hi)
        wv = w * sgn

        def reach(s: torch.Tensor) -> torch.Tensor:
            d = torch.minimum(torch.maximum(s[:, None] * v, lo), hi)
            return (wv * d).sum(1)

        for _ in range(_BISECT):
            mid = 0.5 * (s_lo + s_hi)
            below = reach(mid) < target
            s_lo = torch.where(below, mid, s_lo)
            s_hi = torch.where(below, s_hi, mid)
        d = torch.minimum(torch.maximum(s_hi[:, None] * v, lo), hi)
    return d


class FAB(Attack):
    """FAB (Croce & Hein 2020, arXiv:1907.02044), Linf or L2, untargeted or targeted."""

    name = "fab"
    access = "white"

    def __init__(
        self,
        norm: str = "linf",
        eps: float | None = None,
        steps: int = 100,
        restarts: int = 1,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
        n_target_classes: int = 9,
        **kw: object,
    ) -> None:
        super().__init__(norm=norm, eps=eps, **kw)  # type: ignore[arg-type]
        self.steps = steps
        self.restarts = restarts
        self.alpha_max = alpha_max
        self.eta = eta
        self.beta = beta
        self.n_target_classes = n_target_classes

    def _check_params(self) -> None:
        super()._check_params()
        if self.steps < 1 or self.restarts < 1 or self.n_target_classes < 1:
            raise UserError("fab: steps, restarts and n_target_classes must be >= 1")
        if not (0.0 <= self.alpha_max <= 1.0 and self.eta >= 1.0 and 0.0 < self.beta < 1.0):
            raise UserError(
                "fab: need 0 <= alpha_max <= 1, eta >= 1 and 0 < beta < 1; got "
                f"{self.alpha_max}, {self.eta}, {self.beta}"
            )

    def generate(self, model, x, y=None, target=None):  # type: ignore[no-untyped-def]
        """As :meth:`Attack.generate`; with ``targeted=True`` and no ``target`` this is FAB-T
        over the top ``n_target_classes`` classes, with a ``target`` it attacks that class."""
        self._explicit_target = target is not None
        return super().generate(model, x, y, target)

    def _targets(self, access, x, y, target, gen):  # type: ignore[no-untyped-def]
        if target is None:
            return y.clone()  # placeholder: FAB-T picks its own target classes
        return super()._targets(access, x, y, target, gen)

    def _run(
        self,
        access: ModelAccess,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        gen: torch.Generator,
    ) -> torch.Tensor:
        n = len(x)
        best = x.clone()
        self._best = best
        best_norm = torch.full((n,), float("inf"))
        pred = access.labels(x)
        goal = target if (self.targeted and getattr(self, "_explicit_target", False)) else None
        already = (pred == goal) if goal is not None else (pred != y)
        best_norm[already] = 0.0
        todo = ~already
        if self.targeted and goal is None:
            with torch.no_grad():
                ranks = access.scores(x).argsort(dim=1, descending=True)
            k = min(self.n_target_classes, ranks.shape[1] - 1)
            for j in range(k):
                idx = (todo & ~self._in_ball(best_norm)).nonzero()[:, 0]
                if len(idx) == 0:
                    break
                r = ranks[idx]
                not_y = r != y[idx, None]
                order = torch.cumsum(not_y.long(), dim=1)
                pick = ((order == j + 1) & not_y).float().argmax(1)
                tgt = r.gather(1, pick[:, None])[:, 0]
                self._search(access, x, y, tgt, idx, best, best_norm, gen)
        else:
            idx = todo.nonzero()[:, 0]
            if len(idx):
                self._search(
                    access, x, y, None if goal is None else goal[idx], idx, best, best_norm, gen
                )
        found = torch.isfinite(best_norm)
        out = torch.where(found.view(-1, *[1] * (x.ndim - 1)), best, x)
        if self.eps is None:
            self.last.success[:] = found
            return out
        out = self.project(out, x)
        hit = access.labels(out)
        ok = (hit == goal) if goal is not None else (hit != y)
        self.last.success[:] = ok & found
        return out

    def _in_ball(self, norms: torch.Tensor) -> torch.Tensor:
        if self.eps is None:
            return torch.isfinite(norms)
        return norms <= float(self.eps) * (1 + 1e-6)

    def _search(
        self,
        access: ModelAccess,
        x_all: torch.Tensor,
        y_all: torch.Tensor,
        tgt: torch.Tensor | None,
        idx: torch.Tensor,
        best_all: torch.Tensor,
        norm_all: torch.Tensor,
        gen: torch.Generator,
    ) -> None:
        """FAB restarts on the samples ``idx``; writes improvements into ``best_all``."""
        lo, hi = self.bounds
        x0 = x_all[idx].flatten(1)
        y = y_all[idx]
        shape = x_all.shape[1:]
        m = len(idx)
        best = best_all[idx].flatten(1).clone()
        best_n = norm_all[idx].clone()
        lower = torch.full_like(x0, lo)
        upper = torch.full_like(x0, hi)
        cons = getattr(self, "_cons", {})
        if cons.get("lower") is not None:
            lower = torch.maximum(lower, torch.minimum(cons["lower"].flatten()[None], x0))
        if cons.get("upper") is not None:
            upper = torch.minimum(upper, torch.maximum(cons["upper"].flatten()[None], x0))
        if cons.get("immutable") is not None:
            imm = cons["immutable"].flatten()[None].expand_as(x0)
            lower = torch.where(imm, x0, lower)
            upper = torch.where(imm, x0, upper)
        for r in range(self.restarts):
            if r == 0:
                xi = x0.clone()
            else:
                radius = torch.where(
                    torch.isfinite(best_n),
                    best_n,
                    torch.full_like(best_n, float(self.eps) if self.eps is not None else 0.1),
                )
                noise = random_in_ball(x0, 1.0, self.norm, gen) * (radius[:, None] / 2)
                xi = torch.minimum(torch.maximum(x0 + noise, lower), upper)
            for _ in range(self.steps):
                f, w = self._boundary(access, xi.view(m, *shape), y, tgt)
                w = w.flatten(1)
                d_cur = project_hyperplane_box(xi, w, -f, lower, upper, self.norm)
                c0 = -f - (w * (x0 - xi)).sum(1)
                d_orig = project_hyperplane_box(x0, w, c0, lower, upper, self.norm)
                a_cur = flat_norm(d_cur, self.norm)
                a_orig = flat_norm(d_orig, self.norm)
                alpha = (a_cur / (a_cur + a_orig).clamp_min(1e-12)).clamp(0.0, self.alpha_max)
                alpha = alpha[:, None]
                nxt = (1 - alpha) * (xi + self.eta * d_cur) + alpha * (x0 + self.eta * d_orig)
                nxt = torch.minimum(torch.maximum(nxt, lower), upper)
                nxt_full = self.project_free(nxt.view(m, *shape), x0.view(m, *shape)).flatten(1)
                pred = access.labels(nxt_full.view(m, *shape))
                adv = (pred == tgt) if tgt is not None else (pred != y)
                size = flat_norm(nxt_full - x0, self.norm)
                better = adv & (size < best_n)
                best[better] = nxt_full[better]
                best_n = torch.where(better, size, best_n)
                xi = torch.where(adv[:, None], (1 - self.beta) * x0 + self.beta * nxt, nxt)
        best_all[idx] = best.view(m, *shape)
        norm_all[idx] = best_n

    def project_free(self, p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Bounds and tabular constraints only (integer rounding included), no eps-ball."""
        eps, self.eps = self.eps, None
        try:
            return self.project(p, x)
        finally:
            self.eps = eps

    def _boundary(
        self, access: ModelAccess, xi: torch.Tensor, y: torch.Tensor, tgt: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Value ``f = z_j - z_y`` and input gradient of the nearest linearised boundary.

        Targeted: ``j`` is the target (one backward pass). Untargeted: ``j`` minimises
        ``|f_j| / ||grad f_j||_q`` over ``j != y`` (one backward pass per class).
        Randomised targets (EOT) average the gradient over ``eot_samples`` draws.
        """
        if tgt is not None:

            def diff(z: torch.Tensor, lab: torch.Tensor) -> torch.Tensor:
                return z.gather(1, tgt[:, None])[:, 0] - z.gather(1, lab[:, None])[:, 0]

            f, g, _ = access.loss_grad(xi, diff, y)
            return f, g
        reps = access.eot_samples if access.randomized else 1
        xr = xi.detach().requires_grad_(True)
        z = access.logits(xr)
        n_cls = z.shape[1]
        f_all = torch.zeros(len(xi), n_cls)
        g_all = torch.zeros(len(xi), n_cls, *xi.shape[1:])
        for rep in range(reps):
            if rep:
                xr = xi.detach().requires_grad_(True)
                z = access.logits(xr)
            zy = z.gather(1, y[:, None])[:, 0]
            for j in range(n_cls):
                g = access.input_grad(z[:, j] - zy, xr, retain_graph=j < n_cls - 1)
                g_all[:, j] += g / reps
                f_all[:, j] += (z[:, j] - zy).detach() / reps
        dual = 1.0 if self.norm == "linf" else 2.0
        gn = g_all.flatten(2).norm(p=dual, dim=2)
        ratio = f_all.abs() / gn.clamp_min(1e-12)
        ratio.scatter_(1, y[:, None], float("inf"))
        j = ratio.argmin(1)
        rows = torch.arange(len(xi))
        return f_all[rows, j], g_all[rows, j]
