"""Differentially private training (DP-SGD) through Opacus.

"Deep Learning with Differential Privacy" (Abadi et al., 2016, arXiv:1607.00133):
clip each example's gradient to ``max_grad_norm`` and add Gaussian noise of std
``noise_multiplier * max_grad_norm`` to the sum, sampling batches by Poisson
sampling; the privacy accountant (RDP) then bounds the whole training run as
``(epsilon, delta)``-DP. Epsilon is unitless (smaller is more private); delta is a
probability and must be well below ``1 / n`` for ``n`` training records.

Give either ``target_epsilon`` (Opacus picks the noise) or ``noise_multiplier``.

Example::

    result = train_dp(MLP(64, 10), x, y, target_epsilon=8.0, epochs=20)
    result.epsilon, result.delta, result.model
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mlwarden.core.errors import UserError


@dataclass
class DPResult:
    """A model trained with DP-SGD and its privacy guarantee."""

    model: nn.Module
    epsilon: float
    delta: float
    noise_multiplier: float
    max_grad_norm: float
    epochs: int
    sample_rate: float

    def as_dict(self) -> dict[str, float]:
        return {
            "epsilon": self.epsilon,
            "delta": self.delta,
            "noise_multiplier": self.noise_multiplier,
            "max_grad_norm": self.max_grad_norm,
            "epochs": self.epochs,
            "sample_rate": self.sample_rate,
        }


def default_delta(n: int) -> float:
    """``min(1e-5, 1 / (10 n))``: well below one over the number of records."""
    return float(min(1e-5, 1.0 / (10.0 * max(n, 1))))


def train_dp(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    target_epsilon: float | None = 8.0,
    noise_multiplier: float | None = None,
    delta: float | None = None,
    max_grad_norm: float = 1.0,
    epochs: int = 20,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
) -> DPResult:
    """Train ``model`` (logits out) with DP-SGD; returns it in eval mode with its epsilon.

    Layers Opacus cannot give per-example gradients for (BatchNorm) are replaced by
    ``ModuleValidator.fix`` (GroupNorm) before training.
    """
    from opacus import PrivacyEngine
    from opacus.validators import ModuleValidator

    n = len(x)
    if n < 2:
        raise UserError(f"DP training needs at least 2 records; got {n}")
    if (target_epsilon is None) == (noise_multiplier is None):
        raise UserError("give exactly one of target_epsilon and noise_multiplier")
    if target_epsilon is not None and target_epsilon <= 0:
        raise UserError(f"target_epsilon must be positive; got {target_epsilon}")
    delta = default_delta(n) if delta is None else float(delta)
    if not 0 < delta < 1:
        raise UserError(f"delta must be in (0, 1); got {delta}")
    torch.manual_seed(seed)
    if ModuleValidator.validate(model, strict=False):
        model = ModuleValidator.fix(model)
    data = torch.utils.data.TensorDataset(
        torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long)
    )
    loader = torch.utils.data.DataLoader(
        data, batch_size=min(batch_size, n), generator=torch.Generator().manual_seed(seed)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    with warnings.catch_warnings():
        # Opacus warns that its fast (non-cryptographic) noise RNG is on; that is the
        # documented setting for measuring, not for a production release.
        warnings.simplefilter("ignore")
        engine = PrivacyEngine(accountant="rdp")
        if target_epsilon is not None:
            model, optimizer, loader = engine.make_private_with_epsilon(
                module=model,
                optimizer=optimizer,
                data_loader=loader,
                target_epsilon=target_epsilon,
                target_delta=delta,
                epochs=epochs,
                max_grad_norm=max_grad_norm,
            )
        else:
            model, optimizer, loader = engine.make_private(
                module=model,
                optimizer=optimizer,
                data_loader=loader,
                noise_multiplier=noise_multiplier,
                max_grad_norm=max_grad_norm,
            )
        loss_fn = nn.CrossEntropyLoss()
        model.train()
        for _ in range(epochs):
            for xb, yb in loader:
                if len(xb) == 0:
                    continue
                optimizer.zero_grad()
                loss_fn(model(xb), yb).backward()
                optimizer.step()
        epsilon = float(engine.get_epsilon(delta))
    plain: nn.Module = model._module if hasattr(model, "_module") else model  # type: ignore[assignment]
    return DPResult(
        model=plain.eval(),
        epsilon=epsilon,
        delta=delta,
        noise_multiplier=float(optimizer.noise_multiplier),
        max_grad_norm=max_grad_norm,
        epochs=epochs,
        sample_rate=float(min(batch_size, n) / n),
    )
