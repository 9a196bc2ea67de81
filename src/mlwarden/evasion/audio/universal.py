"""A universal perturbation: one waveform that, added to every clip, changes the decisions.

Universal adversarial perturbations (Moosavi-Dezfooli et al. 2017, "Universal
adversarial perturbations", arXiv:1610.08401), found with the projected stochastic
gradient ascent of Shafahi et al. 2020 ("Universal Adversarial Training",
arXiv:1811.11304): ascend the mean cross-entropy over the clips with the L2-normalised
gradient and project back onto the ball. Under an SNR budget the radius is the
smallest clip's ``||x_i|| / 10^(snr_db/20)``, so *every* clip keeps at least ``snr_db``
dB; adding the perturbation and clipping to the bounds can only shrink it per clip.
The fooling rate is re-measured by a fresh query on the final clips.

Example::

    res = universal_perturbation(model, clips, labels, snr_db=30, steps=100)
    res.fooling_rate, res.min_snr_db, res.delta.shape   # delta: one clip's shape
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mlwarden.core.errors import UserError
from mlwarden.evasion.attacks.base import ModelAccess, ce_loss, snr_radius, to_tensor


@dataclass
class UniversalResult:
    """The perturbation (one clip's shape), the fraction of the correctly classified
    clips it fools (fresh queries), which ones, and the lowest SNR (dB) of any clip."""

    delta: np.ndarray
    fooling_rate: float
    fooled: np.ndarray
    min_snr_db: float


def universal_perturbation(
    model: Any,
    x: Any,
    y: Any,
    *,
    snr_db: float,
    steps: int = 100,
    step_fraction: float = 0.1,
    bounds: tuple[float, float] = (-1.0, 1.0),
    seed: int = 0,
) -> UniversalResult:
    """One perturbation for all of ``x`` inside every clip's SNR ball; white-box access.

    ``step_fraction``: each ascent step moves ``step_fraction`` of the radius.
    """
    xt, _ = to_tensor(x)
    yt = torch.as_tensor(np.asarray(y)).long()
    if len(xt) == 0 or yt.shape != (len(xt),):
        raise UserError(
            f"universal_perturbation: need clips and one label each; got {tuple(yt.shape)}"
        )
    if steps < 1 or not 0 < step_fraction <= 1:
        raise UserError("universal_perturbation: steps >= 1 and 0 < step_fraction <= 1")
    acc = ModelAccess(model)
    radius = float(snr_radius(xt, snr_db).min())
    gen = torch.Generator().manual_seed(seed)
    delta = torch.randn(xt.shape[1:], generator=gen)
    delta *= radius / delta.norm().clamp_min(1e-12) * 0.5
    lo, hi = bounds
    for _ in range(steps):
        d = delta.clone().requires_grad_(True)
        loss = ce_loss(acc.logits((xt + d).clamp(lo, hi)), yt).mean()
        (g,) = torch.autograd.grad(loss, d)
        delta = delta + step_fraction * radius * g / g.norm().clamp_min(1e-12)
        delta = delta * min(1.0, radius / float(delta.norm().clamp_min(1e-12)))
    adv = (xt + delta).clamp(lo, hi)
    correct = acc.labels(xt) == yt  # a clip the model already gets wrong is not "fooled"
    fooled = (correct & (acc.labels(adv) != yt)).numpy()
    noise = (adv - xt).flatten(1).norm(dim=1).clamp_min(1e-30)
    snr = 20 * torch.log10(xt.flatten(1).norm(dim=1) / noise)
    rate = float(fooled.sum()) / max(int(correct.sum()), 1)
    return UniversalResult(delta.numpy(), rate, fooled, float(snr.min()))
