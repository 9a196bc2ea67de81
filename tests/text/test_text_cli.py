"""``mlwarden evasion`` on text: metrics, JSONL of adversarial texts, escaped HTML, errors;
``--save-adversarial`` on arrays (.npz)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from mlwarden.cli.main import app, main
from mlwarden.core.data import Dataset
from mlwarden.evasion.text.threat import ThreatModel

runner = CliRunner()


def _csv(path: Path, data: Dataset, n: int, extra: list[tuple[str, int]] = ()) -> Path:  # type: ignore[assignment]
    import csv

    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "body", "label"])
        for i in range(n):
            w.writerow([i, data.x[i], data.class_names[data.y[i]]])
        for j, (t, y) in enumerate(extra):
            w.writerow([n + j, t, data.class_names[y]])
    return path


def test_text_evasion_writes_metrics_jsonl_and_escaped_html(
    tmp_path: Path, pipeline_file: Path, pipeline: Any, tweets: tuple[Dataset, Dataset]
) -> None:
    evil = '<script>alert("x")</script> this flight was awful and the crew was rude'
    data = _csv(tmp_path / "d.csv", tweets[1], 30, [(evil, 0)])
    out = tmp_path / "adv.jsonl"

    res = runner.invoke(
        app,
        ["evasion", str(pipeline_file), str(data), "--text-column", "body", "--limit", "31",
         "--save-adversarial", str(out), "--json", str(tmp_path / "r.json"),
         "--html", str(tmp_path / "r.html"), "-q"],
    )  # fmt: skip

    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "r.json").read_text())
    m = report["metrics"]["evasion"]
    assert 0 <= m["robust_accuracy"] < m["clean_accuracy"] <= 1 and m["queries_median"] > 0
    assert report["findings"][0]["rule"] == "MLW-EVA-020"
    assert report["config"]["threat_model"]["max_change"] == 0.2
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert rows and {"index", "text", "adversarial", "label", "prediction"} <= set(rows[0])
    for row in rows:
        assert ThreatModel(0.2).check(row["text"], row["adversarial"]).ok
        assert row["prediction"] != row["label"]
        assert pipeline.predict([row["adversarial"]])[0] == row["prediction"]
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<mark>" in html and '<script>alert("x")' not in html


def test_default_recipes_run_as_a_cascade_and_every_query_is_counted(
    pipeline: Any, tweets: tuple[Dataset, Dataset]
) -> None:
    from mlwarden.core.text_target import SklearnTextTarget
    from mlwarden.evasion.text.report import text_evasion_report

    target = SklearnTextTarget(pipeline)
    report = text_evasion_report([target], tweets[1], limit=30)

    m = report.metrics["evasion"]
    per = next(iter(m["models"].values()))["recipes"]
    assert list(per) == ["deepwordbug", "combined"]
    correct = round(m["clean_accuracy"] * 30)
    first = round(per["deepwordbug"]["success_rate"] * correct)
    # combined attacked only the clean-correct texts deepwordbug left unbroken
    assert per["deepwordbug"]["attacked"] == 30 and per["combined"]["attacked"] == correct - first
    broken = first + round(per["combined"]["success_rate"] * correct)
    assert m["robust_accuracy"] == pytest.approx((correct - broken) / 30)
    assert per["combined"]["robust_accuracy"] == pytest.approx(m["robust_accuracy"])
    assert per["deepwordbug"]["robust_accuracy"] == pytest.approx((correct - first) / 30)
    assert 0 < broken < correct
    # a clean query per text, then the attacks' queries, all through the counting target
    assert m["queries_median"] > 0 and target.queries >= 30 + broken


def test_text_evasion_with_normalisation_reports_both_figures(
    tmp_path: Path, pipeline_file: Path, tweets: tuple[Dataset, Dataset]
) -> None:
    data = _csv(tmp_path / "d.csv", tweets[1], 20)

    res = runner.invoke(
        app,
        ["evasion", str(pipeline_file), str(data), "--text-column", "body", "--normalise",
         "--json", str(tmp_path / "r.json"), "-q"],
    )  # fmt: skip

    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "r.json").read_text())
    fig = report["metrics"]["evasion"]["defence"]
    assert {"robust_accuracy_non_adaptive", "robust_accuracy_adaptive"} <= set(fig)
    assert "MLW-EVA-021" in {f["rule"] for f in report["findings"]}


def test_bad_text_data_is_one_line_and_exit_2(
    tmp_path: Path, pipeline_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"text,label\ncaf\xe9,1\n")

    with pytest.raises(SystemExit) as exit_info:
        main(["evasion", str(pipeline_file), str(bad)])

    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "not UTF-8" in err and "bad.csv" in err and "Traceback" not in err


def test_save_adversarial_for_arrays_is_an_npz(tmp_path: Path) -> None:
    import joblib
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_breast_cancer(return_X_y=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, y)
    joblib.dump(model, tmp_path / "m.joblib")
    out = tmp_path / "adv.npz"

    res = runner.invoke(
        app,
        ["evasion", str(tmp_path / "m.joblib"), "breast-cancer", "--budget", "quick",
         "--limit", "12", "--eps", "50", "--save-adversarial", str(out), "-q"],
    )  # fmt: skip

    assert res.exit_code == 0, res.output
    with np.load(out) as npz:
        assert set(npz.files) == {"x_adv", "y", "prediction", "index"}
        assert len(npz["x_adv"]) == len(npz["y"]) == len(npz["index"]) > 0
        assert np.all(npz["prediction"] != npz["y"])
        np.testing.assert_array_equal(model.predict(npz["x_adv"]), npz["prediction"])


def test_data_audit_of_a_text_table_runs_the_sensitive_data_scan_and_the_text_checks(
    tmp_path: Path,
) -> None:
    from mlwarden.poisoning.assess import data_report

    rows = [f"text number {i} about {'good' if i % 2 else 'bad'} things" for i in range(40)]
    rows.append("mail jane.doe@example.com about it")
    path = tmp_path / "t.jsonl"
    path.write_text(
        "".join(json.dumps({"text": t, "label": i % 2}) + "\n" for i, t in enumerate(rows)),
        encoding="utf-8",
    )

    report = data_report(str(path))

    rules = {f.rule for f in report.findings}
    assert "MLW-DAT-005" in rules
    # a labelled text set gets the text checks, not 'only the sensitive-data scan ran'
    assert "MLW-DAT-010" not in rules
    assert report.metrics["poisoning.detectors"]["trigger-ngrams"]["ran"] is True
    assert report.metrics["duplicates"]["exact"] == 0
    # 'good' is pure for label 1, but the rest of its texts says nothing: not a trigger
    assert report.metrics["text_audit.triggers"] == []
    assert 40 in {e["index"] for e in report.suspicious or []}


def test_saved_texts_stay_one_per_line_whatever_characters_they_hold(tmp_path: Path) -> None:
    from mlwarden.evasion.text.report import write_jsonl

    odd = (
        "cheap\x85flights\u2028now\u2029\x0b\x0c\x1c \u200b h\u0435llo \U0001f600"  # a tweet's NEL
    )
    write_jsonl(tmp_path / "a.jsonl", [{"adversarial": odd}, {"adversarial": "plain"}])

    text = (tmp_path / "a.jsonl").read_text(encoding="utf-8")
    assert len(text.splitlines()) == 2  # no reader's line splitting cuts a row
    assert [json.loads(line)["adversarial"] for line in text.splitlines()] == [odd, "plain"]
