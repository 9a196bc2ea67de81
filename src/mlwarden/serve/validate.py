"""Request validation: body size, JSON, and each input against the declared schema.

Checks, in order, each failing with :class:`RequestError` (HTTP 413 for a body over
the size limit, 422 for the rest, and a message that says what was wrong and what was
expected):

1. body size — ``Content-Length`` above ``max_body_bytes`` is refused before a byte
   is read (413), and the body is read in chunks that stop at the limit (so a missing
   or false ``Content-Length`` does not help);
2. JSON — an object with a list ``"inputs"``; ``NaN`` and ``Infinity`` are refused
   while parsing, numbers that overflow a float (``1e999``) right after;
3. batch size — 1 to ``max_batch`` inputs;
4. dtype — numbers only (no strings, booleans or nulls), whole numbers for ``int``;
5. shape — every input of the declared shape (or that many values, flattened);
6. value range — every value within ``[low, high]``.

The parser is chosen by the schema's ``modality`` from :data:`INPUT_PARSERS`
(``"tensor"``: :func:`parse_inputs`); a modality adds its own with
:func:`register_parser` (body bytes and schema in, validated batch out).
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import orjson

from mlwarden.serve.config import InputSchema


class RequestError(Exception):
    """A request the gateway refuses; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def _invalid(message: str) -> RequestError:
    return RequestError(422, message)


def check_length(content_length: str | None, max_bytes: int) -> None:
    """Refuse a declared ``Content-Length`` over ``max_bytes`` (413) or not a number (400)."""
    if content_length is None:
        return
    if not content_length.isascii() or not content_length.strip().isdigit():
        raise RequestError(400, f"Content-Length {content_length!r} is not a number")
    declared = int(content_length)
    if declared > max_bytes:
        raise RequestError(
            413, f"request body of {declared} bytes is over the limit of {max_bytes}"
        )


async def read_body(
    content_length: str | None, chunks: AsyncIterator[bytes], max_bytes: int
) -> bytes:
    """Read a request body of at most ``max_bytes`` bytes, refusing larger ones early (413)."""
    check_length(content_length, max_bytes)
    buf = bytearray()
    async for chunk in chunks:
        buf += chunk
        if len(buf) > max_bytes:
            raise RequestError(413, f"request body is over the limit of {max_bytes} bytes")
    return bytes(buf)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed; inputs must be finite numbers")


def loads(body: bytes) -> Any:
    """Decode a JSON request body: orjson for well-formed UTF-8 JSON, else the stdlib.

    orjson (strict RFC 8259) takes about 6 us for a 64-value input where ``json.loads``
    takes 70 us. Whatever it refuses (``NaN``, ``1e999``, a byte-order mark, UTF-16,
    bad syntax, nesting over 1,024) is decoded again by the standard library, which
    accepts or refuses it exactly as before and words the refusal (``ValueError``, or
    ``RecursionError`` for deep nesting). So the only cost of a bad body is the old one.

    Example::

        loads(b'{"inputs": [[0.5]]}')   # {'inputs': [[0.5]]}
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass  # the standard library decides, with the messages clients already get
    return json.loads(body, parse_constant=_no_constant)


def batch_list(payload: Any, max_batch: int, noun: str, example: str) -> list[Any]:
    """The ``inputs`` list of a decoded body ``{"inputs": [...]}``: present, a non-empty
    list, at most ``max_batch`` long (422 otherwise). ``noun`` names the items in the
    messages (``inputs``, ``texts``), ``example`` one item (``input``, ``"text"``)."""
    if not isinstance(payload, dict) or "inputs" not in payload:
        raise _invalid(f'body must be a JSON object {{"inputs": [{example}, ...]}}')
    inputs = payload["inputs"]
    if not isinstance(inputs, list) or not inputs:
        raise _invalid(f'"inputs" must be a non-empty list of {noun}')
    if len(inputs) > max_batch:
        raise _invalid(f"batch of {len(inputs)} {noun} is over the limit of {max_batch}")
    return inputs


def parse_inputs(body: bytes, schema: InputSchema) -> np.ndarray:
    """The validated batch as a float32 array ``(N, *shape)``."""
    try:
        payload = loads(body)
    except ValueError as exc:
        raise _invalid(f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise _invalid("body nests arrays too deeply to be an input batch") from None
    inputs = batch_list(payload, schema.max_batch, "inputs", "input")
    try:
        arr = np.asarray(inputs)
    except (ValueError, TypeError):
        raise _invalid("inputs are ragged: every input must have the same shape") from None
    if arr.dtype.kind not in "iuf":
        what = {"b": "booleans", "U": "strings", "O": "mixed or null values"}.get(
            arr.dtype.kind, arr.dtype.name
        )
        raise _invalid(f"inputs must be numbers; got {what}")
    if schema.dtype == "int" and arr.dtype.kind == "f" and not np.all(arr == np.round(arr)):
        raise _invalid("inputs must be whole numbers (declared dtype int)")
    values = arr.astype(np.float64)
    if not np.isfinite(values).all():
        raise _invalid("inputs contain NaN or infinity")
    if arr.ndim < 2:
        raise _invalid(f"inputs must be a batch: a list of inputs, got shape {list(arr.shape)}")
    if schema.shape is not None:
        want = tuple(schema.shape)
        got = arr.shape[1:]
        if got != want:
            if got == (math.prod(want),):
                values = values.reshape((len(values), *want))
            else:
                raise _invalid(
                    f"each input must have shape {list(want)} (or {math.prod(want)} values); "
                    f"got {list(got)}"
                )
    if schema.range is not None:
        lo, hi = schema.range
        vmin, vmax = float(values.min()), float(values.max())
        if vmin < lo or vmax > hi:
            raise _invalid(
                f"input values must lie in [{lo}, {hi}]; got values from {vmin} to {vmax}"
            )
    dtype = np.float64 if schema.dtype == "float64" else np.float32
    return values.astype(dtype)


Parser = Callable[[bytes, InputSchema], np.ndarray]


def parse_audio_upload(body: bytes, schema: InputSchema) -> np.ndarray:
    """``modality: audio``: the body is one audio file (WAV/FLAC/Ogg/MP3 bytes), decoded
    with bounds (:func:`mlwarden.core.audio.parse_wav_upload`): its rate must be
    ``sample_rate``, it may hold at most ``shape[-1]`` frames (shorter clips are padded)."""
    from mlwarden.core.audio import parse_wav_upload
    from mlwarden.core.errors import UserError

    samples = schema.shape[-1] if schema.shape else None
    try:
        clip = parse_wav_upload(body, sample_rate=schema.sample_rate, samples=samples)
    except UserError as exc:
        raise _invalid(str(exc)) from None
    if schema.shape is not None and tuple(clip.shape[1:]) != tuple(schema.shape):
        raise _invalid(f"the clip has shape {list(clip.shape[1:])}; expected {schema.shape}")
    return clip


def parse_text_batch(body: bytes, schema: InputSchema) -> np.ndarray:
    """``modality: text``: ``{"inputs": ["text", ...]}`` (:mod:`mlwarden.serve.text`)."""
    from mlwarden.serve.text import parse_text_inputs

    return parse_text_inputs(body, schema)


INPUT_PARSERS: dict[str, Parser] = {
    "tensor": parse_inputs,
    "audio": parse_audio_upload,
    "text": parse_text_batch,
}


def register_parser(modality: str, parser: Parser) -> None:
    """Validate request bodies of ``modality`` with ``parser`` (raise :class:`RequestError`).

    Example::

        register_parser("text", parse_text_inputs)   # input: {modality: text} selects it
    """
    INPUT_PARSERS[modality] = parser
