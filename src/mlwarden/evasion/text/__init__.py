"""Text evasion: the threat model, candidate words, the batched search and its report.

Modules: ``threat`` (what counts), ``wordnet`` (offline WordNet 3.0), ``transforms``
(synonym and character candidates), ``attack`` (recipes: combined, pwws, deepwordbug,
hotflip), ``report`` (``text_evasion_report``: MLW-EVA-020/021).
"""

from mlwarden.evasion.text.attack import RECIPES, TextAttackResult, attack_texts
from mlwarden.evasion.text.threat import ThreatModel

__all__ = ["RECIPES", "TextAttackResult", "ThreatModel", "attack_texts"]
