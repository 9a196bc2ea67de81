"""Personal data and secrets in training data (CSV or plain text).

A model can give back what it was trained on (membership inference, extraction), so
card numbers, e-mail addresses, phone numbers, national identifiers, API keys,
passwords and private keys should be removed or anonymised before training.

Patterns (each match is validated where a checksum exists):

* payment card numbers — 13 to 19 digits with optional spaces/dashes, Luhn-valid;
* e-mail addresses; phone numbers (international ``+CC ...`` or North American
  ``(555) 123-4567`` forms, separators required so plain numbers do not match);
* US SSN (area not 000/666/9xx), UK National Insurance numbers (HMRC prefix rules),
  IBAN (ISO 13616 mod-97 check);
* AWS access key ids (``AKIA``/``ASIA``), GitHub tokens (``ghp_`` etc.), Slack tokens
  (``xox?-``), ``password=...`` assignments, ``-----BEGIN ... PRIVATE KEY-----`` blocks,
  and generic ``key/secret/token = <value>`` assignments whose value has high
  Shannon entropy (>= 3.5 bits per character).

Example::

    scan = scan_file("customers.csv")
    scan.counts      # {"email": {"contact": 120}, ...}
    scan.examples    # {"email": ["j***@e***.com", ...]}
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from mlwarden.core.errors import InputFileError

#: Largest file read (bytes); a larger file is scanned up to this point and marked partial.
MAX_BYTES = 256 * 1024**2
#: Masked examples kept per kind.
MAX_EXAMPLES = 3

SECRET_KINDS = frozenset(
    {"aws_access_key", "github_token", "slack_token", "private_key", "password", "generic_secret"}
)
PERSONAL_KINDS = frozenset({"card_number", "email", "phone", "us_ssn", "uk_nino", "iban"})

_PATTERNS: dict[str, re.Pattern[str]] = {
    "private_key": re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"),
    "aws_access_key": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "github_token": re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{50,})\b"),
    "slack_token": re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}\b"),
    "password": re.compile(r"(?i)\b(?:password|passwd|pwd|pass)\s*[:=]\s*['\"]?([^\s'\",;]{4,})"),
    "generic_secret": re.compile(
        r"(?i)\b(?:api[_-]?key|apikey|secret(?:[_-]?key)?|access[_-]?token|auth[_-]?token|token)"
        r"\s*[:=]\s*['\"]?([A-Za-z0-9/+_\-.=]{16,})"
    ),
    "email": re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"),
    "iban": re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b"),
    "us_ssn": re.compile(r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b"),
    "uk_nino": re.compile(
        r"\b(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"
    ),
    "card_number": re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])"),
    "phone": re.compile(
        r"(?<![\w+])(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]\d{2,4}){1,4}"
        r"|\(\d{3}\) ?\d{3}[ .-]\d{4}|\d{3}[.-]\d{3}[.-]\d{4})(?![\w-])"
    ),
}


def luhn_valid(digits: str) -> bool:
    """Luhn (mod 10) check of a string of digits, as payment card numbers carry."""
    if not digits.isdigit() or len(digits) < 2:
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_valid(text: str) -> bool:
    """ISO 13616 IBAN check: move the first four characters to the end, letters to
    numbers (A=10..Z=35), and the number mod 97 must be 1."""
    s = text.replace(" ", "").upper()
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}", s):
        return False
    rearranged = s[4:] + s[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


def shannon_entropy(text: str) -> float:
    """Shannon entropy of the characters of ``text``, bits per character."""
    if not text:
        return 0.0
    counts = Counter(text)
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def mask(kind: str, value: str) -> str:
    """A masked form of a match, safe to show in a report."""
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
        keep = 2 if kind == "phone" else 4 if kind == "iban" else 0
        chars = [c for c in value if c.isalnum()]
        tail = "".join(chars[-2:])
        head = "".join(chars[:keep]) if kind == "iban" else ""
        return f"{head}{'*' * max(len(chars) - len(head) - len(tail), 3)}{tail}"
    if kind == "password":
        return "*" * 8
    return f"{value[:4]}{'*' * 8}"


def _validated(kind: str, match: re.Match[str]) -> str | None:
    value = match.group(1) if match.groups() else match.group(0)
    if kind == "card_number":
        digits = re.sub(r"\D", "", value)
        if not 13 <= len(digits) <= 19 or not luhn_valid(digits) or len(set(digits)) == 1:
            return None
    elif kind == "iban":
        if not iban_valid(value):
            return None
    elif kind == "generic_secret" and shannon_entropy(value) < 3.5:
        return None
    return value


def find(text: str) -> list[tuple[str, str]]:
    """All validated matches in ``text`` as ``(kind, value)``; a span is used once.

    Secrets and checksummed identifiers are matched first, so the digits of an IBAN are
    not reported again as a phone number.
    """
    taken: list[tuple[int, int]] = []
    hits: list[tuple[str, str]] = []
    for kind, pattern in _PATTERNS.items():
        for m in pattern.finditer(text):
            start, end = m.span()
            if any(start < e and s < end for s, e in taken):
                continue
            value = _validated(kind, m)
            if value is None:
                continue
            taken.append((start, end))
            hits.append((kind, value))
    return hits


@dataclass
class PiiScan:
    """What a scan found: counts per kind and field, masked examples."""

    path: str
    format: str  #: "csv" or "text"
    fields: list[str] = field(default_factory=list)
    records: int = 0
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  #: kind -> field -> n
    examples: dict[str, list[str]] = field(default_factory=dict)  #: kind -> masked values
    partial: bool = False

    def add(self, text: str, where: str) -> None:
        for kind, value in find(text):
            per = self.counts.setdefault(kind, {})
            per[where] = per.get(where, 0) + 1
            ex = self.examples.setdefault(kind, [])
            masked = mask(kind, value)
            if len(ex) < MAX_EXAMPLES and masked not in ex:
                ex.append(masked)

    def total(self, kind: str) -> int:
        return sum(self.counts.get(kind, {}).values())


def scan_text(text: str, *, path: str = "<text>", as_csv: bool | None = None) -> PiiScan:
    """Scan text: CSV (per column, header row first) or free text (per line)."""
    if as_csv is None:
        as_csv = path.lower().endswith((".csv", ".tsv"))
    if as_csv:
        scan = PiiScan(path=path, format="csv")
        try:
            dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(
                text[:8192], delimiters=",;\t|"
            )
        except csv.Error:
            dialect = csv.excel
        try:
            reader = csv.reader(io.StringIO(text), dialect)
            header = next(reader, None)
            if header is None:
                return scan
            scan.fields = [h.strip() or f"column {i + 1}" for i, h in enumerate(header)]
            for row in reader:
                scan.records += 1
                for i, cell in enumerate(row):
                    if cell:
                        name = scan.fields[i] if i < len(scan.fields) else f"column {i + 1}"
                        scan.add(cell, name)
        except csv.Error as exc:
            raise InputFileError(path, f"malformed CSV ({exc})") from None
        return scan
    scan = PiiScan(path=path, format="text", fields=["text"])
    for line in text.splitlines():
        scan.records += 1
        scan.add(line, "text")
    return scan


def scan_file(path: str | Path, *, max_bytes: int = MAX_BYTES) -> PiiScan:
    """Scan a CSV/TSV (per column) or any other UTF-8 text file (per line).

    Files larger than ``max_bytes`` are scanned up to that point and marked
    ``partial``. A file that is not UTF-8 text raises :class:`InputFileError`.
    """
    path = Path(path)
    try:
        with path.open("rb") as fh:
            raw = fh.read(max_bytes + 1)
    except OSError as exc:
        raise InputFileError(path, f"cannot be read ({exc.strerror or exc})") from None
    partial = len(raw) > max_bytes
    raw = raw[:max_bytes]
    if b"\x00" in raw[:65536]:
        raise InputFileError(path, "is binary; the sensitive-data scan reads CSV or text files")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        if partial and exc.start >= len(raw) - 4:
            text = raw[: exc.start].decode("utf-8")
        else:
            raise InputFileError(
                path, "is not UTF-8 text; the sensitive-data scan reads CSV or text files"
            ) from None
    if partial:
        text = text[: text.rfind("\n") + 1] or text
    scan = scan_text(text, path=str(path), as_csv=path.suffix.lower() in (".csv", ".tsv"))
    scan.partial = partial
    return scan
