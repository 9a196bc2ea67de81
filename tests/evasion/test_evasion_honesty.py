"""Evaluation honesty: a spent query budget, a lucky draw or a missing gradient never
turns into robustness (issue 22); every accuracy carries its interval."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from mlwarden.core.intervals import proportion_ci
from mlwarden.core.target import TorchTarget
from mlwarden.evasion import Budget, Square, evaluate
from mlwarden.evasion.report import findings_for


class NoisyCalls(nn.Module):
    """Right on most calls; on a fifth of calls (seeded) it answers pure noise.

    ``detach``: the noisy answers have no autograd path to the input at all.
    Its majority vote over a few calls is the wrapped model's answer.
    """

    def __init__(self, model: nn.Module, detach: bool, seed: int = 1) -> None:
        super().__init__()
        self.model, self.detach = model, detach
        self.gen = torch.Generator().manual_seed(seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        noise = 10 * torch.randn(out.shape, generator=self.gen)
        if self.detach:
            return noise if float(torch.rand(1, generator=self.gen)) < 0.2 else out
        rows = torch.rand(len(x), generator=self.gen) < 0.2
        return torch.where(rows[:, None], noise, out)


def test_a_spent_query_budget_is_an_upper_bound_never_a_silent_robust_figure(digits) -> None:
    model, x, y, _ = digits
    target = TorchTarget(model, access="score", max_queries=150)
    res = evaluate(target, x[:24], y[:24], eps=0.3, budget=Budget.quick())
    assert res.budget_exhausted > 0 and res.robust_accuracy_is_upper_bound
    assert res.verified_robust_lower_bound < res.robust_accuracy
    assert {c.name for c in res.flagged()} >= {"budget_exhausted"}
    found = {f.rule: f for f in findings_for(res, "m")}
    assert "MLW-EVA-009" in found
    assert "at most" in found["MLW-EVA-001"].title
    # with enough queries the same attack breaks most inputs and nothing is left unresolved
    full = evaluate(TorchTarget(model, access="score", max_queries=3000), x[:24], y[:24], eps=0.3,
                    budget=Budget.quick())  # fmt: skip
    assert full.budget_exhausted == 0 and full.robust_accuracy < 0.5


def test_square_keeps_the_successes_it_finds_before_the_budget_stops_it(digits) -> None:
    model, x, y, _ = digits
    target = TorchTarget(model, access="score", max_queries=15 * 16)
    attack = Square(eps=0.15, n_queries=1000)
    adv = attack.generate(target, x[:16], y[:16])
    assert attack.last.budget_exhausted
    won = attack.last.success
    assert bool(won.any()) and not bool(won.all())
    with torch.no_grad():
        pred = model(torch.as_tensor(adv)).argmax(1)
    assert torch.equal(pred[won], pred[won]) and bool(
        (pred[won] != torch.as_tensor(y[:16])[won]).all()
    )
    assert torch.equal(attack.last.exhausted, ~won)


def test_a_model_noisy_on_some_calls_is_judged_by_majority_vote(digits) -> None:
    model, x, y, _ = digits
    res = evaluate(
        NoisyCalls(model, detach=False), x[:10], y[:10], eps=1e-4, budget=Budget.quick(), seed=1
    )
    assert res.verification_draws == 10
    assert res.clean_accuracy == 1.0
    assert res.robust_accuracy == 1.0  # eps=1e-4 changes nothing; one lucky draw is no success
    checks = {c.name: c for c in res.checks}
    assert checks["randomized_outputs"].flagged
    assert checks["randomized_outputs"].evidence["verification_draws"] == 10


def test_outputs_without_a_gradient_path_are_zero_gradients_and_flagged(digits) -> None:
    model, x, y, _ = digits
    res = evaluate(NoisyCalls(model, detach=True), x[:8], y[:8], eps=0.3, budget=Budget.quick())
    flagged = {c.name for c in res.flagged()}
    assert {"gradient_free_outputs", "randomized_outputs"} <= flagged
    assert 0 < res.gradient_calls["without_gradient"] < res.gradient_calls["total"]
    assert res.robust_accuracy <= 0.25  # the attacks still work through the other calls
    assert "MLW-EVA-010" in {f.rule for f in findings_for(res, "m")}


def test_the_cli_reports_gradient_free_outputs_instead_of_an_internal_error(
    digits, tmp_path, capsys
) -> None:
    from mlwarden.cli.main import main
    from mlwarden.core.data import Dataset, save_npz

    model, x, y, _ = digits

    class Flaky(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, inp: torch.Tensor) -> torch.Tensor:
            if float(torch.rand(1)) < 0.2:
                return torch.randn(inp.shape[0], 10)
            return self.inner(inp)

    path = tmp_path / "flaky.pt"
    torch.jit.script(Flaky(model)).save(str(path))
    data = tmp_path / "d.npz"
    save_npz(Dataset(x=x[:4], y=y[:4], modality="image"), data)
    out = tmp_path / "r.json"
    torch.manual_seed(0)  # the scripted model draws from torch's global generator
    with pytest.raises(SystemExit) as exc:
        main(["evasion", str(path), str(data), "--budget", "quick", "--json", str(out), "-q"])
    _, err = capsys.readouterr()
    assert int(exc.value.code or 0) in (0, 1), err
    assert "internal error" not in err
    rules = {f["rule"] for f in json.loads(out.read_text())["findings"]}
    assert {"MLW-EVA-004", "MLW-EVA-010"} <= rules


def test_a_defended_target_is_verified_with_the_same_majority_rule(digits) -> None:
    from mlwarden.defenses.defended import DefendedTarget
    from mlwarden.evasion.attacks.base import ModelAccess, verify_draws

    model, x, y, _ = digits
    defended = DefendedTarget(model, [{"type": "random_resize_pad", "seed": 0}], eot_samples=12)
    assert verify_draws(ModelAccess(defended)) == 12
    assert verify_draws(ModelAccess(DefendedTarget(model, [{"type": "random_resize_pad"}]))) == 10
    res = evaluate(defended, x[:4], y[:4], eps=0.0, budget=Budget.quick(), checks=False)
    assert res.verification_draws == 12


def test_quick_budget_findings_are_smoke_tests_capped_below_high(digits) -> None:
    model, x, y, _ = digits
    res = evaluate(model, x[:8], y[:8], eps=0.3, budget=Budget.quick())
    assert res.robust_accuracy < 0.5 * res.clean_accuracy  # would be high on a full budget
    eva1 = next(f for f in findings_for(res, "m") if f.rule == "MLW-EVA-001")
    assert eva1.title.startswith("[smoke test, quick budget]")
    assert eva1.severity == "medium"


def test_accuracies_carry_exact_intervals(digits) -> None:
    model, x, y, _ = digits
    res = evaluate(model, x[:8], y[:8], eps=0.3, budget=Budget.quick(), checks=False)
    k = int(res.robust.sum())
    assert res.robust_accuracy_ci == proportion_ci(k, 8)
    assert res.clean_accuracy_ci[1] == 1.0 and res.clean_accuracy_ci[0] < 0.7


def test_clopper_pearson_matches_its_closed_form_at_the_edges() -> None:
    lo, hi = proportion_ci(0, 10)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 10))
    lo, hi = proportion_ci(10, 10)
    assert hi == 1.0 and lo == pytest.approx(0.025 ** (1 / 10))
    lo, hi = proportion_ci(12, 100)
    assert lo < 0.12 < hi and (round(lo, 3), round(hi, 3)) == (0.064, 0.2)
    with pytest.raises(ValueError):
        proportion_ci(3, 2)
