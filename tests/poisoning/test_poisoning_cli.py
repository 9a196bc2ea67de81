"""``mlwarden data`` and ``mlwarden backdoor`` end to end (in-process), errors included."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mlwarden.core.data import save_npz
from mlwarden.report.json_report import validation_errors


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    from mlwarden.cli.main import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out = capsys.readouterr()
    code = info.value.code
    return (code if isinstance(code, int) else 0 if code is None else 1), out.out, out.err


PEOPLE = (
    "name,email,comment,label\n"
    "Ann,ann@example.com,paid 4111 1111 1111 1111,0\n"
    "Bob,bob@example.org,key AKIAIOSFODNN7EXAMPLE,1\n"
    "Cy,cy@example.net,fine,0\n"
)


def test_data_on_a_text_csv_reports_personal_data_and_secrets(tmp_path, capsys):
    csv_path = tmp_path / "people.csv"
    csv_path.write_text(PEOPLE, encoding="utf-8")
    out = tmp_path / "r.json"
    code, _, err = run(capsys, "data", str(csv_path), "--json", str(out), "--fail-on", "high", "-q")
    assert code == 1, err
    report = json.loads(out.read_text())
    rules = {f["rule"] for f in report["findings"]}
    assert {"MLW-DAT-005", "MLW-DAT-006", "MLW-DAT-010"} <= rules
    counts = report["artifacts"]["sensitive_data"]["counts"]
    assert counts["email"] == {"email": 3}
    assert counts["card_number"] == {"comment": 1}
    assert counts["aws_access_key"] == {"comment": 1}
    assert "4111 1111 1111 1111" not in out.read_text()
    # every row with sensitive data is listed, naming the type and the column; the row
    # with a secret ranks first
    rows = {e["index"]: e["reasons"] for e in report["suspicious"]}
    assert set(rows) == {0, 1, 2}
    assert report["suspicious"][0]["index"] == 1
    assert "AWS access key id in column 'comment'" in rows[1]
    assert "payment card number in column 'comment'" in rows[0]
    assert rows[2] == ["e-mail address in column 'email'"]


def test_data_with_a_model_lists_suspicious_samples(tmp_path, capsys, backdoored):
    p = backdoored.poisoned
    data = tmp_path / "train.npz"
    save_npz(p.dataset, data)
    model = tmp_path / "model.pt"
    torch.jit.script(backdoored.model).save(str(model))
    out = tmp_path / "r.json"
    code, _, err = run(
        capsys,
        "data",
        str(data),
        "--model",
        str(model),
        "--nc-epochs",
        "0",
        "--json",
        str(out),
        "-q",
    )
    assert code == 0, err
    report = json.loads(out.read_text())
    assert validation_errors(report) == []
    suspicious = report["suspicious"]
    assert suspicious, "expected some suspicious samples"
    for item in suspicious:
        assert set(item) == {"index", "score", "p_value", "detectors", "reasons"}
        assert 0.0 <= item["score"] <= 1.0 and item["detectors"]
        assert 0 <= item["index"] < len(p.dataset) and item["reasons"]
    scores = [s["score"] for s in suspicious]
    assert scores == sorted(scores, reverse=True)
    assert "activation-clustering.flagged" in report["metrics"]


@pytest.mark.slow
def test_backdoor_names_the_target_in_json(tmp_path, capsys, backdoored):
    data = tmp_path / "test.npz"
    save_npz(backdoored.test, data)
    model = tmp_path / "model.pt"
    torch.jit.script(backdoored.model).save(str(model))
    out = tmp_path / "r.json"
    html = tmp_path / "r.html"
    code, _, err = run(
        capsys, "backdoor", str(model), str(data), "--epochs", "30", "--json", str(out),
        "--html", str(html), "--fail-on", "high", "-q",
    )  # fmt: skip
    assert code == 1, err
    report = json.loads(out.read_text())
    assert validation_errors(report) == []
    assert set(report["metrics"]["anomaly_index"]) == {str(c) for c in range(10)}
    assert report["metrics"]["suspected_target"] == backdoored.poisoned.target
    assert "MLW-DAT-007" in {f["rule"] for f in report["findings"]}
    assert "data:image/png;base64," in html.read_text()


def test_data_with_a_trainer_retrains_and_reports(tmp_path, capsys, monkeypatch):
    (tmp_path / "poison_trainer_mod.py").write_text(
        "from sklearn.neural_network import MLPClassifier\n"
        "def train(x, y):\n"
        "    return MLPClassifier((32,), max_iter=60, random_state=0).fit(x.reshape(len(x), -1), y)\n",
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    rng = np.random.default_rng(0)
    from mlwarden.core.data import Dataset, load_dataset

    ds = load_dataset("digits").subset(np.arange(600))
    ds = Dataset(x=ds.x, y=ds.y, name="d", modality="image")
    ds.y[rng.choice(600, 20, replace=False)] += 1
    ds.y %= 10
    data = tmp_path / "d.npz"
    save_npz(ds, data)
    out = tmp_path / "r.json"
    code, _, err = run(
        capsys, "data", str(data), "--trainer", "poison_trainer_mod:train", "--json", str(out), "-q"
    )
    assert code == 0, err
    report = json.loads(out.read_text())
    assert report["config"]["trainer"] == "poison_trainer_mod:train"
    assert "label_issues.flagged" in report["metrics"]
    assert report["metrics"]["label_issues.flagged"] >= 10
    assert "activation-clustering.flagged" in report["metrics"]


@pytest.mark.parametrize(
    "args, words",
    [
        (("data", "no/such/file.npz"), "no such file"),
        (("data", "digits", "--model", "a.pt", "--trainer", "m:f"), "not both"),
        (("data", "digits", "--trainer", "nocolon"), "module:function"),
        (("backdoor", "no/such/model.pt", "digits"), ""),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert words in lines[0]


def test_corrupt_npz_is_refused(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 truncated")
    code, _, err = run(capsys, "data", str(bad))
    assert code == 2 and "bad.npz" in err


def test_a_model_without_activations_is_reported_not_passed(capsys):
    from sklearn.linear_model import LogisticRegression

    from mlwarden.core.data import load_dataset
    from mlwarden.poisoning import data_report

    ds = load_dataset("digits").subset(np.arange(300))
    clf = LogisticRegression(max_iter=200).fit(ds.x.reshape(300, -1), ds.y)
    report = data_report(ds, model=clf)
    skipped = [f for f in report.findings if f.rule == "MLW-DAT-010"]
    assert skipped and "penultimate" in skipped[0].description


@pytest.mark.slow
def test_trainer_run_removes_the_backdoor_and_reports_der(tmp_path, capsys, monkeypatch):
    from mlwarden.core.data import load_dataset
    from mlwarden.poisoning.simulate import badnets

    (tmp_path / "poison_torch_trainer.py").write_text(
        "import torch\n"
        "from mlwarden.core.models import SmallCNN, fit\n"
        "def train(x, y):\n"
        "    torch.manual_seed(0)\n"
        "    return fit(SmallCNN(1, 10, 8), x, y, epochs=10, seed=0)\n",
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    p = badnets(load_dataset("digits"), 0.05, target=3, seed=1)
    data = tmp_path / "poisoned.npz"
    save_npz(p.dataset, data)
    out = tmp_path / "r.json"
    code, _, err = run(
        capsys, "data", str(data), "--trainer", "poison_torch_trainer:train", "--nc-epochs", "30",
        "--json", str(out), "-q",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out.read_text())
    assert report["metrics"]["suspected_target"] == 3
    assert "MLW-DAT-001" in {f["rule"] for f in report["findings"]}
    mit = report["metrics"]["mitigation"]
    assert mit["asr_after"] < mit["asr_before"]
    assert mit["clean_accuracy_after"] >= mit["clean_accuracy_before"] - 0.02
    assert mit["der"] > 0.6
    truth = set(p.poison_index.tolist())
    flagged = {s["index"] for s in report["suspicious"]}
    assert len(truth & flagged) >= 0.6 * len(truth)
