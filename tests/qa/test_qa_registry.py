"""QA: registry bundles: export into a folder and import of non-tar files are one-line errors."""

from __future__ import annotations

from pathlib import Path

from tests.qa.conftest import assert_one_line_error, run_cli, torchscript


def _registry_with_model(tmp_path: Path, capsys) -> Path:  # type: ignore[no-untyped-def]
    reg = tmp_path / "reg"
    model = torchscript(tmp_path / "m.pt")
    code, err = run_cli(
        capsys, "registry", "add", str(model), "--name", "m", "--registry", str(reg)
    )
    assert code == 0, err
    return reg


def test_export_into_a_folder_is_refused_and_leaves_nothing(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    reg = _registry_with_model(tmp_path, capsys)
    out = tmp_path / "out"
    out.mkdir()
    code, err = run_cli(capsys, "registry", "export", "m@1", str(out), "--registry", str(reg))
    assert_one_line_error(code, err, "is a folder")
    assert not (tmp_path / "out.partial").exists()


def test_import_of_a_non_tar_file_is_one_line_error(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    reg = _registry_with_model(tmp_path, capsys)
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"\x89PNG not a tar at all" * 50)
    code, err = run_cli(capsys, "registry", "import", str(junk), "--registry", str(reg))
    assert_one_line_error(code, err, "not a readable tar bundle")
