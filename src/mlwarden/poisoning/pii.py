"""Personal data and secrets in training data: CSV/TSV, JSONL, text files and folders.

A model can give back what it was trained on (membership inference, extraction), so
card numbers, national identifiers, names, addresses, dates of birth, phone numbers,
API keys and passwords should be removed or anonymised before training. The types and
how each is validated are the table in :mod:`mlwarden.poisoning.pii_types`.

The scan streams: a file is read record by record (a CSV row, a JSONL line, a text
line, a file of a text folder), so a multi-gigabyte file takes bounded memory. It
records, per record, the types found and the column they were found in, and the line
the record starts on (SARIF points there); values are kept only in masked form.

Example::

    scan = scan_file("customers.csv")
    scan.counts      # {"email": {"contact": 120}, ...}
    scan.rows[17]    # [("email", "contact"), ("person_name", "name")]
    scan.examples    # {"email": ["j***@e***.com", ...]}
"""

from __future__ import annotations

import bisect
import codecs
import csv
import io
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from mlwarden.core.console import progress_bar
from mlwarden.core.errors import InputFileError
from mlwarden.poisoning.pii_types import (
    CONTEXT_WINDOW,
    LABELS,
    PERSONAL_KINDS,
    PREFILTER,
    REPORTED_KIND,
    SECRET_KINDS,
    Hit,
    PiiConfig,
    PiiType,
    iban_valid,
    load_config,
    luhn_valid,
    shannon_entropy,
    with_phone_regions,
)

__all__ = [
    "MAX_BYTES",
    "PERSONAL_KINDS",
    "SECRET_KINDS",
    "LABELS",
    "PiiConfig",
    "PiiScan",
    "find",
    "find_hits",
    "iban_valid",
    "load_config",
    "luhn_valid",
    "mask",
    "scan_file",
    "scan_records",
    "scan_text",
    "shannon_entropy",
]

#: Default cap on the bytes read (None: the whole file, streamed).
MAX_BYTES: int | None = None
#: Masked examples kept per kind.
MAX_EXAMPLES = 3
#: Records whose hits are kept one by one (the counts cover every record).
MAX_ROWS = 100_000
#: Characters of records scanned in one pass of the patterns.
BATCH_CHARS = 256 * 1024
#: Longest record read (characters); a longer CSV field or line is an input error.
MAX_RECORD = 16 * 1024**2
_DEFAULT = PiiConfig()


def mask(kind: str, value: str) -> str:
    """A masked form of a match, safe to show in a report."""
    kind = REPORTED_KIND.get(kind, kind)
    if kind == "email":
        local, _, domain = value.partition("@")
        name, _, tld = domain.rpartition(".")
        return f"{local[:1]}***@{name[:1]}***.{tld}"
    if kind == "card_number":
        digits = re.sub(r"\D", "", value)
        return "*" * (len(digits) - 4) + digits[-4:]
    if kind == "private_key":
        return "-----BEGIN *** PRIVATE KEY----- (key body not shown)"
    if kind in ("phone", "us_ssn", "uk_nino", "iban"):
        keep = 4 if kind == "iban" else 0
        chars = [c for c in value if c.isalnum()]
        tail = "".join(chars[-2:])
        head = "".join(chars[:keep])
        return f"{head}{'*' * max(len(chars) - len(head) - len(tail), 3)}{tail}"
    if kind in ("person_name", "street_address"):
        return " ".join(f"{w[:1]}***" for w in value.split())
    if kind == "date_of_birth":
        return re.sub(r"[0-9A-Za-z]", "*", value)
    if kind == "ip_address":
        sep = ":" if ":" in value else "."
        return value.split(sep, 1)[0] + sep + "***"
    if kind in ("password",):
        return "*" * 8
    return f"{value[:4]}{'*' * 8}"


def _value_span(m: re.Match[str], t: PiiType) -> tuple[int, int]:
    if t.group == -1:
        g = next((i for i, v in enumerate(m.groups(), 1) if v), 0)
        return m.span(g)
    return m.span(t.group)


def _has_context(t: PiiType, before: str, column: str) -> bool:
    if t.context_mode == "column":
        return any(w in column for w in t.context)
    return any(w in before or w in column for w in t.context)


#: Separates the cells of one column joined into a chunk (never inside a match).
SEP = "\x00"


def find_hits(text: str, column: str = "", config: PiiConfig | None = None) -> list[Hit]:
    """Every validated match in ``text``, a span used once.

    ``text`` is one cell, line or document, or many cells of one column joined by
    :data:`SEP` (no match and no context crosses a separator). ``column`` (the CSV
    column or JSON key) counts as context: a bare nine-digit number is an SSN in a
    column named ``ssn``.
    """
    config = config or _DEFAULT
    column = column.lower()
    low = f"{column} {text.lower()}"
    types = _types(config)
    told = any(w in column for t in types if t.context_mode != "none" for w in t.context)
    if not told and _PLAIN_NUMBERS.fullmatch(text) and not _LONG_DIGITS.search(text):
        return []
    taken: list[tuple[int, int]] = []
    hits: list[Hit] = []
    for t in types:
        needles = PREFILTER.get(t.kind)
        if needles and not any(n in low for n in needles):
            continue
        if t.context_mode == "column" and not any(w in column for w in t.context):
            continue
        for m in t.pattern.finditer(text):
            spans = t.candidates(m) if t.candidates else [_value_span(m, t)]
            for start, end in spans:
                hit = _check(t, text, start, end, column, taken)
                if hit is not None:
                    taken.append((start, end))
                    hits.append(hit)
                    if t.candidates:
                        break
    return hits


_NUMBER = r"(?:[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)?"
#: cells that are plain numbers (one decimal point at most): nothing but a long digit
#: run (a card, an SSN in an 'ssn' column) can be sensitive there
_PLAIN_NUMBERS = re.compile(rf"{_NUMBER}(?:\x00{_NUMBER})*")
_LONG_DIGITS = re.compile(r"\d{7}")


def _check(
    t: PiiType, text: str, start: int, end: int, column: str, taken: list[tuple[int, int]]
) -> Hit | None:
    if start < 0 or any(start < e and s < end for s, e in taken):
        return None
    value = text[start:end]
    if SEP in value:
        return None
    before = text[max(0, start - CONTEXT_WINDOW) : start].rsplit(SEP, 1)[-1].lower()
    if t.context_mode in ("required", "column") and not _has_context(t, before, column):
        return None
    ctx = f"{column} {before}" if column else before
    if t.validate is not None and not t.validate(value, ctx):
        return None
    return Hit(REPORTED_KIND.get(t.kind, t.kind), value, start, end, t.weight)


@lru_cache(maxsize=8)
def _types(config: PiiConfig) -> list[PiiType]:
    return with_phone_regions(config.types(), config.phone_regions)


def find(text: str, column: str = "", config: PiiConfig | None = None) -> list[tuple[str, str]]:
    """All validated matches in ``text`` as ``(kind, value)``."""
    return [(h.kind, h.value) for h in find_hits(text, column, config)]


@dataclass
class PiiScan:
    """What a scan found: counts per kind and field, the records with hits, masked examples."""

    path: str
    format: str  #: "csv", "jsonl", "text" or "folder"
    fields: list[str] = field(default_factory=list)
    records: int = 0
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  #: kind -> field -> n
    examples: dict[str, list[str]] = field(default_factory=dict)  #: kind -> masked values
    #: record index -> [(kind, field)], for the first MAX_ROWS records with hits
    rows: dict[int, list[tuple[str, str]]] = field(default_factory=dict)
    #: record index -> (file, line) where the record starts
    lines: dict[int, tuple[str, int]] = field(default_factory=dict)
    weights: dict[int, float] = field(default_factory=dict)
    rows_with_hits: int = 0
    seen: set[int] = field(default_factory=set, repr=False)
    partial: bool = False
    config: PiiConfig = field(default=_DEFAULT, repr=False)

    def add(
        self, text: str, where: str, index: int | None = None, line: tuple[str, int] | None = None
    ) -> None:
        """Scan one cell / line of record ``index`` (default: the current record)."""
        index = self.records - 1 if index is None else index
        self.add_column([text], where, [index], [line or (self.path, index + 1)])

    def add_column(
        self, cells: list[str], where: str, indices: list[int], lines: list[tuple[str, int]]
    ) -> None:
        """Scan cells of one column (one per record) in one pass over the joined text."""
        starts, pos = [], 0
        for c in cells:
            starts.append(pos)
            pos += len(c) + 1
        for h in find_hits(SEP.join(cells), where, self.config):
            k = bisect.bisect_right(starts, h.start) - 1
            self._record(h, where, indices[k], lines[k])

    def _record(self, h: Hit, where: str, index: int, line: tuple[str, int]) -> None:
        if index not in self.seen:
            self.seen.add(index)
            self.rows_with_hits += 1
            if len(self.rows) < MAX_ROWS:
                self.rows[index] = []
                self.lines[index] = line
        per = self.counts.setdefault(h.kind, {})
        per[where] = per.get(where, 0) + 1
        if index in self.rows and (h.kind, where) not in self.rows[index]:
            self.rows[index].append((h.kind, where))
            self.weights[index] = max(self.weights.get(index, 0.0), h.weight)
        ex = self.examples.setdefault(h.kind, [])
        masked = mask(h.kind, h.value)
        if len(ex) < MAX_EXAMPLES and masked not in ex:
            ex.append(masked)

    def total(self, kind: str) -> int:
        return sum(self.counts.get(kind, {}).values())

    def rows_of(self, kinds: Iterable[str]) -> list[int]:
        """Record indices (kept ones) holding any of ``kinds``, in order."""
        wanted = set(kinds)
        return [i for i, hits in self.rows.items() if any(k in wanted for k, _ in hits)]


def scan_records(
    records: Iterable[tuple[int, dict[str, str], tuple[str, int] | None]],
    *,
    path: str,
    format: str,
    config: PiiConfig | None = None,
) -> PiiScan:
    """Scan ``(index, {field: text}, (file, line))`` records (any source, e.g. a text
    dataset already in memory)."""
    scan = PiiScan(path=path, format=format, config=config or _DEFAULT)
    _scan_batched(scan, records)
    return scan


def _scan_batched(
    scan: PiiScan, records: Iterable[tuple[int, dict[str, str], tuple[str, int] | None]]
) -> None:
    """Scan records in batches: each column of a batch is one pass of every pattern."""
    batch: dict[str, tuple[list[str], list[int], list[tuple[str, int]]]] = {}
    size = 0
    for index, cells, line in records:
        scan.records += 1
        for name, text in cells.items():
            if not text:
                continue
            col = batch.setdefault(name, ([], [], []))
            col[0].append(text.replace(SEP, " "))
            col[1].append(index)
            col[2].append(line or (scan.path, index + 1))
            size += len(text)
        if size >= BATCH_CHARS:
            _flush(scan, batch)
            size = 0
    _flush(scan, batch)


def _flush(
    scan: PiiScan, batch: dict[str, tuple[list[str], list[int], list[tuple[str, int]]]]
) -> None:
    for name, (cells, indices, lines) in batch.items():
        scan.add_column(cells, name, indices, lines)
    batch.clear()


def scan_text(
    text: str, *, path: str = "<text>", as_csv: bool | None = None, config: PiiConfig | None = None
) -> PiiScan:
    """Scan text already in memory: CSV (per column, header row first) or free text (per line)."""
    if as_csv is None:
        as_csv = path.lower().endswith((".csv", ".tsv"))
    stream = io.StringIO(text, newline="" if as_csv else "\n")
    return _scan_stream(stream, path, "csv" if as_csv else "text", config, partial_ok=False)


class _CsvReader:
    """CSV records from a text stream, the sniffed dialect, header first; tracks lines."""

    def __init__(self, fh: io.TextIOBase, path: str) -> None:
        self.fh, self.path = fh, path
        self.fields: list[str] = []

    def __iter__(self) -> Iterator[tuple[int, dict[str, str], tuple[str, int]]]:
        head = self.fh.read(8192)
        try:
            dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(head, delimiters=",;\t|")
        except csv.Error:
            dialect = csv.excel
        stream = _Prepend(head, self.fh)
        reader = csv.reader(stream, dialect)
        old = csv.field_size_limit(MAX_RECORD)
        try:
            header = next(reader, None)
            if header is None:
                return
            self.fields = [h.strip() or f"column {i + 1}" for i, h in enumerate(header)]
            start = reader.line_num + 1
            for index, row in enumerate(reader):
                cells = {
                    (self.fields[i] if i < len(self.fields) else f"column {i + 1}"): c
                    for i, c in enumerate(row)
                }
                yield index, cells, (self.path, start)
                start = reader.line_num + 1
        except csv.Error as exc:
            raise InputFileError(
                self.path, f"malformed CSV near line {reader.line_num} ({exc})"
            ) from None
        finally:
            csv.field_size_limit(old)


class _Prepend:
    """A text stream that yields ``head`` before the rest of ``fh`` (sniffing reads ahead)."""

    def __init__(self, head: str, fh: io.TextIOBase) -> None:
        self._lines = iter(io.StringIO(head, newline="").readlines())
        self._fh = fh
        self._carry = ""

    def __iter__(self) -> Iterator[str]:
        for line in self._lines:
            if line.endswith(("\n", "\r")):
                yield self._carry + line
                self._carry = ""
            else:
                self._carry += line
        for line in self._fh:
            yield self._carry + line
            self._carry = ""
        if self._carry:
            yield self._carry


def _line_records(
    fh: Iterable[str], path: str
) -> Iterator[tuple[int, dict[str, str], tuple[str, int]]]:
    for index, line in enumerate(fh):
        if len(line) > MAX_RECORD:
            raise InputFileError(path, f"line {index + 1} is longer than {MAX_RECORD} characters")
        yield index, {"text": line.rstrip("\r\n")}, (path, index + 1)


def _jsonl_records(
    fh: Iterable[str], path: str
) -> Iterator[tuple[int, dict[str, str], tuple[str, int]]]:
    index = 0
    for number, line in enumerate(fh, 1):
        if not line.strip():
            continue
        if len(line) > MAX_RECORD:
            raise InputFileError(path, f"line {number} is longer than {MAX_RECORD} characters")
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputFileError(path, f"line {number} is not JSON ({exc.msg})") from None
        yield index, dict(_flatten(obj, "")), (path, number)
        index += 1


def _flatten(obj: object, prefix: str) -> Iterator[tuple[str, str]]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, list):
        for v in obj:
            yield from _flatten(v, prefix)
    elif isinstance(obj, str):
        yield prefix or "text", obj
    elif obj is not None and not isinstance(obj, bool):
        yield prefix or "value", str(obj)


class _Tracked(io.RawIOBase):
    """A binary file that reports how far it has been read (for the progress bar)."""

    def __init__(self, fh: io.BufferedReader, limit: int | None, on_read) -> None:  # type: ignore[no-untyped-def]
        self._fh, self._limit, self._on_read = fh, limit, on_read
        self.pos = 0
        self.truncated = False

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:  # type: ignore[no-untyped-def]
        want = len(buf)
        if self._limit is not None:
            want = min(want, self._limit - self.pos)
            if want <= 0:
                self.truncated = self.truncated or bool(self._fh.peek(1))
                return 0
        data = self._fh.read(want)
        buf[: len(data)] = data
        self.pos += len(data)
        self._on_read(self.pos)
        return len(data)


def scan_file(
    path: str | Path, *, max_bytes: int | None = MAX_BYTES, config: PiiConfig | None = None
) -> PiiScan:
    """Scan a CSV/TSV (per column), JSONL (per key), other UTF-8 text (per line) or a
    folder of ``.txt`` files (one record per file, in sorted order), streaming.

    With ``max_bytes`` set, a larger file is scanned up to that point and marked
    ``partial``. A file that is binary or not UTF-8 raises :class:`InputFileError`
    naming the line.
    """
    path = Path(path)
    if path.is_dir():
        return _scan_folder(path, config)
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise InputFileError(path, f"cannot be read ({exc.strerror or exc})") from None
    with fh:
        if b"\x00" in fh.peek(65536)[:65536]:
            raise InputFileError(
                path, "is binary; the sensitive-data scan reads CSV, JSONL or text files"
            )
        size = os.fstat(fh.fileno()).st_size
        suffix = path.suffix.lower()
        fmt = (
            "csv"
            if suffix in (".csv", ".tsv")
            else "jsonl"
            if suffix in (".jsonl", ".ndjson")
            else "text"
        )
        with progress_bar(f"sensitive data in {path.name}", size) as bar:

            def advance(pos: int) -> None:
                if bar is not None:
                    bar.update(bar.task_ids[0], completed=pos)

            raw = _Tracked(fh, max_bytes, advance)
            text = io.TextIOWrapper(
                io.BufferedReader(raw, 1 << 20), encoding="utf-8", errors="strict", newline=""
            )
            scan = _scan_stream(text, str(path), fmt, config, partial_ok=max_bytes is not None)
        scan.partial = raw.truncated
    return scan


def _scan_stream(
    text: io.TextIOBase, path: str, fmt: str, config: PiiConfig | None, *, partial_ok: bool
) -> PiiScan:
    reader: Iterable[tuple[int, dict[str, str], tuple[str, int] | None]]
    if fmt == "csv":
        reader = _CsvReader(text, path)
    elif fmt == "jsonl":
        reader = _jsonl_records(text, path)
    else:
        reader = _line_records(text, path)
    scan = PiiScan(path=path, format=fmt, config=config or _DEFAULT)
    try:
        _scan_batched(scan, reader)
    except UnicodeDecodeError:
        if not partial_ok:
            raise InputFileError(
                path,
                f"is not UTF-8 text (after record {scan.records}); the sensitive-data scan reads UTF-8 CSV, JSONL or text",
            ) from None
    if fmt == "csv":
        scan.fields = list(getattr(reader, "fields", []))
    return scan


def _scan_folder(root: Path, config: PiiConfig | None) -> PiiScan:
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink() and p.suffix.lower() in (".txt", ".text", ".md")
    )
    if not files:
        raise InputFileError(root, "holds no .txt files to scan for sensitive data")

    def records() -> Iterator[tuple[int, dict[str, str], tuple[str, int]]]:
        for index, file in enumerate(files):
            try:
                raw = file.read_bytes()[: MAX_RECORD * 4]
                body = codecs.decode(raw, "utf-8")
            except (OSError, UnicodeDecodeError):
                raise InputFileError(file, "cannot be read as UTF-8 text") from None
            yield index, {"text": body}, (str(file), 1)

    scan = scan_records(records(), path=str(root), format="folder", config=config)
    scan.fields = ["text"]
    return scan
