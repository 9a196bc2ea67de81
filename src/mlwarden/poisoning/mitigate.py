"""Remove flagged samples, retrain with the user's recipe, and measure what it bought.

The defence effectiveness rate (DER) is BackdoorBench's (Wu et al. 2022, "BackdoorBench:
A Comprehensive Benchmark of Backdoor Learning", arXiv:2206.12654)::

    DER = (max(0, ASR_before - ASR_after) - max(0, ACC_before - ACC_after) + 1) / 2

in [0, 1]; 0.5 means no change, 1 means the attack was fully removed at no accuracy cost.

A recipe is a scikit-learn estimator (cloned and refitted), a callable
``train(x, y) -> model`` or the string ``"package.module:function"`` naming one.

Example::

    result = retrain_without("mytrain:train", poisoned.dataset, flagged, test,
                             asr=lambda m: attack_success_rate(m, poisoned, test))
    result.der
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlwarden.core.data import Dataset
from mlwarden.core.errors import UserError
from mlwarden.core.trainer import resolve_trainer


def defence_effectiveness_rate(
    acc_before: float, acc_after: float, asr_before: float, asr_after: float
) -> float:
    """BackdoorBench's DER, in [0, 1] (all four arguments are fractions)."""
    return (max(0.0, asr_before - asr_after) - max(0.0, acc_before - acc_after) + 1.0) / 2.0


@dataclass
class MitigationResult:
    """Clean accuracy and ASR before and after dropping the flagged samples."""

    removed: int
    acc_before: float
    acc_after: float
    asr_before: float | None
    asr_after: float | None
    model: Any

    @property
    def der(self) -> float | None:
        if self.asr_before is None or self.asr_after is None:
            return None
        return defence_effectiveness_rate(
            self.acc_before, self.acc_after, self.asr_before, self.asr_after
        )

    def metrics(self) -> dict[str, float | int | None]:
        der = self.der
        return {
            "removed": self.removed,
            "clean_accuracy_before": round(self.acc_before, 4),
            "clean_accuracy_after": round(self.acc_after, 4),
            "asr_before": None if self.asr_before is None else round(self.asr_before, 4),
            "asr_after": None if self.asr_after is None else round(self.asr_after, 4),
            "der": None if der is None else round(der, 4),
        }


def retrain_without(
    recipe: Any,
    train: Dataset,
    flagged: np.ndarray,
    test: Dataset,
    *,
    model_before: Any = None,
    asr: Callable[[Any], float] | None = None,
) -> MitigationResult:
    """Train on ``train`` minus ``flagged`` (bool mask or indices) and compare on ``test``.

    ``model_before`` is the model trained on all of ``train`` (trained here when
    omitted); ``asr(model)`` measures the attack success rate when the trigger is known.
    """
    from mlwarden.poisoning.simulate import clean_accuracy

    fit = resolve_trainer(recipe)
    keep = np.ones(len(train), dtype=bool)
    flagged = np.asarray(flagged)
    if flagged.dtype == bool:
        keep &= ~flagged
    else:
        keep[flagged.astype(int)] = False
    if keep.sum() < 2 or len(np.unique(train.y[keep])) < 2:
        raise UserError("removing the flagged samples leaves too little data to retrain on")
    before = model_before if model_before is not None else fit(train.x, train.y)
    after = fit(train.x[keep], train.y[keep])
    return MitigationResult(
        removed=int((~keep).sum()),
        acc_before=clean_accuracy(before, test),
        acc_after=clean_accuracy(after, test),
        asr_before=asr(before) if asr is not None else None,
        asr_after=asr(after) if asr is not None else None,
        model=after,
    )
