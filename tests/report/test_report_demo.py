"""Reports produced by a real command validate: ``mlwarden demo`` runs every check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import xmlschema

from mlwarden.report.json_report import validation_errors


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("demo")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlwarden",
            "demo",
            "--out",
            str(out),
            "--sarif",
            str(out / "report.sarif"),
            "--junit",
            str(out / "junit.xml"),
            "--fail-on",
            "info",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    return {"out": out, "proc": proc}


pytestmark = pytest.mark.slow


def test_demo_report_json_validates_against_the_schema(demo_run: dict[str, Any]) -> None:
    data = json.loads((demo_run["out"] / "report.json").read_text(encoding="utf-8"))

    assert validation_errors(data) == []
    assert data["command"] == "demo"


def test_demo_sarif_validates_against_the_official_schema(
    demo_run: dict[str, Any], check_sarif: Callable[[Any], list[str]]
) -> None:
    log = json.loads((demo_run["out"] / "report.sarif").read_text(encoding="utf-8"))
    data = json.loads((demo_run["out"] / "report.json").read_text(encoding="utf-8"))

    assert check_sarif(log) == []
    assert len(log["runs"][0]["results"]) == len(data["findings"])


def test_demo_junit_has_a_case_per_check(demo_run: dict[str, Any]) -> None:
    data = json.loads((demo_run["out"] / "report.json").read_text(encoding="utf-8"))
    root = ET.parse(demo_run["out"] / "junit.xml").getroot()

    names = [case.get("name") for case in root.iter("testcase")]
    for check in data["checks"]:
        assert check["name"] in names
    # --fail-on info: every finding is exactly one failure
    assert len(list(root.iter("failure"))) == len(data["findings"])
    xsd = Path(__file__).parent / "data" / "junit-10.xsd"
    xmlschema.XMLSchema(str(xsd)).validate(str(demo_run["out"] / "junit.xml"))


def test_demo_fail_on_info_exits_1_exactly_when_there_are_findings(
    demo_run: dict[str, Any],
) -> None:
    proc: subprocess.CompletedProcess[str] = demo_run["proc"]
    data = json.loads((demo_run["out"] / "report.json").read_text(encoding="utf-8"))

    expected = 1 if data["findings"] else 0
    assert proc.returncode == expected, proc.stderr[-2000:]
    assert (demo_run["out"] / "report.html").stat().st_size > 1000


def test_demo_writes_nothing_to_stderr_when_quiet(demo_run: dict[str, Any]) -> None:
    proc: subprocess.CompletedProcess[str] = demo_run["proc"]

    assert "Traceback" not in proc.stderr


@pytest.mark.browser
def test_demo_html_report_opens_cleanly_in_chromium(demo_run: dict[str, Any], browser: Any) -> None:
    page = browser.open(demo_run["out"] / "report.html")
    data = json.loads((demo_run["out"] / "report.json").read_text(encoding="utf-8"))

    assert page["errors"] == []
    assert page["findings"] == len(data["findings"])
    assert all(img["complete"] and img["width"] > 0 for img in page["images"])
    assert len(page["images"]) >= len(data["images"])


def test_every_report_the_demo_wrote_validates(demo_run: dict[str, Any]) -> None:
    """The demo runs other commands too (the audit writes its own report and job cache)."""
    checked = 0
    for path in sorted(demo_run["out"].rglob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        embedded = [doc] if "schema_version" in doc else []
        if isinstance(doc.get("report"), dict):
            embedded.append(doc["report"])
        for report in embedded:
            assert validation_errors(report) == [], path
            checked += 1

    assert checked >= 1
