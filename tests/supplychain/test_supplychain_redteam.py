"""Hostile and unusual inputs to ``mlwarden scan`` and the scanner's public functions.

The promise under test: every bad input gets one clear line and a non-zero exit, never a
traceback, a hang or unbounded memory; what cannot be parsed is never reported safe; the
JSON output keeps the documented interface (issue 3), also for errors; SARIF stays valid.
Big inputs are sparse or built lazily, so the whole file runs in seconds.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from mlwarden.cli.main import main
from mlwarden.core.errors import UserError
from mlwarden.supplychain import safe_load, scan_file


def _payload(canary: Path) -> bytes:
    """What an unpickler would run: a harmless canary (these files are never loaded)."""
    return b"cos\nsystem\n(S'touch " + str(canary).encode() + b"'\ntR."


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(["scan", *args])
    cap = capsys.readouterr()
    return int(exc.value.code or 0), cap.out, cap.err


def _refused(path: Path) -> None:
    """safe_load raises one of our errors, in one line, and loads nothing."""
    with pytest.raises(UserError) as exc:
        safe_load(path)
    assert "\n" not in str(exc.value)


# --- the pickle machine stopping at a limit is never "text" -----------------------------------


@pytest.mark.parametrize(
    "opener", [b"S'" + b"a" * (2 << 20) + b"'\n0", b"V" + b"a" * (2 << 20) + b"\n0"]
)
def test_a_protocol_0_line_longer_than_the_scanner_reads_is_not_text(
    tmp_path: Path, canary: Path, opener: bytes
) -> None:
    # pickle.loads() reads the long line, pops it and then runs os.system: the scanner
    # once gave up on the line, rolled back and called the file text (safe)
    data = opener + _payload(canary)
    plain = tmp_path / "long.pkl"
    plain.write_bytes(data)
    packed = tmp_path / "long.pkl.gz"  # joblib.load() unpacks and unpickles it
    packed.write_bytes(gzip.compress(data))
    for path in (plain, packed):
        res = scan_file(path)
        assert res.verdict.value == "error", (path, res.format, res.findings)
        assert "line longer than" in (res.error or "")
        _refused(path)


def test_a_mark_blow_up_inside_a_compressed_stream_is_not_data(
    tmp_path: Path, canary: Path
) -> None:
    # a million MARKs and POP_MARKs are fine for pickle.loads; the scanner stops at its limit
    data = b"(" * 1_000_001 + b"1" * 1_000_001 + _payload(canary)
    path = tmp_path / "marks.pkl.gz"
    path.write_bytes(gzip.compress(data))
    res = scan_file(path)
    assert res.verdict.value == "error" and "blow-up" in (res.error or "")


def test_a_limit_inside_a_media_signature_is_not_the_image(tmp_path: Path, canary: Path) -> None:
    # GIF89a: 'G' is BINFLOAT (8 bytes), then the MARK blow-up, then the payload
    data = b"GIF89a\x00\x00\x00" + b"(" * 1_000_001 + b"1" * 1_000_001 + _payload(canary)
    path = tmp_path / "image.gif"
    path.write_bytes(data)
    res = scan_file(path)
    assert res.verdict.value == "error", (res.format, res.findings)


def test_long_text_lines_that_no_unpickler_reads_stay_text(tmp_path: Path) -> None:
    # a first line with a long module name fails in the unpickler too (no such module)
    path = tmp_path / "notes.txt"
    path.write_text("c" + "x" * 10_000 + "\nmore text\n")
    assert scan_file(path).format == "text"
