"""Membership inference and extraction on text models: the bundled tweets with a TF-IDF
pipeline, and a differently built set (Python standard-library docstrings by package)
with a character n-gram linear SVM that has no scores at all (label-only by itself)."""

from __future__ import annotations

import csv
import inspect
import json
from pathlib import Path

import joblib
import numpy as np
import pytest

from mlwarden.cli.main import main
from mlwarden.core.data import Dataset, load_dataset
from mlwarden.core.text_target import SklearnTextTarget
from mlwarden.privacy import extract_report, privacy_report


def _csv(path: Path, ds: Dataset, text: str = "text", label: str = "label") -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow([text, label])
        for t, y in zip(ds.x, ds.y, strict=True):
            w.writerow([t, ds.class_names[y] if ds.class_names else y])
    return path


@pytest.fixture(scope="module")
def tweets3() -> tuple[Dataset, Dataset, Dataset]:
    """(train 150, holdout 150, pool 300) tweets drawn at random."""
    ds = load_dataset("tweets")
    order = np.random.default_rng(1).permutation(len(ds))
    return ds.subset(order[:150]), ds.subset(order[150:300]), ds.subset(order[300:600])


@pytest.fixture(scope="module")
def tweet_files(tweets3, tmp_path_factory):  # type: ignore[no-untyped-def]
    from mlwarden.core.textmodels import tfidf_pipeline

    root: Path = tmp_path_factory.mktemp("privacy-text")
    train, holdout, pool = tweets3
    joblib.dump(tfidf_pipeline(train.x, train.y, c=50.0), root / "pipe.joblib")
    for name, ds in (("train", train), ("holdout", holdout), ("pool", pool)):
        _csv(root / f"{name}.csv", ds)
    return root


def cli(*args: str) -> int:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    return int(exc.value.code or 0)


def test_privacy_cli_on_a_text_pipeline_clones_it_for_shadows(tweet_files, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tweet_files / "p.json"
    code = cli(
        "privacy", str(tweet_files / "pipe.joblib"), "--train", str(tweet_files / "train.csv"),
        "--holdout", str(tweet_files / "holdout.csv"), "--shadows", "4", "--json", str(out), "-q",
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    data = json.loads(out.read_text())
    assert data["metrics"]["attack"] == "lira" and data["metrics"]["access"] == "score"
    assert data["config"]["recipe"].startswith("sklearn.clone(Pipeline")
    # C=50 on 150 tweets memorises its training set: LiRA must see it
    assert data["metrics"]["auc"] > 0.7
    assert data["metrics"]["pooled"]["auc"] > 0.7


def test_extract_cli_on_a_text_pipeline_beats_guessing(tweet_files, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tweet_files / "e.json"
    code = cli(
        "extract", str(tweet_files / "pipe.joblib"), "--pool", str(tweet_files / "pool.csv"),
        "--budget", "60,200", "--json", str(out), "-q",
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    m = json.loads(out.read_text())["metrics"]
    assert m["queries"] == {"60": 60, "200": 200}
    assert "equation_solving" not in m  # not linear in raw text
    # agreement with the victim above what always answering its commonest label gets
    pipe = joblib.load(tweet_files / "pipe.joblib")
    held = load_dataset(str(tweet_files / "pool.csv"))
    victim = pipe.predict(list(held.x))
    baseline = np.bincount(victim).max() / len(victim)
    assert m["fidelity"]["200"] > baseline + 0.05


def _docstrings() -> Dataset:
    """First docstring sentences of three standard-library packages, labelled by package:
    a text set built differently from the tweets (other source, lengths, vocabulary)."""
    import email
    import json as json_mod
    import xml.dom.minidom
    import xml.etree.ElementTree

    packages = {
        "email": [email],
        "json": [json_mod],
        "xml": [xml.dom.minidom, xml.etree.ElementTree],
    }
    import email.message
    import email.utils
    import json.decoder
    import json.encoder

    packages["email"] += [email.message, email.utils]
    packages["json"] += [json.decoder, json.encoder]
    texts, labels = [], []
    for label, (_name, mods) in enumerate(sorted(packages.items())):
        for mod in mods:
            for _n, obj in inspect.getmembers(mod):
                doc = inspect.getdoc(obj) if callable(obj) else None
                if doc and obj.__module__ == mod.__name__:
                    for line in doc.split("\n\n"):
                        line = " ".join(line.split())
                        if 20 <= len(line) <= 400:
                            texts.append(line)
                            labels.append(label)
    x = np.asarray(texts, dtype=object)
    return Dataset(
        x=x, y=np.asarray(labels, np.int64), name="docstrings", modality="text",
        class_names=sorted(packages),
    )  # fmt: skip


def test_label_only_text_model_gets_label_only_privacy_and_extraction() -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import LinearSVC

    ds = _docstrings()
    assert len(ds) >= 120 and len(set(ds.y.tolist())) == 3
    order = np.random.default_rng(0).permutation(len(ds))
    half = len(ds) // 2
    train, rest = ds.subset(order[:half]), ds.subset(order[half:])
    svm = make_pipeline(
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4)), LinearSVC(C=10.0)
    ).fit(list(train.x), train.y)
    target = SklearnTextTarget(svm)
    assert target.access == "label"  # no predict_proba: labels are all it gives
    report = privacy_report(target, train, rest, seed=0)
    assert report.metrics["attack"] == "label-only" and report.metrics["access"] == "label"
    assert report.metrics["auc"] > 0.55  # members survive word noise more often
    ext = extract_report(SklearnTextTarget(svm), rest, budgets=(80,), seed=0)
    assert ext.metrics["access"] == "label" and ext.metrics["queries"] == {"80": 80}
    assert not ext.metrics["curves"]["pool"]["soft"]


def test_demo_audits_the_text_model_for_membership(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from types import SimpleNamespace

    from mlwarden.privacy.demo import text_privacy

    report = text_privacy(SimpleNamespace(out_dir=tmp_path, seed=0))  # type: ignore[arg-type]
    assert report.metrics["attack"] == "lira" and report.metrics["access"] == "score"
    assert report.data["train"]["modality"] == "text"
    assert any(f.rule == "MLW-PRV-001" for f in report.findings)
    assert (tmp_path / "artifacts" / "tweets_privacy_tfidf.joblib").is_file()


def test_output_hardening_wraps_a_text_model_without_coercing_its_texts(
    tweet_files, tweets3
) -> None:  # type: ignore[no-untyped-def]
    from mlwarden.privacy.defend import HARDENING, hardened_target

    target = SklearnTextTarget(joblib.load(tweet_files / "pipe.joblib"))
    texts = tweets3[1].x[:20]
    plain = target.predict_labels(texts)
    for _label, mode, kw in HARDENING:
        hardened = hardened_target(target, mode, **kw)
        assert (hardened.predict_labels(texts) == plain).all(), mode  # same decisions
