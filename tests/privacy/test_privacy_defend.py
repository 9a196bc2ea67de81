"""``--defend``: every defence is re-attacked, output hardening with the label-only attack too."""

from __future__ import annotations

from sklearn.ensemble import RandomForestClassifier

from mlwarden.core.target import SklearnTarget
from mlwarden.privacy.defend import compare_defences


def test_defences_are_compared_side_by_side_and_hardening_is_re_attacked(noisy_cancer) -> None:  # type: ignore[no-untyped-def]
    train, holdout, _ = noisy_cancer
    model = RandomForestClassifier(n_estimators=30, random_state=0).fit(train.x, train.y)
    rows, findings = compare_defences(
        SklearnTarget(model), train, holdout, recipe=None, attack="loss", budget=100
    )
    names = [r["defence"] for r in rows]
    assert names[:4] == ["none", "output top-1", "output round-2", "output label-only"]
    assert any(n.startswith("DP-SGD") for n in names)
    for row in rows:
        assert {"accuracy", "tpr_at_fpr", "extraction_fidelity", "mitigated"} <= set(row)
        assert "label-only" in row["attacks"]  # every defence faces the label-only attack
    dp = next(r for r in rows if r["defence"].startswith("DP-SGD"))
    assert 0 < dp["epsilon"] <= 8.0 + 1e-6 and dp["delta"] < 1 / len(train)
    assert set(rows[3]["attacks"]) == {"label-only"}  # no scores left to attack
    assert any(f.rule == "MLW-PRV-005" for f in findings)


def test_the_adaptive_attacker_hardens_its_shadows_like_the_target() -> None:
    import numpy as np

    from mlwarden.privacy.defend import harden_shadows
    from mlwarden.privacy.shadows import ShadowSet

    probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]])
    shadows = ShadowSet(logp=np.log(probs)[None, None], keep=np.ones((1, 2), bool), recipe="r")
    top1 = harden_shadows(shadows, "top-k", k=1)
    assert top1 is not None
    np.testing.assert_allclose(np.exp(top1.logp[0, 0]), [[1, 0, 0], [0, 1, 0]], atol=1e-12)
    assert harden_shadows(shadows, "label-only") is None
