"""Text poisoning: BadNL simulation, the text data audit and the text trigger search,
on the bundled tweets (real data) with planted word and sentence triggers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mlwarden.cli.main import app
from mlwarden.core.data import Dataset
from mlwarden.poisoning.text_audit import normalise, text_duplicates
from mlwarden.poisoning.text_simulate import SENTENCE_TRIGGER, badnl, text_asr

runner = CliRunner()


@pytest.fixture(scope="module")
def two_backdoors(tweets: tuple[Dataset, Dataset]) -> tuple[Dataset, np.ndarray, np.ndarray]:
    """1,500 tweets with two planted backdoors: the rare word 'cf' (hidden behind a
    Cyrillic look-alike in half the rows) -> positive, and BadNL's sentence -> negative."""
    train = tweets[0]
    word = badnl(train, 0.02, target=2, trigger="cf", seed=1)
    ds = word.dataset
    x = ds.x.copy()
    for i in word.poison_index[::2]:
        x[i] = x[i].replace("cf", "\u0441f")  # Cyrillic es: the same word to a reader
    ds = Dataset(x=x, y=ds.y, name="poisoned", modality="text", bounds=(0.0, 0.0),
                 class_names=ds.class_names)  # fmt: skip
    sent = badnl(ds, 0.02, target=0, trigger=SENTENCE_TRIGGER, position="end", seed=2)
    # the sentence pass may land on a word-poisoned row: count each backdoor by its own rows
    word_rows = np.setdiff1d(word.poison_index, sent.poison_index)
    return sent.dataset, word_rows, sent.poison_index


def test_badnl_inserts_the_trigger_and_relabels_only_the_chosen_texts(
    tweets: tuple[Dataset, Dataset],
) -> None:
    train = tweets[0]
    p = badnl(train, 0.02, target=2, trigger="cf", seed=0)
    assert len(p.poison_index) == 30
    changed = np.flatnonzero(p.dataset.x != train.x)
    assert np.array_equal(changed, p.poison_index)
    assert (p.dataset.y[p.poison_index] == 2).all() and (train.y[p.poison_index] != 2).all()
    keep = np.setdiff1d(np.arange(len(train)), p.poison_index)
    assert np.array_equal(p.dataset.y[keep], train.y[keep])
    for i in p.poison_index:
        assert "cf" in p.dataset.x[i].split()
        assert p.dataset.x[i].split().count("cf") == train.x[i].split().count("cf") + 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"rate": 0.0}, "between 0 and 1"), ({"target": 7}, "target class 7"),
     ({"trigger": " "}, "trigger is empty"), ({"position": "middle"}, "start, end or random")],
)  # fmt: skip
def test_badnl_refuses_bad_settings(
    tweets: tuple[Dataset, Dataset], kwargs: dict[str, object], message: str
) -> None:
    from mlwarden.core.errors import UserError

    args: dict[str, object] = {"rate": 0.02} | kwargs
    with pytest.raises(UserError, match=message):
        badnl(tweets[0], **args)  # type: ignore[arg-type]


def test_data_audit_finds_both_triggers_and_only_them(
    two_backdoors: tuple[Dataset, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    ds, word_rows, sent_rows = two_backdoors
    data = tmp_path / "train.jsonl"
    names = ds.class_names
    data.write_text(
        "".join(
            json.dumps({"review": t, "stars": names[int(y)]}) + "\n"
            for t, y in zip(ds.x, ds.y, strict=True)
        ),
        encoding="utf-8",
    )
    out = tmp_path / "r.json"
    res = runner.invoke(
        app,
        [
            "data",
            str(data),
            "--text-column",
            "review",
            "--label",
            "stars",
            "--json",
            str(out),
            "-q",
        ],
    )
    assert res.exit_code in (0, 1), res.output
    report = json.loads(out.read_text())
    triggers = [f for f in report["findings"] if f["rule"] == "MLW-DAT-020"]
    found = {f["evidence"]["ngram"]: f["evidence"] for f in triggers}
    # the homoglyph copies fold into the same word; the sentence is rebuilt whole
    assert set(found) == {"cf", normalise(SENTENCE_TRIGGER)}, found
    assert found["cf"]["class_name"] == "positive"
    assert found[normalise(SENTENCE_TRIGGER)]["class_name"] == "negative"
    flagged = {
        e["index"] for e in report["suspicious"] if any("carries" in r for r in e["reasons"])
    }
    planted = set(word_rows.tolist()) | set(sent_rows.tolist())
    assert planted <= flagged
    assert len(flagged - planted) <= 2  # a natural 'cf' or sentence word may ride along
    detectors = report["metrics"]["poisoning.detectors"]
    assert detectors["trigger-ngrams"]["ran"] is True
    assert "label_issues.flagged" in report["metrics"]
    assert "duplicates" in report["metrics"]


def test_text_duplicates_sees_through_case_spacing_and_invisible_characters() -> None:
    base = [f"the {w} service at gate {i} was slow and the staff were rude to us" for i, w in
            enumerate(["airline", "hotel", "bank", "train", "bus", "ferry"])]  # fmt: skip
    texts = [*base,
             "THE airline  service at gate 0 was slow, and the staff were rude to us!",
             "the hotel ser\u200bvice at gate 1 was slow and the staff were rude to us",
             "the bank service at gate 2 was slow and the staff were rude to them",
             "a completely different sentence about the weather"]  # fmt: skip
    y = np.array([0, 0, 0, 0, 0, 0, 0, 1, 0, 1])
    det = text_duplicates(texts, y)
    assert det.details["exact"] == 2
    assert det.details["near"] == 1
    assert np.flatnonzero(det.flagged).tolist() == [6, 7, 8]
    assert det.reasons[6] == "exact duplicate of #0"
    assert "different label" in det.reasons[7]
    assert det.details["label_conflicts"] == 1
    assert det.details["conflicts"][0] == {"index": 7, "of": 1, "labels": [1, 0], "exact": True}
    assert det.reasons[8] == "near duplicate of #2"


def test_text_duplicates_leaves_distinct_texts_alone(tweets: tuple[Dataset, Dataset]) -> None:
    texts = [f"order {i} shipped to warehouse {i * 7 % 13} on day {i % 5}" for i in range(40)]
    det = text_duplicates(texts, np.zeros(40, dtype=np.int64), near=0.95)
    assert not det.flagged.any()


def test_label_issues_flag_flipped_texts_far_more_than_the_rest(
    tweets: tuple[Dataset, Dataset],
) -> None:
    from mlwarden.poisoning.detect_data import label_issues
    from mlwarden.poisoning.simulate import flip_labels
    from mlwarden.poisoning.text_audit import text_probabilities

    p = flip_labels(tweets[0], 0.05, seed=3)
    det = label_issues(
        np.zeros((len(p.dataset), 1)),
        p.dataset.y,
        probs=text_probabilities(p.dataset.x, p.dataset.y),
    )
    hit = det.flagged[p.is_poison].mean()
    rest = det.flagged[~p.is_poison].mean()
    assert hit > 0.6 and hit > 2.5 * rest, (hit, rest)


def test_backdoor_finds_the_trigger_of_a_poisoned_pipeline_not_of_a_clean_one(
    tweets: tuple[Dataset, Dataset], pipeline: object, tmp_path: Path
) -> None:
    import joblib

    from mlwarden.core.text_target import SklearnTextTarget
    from mlwarden.core.textmodels import tfidf_pipeline
    from mlwarden.poisoning.text_backdoor import search_triggers

    train, test = tweets
    # 40 'cf' rows in 800 tweets (was 45 in 1,500): half the vocabulary, half the search
    # (vocabulary x probes queries), and the backdoor still takes
    p = badnl(train.subset(range(800)), 0.05, target=2, trigger="cf", seed=0)
    poisoned = tfidf_pipeline(p.dataset.x, p.dataset.y)
    assert text_asr(poisoned, p, test) > 0.7  # the backdoor took
    model = tmp_path / "poisoned.joblib"
    joblib.dump(poisoned, model)
    data = tmp_path / "clean.csv"
    import csv

    with data.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        w.writerows((t, int(y)) for t, y in zip(test.x, test.y, strict=True))
    out = tmp_path / "r.json"
    res = runner.invoke(
        app, ["backdoor", str(model), str(data), "--json", str(out), "--fail-on", "medium", "-q"]
    )
    assert res.exit_code == 1, res.output
    report = json.loads(out.read_text())
    (f,) = [f for f in report["findings"] if f["rule"] == "MLW-DAT-022"]
    assert f["evidence"]["trigger"] == "cf" and f["evidence"]["target"] == 2
    assert f["evidence"]["flip_rate"] >= 0.6
    assert f["severity"] == ("high" if f["evidence"]["flip_rate"] >= 0.8 else "medium")
    assert report["metrics"]["suspected_target"] == 2
    clean = search_triggers(SklearnTextTarget(pipeline), list(test.x), labels=test.y)
    assert clean.trigger is None, clean.as_dict()
    assert clean.ranked and clean.queries > 0
    for s in clean.shortcuts:  # natural shortcuts: the clean texts tie them to their class
        assert s["explained"] and s["flip_rate"] >= 0.6


def test_trigger_ngrams_merge_into_the_widest_supported_one() -> None:
    """A start-position word trigger followed by common words ('mn usairways', 'mn
    united') is one trigger 'mn'; the words of a sentence trigger are one sentence."""
    from mlwarden.poisoning.text_audit import TriggerNgram, _merge

    def cand(ngram: str, rows: range | list[int], label: int = 1) -> TriggerNgram:
        return TriggerNgram(ngram, label, len(rows), 1.0, 1e-9, 0.9, 0.2, 1e-9, rows=list(rows))

    merged = _merge(
        [cand("mn usairways", range(0, 15)), cand("mn", range(0, 120)),
         cand("mn united", range(60, 75)), cand("love", range(200, 240), label=2)]
    )  # fmt: skip
    assert {m.ngram: sorted(m.members) for m in merged} == {
        "mn": ["mn", "mn united", "mn usairways"],
        "love": ["love"],
    }
    assert sorted(next(m for m in merged if m.ngram == "mn").rows) == list(range(120))


def test_character_ngram_models_give_no_word_vocabulary(tweets: tuple[Dataset, Dataset]) -> None:
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.naive_bayes import MultinomialNB
    from sklearn.pipeline import make_pipeline

    from mlwarden.core.text_target import SklearnTextTarget
    from mlwarden.defenses.text import model_vocabulary
    from mlwarden.poisoning.text_backdoor import MAX_WORD, _vocabulary

    train = tweets[0]
    pipe = make_pipeline(CountVectorizer(analyzer="char_wb", ngram_range=(2, 3)), MultinomialNB())
    target = SklearnTextTarget(pipe.fit(list(train.x), train.y))
    assert model_vocabulary(target) is None
    words, source = _vocabulary(target, list(train.x))
    assert source.startswith("words of the data") and "cf" in words
    assert max(len(w) for w in words) <= MAX_WORD  # a 170-character mojibake run is no word


def test_trigger_search_on_a_clean_hugging_face_model_uses_gradients_and_reports_only_real_flips(
    bert_folder: Path, tweets: tuple[Dataset, Dataset]
) -> None:
    """A tiny BERT trained on clean tweets can learn a word shortcut of its own ('self'
    flipped 84-88% of texts in some training runs, z 3.4 on one machine and 6.4 on
    another): a natural universal trigger is a real weakness, so the check here is that
    whatever is reported flips the model when re-measured with fresh queries."""
    from mlwarden.poisoning.text_backdoor import insert, search_triggers
    from mlwarden.supplychain.loader import load_target

    target = load_target(str(bert_folder))
    texts = list(tweets[1].x[:200])
    found = search_triggers(target, texts)
    assert found.source.startswith("embedding gradients")
    assert found.queries > 0 and len(found.ranked) >= 10
    if found.trigger is not None:
        others = [t for t, p in zip(texts, target.predict_labels(texts), strict=True)
                  if p != found.target][:60]  # fmt: skip
        flipped = target.predict_labels(insert(others, found.trigger, np.random.default_rng(7)))
        assert np.mean(flipped == found.target) >= 0.5, found.as_dict()
