"""Access honoured: a label-only model gets label-only attacks, and every figure says
which access it assumes; extraction stays within its query budget; random inputs stay
within each feature's measured range."""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from mlwarden.cli.main import main
from mlwarden.core.data import Dataset, save_npz
from mlwarden.core.errors import UserError
from mlwarden.core.target import CallableTarget, SklearnTarget
from mlwarden.privacy import extract_report, knockoff, privacy_report
from mlwarden.privacy.modalities import hooks_for


@pytest.fixture(scope="module")
def files(tmp_path_factory, digits_halves):  # type: ignore[no-untyped-def]
    root: Path = tmp_path_factory.mktemp("privacy-access")
    train, holdout = digits_halves
    model = LogisticRegression(C=100.0, max_iter=500).fit(train.x.reshape(len(train), -1), train.y)
    joblib.dump(model, root / "model.joblib")
    save_npz(train.subset(np.arange(200)), root / "train.npz")
    save_npz(holdout.subset(np.arange(200)), root / "holdout.npz")
    return root


def cli(*args: str) -> int:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    return int(exc.value.code or 0)


def test_privacy_on_label_access_runs_the_label_only_attack(files, capsys) -> None:  # type: ignore[no-untyped-def]
    out = files / "p.json"
    code = cli(
        "privacy", str(files / "model.joblib"), "--train", str(files / "train.npz"),
        "--holdout", str(files / "holdout.npz"), "--access", "label", "--json", str(out), "-q",
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    data = json.loads(out.read_text())
    assert data["metrics"]["attack"] == "label-only"
    assert data["metrics"]["access"] == "label"
    assert data["config"]["attack_requested"] == "auto"
    prv = next(f for f in data["findings"] if f["rule"] == "MLW-PRV-001")
    assert "label-only access" in prv["title"]
    assert "label-only access" in prv["description"]
    assert prv["evidence"]["access"] == "label"
    # label-only: every query answered with a label, (1 + 24 noisy copies) per record
    assert data["metrics"]["queries"] == 400 * 25


def test_score_attack_asked_of_a_labels_only_model_says_what_ran_instead(digits_halves) -> None:  # type: ignore[no-untyped-def]
    train, holdout = (d.subset(np.arange(120)) for d in digits_halves)
    model = LogisticRegression(max_iter=300).fit(train.x.reshape(len(train), -1), train.y)
    target = SklearnTarget(model, access="label")
    report = privacy_report(target, train, holdout, attack="lira", shadows=2)
    assert report.metrics["attack"] == "label-only"
    assert "labels only" in report.config["note"]
    # the same model with scores keeps the score-based attack (a control)
    scored = privacy_report(SklearnTarget(model), train, holdout, attack="loss")
    assert scored.metrics["attack"] == "loss" and scored.metrics["access"] == "score"
    # the label-only attack's figure assumes labels only, whatever the model gives
    lo = privacy_report(SklearnTarget(model), train, holdout, attack="label-only")
    assert lo.metrics["access"] == "label" and lo.config["target_access"] == "score"


def test_extract_with_labels_only_stays_within_each_budget(files, capsys) -> None:  # type: ignore[no-untyped-def]
    out = files / "e.json"
    code = cli(
        "extract", str(files / "model.joblib"), "--pool", str(files / "holdout.npz"),
        "--budget", "40,120", "--access", "label", "--json", str(out), "-q",
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    data = json.loads(out.read_text())
    m = data["metrics"]
    assert m["access"] == "label" and "equation_solving" not in m  # needs scores
    assert m["queries"] == {"40": 40, "120": 120}
    assert m["clean_accuracy"] == m["victim_accuracy"]
    assert not m["curves"]["pool"]["soft"]  # trained on hard labels
    ext = next(f for f in data["findings"] if f["rule"] == "MLW-EXT-002")
    assert "label-only access" in ext["title"] and ext["evidence"]["access"] == "label"


def test_extraction_budget_is_enforced_by_the_target(digits_halves) -> None:  # type: ignore[no-untyped-def]
    train, holdout = digits_halves
    model = LogisticRegression(max_iter=300).fit(train.x.reshape(len(train), -1), train.y)
    target = SklearnTarget(model, access="label", max_queries=30)
    with pytest.raises(UserError, match="refused"):
        knockoff(target, train.x, [50], eval_x=holdout.x[:50])
    assert target.max_queries == 30  # restored


def _scaled_tabular(n: int = 240, seed: int = 0) -> Dataset:
    """Two features on very different scales: [0, 1000] and [0, 1]."""
    rng = np.random.default_rng(seed)
    x = np.c_[rng.uniform(0, 1000, n), rng.uniform(0, 1, n)].astype(np.float32)
    y = ((x[:, 0] / 1000 + x[:, 1]) > 1).astype(np.int64)
    return Dataset(x=x, y=y, name="scaled", bounds=(0.0, 1000.0))


def test_uniform_fidelity_inputs_stay_in_each_features_measured_range() -> None:
    ds = _scaled_tabular()
    model = LogisticRegression(max_iter=500).fit(ds.x, ds.y)
    seen: list[np.ndarray] = []

    def answer(x: np.ndarray) -> np.ndarray:
        seen.append(np.asarray(x))
        return np.asarray(model.predict_proba(x), dtype=np.float32)

    target = CallableTarget(answer, output="probabilities")
    report = extract_report(target, ds, budgets=(60,), strategies=("random",), seed=0)
    every = np.concatenate(seen)
    # one global box ([0, 1000]) would send the second feature up to 1000
    assert every[:, 1].max() <= ds.x[:, 1].max() + 1e-6
    assert every[:, 0].max() > 500  # the first feature's own range is still covered
    assert "each feature's range" in report.config["random_inputs"]
    lo, hi = hooks_for(ds).ranges(ds.x)  # type: ignore[misc]
    assert hi[1] <= 1.0 and hi[0] > 900
