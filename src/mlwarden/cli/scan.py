"""``mlwarden scan PATH...``: find code hidden in model files without loading them.

Exit status: 0 every file safe; 1 any file unsafe or suspicious; 2 a usage error, a
file that could not be scanned or a file of unknown format (and none unsafe; unknown
files pass with ``--allow-unknown``).
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

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
from mlwarden.core.errors import UserError

if TYPE_CHECKING:
    from mlwarden.supplychain import Policy

FORMATS = ("text", "json", "sarif")


def register(app: typer.Typer) -> None:
    @app.command("scan")
    def scan(
        paths: Annotated[
            list[Path],
            typer.Argument(
                help="Model files, directories (recursive), archives, Hugging Face "
                "repositories as hf://org/name[@revision] (through the local cache), or MLflow "
                "models as models:/NAME/VERSION, models:/NAME@ALIAS or runs:/RUN_ID/PATH "
                "(through --tracking-uri)."
            ),
        ],
        fmt: Annotated[
            str, typer.Option("--format", "-f", help="Output on stdout: text, json or sarif.")
        ] = "text",
        allow: Annotated[
            list[str] | None,
            typer.Option(
                "--allow",
                help="Also allow this imported name (module.name or module.*); repeatable.",
            ),
        ] = None,
        policy_file: Annotated[
            Path | None,
            typer.Option("--policy", help="Policy file (YAML/JSON) with 'allow'/'deny' lists."),
        ] = None,
        allow_unknown: Annotated[
            bool,
            typer.Option(
                "--allow-unknown",
                help="Files of no format mlwarden knows (verdict unknown) do not fail the "
                "scan; they are still listed.",
            ),
        ] = False,
        executor: Annotated[
            str,
            typer.Option(
                "--executor", help="Where to scan many files: local, process[=N] or ray[=ADDR]."
            ),
        ] = "local",
        sbom_path: Annotated[
            Path | None,
            typer.Option(
                "--sbom",
                help="Write an ML-BOM of the files scanned (CycloneDX 1.6 JSON: one component "
                "per file with hashes, format and verdict; findings as vulnerabilities).",
            ),
        ] = None,
        tracking_uri: Annotated[
            str | None,
            typer.Option(
                "--tracking-uri",
                help="MLflow tracking/registry store that resolves models:/ and runs:/ URIs "
                "(e.g. sqlite:///mlflow.db); default: MLFLOW_TRACKING_URI.",
            ),
        ] = None,
        json_path: JsonOpt = None,
        html_path: HtmlOpt = None,
        sarif_path: SarifOpt = None,
        junit_path: JunitOpt = None,
        fail_on: FailOnOpt = None,
        seed: SeedOpt = 0,
        quiet: QuietOpt = False,
        debug: DebugOpt = False,
    ) -> None:
        """Scan model files (pickle, PyTorch, joblib, NumPy, Keras, ONNX, safetensors, GGUF, TF)."""
        from mlwarden.core.findings import Report
        from mlwarden.supplychain import Policy, scan_paths, to_report

        if fmt not in FORMATS:
            raise UserError(f"--format must be one of {', '.join(FORMATS)}; got {fmt!r}")
        setup(quiet=quiet or fmt != "text", debug=debug)
        policy = (
            _read_policy(policy_file, allow or [])
            if policy_file is not None
            else Policy(allow=list(allow or []))
        )
        from mlwarden.supplychain.sources import resolve_source

        # typer made each argument a Path, which folds "hf://" into "hf:/"
        paths = [
            resolve_source(
                "hf://" + str(p)[4:] if str(p).startswith("hf:/") else str(p),
                tracking_uri=tracking_uri,
            )
            for p in paths
        ]
        result = scan_paths(paths, policy, executor=executor, allow_unknown=allow_unknown)
        if not result.files:
            shown = ", ".join(str(p) for p in paths)
            raise UserError(f"nothing to scan: no files under {shown}")
        report = to_report(result, Report.new(command="scan", seed=seed))
        if sbom_path is not None:
            _write_sbom(result, sbom_path)
        if fmt == "json":
            sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
        elif fmt == "sarif":
            sys.stdout.write(_sarif_text(report))
        else:
            _print_text(result)
        code = finish(
            report,
            json_path=json_path,
            html_path=html_path,
            sarif_path=sarif_path,
            junit_path=junit_path,
            fail_on=fail_on,
            summary=False,
        )
        raise typer.Exit(max(result.exit_code(), code) if code != 2 else 2)


#: a policy lists names; a bigger file is a mistake (or a parser bomb), refused unread
MAX_POLICY_BYTES = 1 << 20


def _read_policy(path: Path, allow: list[str]) -> Policy:
    """``Policy.from_file``, after refusing what is not a small regular file."""
    from mlwarden.supplychain import Policy

    try:
        info = os.stat(path)
    except OSError:
        info = None  # from_file says why it cannot be read
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise UserError(f"{path}: the policy file is not a regular file (a folder, pipe or device)")
    if info is not None and info.st_size > MAX_POLICY_BYTES:
        raise UserError(
            f"{path}: the policy file holds {info.st_size} bytes, more than the "
            f"{MAX_POLICY_BYTES} a list of allowed and denied names needs"
        )
    try:
        return Policy.from_file(path, extra_allow=allow)
    except RecursionError:
        raise UserError(f"{path}: the policy file is nested too deeply to be read") from None


def _write_sbom(result: object, path: Path) -> None:
    from mlwarden.supplychain.results import ScanResult
    from mlwarden.supplychain.sbom import write_sbom

    assert isinstance(result, ScanResult)
    try:
        write_sbom(result, path)
    except OSError as exc:
        raise UserError(f"{path}: cannot write the BOM ({exc.strerror or exc})") from None


def _print_text(result: object) -> None:
    from rich.console import Console

    from mlwarden.core.console import settings
    from mlwarden.supplychain.results import ScanResult

    assert isinstance(result, ScanResult)
    out = Console(highlight=False, soft_wrap=True)
    colour = {
        "safe": "green",
        "suspicious": "yellow",
        "unsafe": "red",
        "error": "magenta",
        "unknown": "cyan",
    }
    for f in result.files:
        v = f.verdict.value
        out.print(f"[{colour[v]}]{v.upper():<10}[/] {_shown(f.path)}  [dim]({_shown(f.format)})[/]")
        for i in sorted(f.findings, key=lambda i: -i.severity.rank):
            where = []
            if i.member:
                where.append(f"member {_shown(i.member)}")
            if i.offset is not None:
                where.append(f"offset {i.offset}")
            extra = f"  [dim]{', '.join(where)}[/]" if where else ""
            times = f" (x{i.count})" if i.count > 1 else ""
            out.print(f"    {i.severity.value:<8} {i.rule}  {_shown(i.message)}{times}{extra}")
    if not settings.quiet:
        counts = ", ".join(f"{n} {k}" for k, n in result.verdicts().items() if n)
        out.print(f"[bold]scanned {len(result.files)} file(s)[/]: {counts or 'nothing'}")


#: control characters (newlines, escape sequences) and bidirectional overrides
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _shown(text: str) -> str:
    """A file name, member name or message as one line of plain text on a terminal.

    Names come from the files scanned: a newline would forge a line of output, an escape
    sequence would drive the terminal, ``[...]`` would be read as console markup.
    """
    from rich.markup import escape

    from mlwarden.supplychain.results import printable

    text = _UNPRINTABLE.sub(lambda m: repr(m.group())[1:-1], printable(text))
    return escape(text)


def _sarif_text(report: object) -> str:
    from mlwarden.core.findings import Report
    from mlwarden.report import write_reports

    assert isinstance(report, Report)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scan.sarif"
        try:
            write_reports(report, sarif_path=path)
        except ModuleNotFoundError:
            raise UserError("SARIF output is not available in this build") from None
        return path.read_text(encoding="utf-8")
