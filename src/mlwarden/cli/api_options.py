"""``--api-*`` options: a target file's keys as flags, added to a command by one decorator.

``@with_api_options`` appends the options to the command's signature (typer reads
``__signature__``), takes their values out before the command runs, and makes them
visible to model loading through :func:`mlwarden.core.api_flags.active`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from mlwarden.core import api_flags

F = TypeVar("F", bound=Callable[..., Any])
PANEL = "Deployed API (one-off; the keys of a NAME.target.yaml)"


def _opt(flag: str, help: str, **kw: Any) -> Any:
    return typer.Option(f"--api-{flag}", help=help, rich_help_panel=PANEL, **kw)


#: (parameter name, flag, type, help) — the flags; see mlwarden.core.target_file for keys.
_OPTIONS: list[tuple[str, str, Any, str]] = [
    (
        "api_request",
        "request",
        str | None,
        'JSON request template; "$inputs" stands for the batch, "$input" for one item.',
    ),
    (
        "api_response",
        "response",
        str | None,
        "Dotted path to the scores or labels in the answer (outputs.probabilities).",
    ),
    ("api_output", "output", str | None, "What the API answers: scores | labels."),
    ("api_scores_are", "scores-are", str | None, "The scores are: probabilities | logits."),
    (
        "api_labels",
        "labels",
        str | None,
        "Class names the API answers, to indices: cat=0,dog=1 (or a JSON object).",
    ),
    (
        "api_header",
        "header",
        list[str] | None,
        "Request header 'Name: value' (repeatable); ${ENV_VAR} is expanded; values are masked.",
    ),
    ("api_batch_size", "batch-size", int | None, "Inputs per request (never exceeded)."),
    ("api_rate", "rate", float | None, "Requests per second (429 and Retry-After honoured)."),
    ("api_timeout", "timeout", float | None, "Seconds to wait for one answer."),
    ("api_input_shape", "input-shape", str | None, "Shape of one input, e.g. 1,28,28."),
    ("api_num_classes", "num-classes", int | None, "Number of classes the model has."),
]


def _parameters() -> list[inspect.Parameter]:
    return [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[kind, _opt(flag, help)],
        )
        for name, flag, kind, help in _OPTIONS
    ]


def with_api_options(func: F) -> F:
    """Add the ``--api-*`` options to a typer command (put it under ``@app.command``).

    Example::

        @app.command("extract")
        @with_api_options
        def extract(model: str, ...) -> None: ...
    """
    sig = inspect.signature(func, eval_str=True)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        raw = {flag: kwargs.pop(name, None) for name, flag, _, _ in _OPTIONS}
        with api_flags.active(api_flags.parse(raw)):
            return func(*args, **kwargs)

    params = list(sig.parameters.values())
    wrapper.__signature__ = sig.replace(parameters=params + _parameters())  # type: ignore[attr-defined]
    wrapper.__annotations__ = {
        **getattr(func, "__annotations__", {}),
        **{p.name: p.annotation for p in _parameters()},
    }
    return wrapper  # type: ignore[return-value]
