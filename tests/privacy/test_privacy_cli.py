"""``mlwarden privacy`` and ``mlwarden extract``: JSON keys, exit codes, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import pytest
from sklearn.linear_model import LogisticRegression

from mlwarden.cli.main import main
from mlwarden.cli.privacy import parse_budgets
from mlwarden.core.data import save_npz
from mlwarden.core.errors import UserError


@pytest.fixture(scope="module")
def files(tmp_path_factory, digits_halves):  # type: ignore[no-untyped-def]
    root: Path = tmp_path_factory.mktemp("privacy-cli")
    train, holdout = digits_halves
    model = LogisticRegression(C=100.0, max_iter=500).fit(train.x.reshape(len(train), -1), train.y)
    joblib.dump(model, root / "model.joblib")
    save_npz(train, root / "train.npz")
    save_npz(holdout, root / "holdout.npz")
    return root


def cli(*args: str) -> int:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    return int(exc.value.code or 0)


def test_privacy_json_has_auc_and_tpr_at_low_fpr(files, capsys) -> None:  # type: ignore[no-untyped-def]
    out = files / "privacy.json"
    code = cli(
        "privacy",
        str(files / "model.joblib"),
        "--train",
        str(files / "train.npz"),
        "--holdout",
        str(files / "holdout.npz"),
        "--attack",
        "lira",
        "--shadows",
        "2",
        "--quiet",
        "--json",
        str(out),
    )
    assert code == 0, capsys.readouterr().err
    data = json.loads(out.read_text())
    assert 0.0 <= data["metrics"]["auc"] <= 1.0
    assert set(data["metrics"]["tpr_at_fpr"]) == {"0.01", "0.001"}
    assert all(isinstance(v, float) for v in data["metrics"]["tpr_at_fpr"].values())
    assert any(f["rule"] == "MLW-PRV-001" for f in data["findings"])


def test_extract_json_maps_each_budget_to_fidelity(files, capsys) -> None:  # type: ignore[no-untyped-def]
    out = files / "extract.json"
    code = cli(
        "extract",
        str(files / "model.joblib"),
        "--pool",
        str(files / "holdout.npz"),
        "--budget",
        "30,120",
        "--quiet",
        "--json",
        str(out),
    )
    assert code == 0, capsys.readouterr().err
    fidelity = json.loads(out.read_text())["metrics"]["fidelity"]
    assert set(fidelity) == {"30", "120"} and all(0.0 <= v <= 1.0 for v in fidelity.values())


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--attack", "guess"), "--attack 'guess' is not known"),
        (("--attack", "lira", "--shadows", "1"), "--shadows must be at least 2"),
        (("--trainer", "nocolon"), "--trainer must look like package.module:function"),
    ],
)
def test_privacy_user_errors_are_one_line_exit_2(files, capsys, args, words) -> None:  # type: ignore[no-untyped-def]
    code = cli(
        "privacy",
        str(files / "model.joblib"),
        "--train",
        str(files / "train.npz"),
        "--holdout",
        str(files / "holdout.npz"),
        "--quiet",
        *args,
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and words in err and len(err.splitlines()) == 1, err


def test_a_missing_holdout_file_is_named(files, capsys) -> None:  # type: ignore[no-untyped-def]
    code = cli(
        "privacy",
        str(files / "model.joblib"),
        "--train",
        str(files / "train.npz"),
        "--holdout",
        str(files / "nope.npz"),
        "--attack",
        "loss",
    )
    assert code == 2 and "nope.npz" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["", "10,abc", "0,5", "-3"])
def test_bad_budgets_are_refused(text: str) -> None:
    with pytest.raises(UserError, match="--budget"):
        parse_budgets(text)


def test_budgets_are_sorted_and_deduplicated() -> None:
    assert parse_budgets("5000, 100,1000,100") == [100, 1000, 5000]


def test_labels_beyond_the_models_classes_are_a_user_error(files, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((20, 1, 8, 8), np.float32), y=np.full(20, 42))
    code = cli(
        "privacy",
        str(files / "model.joblib"),
        "--train",
        str(bad),
        "--holdout",
        str(files / "holdout.npz"),
        "--attack",
        "loss",
    )
    err = capsys.readouterr().err
    assert code == 2 and "labels up to 42" in err, err


def test_a_tiny_pool_is_refused_with_advice(files, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    tiny = tmp_path / "tiny.npz"
    np.savez(tiny, x=np.zeros((4, 1, 8, 8), np.float32), y=np.arange(4))
    code = cli("extract", str(files / "model.joblib"), "--pool", str(tiny), "--budget", "10")
    assert code == 2 and "at least 10" in capsys.readouterr().err
