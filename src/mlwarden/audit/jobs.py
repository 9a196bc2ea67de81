"""Turn a plan's checks into jobs, and run one job.

A :class:`Job` is plain data (picklable, so it runs the same in-process, on a process
pool or on Ray): the public function to call (``module:function``), its keyword
arguments with every artefact name already resolved to an absolute path or spec, and
the files whose content identifies the job's inputs (for the result cache).

The function is imported inside the worker, lazily: a package that is missing or has
no such function makes the job fail, and the runner reports that as an error finding.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlwarden.audit.plan import (
    BackdoorCheck,
    CustomCheck,
    DataCheck,
    EvasionCheck,
    ExtractCheck,
    GatewayConfigCheck,
    Plan,
    PrivacyCheck,
    RegistryVerifyCheck,
    ScanCheck,
    ThreatsCheck,
)
from mlwarden.core.errors import UserError
from mlwarden.core.findings import Report

#: check kind -> the public function that runs it.
FUNCTIONS: dict[str, str] = {
    "scan": "mlwarden.audit.jobs:scan_job",
    "registry-verify": "mlwarden.integrity:verify_report",
    "data": "mlwarden.poisoning:data_report",
    "evasion": "mlwarden.evasion:evasion_report",
    "privacy": "mlwarden.privacy:privacy_report",
    "extract": "mlwarden.privacy:extract_report",
    "backdoor": "mlwarden.poisoning:backdoor_report",
    "gateway-config": "mlwarden.serve:gateway_config_report",
    "threats": "mlwarden.threats:threats_report",
}

_MODULE_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


@dataclass(frozen=True)
class Job:
    """One check of a plan, ready to run anywhere."""

    name: str
    kind: str
    function: str
    kwargs: dict[str, Any]
    inputs: tuple[str, ...] = field(default_factory=tuple)
    #: False when an input cannot be hashed (an http(s) model, a module:factory model
    #: whose code may change): such a job always runs.
    cacheable: bool = True


class _Resolver:
    """Resolves artefact names and plan-relative paths, naming the plan field on error."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.base = plan.base_dir
        self.inputs: list[str] = []
        self.unhashable: list[str] = []

    def path(self, value: str, where: str) -> Path:
        p = Path(value).expanduser()
        p = p if p.is_absolute() else (self.base / p)
        p = p.resolve()
        if not p.exists():
            raise UserError(f"plan field {where}: file not found: {p}")
        self.inputs.append(str(p))
        return p

    def spec(self, value: str, where: str) -> str:
        """A model or dataset spec: a file (made absolute), URL, module:factory or bundled name."""
        if "://" in value:
            self.unhashable.append(value)
            return value
        candidate = (self.base / Path(value).expanduser()).resolve()
        if candidate.exists():
            self.inputs.append(str(candidate))
            return str(candidate)
        if _MODULE_FACTORY.match(value):
            self.unhashable.append(value)
            return value
        if "/" not in value and "." not in value:
            return value  # a bundled dataset name such as "digits": fixed content
        raise UserError(f"plan field {where}: file not found: {candidate}")

    def model(self, ref: str, where: str) -> str:
        from mlwarden.core.target_file import is_target_file

        models = self.plan.artifacts.models
        spec = self.spec(models[ref], f"artifacts.models.{ref}") if ref in models else None
        spec = spec or self.spec(ref, where)
        if is_target_file(spec):
            # A deployed API: the file describes it, its answers may change at any time.
            self.unhashable.append(spec)
        return spec

    def data(self, ref: str, where: str) -> str:
        datasets = self.plan.artifacts.datasets
        if ref in datasets:
            return self.spec(datasets[ref], f"artifacts.datasets.{ref}")
        return self.spec(ref, where)


def build_jobs(plan: Plan) -> list[Job]:
    """One job per check, names made unique (``evasion``, ``evasion-2``, ...)."""
    jobs: list[Job] = []
    taken = {spec.name for spec in plan.checks if spec.name}
    counts: dict[str, int] = {}
    for i, spec in enumerate(plan.checks):
        name = spec.name
        if name is None:
            counts[spec.check] = counts.get(spec.check, 0) + 1
            name = spec.check if counts[spec.check] == 1 else f"{spec.check}-{counts[spec.check]}"
            while name in taken:
                name += "-x"
        taken.add(name)
        r = _Resolver(plan)
        kwargs = _kwargs(spec, r, f"checks.{i}")
        kwargs.update(spec.options)
        kwargs["seed"] = plan.seed
        function = spec.function if isinstance(spec, CustomCheck) else FUNCTIONS[spec.check]
        inputs = tuple(dict.fromkeys(r.inputs))
        jobs.append(Job(name, spec.check, function, kwargs, inputs, cacheable=not r.unhashable))
    return jobs


def _kwargs(spec: Any, r: _Resolver, where: str) -> dict[str, Any]:
    a = r.plan.artifacts
    if isinstance(spec, ScanCheck):
        refs = spec.paths or list(a.models)
        if not refs:
            raise UserError(f"plan field {where}.paths: no paths given and no models in artifacts")
        return {
            "paths": [r.model(p, f"{where}.paths") for p in refs],
            "allow": list(spec.allow),
            "policy": r.path(spec.policy, f"{where}.policy") if spec.policy else None,
        }
    if isinstance(spec, RegistryVerifyCheck):
        registry = spec.registry or a.registry
        trust = spec.trust if spec.trust is not None else a.trust
        return {
            "ref": spec.ref,
            "registry": r.path(registry, f"{where}.registry") if registry else None,
            "trust": [r.path(t, f"{where}.trust") for t in trust],
            "path": r.path(spec.path, f"{where}.path") if spec.path else None,
        }
    if isinstance(spec, DataCheck):
        return {
            "data": r.data(spec.data, f"{where}.data"),
            "model": r.model(spec.model, f"{where}.model") if spec.model else None,
            "trainer": spec.trainer,
        }
    if isinstance(spec, EvasionCheck):
        return {
            "models": [r.model(m, f"{where}.models") for m in spec.models],
            "data": r.data(spec.data, f"{where}.data"),
            "norm": spec.norm,
            "eps": spec.eps,
            "access": spec.access,
        }
    if isinstance(spec, PrivacyCheck):
        return {
            "model": r.model(spec.model, f"{where}.model"),
            "train": r.data(spec.train, f"{where}.train"),
            "holdout": r.data(spec.holdout, f"{where}.holdout"),
            "attack": spec.attack,
            "shadows": spec.shadows,
            "trainer": spec.trainer,
            "access": spec.access,
        }
    if isinstance(spec, ExtractCheck):
        return {
            "model": r.model(spec.model, f"{where}.model"),
            "pool": r.data(spec.pool, f"{where}.pool"),
            "budgets": tuple(spec.budgets),
            "access": spec.access,
        }
    if isinstance(spec, BackdoorCheck):
        return {
            "model": r.model(spec.model, f"{where}.model"),
            "data": r.data(spec.data, f"{where}.data"),
        }
    if isinstance(spec, GatewayConfigCheck):
        config = spec.config or a.gateway
        if not config:
            raise UserError(f"plan field {where}.config: no config given and no artifacts.gateway")
        return {"config": r.path(config, f"{where}.config")}
    if isinstance(spec, ThreatsCheck):
        return {"system": r.path(spec.system, f"{where}.system"), "advisory": spec.advisory}
    if isinstance(spec, CustomCheck):
        for inp in spec.inputs:
            r.path(inp, f"{where}.inputs")
        return dict(spec.params)
    raise AssertionError(f"unhandled check kind {spec.check}")


def resolve_function(function: str) -> Any:
    """Import ``module:attr``; a clear error when the package or function is missing."""
    module_name, _, attr = function.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RuntimeError(f"{module_name} cannot be imported ({exc})") from None
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise RuntimeError(f"{module_name} has no public function {attr}")
    return fn


def scan_job(
    paths: list[str], allow: Sequence[str] = (), policy: Path | None = None, seed: int = 0
) -> Report:
    """``supplychain.scan_report`` with the plan's policy file loaded into a Policy."""
    scan_report = resolve_function("mlwarden.supplychain:scan_report")
    loaded = None
    if policy is not None:
        loaded = resolve_function("mlwarden.supplychain:Policy").from_file(policy)
    report: Report = scan_report(paths, allow=allow, policy=loaded, seed=seed)
    return report


def run_job(job: Job) -> dict[str, Any]:
    """Run one job and return its report as JSON-ready data (what travels back and is cached)."""
    from mlwarden.report.json_report import report_dict

    fn = resolve_function(job.function)
    result = fn(**job.kwargs)
    if not isinstance(result, Report):
        raise TypeError(f"{job.function} returned {type(result).__name__}, expected a Report")
    return report_dict(result)
