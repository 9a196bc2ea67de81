"""``mlwarden audit`` end to end: report formats, exit codes, baseline, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

EXAMPLE = Path(__file__).parents[2] / "src" / "mlwarden" / "threats" / "example.yaml"


def subprocess_mlwarden(*args: str, cwd: Path, pythonpath: str = "") -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=pythonpath)
    return subprocess.run(
        [sys.executable, "-m", "mlwarden", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )


def setup_plan(folder: Path, job_module: str, data: Path, threshold: float) -> Path:
    (folder / "system.yaml").write_text(EXAMPLE.read_text())
    plan = {
        "checks": [
            {"check": "threats", "system": "system.yaml"},
            {
                "check": "custom",
                "name": "fit",
                "function": f"{job_module}:fit_score",
                "params": {"data": str(data), "threshold": threshold},
            },
            {"check": "custom", "name": "bad", "function": f"{job_module}:broken"},
        ],
        "cache": False,
    }
    path = folder / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    return path


def test_audit_writes_junit_and_sarif_with_error_and_threat_results(
    cli, job_module: str, dataset_file: Path
) -> None:
    folder = dataset_file.parents[1]
    setup_plan(folder, job_module, dataset_file, threshold=0.0)
    res = cli(
        "audit", "plan.yaml", "--junit", "out/a.xml", "--sarif", "out/a.sarif", "--json",
        "out/a.json", "--fail-on", "high", cwd=folder,
    )  # fmt: skip
    assert res.returncode == 1, res.stderr  # the broken job is a high finding
    root = ET.parse(folder / "out" / "a.xml").getroot()
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert set(cases) == {"threats", "fit", "bad"}  # one test case per plan check
    assert cases["bad"].find("error") is not None
    assert cases["fit"].find("failure") is None and cases["fit"].find("error") is None
    assert cases["threats"].find("failure") is None  # threats are advisory in an audit
    sarif = json.loads((folder / "out" / "a.sarif").read_text())
    rule_ids = {r["ruleId"] for run in sarif["runs"] for r in run["results"]}
    assert {"MLW-AUD-001", "MLW-THR-010"} <= rule_ids
    report = json.loads((folder / "out" / "a.json").read_text())
    assert report["metrics"]["audit.jobs_failed"] == 1


def test_baseline_passes_when_nothing_regressed_and_fails_on_worse_metric(
    cli, job_module: str, dataset_file: Path
) -> None:
    folder = dataset_file.parents[1]
    setup_plan(folder, job_module, dataset_file, threshold=0.0)
    first = cli("audit", "plan.yaml", "--json", "base.json", "-q", cwd=folder)
    assert first.returncode == 2, first.stderr  # the plan's broken job: incomplete, fail closed
    same = cli(
        "audit",
        "plan.yaml",
        "--baseline",
        "base.json",
        "--fail-on",
        "info",
        cwd=folder,
    )
    assert same.returncode == 2, same.stderr  # no regression, but still incomplete
    assert "no regressions" in same.stderr
    base = json.loads((folder / "base.json").read_text())
    base["metrics"]["fit.robust_accuracy"] += 0.5  # the baseline was much better
    (folder / "better.json").write_text(json.dumps(base))
    worse = cli(
        "audit", "plan.yaml", "--baseline", "better.json", "--json", "now.json", cwd=folder,

    )  # fmt: skip
    assert worse.returncode == 1
    now = json.loads((folder / "now.json").read_text())
    assert any(f["rule"] == "MLW-AUD-002" for f in now["findings"])


def test_new_finding_against_baseline_fails(cli, job_module: str, dataset_file: Path) -> None:
    folder = dataset_file.parents[1]
    setup_plan(folder, job_module, dataset_file, threshold=0.0)
    cli("audit", "plan.yaml", "--json", "base.json", "-q", cwd=folder)
    setup_plan(folder, job_module, dataset_file, threshold=1.01)  # now fit_score reports a finding
    res = cli("audit", "plan.yaml", "--baseline", "base.json", cwd=folder)
    assert res.returncode == 1
    assert "1 regression" in res.stderr


def test_bad_executor_and_bad_plan_are_one_line_errors(cli, tmp_path: Path) -> None:
    (tmp_path / "plan.yaml").write_text("checks: [{check: threats, system: nope.yaml}]\n")
    res = cli("audit", "plan.yaml", "--executor", "gpu", cwd=tmp_path)
    assert res.returncode == 2 and "unknown executor" in res.stderr
    res = subprocess_mlwarden("audit", "plan.yaml", cwd=tmp_path)  # the real entry point
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "checks.0.system: file not found" in res.stderr


def test_audit_with_a_check_that_could_not_run_exits_2_without_fail_on(
    cli, job_module: str, dataset_file: Path
) -> None:
    folder = dataset_file.parents[1]
    setup_plan(folder, job_module, dataset_file, threshold=0.0)
    res = cli("audit", "plan.yaml", cwd=folder)
    assert res.returncode == 2, res.stderr
    assert "could not run: bad" in res.stderr


def test_a_failed_check_shows_its_message_on_the_console(
    cli, job_module: str, dataset_file: Path
) -> None:
    """Not only the exception type: the reason, on the terminal (issue 16)."""
    folder = dataset_file.parents[1]
    setup_plan(folder, job_module, dataset_file, threshold=0.0)
    res = cli("audit", "plan.yaml", cwd=folder)
    assert res.returncode == 2
    shown = res.stdout + res.stderr
    assert "bad" in shown and "this check is broken on purpose" in shown
    progress = [ln for ln in res.stderr.splitlines() if "] bad:" in ln]
    assert progress and "this check is broken on purpose" in progress[0]
