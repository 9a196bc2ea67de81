"""DeepFool: minimal perturbation by iterated linearisation of the decision boundary.

Moosavi-Dezfooli, Fawzi & Frossard 2016, "DeepFool: a simple and accurate method to
fool deep neural networks", arXiv:1511.04599 (CVPR 2016).

At each step the classifier is linearised around the current point and the input is
moved onto the nearest linearised boundary among the ``candidates`` classes ranked
highest on the clean input (L2: along ``w / ||w||_2^2``; Linf: along ``sign(w) /
||w||_1``), with ``overshoot=0.02`` on the accumulated perturbation. Published
defaults: ``steps=50``, ``overshoot=0.02``, ``candidates=10``. Targeted mode uses the
target class as the only candidate. ``eps=None`` returns the minimal perturbation
found; with ``eps`` it is projected onto the ball and succeeds only if still adversarial.

Example::

    attack = DeepFool(norm="l2", eps=None)
    x_adv = attack.generate(model, x, y)
    attack.last.norms          # minimal perturbation sizes
"""

from __future__ import annotations

import torch

from mlwarden.core.errors import UserError
from mlwarden.evasion.attacks.base import Attack, ModelAccess


class DeepFool(Attack):
    """DeepFool (Moosavi-Dezfooli et al. 2016, arXiv:1511.04599), L2 or Linf."""

    name = "deepfool"
    access = "white"

    def __init__(
        self,
        norm: str = "l2",
        eps: float | None = None,
        steps: int = 50,
        overshoot: float = 0.02,
        candidates: int = 10,
        **kw: object,
    ) -> None:
        super().__init__(norm=norm, eps=eps, **kw)  # type: ignore[arg-type]
        self.steps = steps
        self.overshoot = overshoot
        self.candidates = candidates

    def _check_params(self) -> None:
        super()._check_params()
        if self.steps < 1 or self.candidates < 2:
            raise UserError("deepfool: steps must be >= 1 and candidates >= 2")

    def _run(
        self,
        access: ModelAccess,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        gen: torch.Generator,
    ) -> torch.Tensor:
        lo, hi = self.bounds
        n = len(x)
        shape = [-1] + [1] * (x.ndim - 1)
        if self.targeted and target is not None:
            cand = target[:, None]
        else:
            scores = access.scores(x)
            k = min(self.candidates, scores.shape[1])
            cand = scores.argsort(1, descending=True)[:, :k]
        r_tot = torch.zeros_like(x)
        best = x.clone()
        self._best = best
        done = torch.zeros(n, dtype=torch.bool)
        x_adv = x.clone()
        for _ in range(self.steps):
            idx = (~done).nonzero()[:, 0]
            if len(idx) == 0:
                break
            xi = x_adv[idx].detach().requires_grad_(True)
            logits = access.logits(xi)
            yi = y[idx]
            pred = logits.argmax(1)
            hit = pred == target[idx] if (self.targeted and target is not None) else pred != yi
            if bool(hit.any()):
                best[idx[hit]] = x_adv[idx[hit]]
                done[idx[hit]] = True
            keep = ~hit
            if not bool(keep.any()):
                break
            ci = cand[idx]
            z_y = logits.gather(1, yi[:, None])[:, 0]
            g_y = access.input_grad(z_y, xi, retain_graph=True)
            best_dist = torch.full((len(idx),), float("inf"))
            best_r = torch.zeros_like(xi)
            for j in range(ci.shape[1]):
                cj = ci[:, j]
                valid = cj != yi
                if not bool(valid.any()):
                    continue
                z_k = logits.gather(1, cj[:, None])[:, 0]
                g_k = access.input_grad(z_k, xi, retain_graph=True)
                w = (g_k - g_y).detach()
                f = (z_k - z_y).detach().abs()
                flat = w.reshape(len(w), -1)
                if self.norm == "l2":
                    wn = flat.norm(dim=1).clamp_min(1e-12)
                    dist = f / wn
                    r = ((f + 1e-4) / wn**2).view(shape) * w
                else:
                    wn = flat.abs().sum(1).clamp_min(1e-12)
                    dist = f / wn
                    r = ((f + 1e-4) / wn).view(shape) * w.sign()
                better = valid & (dist < best_dist)
                best_dist = torch.where(better, dist, best_dist)
                best_r[better] = r[better]
            rows = idx[keep]
            r_tot[rows] += best_r[keep]
            x_adv[rows] = self._free(x[rows] + (1 + self.overshoot) * r_tot[rows], x[rows], lo, hi)
        left = (~done).nonzero()[:, 0]
        if len(left):
            final = access.labels(x_adv[left])
            hit = (
                final == target[left]
                if (self.targeted and target is not None)
                else final != y[left]
            )
            best[left[hit]] = x_adv[left[hit]]
            done[left[hit]] = True
            best[left[~hit]] = x_adv[left[~hit]]
        success = done.clone()
        if self.eps is not None:
            proj = self.project(best, x)
            moved = (proj - best).reshape(n, -1).abs().amax(1) > 1e-7
            if bool((moved & success).any()):
                rows = (moved & success).nonzero()[:, 0]
                pred = access.labels(proj[rows])
                ok = (
                    pred == target[rows]
                    if (self.targeted and target is not None)
                    else pred != y[rows]
                )
                success[rows] = ok
            best = proj
        self.last.success[:] = success
        return best

    def _free(self, p: torch.Tensor, x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
        eps, self.eps = self.eps, None
        try:
            return self.project(p, x)
        finally:
            self.eps = eps
