"""QA: output paths that cannot be created are one-line errors, found before any work is done."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.qa.conftest import assert_one_line_error, run_cli, torchscript


@pytest.mark.parametrize("option", ["--json", "--html", "--sarif", "--junit"])
def test_report_path_under_a_file_is_refused_up_front(tmp_path: Path, capsys, option: str) -> None:  # type: ignore[no-untyped-def]
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    model = torchscript(tmp_path / "m.pt")
    code, err = run_cli(capsys, "scan", str(model), option, str(blocker / "sub" / "report.out"))
    assert_one_line_error(code, err, "is a file")


def test_keys_generate_under_a_file_is_one_line_error(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    code, err = run_cli(capsys, "keys", "generate", str(blocker / "signing.key"))
    assert_one_line_error(code, err, "a parent folder is a file")


def test_gateway_add_key_under_a_file_is_one_line_error(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    code, err = run_cli(capsys, "gateway", "add-key", "bob", "--config", str(blocker / "g.yaml"))
    assert_one_line_error(code, err, "a parent folder is a file")


def test_registry_under_a_file_is_one_line_error(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    model = torchscript(tmp_path / "m.pt")
    code, err = run_cli(
        capsys, "registry", "add", str(model), "--name", "m", "--registry", str(blocker / "reg")
    )
    assert_one_line_error(code, err, "Not a directory")


def test_export_under_a_file_is_one_line_error(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    reg = tmp_path / "reg"
    model = torchscript(tmp_path / "m.pt")
    assert (
        run_cli(capsys, "registry", "add", str(model), "--name", "m", "--registry", str(reg))[0]
        == 0
    )
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    code, err = run_cli(
        capsys, "registry", "export", "m@1", str(blocker / "b.tar"), "--registry", str(reg)
    )
    assert_one_line_error(code, err, "cannot be written")
