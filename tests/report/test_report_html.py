"""HTML report: one self-contained file with summary, ATLAS names, evidence and plots."""

from __future__ import annotations

import re
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

from mlwarden.core import atlas
from mlwarden.core.findings import Report
from mlwarden.report.html import render_html, write_html


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str, str]] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "action", "data", "poster") and value is not None:
                self.urls.append((tag, name, value))


def _parse(text: str) -> _Collect:
    parser = _Collect()
    parser.feed(text)
    return parser


def test_every_resource_is_inline(make_report: Callable[..., Report]) -> None:
    page = _parse(render_html(make_report()))

    assert page.urls, "expected inline images"
    for tag, attr, url in page.urls:
        assert url.startswith("data:"), f"<{tag} {attr}> points outside the file: {url[:60]}"
    assert "script" not in page.tags
    assert "Content-Security-Policy" in render_html(make_report())


def test_summary_counts_each_severity(make_report: Callable[..., Report]) -> None:
    text = render_html(make_report())

    for sev in ("critical", "high", "medium", "low", "info"):
        block = re.search(rf'id="count-{sev}"><span class="n">(\d+)</span>', text)
        assert block is not None and block.group(1) == "1", sev


def test_findings_show_atlas_names_and_ids_from_the_catalogue(
    make_report: Callable[..., Report],
) -> None:
    text = render_html(make_report())

    for ident in ("AML.T0043.000", "AML.T0015", "AML.M0003", "AML.M0004"):
        assert ident in text
        assert atlas.get(ident).full_name in text


def test_findings_show_recommendation_evidence_and_metrics(
    make_report: Callable[..., Report],
) -> None:
    text = render_html(make_report())

    assert "Fix it (MLW-EVA-001)." in text
    assert "robust_accuracy" in text and "0.125" in text
    assert "evasion.robust.pgd" in text  # nested metrics are flattened
    assert "evasion.clean_accuracy" in text


def test_findings_are_ordered_most_severe_first(make_report: Callable[..., Report]) -> None:
    text = render_html(make_report())
    positions = [text.index(f"MLW-EVA-00{i}</span>") for i in range(1, 6)]

    assert positions == sorted(positions)


def test_text_from_findings_is_escaped(make_report: Callable[..., Report]) -> None:
    text = render_html(make_report())

    assert "<script>alert(1)</script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_plot_images_are_embedded(make_report: Callable[..., Report]) -> None:
    report = make_report()
    text = render_html(report)

    assert report.images["robust accuracy"] in text


def test_an_image_that_is_not_inline_is_listed_not_loaded(
    make_report: Callable[..., Report],
) -> None:
    report = make_report()
    report.images["remote"] = "https://example.invalid/track.png"
    text = render_html(report)

    assert "https://example.invalid/track.png" not in text
    assert "Not shown (not an inline image): remote" in text


def test_failed_check_is_visible(make_report: Callable[..., Report]) -> None:
    text = render_html(make_report())

    assert "1 failed to complete" in text
    assert "boom" in text


def test_empty_report_renders(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "r.html"
    write_html(Report.new("scan"), path)

    text = path.read_text(encoding="utf-8")
    assert "No findings." in text
    assert not list(tmp_path.glob("sub/*.tmp"))
