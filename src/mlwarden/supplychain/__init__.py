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

from mlwarden.supplychain.loader import RestrictedUnpickler, check_safe, load_target, safe_load
from mlwarden.supplychain.policy import DEFAULT_POLICY, Policy, Verdict
from mlwarden.supplychain.report import scan_report, to_report
from mlwarden.supplychain.results import FileResult, Issue, ScanResult
from mlwarden.supplychain.scanner import Limits, scan_bytes, scan_file, scan_paths, sniff

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
