"""Tabular realism: eps relative to each feature's spread, constraints enforced inside
every attack and re-checked on each success, advice that fits the model (issue 16)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import RandomForestClassifier

from mlwarden.core.data import load_dataset
from mlwarden.core.errors import UserError
from mlwarden.core.models import MLP, fit
from mlwarden.evasion import evasion_report
from mlwarden.evasion.attacks.base import Constraints
from mlwarden.evasion.tabular import build_space, feature_spread

SPEC = {"immutable": ["mean radius"], "one_hot": [["site_a", "site_b", "site_c"]]}


class Standardize(torch.nn.Module):
    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


@pytest.fixture(scope="module")
def cancer_csv(tmp_path_factory):
    """Breast cancer in raw units (areas in the thousands, smoothness in hundredths),
    plus a whole-number column and a one-hot site, written as a CSV."""
    d = load_breast_cancer()
    rng = np.random.default_rng(0)
    n = len(d.target)
    visits = rng.integers(0, 12, n)
    site = np.eye(3)[rng.integers(0, 3, n)]
    names = [*d.feature_names, "visits", "site_a", "site_b", "site_c", "label"]
    path = tmp_path_factory.mktemp("tab") / "cancer.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(names)
        for i in range(n):
            w.writerow([*d.data[i], visits[i], *site[i].astype(int), d.target[i]])
    return load_dataset(path)


@pytest.fixture(scope="module")
def models(cancer_csv):
    ds = cancer_csv
    mean, std = ds.x.mean(0), ds.x.std(0) + 1e-6
    torch.manual_seed(0)
    mlp = MLP(ds.x.shape[1], 2, hidden=(32,))
    fit(mlp, (ds.x - mean) / std, ds.y, epochs=20, lr=1e-2, seed=0)
    net = torch.nn.Sequential(Standardize(mean, std), mlp).eval()
    forest = RandomForestClassifier(30, random_state=0).fit(ds.x, ds.y)
    return net, forest


def _adversarial(tmp_path, model, ds, **kw):
    out = tmp_path / "adv.npz"
    report = evasion_report(
        [model], ds, budget="quick", limit=60, save_adversarial=out, constraints=SPEC, **kw
    )
    return report, np.load(out)


def test_relative_eps_keeps_every_feature_within_its_spread_and_constraints(
    tmp_path, cancer_csv, models
):
    ds = cancer_csv
    net, _ = models
    report, adv = _adversarial(tmp_path, net, ds, eps_relative=0.5)
    sub = ds.subset(np.sort(np.random.default_rng(0).choice(len(ds), 60, replace=False)))
    x_adv, rows = adv["x_adv"], adv["index"]
    assert len(rows) >= 3  # the attack found something, so the checks below bite
    x = sub.x[rows]
    spread = feature_spread(ds.x)
    names = ds.feature_names
    assert np.all(np.abs(x_adv - x) <= 0.5 * spread * (1 + 1e-4) + 1e-3)
    assert np.all(x_adv[:, names.index("mean radius")] == x[:, names.index("mean radius")])
    visits = x_adv[:, names.index("visits")]
    assert np.allclose(visits, np.round(visits), atol=1e-3)  # auto-detected integer column
    site = x_adv[:, [names.index(c) for c in ("site_a", "site_b", "site_c")]]
    assert np.allclose(site.sum(1), 1) and np.allclose(site, np.round(site), atol=1e-4)
    assert np.all(x_adv >= ds.x.min(0) - 1e-3) and np.all(x_adv <= ds.x.max(0) + 1e-3)
    main = next(f for f in report.findings if f.rule == "MLW-EVA-001")
    assert "x each feature's std" in main.title
    assert "immutable mean radius" in main.description and "visits" in main.description
    # raw-unit eps stays available and means something else on these scales
    raw = evasion_report([net], ds, eps=0.5, budget="quick", limit=60, constraints=SPEC)
    assert "perturbations of size 0.5" in raw.findings[0].title


def test_recommendations_fit_the_model(tmp_path, cancer_csv, models):
    net, forest = models
    rf_report, _ = _adversarial(tmp_path, forest, cancer_csv, eps_relative=0.5)
    main = next(f for f in rf_report.findings if f.rule == "MLW-EVA-001")
    assert "adversarial_training" not in main.recommendation
    assert "monotonic" in main.recommendation and "arXiv:1902.10660" in main.recommendation
    assert not [f for f in rf_report.findings if f.rule == "MLW-EVA-005"]  # no "expose logits"
    nn_report, _ = _adversarial(tmp_path, net, cancer_csv, eps_relative=0.5)
    nn_main = next(f for f in nn_report.findings if f.rule == "MLW-EVA-001")
    assert "adversarial training" in nn_main.recommendation
    assert "range" in nn_main.recommendation


def test_a_success_that_breaks_a_constraint_is_not_counted():
    x = torch.tensor([[1.0, 2.0, 0.0, 1.0]])
    cons = Constraints(
        immutable=[True, False, False, False], integer=[False, True, False, False],
        one_hot=[[2, 3]],
    )  # fmt: skip
    assert cons.satisfied(x, x.clone()).item()
    for bad in ([1.5, 2, 0, 1], [1, 2.5, 0, 1], [1, 2, 1, 1], [1, 2, 0.4, 0.6]):
        assert not cons.satisfied(x, torch.tensor([bad])).item(), bad
    assert cons.satisfied(x, torch.tensor([[1.0, 3.0, 1.0, 0.0]])).item()


def test_unknown_column_is_one_clear_line(cancer_csv):
    with pytest.raises(UserError, match="immutable: no column 'nope'"):
        build_space(cancer_csv, cancer_csv.x[:5], eps=0.1, spec={"immutable": ["nope"]})
    with pytest.raises(UserError, match="tabular data only"):
        from mlwarden.core.data import bundled

        evasion_report([torch.nn.Flatten()], bundled("digits"), eps_relative=0.1, limit=2)
