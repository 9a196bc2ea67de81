"""PGD adversarial training: the model hardening that survives adaptive attacks.

Madry, Makelov, Schmidt, Tsipras & Vladu 2018, "Towards Deep Learning Models Resistant
to Adversarial Attacks", arXiv:1706.06083: minimise the cross-entropy on PGD
adversarial examples (random start, ``steps`` steps of ``step_size``) generated on
the fly for every mini-batch. Defaults follow the paper's MNIST recipe in spirit
(``eps=0.3`` Linf, ``steps=40``, ``step_size=0.01``) but with fewer epochs; ``warmup``
epochs of clean training first help small models converge. ATLAS mitigation
AML.M0003 (Model Hardening).

Example::

    model = SmallCNN(1, 10, 8)
    adversarial_training(model, x, y, eps=0.1, steps=10, step_size=0.025, epochs=20)
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mlwarden.core.errors import UserError
from mlwarden.evasion.attacks.base import normalize_grad, project_ball, random_in_ball


def adversarial_training(
    model: nn.Module,
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    *,
    norm: str = "linf",
    eps: float = 0.3,
    steps: int = 40,
    step_size: float = 0.01,
    epochs: int = 20,
    lr: float = 1e-3,
    batch_size: int = 64,
    warmup: int = 0,
    bounds: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
) -> nn.Module:
    """Train ``model`` in place on PGD adversarial examples (Adam); returns it in eval mode."""
    if norm not in ("linf", "l2"):
        raise UserError(f"norm must be 'linf' or 'l2'; got {norm!r}")
    if eps < 0 or steps < 1 or epochs < 1 or step_size <= 0:
        raise UserError(
            "adversarial_training: need eps >= 0, steps >= 1, epochs >= 1, step_size > 0"
        )
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.long)
    lo, hi = bounds
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(epochs):
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), batch_size):
            idx = perm[i : i + batch_size]
            xb, yb = xt[idx], yt[idx]
            if epoch >= warmup and eps > 0:
                model.eval()
                xb = _pgd(model, xb, yb, norm, eps, steps, step_size, lo, hi, gen)
            model.train()
            opt.zero_grad()
            loss_fn(model(xb), yb).backward()
            opt.step()
    return model.eval()


def _pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    norm: str,
    eps: float,
    steps: int,
    step_size: float,
    lo: float,
    hi: float,
    gen: torch.Generator,
) -> torch.Tensor:
    adv = (x + random_in_ball(x, eps, norm, gen)).clamp(lo, hi)
    for _ in range(steps):
        adv.requires_grad_(True)
        loss = nn.functional.cross_entropy(model(adv), y)
        (g,) = torch.autograd.grad(loss, adv)
        with torch.no_grad():
            adv = adv + step_size * normalize_grad(g, norm)
            adv = (x + project_ball(adv - x, eps, norm)).clamp(lo, hi)
    return adv.detach()
