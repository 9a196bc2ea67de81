"""PGD adversarial training makes a model more robust than standard training."""

from __future__ import annotations

import pytest
import torch

from mlwarden.core.data import bundled
from mlwarden.core.errors import UserError
from mlwarden.core.models import MLP, accuracy, fit
from mlwarden.defenses.adversarial_training import adversarial_training
from mlwarden.evasion import PGD


def test_adversarial_training_raises_robust_accuracy() -> None:
    torch.set_num_threads(1)
    train, test = bundled("digits").split(test_size=0.3, seed=0)
    x, y = train.x.reshape(len(train), -1), train.y
    xt, yt = test.x.reshape(len(test), -1)[:150], test.y[:150]
    torch.manual_seed(0)
    plain = fit(MLP(64, 10, hidden=(64,)), x, y, epochs=15, batch_size=128, lr=3e-3, seed=0)
    torch.manual_seed(0)
    robust = adversarial_training(
        MLP(64, 10, hidden=(64,)),
        x,
        y,
        eps=0.15,
        steps=5,
        step_size=0.05,
        epochs=15,
        batch_size=128,
        lr=3e-3,
        seed=0,
    )
    attack = PGD(eps=0.15, steps=20, step_size=0.02)
    plain_robust = accuracy(plain, attack.generate(plain, xt, yt), yt)
    robust_robust = accuracy(robust, attack.generate(robust, xt, yt), yt)
    assert accuracy(robust, xt, yt) > 0.7
    assert robust_robust > plain_robust + 0.2


def test_adversarial_training_rejects_bad_settings() -> None:
    with pytest.raises(UserError):
        adversarial_training(
            MLP(4, 2), torch.zeros(4, 4), torch.zeros(4, dtype=torch.long), norm="l1"
        )
