"""Run the model-file scanner (``mlwarden.supplychain``) before anything is registered.

The registry must never accept a model file that would run code when loaded, so
``add`` scans every file first and refuses any verdict other than ``safe`` (or
``unrecognised``, below) unless the user forces it with a recorded reason. Fail
closed: when the scanner is missing, crashes or cannot parse a model file, the file
is refused.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Verdict for a file whose first bytes match no model, archive, pickle or text format
#: the scanner knows (images, audio, random bytes): nothing a model loader would
#: execute. The scanner itself reports such files as ``unknown``; the registry records
#: them as ``unrecognised`` and accepts them. Truncated or malformed model files stay
#: errors and are refused.
UNRECOGNISED = "unrecognised"
ACCEPTED = frozenset({"safe", UNRECOGNISED})

#: A scanner takes file paths and returns ``{path: (verdict, detail)}``.
Scanner = Callable[[Sequence[Path]], dict[str, tuple[str, str]]]


@dataclass
class ScanOutcome:
    """Verdict per file (``safe`` | ``suspicious`` | ``unsafe`` | ``error``) and why."""

    verdicts: dict[str, str] = field(default_factory=dict)
    details: dict[str, str] = field(default_factory=dict)

    @property
    def refused(self) -> dict[str, str]:
        return {p: v for p, v in self.verdicts.items() if v not in ACCEPTED}

    def summary(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for v in self.verdicts.values():
            counts[v] = counts.get(v, 0) + 1
        return {"counts": counts, "refused": self.refused, "details": self.details}


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _unrecognised(path: Path, sniff: Callable[[bytes, int | None], str]) -> bool:
    """True when the scanner's own format sniffing finds no model or pickle format at all."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
        return sniff(head, path.stat().st_size) == "unknown"
    except OSError:
        return False


def supplychain_scanner(paths: Sequence[Path]) -> dict[str, tuple[str, str]]:
    """Adapter over ``mlwarden.supplychain.scan_paths`` (the scanner's public function)."""
    try:
        supplychain = importlib.import_module("mlwarden.supplychain")
        scan_paths = supplychain.scan_paths
    except (ImportError, AttributeError) as exc:
        raise RuntimeError(f"the model-file scanner is not available ({exc})") from None
    result = scan_paths([str(p) for p in paths])
    files = _get(result, "files")
    if files is None and isinstance(result, list):
        files = result
    if files is None:
        raise RuntimeError("the model-file scanner returned no per-file results")
    sniff = getattr(supplychain, "sniff", None)
    out: dict[str, tuple[str, str]] = {}
    for f in files:
        path = str(_get(f, "path"))
        raw = _get(f, "verdict", "error")
        verdict = str(getattr(raw, "value", raw)).lower()
        # the scanner's own "unknown" verdict; older scanners called these errors
        unknown = verdict == "error" and sniff is not None and _unrecognised(Path(path), sniff)
        if verdict == "unknown" or unknown:
            out[path] = (UNRECOGNISED, "not a model or pickle-based format")
            continue
        findings = _get(f, "findings") or []
        detail = "; ".join(
            str(_get(x, "message") or _get(x, "title") or _get(x, "rule") or x)
            for x in findings[:3]
        )
        out[path] = (verdict, detail)
    return out


def scan_files(paths: Sequence[Path], scanner: Scanner | None = None) -> ScanOutcome:
    """Scan ``paths``; any file the scanner did not report on counts as ``error``."""
    scanner = scanner or supplychain_scanner
    outcome = ScanOutcome()
    try:
        results = scanner(paths)
    except Exception as exc:  # fail closed: a scanner failure never passes a file
        for p in paths:
            outcome.verdicts[str(p)] = "error"
            outcome.details[str(p)] = f"scanner failed: {type(exc).__name__}: {exc}"
        return outcome
    by_resolved: dict[str, tuple[str, str]] | None = None
    for p in paths:
        found = results.get(str(p))
        if found is None:  # the scanner may name files by another spelling of the path
            if by_resolved is None:
                by_resolved = {str(Path(k).resolve()): v for k, v in results.items()}
            found = by_resolved.get(str(p.resolve()))
        verdict, detail = found or ("error", "the scanner did not report on this file")
        outcome.verdicts[str(p)] = verdict
        if detail:
            outcome.details[str(p)] = detail
    return outcome
