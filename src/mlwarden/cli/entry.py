"""The console script: ``mlwarden scan PATH...`` in its common forms starts without the
command-line framework, the report models or the other commands' imports, so that a
scan of one file in a CI step costs little more than the parse itself (start-up within
2x picklescan's). Everything else, and any option the fast path does not know, goes to
the full command line (:func:`mlwarden.cli.main.main`), which gives the same output.

The fast path handles ``scan`` with paths, ``--format text|json``, ``--quiet``/``-q``,
``--allow NAME`` and ``--allow-unknown``, writing text only when stdout is not a
terminal (a terminal gets the full command line's colours).

Example::

    $ mlwarden scan model.pt --format json     # fast path
    $ mlwarden scan model.pt --sarif out.sarif # full command line
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field
from typing import NoReturn


@dataclass
class _Scan:
    paths: list[str] = field(default_factory=list)
    fmt: str = "text"
    quiet: bool = False
    allow: list[str] = field(default_factory=list)
    allow_unknown: bool = False


def _parse(args: list[str]) -> _Scan | None:
    """The fast path's options, or None for anything it does not handle."""
    if args[:1] != ["scan"]:
        return None
    out = _Scan()
    rest = args[1:]
    i = 0
    while i < len(rest):
        a = rest[i]
        if a in ("--format", "-f", "--allow") and i + 1 < len(rest):
            if a == "--allow":
                out.allow.append(rest[i + 1])
            else:
                out.fmt = rest[i + 1]
            i += 2
            continue
        if a.startswith("--format="):
            out.fmt = a.partition("=")[2]
        elif a in ("--quiet", "-q"):
            out.quiet = True
        elif a == "--allow-unknown":
            out.allow_unknown = True
        elif a.startswith(("-", "hf:", "models:", "runs:")):
            return None
        else:
            out.paths.append(a)
        i += 1
    if not out.paths or out.fmt not in ("text", "json"):
        return None
    if out.fmt == "text" and sys.stdout.isatty():
        return None
    return out


#: as cli/scan.py shows names: control characters and bidirectional overrides escaped
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _shown(text: str) -> str:
    from mlwarden.supplychain.results import printable

    return _UNPRINTABLE.sub(lambda m: repr(m.group())[1:-1], printable(text))


def _text(result: object, quiet: bool) -> str:
    from mlwarden.supplychain.results import ScanResult

    assert isinstance(result, ScanResult)
    lines = []
    for f in result.files:
        lines.append(f"{f.verdict.value.upper():<10} {_shown(f.path)}  ({_shown(f.format)})")
        for i in sorted(f.findings, key=lambda i: -i.severity.rank):
            where = []
            if i.member:
                where.append(f"member {_shown(i.member)}")
            if i.offset is not None:
                where.append(f"offset {i.offset}")
            extra = f"  {', '.join(where)}" if where else ""
            times = f" (x{i.count})" if i.count > 1 else ""
            lines.append(f"    {i.severity.value:<8} {i.rule}  {_shown(i.message)}{times}{extra}")
    if not quiet:
        counts = ", ".join(f"{n} {k}" for k, n in result.verdicts().items() if n)
        lines.append(f"scanned {len(result.files)} file(s): {counts or 'nothing'}")
    return "\n".join(lines) + "\n"


def fast_scan(args: list[str]) -> int | None:
    """Run ``args`` on the fast path; its exit status, or None to use the full CLI."""
    job = _parse(args)
    if job is None:
        return None
    from mlwarden.supplychain.policy import Policy
    from mlwarden.supplychain.scanner import scan_paths
    from mlwarden.supplychain.sources import resolve_source

    try:
        policy = Policy(allow=job.allow)
        paths = [resolve_source(p) for p in job.paths]
        result = scan_paths(paths, policy, allow_unknown=job.allow_unknown)
    except Exception:  # a bad name or path: the full CLI says it in one line
        return None
    if not result.files:
        return None
    if job.fmt == "json":
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
    else:
        sys.stdout.write(_text(result, job.quiet))
    sys.stdout.flush()
    return result.exit_code()


def main() -> NoReturn:
    """The ``mlwarden`` console script."""
    # Before torch loads its OpenMP runtime: idle threads sleep instead of spinning at
    # each barrier. On a shared or loaded machine (CI runners) spinning threads wait for
    # a descheduled sibling: a tiny BERT's forward passes took 10-30x longer (2 cores,
    # load 16). Set OMP_WAIT_POLICY yourself to override.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    code = fast_scan(sys.argv[1:])
    if code is not None:
        sys.exit(code)
    from mlwarden.cli.main import main as full

    full()
    sys.exit(0)
