"""Open produced HTML reports in a real headless Chromium and check what a person sees.

The browser is driven by the ``browser`` fixture in ``conftest.py`` (the DevTools
protocol over ``--remote-debugging-pipe``; no extra package, no browser download).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlwarden.core.findings import Finding, Report, Severity
from mlwarden.report.html import write_html
from mlwarden.report.plots import image_grid, line_plot

pytestmark = pytest.mark.browser


def _report_with_plot() -> Report:
    report = Report.new("evasion", seed=3)
    report.add(
        Finding(
            rule="MLW-EVA-001",
            title="Robust accuracy drops to 3% under PGD at eps=0.1",
            severity=Severity.HIGH,
            atlas=["AML.T0043.000", "AML.T0015"],
            mitigations=["AML.M0003"],
            description="A white-box attacker flips almost every prediction.",
            recommendation="Train with PGD adversarial training (Madry et al.).",
            evidence={
                "robust_accuracy": 0.03,
                "eps": 0.1,
                "curve": line_plot({"a": ([0, 1], [1, 0])}),
            },
            artifact="model.pt",
            check="evasion",
        )
    )
    report.images["robust accuracy"] = line_plot(
        {"PGD": ([0.0, 0.05, 0.1], [0.98, 0.4, 0.03])}, title="robust accuracy", xlabel="eps"
    )
    rng = np.random.default_rng(0)
    report.images["examples"] = image_grid(rng.random((4, 1, 8, 8)), titles=list("abcd"))
    with report.timed("evasion"):
        pass
    return report


def test_report_opens_without_console_errors_and_every_image_loads(
    browser: Any, tmp_path: Path
) -> None:
    path = tmp_path / "report.html"
    write_html(_report_with_plot(), path)

    page = browser.open(path)

    assert page["errors"] == []
    assert page["findings"] == 1
    assert len(page["images"]) == 3  # two figures and one evidence plot
    assert all(img["complete"] and img["width"] > 0 and img["height"] > 0 for img in page["images"])


def test_harness_sees_a_broken_image_and_a_blocked_remote_resource(
    browser: Any, tmp_path: Path
) -> None:
    """The checks above can fail: a corrupt inline image and a remote one are caught."""
    path = tmp_path / "broken.html"
    path.write_text(
        "<!doctype html><html><head><title>x</title>"
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; img-src data:\">"
        "</head><body><img alt='corrupt' src='data:image/png;base64,iVBORw0KGgoAAAA='>"
        "<img alt='remote' src='http://192.0.2.1/x.png'></body></html>",
        encoding="utf-8",
    )

    page = browser.open(path)

    assert [img["width"] for img in page["images"]] == [0, 0]
    assert any("Content Security Policy" in e or "192.0.2.1" in e for e in page["errors"])
