"""Evasion attacks, one per module; all share :class:`~mlwarden.evasion.attacks.base.Attack`."""

from mlwarden.evasion.attacks.apgd import APGD
from mlwarden.evasion.attacks.base import Attack, AttackStats, Constraints, ModelAccess
from mlwarden.evasion.attacks.cw import CarliniWagnerL2
from mlwarden.evasion.attacks.deepfool import DeepFool
from mlwarden.evasion.attacks.fab import FAB
from mlwarden.evasion.attacks.fgsm import FGSM
from mlwarden.evasion.attacks.hopskipjump import HopSkipJump
from mlwarden.evasion.attacks.pgd import PGD
from mlwarden.evasion.attacks.square import Square
from mlwarden.evasion.attacks.transfer import Transfer, fit_surrogate

__all__ = [
    "APGD",
    "FGSM",
    "PGD",
    "Attack",
    "AttackStats",
    "CarliniWagnerL2",
    "Constraints",
    "DeepFool",
    "FAB",
    "HopSkipJump",
    "ModelAccess",
    "Square",
    "Transfer",
    "fit_surrogate",
]
