"""Bad input to ``mlwarden data`` and ``mlwarden backdoor``: one line and exit 2, never a
traceback or a clean result for something that was not checked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mlwarden.core.data import Dataset, load_dataset, save_npz


class Net(torch.nn.Module):
    """Flatten + one linear layer: takes ``c*h*h`` inputs, gives ``k`` classes."""

    def __init__(self, c: int = 1, h: int = 8, k: int = 10) -> None:
        super().__init__()
        self.f = torch.nn.Flatten()
        self.l = torch.nn.Linear(c * h * h, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l(self.f(x))


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    from mlwarden.cli.main import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(list(args))
    code = info.value.code
    return (code if isinstance(code, int) else 0 if code is None else 1), capsys.readouterr().err


def one_line_error(code: int, err: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits").subset(np.arange(120))


@pytest.fixture
def data_npz(tmp_path: Path, digits: Dataset) -> Path:
    path = tmp_path / "digits.npz"
    save_npz(digits, path)
    return path


def script(tmp_path: Path, name: str, module: torch.nn.Module) -> Path:
    path = tmp_path / name
    torch.jit.script(module).save(str(path))
    return path


def test_backdoor_model_that_cannot_take_the_data_shape_names_both(tmp_path, capsys, data_npz):
    model = script(tmp_path, "m28.pt", Net(1, 28, 10))
    code, err = run(capsys, "backdoor", str(model), str(data_npz), "--epochs", "1", "-q")
    line = one_line_error(code, err)
    assert "1x8x8" in line and "784" in line


def test_backdoor_labels_beyond_the_model_classes_are_refused(tmp_path, capsys, data_npz):
    model = script(tmp_path, "two.pt", Net(1, 8, 2))
    code, err = run(capsys, "backdoor", str(model), str(data_npz), "--epochs", "1", "-q")
    line = one_line_error(code, err)
    assert "2 output classes" in line and "label 9" in line


def test_backdoor_on_a_model_without_gradients_searches_by_queries_or_fails_closed(
    tmp_path, capsys, digits
):
    import joblib
    from sklearn.linear_model import LogisticRegression

    flat = Dataset(x=digits.x.reshape(len(digits), -1), y=digits.y, name="flat", modality="tabular")
    model = tmp_path / "lr.joblib"
    joblib.dump(LogisticRegression(max_iter=300).fit(flat.x, flat.y), model)
    # no gradients: the trigger search by queries runs instead of 'cannot run' (issue 18)
    data = tmp_path / "flat.npz"
    save_npz(flat, data)
    out = tmp_path / "r.json"
    code, err = run(capsys, "backdoor", str(model), str(data), "--json", str(out), "-q")
    assert code == 0, err
    report = json.loads(out.read_text())
    assert report["metrics"]["query_trigger"]["ran"]
    assert not [f for f in report["findings"] if f["rule"] == "MLW-DAT-012"]
    # too few rows for that search (it needs 64): it cannot run, which fails closed
    few = tmp_path / "few.npz"
    save_npz(flat.subset(np.arange(50)), few)
    code, err = run(capsys, "backdoor", str(model), str(few), "--json", str(out), "-q")
    line = one_line_error(code, err)
    assert "could not run" in line and "at least 64 rows" in line
    findings = json.loads(out.read_text())["findings"]
    skipped = [f for f in findings if f["rule"] == "MLW-DAT-012"]
    assert skipped and skipped[0]["severity"] == "medium"


def test_data_with_a_single_class_reports_the_skipped_label_check(tmp_path, capsys, digits):
    data = tmp_path / "one_class.npz"
    save_npz(Dataset(x=digits.x[:40], y=np.full(40, 7), name="one_class"), data)
    out = tmp_path / "r.json"
    code, err = run(capsys, "data", str(data), "--json", str(out), "-q")
    assert code == 0 and "Traceback" not in err
    findings = json.loads(out.read_text())["findings"]
    assert any(f["check"] == "label-issues" and "2 classes" in f["description"] for f in findings)


def test_data_with_a_failing_trainer_is_one_line(tmp_path, capsys, monkeypatch, data_npz):
    (tmp_path / "boom_trainer_mod.py").write_text(
        "def train(x, y):\n    raise RuntimeError('factory exploded')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    code, err = run(capsys, "data", str(data_npz), "--trainer", "boom_trainer_mod:train", "-q")
    line = one_line_error(code, err)
    assert "boom_trainer_mod:train" in line and "factory exploded" in line


@pytest.mark.parametrize(
    "text, words",
    [
        ("", "empty"),
        ("a,b,label\n", "no data rows"),
        ("a,b,label\n1,2,0\n3\n", "fields"),
        ("a,b,label\n1,2,0\n3,x,1\n", "not a number"),
    ],
)
def test_data_on_a_csv_that_is_not_data_is_an_error(tmp_path, capsys, text, words):
    path = tmp_path / "t.csv"
    path.write_text(text)
    line = one_line_error(*run(capsys, "data", str(path), "-q"))
    assert "t.csv" in line and words in line


def test_data_with_too_few_samples_is_an_error(tmp_path, capsys, digits):
    data = tmp_path / "one.npz"
    save_npz(digits.subset(np.arange(1)), data)
    assert "too little data" in one_line_error(*run(capsys, "data", str(data), "-q"))


def test_label_option_on_an_npz_is_an_error(capsys, data_npz):
    line = one_line_error(*run(capsys, "data", str(data_npz), "--label", "nosuch", "-q"))
    assert "--label" in line and "not a CSV" in line


@pytest.mark.parametrize(
    "module, words", [(Net(3, 32, 10), "1x8x8"), (Net(1, 8, 2), "2 output classes")]
)
def test_data_with_a_model_that_cannot_take_the_data_is_an_error(
    tmp_path, capsys, data_npz, module, words
):
    model = script(tmp_path, "m.pt", module)
    line = one_line_error(*run(capsys, "data", str(data_npz), "--model", str(model), "-q"))
    assert words in line


def test_data_with_a_model_without_a_hidden_layer_is_not_passed_quietly(tmp_path, capsys, data_npz):
    model = script(tmp_path, "linear.pt", Net(1, 8, 10))
    out = tmp_path / "r.json"
    code, err = run(capsys, "data", str(data_npz), "--model", str(model), "--json", str(out), "-q")
    assert code == 0, err
    findings = json.loads(out.read_text())["findings"]
    skipped = [f for f in findings if f["check"] == "poisoning" and "could not run" in f["title"]]
    assert skipped and skipped[0]["severity"] == "medium"
