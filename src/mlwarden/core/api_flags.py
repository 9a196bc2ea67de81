"""One-off API options: the keys of a target file, given as command-line flags.

``mlwarden evasion https://api.example.com/v1/classify digits --api-request
'{"instances": "$inputs"}' --api-response outputs.probabilities --api-header
'Authorization: Bearer ${API_TOKEN}'`` describes the same deployed model as a
``NAME.target.yaml`` with those keys (:mod:`mlwarden.core.target_file`). With a target
file, the flags override the file's keys for this run.

The CLI sets the flags for the duration of one command (:func:`active`); model loading
(:func:`mlwarden.supplychain.load_target`) reads them with :func:`current`. A plain
global, not a context variable: worker threads started by a command must see them too.
Header values given on the command line are secrets: masked in every error, log and
report, as values expanded from ``${VAR}`` are.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mlwarden.core.errors import UserError

#: Flag name (without ``--api-``) -> target-file key.
KEYS = {
    "request": "request",
    "response": "response",
    "output": "output",
    "scores-are": "scores_are",
    "labels": "labels",
    "header": "headers",
    "batch-size": "batch_size",
    "rate": "rate",
    "timeout": "timeout",
    "input-shape": "input_shape",
    "num-classes": "num_classes",
}

_current: dict[str, Any] = {}


def current() -> dict[str, Any]:
    """The target-file keys set by flags for the running command (empty when none)."""
    return dict(_current)


@contextmanager
def active(overrides: dict[str, Any]) -> Iterator[None]:
    """Make ``overrides`` (target-file keys) visible to model loading for one command."""
    global _current
    saved, _current = _current, dict(overrides)
    try:
        yield
    finally:
        _current = saved


def parse(raw: dict[str, Any]) -> dict[str, Any]:
    """Target-file keys from raw flag values (``None`` = not given); bad values are one line.

    Example: ``parse({"header": ["X-Key: ${K}"], "labels": "cat=0,dog=1"})`` gives
    ``{"headers": {"X-Key": "${K}"}, "labels": {"cat": 0, "dog": 1}}``.
    """
    out: dict[str, Any] = {}
    for flag, value in raw.items():
        if value is None or value == []:
            continue
        key = KEYS[flag]
        if flag == "request":
            out[key] = _json(
                value, "--api-request", 'a JSON template such as \'{"instances": "$inputs"}\''
            )
        elif flag == "labels":
            out[key] = _labels(value)
        elif flag == "header":
            out[key] = _headers(value)
        elif flag == "input-shape":
            out[key] = _shape(value)
        else:
            out[key] = value
    return out


def _json(text: str, flag: str, expected: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{flag} is not valid JSON ({exc.msg}); expected {expected}") from None


def _labels(text: str) -> dict[str, int]:
    if text.lstrip().startswith("{"):
        value = _json(text, "--api-labels", '\'{"cat": 0, "dog": 1}\' or cat=0,dog=1')
        if isinstance(value, dict) and all(isinstance(v, int) for v in value.values()):
            return {str(k): int(v) for k, v in value.items()}
        raise UserError("--api-labels must map each class name to an integer index")
    labels: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, index = part.rpartition("=")
        if not sep or not name or not index.strip().lstrip("-").isdigit():
            raise UserError(f"--api-labels: {part!r} is not NAME=INDEX (e.g. cat=0,dog=1)")
        labels[name.strip()] = int(index)
    return labels


def _headers(values: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition(":")
        if not sep or not name.strip() or any(c.isspace() for c in name.strip()):
            shown = name.strip()[:40] or "(empty)"
            raise UserError(
                f"--api-header {shown!r}...: expected 'Name: value', "
                "e.g. 'Authorization: Bearer ${API_TOKEN}'"
            )
        headers[name.strip()] = value.strip()
    return headers


def _shape(text: str) -> list[int]:
    parts = [p.strip() for p in text.replace("x", ",").split(",") if p.strip()]
    if not parts or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise UserError(f"--api-input-shape {text!r}: expected positive sizes such as 1,28,28")
    return [int(p) for p in parts]


def header_secrets(headers: dict[str, str]) -> list[str]:
    """Values to mask for headers typed on the command line: each value and its last word."""
    found: list[str] = []
    for value in headers.values():
        if "${" in value:  # expanded from the environment; the target records those
            continue
        found.append(value)
        last = value.split()[-1] if value.split() else ""
        if len(last) >= 6 and last != value:
            found.append(last)
    return found
