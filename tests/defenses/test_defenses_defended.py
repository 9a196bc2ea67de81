"""DefendedTarget: the defence runs forwards; BPDA and EOT make it attackable."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlwarden.core.data import bundled
from mlwarden.core.errors import UserError
from mlwarden.core.models import SmallCNN, accuracy, fit
from mlwarden.core.target import TorchTarget
from mlwarden.defenses.defended import DefendedTarget
from mlwarden.defenses.transforms import BitDepthReduction, RandomResizePad
from mlwarden.evasion import PGD, Budget, evaluate
from mlwarden.evasion.attacks.base import ModelAccess, ce_loss


@pytest.fixture(scope="module")
def digits_model():
    torch.set_num_threads(1)
    train, test = bundled("digits").split(test_size=0.3, seed=0)
    torch.manual_seed(0)
    model = SmallCNN(1, 10, 8, width=8)
    fit(model, train.x, train.y, epochs=8, batch_size=128, lr=3e-3, seed=0)
    return model, test.x[:40], test.y[:40]


def test_defended_predictions_apply_the_transforms(digits_model) -> None:
    model, x, _ = digits_model
    defended = DefendedTarget(model, [{"type": "bit_depth", "bits": 1}])
    squeezed = BitDepthReduction(1)(torch.as_tensor(x))
    with torch.no_grad():
        expected = model(squeezed).numpy()
    assert np.allclose(defended.predict(x), expected, atol=1e-5)


def test_bpda_passes_gradients_through_a_non_differentiable_transform(digits_model) -> None:
    model, x, y = digits_model
    xt, yt = torch.as_tensor(x[:8]), torch.as_tensor(y[:8])
    naive = xt.clone().requires_grad_(True)
    (g_naive,) = torch.autograd.grad(ce_loss(model(BitDepthReduction(3)(naive)), yt).sum(), naive)
    assert float(g_naive.abs().max()) == 0.0  # rounding kills the gradient
    access = ModelAccess(DefendedTarget(model, [BitDepthReduction(3)]))
    _, grad, _ = access.loss_grad(xt, ce_loss, yt)
    assert float(grad.abs().max()) > 0.0


def test_adaptive_pgd_breaks_a_bit_depth_defence(digits_model) -> None:
    model, x, y = digits_model
    defended = DefendedTarget(model, [{"type": "bit_depth", "bits": 3}])
    adv = PGD(eps=0.3, steps=20, step_size=0.04).generate(defended, x, y)
    robust = float((defended.predict_labels(adv) == y).mean())
    assert robust <= 0.2


def test_eot_averages_gradients_over_random_draws(digits_model) -> None:
    model, x, y = digits_model
    target = DefendedTarget(model, [RandomResizePad(seed=0)], eot_samples=5)
    assert target.randomized and target.eot_samples == 5
    access = ModelAccess(target)
    xt, yt = torch.as_tensor(x[:4]), torch.as_tensor(y[:4])
    before = target.queries
    _, g5, _ = access.loss_grad(xt, ce_loss, yt)
    assert target.queries - before == 5 * 4  # five draws per input
    single = ModelAccess(DefendedTarget(model, [RandomResizePad(seed=0)], eot_samples=1))
    draws = [single.loss_grad(xt, ce_loss, yt)[1] for _ in range(5)]
    # the EOT gradient is the mean of independent draws, so it is smoother than one draw
    spread = torch.stack(draws).std(0).mean()
    assert float(spread) > 0
    assert float((g5 - torch.stack(draws).mean(0)).abs().mean()) < float(
        torch.stack(draws).abs().mean()
    )


def test_evaluate_on_a_defended_model_reports_the_adaptive_setup(digits_model) -> None:
    model, x, y = digits_model
    defended = DefendedTarget(model, [{"type": "jpeg", "quality": 80}])
    res = evaluate(defended, x[:10], y[:10], eps=0.3, budget=Budget.quick(), checks=False)
    assert res.defended == {
        "chain": {"type": "chain", "transforms": [{"type": "jpeg", "quality": 80}]},
        "bpda": True,
        "eot_samples": 1,
    }
    assert res.robust_accuracy <= 0.25


def test_defending_a_score_only_target_keeps_its_access(digits_model) -> None:
    model, x, _ = digits_model
    defended = DefendedTarget(TorchTarget(model, access="score"), [{"type": "median"}])
    assert defended.access == "score"
    assert defended.predict(x[:3]).shape == (3, 10)
    with pytest.raises(UserError):
        defended.torch_forward(torch.as_tensor(x[:1]))


def test_rejects_a_bad_transform_spec(digits_model) -> None:
    model, _, _ = digits_model
    with pytest.raises(UserError):
        DefendedTarget(model, "jpeg")
    with pytest.raises(UserError):
        DefendedTarget(model, [{"type": "jpeg"}], eot_samples=-1)


def test_accuracy_helper_matches_defended_predictions(digits_model) -> None:
    model, x, y = digits_model
    defended = DefendedTarget(model, [{"type": "median", "size": 1}])
    assert float((defended.predict_labels(x) == y).mean()) == pytest.approx(accuracy(model, x, y))
