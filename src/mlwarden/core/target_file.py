"""Target files: a deployed HTTP model described once, in ``NAME.target.yaml``.

Every command that takes a ``MODEL`` accepts such a file (through
:func:`mlwarden.supplychain.load_target`). Keys:

* ``url`` — the endpoint (``${ENV_VAR}`` allowed, e.g. for a key in the query string);
* ``request`` — a JSON template; the string ``"$inputs"`` stands for the batch (a list
  of inputs), or ``"$input"`` for one input (then each request carries one item);
* ``response`` — a dotted path to the scores or labels in the answer:
  ``outputs.probabilities``, ``predictions[0].label`` (for one-item requests);
* ``output`` — ``scores`` (one score per class) or ``labels``; ``scores_are``
  (``probabilities`` or ``logits``) says what the scores are;
* ``labels`` — class name to index, when the API answers names;
* ``headers`` — values may use ``${ENV_VAR}``; the expanded values are secrets, masked
  as ``***`` in every error, log and report;
* ``batch_size`` (inputs per request, never exceeded), ``rate`` (requests per second;
  ``429`` and ``Retry-After`` are honoured), ``input_shape``, ``timeout`` (seconds).

Example::

    url: https://api.example.com/v1/classify
    request: {"instances": "$inputs"}
    response: outputs.probabilities
    output: scores
    headers: {Authorization: "Bearer ${API_TOKEN}"}
    batch_size: 32
    rate: 10
    input_shape: [1, 28, 28]
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mlwarden.core import api_flags
from mlwarden.core.errors import InputFileError, UserError
from mlwarden.core.target import HttpTarget, TargetError

SUFFIXES = (".target.yaml", ".target.yml")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_STEP = re.compile(r"([^.\[\]]+)|\[(-?\d+)\]")
_PART = re.compile(r"[^.\[\]]+(\[-?\d+\])*|(\[-?\d+\])+")
_SHOWN = 300  # characters of a request or response shown in an error


class TargetSpec(BaseModel):
    """The validated contents of a ``*.target.yaml`` file (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    url: str
    request: Any = Field(default_factory=lambda: {"inputs": "$inputs"})
    response: str = "predictions"
    output: Literal["scores", "labels"] = "scores"
    scores_are: Literal["probabilities", "logits"] = "probabilities"
    labels: dict[str, int] | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    batch_size: int = Field(default=32, ge=1)
    rate: float | None = Field(default=None, gt=0)
    input_shape: list[int] | None = None
    timeout: float = Field(default=30.0, gt=0)
    num_classes: int | None = Field(default=None, ge=2)

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://; got {v[:60]!r}")
        return v

    @field_validator("request")
    @classmethod
    def _placeholder(cls, v: Any) -> Any:
        found = _placeholders(v)
        if len(found) != 1:
            raise ValueError(
                'must contain the string "$inputs" (the batch) or "$input" (one item) '
                f"exactly once; found {len(found)}"
            )
        return v

    @field_validator("labels")
    @classmethod
    def _indices(cls, v: dict[str, int] | None) -> dict[str, int] | None:
        if v is not None and (min(v.values(), default=0) < 0 or len(set(v.values())) != len(v)):
            raise ValueError("must map each name to a distinct class index >= 0")
        return v

    @field_validator("response")
    @classmethod
    def _path(cls, v: str) -> str:
        if not all(_PART.fullmatch(part) for part in v.split(".")):
            raise ValueError(f"must be a dotted path such as outputs.probabilities; got {v!r}")
        return v


def _placeholders(v: Any) -> list[str]:
    if isinstance(v, str):
        return [v] if v in ("$inputs", "$input") else []
    if isinstance(v, dict):
        return [p for item in v.values() for p in _placeholders(item)]
    if isinstance(v, list):
        return [p for item in v for p in _placeholders(item)]
    return []


def is_target_file(spec: str) -> bool:
    """Whether a MODEL spec names a target file (by its ``.target.yaml`` suffix)."""
    return spec.lower().endswith(SUFFIXES)


def read_target_file(path: str | Path) -> TargetSpec:
    """Parse and validate a target file; a bad file is one :class:`InputFileError` line."""
    import yaml

    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputFileError(p, "not found") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InputFileError(
            p, f"is not a readable YAML file ({str(exc).splitlines()[0]})"
        ) from None
    if not isinstance(raw, dict):
        raise InputFileError(p, "must be a YAML mapping with at least 'url'")
    try:
        return TargetSpec.model_validate(raw)
    except ValidationError as exc:
        where, msg = _first_error(exc)
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise InputFileError(p, f"key {where or 'file'!r}: {msg}{more}") from None


def _first_error(exc: ValidationError) -> tuple[str, str]:
    """The first error's dotted key path (empty for the whole mapping) and message."""
    err = exc.errors()[0]
    where = ".".join(str(k) for k in err["loc"])
    return where, str(err["msg"]).removeprefix("Value error, ")


def _expand(value: str, secrets: list[str], origin: str) -> str:
    """``${VAR}`` replaced by the environment's value, which is recorded as a secret."""

    def one(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in os.environ:
            raise UserError(f"{origin} uses ${{{name}}}, which is not set in the environment")
        if os.environ[name]:
            secrets.append(os.environ[name])
        return os.environ[name]

    return _ENV.sub(one, value)


def load_target_file(path: str | Path, access: str | None = None, **kw: Any) -> TemplateHttpTarget:
    """A :class:`TemplateHttpTarget` from a target file.

    ``access`` may lower what the file declares (``score`` to ``label``), never raise
    it: an API that answers labels cannot give scores, and none gives gradients.
    Example: ``load_target_file("api.target.yaml").predict(x)``.
    """
    spec = read_target_file(path)
    overrides = api_flags.current()
    if overrides:  # --api-* flags win over the file's keys for this run
        spec = _validated({**spec.model_dump(exclude_unset=True), **overrides}, Path(path).name)
    return _from_spec(spec, Path(path).name, access, kw)


def load_api_url(url: str, access: str | None = None, **kw: Any) -> TemplateHttpTarget:
    """A :class:`TemplateHttpTarget` for an ``http(s)://`` MODEL described by ``--api-*`` flags.

    Example (what the CLI does for ``--api-response outputs.probabilities``)::

        with api_flags.active({"response": "outputs.probabilities"}):
            load_api_url("https://api.example.com/v1/classify")
    """
    spec = _validated({"url": url, **api_flags.current()}, "the --api-* flags")
    return _from_spec(spec, url, access, kw)


def _validated(raw: dict[str, Any], origin: str) -> TargetSpec:
    try:
        return TargetSpec.model_validate(raw)
    except ValidationError as exc:
        where, msg = _first_error(exc)
        flag = {key: f"--api-{f}" for f, key in api_flags.KEYS.items()}.get(where.split(".")[0])
        named = f"{flag} ({where})" if flag else where or "value"
        raise UserError(f"{origin}: {named}: {msg}") from None


def _from_spec(
    spec: TargetSpec, name: str, access: str | None, kw: dict[str, Any]
) -> TemplateHttpTarget:
    declared = "label" if spec.output == "labels" else "score"
    if access is not None and access not in (declared, "label"):
        allowed = "label" if declared == "label" else "score or label"
        raise UserError(
            f"{name} declares output: {spec.output}; access {access!r} is not "
            f"available from this API (use {allowed})"
        )
    kw["access"] = access or declared
    target = TemplateHttpTarget.from_spec(spec, name=kw.pop("name", name), **kw)
    typed = api_flags.header_secrets(api_flags.current().get("headers", {}))
    if typed:  # header values typed on the command line are secrets too
        target.secrets = sorted(set(target.secrets) | _variants(typed), key=len, reverse=True)
    return target


class TemplateHttpTarget(HttpTarget):
    """An HTTP model whose request and response shapes come from a :class:`TargetSpec`.

    Built on :class:`~mlwarden.core.target.HttpTarget` (its client, retries on 5xx,
    429 and ``Retry-After``); adds the JSON template, paths with ``[index]``, one-item
    requests, label names, a request rate and secret masking.
    """

    @classmethod
    def from_spec(cls, spec: TargetSpec, **kw: Any) -> TemplateHttpTarget:
        """Expand ``${VAR}`` in url and headers and build the target."""
        secrets: list[str] = []
        url = _expand(spec.url, secrets, "url")
        headers = {k: _expand(v, secrets, f"header {k!r}") for k, v in spec.headers.items()}
        one = "$input" in _placeholders(spec.request)
        kw.setdefault("batch_size", 1 if one else spec.batch_size)
        kw["batch_size"] = 1 if one else min(int(kw["batch_size"]), spec.batch_size)
        kw.setdefault("input_shape", spec.input_shape)
        kw.setdefault(
            "num_classes", spec.num_classes or (len(spec.labels) if spec.labels else None)
        )
        if kw.get("access") != "label":
            kw.setdefault("output", spec.scores_are)
        target = cls(url, headers=headers, timeout=spec.timeout, **kw)
        target.spec = spec
        target.secrets = sorted(_variants(secrets), key=len, reverse=True)
        target.one_item = one
        target.min_interval = 1.0 / spec.rate if spec.rate else 0.0
        target._last_sent = 0.0
        return target

    spec: TargetSpec
    secrets: list[str]
    one_item: bool
    min_interval: float
    _last_sent: float

    def mask(self, text: str) -> str:
        """``text`` with every secret value replaced by ``***``."""
        for s in self.secrets:
            text = text.replace(s, "***")
        return text

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["url"] = self.mask(self.url)
        return d

    def _predict(self, x: np.ndarray) -> np.ndarray:
        if self.one_item:
            return np.asarray([self._send(row[None])[0] for row in x])
        return self._send(x)

    def _send(self, x: np.ndarray) -> np.ndarray:
        body = _fill(self.spec.request, x.tolist(), self.one_item)
        resp = self._post(body)
        try:
            payload = resp.json()
        except ValueError:
            raise self._error("the answer is not JSON", body, resp) from None
        try:
            value = get_path(payload, self.spec.response)
        except (KeyError, IndexError, TypeError) as exc:
            raise self._error(
                f"no {self.spec.response!r} in the answer ({exc})", body, resp
            ) from None
        out = self._as_output(value if not self.one_item else [value], body, resp)
        if len(out) != len(x):
            raise self._error(f"{len(out)} answers for {len(x)} inputs", body, resp)
        return out

    def _as_output(self, value: Any, body: Any, resp: Any) -> np.ndarray:
        """Scores or labels as numbers; label names mapped through ``labels``."""
        names = self.spec.labels
        if self.spec.output == "labels" and names is not None:
            flat = list(value)
            bad = [
                v
                for v in flat
                if not isinstance(v, (str, int)) or (isinstance(v, str) and v not in names)
            ]
            if bad:
                raise self._error(
                    f"label {bad[0]!r} is not one of {sorted(names)} (the file's 'labels')",
                    body,
                    resp,
                )
            return np.asarray([names[v] if isinstance(v, str) else v for v in flat], np.int64)
        try:
            out = np.asarray(value, dtype=np.float64)
        except (ValueError, TypeError):
            raise self._error(f"{self.spec.response!r} is not numbers", body, resp) from None
        want = 1 if self.spec.output == "labels" else 2
        if out.ndim != want:
            kind = "a list of labels" if want == 1 else "a list of score rows"
            raise self._error(f"{self.spec.response!r} is not {kind}", body, resp)
        return out

    def _post(self, body: Any) -> Any:
        """POST with the request rate kept and 429/5xx retried after ``Retry-After``."""
        import httpx

        for attempt in range(self.retries + 1):
            wait = self._last_sent + self.min_interval - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self._last_sent = time.monotonic()
            try:
                resp = self.client.post(self.url, json=body)
            except httpx.HTTPError as exc:
                if attempt == self.retries:
                    raise TargetError(self.mask(f"{self.name}: no answer ({exc})")) from None
                continue
            if (resp.status_code == 429 or resp.status_code >= 500) and attempt < self.retries:
                time.sleep(_wait_after(resp.headers.get("Retry-After")))
                continue
            if resp.status_code >= 400:
                raise self._error(f"HTTP {resp.status_code}", body, resp)
            return resp
        raise AssertionError("unreachable")

    def _error(self, what: str, body: Any, resp: Any) -> TargetError:
        sent = _clip(json.dumps(body, separators=(",", ":")))
        got = _clip(resp.text)
        return TargetError(self.mask(f"{self.name}: {what}; sent {sent}; got {got}"))


def _wait_after(value: str | None) -> float:
    """Seconds a ``Retry-After`` header asks for (seconds or HTTP-date), up to 60 s.

    Deployed APIs that rate-limit ask for whole seconds or minutes; waiting less only
    earns another 429, so the server's figure is kept up to a minute.
    """
    from email.utils import parsedate_to_datetime

    if not value:
        return 1.0
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            seconds = 1.0
    return min(max(seconds, 0.0), 60.0) if math.isfinite(seconds) else 1.0


def _clip(text: str) -> str:
    return text if len(text) <= _SHOWN else f"{text[:_SHOWN]}... ({len(text)} characters)"


def _variants(secrets: list[str]) -> set[str]:
    """Each secret as sent or echoed: raw, percent-encoded (URLs) and JSON-escaped."""
    from urllib.parse import quote, quote_plus

    out: set[str] = set()
    for s in secrets:
        out |= {s, quote(s, safe=""), quote_plus(s), json.dumps(s)[1:-1]}
    return {v for v in out if v}


def _fill(template: Any, batch: list[Any], one: bool) -> Any:
    """The template with ``"$inputs"`` (or ``"$input"``) replaced by the data."""
    if isinstance(template, str) and template in ("$inputs", "$input"):
        return batch[0] if one else batch
    if isinstance(template, dict):
        return {k: _fill(v, batch, one) for k, v in template.items()}
    if isinstance(template, list):
        return [_fill(v, batch, one) for v in template]
    return template


def get_path(payload: Any, path: str) -> Any:
    """Follow a dotted path with ``[index]`` steps: ``predictions[0].label``.

    Example: ``get_path({"a": [{"b": 1}]}, "a[0].b") == 1``.
    """
    cur = payload
    for part in path.split("."):
        for m in _STEP.finditer(part):
            key, index = m.group(1), m.group(2)
            if index is not None:
                if not isinstance(cur, list):
                    raise TypeError(f"[{index}] applied to a {type(cur).__name__}")
                cur = cur[int(index)]
            elif isinstance(cur, list) and key.lstrip("-").isdigit():
                cur = cur[int(key)]
            elif isinstance(cur, dict):
                cur = cur[key]
            else:
                raise TypeError(f"key {key!r} applied to a {type(cur).__name__}")
    return cur
