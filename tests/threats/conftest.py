"""Run the ``mlwarden`` command in-process (fast), capturing exit code and output."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Result]:
    from mlwarden.cli.main import main

    def run(*args: str, cwd: Path, input: str | None = None) -> Result:
        monkeypatch.chdir(cwd)
        if input is not None:
            monkeypatch.setattr("sys.stdin", io.StringIO(input))
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            main(list(args))
        out = capsys.readouterr()
        code = exit_info.value.code
        return Result(
            code if isinstance(code, int) else (0 if code is None else 1), out.out, out.err
        )

    return run
