"""Attack strength, schedules, tabular constraints and evaluate()'s own sanity checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from mlwarden.core.models import accuracy
from mlwarden.evasion import APGD, PGD, Budget, Constraints, HopSkipJump, Square, evaluate
from mlwarden.evasion.attacks.apgd import checkpoints
from mlwarden.evasion.attacks.square import p_selection


def test_pgd_drives_accuracy_near_zero_at_large_eps(digits) -> None:
    model, x, y, _ = digits
    adv = PGD(eps=0.4, steps=20, step_size=0.05).generate(model, x, y)
    assert accuracy(model, x, y) == 1.0
    assert accuracy(model, adv, y) <= 0.05


def test_apgd_is_at_least_as_strong_as_fgsm_at_small_eps(digits) -> None:
    from mlwarden.evasion import FGSM

    model, x, y, _ = digits
    acc_fgsm = accuracy(model, FGSM(eps=0.08).generate(model, x, y), y)
    acc_apgd = accuracy(model, APGD(eps=0.08, steps=30).generate(model, x, y), y)
    assert acc_apgd <= acc_fgsm


def test_apgd_checkpoints_follow_the_paper() -> None:
    # p_j = 0, 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99 (Croce & Hein 2020, sec. 3.2)
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]


def test_square_p_schedule_halves_at_published_iterations() -> None:
    n = 10000
    assert p_selection(0.8, 10, n) == 0.8
    assert p_selection(0.8, 11, n) == 0.4
    assert p_selection(0.8, 51, n) == 0.2
    assert p_selection(0.8, 201, n) == 0.1
    assert p_selection(0.8, 9000, n) == pytest.approx(0.8 / 512)
    assert p_selection(0.8, 500, 1000) == pytest.approx(0.8 / 128)  # rescaled to the budget


def test_square_finds_adversarials_with_scores_only(digits) -> None:
    from mlwarden.core.target import TorchTarget

    model, x, y, _ = digits
    target = TorchTarget(model, access="score")
    attack = Square(eps=0.3, n_queries=300)
    adv = attack.generate(target, x[:20], y[:20])
    assert accuracy(model, adv, y[:20]) <= 0.3
    assert torch.equal(
        attack.last.success,
        torch.as_tensor(model(torch.as_tensor(adv)).argmax(1) != torch.as_tensor(y[:20])),
    )


def test_hopskipjump_shrinks_the_perturbation_with_labels_only(digits) -> None:
    from mlwarden.core.target import TorchTarget

    model, x, y, _ = digits
    target = TorchTarget(model, access="label")
    short = HopSkipJump(max_queries=60, max_iter=1, init_evals=20)
    short.generate(target, x[:6], y[:6])
    long = HopSkipJump(max_queries=1500, max_iter=20, init_evals=50)
    adv = long.generate(target, x[:6], y[:6])
    assert bool(long.last.success.all())
    assert accuracy(model, adv, y[:6]) == 0.0
    assert float(long.last.norms.median()) < float(short.last.norms.median())


@given(eps=st.floats(0.1, 2.5), seed=st.integers(0, 1000), norm=st.sampled_from(["linf", "l2"]))
@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_tabular_constraints_always_hold(eps: float, seed: int, norm: str, tabular) -> None:
    model, x, y = tabular
    lower = np.zeros(6, np.float32)
    upper = np.full(6, 4.0, np.float32)
    upper[1] = 0.9
    cons = Constraints(
        immutable=np.array([0, 0, 0, 1, 0, 0], bool),
        integer=np.array([0, 0, 1, 0, 0, 0], bool),
        lower=lower,
        upper=upper,
    )
    xs = x.copy()
    xs[:, 1] = np.minimum(xs[:, 1], 0.9)
    for attack in (
        PGD(
            norm=norm,
            eps=eps,
            steps=10,
            step_size=eps / 4,
            bounds=(0, 4),
            constraints=cons,
            seed=seed,
        ),
        APGD(norm=norm, eps=eps, steps=10, bounds=(0, 4), constraints=cons, seed=seed),
        Square(norm=norm, eps=eps, n_queries=20, bounds=(0, 4), constraints=cons, seed=seed),
    ):
        adv = attack.generate(model, xs, y)
        d = adv - xs
        assert np.array_equal(adv[:, 3], xs[:, 3]), attack.name
        assert np.allclose(adv[:, 2], np.round(adv[:, 2])), attack.name
        assert (adv >= lower - 1e-6).all() and (adv <= upper + 1e-6).all(), attack.name
        size = np.abs(d).max(1) if norm == "linf" else np.linalg.norm(d, axis=1)
        assert (size <= eps * (1 + 1e-5) + 1e-6).all(), attack.name


def test_integer_features_can_still_change_under_a_large_budget(tabular) -> None:
    model, x, y = tabular
    cons = Constraints(integer=np.array([0, 0, 1, 0, 0, 0], bool))
    adv = PGD(eps=2.0, steps=20, step_size=0.2, bounds=(0, 4), constraints=cons).generate(
        model, x, y
    )
    assert np.allclose(adv[:, 2], np.round(adv[:, 2]))
    assert (adv[:, 2] != x[:, 2]).any()


def test_evaluate_reports_consistent_figures(digits) -> None:
    model, x, y, _ = digits
    res = evaluate(model, x[:30], y[:30], norm="linf", eps=0.1, budget=Budget.quick())
    assert 0.0 <= res.robust_accuracy <= res.clean_accuracy <= 1.0
    assert [s.name for s in res.stages] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    broken = res.clean_correct & ~res.robust
    with torch.no_grad():
        pred = model(torch.as_tensor(res.x_adv[broken])).argmax(1).numpy()
    assert (pred != y[:30][broken]).all()
    assert np.abs(res.x_adv - x[:30]).max() <= 0.1 + 1e-6
    assert res.robust_accuracy == pytest.approx(float(res.robust.mean()))
    curve = dict(res.curve)
    assert curve[0.1] == pytest.approx(res.robust_accuracy)
    assert list(curve.values()) == sorted(curve.values(), reverse=True)
    assert not res.flagged()


class Obfuscated(nn.Module):
    """Quantised inputs: zero gradients almost everywhere (a classic masking defence)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.round(x * 4) / 4)


def test_evaluate_flags_gradient_masking(digits) -> None:
    model, x, y, _ = digits
    res = evaluate(Obfuscated(model), x[:24], y[:24], norm="linf", eps=0.2, budget=Budget.quick())
    flagged = {c.name for c in res.flagged()}
    assert "vanishing_gradients" in flagged
    assert flagged & {"black_box_beats_white_box", "large_eps_success"}


def _large_eps(target, x, y):
    from mlwarden.evasion.attacks.base import ModelAccess
    from mlwarden.evasion.suite import large_eps_check

    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    clean = torch.ones(len(xt), dtype=torch.bool)
    return large_eps_check(
        ModelAccess(target), xt, yt, clean, "linf", (0.0, 1.0), None, Budget.quick(), 0
    )


def test_large_eps_check_does_not_flag_a_random_transform_the_attack_defeats(digits) -> None:
    from mlwarden.defenses.defended import DefendedTarget

    model, x, y, _ = digits
    defended = DefendedTarget(model, [{"type": "random_resize_pad", "seed": 0}])
    check = _large_eps(defended, x[:16], y[:16])
    assert not check.flagged, check.detail
    assert check.evidence["predictions"] >= 9 and check.evidence["success_rate"] == 1.0


def test_large_eps_check_still_flags_a_masked_model_behind_a_random_transform(digits) -> None:
    from mlwarden.defenses.defended import DefendedTarget

    model, x, y, _ = digits
    masked = DefendedTarget(Obfuscated(model), [{"type": "random_resize_pad", "seed": 0}])
    check = _large_eps(masked, x[:16], y[:16])
    assert check.flagged and check.evidence["success_rate"] < 1.0
    assert _large_eps(Obfuscated(model), x[:16], y[:16]).flagged


def test_evaluate_on_a_random_transform_flags_randomness_but_not_large_eps(digits) -> None:
    from mlwarden.defenses.defended import DefendedTarget

    model, x, y, _ = digits
    defended = DefendedTarget(model, [{"type": "random_resize_pad", "seed": 0}])
    res = evaluate(defended, x[:16], y[:16], eps=0.1, budget=Budget.quick())
    checks = {c.name: c for c in res.checks}
    assert checks["randomized_outputs"].flagged
    assert not checks["large_eps_success"].flagged
    assert checks["large_eps_success"].evidence["predictions"] >= 9


def test_evaluate_flags_randomised_and_probability_outputs(digits) -> None:
    model, x, y, _ = digits

    class Noisy(nn.Module):
        def forward(self, inp: torch.Tensor) -> torch.Tensor:
            return torch.softmax(model(inp) + 0.5 * torch.randn(len(inp), 10), dim=1)

    res = evaluate(Noisy(), x[:10], y[:10], eps=0.1, budget=Budget.quick())
    flagged = {c.name for c in res.flagged()}
    assert {"randomized_outputs", "probability_outputs"} <= flagged


def test_evaluate_label_only_uses_hopskipjump(digits) -> None:
    from mlwarden.core.target import TorchTarget

    model, x, y, _ = digits
    res = evaluate(
        TorchTarget(model, access="label"), x[:8], y[:8], norm="l2", eps=1.5, budget=Budget.quick()
    )
    assert [s.name for s in res.stages] == ["hopskipjump"]
    assert res.robust_accuracy < res.clean_accuracy
    assert res.min_perturbation["count"] >= 1
