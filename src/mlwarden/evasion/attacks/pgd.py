"""Projected Gradient Descent (PGD), Linf and L2, with random start and restarts.

Madry, Makelov, Schmidt, Tsipras & Vladu 2018, "Towards Deep Learning Models Resistant
to Adversarial Attacks", arXiv:1706.06083.

Each step moves ``step_size`` along the sign of the loss gradient (Linf) or its unit
direction (L2) and projects back onto the eps-ball and the value bounds. Defaults:
``eps=0.3`` (Linf, inputs in [0, 1]), ``steps=40``, ``step_size=0.01`` (inputs units),
``random_start=True`` (uniform in the ball), ``restarts=1``, cross-entropy loss.
With ``early_stop=True`` a sample leaves the batch as soon as it is adversarial, so
later steps cost less.

Example::

    x_adv = PGD(norm="linf", eps=0.3, steps=40, step_size=0.01).generate(model, x, y)
"""

from __future__ import annotations

import torch

from mlwarden.core.errors import UserError
from mlwarden.evasion.attacks.base import (
    Attack,
    ModelAccess,
    ce_loss,
    dlr_loss,
    margin,
    normalize_grad,
    random_in_ball,
)


class PGD(Attack):
    """PGD (Madry et al. 2018, arXiv:1706.06083). See the module docstring for defaults."""

    name = "pgd"
    access = "white"

    def __init__(
        self,
        norm: str = "linf",
        eps: float = 0.3,
        steps: int = 40,
        step_size: float = 0.01,
        random_start: bool = True,
        restarts: int = 1,
        loss: str = "ce",
        **kw: object,
    ) -> None:
        super().__init__(norm=norm, eps=eps, **kw)  # type: ignore[arg-type]
        self.steps = steps
        self.step_size = step_size
        self.random_start = random_start
        self.restarts = restarts
        self.loss = loss

    def _check_params(self) -> None:
        super()._check_params()
        if self.steps < 1 or self.restarts < 1:
            raise UserError(
                f"{self.name}: steps and restarts must be >= 1; got {self.steps}, {self.restarts}"
            )
        if not self.step_size > 0:
            raise UserError(f"{self.name}: step_size must be > 0; got {self.step_size}")
        if self.loss not in ("ce", "dlr", "margin"):
            raise UserError(f"{self.name}: loss must be 'ce', 'dlr' or 'margin'; got {self.loss!r}")

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.loss == "ce":
            return ce_loss(logits, labels, self.targeted)
        if self.loss == "dlr" and not self.targeted:
            return dlr_loss(logits, labels)
        return -margin(logits, labels, self.targeted)

    def _run(
        self,
        access: ModelAccess,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        gen: torch.Generator,
    ) -> torch.Tensor:
        goal = target if (self.targeted and target is not None) else y
        best = x.clone()
        self._best = best
        done = self.last.success
        for _ in range(self.restarts):
            idx = (~done).nonzero()[:, 0]
            if len(idx) == 0:
                break
            xa, ga = x[idx], goal[idx]
            start = random_in_ball(xa, self.radius(xa), self.norm, gen)
            adv = xa + start if self.random_start else xa.clone()
            adv = self.project(adv, xa, round_integers=False)
            for _step in range(self.steps + 1):
                point = self.project(adv, xa) if self.has_integers else adv
                if _step == self.steps:
                    pred = access.labels(point)
                else:
                    _, grad, logits = access.loss_grad(point, self._loss, ga)
                    pred = logits.argmax(1)
                hit = pred == ga if self.targeted else pred != ga
                best[idx[hit]] = point[hit]
                done[idx[hit]] = True
                if _step == self.steps:
                    miss = ~hit
                    best[idx[miss]] = point[miss]
                    break
                if self.early_stop and bool(hit.any()):
                    keep = ~hit
                    idx, xa, ga, adv, grad = idx[keep], xa[keep], ga[keep], adv[keep], grad[keep]
                    if len(idx) == 0:
                        break
                adv = self.project(
                    adv + self._step(xa) * normalize_grad(grad, self.norm), xa, round_integers=False
                )
        return best

    def _step(self, x: torch.Tensor) -> torch.Tensor | float:
        """``step_size`` in input units; under an SNR budget each clip has its own radius,
        so the step is Madry et al.'s rule ``2.5 * radius / steps`` per clip."""
        if self.snr_db is None:
            return self.step_size
        return (self.radius(x) * 2.5 / self.steps).view(-1, *[1] * (x.ndim - 1))
