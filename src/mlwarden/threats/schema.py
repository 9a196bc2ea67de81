"""The system description: what a team writes down about its ML system.

``mlwarden threats SYSTEM.yaml`` reads a YAML file in this schema and decides which
attacks apply (see :mod:`mlwarden.threats.rules`). Every field is documented here and
in ``docs/threats.md``; ``mlwarden threats --example`` prints a filled-in file.

Answers that a team does not know are written ``unknown``; the rules treat an unknown
answer as the riskier one (a threat model fails closed, like every other check).

Example::

    system = load_system(Path("system.yaml"))
    system.deployment.exposure  # Exposure.PUBLIC_API
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from mlwarden.core.errors import InputFileError


class Modality(enum.StrEnum):
    IMAGE = "image"
    TABULAR = "tabular"
    TEXT = "text"
    AUDIO = "audio"
    OTHER = "other"


class Origin(enum.StrEnum):
    """Where the model comes from."""

    IN_HOUSE = "in-house"  #: trained from scratch by the team
    PUBLIC_HUB = "public-hub"  #: downloaded (and maybe fine-tuned) from a public model hub
    VENDOR_API = "vendor-api"  #: a third party's model, reached through its API


class Visibility(enum.StrEnum):
    """What an attacker can see of the model."""

    WHITE_BOX = "white-box"  #: weights published, shipped, or the same as a public model
    BLACK_BOX = "black-box"  #: only the prediction API's outputs


class DataSource(enum.StrEnum):
    OWN = "own"  #: collected and labelled by the team
    PUBLIC_VETTED = "public-vetted"  #: a public dataset from a known, checked source
    USER_PROVIDED = "user-provided"  #: records that users or customers submit
    SCRAPED = "scraped"  #: crawled from the web or other uncontrolled places


class Answer(enum.StrEnum):
    """A yes/no due-diligence answer where ``unknown`` is allowed (and counted as risky)."""

    YES = "yes"
    NO = "no"
    UNKNOWN = "unknown"


def _yes_no(value: object) -> object:
    # YAML 1.1 reads an unquoted yes/no as a boolean; accept it as the answer meant.
    if isinstance(value, bool):
        return "yes" if value else "no"
    return value


YesNo = Annotated[Answer, BeforeValidator(_yes_no)]


class Reach(enum.StrEnum):
    """Who can reach (read or change) a part of the pipeline; widest group counts."""

    TEAM = "team"  #: only the named ML team
    ORGANISATION = "organisation"  #: anyone inside the organisation
    THIRD_PARTIES = "third-parties"  #: contractors, vendors, partners too
    PUBLIC = "public"  #: anyone on the internet
    UNKNOWN = "unknown"


class Exposure(enum.StrEnum):
    """How the model is deployed."""

    PUBLIC_API = "public-api"  #: a prediction API reachable from the internet
    INTERNAL = "internal"  #: a service reachable only inside the organisation
    ON_DEVICE = "on-device"  #: shipped inside an app or device the user holds


class Outputs(enum.StrEnum):
    """What each prediction returns to the caller."""

    SCORES = "scores"  #: probabilities or logits for every class
    TOP_K = "top-k"  #: the best few classes with their scores
    LABELS = "labels"  #: only the predicted label


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", use_enum_values=False)


class ModelInfo(_Strict):
    origin: Origin = Field(description="in-house | public-hub | vendor-api")
    visibility: Visibility = Field(
        description="white-box (weights published, shipped or public) | black-box (API only)"
    )
    publisher: str = Field(
        default="",
        description="Due diligence: who published the model (hub account, vendor); '' if in-house.",
    )
    publisher_verified: YesNo = Field(
        default=Answer.UNKNOWN,
        description="Due diligence: is the publisher's identity checked and the file signed?",
    )
    fine_tuned: bool = Field(default=False, description="Fine-tuned on the team's own data.")
    file_formats: list[str] = Field(
        default_factory=list,
        description="Formats the model ships in: pickle, pytorch, joblib, onnx, safetensors, ...",
    )


class DataInfo(_Strict):
    sources: list[DataSource] = Field(
        min_length=1,
        description="Training data sources: own, public-vetted, user-provided, scraped",
    )
    sensitive: YesNo = Field(
        description="Does the training data hold personal or otherwise sensitive records?"
    )
    sensitive_kinds: list[str] = Field(
        default_factory=list, description="e.g. personal, health, financial, biometric"
    )
    provenance_documented: YesNo = Field(
        default=Answer.UNKNOWN,
        description="Due diligence: is where every dataset came from (and its licence) written down?",
    )


class AccessInfo(_Strict):
    training_pipeline: Reach = Field(description="Who can change training code, data and jobs.")
    model_store: Reach = Field(description="Who can read or replace stored model files.")
    others_with_access: list[str] = Field(
        default_factory=list,
        description="Due diligence: who else can reach the model or data (vendors, partners, ...).",
    )


class DeploymentInfo(_Strict):
    exposure: Exposure = Field(description="public-api | internal | on-device")
    outputs: Outputs = Field(default=Outputs.SCORES, description="scores | top-k | labels")
    authentication: YesNo = Field(default=Answer.UNKNOWN, description="Callers must log in.")
    rate_limited: YesNo = Field(default=Answer.UNKNOWN, description="Per-caller query limits.")
    monitored: YesNo = Field(
        default=Answer.UNKNOWN, description="Query streams are logged and watched for attacks."
    )
    retraining_on_user_feedback: bool = Field(
        default=False, description="The model is retrained on what users send or label."
    )


class Artifacts(_Strict):
    """Optional: where the files are, so ``--plan`` can fill in a ready-to-run audit plan.

    Paths are relative to the system file's folder.
    """

    models: dict[str, str] = Field(default_factory=dict, description="name -> model file or spec")
    datasets: dict[str, str] = Field(default_factory=dict, description="name -> dataset file")
    train: str | None = Field(default=None, description="Name of the training-set dataset.")
    holdout: str | None = Field(default=None, description="Name of a held-out dataset.")
    registry: str | None = Field(default=None, description="Registry folder.")
    registry_ref: str | None = Field(default=None, description="Registry reference NAME@VERSION.")
    gateway: str | None = Field(default=None, description="Gateway config file.")


class SystemDescription(_Strict):
    """An ML system, described by the questions a threat model asks."""

    name: str = Field(description="A short name for the system.")
    description: str = Field(default="", description="One or two sentences on what it does.")
    modality: Modality
    model: ModelInfo
    data: DataInfo
    access: AccessInfo
    deployment: DeploymentInfo
    artifacts: Artifacts = Field(default_factory=Artifacts)

    def facts(self) -> dict[str, Any]:
        """Plain values (enums as strings) by dotted path, for the rule conditions."""
        flat: dict[str, Any] = {}
        _flatten(self.model_dump(mode="json", exclude={"artifacts"}), "", flat)
        return flat


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, sub in value.items():
            _flatten(sub, f"{prefix}{key}.", out)
    else:
        out[prefix[:-1]] = value


def parse_system(raw: object, source: str = "system") -> SystemDescription:
    """Validate already-parsed YAML; a one-line error naming the first bad field."""
    if not isinstance(raw, dict):
        raise InputFileError(
            source, f"expected a mapping of fields (name, modality, model, ...); got {_kind(raw)}"
        )
    try:
        return SystemDescription.model_validate(raw)
    except ValidationError as exc:
        raise InputFileError(source, describe_validation_error(exc)) from None


def load_system(path: Path) -> SystemDescription:
    """Read and validate a SYSTEM.yaml file."""
    return parse_system(read_yaml(path), str(path))


def read_yaml(path: Path) -> object:
    """Parse a YAML file with the safe loader; one-line errors for missing or malformed files."""
    if not path.is_file():
        raise InputFileError(path, "no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError(path, f"cannot read it as UTF-8 text ({exc})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise InputFileError(path, f"malformed YAML{where}: {problem}") from None


def describe_validation_error(exc: ValidationError) -> str:
    """The first pydantic error as 'field a.b: what was wrong (expected ...)'."""
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "(top level)"
    kind = first["type"]
    if kind == "missing":
        return f"field {field}: missing (required)"
    if kind == "extra_forbidden":
        return f"field {field}: unknown field (check the spelling; see docs/threats.md)"
    if kind == "enum":
        expected = first.get("ctx", {}).get("expected", "")
        return f"field {field}: {first['input']!r} is not allowed; expected {expected}"
    return f"field {field}: {first['msg']} (got {first.get('input')!r})"


def _kind(value: object) -> str:
    if value is None:
        return "an empty file"
    return type(value).__name__
