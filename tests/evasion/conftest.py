"""Shared fixtures: a tiny CNN trained on bundled digits (a few seconds, once per session)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlwarden.core.data import bundled
from mlwarden.core.models import MLP, SmallCNN, fit


@pytest.fixture(scope="session")
def digits():
    torch.set_num_threads(1)
    ds = bundled("digits")
    train, test = ds.split(test_size=0.3, seed=0)
    torch.manual_seed(0)
    model = SmallCNN(1, 10, 8, width=8)
    fit(model, train.x, train.y, epochs=8, batch_size=128, lr=3e-3, seed=0)
    with torch.no_grad():
        pred = model(torch.as_tensor(test.x)).argmax(1).numpy()
    correct = np.nonzero(pred == test.y)[0]
    return model, test.x[correct[:40]], test.y[correct[:40]], train


@pytest.fixture(scope="session")
def tabular():
    """A small MLP on synthetic tabular data with an integer and an immutable feature."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(400, 6)).astype(np.float32)
    x[:, 2] = rng.integers(0, 5, size=400)  # an integer count
    y = ((x[:, 0] + x[:, 1] + 0.1 * x[:, 2] - x[:, 3]) > 0.9).astype(np.int64)
    torch.manual_seed(0)
    model = MLP(6, 2, hidden=(32,))
    fit(model, x, y, epochs=10, lr=1e-2, seed=0)
    return model, x[:24], y[:24]
