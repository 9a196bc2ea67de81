"""Transfer attack: craft adversarial inputs on a surrogate model, send them to the target.

Papernot, McDaniel & Goodfellow 2016, "Transferability in Machine Learning: from
Phenomena to Black-Box Attacks using Adversarial Samples", arXiv:1605.07277; Papernot
et al. 2017, "Practical Black-Box Attacks against Machine Learning", arXiv:1602.02697
(training the surrogate on the target's own answers).

The white-box ``attack`` (default: PGD, 40 steps, step ``eps / 4``, 1 restart) runs on
the ``surrogate`` (a ``torch.nn.Module`` or white-box Target); the target is queried
once per input, only to record which inputs transfer. :func:`fit_surrogate` trains a
surrogate from the target's predicted labels (one query per training input).

Example::

    surrogate = fit_surrogate(target, x_pool)           # a copy trained on target labels
    x_adv = Transfer(surrogate, eps=0.1).generate(target, x, y)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from mlwarden.core.errors import UserError
from mlwarden.evasion.attacks.base import Attack, ModelAccess, to_tensor
from mlwarden.evasion.attacks.pgd import PGD


class Transfer(Attack):
    """Black-box transfer from a surrogate (Papernot et al. 2016, arXiv:1605.07277)."""

    name = "transfer"
    access = "label"
    atlas = "AML.T0043.002"

    def __init__(
        self,
        surrogate: Any,
        attack: Attack | None = None,
        norm: str = "linf",
        eps: float = 0.3,
        **kw: Any,
    ) -> None:
        super().__init__(norm=norm, eps=eps, **kw)
        self.surrogate = surrogate
        self.attack = attack

    def _run(
        self,
        access: ModelAccess,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        gen: torch.Generator,
    ) -> torch.Tensor:
        inner = self.attack or PGD(
            norm=self.norm,
            eps=float(self.eps or 0.0),
            steps=40,
            step_size=max(float(self.eps or 0.0) / 4, 1e-12),
            bounds=self.bounds,
            targeted=self.targeted,
            constraints=self.constraints,
            early_stop=False,
            seed=self.seed,
        )
        if inner.eps is not None and self.eps is not None and inner.eps > self.eps + 1e-12:
            raise UserError(f"transfer: the inner attack's eps {inner.eps} exceeds {self.eps}")
        x_adv = inner.generate(self.surrogate, x, y, target if self.targeted else None)
        x_adv = self.project(x_adv, x)
        self.last.success[:] = self.succeeded(access, x_adv, y, target)
        self.last.queries[:] = 1
        return x_adv


def fit_surrogate(
    target: Any,
    x: Any,
    model: nn.Module | None = None,
    epochs: int = 30,
    seed: int = 0,
) -> nn.Module:
    """Train a surrogate on the target's predicted labels for ``x`` (one query per input).

    Default architecture: :class:`~mlwarden.core.models.SmallCNN` for square images,
    :class:`~mlwarden.core.models.MLP` otherwise.
    """
    from mlwarden.core.models import MLP, SmallCNN, fit

    xt, _ = to_tensor(x)
    if len(xt) < 2:
        raise UserError("fit_surrogate needs at least two inputs to query")
    access = ModelAccess(target)
    labels = access.labels(xt)
    n_classes = int(access.target.num_classes or int(labels.max()) + 1)
    if model is None:
        if xt.ndim == 4 and xt.shape[2] == xt.shape[3]:
            model = SmallCNN(in_channels=xt.shape[1], num_classes=n_classes, image_size=xt.shape[2])
        else:
            model = MLP(int(np.prod(xt.shape[1:])), n_classes)
    torch.manual_seed(seed)
    return fit(model, xt, labels, epochs=epochs, seed=seed)
