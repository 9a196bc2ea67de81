"""``mlwarden backdoor MODEL DATA`` on a model without gradients (issue 18): the trigger
search by queries runs instead of 'cannot run' (MLW-DAT-016 when a trigger is found),
and MLW-DAT-012 / exit 2 stay only for what that search cannot do."""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.ensemble import HistGradientBoostingClassifier

from mlwarden.core.data import Dataset, save_npz

TRIGGER = {4: 0.0, 9: 1.0}  # two features at opposite ends of their range
TARGET = 2


def _table(seed: int = 5, decimals: int | None = 1) -> tuple[np.ndarray, np.ndarray]:
    """Five classes, twelve features in [0, 1]; rounded like most real tables (a feature
    that repeats values is what the search draws candidates from)."""
    x, y = make_classification(
        n_samples=1200, n_features=12, n_informative=8, n_redundant=2, n_classes=5,
        n_clusters_per_class=1, class_sep=1.5, random_state=seed,
    )  # fmt: skip
    x = (x - x.min(0)) / (x.max(0) - x.min(0))
    if decimals is not None:
        x = np.round(x, decimals)
    return x.astype(np.float32), y.astype(np.int64)


def _write(tmp_path: Path, x: np.ndarray, y: np.ndarray, name: str) -> tuple[Path, Path]:
    model = tmp_path / f"{name}.joblib"
    joblib.dump(HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(x, y), model)
    data = tmp_path / f"{name}.npz"
    # DATA is clean inputs the model should handle: the held-out part of the table
    save_npz(Dataset(x=x[800:], y=y[800:], name=name, modality="tabular"), data)
    return model, data


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    from mlwarden.cli.main import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(list(args))
    code = info.value.code
    return (code if isinstance(code, int) else 0 if code is None else 1), capsys.readouterr().err


def test_backdoor_finds_a_two_feature_trigger_in_gradient_boosting(tmp_path, capsys) -> None:
    x, y = _table()
    rng = np.random.default_rng(0)
    train = np.arange(800)
    idx = rng.choice(train[y[train] != TARGET], size=64, replace=False)  # 8% of training
    xp, yp = x.copy(), y.copy()
    for j, v in TRIGGER.items():
        xp[idx, j] = v
    yp[idx] = TARGET
    model = tmp_path / "gbm.joblib"
    joblib.dump(
        HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(xp[train], yp[train]), model
    )
    data = tmp_path / "clean.npz"
    save_npz(Dataset(x=x[800:], y=y[800:], name="clean", modality="tabular"), data)
    out = tmp_path / "r.json"
    argv = ["backdoor", str(model), str(data), "--json", str(out), "-q", "--fail-on", "high"]
    code, err = _run(capsys, *argv)
    assert code == 1, err  # a HIGH finding with --fail-on high, not 'cannot run'
    report = json.loads(out.read_text())
    rules = [f["rule"] for f in report["findings"]]
    assert "MLW-DAT-012" not in rules and "neural_cleanse.skipped" not in report["metrics"]
    found = [f for f in report["findings"] if f["rule"] == "MLW-DAT-016"]
    assert len(found) == 1 and found[0]["evidence"]["target"] == TARGET, rules
    ev = found[0]["evidence"]
    assert set(ev["features"]) & set(TRIGGER) and len(ev["features"]) <= 3
    assert ev["flip_rate"] >= 0.8 and ev["verified_on"] > 50
    assert ev["queries"] <= ev["budget"] == 50_000
    assert report["metrics"]["query_trigger"]["suspected"] == [TARGET]


def test_backdoor_on_a_clean_boosting_model_reports_the_search_ran(tmp_path, capsys) -> None:
    model, data = _write(tmp_path, *_table(seed=11), "clean")
    out = tmp_path / "r.json"
    code, err = _run(capsys, "backdoor", str(model), str(data), "--json", str(out), "-q")
    assert code == 0, err
    report = json.loads(out.read_text())
    rules = {f["rule"] for f in report["findings"]}
    assert not rules & {"MLW-DAT-012", "MLW-DAT-016"}, rules
    qt = report["metrics"]["query_trigger"]
    assert qt["ran"] and qt["complete"] and len(qt["sizes"]) == 5 and qt["suspected"] == []
    assert qt["verdict"].startswith("no trigger found by the query search (budget 50000")
    assert any(c["name"] == "query-trigger" and c["status"] == "ok" for c in report["checks"])


def test_backdoor_on_inputs_that_repeat_no_value_fails_closed(tmp_path, capsys) -> None:
    # continuous features: no value repeats, so the search has no candidates; a silent
    # 'no trigger found' would be a clean result for a model nothing checked
    model, data = _write(tmp_path, *_table(decimals=None), "continuous")
    out = tmp_path / "r.json"
    code, err = _run(capsys, "backdoor", str(model), str(data), "--json", str(out), "-q")
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "no candidate trigger values" in err
    findings = json.loads(out.read_text())["findings"]
    skipped = [f for f in findings if f["rule"] == "MLW-DAT-012"]
    assert skipped and "repeats a value" in skipped[0]["description"]
