"""Confidence intervals for the numbers mlwarden reports (accuracies, rates).

Every headline figure is measured on a sample, so it carries the uncertainty of that
sample. :func:`proportion_ci` gives the exact (Clopper-Pearson 1934, "The use of
confidence or fiducial limits illustrated in the case of the binomial") interval of
a proportion ``k/n``: conservative, never narrower than the data allow, and valid at
``k = 0`` and ``k = n`` where the normal approximation collapses to a point.

Example::

    lo, hi = proportion_ci(12, 100)      # robust accuracy 12% on 100 inputs
    round(lo, 3), round(hi, 3)           # (0.064, 0.2)
"""

from __future__ import annotations

from typing import Any

#: Confidence level of every interval mlwarden reports.
LEVEL = 0.95


def proportion_ci(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Two-sided Clopper-Pearson interval for a proportion: ``k`` successes of ``n`` trials.

    Returns ``(low, high)`` as fractions in [0, 1]; ``(0.0, 1.0)`` when ``n == 0``.
    """
    if n < 0 or not 0 <= k <= max(n, 0):
        raise ValueError(f"need 0 <= k <= n; got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    from scipy.stats import beta  # imported here: scipy.stats costs seconds to import

    a = (1 - level) / 2
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


def proportion(k: int, n: int, level: float = LEVEL) -> dict[str, Any]:
    """A proportion with its interval, as reports store it:
    ``{"value", "ci_low", "ci_high", "k", "n", "level"}``."""
    lo, hi = proportion_ci(k, n, level)
    return {
        "value": k / n if n else float("nan"),
        "ci_low": lo,
        "ci_high": hi,
        "k": int(k),
        "n": int(n),
        "level": level,
    }


def fmt_ci(lo: float, hi: float, digits: int = 1) -> str:
    """``"95% CI 6.4-20.0%"`` for an interval of fractions."""
    return f"{LEVEL:.0%} CI {lo * 100:.{digits}f}-{hi * 100:.{digits}f}%"
