"""One conformance suite every attack passes: types, eps-ball, bounds, targets, budgets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlwarden.core.errors import UserError
from mlwarden.core.target import TorchTarget
from mlwarden.evasion import (
    APGD,
    FAB,
    FGSM,
    PGD,
    CarliniWagnerL2,
    DeepFool,
    HopSkipJump,
    Square,
    Transfer,
)
from mlwarden.evasion.attacks.base import flat_norm


def _surrogate():
    from mlwarden.core.models import SmallCNN

    torch.manual_seed(3)
    return SmallCNN(1, 10, 8, width=4)


FACTORIES = {
    "fgsm-linf": lambda eps, **kw: FGSM(norm="linf", eps=eps, **kw),
    "fgsm-l2": lambda eps, **kw: FGSM(norm="l2", eps=eps * 4, **kw),
    "pgd-linf": lambda eps, **kw: PGD(
        norm="linf", eps=eps, steps=5, step_size=max(eps / 3, 1e-3), **kw
    ),
    "pgd-l2": lambda eps, **kw: PGD(
        norm="l2", eps=eps * 4, steps=5, step_size=max(eps, 1e-3), **kw
    ),
    "apgd-ce": lambda eps, **kw: APGD(eps=eps, steps=8, **kw),
    "apgd-dlr-l2": lambda eps, **kw: APGD(norm="l2", eps=eps * 4, steps=8, loss="dlr", **kw),
    "cw-l2": lambda eps, **kw: CarliniWagnerL2(
        eps=eps * 4, steps=40, binary_search_steps=2, initial_const=1.0, learning_rate=0.2, **kw
    ),
    "deepfool-linf": lambda eps, **kw: DeepFool(norm="linf", eps=eps, steps=10, **kw),
    "fab-linf": lambda eps, **kw: FAB(norm="linf", eps=eps, steps=10, **kw),
    "fab-l2": lambda eps, **kw: FAB(norm="l2", eps=eps * 4, steps=10, **kw),
    "fab-t-linf": lambda eps, **kw: FAB(
        norm="linf", eps=eps, steps=10, targeted=True, n_target_classes=3, **kw
    ),
    "square-linf": lambda eps, **kw: Square(norm="linf", eps=eps, n_queries=25, **kw),
    "square-l2": lambda eps, **kw: Square(norm="l2", eps=eps * 4, n_queries=25, **kw),
    "hsj-l2": lambda eps, **kw: HopSkipJump(
        norm="l2", eps=eps * 4, max_queries=150, max_iter=3, init_evals=20, **kw
    ),
    "hsj-linf": lambda eps, **kw: HopSkipJump(
        norm="linf", eps=eps, max_queries=150, max_iter=3, init_evals=20, **kw
    ),
    "transfer": lambda eps, **kw: Transfer(_surrogate(), eps=eps, **kw),
}
NAMES = sorted(FACTORIES)


@pytest.mark.parametrize("name", NAMES)
def test_attack_returns_numpy_for_numpy_and_torch_for_torch(name: str, digits) -> None:
    model, x, y, _ = digits
    attack = FACTORIES[name](0.1)
    out_np = attack.generate(model, x[:3], y[:3])
    assert (
        isinstance(out_np, np.ndarray)
        and out_np.shape == x[:3].shape
        and out_np.dtype == np.float32
    )
    out_t = attack.generate(model, torch.as_tensor(x[:3]), torch.as_tensor(y[:3]))
    assert isinstance(out_t, torch.Tensor) and tuple(out_t.shape) == x[:3].shape


@pytest.mark.parametrize("name", NAMES)
@given(eps=st.floats(0.0, 0.4), seed=st.integers(0, 2**16), lo=st.sampled_from([0.0, -1.0]))
@settings(
    max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_attack_stays_in_eps_ball_and_bounds(
    name: str, eps: float, seed: int, lo: float, digits
) -> None:
    model, x, y, _ = digits
    xs = torch.as_tensor(x[:4]) * (1.0 - lo) + lo  # data in [lo, 1]
    attack = FACTORIES[name](eps, seed=seed, bounds=(lo, 1.0))
    out = torch.as_tensor(attack.generate(model, xs, torch.as_tensor(y[:4])))
    radius = attack.eps
    assert radius is not None
    assert bool((flat_norm(out - xs, attack.norm) <= radius * (1 + 1e-5) + 1e-6).all())
    assert float(out.min()) >= lo - 1e-6 and float(out.max()) <= 1.0 + 1e-6


@pytest.mark.parametrize(
    "name",
    ["pgd-linf", "apgd-ce", "fgsm-linf", "square-linf", "deepfool-linf", "cw-l2", "fab-linf"],
)
def test_targeted_successes_reach_their_target(name: str, digits) -> None:
    model, x, y, _ = digits
    target = (torch.as_tensor(y[:12]) + 1) % 10
    attack = FACTORIES[name](0.4, targeted=True)
    if isinstance(attack, CarliniWagnerL2):
        attack.steps = 100  # tanh-space CW needs more steps to move saturated pixels
    out = torch.as_tensor(attack.generate(model, x[:12], y[:12], target=target))
    with torch.no_grad():
        pred = model(out).argmax(1)
    ok = attack.last.success
    assert torch.equal(ok, pred == target)
    if name in ("pgd-linf", "apgd-ce", "cw-l2", "deepfool-linf", "fab-linf"):
        assert float(ok.float().mean()) >= 0.5


def test_targeted_without_target_draws_a_different_class(digits) -> None:
    model, x, y, _ = digits
    attack = PGD(eps=0.5, steps=20, step_size=0.05, targeted=True)
    attack.generate(model, x[:10], y[:10])
    assert float(attack.last.success.float().mean()) >= 0.8


@pytest.mark.parametrize("name", ["square-linf", "square-l2", "hsj-l2", "hsj-linf"])
def test_black_box_attacks_respect_their_query_budget(name: str, digits) -> None:
    model, x, y, _ = digits
    target = TorchTarget(model, access="score" if name.startswith("square") else "label")
    attack = FACTORIES[name](0.05)
    attack.generate(target, x[:6], y[:6])
    limit = attack.n_queries if isinstance(attack, Square) else attack.max_queries
    assert int(attack.last.queries.max()) <= limit
    # the labels of y were given, so every query went to the search
    assert target.queries <= 6 * limit + 2 * 6


def test_attack_stops_cleanly_at_the_target_budget(digits) -> None:
    model, x, y, _ = digits
    target = TorchTarget(model, access="score", max_queries=100)
    attack = Square(eps=0.02, n_queries=1000)
    out = attack.generate(target, x[:8], y[:8])
    assert attack.last.budget_exhausted
    assert target.queries <= 100
    assert float(np.abs(out - x[:8]).max()) <= 0.02 + 1e-6


def test_white_box_attack_refuses_a_score_only_target(digits) -> None:
    model, x, y, _ = digits
    with pytest.raises(UserError, match="white access"):
        PGD(eps=0.1).generate(TorchTarget(model, access="score"), x[:2], y[:2])


@pytest.mark.parametrize("name", ["pgd-linf", "square-linf"])
def test_early_stop_spends_fewer_queries(name: str, digits) -> None:
    model, x, y, _ = digits
    queries = {}
    for stop in (True, False):
        target = TorchTarget(model)
        attack = FACTORIES[name](0.3, early_stop=stop)
        if isinstance(attack, Square):
            attack.n_queries = 60
            attack.generate(target, x[:10], y[:10])
            queries[stop] = int(attack.last.queries.sum())
            if not stop:  # Square always stops per input: compare with the full budget
                queries[stop] = 60 * 10
        else:
            attack.generate(target, x[:10], y[:10])
            queries[stop] = target.queries
    assert queries[True] < queries[False]


def test_rejects_inputs_outside_the_bounds(digits) -> None:
    model, x, y, _ = digits
    with pytest.raises(UserError, match="outside bounds"):
        PGD(eps=0.1).generate(model, x[:2] + 2.0, y[:2])


@pytest.mark.parametrize("bad", [{"norm": "l3"}, {"eps": -1.0}, {"eps": float("nan")}])
def test_rejects_bad_parameters_with_a_message(bad: dict, digits) -> None:
    model, x, y, _ = digits
    kwargs = {"eps": 0.1, "steps": 2, "step_size": 0.01} | bad
    with pytest.raises(UserError):
        PGD(**kwargs).generate(model, x[:2], y[:2])
