"""Text attacks: the threat model, candidates, the search, query counting, white-box HotFlip."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlwarden.core.data import Dataset
from mlwarden.core.text_target import SklearnTextTarget
from mlwarden.evasion.text.attack import attack_texts
from mlwarden.evasion.text.threat import ThreatModel, edit_distance, words
from mlwarden.evasion.text.transforms import INVISIBLE, char_candidates, synonym_candidates
from mlwarden.supplychain.loader import load_target


def test_threat_model_accepts_synonyms_and_small_edits_only() -> None:
    tm = ThreatModel(max_change=0.2)
    base = "the movies were great fun for all of us"  # 9 words: budget 1

    assert tm.check(base, "the films were great fun for all of us").ok  # inflected synonym
    assert tm.check(base, "the movies were gr\u0435at fun for all of us").ok  # homoglyph
    assert tm.check(base, "the movies were gr\u200beat fun for all of us").ok  # invisible
    assert tm.check(base, "the movies were graet fun for all of us").ok  # swap = 1 edit
    assert not tm.check(base, "the movies were awful fun for all of us").ok  # antonym
    assert not tm.check(base, "the films were graet fun for all of us").ok  # 2 words > budget
    assert not tm.check(base, "the movies were great fun for all").ok  # word deleted
    assert not tm.check(base, "the movies were gr eat fun for all of us").ok  # word inserted
    assert not tm.check(base, "the movies were grxxxt fun for all of us").ok  # 3 edits
    assert tm.budget(9) == 1 and tm.budget(10) == 2 and tm.budget(2) == 1


def test_edit_distance_is_optimal_string_alignment() -> None:
    assert edit_distance("great", "graet") == 1
    assert edit_distance("great", "grt") == 2
    assert edit_distance("abc", "xyz", cap=3) == 3
    assert edit_distance("", "ab") == 2


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC", min_size=2, max_size=12))
def test_every_character_candidate_is_within_the_threat_model(word: str) -> None:
    tm = ThreatModel()
    cands = char_candidates(word)

    assert cands and all(tm.word_ok(word, c) for c in cands)
    assert all(len(words(c)) == 1 for c in cands)


def test_candidates_include_homoglyphs_invisibles_and_inflected_synonyms() -> None:
    cands = char_candidates("terrible")
    assert any(ch in c for c in cands for ch in INVISIBLE)
    assert any(not c.isascii() for c in cands if not any(ch in c for ch in INVISIBLE))
    assert "films," in synonym_candidates("movies,")
    assert "Good" not in synonym_candidates("Good") and synonym_candidates("Good")[0][0].isupper()


def _sample(data: Dataset, n: int) -> tuple[list[str], np.ndarray]:
    return list(data.x[:n]), data.y[:n]


@pytest.mark.parametrize("recipe", ["combined", "pwws", "deepwordbug", "textfooler"])
def test_attack_breaks_a_tfidf_pipeline_and_every_success_is_valid(
    pipeline: Any, tweets: tuple[Dataset, Dataset], recipe: str
) -> None:
    texts, y = _sample(tweets[1], 40)
    target = SklearnTextTarget(pipeline)
    tm = ThreatModel(max_change=0.2)

    res = attack_texts(target, texts, y, recipe=recipe, threat=tm)

    assert res.success.sum() >= 5
    assert target.queries == int(res.queries.sum())  # every text sent is counted once
    for k in np.nonzero(res.success)[0]:
        assert tm.check(texts[k], res.adversarial[k]).ok
        assert pipeline.predict([res.adversarial[k]])[0] != y[k]  # an independent query
        assert res.adv_pred[k] != y[k] and res.clean_pred[k] == y[k]
    unbroken = ~res.success
    assert all(res.adversarial[k] == texts[k] for k in np.nonzero(unbroken)[0])
    assert res.robust_accuracy == pytest.approx(np.mean((res.clean_pred == y) & ~res.success))


def test_combined_is_at_least_as_strong_as_either_family(
    pipeline: Any, tweets: tuple[Dataset, Dataset]
) -> None:
    texts, y = _sample(tweets[1], 40)
    rates = {
        r: attack_texts(SklearnTextTarget(pipeline), texts, y, recipe=r).success.sum()
        for r in ("combined", "pwws", "deepwordbug")
    }

    assert rates["combined"] >= max(rates["pwws"], rates["deepwordbug"]) - 1


def test_per_sample_query_budget_is_respected(
    pipeline: Any, tweets: tuple[Dataset, Dataset]
) -> None:
    texts, y = _sample(tweets[1], 20)
    res = attack_texts(SklearnTextTarget(pipeline), texts, y, max_queries=30)

    # deletion ranking may exceed a tiny budget by the words of one text, the last step never
    assert all(q <= max(30, len(words(t)) + 1) + 1 for q, t in zip(res.queries, texts, strict=True))


def test_label_only_access_still_finds_valid_successes(
    pipeline: Any, tweets: tuple[Dataset, Dataset]
) -> None:
    texts, y = _sample(tweets[1], 30)
    target = SklearnTextTarget(pipeline, access="label")
    res = attack_texts(target, texts, y)

    for k in np.nonzero(res.success)[0]:
        assert ThreatModel().check(texts[k], res.adversarial[k]).ok
        assert pipeline.predict([res.adversarial[k]])[0] != y[k]


def test_hotflip_uses_gradients_and_reports_valid_successes(
    bert_folder: Path, tweets: tuple[Dataset, Dataset]
) -> None:
    target = load_target(str(bert_folder))
    texts, y = _sample(tweets[1], 16)

    res = attack_texts(target, texts, y, recipe="hotflip", hotflip_top=4)

    assert target.queries == int(res.queries.sum())
    assert res.success.any()
    for k in np.nonzero(res.success)[0]:
        assert ThreatModel().check(texts[k], res.adversarial[k]).ok


def test_a_text_that_is_already_misclassified_is_not_counted(
    pipeline: Any, tweets: tuple[Dataset, Dataset]
) -> None:
    texts, y = _sample(tweets[1], 20)
    wrong = (pipeline.predict(texts) + 1) % 3
    res = attack_texts(SklearnTextTarget(pipeline), texts, wrong)

    assert not res.success.any() and res.clean_accuracy == 0.0


def test_wordnet_index_is_built_from_the_database_files_and_read_back(tmp_path: Path) -> None:
    """A three-synset database in WordNet's file format: offsets, adjective markers,
    exception lists and suffix rules give what NLTK's reader gives."""
    import sqlite3

    from mlwarden.evasion.text import wordnet as wn

    src = tmp_path / "wn"
    src.mkdir()
    files = {
        "index.noun": "  1 licence header\nfilm n 1 0 1 0 00000100\nmovie n 1 0 1 0 00000100\n"
        "goose n 1 0 1 0 00000200\n",
        "data.noun": "  1 licence header\n00000100 10 n 02 film 0 movie 0 000 | a motion picture\n"
        "00000200 05 n 01 goose 0 000 | a bird\n",
        "index.adj": "good a 1 0 1 0 00000300\n",
        "data.adj": "00000300 00 a 02 good(a) 0 estimable(p) 0 000 | fine\n",
        "noun.exc": "geese goose\n",
    }
    for name in (
        "index.verb",
        "data.verb",
        "index.adv",
        "data.adv",
        "verb.exc",
        "adj.exc",
        "adv.exc",
    ):
        files.setdefault(name, "")
    for name, text in files.items():
        (src / name).write_bytes(text.replace("\n", "\r\n").encode())  # CRLF, as wn ships them
    data = wn.build_index(src)
    assert data["index"]["movie"] == {"n": [100]}
    assert data["words"]["a"]["300"] == ["good", "estimable"]  # markers dropped
    assert data["exceptions"]["n"]["geese"] == ["goose"]
    path = tmp_path / "index.sqlite"
    wn._write(data, path)
    con = sqlite3.connect(path)
    assert (
        con.execute("SELECT value FROM meta WHERE key='source_sha256'").fetchone()[0]
        == (data["source_sha256"])
    )
    assert con.execute("SELECT names FROM words WHERE pos='n' AND offset=100").fetchone()[0] == (
        '["film", "movie"]'
    )


def test_wordnet_lookups_match_wordnet_relations() -> None:
    from mlwarden.evasion.text.wordnet import lemmas, morphy, share_synset, synonyms

    assert share_synset("movies", "films") and not share_synset("movie", "goose")
    assert ("goose", "n") in lemmas("geese")  # exception list
    assert morphy("running", "v") == ["run"]  # as nltk wordnet._morphy
    assert "estimable" in synonyms("good") and "good" not in synonyms("good")
