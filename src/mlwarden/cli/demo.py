"""``mlwarden demo``: the main job on bundled data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlwarden.cli.common import (
    DebugOpt,
    FailOnOpt,
    HtmlOpt,
    JsonOpt,
    JunitOpt,
    QuietOpt,
    SarifOpt,
    SeedOpt,
    finish,
    setup,
)
from mlwarden.core.console import err, settings
from mlwarden.core.errors import UserError


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        out: Annotated[
            Path, typer.Option("--out", help="Folder for the report and demo artefacts.")
        ] = Path("demo-out"),
        json_path: JsonOpt = None,
        html_path: HtmlOpt = None,
        sarif_path: SarifOpt = None,
        junit_path: JunitOpt = None,
        seed: SeedOpt = 0,
        fail_on: FailOnOpt = None,
        quiet: QuietOpt = False,
        debug: DebugOpt = False,
    ) -> None:
        """Train a small classifier on bundled digits, run every check on it, write a report."""
        if out.exists() and not out.is_dir():
            raise UserError(f"--out {out}: is a file; expected a folder for the report")
        from mlwarden.audit.demo import run_demo

        setup(quiet=quiet, debug=debug, seed=seed)
        report = run_demo(out, seed=seed)
        html_path = html_path or out / "report.html"
        code = finish(
            report,
            json_path=json_path or out / "report.json",
            html_path=html_path,
            sarif_path=sarif_path,
            junit_path=junit_path,
            fail_on=fail_on,
        )
        if not settings.quiet:
            err.print(f"report: {html_path.resolve()}")
        raise typer.Exit(code)
