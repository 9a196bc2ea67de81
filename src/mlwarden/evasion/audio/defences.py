"""How much does each restoration step buy? Measured twice, rated on the adaptive figure.

For one restoration chain in front of a model, :func:`compare_defence` measures

* the **non-adaptive** robust accuracy: adversarial clips crafted on the bare model
  (APGD-CE inside the budget), then replayed through the defence — the figure a
  defence paper without adaptive attacks would print;
* the **adaptive** robust accuracy: the same attack run against the defended model
  itself, through BPDA for non-differentiable steps and EOT over random ones (Athalye,
  Carlini & Wagner 2018, arXiv:1802.00420; Athalye et al. 2018, arXiv:1707.07397),
  and, where a step is not differentiable, again with EOT through each step's
  differentiable stand-in (a codec as its own fitted time-frequency gains plus its own
  quantisation noise), over one or more rounds of restarts; a clip counts as fooled
  when any of these (or the non-adaptive clip) fools the real defence.

On a randomised defence every verdict is the plurality vote of ``max(eot, 9)``
predictions. The defence is rated on the adaptive figure only: ``holds`` when it keeps
at least 80% of its clean accuracy, ``partial`` from 50%, else ``broken``; a rating
other than ``broken`` reached through a non-differentiable step carries a ``caveat``:
it is an upper bound for the attacks named, not a certificate.

Example::

    row = compare_defence(model, [{"type": "mp3", "kbps": 32}], x, y, snr_db=30,
                          sample_rate=16000)
    row.non_adaptive_robust_accuracy, row.adaptive_robust_accuracy, row.rating
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
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
    #: the adaptive attacks whose union gives the adaptive figure
    attacks: list[str] = field(default_factory=list)
    #: clips newly fooled by each round of restarts (after the non-adaptive clips)
    fooled_per_round: list[int] = field(default_factory=list)
    #: True when the last of two or more rounds fooled no new clip; None with one round
    converged: bool | None = None

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
    restarts: int = 1,
    surrogate: bool = True,
    bounds: tuple[float, float] = (-1.0, 1.0),
    seed: int = 0,
) -> DefenceRow:
    """Non-adaptive vs adaptive robust accuracy of ``model`` behind ``chain`` at ``snr_db``
    dB (APGD-CE, ``steps`` iterations, EOT over ``eot_samples`` draws when random).

    The adaptive figure is the union over ``restarts`` rounds (seeds ``seed``,
    ``seed + 1``, ...) of APGD through straight-through BPDA and, for a chain with a
    non-differentiable step and ``surrogate``, APGD with EOT through each step's
    differentiable stand-in (:meth:`~mlwarden.defenses.transforms.Transform.surrogate`);
    each round attacks only the clips still standing. Every success is judged by the
    real chain. ``fooled_per_round`` lists the clips each round newly fooled; with two
    or more rounds the attack counts as converged when its last round fooled none.
    """
    t0 = time.perf_counter()
    bare = as_target(model)
    spec = with_sample_rate(chain, sample_rate)
    defended = DefendedTarget(bare, spec, bounds=bounds, eot_samples=eot_samples)
    acc = ModelAccess(defended)
    draws = verify_draws(acc)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y).long()
    clean = vote_labels(acc, xt, draws) == yt
    idx = clean.nonzero()[:, 0]
    bpda = not defended.transform.differentiable
    use_surrogate = surrogate and bpda
    row = _Row(
        defence=",".join(_spec_text(e) for e in chain), n=len(xt), bpda=bpda, t0=t0,
        clean_accuracy=float(clean.float().mean()), eot=defended.eot_samples, draws=draws,
        attacks=["APGD-CE through BPDA" + (" + EOT" if defended.randomized else "")]
        + (["APGD-CE with EOT through the fitted stand-in"] if use_surrogate else []),
    )  # fmt: skip
    if len(idx) == 0:
        return row.build(0, 0, [])
    xs, ys = xt[idx], yt[idx]
    attack = dict(norm="l2", snr_db=snr_db, steps=steps, bounds=bounds)
    transfer = torch.as_tensor(APGD(**attack, seed=seed).generate(bare, xs, ys))  # type: ignore[arg-type]
    fooled_na = _fooled(acc, xs, transfer, ys, snr_db, draws)
    targets = [defended]
    if use_surrogate:
        targets.append(
            DefendedTarget(bare, spec, bounds=bounds, eot_samples=eot_samples, surrogate=True)
        )
    fooled, per_round = fooled_na.clone(), []
    for r in range(max(1, restarts)):
        before = int(fooled.sum())
        for target in targets:
            left = (~fooled).nonzero()[:, 0]
            if len(left) == 0:
                break
            early = not ModelAccess(target).randomized
            adv = APGD(**attack, seed=seed + r, early_stop=early).generate(  # type: ignore[arg-type]
                target, xs[left], ys[left]
            )
            fooled[left] |= _fooled(acc, xs[left], torch.as_tensor(adv), ys[left], snr_db, draws)
        per_round.append(int(fooled.sum()) - before)
    return row.build(len(idx) - int(fooled_na.sum()), len(idx) - int(fooled.sum()), per_round)


@dataclass
class _Row:
    """What :func:`compare_defence` knows before attacking; ``build`` adds the counts."""

    defence: str
    n: int
    bpda: bool
    t0: float
    clean_accuracy: float
    eot: int
    draws: int
    attacks: list[str]

    def build(self, robust_na: int, robust_a: int, per_round: list[int]) -> DefenceRow:
        adaptive = robust_a / self.n
        kept = adaptive / self.clean_accuracy if self.clean_accuracy > 0 else 0.0
        rating = "holds" if kept >= 0.8 else "partial" if kept >= 0.5 else "broken"
        converged = per_round[-1] == 0 if len(per_round) >= 2 else None
        caveat = ""
        if self.bpda and rating != "broken":
            caveat = (
                f"upper bound: measured with {' and '.join(self.attacks)}"
                f" over {len(per_round)} round(s); a stronger attack may break it"
            )
            if converged is False:
                caveat += "; the last round still fooled new clips (not converged)"
        return DefenceRow(
            self.defence, self.clean_accuracy, robust_na / self.n, adaptive, self.bpda,
            self.eot, self.draws, rating, round(time.perf_counter() - self.t0, 3), caveat,
            self.attacks, per_round, converged,
        )  # fmt: skip


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
