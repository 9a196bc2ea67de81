"""``mlwarden threats --init``: ask the threat-model questions and write SYSTEM.yaml.

The questions are the schema's own fields and descriptions (:mod:`mlwarden.threats.schema`),
so the prompt and the file format cannot drift apart. Each answer is validated as it is
typed, against the field's own type and constraints, and asked again when it does not fit
(a choice that is not offered, an empty list where one answer is required); list answers
are comma-separated.

Answers are kept as they are given (dotted field names, ``data.sources``): when the
session is interrupted (Ctrl-C, end of input) :func:`write_partial` saves them to
``SYSTEM.yaml.partial`` and the next ``--init`` resumes from there, asking only what is
left. Without prompts, :func:`answers_from` builds the description from an answers file
(the SYSTEM.yaml format, complete or not) and ``--set field=value`` flags.

Example::

    answers = answers_from(Path("answers.yaml"), ["deployment.outputs=labels"])
    system = parse_system(nest(answers), "answers")
"""

from __future__ import annotations

import enum
import typing
from pathlib import Path
from typing import Annotated, Any, TextIO

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError
from rich.console import Console
from rich.prompt import Confirm, Prompt

from mlwarden.core.errors import UserError
from mlwarden.threats.schema import SystemDescription, parse_system, read_yaml


def ask_system(
    console: Console, stream: TextIO | None = None, answers: dict[str, Any] | None = None
) -> SystemDescription:
    """Ask every question of the schema (artefacts excepted) not already in ``answers``.

    ``answers`` (dotted name -> value) is filled in place as questions are answered, so
    a caller that catches ``KeyboardInterrupt`` / ``EOFError`` still holds every answer.
    """
    answers = {} if answers is None else answers
    console.print(
        "[bold]Describe your ML system.[/bold] Unknown answers: choose 'unknown' where offered."
    )
    _ask_model(SystemDescription, "", console, stream, answers)
    return parse_system(nest(answers), "answers")


def _fields(model: type[BaseModel], prefix: str = "") -> typing.Iterator[tuple[str, Any]]:
    """(dotted name, FieldInfo) of every question, sub-models flattened, artefacts left out."""
    for name, info in model.model_fields.items():
        if prefix == "" and name == "artifacts":
            continue
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from _fields(ann, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", info


def _ask_model(
    model: type[BaseModel],
    prefix: str,
    console: Console,
    stream: TextIO | None,
    answers: dict[str, Any],
) -> None:
    section = ""
    for label, info in _fields(model, prefix):
        if label in answers:
            continue
        head = label.rpartition(".")[0]
        if head and head != section:
            console.print(f"[bold]{head}[/bold]")
            section = head
        question = f"{label} ({info.description})" if info.description else label
        default = None if info.is_required() else info.get_default(call_default_factory=True)
        adapter = _adapter(info)
        while True:
            value = _ask_field(info.annotation, question, default, console, stream)
            try:
                adapter.validate_python(value)
            except ValidationError as exc:
                console.print(f"[red]{_reason(exc)}; please answer again[/red]")
                continue
            answers[label] = value
            break


def _adapter(info: Any) -> TypeAdapter[Any]:
    """A validator for one field: its type plus its constraints (e.g. at least one item)."""
    ann: Any = info.annotation
    if info.metadata:
        ann = Annotated[(ann, *info.metadata)]  # type: ignore[valid-type]
    return TypeAdapter(ann)


def _reason(exc: ValidationError) -> str:
    err = exc.errors()[0]
    return str(err.get("msg", "not a valid answer"))


def _ask_field(
    ann: Any, question: str, default: Any, console: Console, stream: TextIO | None
) -> Any:
    if ann is bool:
        return Confirm.ask(question, default=bool(default), console=console, stream=stream)
    if isinstance(ann, type) and issubclass(ann, enum.Enum):
        choices = [m.value for m in ann]
        value = default.value if isinstance(default, enum.Enum) else default
        return Prompt.ask(question, choices=choices, default=value, console=console, stream=stream)
    if typing.get_origin(ann) is list:
        (inner,) = typing.get_args(ann)
        options: list[str] | None = (
            [m.value for m in inner]
            if isinstance(inner, type) and issubclass(inner, enum.Enum)
            else None
        )
        hint = f" [{', '.join(options)}]" if options else ""
        while True:
            text = Prompt.ask(
                f"{question}{hint}, comma-separated",
                default=",".join(str(getattr(d, "value", d)) for d in default or []),
                console=console,
                stream=stream,
            )
            items = [t.strip() for t in text.split(",") if t.strip()]
            bad = [t for t in items if options and t not in options]
            if not bad:
                return items
            console.print(f"[red]not a choice: {', '.join(bad)}[/red]")
    value = default.value if isinstance(default, enum.Enum) else default
    return Prompt.ask(question, default=value, console=console, stream=stream)


def nest(answers: dict[str, Any]) -> dict[str, Any]:
    """``{"model.origin": "in-house"}`` -> ``{"model": {"origin": "in-house"}}``."""
    out: dict[str, Any] = {}
    for key, value in answers.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def flatten(raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The inverse of :func:`nest` for the question fields (``artifacts`` stays whole)."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and not (prefix == "" and key == "artifacts"):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def partial_path(path: Path) -> Path:
    """Where an interrupted ``--init`` for ``path`` keeps its answers."""
    return path.with_name(path.name + ".partial")


def write_partial(path: Path, answers: dict[str, Any]) -> Path:
    """Save the answers given so far (YAML, dotted names as nested fields)."""
    out = partial_path(path)
    header = "# Answers so far for `mlwarden threats --init`; run it again to resume.\n"
    out.write_text(
        header + yaml.safe_dump(nest(answers), sort_keys=False, allow_unicode=True), "utf-8"
    )
    return out


def read_partial(path: Path) -> dict[str, Any]:
    """The answers an interrupted ``--init`` kept for ``path`` ({} if none)."""
    part = partial_path(path)
    if not part.is_file():
        return {}
    raw = read_yaml(part)
    if not isinstance(raw, dict):
        raise UserError(f"{part}: expected the answers as a mapping; delete it to start over")
    known = {label for label, _ in _fields(SystemDescription)}
    return {k: v for k, v in flatten(raw).items() if k in known}


def answers_from(file: Path | None, sets: list[str]) -> dict[str, Any]:
    """Answers from a YAML file in the SYSTEM.yaml format and ``field=value`` flags
    (dotted field names; a list field takes comma-separated values). Flags win."""
    answers: dict[str, Any] = {}
    if file is not None:
        raw = read_yaml(file)
        if not isinstance(raw, dict):
            raise UserError(f"{file}: expected a mapping of fields (name, modality, model, ...)")
        answers.update(flatten(raw))
    fields = dict(_fields(SystemDescription))
    for item in sets:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"--set {item!r}: expected FIELD=VALUE, e.g. deployment.outputs=labels")
        if key not in fields:
            raise UserError(f"--set {key}: not a field; known: {', '.join(fields)}")
        is_list = typing.get_origin(fields[key].annotation) is list
        answers[key] = [v.strip() for v in value.split(",") if v.strip()] if is_list else value
    return answers


def missing_answers(answers: dict[str, Any]) -> list[str]:
    """Required fields with no answer (what a non-interactive --init cannot guess)."""
    return [
        label
        for label, info in _fields(SystemDescription)
        if info.is_required() and label not in answers
    ]


def system_yaml(system: SystemDescription) -> str:
    """The description as YAML in the schema's field order, without empty artefacts."""
    data = system.model_dump(mode="json")
    if not any(v for v in data.get("artifacts", {}).values()):
        data.pop("artifacts", None)
    header = "# ML system description for `mlwarden threats` (schema: docs/threats.md).\n"
    return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
