"""The audit runner: jobs on executors, error findings, the result cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mlwarden.audit import jobs as audit_jobs
from mlwarden.audit.plan import load_plan
from mlwarden.audit.runner import run_plan

EXAMPLE = Path(__file__).parents[2] / "src" / "mlwarden" / "threats" / "example.yaml"


def write_plan(folder: Path, checks: list[dict], **extra: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "plan.yaml"
    path.write_text(yaml.safe_dump({"checks": checks, **extra}), encoding="utf-8")
    return path


def runs(counter: Path) -> int:
    return len(counter.read_text().splitlines()) if counter.exists() else 0


def test_failing_job_becomes_error_finding_and_others_still_run(
    job_module: str, dataset_file: Path
) -> None:
    plan = write_plan(
        dataset_file.parents[1],
        [
            {"check": "custom", "name": "bad", "function": f"{job_module}:broken"},
            {
                "check": "custom",
                "name": "good",
                "function": f"{job_module}:fit_score",
                "params": {"data": str(dataset_file)},
            },
        ],
        cache=False,
    )
    report = run_plan(load_plan(plan))
    errors = [f for f in report.findings if f.rule == "MLW-AUD-001"]
    assert len(errors) == 1 and errors[0].check == "bad"
    assert "broken on purpose" in errors[0].description
    assert errors[0].severity.value == "high"
    assert "good.robust_accuracy" in report.metrics
    status = {c.name: c.status for c in report.checks}
    assert status == {"bad": "error", "good": "ok"}


def test_missing_public_function_becomes_error_finding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(audit_jobs.FUNCTIONS, "threats", "mlwarden.threats:no_such_function")
    (tmp_path / "system.yaml").write_text(EXAMPLE.read_text())
    plan = write_plan(tmp_path, [{"check": "threats", "system": "system.yaml"}], cache=False)
    report = run_plan(load_plan(plan))
    (finding,) = report.findings
    assert finding.rule == "MLW-AUD-001"
    assert "has no public function no_such_function" in finding.description


def test_job_returning_something_else_than_a_report_is_an_error(job_module: str, tmp_path: Path):
    plan = write_plan(
        tmp_path, [{"check": "custom", "function": f"{job_module}:not_a_report"}], cache=False
    )
    report = run_plan(load_plan(plan))
    assert [f.rule for f in report.findings] == ["MLW-AUD-001"]
    assert "expected a Report" in report.findings[0].description


def test_second_run_reuses_cached_results(job_module: str, dataset_file: Path, tmp_path: Path):
    counter = tmp_path / "counter.txt"
    check = {
        "check": "custom",
        "function": f"{job_module}:fit_score",
        "params": {"counter": str(counter)},
        "inputs": ["data/digits.npz"],
    }
    check["params"]["data"] = str(dataset_file)
    plan = load_plan(write_plan(dataset_file.parents[1], [check]))
    first = run_plan(plan)
    second = run_plan(plan)
    assert runs(counter) == 1
    assert second.metrics["audit.jobs_cached"] == 1
    assert second.metrics["custom.robust_accuracy"] == first.metrics["custom.robust_accuracy"]
    assert (dataset_file.parents[1] / ".mlwarden" / "cache").is_dir()


def test_changed_input_file_or_parameter_reruns_the_job(
    job_module: str, dataset_file: Path, tmp_path: Path
):
    import numpy as np

    counter = tmp_path / "counter.txt"
    params = {"counter": str(counter), "data": str(dataset_file)}
    check = {"check": "custom", "function": f"{job_module}:fit_score", "params": params}
    check["inputs"] = ["data/digits.npz"]
    folder = dataset_file.parents[1]
    run_plan(load_plan(write_plan(folder, [check])))
    arrays = dict(np.load(dataset_file))
    arrays["y"] = arrays["y"][::-1].copy()
    np.savez(dataset_file, **arrays)
    run_plan(load_plan(write_plan(folder, [check])))
    assert runs(counter) == 2
    params["threshold"] = 0.5
    run_plan(load_plan(write_plan(folder, [check])))
    assert runs(counter) == 3


def test_failed_jobs_are_not_cached(job_module: str, tmp_path: Path) -> None:
    plan = load_plan(
        write_plan(tmp_path, [{"check": "custom", "function": f"{job_module}:broken"}])
    )
    run_plan(plan)
    again = run_plan(plan)
    assert again.metrics["audit.jobs_cached"] == 0
    assert again.metrics["audit.jobs_failed"] == 1


def _comparable(report) -> tuple:
    findings = sorted((f.rule, f.title, f.severity.value, f.check) for f in report.findings)
    metrics = {k: v for k, v in report.metrics.items()}
    return findings, metrics, [(c.name, c.status) for c in report.checks]


def test_local_and_process_executors_give_identical_reports(
    job_module: str, dataset_file: Path
) -> None:
    folder = dataset_file.parents[1]
    (folder / "system.yaml").write_text(EXAMPLE.read_text())
    checks = [
        {"check": "threats", "system": "system.yaml"},
        {
            "check": "custom",
            "name": "fit",
            "function": f"{job_module}:fit_score",
            "params": {"data": str(dataset_file), "threshold": 1.01},
        },
        {"check": "custom", "name": "bad", "function": f"{job_module}:broken"},
    ]
    plan = load_plan(write_plan(folder, checks, seed=3, cache=False))
    local = run_plan(plan, executor="local")
    process = run_plan(plan, executor="process=2")
    assert _comparable(local) == _comparable(process)
    assert any(f.rule == "MLW-TST-001" for f in local.findings)


def test_the_audit_bar_is_the_only_progress_display(
    nested_module: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlwarden.core import console

    # As on a terminal: progress bars on unless quiet.
    monkeypatch.setattr(console, "progress_enabled", lambda: not console.settings.quiet)
    checks = [{"check": "custom", "function": f"{nested_module}:with_progress"}] * 2
    report = run_plan(load_plan(write_plan(tmp_path, checks, cache=False)))
    assert report.metrics["audit.jobs_failed"] == 0
    assert report.metrics["custom.total"] == 10
    assert report.metrics["custom.inner_bar_shown"] is False
    assert console.settings.quiet is False  # restored after the jobs


def test_threats_in_an_audit_are_advisory_unless_asked(tmp_path: Path) -> None:
    (tmp_path / "system.yaml").write_text(EXAMPLE.read_text())
    checks = [
        {"check": "threats", "system": "system.yaml"},
        {"check": "threats", "name": "rated", "system": "system.yaml", "advisory": False},
    ]
    report = run_plan(load_plan(write_plan(tmp_path, checks, cache=False)))
    advisory = [f for f in report.findings if f.check == "threats"]
    rated = [f for f in report.findings if f.check == "rated"]
    assert advisory and {f.severity.value for f in advisory} == {"info"}
    assert [f.evidence["rated_severity"] for f in advisory] == [f.severity.value for f in rated]
    assert "critical" in {f.severity.value for f in rated}


def test_debug_reraises_a_failed_job_for_its_traceback(
    job_module: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlwarden.core.console import settings

    monkeypatch.setattr(settings, "debug", True)
    plan = write_plan(tmp_path, [{"check": "custom", "function": f"{job_module}:broken"}])
    with pytest.raises(ValueError, match="broken on purpose"):
        run_plan(load_plan(plan), use_cache=False)


def test_jobs_on_http_or_module_factory_models_are_never_cached(tmp_path: Path) -> None:
    plan = write_plan(
        tmp_path,
        [
            {"check": "backdoor", "model": "https://models.example/m", "data": "digits"},
            {"check": "backdoor", "model": "mypkg.models:build", "data": "digits"},
            {"check": "backdoor", "model": "m.pt", "data": "digits"},
            {"check": "extract", "model": "api.target.yaml", "pool": "digits"},
        ],
    )
    (tmp_path / "m.pt").write_bytes(b"x")
    (tmp_path / "api.target.yaml").write_text("url: https://models.example/m\n")
    jobs = audit_jobs.build_jobs(load_plan(plan))
    # a target file describes a deployed API whose answers can change: never cached
    assert [j.cacheable for j in jobs] == [False, False, True, False]
