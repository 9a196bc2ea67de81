"""QA: the scanner fails closed on truncated archives and refuses bad options with one line."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from mlwarden.supplychain import scan_paths
from tests.qa.conftest import assert_one_line_error, run_cli, torchscript


def test_truncated_torchscript_is_not_reported_safe(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    whole = torchscript(tmp_path / "whole.pt").read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(whole[:800])  # inside the first (stored, data-descriptor) member
    [result] = scan_paths([cut]).files
    assert result.verdict.value == "error", result
    code, _ = run_cli(capsys, "scan", str(cut))
    assert code == 2


def test_truncated_deflated_member_without_sizes_is_not_reported_safe(tmp_path: Path) -> None:
    buf = io.BytesIO()

    class Unseekable(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, b) -> int:  # type: ignore[no-untyped-def]
            return buf.write(b)

    with zipfile.ZipFile(Unseekable(), "w", zipfile.ZIP_DEFLATED) as z:  # type: ignore[arg-type]
        z.writestr("data.npy", bytes(range(256)) * 400)  # written with a data descriptor
    path = tmp_path / "cut.npz"
    path.write_bytes(buf.getvalue()[:600])
    [result] = scan_paths([path]).files
    assert result.verdict.value == "error", result


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"\xb6\x00\xff garbage", "not UTF-8"),
        (b"allow: os.system\n", "must be lists"),
        (b"allow: [a\n  b: : c\n", "not valid YAML"),
    ],
)
def test_bad_policy_file_is_one_line_error(
    tmp_path: Path, capsys, content: bytes, needle: str
) -> None:  # type: ignore[no-untyped-def]
    policy = tmp_path / "policy.yaml"
    policy.write_bytes(content)
    model = torchscript(tmp_path / "m.pt")
    code, err = run_cli(capsys, "scan", "--policy", str(policy), str(model))
    assert_one_line_error(code, err, needle)


def test_bad_executor_is_refused_even_for_one_file(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    model = torchscript(tmp_path / "m.pt")
    code, err = run_cli(capsys, "scan", "--executor", "process=0", str(model))
    assert_one_line_error(code, err, "worker count")


def test_empty_folder_is_not_a_clean_scan(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "models").mkdir()
    code, err = run_cli(capsys, "scan", str(tmp_path / "models"))
    assert_one_line_error(code, err, "nothing to scan")
