"""Robustness metrics beyond one accuracy figure: perturbation sizes, queries, CLEVER.

* :func:`distribution` — summary (quantiles) of per-input minimal perturbation sizes
  or query counts.
* :func:`clever` — CLEVER, Weng et al. 2018, "Evaluating the Robustness of Neural
  Networks: An Extreme Value Theory Approach", arXiv:1801.10578: a local Lipschitz
  estimate from the maxima of gradient norms sampled in a ball, fitted with a reverse
  Weibull distribution; the score ``min_j (z_y - z_j) / L_j`` is an estimated lower
  bound on the minimal perturbation (in the attack norm) — an estimate, not a
  certificate.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from mlwarden.evasion.attacks.base import ModelAccess


def distribution(values: Any) -> dict[str, float | int | None]:
    """Count, median, 10th/90th percentiles, mean of finite values (``None`` when empty)."""
    arr = np.asarray(values, dtype=np.float64).ravel()
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return {"count": 0, "median": None, "p10": None, "p90": None, "mean": None}
    return {
        "count": int(arr.size),
        "median": float(np.median(arr)),
        "p10": float(np.percentile(arr, 10)),
        "p90": float(np.percentile(arr, 90)),
        "mean": float(arr.mean()),
    }


def clever(
    access: ModelAccess,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    norm: str = "linf",
    radius: float = 0.3,
    n_batches: int = 50,
    batch_size: int = 64,
    classes: int = 3,
    bounds: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
) -> np.ndarray:
    """Untargeted CLEVER score per input (Weng et al. 2018, arXiv:1801.10578).

    For the ``classes`` runner-up classes ``j`` of each input, ``n_batches`` batches of
    ``batch_size`` points are drawn uniformly in the ``norm`` ball of ``radius`` around
    ``x``; the largest dual-norm gradient of ``z_y - z_j`` per batch feeds a reverse
    Weibull fit whose location estimates the local Lipschitz constant ``L_j``. The score
    is ``min_j min((z_y - z_j) / L_j, radius)``, in input units of ``norm``. The paper's
    settings are 500 batches of 1024; the defaults here are smaller for speed.
    """
    from scipy.stats import weibull_max

    gen = torch.Generator().manual_seed(seed)
    lo, hi = bounds
    scores = []
    for i in range(len(x)):
        xi = x[i : i + 1]
        with torch.no_grad():
            z = access.logits(xi)[0]
        order = z.argsort(descending=True).tolist()
        others = [c for c in order if c != int(y[i])][:classes]
        best = math.inf
        for j in others:
            gap = float(z[int(y[i])] - z[j])
            maxima = []
            for _ in range(n_batches):
                pts = _sample_ball(xi, radius, norm, batch_size, gen).clamp(lo, hi)
                pts.requires_grad_(True)
                out = access.logits(pts)
                g = access.input_grad(out[:, int(y[i])] - out[:, j], pts)
                flat = g.reshape(len(g), -1)
                dual = flat.abs().sum(1) if norm == "linf" else flat.norm(dim=1)
                maxima.append(float(dual.max()))
            arr = np.asarray(maxima)
            if np.ptp(arr) < 1e-12:
                lipschitz = float(arr.max())
            else:
                try:
                    _, loc, _ = weibull_max.fit(
                        arr, 1.0, loc=float(arr.max()), scale=float(np.ptp(arr)), optimizer=_fmin
                    )
                    lipschitz = float(loc) if np.isfinite(loc) and loc > 0 else float(arr.max())
                except (ValueError, RuntimeError):
                    lipschitz = float(arr.max())
            lipschitz = max(lipschitz, float(arr.max()))
            best = min(best, gap / max(lipschitz, 1e-12), radius)
        scores.append(max(best, 0.0))
    return np.asarray(scores)


def _fmin(func: Any, x0: Any, args: tuple[Any, ...] = (), disp: int = 0) -> Any:
    from scipy.optimize import fmin

    return fmin(func, x0, args=args, disp=disp, maxiter=300)


def _sample_ball(
    x: torch.Tensor, radius: float, norm: str, n: int, gen: torch.Generator
) -> torch.Tensor:
    shape = (n, *x.shape[1:])
    if norm == "linf":
        return x + (torch.rand(shape, generator=gen) * 2 - 1) * radius
    d = torch.randn(shape, generator=gen)
    d = d / d.reshape(n, -1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (len(shape) - 1))
    dim = d[0].numel()
    r = torch.rand(n, generator=gen) ** (1.0 / dim) * radius
    return x + d * r.view(-1, *[1] * (len(shape) - 1))
