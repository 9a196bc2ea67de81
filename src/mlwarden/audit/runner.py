"""Run an audit plan: every check a job on core's executor, one merged report.

Jobs whose key (:func:`~mlwarden.audit.cache.job_key`) is in the cache are not run
again. The rest go to the executor (in-process, process pool or Ray); one progress
display counts all of them. A job that raises becomes a finding ``MLW-AUD-001``
(high, so ``--fail-on high`` fails the build: a check that could not run never
passes as clean) and the other jobs carry on.

Example::

    report = run_plan(load_plan(Path("plan.yaml")), executor="process=2")
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlwarden.audit.cache import JobCache, job_key
from mlwarden.audit.jobs import Job, build_jobs, run_job
from mlwarden.audit.plan import Plan
from mlwarden.core.console import info, progress_bar, settings
from mlwarden.core.executor import JobFailure, get_executor
from mlwarden.core.findings import CheckRecord, Finding, Report, Severity


@dataclass
class JobOutcome:
    job: Job
    report: dict[str, Any] | None = None
    failure: JobFailure | None = None
    cached: bool = False
    seconds: float = 0.0


def default_cache_dir(plan: Plan) -> Path:
    return plan.base_dir / ".mlwarden" / "cache"


def run_plan(
    plan: Plan,
    *,
    executor: str = "local",
    cache_dir: Path | None = None,
    use_cache: bool | None = None,
    source: str = "",
) -> Report:
    """Run every check of ``plan`` and merge the results into one report."""
    jobs = build_jobs(plan)
    use_cache = plan.cache if use_cache is None else use_cache
    cache = JobCache(cache_dir or default_cache_dir(plan)) if use_cache else None
    report = Report.new(command="audit", seed=plan.seed)
    report.target = {"name": plan.name or Path(source).stem or "audit", "plan": source}
    report.config = {
        "plan": source,
        "name": plan.name,
        "executor": executor,
        "cache": str(cache.directory) if cache else None,
        "jobs": [{"name": j.name, "check": j.kind, "function": j.function} for j in jobs],
    }
    outcomes = {j.name: JobOutcome(j) for j in jobs}
    keys = {j.name: job_key(j) for j in jobs if j.cacheable} if cache else {}
    todo: list[Job] = []
    start = time.perf_counter()
    with progress_bar("audit", total=len(jobs)) as bar:

        def advance(outcome: JobOutcome, done: int) -> None:
            state = "cached" if outcome.cached else ("error" if outcome.failure else "ok")
            if outcome.failure is not None:  # the reason, not only the exception type
                from rich.markup import escape

                state = f"error: {escape(failure_line(outcome.failure))}"
            if bar is not None:
                bar.advance(bar.task_ids[0])
            took = "" if outcome.cached or outcome.failure else f" ({outcome.seconds:.1f} s)"
            info(f"audit: [{done}/{len(jobs)}] {outcome.job.name}: {state}{took}")

        done = 0
        for job in jobs:
            hit = cache.get(keys[job.name]) if cache and job.name in keys else None
            if hit is not None:
                outcomes[job.name].report = hit
                outcomes[job.name].cached = True
                done += 1
                advance(outcomes[job.name], done)
            else:
                todo.append(job)
        if todo:
            with get_executor(executor) as ex:
                for i, result in ex.as_completed(_timed_job, todo, errors="return"):
                    outcome = outcomes[todo[i].name]
                    if isinstance(result, JobFailure):
                        outcome.failure = result
                    else:
                        outcome.report, outcome.seconds = result
                        if cache and outcome.job.name in keys:
                            cache.put(keys[outcome.job.name], outcome.job, outcome.report)
                    done += 1
                    advance(outcome, done)
    report.timings["audit.wall"] = round(time.perf_counter() - start, 4)
    failed = [o.job for o in outcomes.values() if o.failure is not None]
    if failed and settings.debug:
        # --debug: run the first failed job again in this process and let it raise,
        # so the command shows its traceback (a worker's traceback does not travel).
        info(f"audit: --debug: rerunning {failed[0].name} in-process for its traceback")
        run_job(failed[0])
    for job in jobs:  # merge in plan order, whatever order the jobs finished in
        _merge(report, outcomes[job.name])
    report.metrics["audit.jobs"] = len(jobs)
    report.metrics["audit.jobs_cached"] = sum(o.cached for o in outcomes.values())
    report.metrics["audit.jobs_failed"] = sum(o.failure is not None for o in outcomes.values())
    return report


def failure_line(failure: JobFailure, width: int = 200) -> str:
    """``Kind: first line of the message``, cut to ``width`` characters."""
    lines = [ln.strip() for ln in str(failure.error).splitlines() if ln.strip()]
    text = f"{failure.kind}: {lines[0]}" if lines else failure.kind
    return text if len(text) <= width else text[: width - 1] + "…"


def _timed_job(job: Job) -> tuple[dict[str, Any], float]:
    # The audit owns the one progress display: a check's own bars and status lines
    # would nest inside it (in-process) or draw over it (worker processes).
    quiet = settings.quiet
    settings.quiet = True
    t0 = time.perf_counter()
    try:
        result = run_job(job)
    finally:
        settings.quiet = quiet
    return result, time.perf_counter() - t0


def _merge(report: Report, outcome: JobOutcome) -> None:
    job = outcome.job
    if outcome.failure is not None:
        message = f"{outcome.failure.kind}: {outcome.failure.error}"
        report.checks.append(CheckRecord(name=job.name, status="error", message=message))
        report.add(
            Finding(
                rule="MLW-AUD-001",
                title=f"audit check {job.name!r} could not run: {failure_line(outcome.failure)}",
                severity=Severity.HIGH,
                description=outcome.failure.error,
                recommendation=(
                    "Fix the plan entry or the artefact it names; rerun with --debug for the "
                    "traceback. Until it runs, this check has not passed."
                ),
                evidence={"audit_job": job.name, "function": job.function, "error": message},
                check=job.name,
            )
        )
        return
    assert outcome.report is not None
    sub = Report.model_validate(outcome.report)
    for f in sub.findings:
        # Findings belong to the job's JUnit test case / SARIF run; keep the step name.
        f.evidence.setdefault("audit_job", job.name)
        if f.check and f.check != job.name:
            f.evidence.setdefault("step", f.check)
        f.check = job.name
    sub.checks = []
    sub.timings = {}
    report.merge(sub, prefix=job.name)
    report.timings[job.name] = round(outcome.seconds, 4)
    message = "cached result reused" if outcome.cached else ""
    report.checks.append(
        CheckRecord(name=job.name, status="ok", seconds=outcome.seconds, message=message)
    )
    if sub.target:
        report.artifacts.setdefault("targets", {})[job.name] = sub.target
