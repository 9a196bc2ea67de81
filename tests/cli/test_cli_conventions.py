"""The conventions every ``mlwarden`` command follows (help, version, exit codes, errors)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from typer.main import get_command

from mlwarden import __version__
from mlwarden.cli.common import finish
from mlwarden.cli.main import app
from mlwarden.core.console import settings
from mlwarden.core.findings import Finding, Report, Severity

REPORT_OPTIONS = ("--json", "--html", "--sarif", "--junit", "--fail-on", "--seed")


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "120", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mlwarden", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=cwd,
    )


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_help_lists_the_commands() -> None:
    proc = run("--help")

    assert proc.returncode == 0, proc.stderr
    assert "demo" in proc.stdout and "Usage" in proc.stdout


def test_version() -> None:
    proc = run("--version")

    assert proc.returncode == 0
    assert proc.stdout.strip() == f"mlwarden {__version__}"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("demo", "--no-such-option"), "No such option: --no-such-option"),
        (("no-such-command",), "No such command"),
        (("demo", "--fail-on", "urgent"), "unknown severity 'urgent'"),
        (("demo", "--seed", "many"), "Invalid value for '--seed'"),
    ],
)
def test_usage_error_exits_2_with_one_line(args: tuple[str, ...], words: str) -> None:
    proc = run(*args)

    assert proc.returncode == 2
    assert len(_lines(proc.stderr)) == 1, proc.stderr
    assert words in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_user_error_exits_2_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "report.txt"
    not_a_folder.write_text("x")

    proc = run("demo", "--out", str(not_a_folder))

    assert proc.returncode == 2
    assert _lines(proc.stderr) == [
        f"mlwarden: error: --out {not_a_folder}: is a file; expected a folder for the report"
    ]
    assert "Traceback" not in proc.stderr


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "report.txt"
    not_a_folder.write_text("x")

    proc = run("demo", "--out", str(not_a_folder), "--debug")

    assert proc.returncode != 0
    assert "Traceback (most recent call last)" in proc.stderr
    assert "UserError" in proc.stderr


def _report(*severities: Severity) -> Report:
    report = Report.new("scan")
    for i, sev in enumerate(severities):
        report.add(Finding(rule=f"MLW-SCN-{i + 1:03d}", title="t", severity=sev))
    return report


@pytest.mark.parametrize(
    ("severities", "fail_on", "code"),
    [
        ((), "info", 0),
        ((Severity.INFO,), "info", 1),
        ((Severity.LOW,), "medium", 0),
        ((Severity.MEDIUM,), "medium", 1),
        ((Severity.LOW, Severity.CRITICAL), "HIGH", 1),
        ((Severity.HIGH,), "critical", 0),
        ((Severity.CRITICAL,), None, 0),
    ],
)
def test_fail_on_exits_1_only_at_or_above_the_threshold(
    severities: tuple[Severity, ...], fail_on: str | None, code: int, tmp_path: Path
) -> None:
    settings.quiet = True
    try:
        got = finish(_report(*severities), json_path=tmp_path / "r.json", fail_on=fail_on)
    finally:
        settings.quiet = False

    assert got == code
    assert (tmp_path / "r.json").exists()


def _leaf_commands() -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = []

    def walk(cmd: click.Command, path: list[str]) -> None:
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                walk(sub, [*path, name])
        else:
            found.append((" ".join(path), cmd))

    walk(get_command(app), [])
    return found


@pytest.mark.parametrize(("name", "command"), _leaf_commands(), ids=lambda v: str(v))
def test_every_command_takes_the_shared_options(name: str, command: click.Command) -> None:
    opts = {o for p in command.params for o in getattr(p, "opts", [])}

    assert {"--quiet", "--debug"} <= opts, f"mlwarden {name} lacks --quiet/--debug"
    if "--fail-on" in opts or "--json" in opts:
        missing = [o for o in REPORT_OPTIONS if o not in opts]
        assert not missing, f"mlwarden {name} writes reports but lacks {', '.join(missing)}"


class _Stream:
    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


@pytest.mark.parametrize(
    ("tty", "quiet", "shown"), [(True, False, True), (False, False, False), (True, True, False)]
)
def test_progress_bars_only_on_a_terminal_and_never_when_quiet(
    tty: bool, quiet: bool, shown: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlwarden.core import console

    monkeypatch.setattr(sys, "stderr", _Stream(tty))
    monkeypatch.setattr(console.settings, "quiet", quiet)

    assert console.progress_enabled() is shown
    with console.progress_bar("work", total=3) as bar:
        assert (bar is not None) is shown
    assert list(console.track(range(3), "work")) == [0, 1, 2]
