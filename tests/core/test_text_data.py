"""Text data loaders and the modality table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mlwarden.core import modality
from mlwarden.core.data import load_dataset
from mlwarden.core.errors import InputFileError, UserError
from mlwarden.core.textdata import MAX_TEXT_CHARS, load_text_dataset


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(exc.value)
    assert text.strip() and "\n" not in text
    return text


def test_csv_tsv_jsonl_and_folder_give_the_same_dataset(tmp_path: Path) -> None:
    rows = [("a fine film, truly", "pos"), ('he said "awful"\tthen left', "neg"), ("ok", "pos")]
    (tmp_path / "d.csv").write_text(
        "id,text,label\n"
        + "".join(
            f'{i},"{t.replace(chr(34), 2 * chr(34))}",{lab}\n' for i, (t, lab) in enumerate(rows)
        ),
        encoding="utf-8",
    )
    (tmp_path / "d.jsonl").write_text(
        "".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows), encoding="utf-8"
    )
    for i, (t, lab) in enumerate(rows):
        (tmp_path / "folder" / lab).mkdir(parents=True, exist_ok=True)
        (tmp_path / "folder" / lab / f"{i}.txt").write_text(t, encoding="utf-8")

    csv_ds = load_dataset(tmp_path / "d.csv")
    jsonl_ds = load_dataset(tmp_path / "d.jsonl")
    folder_ds = load_dataset(tmp_path / "folder")

    for ds in (csv_ds, jsonl_ds, folder_ds):
        assert ds.modality == "text" and ds.class_names == ["neg", "pos"]
        assert sorted(zip(ds.x.tolist(), ds.y.tolist(), strict=True)) == sorted(
            (t, ["neg", "pos"].index(lab)) for t, lab in rows
        )
    assert csv_ds.x.dtype == object and csv_ds.x[1] == rows[1][0]


def test_named_columns_and_tsv(tmp_path: Path) -> None:
    path = tmp_path / "d.tsv"
    path.write_text("review\tstars\nlovely place\t5\nnever again\t1\n", encoding="utf-8")

    ds = load_dataset(path, text_column="review", label="stars")

    assert ds.modality == "text" and ds.x.tolist() == ["lovely place", "never again"]
    assert ds.y.tolist() == [5, 1]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"text,label\ncaf\xe9 au lait,1\n", r"line 2, byte 3: not UTF-8"),
        (b"text,label\n   ,1\n", "row 2: the text is empty"),
        (b"words,label\nhello,1\n", r"no column 'text'; columns are: words, label .*--text-column"),
        (b"text,stars\nhello,1\n", r"no column 'label'.*--label"),
        (b"text,label\n", "no data rows"),
    ],
)
def test_bad_tables_are_one_clear_line(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)

    with pytest.raises(InputFileError, match=match) as info:
        load_text_dataset(path)
    assert "bad.csv" in _one_line(info)


def test_a_50_mb_single_line_is_refused_without_reading_it_whole(tmp_path: Path) -> None:
    path = tmp_path / "huge.jsonl"
    with path.open("wb") as fh:
        fh.write(b'{"text": "')
        fh.write(b"a" * (50 * 1024 * 1024))
        fh.write(b'", "label": 1}\n')

    with pytest.raises(InputFileError, match="line 1 is longer than") as info:
        load_text_dataset(path)
    _one_line(info)


def test_over_long_csv_field_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "long.csv"
    path.write_text("text,label\n" + "x" * (MAX_TEXT_CHARS + 5) + ",1\n", encoding="utf-8")

    with pytest.raises(InputFileError, match="over-long|over the") as info:
        load_text_dataset(path)
    _one_line(info)


def test_jsonl_missing_key_and_not_json(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "fine", "label": 1}\n{"body": "x", "label": 0}\n', encoding="utf-8")
    with pytest.raises(InputFileError, match=r"line 2 has no key 'text'; keys are: body, label"):
        load_text_dataset(path)
    path.write_text('{"text": "fine", "label": 1}\nnot json\n', encoding="utf-8")
    with pytest.raises(InputFileError, match="line 2 is not JSON"):
        load_text_dataset(path)


def test_bundled_tweets_load_offline() -> None:
    ds = load_dataset("tweets")

    assert ds.modality == "text" and len(ds) > 30_000
    assert ds.class_names == ["negative", "neutral", "positive"]
    assert np.bincount(ds.y).min() > 5_000
    assert all(isinstance(t, str) and t.strip() for t in ds.x[:100])


def test_modality_detected_from_data(tmp_path: Path) -> None:
    numeric = tmp_path / "n.csv"
    numeric.write_text("a,b,label\n1,2,0\n3,4,1\n", encoding="utf-8")
    text = tmp_path / "t.csv"
    text.write_text("text,label\nhi,0\n", encoding="utf-8")

    assert modality.detect_data(numeric).name == "tabular"
    assert modality.detect_data(text).name == "text"
    assert modality.detect_data("tweets").name == "text"
    assert load_dataset(numeric).modality == "tabular"


def test_modality_detected_from_model_and_a_mismatch_is_an_error() -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    pipe = make_pipeline(TfidfVectorizer(), LogisticRegression())

    assert modality.detect(model=pipe).name == "text"
    assert modality.detect_model(LogisticRegression()) is None
    assert modality.detect(model=LogisticRegression(), data="tweets").name == "text"
    with pytest.raises(UserError, match="takes text .* but the data is tabular"):
        modality.detect(model=pipe, data="digits")


def test_every_row_is_complete() -> None:
    for spec in modality.MODALITIES.values():
        assert spec.budget and spec.budget_option.startswith("--") and spec.example
        assert ":" in spec.loader and spec.target_input in ("array", "texts", "waveform")
    with pytest.raises(UserError, match="unknown modality 'smell'"):
        modality.get("smell")
