"""Model-file scanning: find code hidden in model files without ever loading them.

Public API::

    scan_file(path) -> FileResult            # one file, verdict + findings
    scan_paths(paths, policy=None) -> ScanResult
    scan_report(paths, allow=(), policy=None) -> Report
    safe_load(path)                          # scan, refuse unless safe, restricted load
    load_target(spec, access=None, **kw)     # MODEL spec -> Target (scanned first)

Threat: ATLAS AML.T0010.003 (AI Supply Chain Compromise: Model) and AML.T0011.000
(User Execution: Unsafe AI Artifacts).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlwarden.supplychain.loader import (
        RestrictedUnpickler,
        check_safe,
        load_target,
        safe_load,
    )
    from mlwarden.supplychain.policy import DEFAULT_POLICY, Policy, Verdict
    from mlwarden.supplychain.report import scan_report, to_report
    from mlwarden.supplychain.results import FileResult, Issue, ScanResult
    from mlwarden.supplychain.scanner import Limits, scan_bytes, scan_file, scan_paths, sniff

#: where each public name lives; modules load on first use (``mlwarden scan`` starts
#: without the loader's torch/numpy or the report models)
_HOME = {
    "RestrictedUnpickler": "loader",
    "check_safe": "loader",
    "load_target": "loader",
    "safe_load": "loader",
    "DEFAULT_POLICY": "policy",
    "Policy": "policy",
    "Verdict": "policy",
    "scan_report": "report",
    "to_report": "report",
    "FileResult": "results",
    "Issue": "results",
    "ScanResult": "results",
    "Limits": "scanner",
    "scan_bytes": "scanner",
    "scan_file": "scanner",
    "scan_paths": "scanner",
    "sniff": "scanner",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


__all__ = [
    "DEFAULT_POLICY",
    "FileResult",
    "Issue",
    "Limits",
    "Policy",
    "RestrictedUnpickler",
    "ScanResult",
    "Verdict",
    "check_safe",
    "load_target",
    "safe_load",
    "scan_bytes",
    "scan_file",
    "scan_paths",
    "scan_report",
    "sniff",
    "to_report",
]
