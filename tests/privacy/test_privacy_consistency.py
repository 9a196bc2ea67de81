"""Consistency of figures: a finding's title quotes the body's figures (pooled where the
body says pooled), no "from 100.0% to 100.0%", numbers rounded in HTML."""

from __future__ import annotations

import re

import numpy as np

from mlwarden.core.findings import Report, change_text
from mlwarden.evasion.report import _robust_accuracy_finding
from mlwarden.evasion.suite import EvaluationResult
from mlwarden.privacy.audit import MembershipResult, membership_findings
from mlwarden.privacy.metrics import roc_metrics
from mlwarden.report.html import render_html


def _result(seed: int, members_shift: float, pooled_shift: float) -> MembershipResult:
    rng = np.random.default_rng(seed)
    is_member = np.r_[np.ones(1500, bool), np.zeros(1500, bool)]
    scores = rng.normal(0, 1, 3000) + members_shift * is_member
    many = np.r_[np.ones(3000, bool), np.zeros(3000, bool)]
    pooled = roc_metrics(rng.normal(0, 1, 6000) + pooled_shift * many, many)
    return MembershipResult(
        "lira", scores, is_member, roc_metrics(scores, is_member), pooled, 0, 0.0,
        {"pooled_targets": 5},
    )  # fmt: skip


def _percentages(text: str) -> list[str]:
    return re.findall(r"\d+\.\d\d%", text)  # TPRs (two decimals), not the FPR levels


def test_title_quotes_the_figures_of_the_body_and_says_pooled_when_they_are() -> None:
    res = _result(0, members_shift=0.3, pooled_shift=3.0)  # pooled is far worse
    f = membership_findings(res, access="score")[0]
    assert "pooled over 5 models" in f.title and "(pooled)" in f.description
    assert f.evidence["pooled"] is True
    title_figures = _percentages(f.title)
    assert len(title_figures) == 2
    for figure in title_figures:  # the same figures, to the same digits, in the body
        assert figure in f.description, (figure, f.description)
    # the target's own (weaker) figure is not what the title quotes
    assert f"{res.metrics.tpr_at_fpr[0.01]:.2%}" not in title_figures


def test_title_on_the_target_alone_matches_its_body() -> None:
    res = _result(1, members_shift=1.5, pooled_shift=0.0)
    f = membership_findings(res, access="label")[0]
    assert "pooled" not in f.title and "label-only access" in f.title
    for figure in _percentages(f.title):
        assert figure in f.description


def test_no_change_is_said_as_unchanged_never_100_to_100() -> None:
    assert change_text(1.0, 0.9996) == "is unchanged at 100.0%"
    assert change_text(0.97, 0.12) == "falls from 97.0% to 12.0%"
    assert change_text(0.9, 0.9, prefix="at most ") == "is unchanged at 90.0% (at most)"
    assert change_text(0.9, 0.5, prefix="at most ") == "falls from 90.0% to at most 50.0%"
    res = EvaluationResult(
        clean_accuracy=1.0, robust_accuracy=0.9996, norm="linf", eps=0.1, n=2500,
        access="white", budget="standard",
    )  # fmt: skip
    title = _robust_accuracy_finding(res, "model.pt").title
    assert "100.0% to 100.0%" not in title and "unchanged at 100.0%" in title


def test_html_rounds_numbers_inside_lists_and_dicts() -> None:
    report = Report.new(command="extract")
    report.metrics["fidelity"] = {"100": 0.9629629629629629}
    report.metrics["ci"] = [0.123456789, 0.987654321]
    html = render_html(report)
    assert "0.9629629629629629" not in html and "0.963" in html
    assert "0.123456789" not in html and "0.1235" in html
