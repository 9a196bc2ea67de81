"""The audit plan: which checks to run on which artefacts (``mlwarden audit PLAN.yaml``).

A plan names its artefacts once (models, datasets, a registry, a gateway config) and
lists checks that refer to them by name. Relative paths resolve against the plan's
folder, so a plan and its artefacts can move together. Each check becomes one job
(:class:`~mlwarden.audit.jobs.Job`) that calls the owning package's public function.

Example plan::

    version: 1
    seed: 0
    artifacts:
      models: {cnn: artifacts/digits_cnn.pt}
      datasets: {digits: artifacts/digits.npz}
    checks:
      - {check: scan, paths: [cnn]}
      - {check: evasion, models: [cnn], data: digits, eps: 0.1}
    baseline:
      metrics:
        "evasion.*robust_accuracy*": {direction: higher, tolerance: 0.02}
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mlwarden.core.errors import InputFileError
from mlwarden.threats.schema import describe_validation_error, read_yaml


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PlanArtifacts(_Strict):
    models: dict[str, str] = Field(
        default_factory=dict,
        description="name -> model spec: a file (TorchScript, .pt2, ONNX, sklearn), URL or module:factory",
    )
    datasets: dict[str, str] = Field(
        default_factory=dict, description="name -> dataset: .npz, CSV, image folder or bundled name"
    )
    registry: str | None = Field(default=None, description="Registry folder (mlwarden registry).")
    trust: list[str] = Field(default_factory=list, description="Trusted public keys (PEM files).")
    gateway: str | None = Field(default=None, description="Gateway config file (mlwarden serve).")


class _Check(_Strict):
    name: str | None = Field(
        default=None, description="Job name, unique in the plan; prefixes its metrics."
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Extra keyword arguments passed to the check."
    )


class ScanCheck(_Check):
    check: Literal["scan"]
    paths: list[str] = Field(
        default_factory=list, description="Model names or paths; empty means every model."
    )
    allow: list[str] = Field(default_factory=list, description="Allowed globals (module.name).")
    policy: str | None = None


class RegistryVerifyCheck(_Check):
    check: Literal["registry-verify"]
    ref: str = Field(description="Registry reference: NAME, NAME@VERSION or NAME@ALIAS.")
    registry: str | None = Field(default=None, description="Defaults to artifacts.registry.")
    trust: list[str] | None = Field(default=None, description="Defaults to artifacts.trust.")
    path: str | None = Field(
        default=None,
        description="A deployed copy (file or folder) to re-hash against the manifest.",
    )


class DataCheck(_Check):
    check: Literal["data"]
    data: str
    model: str | None = None
    trainer: str | None = None


class EvasionCheck(_Check):
    check: Literal["evasion"]
    models: list[str] = Field(min_length=1)
    data: str
    norm: Literal["linf", "l2"] = "linf"
    eps: float = Field(default=0.3, gt=0)
    access: Literal["white", "score", "label"] | None = None


class PrivacyCheck(_Check):
    check: Literal["privacy"]
    model: str
    train: str
    holdout: str
    attack: str = Field(
        default="auto", description="auto picks lira for scores, label-only for labels only."
    )
    shadows: int = Field(default=16, ge=1)
    trainer: str | None = None
    access: Literal["white", "score", "label"] | None = None


class ExtractCheck(_Check):
    check: Literal["extract"]
    model: str
    pool: str
    budgets: list[int] = Field(default_factory=lambda: [100, 1000, 5000], min_length=1)
    access: Literal["white", "score", "label"] | None = None


class BackdoorCheck(_Check):
    check: Literal["backdoor"]
    model: str
    data: str


class GatewayConfigCheck(_Check):
    check: Literal["gateway-config"]
    config: str | None = Field(default=None, description="Defaults to artifacts.gateway.")


class ThreatsCheck(_Check):
    check: Literal["threats"]
    system: str = Field(description="A SYSTEM.yaml threat-model description.")
    advisory: bool = Field(
        default=True,
        description="Report threats at info severity (rating kept in evidence), so that "
        "--fail-on acts on what the measuring checks find.",
    )


class CustomCheck(_Check):
    check: Literal["custom"]
    function: str = Field(
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="module:function returning a Report; called with **params and seed=.",
    )
    params: dict[str, Any] = Field(default_factory=dict)
    inputs: list[str] = Field(
        default_factory=list, description="Files whose content keys the cache (plan-relative)."
    )


CheckSpec = Annotated[
    ScanCheck
    | RegistryVerifyCheck
    | DataCheck
    | EvasionCheck
    | PrivacyCheck
    | ExtractCheck
    | BackdoorCheck
    | GatewayConfigCheck
    | ThreatsCheck
    | CustomCheck,
    Field(discriminator="check"),
]


class MetricRule(_Strict):
    """Which way a metric should move, and how much worse it may get before CI fails."""

    direction: Literal["higher", "lower"] = Field(description="Which direction is better.")
    tolerance: float = Field(default=0.0, ge=0, description="Allowed worsening, absolute units.")


class BaselineSettings(_Strict):
    metrics: dict[str, MetricRule] = Field(
        default_factory=dict,
        description="Glob over metric names -> rule; first match wins, before the defaults.",
    )


class Plan(_Strict):
    version: Literal[1] = 1
    name: str = ""
    seed: int = 0
    artifacts: PlanArtifacts = Field(default_factory=PlanArtifacts)
    checks: list[CheckSpec] = Field(min_length=1)
    baseline: BaselineSettings = Field(default_factory=BaselineSettings)
    cache: bool = Field(default=True, description="Reuse results of unchanged jobs.")

    #: The folder relative paths resolve against (the plan file's folder).
    base_dir: Path = Field(default=Path("."), exclude=True)

    @field_validator("checks")
    @classmethod
    def _unique_names(cls, checks: list[Any]) -> list[Any]:
        counts: dict[str, int] = {}
        for spec in checks:
            if spec.name is None:
                continue
            counts[spec.name] = counts.get(spec.name, 0) + 1
        dup = [n for n, c in counts.items() if c > 1]
        if dup:
            raise ValueError(f"check names must be unique; repeated: {', '.join(dup)}")
        return checks


def parse_plan(raw: object, source: str, base_dir: Path) -> Plan:
    """Validate parsed YAML as a plan; a one-line error naming the first bad field."""
    if not isinstance(raw, dict):
        got = "an empty file" if raw is None else type(raw).__name__
        raise InputFileError(source, f"expected a plan mapping (artifacts, checks); got {got}")
    try:
        plan = Plan.model_validate(raw)
    except ValidationError as exc:
        raise InputFileError(source, describe_validation_error(exc)) from None
    plan.base_dir = base_dir
    return plan


def load_plan(path: Path) -> Plan:
    """Read PLAN.yaml; relative paths inside it resolve against its folder."""
    return parse_plan(read_yaml(path), str(path), path.resolve().parent)
