"""How much does each restoration step buy? Measured twice, rated on the adaptive figure.

For one restoration chain in front of a model, :func:`compare_defence` measures

* the **non-adaptive** robust accuracy: adversarial clips crafted on the bare model
  (APGD-CE inside the budget), then replayed through the defence — the figure a
  defence paper without adaptive attacks would print;
* the **adaptive** robust accuracy: the same attack run against the defended model
  itself, through BPDA for non-differentiable steps and EOT over random ones (Athalye,
  Carlini & Wagner 2018, arXiv:1802.00420; Athalye et al. 2018, arXiv:1707.07397),
  with the non-adaptive clips kept as a starting point that already worked.

On a randomised defence every verdict is the plurality vote of ``max(eot, 9)``
predictions. The defence is rated on the adaptive figure only: ``holds`` when it keeps
at least 80% of its clean accuracy, ``partial`` from 50%, else ``broken``; a rating
other than ``broken`` reached through straight-through BPDA carries a ``caveat``: it
is an upper bound, not a certificate.

Example::

    row = compare_defence(model, [{"type": "mp3", "kbps": 32}], x, y, snr_db=30,
                          sample_rate=16000)
    row.non_adaptive_robust_accuracy, row.adaptive_robust_accuracy, row.rating
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from mlwarden.core.target import as_target
from mlwarden.defenses.audio import with_sample_rate
from mlwarden.defenses.defended import DefendedTarget
from mlwarden.evasion.attacks.apgd import APGD
from mlwarden.evasion.attacks.base import ModelAccess, snr_radius, verify_draws, vote_labels


@dataclass
class DefenceRow:
    """One restoration chain, attacked both ways. Accuracies are fractions of all inputs."""

    defence: str
    clean_accuracy: float
    non_adaptive_robust_accuracy: float
    adaptive_robust_accuracy: float
    bpda: bool
    eot_samples: int
    verification_draws: int
    rating: str
    seconds: float
    #: why a rating that is not "broken" may still be too kind (empty when none)
    caveat: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare_defence(
    model: Any,
    chain: list[dict[str, Any]],
    x: np.ndarray,
    y: np.ndarray,
    *,
    snr_db: float,
    sample_rate: int,
    steps: int = 50,
    eot_samples: int = 10,
    bounds: tuple[float, float] = (-1.0, 1.0),
    seed: int = 0,
) -> DefenceRow:
    """Non-adaptive vs adaptive robust accuracy of ``model`` behind ``chain`` at ``snr_db``
    dB (APGD-CE, ``steps`` iterations, EOT over ``eot_samples`` draws when random)."""
    t0 = time.perf_counter()
    bare = as_target(model)
    defended = DefendedTarget(
        bare, with_sample_rate(chain, sample_rate), bounds=bounds, eot_samples=eot_samples
    )
    acc = ModelAccess(defended)
    draws = verify_draws(acc)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y).long()
    clean = vote_labels(acc, xt, draws) == yt
    idx = clean.nonzero()[:, 0]
    n = len(xt)
    name = ",".join(_spec_text(e) for e in chain)
    bpda, clean_acc = not defended.transform.differentiable, float(clean.float().mean())

    def row(robust_na: float, robust_a: float) -> DefenceRow:
        kept = robust_a / clean_acc if clean_acc > 0 else 0.0
        rating = "holds" if kept >= 0.8 else "partial" if kept >= 0.5 else "broken"
        caveat = (
            "upper bound: the adaptive attack went through a non-differentiable step with "
            "the straight-through (identity) BPDA estimate, the weakest adaptive attack; a "
            "differentiable approximation of the step may break it"
            if bpda and rating != "broken"
            else ""
        )
        return DefenceRow(name, clean_acc, robust_na, robust_a, bpda, defended.eot_samples,
                          draws, rating, round(time.perf_counter() - t0, 3), caveat)  # fmt: skip

    if len(idx) == 0:
        return row(0.0, 0.0)
    xs, ys = xt[idx], yt[idx]
    attack = dict(norm="l2", snr_db=snr_db, steps=steps, bounds=bounds, seed=seed)
    transfer = torch.as_tensor(APGD(**attack).generate(bare, xs, ys))  # type: ignore[arg-type]
    fooled_na = _fooled(acc, xs, transfer, ys, snr_db, draws)
    adaptive = torch.as_tensor(
        APGD(**attack, early_stop=draws == 1).generate(defended, xs, ys)  # type: ignore[arg-type]
    )
    fooled_a = _fooled(acc, xs, adaptive, ys, snr_db, draws) | fooled_na
    return row(float(len(idx) - fooled_na.sum()) / n, float(len(idx) - fooled_a.sum()) / n)


def _fooled(
    acc: ModelAccess, x: torch.Tensor, adv: torch.Tensor, y: torch.Tensor, snr: float, draws: int
) -> torch.Tensor:
    """Inside each clip's SNR ball (re-checked) and misclassified by the plurality vote."""
    inside = (adv - x).flatten(1).norm(dim=1) <= snr_radius(x, snr) * (1 + 1e-5) + 1e-7
    return inside & (vote_labels(acc, adv, draws) != y)


def _spec_text(entry: dict[str, Any]) -> str:
    params = ";".join(f"{k}={v}" for k, v in entry.items() if k not in ("type", "sample_rate"))
    return f"{entry['type']}:{params}" if params else str(entry["type"])


def defence_table(
    model: Any,
    chains: list[list[dict[str, Any]]],
    x: np.ndarray,
    y: np.ndarray,
    **kw: Any,
) -> list[DefenceRow]:
    """:func:`compare_defence` for each chain (same model, clips and attack settings)."""
    return [compare_defence(model, chain, x, y, **kw) for chain in chains]
