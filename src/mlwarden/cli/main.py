"""The ``mlwarden`` command.

Each command group lives in its own module under ``mlwarden.cli`` and exposes
``register(app)``. ``main()`` turns user errors into one line on stderr and exit
status 2 (a traceback only with ``--debug``).
"""

from __future__ import annotations

import importlib
import sys
from typing import NoReturn

import click
import typer

from mlwarden import __version__
from mlwarden.core.console import settings

app = typer.Typer(
    name="mlwarden",
    help="Find and fix the security weaknesses of machine-learning systems.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

#: Command modules, in the order they appear in --help.
COMMAND_MODULES = (
    "demo",
    "scan",
    "registry",
    "signing",
    "data",
    "evasion",
    "privacy",
    "backdoor",
    "serve",
    "threats",
    "audit",
)


def _version(value: bool) -> None:
    if value:
        print(f"mlwarden {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Find and fix the security weaknesses of machine-learning systems."""


def _register_all() -> None:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"mlwarden.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"mlwarden.cli.{name}":
                continue  # command group not built yet
            raise
        module.register(app)


_register_all()


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script and ``python -m mlwarden``."""
    from mlwarden.core.errors import UserError

    args = sys.argv[1:] if argv is None else argv
    if "--debug" in args:
        settings.debug = True
    try:
        rv = app(args=args, prog_name="mlwarden", standalone_mode=False)
    except (click.exceptions.Exit, typer.Exit) as exc:
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, typer.Abort):
        print("mlwarden: aborted", file=sys.stderr)
        sys.exit(130)
    except (click.ClickException, typer.TyperException) as exc:
        # typer >= 0.26 vendors click, so its usage errors are not click's classes.
        _usage_error(exc)
    except UserError as exc:
        if settings.debug:
            raise
        print(f"mlwarden: error: {_one_line(str(exc))}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("mlwarden: interrupted", file=sys.stderr)
        sys.exit(130)
    except OSError as exc:
        # A path the system refused (not a folder, no permission, disk full): the user's to fix.
        if settings.debug or not exc.filename:
            _internal_error(exc)
        where = _one_line(str(exc.filename))
        print(f"mlwarden: error: {where}: {exc.strerror or exc}", file=sys.stderr)
        sys.exit(2)
    except Exception as exc:
        _internal_error(exc)
    sys.exit(rv if isinstance(rv, int) else 0)


def _one_line(text: str) -> str:
    """A message as one line: control characters (a newline in a file name) escaped."""
    return "".join(
        repr(c)[1:-1] if c.isspace() and c != " " or not c.isprintable() else c for c in text
    )


def _internal_error(exc: Exception) -> NoReturn:
    """Re-raise under --debug; else one line on stderr and exit 3."""
    if settings.debug:
        raise exc
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    print(
        f"mlwarden: internal error: {type(exc).__name__}: {first} (rerun with --debug for the traceback)",
        file=sys.stderr,
    )
    sys.exit(3)


def _usage_error(exc: Exception) -> None:
    """One line on stderr and exit 2 for a usage error (unknown option, bad value)."""
    format_message = getattr(exc, "format_message", None)
    message = " ".join(str(format_message() if format_message else exc).split())
    if not message:  # "no_args_is_help": the help text was already printed
        sys.exit(2)
    ctx = getattr(exc, "ctx", None)
    cmd = getattr(ctx, "command_path", None) or "mlwarden"
    if getattr(exc, "exit_code", 2) == 2 or ctx is not None:
        print(f"{cmd}: error: {message} (see '{cmd} --help')", file=sys.stderr)
    else:
        print(f"mlwarden: error: {message}", file=sys.stderr)
    sys.exit(2)
