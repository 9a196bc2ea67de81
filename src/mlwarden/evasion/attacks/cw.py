"""Carlini-Wagner L2 attack: minimal L2 perturbation by optimisation in tanh space.

Carlini & Wagner 2017, "Towards Evaluating the Robustness of Neural Networks",
arXiv:1608.04644 (IEEE S&P 2017).

Minimises ``||x' - x||_2^2 + c * max(z_y - max_{j != y} z_j, -kappa)`` (targeted:
``max(max_{j != t} z_j - z_t, -kappa)``) over ``x' = lo + (hi - lo) * (tanh(w) + 1) / 2``
with Adam, and binary-searches the constant ``c`` per input. Published defaults:
``confidence=0`` (kappa), ``initial_const=1e-3``, ``binary_search_steps=9``,
``learning_rate=0.01``; ``steps=1000`` per search step (the paper's code allows 10,000)
with early abort when the loss stops falling. ``eps=None`` returns the smallest
adversarial example found; with ``eps`` set it is projected onto the L2 ball.

Example::

    attack = CarliniWagnerL2(steps=200)
    x_adv = attack.generate(model, x, y)
    attack.last.norms        # L2 size of each perturbation
"""

from __future__ import annotations

import torch

from mlwarden.core.errors import UserError
from mlwarden.evasion.attacks.base import Attack, ModelAccess, flat_norm, margin


class CarliniWagnerL2(Attack):
    """Carlini-Wagner L2 (Carlini & Wagner 2017, arXiv:1608.04644)."""

    name = "cw_l2"
    access = "white"

    def __init__(
        self,
        eps: float | None = None,
        confidence: float = 0.0,
        initial_const: float = 1e-3,
        binary_search_steps: int = 9,
        steps: int = 1000,
        learning_rate: float = 0.01,
        **kw: object,
    ) -> None:
        kw.pop("norm", None)
        super().__init__(norm="l2", eps=eps, **kw)  # type: ignore[arg-type]
        self.confidence = confidence
        self.initial_const = initial_const
        self.binary_search_steps = binary_search_steps
        self.steps = steps
        self.learning_rate = learning_rate

    def _check_params(self) -> None:
        super()._check_params()
        if self.binary_search_steps < 1 or self.steps < 1:
            raise UserError("cw_l2: binary_search_steps and steps must be >= 1")

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
        goal = target if (self.targeted and target is not None) else y
        unit = ((x - lo) / (hi - lo) * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6)
        w0 = torch.atanh(unit)
        const = torch.full((n,), self.initial_const)
        lower = torch.zeros(n)
        upper = torch.full((n,), 1e10)
        best = x.clone()
        self._best = best
        best_l2 = torch.full((n,), float("inf"))
        shape = [-1] + [1] * (x.ndim - 1)
        for _ in range(self.binary_search_steps):
            w = w0.clone().requires_grad_(True)
            opt = torch.optim.Adam([w], lr=self.learning_rate)
            found = torch.zeros(n, dtype=torch.bool)
            prev = float("inf")
            for it in range(self.steps):
                raw = lo + (hi - lo) * (torch.tanh(w) + 1) / 2
                x_new = self.project(raw, x, round_integers=False) if self._cons else raw
                logits = access.logits(x_new)
                m = margin(logits, goal, self.targeted)
                l2 = ((x_new - x) ** 2).reshape(n, -1).sum(1)
                loss = (l2 + const * torch.clamp(m, min=-self.confidence)).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
                with torch.no_grad():
                    cand = self.project(x_new.detach(), x) if self.has_integers else x_new.detach()
                    ok = (m.detach() <= -self.confidence) & (
                        logits.argmax(1) == goal if self.targeted else logits.argmax(1) != goal
                    )
                    norms = flat_norm(cand - x, "l2")
                    better = ok & (norms < best_l2)
                    best[better] = cand[better]
                    best_l2[better] = norms[better]
                    found |= ok
                if it % max(self.steps // 10, 1) == 0:
                    current = float(loss.detach())
                    if current > prev * 0.9999:
                        break
                    prev = current
            upper = torch.where(found, torch.minimum(upper, const), upper)
            lower = torch.where(found, lower, torch.maximum(lower, const))
            const = torch.where(upper < 1e9, (lower + upper) / 2, const * 10)
        done = torch.isfinite(best_l2)
        if self.eps is not None:
            done &= best_l2 <= float(self.eps) + 1e-6
        self.last.success[:] = done
        del shape
        return best
