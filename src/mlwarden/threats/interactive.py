"""``mlwarden threats --init``: ask the threat-model questions and write SYSTEM.yaml.

The questions are the schema's own fields and descriptions (:mod:`mlwarden.threats.schema`),
so the prompt and the file format cannot drift apart. Choices are checked as they are
typed; list answers are comma-separated.
"""

from __future__ import annotations

import enum
import typing
from typing import Any, TextIO

import yaml
from pydantic import BaseModel
from rich.console import Console
from rich.prompt import Confirm, Prompt

from mlwarden.threats.schema import SystemDescription, parse_system


def ask_system(console: Console, stream: TextIO | None = None) -> SystemDescription:
    """Ask every question of the schema (artefacts excepted) and return the description."""
    console.print(
        "[bold]Describe your ML system.[/bold] Unknown answers: choose 'unknown' where offered."
    )
    raw = _ask_model(SystemDescription, "", console, stream)
    return parse_system(raw, "answers")


def _ask_model(
    model: type[BaseModel], prefix: str, console: Console, stream: TextIO | None
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        if prefix == "" and name == "artifacts":
            continue
        ann = info.annotation
        label = f"{prefix}{name}"
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            console.print(f"[bold]{name}[/bold]")
            out[name] = _ask_model(ann, f"{label}.", console, stream)
            continue
        question = f"{label} ({info.description})" if info.description else label
        default = None if info.is_required() else info.get_default(call_default_factory=True)
        out[name] = _ask_field(ann, question, default, console, stream)
    return out


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
                default=",".join(default or []),
                console=console,
                stream=stream,
            )
            items = [t.strip() for t in text.split(",") if t.strip()]
            bad = [t for t in items if options and t not in options]
            if not bad:
                return items
            console.print(f"[red]not a choice: {', '.join(bad)}[/red]")
    return Prompt.ask(question, default=default, console=console, stream=stream)


def system_yaml(system: SystemDescription) -> str:
    """The description as YAML in the schema's field order, without empty artefacts."""
    data = system.model_dump(mode="json")
    if not any(v for v in data.get("artifacts", {}).values()):
        data.pop("artifacts", None)
    header = "# ML system description for `mlwarden threats` (schema: docs/threats.md).\n"
    return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
