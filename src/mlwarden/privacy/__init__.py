"""Privacy and theft: membership inference (AML.T0024.000) and model extraction (AML.T0024.002).

Public entry points: :func:`privacy_report` and :func:`extract_report` (what the
``mlwarden privacy`` and ``mlwarden extract`` commands call), plus the in-memory
:func:`audit_membership`, :func:`knockoff` and :func:`equation_solving`.
"""

from mlwarden.privacy.audit import MembershipResult, audit_membership
from mlwarden.privacy.extraction import equation_solving, knockoff
from mlwarden.privacy.reports import extract_report, privacy_report

__all__ = [
    "MembershipResult",
    "audit_membership",
    "equation_solving",
    "extract_report",
    "knockoff",
    "privacy_report",
]
