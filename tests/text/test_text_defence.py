"""Input normalisation for text, and its adaptive re-measurement."""

from __future__ import annotations

from typing import Any

import numpy as np

from mlwarden.core.data import Dataset
from mlwarden.core.text_target import SklearnTextTarget
from mlwarden.defenses.text import NormalisedTextTarget, SpellingCorrector, normaliser
from mlwarden.evasion.text.attack import attack_texts
from mlwarden.evasion.text.threat import ThreatModel
from mlwarden.evasion.text.transforms import INVISIBLE


def test_normaliser_undoes_character_tricks() -> None:
    norm = normaliser()

    assert norm("gr\u200beat f\u0456lm") == "great film"
    assert norm("\uff27\uff4f\uff4f\uff44 d\u00adeal") == "Good deal"  # full-width, soft hyphen
    assert norm("\u0421\u0410\u0422 \u043ew\u043er") == "CAT owor"
    assert norm("plain text, kept.") == "plain text, kept."


def test_spelling_correction_uses_the_model_vocabulary() -> None:
    fix = SpellingCorrector(["great", "film", "grate"])

    assert fix("a graet flim") == "a graet film"  # two words one edit away: left alone
    assert SpellingCorrector(["great", "film"])("a graet flim!") == "a great film!"
    assert fix("zzz") == "zzz"


def test_defence_restores_character_attacks_made_on_the_bare_model(
    pipeline: Any, tweets: tuple[Dataset, Dataset]
) -> None:
    texts, y = list(tweets[1].x[:40]), tweets[1].y[:40]
    bare = SklearnTextTarget(pipeline)
    res = attack_texts(bare, texts, y, recipe="deepwordbug")
    tricks = [
        k for k in np.nonzero(res.success)[0]
        if any(ch in res.adversarial[k] for ch in INVISIBLE) or not res.adversarial[k].isascii()
        and texts[k].isascii()
    ]  # fmt: skip
    defended = NormalisedTextTarget(SklearnTextTarget(pipeline))

    restored = defended.predict_labels([res.adversarial[k] for k in tricks])
    assert len(tricks) > 0
    np.testing.assert_array_equal(restored, pipeline.predict([texts[k] for k in tricks]))


def test_adaptive_attack_on_the_defence_never_relies_on_what_it_undoes(
    pipeline: Any, tweets: tuple[Dataset, Dataset]
) -> None:
    texts, y = list(tweets[1].x[:30]), tweets[1].y[:30]
    defended = NormalisedTextTarget(SklearnTextTarget(pipeline))

    res = attack_texts(defended, texts, y, knows=defended.normalise)

    assert res.success.any()
    for k in np.nonzero(res.success)[0]:
        assert ThreatModel().check(texts[k], res.adversarial[k]).ok
        assert pipeline.predict([defended.normalise(res.adversarial[k])])[0] != y[k]
