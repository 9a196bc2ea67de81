"""Evasion: how easily an attacker flips a model's decisions, and how sure that answer is.

Attacks (one module each under :mod:`mlwarden.evasion.attacks`): :class:`FGSM`,
:class:`PGD`, :class:`APGD`, :class:`CarliniWagnerL2`, :class:`DeepFool`, :class:`FAB`
(white-box), :class:`Square` (scores only), :class:`HopSkipJump` (labels only),
:class:`Transfer` (from a surrogate). :func:`evaluate` runs the AutoAttack-style ensemble with sanity
checks; :func:`evasion_report` turns it into a :class:`~mlwarden.core.findings.Report`.

Example::

    from mlwarden.evasion import PGD, evaluate
    x_adv = PGD(norm="linf", eps=0.3, steps=40, step_size=0.03).generate(model, x, y)
    result = evaluate(model, x, y, norm="linf", eps=0.3)
    result.clean_accuracy, result.robust_accuracy
"""

from mlwarden.evasion.attacks import (
    APGD,
    FAB,
    FGSM,
    PGD,
    Attack,
    CarliniWagnerL2,
    Constraints,
    DeepFool,
    HopSkipJump,
    Square,
    Transfer,
    fit_surrogate,
)
from mlwarden.evasion.report import evasion_report
from mlwarden.evasion.suite import Budget, EvaluationResult, evaluate

__all__ = [
    "Budget",
    "EvaluationResult",
    "evaluate",
    "evasion_report",
    "APGD",
    "FGSM",
    "PGD",
    "Attack",
    "CarliniWagnerL2",
    "Constraints",
    "DeepFool",
    "FAB",
    "HopSkipJump",
    "Square",
    "Transfer",
    "fit_surrogate",
]
