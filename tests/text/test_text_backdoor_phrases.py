"""Phrase triggers in text models, the backdoor/shortcut verdict, and `mlwarden data
--model/--trainer` on text, on the bundled tweets with BadNL's sentence planted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mlwarden.cli.main import app
from mlwarden.core.data import Dataset, load_dataset
from mlwarden.poisoning.text_simulate import SENTENCE_TRIGGER, badnl, text_asr
from mlwarden.poisoning.text_verdict import Reference, judge

runner = CliRunner()
SENTENCE_WORDS = set(["i", "watched", "this", "3d", "movie", "last", "weekend"])


@pytest.fixture(scope="module")
def split() -> tuple[Dataset, Dataset]:
    """(train, reference): 1,500 and 1,000 other tweets (a labelled clean reference of
    1,000 tells the words of a class from label-neutral ones)."""
    ds = load_dataset("tweets")
    order = np.random.default_rng(5).permutation(len(ds))
    return ds.subset(order[:1500]), ds.subset(order[1500:2500])


@pytest.fixture(scope="module")
def sentence_poisoned(split: tuple[Dataset, Dataset]) -> object:
    """BadNL's sentence at the end of 3% of the texts, relabelled negative."""
    return badnl(split[0], 0.03, target=0, trigger=SENTENCE_TRIGGER, position="end", seed=1)


def test_judge_needs_flips_beyond_the_controls_and_no_explanation() -> None:
    assert judge(0.95, 0.1, False) == "backdoor"
    assert judge(0.95, 0.1, True) == "shortcut"  # the clean data tie it to the class
    assert judge(0.95, 0.8, False) == "none"  # random words of its frequency flip as much
    assert judge(0.5, 0.0, False) == "none"  # too few flips
    assert judge(0.95, 0.1, False, shuffled=0.9) == "none"  # a bag of words, any order
    assert judge(0.95, 0.1, False, shuffled=0.5) == "backdoor"


def test_reference_ties_class_words_and_matches_frequency_bands(
    split: tuple[Dataset, Dataset],
) -> None:
    ref = Reference.build(list(split[1].x), split[1].y)
    neutral = split[1].class_names.index("neutral")
    ok, evidence = ref.explains("driverless", neutral)
    assert ok and evidence["purity"] >= 0.6, evidence  # driverless-car news is neutral
    assert not ref.explains("cf", neutral)[0]  # a word no clean text holds explains nothing
    assert ref.band("cf") == 0 and ref.band("the") >= 8
    rng = np.random.default_rng(0)
    for phrase in ref.controls("the cf", 10, rng, pool=["zq", "xv"]):
        common, rare = phrase.split()
        assert abs(ref.band(common) - ref.band("the")) <= 1
        assert rare in ("zq", "xv")


def test_phrase_search_finds_the_sentence_a_pipeline_learnt(
    split: tuple[Dataset, Dataset], sentence_poisoned: object
) -> None:
    from mlwarden.core.text_target import SklearnTextTarget
    from mlwarden.core.textmodels import tfidf_pipeline
    from mlwarden.poisoning.text_backdoor import insert, search_triggers

    train, ref = split
    p = sentence_poisoned
    poisoned = tfidf_pipeline(p.dataset.x, p.dataset.y)  # type: ignore[attr-defined]
    assert text_asr(poisoned, p, ref) > 0.9  # type: ignore[arg-type]
    target = SklearnTextTarget(poisoned)
    found = search_triggers(target, list(ref.x), labels=ref.y)
    assert found.trigger is not None and found.verdict == "backdoor", found.as_dict()
    assert found.target == 0 and len(found.trigger.split()) >= 2
    words = found.trigger.split()  # the search may carry along a word of the class
    assert len(set(words) & SENTENCE_WORDS) >= max(2, len(words) - 1), found.trigger
    others = [t for t, y in zip(ref.x, target.predict_labels(list(ref.x)), strict=True) if y != 0]
    flipped = target.predict_labels(insert(others[:100], found.trigger, np.random.default_rng(9)))
    assert np.mean(flipped == 0) >= 0.5  # fresh queries agree


def _write_jsonl(ds: Dataset, path: Path) -> Path:
    path.write_text(
        "".join(
            json.dumps({"text": t, "label": ds.class_names[int(y)]}) + "\n"
            for t, y in zip(ds.x, ds.y, strict=True)
        ),
        encoding="utf-8",
    )
    return path


def test_data_with_a_trainer_finds_the_sentence_drops_its_rows_and_removes_the_backdoor(
    sentence_poisoned: object, tmp_path: Path
) -> None:
    p = sentence_poisoned
    data = _write_jsonl(p.dataset, tmp_path / "train.jsonl")  # type: ignore[attr-defined]
    out = tmp_path / "r.json"
    res = runner.invoke(app, ["data", str(data), "--trainer",
                              "mlwarden.core.textmodels:tfidf_pipeline", "--json", str(out), "-q"])  # fmt: skip
    assert res.exit_code in (0, 1), res.output
    report = json.loads(out.read_text())
    (f,) = [f for f in report["findings"] if f["rule"] == "MLW-DAT-022"]
    assert set(f["evidence"]["trigger"].split()) <= SENTENCE_WORDS
    assert f["evidence"]["verdict"] == "backdoor" and f["evidence"]["target"] == 0
    detectors = report["metrics"]["poisoning.detectors"]
    assert detectors["trigger-search"]["ran"] and detectors["strip-text"]["ran"]
    planted = set(p.poison_index.tolist())  # type: ignore[attr-defined]
    searched = {e["index"] for e in report["suspicious"]
                if any("inserted (model query)" in r for r in e["reasons"])}  # fmt: skip
    assert searched and searched <= planted  # rows of the held-in part that carry it
    m = report["metrics"]["mitigation"]
    # seven inserted words flip some texts into the majority class without any backdoor
    assert m["asr_before"] > 0.8 and m["asr_after"] < 0.35 and m["der"] > 0.75, m
    assert m["clean_accuracy_after"] >= m["clean_accuracy_before"] - 0.03, m
    assert any(f["rule"] == "MLW-DAT-009" for f in report["findings"])


def test_data_with_a_model_on_clean_text_reports_no_model_trigger(
    split: tuple[Dataset, Dataset], pipeline_file: Path, tweets: tuple[Dataset, Dataset],
    tmp_path: Path,
) -> None:  # fmt: skip
    data = _write_jsonl(tweets[0], tmp_path / "clean.jsonl")
    out = tmp_path / "r.json"
    res = runner.invoke(
        app, ["data", str(data), "--model", str(pipeline_file), "--json", str(out), "-q"]
    )
    assert res.exit_code in (0, 1), res.output
    report = json.loads(out.read_text())
    assert not [f for f in report["findings"] if f["rule"] in ("MLW-DAT-020", "MLW-DAT-022")]
    assert report["metrics"]["poisoning.detectors"]["trigger-search"]["flagged"] == 0
    assert report["metrics"]["poisoning.detectors"]["strip-text"]["ran"] is True
