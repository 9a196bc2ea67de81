"""Penultimate activations from torch (embed, hook, TorchScript) and scikit-learn MLPs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mlwarden.core.errors import UserError
from mlwarden.core.models import MLP, SmallCNN
from mlwarden.core.target import TorchTarget
from mlwarden.poisoning.activations import penultimate, sklearn_mlp_hidden


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 1, size=(20, 1, 8, 8)).astype(np.float32)


def test_embed_is_used_when_present(x):
    torch.manual_seed(0)
    model = SmallCNN(1, 10, 8).eval()
    with torch.no_grad():
        expected = model.embed(torch.from_numpy(x)).numpy()
    assert np.allclose(penultimate(model, x), expected, atol=1e-6)
    assert np.allclose(penultimate(TorchTarget(model), x), expected, atol=1e-6)


def test_hook_reads_the_input_of_the_last_linear_layer(x):
    torch.manual_seed(0)
    body = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Tanh())
    model = nn.Sequential(body, nn.Linear(16, 10)).eval()
    with torch.no_grad():
        expected = body(torch.from_numpy(x)).numpy()
    assert np.allclose(penultimate(model, x), expected, atol=1e-6)


def test_torchscript_keeps_embed(x):
    torch.manual_seed(0)
    model = SmallCNN(1, 10, 8).eval()
    scripted = torch.jit.script(model)
    assert np.allclose(penultimate(scripted, x), penultimate(model, x), atol=1e-5)


def test_torchscript_sequential_drops_its_last_linear(x):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 12), nn.ReLU(), nn.Linear(12, 10)).eval()
    scripted = torch.jit.script(model)
    with torch.no_grad():
        expected = model[:3](torch.from_numpy(x)).numpy()
    assert np.allclose(penultimate(scripted, x), expected, atol=1e-6)


def test_sklearn_mlp_hidden_layer_reproduces_its_probabilities():
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    d = load_digits()
    xs = d.data[:300] / 16.0
    clf = MLPClassifier(hidden_layer_sizes=(32, 16), max_iter=50, random_state=0).fit(
        xs, d.target[:300]
    )
    h = sklearn_mlp_hidden(clf, xs).astype(np.float64)
    assert h.shape == (300, 16)
    logits = h @ clf.coefs_[-1] + clf.intercepts_[-1]
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert np.allclose(p, clf.predict_proba(xs), atol=1e-5)
    assert np.allclose(penultimate(clf, xs.reshape(300, 1, 8, 8)), h, atol=1e-5)


def test_models_without_a_penultimate_layer_are_refused(x):
    from sklearn.linear_model import LogisticRegression

    with pytest.raises(UserError, match="penultimate"):
        penultimate(LogisticRegression(), x)
    with pytest.raises(UserError, match="no embed"):
        penultimate(nn.Sequential(nn.Flatten(), nn.ReLU()), x)


def test_mlp_embed(x):
    model = MLP(64, 10, hidden=(8,)).eval()
    assert penultimate(model, x).shape == (20, 8)
