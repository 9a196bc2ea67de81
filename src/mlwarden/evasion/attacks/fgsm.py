"""Fast Gradient Sign Method (FGSM) and its L2 analogue (fast gradient method).

Goodfellow, Shlens & Szegedy 2015, "Explaining and Harnessing Adversarial Examples",
arXiv:1412.6572. One step of size ``eps`` along the sign of the cross-entropy gradient
(Linf) or along the unit gradient (L2). Defaults: ``norm="linf"``, ``eps=0.3``.

Example::

    x_adv = FGSM(eps=0.1).generate(model, x, y)
"""

from __future__ import annotations

import torch

from mlwarden.evasion.attacks.base import Attack, ModelAccess, ce_loss, normalize_grad


class FGSM(Attack):
    """FGSM (Goodfellow et al. 2015, arXiv:1412.6572): a single gradient-sign step of size eps."""

    name = "fgsm"
    access = "white"

    def __init__(self, norm: str = "linf", eps: float = 0.3, **kw: object) -> None:
        super().__init__(norm=norm, eps=eps, **kw)  # type: ignore[arg-type]

    def _run(
        self,
        access: ModelAccess,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        gen: torch.Generator,
    ) -> torch.Tensor:
        goal = target if (self.targeted and target is not None) else y
        _, grad, _ = access.loss_grad(x, lambda z, t: ce_loss(z, t, self.targeted), goal)
        adv = self.project(x + float(self.eps or 0.0) * normalize_grad(grad, self.norm), x)
        self.last.success[:] = self.succeeded(access, adv, y, target)
        return adv
