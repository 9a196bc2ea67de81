"""Threat rules as data: load ``rules.yaml``, check it, and evaluate its conditions.

A rule says when a threat applies to a :class:`~mlwarden.threats.schema.SystemDescription`,
how likely and how harmful it is (with the reasons), which ATLAS techniques it maps
to and which mlwarden checks and ATLAS mitigations address it. The rule file is checked
when loaded: unknown fields, field paths that the schema does not have, values a field
cannot take and ATLAS ids missing from ``core/atlas.yaml`` are errors.

Condition language (YAML mappings, every entry must hold)::

    {model.origin: public-hub}                 # equal; for a list field: contains
    {data.sources: [user-provided, scraped]}   # any of these values
    {access.others_with_access: {nonempty: true}}
    {all: [c1, c2]}, {any: [c1, c2]}, {not: c}
"""

from __future__ import annotations

import enum
import types
import typing
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mlwarden.core import atlas
from mlwarden.core.errors import InputFileError
from mlwarden.threats.schema import Answer, SystemDescription, describe_validation_error

Level = Literal["low", "medium", "high"]
LEVELS: tuple[str, ...] = ("low", "medium", "high")
CHECKS: tuple[str, ...] = (
    "scan",
    "registry-verify",
    "data",
    "evasion",
    "privacy",
    "extract",
    "backdoor",
    "gateway-config",
)
_COMBINATORS = ("all", "any", "not")


class Adjust(BaseModel):
    model_config = ConfigDict(extra="forbid")
    when: Any
    by: int = Field(ge=-2, le=2)
    reason: str


class Judgement(BaseModel):
    """A starting level, why, and the conditions that raise or lower it."""

    model_config = ConfigDict(extra="forbid")
    base: Level
    reason: str
    adjust: list[Adjust] = Field(default_factory=list)


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=r"^MLW-THR-\d{3}$")
    title: str
    techniques: list[str] = Field(min_length=1)
    owasp: list[str] = Field(default_factory=list)
    when: Any
    likelihood: Judgement
    impact: Judgement
    checks: list[str]
    mitigations: list[str]
    recommendation: str

    @field_validator("techniques", "mitigations")
    @classmethod
    def _catalogued(cls, value: list[str]) -> list[str]:
        bad = atlas.unknown_ids(value)
        if bad:
            raise ValueError(f"ATLAS ids not in core/atlas.yaml: {', '.join(bad)}")
        return value

    @field_validator("checks")
    @classmethod
    def _known_checks(cls, value: list[str]) -> list[str]:
        bad = [c for c in value if c not in CHECKS]
        if bad:
            raise ValueError(f"unknown checks {bad}; expected some of {', '.join(CHECKS)}")
        return value

    @property
    def tactics(self) -> list[str]:
        """ATLAS tactics of the rule's techniques, from the catalogue, in first-seen order."""
        seen: dict[str, None] = {}
        for ident in self.techniques:
            for tactic in atlas.get(ident).tactics:
                seen.setdefault(tactic, None)
        return list(seen)


class RuleSet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int
    rules: list[Rule]


def field_types() -> dict[str, tuple[type, tuple[Any, ...] | None]]:
    """Every fact path of a system description -> (python type, allowed values or None)."""
    out: dict[str, tuple[type, tuple[Any, ...] | None]] = {}
    _walk(SystemDescription, "", out)
    return out


def _walk(model: type[BaseModel], prefix: str, out: dict[str, tuple[type, Any]]) -> None:
    for name, info in model.model_fields.items():
        if prefix == "" and name == "artifacts":
            continue
        path = f"{prefix}{name}"
        ann = info.annotation
        inner = ann
        if typing.get_origin(ann) is list:
            inner = typing.get_args(ann)[0]
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            _walk(inner, f"{path}.", out)
        elif isinstance(inner, type) and issubclass(inner, enum.Enum):
            out[path] = (inner, tuple(m.value for m in inner))
        elif inner is bool:
            out[path] = (bool, (True, False))
        elif isinstance(inner, type):
            out[path] = (inner, None)
        elif isinstance(inner, types.UnionType):
            out[path] = (object, None)


def normalise_condition(cond: Any, where: str) -> Any:
    """Check a condition against the schema and turn YAML's yes/no booleans into answers."""
    types_ = field_types()
    if not isinstance(cond, dict) or not cond:
        raise ValueError(f"{where}: a condition is a non-empty mapping; got {cond!r}")
    out: dict[str, Any] = {}
    for key, expected in cond.items():
        if key in ("all", "any"):
            if not isinstance(expected, list) or not expected:
                raise ValueError(f"{where}.{key}: expected a non-empty list of conditions")
            out[key] = [normalise_condition(c, f"{where}.{key}") for c in expected]
        elif key == "not":
            out[key] = normalise_condition(expected, f"{where}.not")
        elif key in types_:
            kind, allowed = types_[key]
            out[key] = _normalise_values(expected, kind, allowed, f"{where}.{key}")
        else:
            raise ValueError(f"{where}: {key!r} is not a field of the system description")
    return out


def _normalise_values(expected: Any, kind: type, allowed: Any, where: str) -> Any:
    if isinstance(expected, dict):
        if set(expected) != {"nonempty"} or not isinstance(expected["nonempty"], bool):
            raise ValueError(f"{where}: the only operator is {{nonempty: true|false}}")
        return expected
    values = expected if isinstance(expected, list) else [expected]
    fixed = []
    for value in values:
        if kind is Answer and isinstance(value, bool):
            value = "yes" if value else "no"
        if allowed is not None and value not in allowed:
            raise ValueError(f"{where}: {value!r} is not one of {list(allowed)}")
        fixed.append(value)
    return fixed


def matches(cond: dict[str, Any], facts: dict[str, Any]) -> bool:
    """True when every entry of the (normalised) condition holds for ``facts``."""
    for key, expected in cond.items():
        if key == "all":
            ok = all(matches(c, facts) for c in expected)
        elif key == "any":
            ok = any(matches(c, facts) for c in expected)
        elif key == "not":
            ok = not matches(expected, facts)
        else:
            ok = _value_matches(facts.get(key), expected)
        if not ok:
            return False
    return True


def _value_matches(actual: Any, expected: Any) -> bool:
    if isinstance(expected, dict):
        return bool(actual) == expected["nonempty"]
    if isinstance(actual, list):
        return any(v in expected for v in actual)
    return actual in expected


def parse_rules(raw: object, source: str) -> RuleSet:
    """Validate a parsed rule file; a one-line error naming the bad rule and field."""
    try:
        ruleset = RuleSet.model_validate(raw)
    except ValidationError as exc:
        raise InputFileError(source, describe_validation_error(exc)) from None
    seen: set[str] = set()
    for i, rule in enumerate(ruleset.rules):
        if rule.id in seen:
            raise InputFileError(source, f"rules.{i}: duplicate rule id {rule.id}")
        seen.add(rule.id)
        try:
            rule.when = normalise_condition(rule.when, f"{rule.id}.when")
            for name in ("likelihood", "impact"):
                judgement: Judgement = getattr(rule, name)
                for j, adj in enumerate(judgement.adjust):
                    adj.when = normalise_condition(adj.when, f"{rule.id}.{name}.adjust.{j}.when")
        except ValueError as exc:
            raise InputFileError(source, str(exc)) from None
    return ruleset


@cache
def builtin_rules() -> RuleSet:
    """The rules shipped with mlwarden (``mlwarden/threats/rules.yaml``)."""
    text = resources.files("mlwarden.threats").joinpath("rules.yaml").read_text(encoding="utf-8")
    return parse_rules(yaml.safe_load(text), "mlwarden/threats/rules.yaml")


def load_rules(path: Path | None = None) -> RuleSet:
    """The built-in rules, or a team's own rule file in the same format."""
    if path is None:
        return builtin_rules()
    from mlwarden.threats.schema import read_yaml

    return parse_rules(read_yaml(path), str(path))
