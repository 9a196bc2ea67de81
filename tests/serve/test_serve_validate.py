"""Input parsing and validation (serve/validate.py), property-tested."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mlwarden.serve.config import InputSchema
from mlwarden.serve.validate import RequestError, parse_inputs

SCHEMA = InputSchema(shape=[2, 3], range=(-1.0, 1.0), max_batch=8)


@given(
    arrays(
        np.float64, st.tuples(st.integers(1, 8), st.just(2), st.just(3)), elements=st.floats(-1, 1)
    )
)
@settings(max_examples=80, deadline=None)
def test_valid_batches_round_trip(x: np.ndarray) -> None:
    out = parse_inputs(json.dumps({"inputs": x.tolist()}).encode(), SCHEMA)
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_allclose(out, x.astype(np.float32))


@given(
    arrays(np.float64, (1, 2, 3), elements=st.floats(-1, 1)),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400"]),
    st.integers(0, 5),
)
@settings(max_examples=60, deadline=None)
def test_any_non_finite_value_is_rejected(x: np.ndarray, bad: str, pos: int) -> None:
    values = [repr(float(v)) for v in x.ravel()]
    values[pos] = bad
    rows = f"[{', '.join(values[:3])}], [{', '.join(values[3:])}]"
    body = '{"inputs": [[' + rows + "]]}"
    with pytest.raises(RequestError) as exc:
        parse_inputs(body.encode(), SCHEMA)
    assert exc.value.status == 422


@given(arrays(np.float64, (1, 2, 3), elements=st.floats(-1e6, 1e6)))
@settings(max_examples=60, deadline=None)
def test_values_outside_the_range_are_rejected_and_inside_accepted(x: np.ndarray) -> None:
    body = json.dumps({"inputs": x.tolist()}).encode()
    if np.abs(x).max() <= 1:
        parse_inputs(body, SCHEMA)
    else:
        with pytest.raises(RequestError, match=r"must lie in \[-1.0, 1.0\]"):
            parse_inputs(body, SCHEMA)


def test_int_dtype_refuses_fractions() -> None:
    schema = InputSchema(shape=[2], dtype="int")
    assert parse_inputs(b'{"inputs": [[1, 2]]}', schema).tolist() == [[1.0, 2.0]]
    with pytest.raises(RequestError, match="whole numbers"):
        parse_inputs(b'{"inputs": [[1.5, 2]]}', schema)


def _outcome(body: bytes) -> tuple[str, object]:
    try:
        return "ok", parse_inputs(body, SCHEMA).tolist()
    except RequestError as exc:
        return f"{exc.status}", exc.message


_TRICKY = [
    b'{"inputs": [[[0.5, 0.25, 0], [1, -1, 0.125]]]}',
    b'\xef\xbb\xbf{"inputs": [[[0.5, 0.25, 0], [1, -1, 0.125]]]}',  # byte-order mark
    '{"inputs": [[[0.5, 0.25, 0], [1, -1, 0.125]]]}'.encode("utf-16"),
    b'{"inputs": [[[NaN, 0, 0], [0, 0, 0]]]}',
    b'{"inputs": [[[1e999, 0, 0], [0, 0, 0]]]}',
    b'{"inputs": [[[-Infinity, 0, 0], [0, 0, 0]]]}',
    b'{"inputs": [[[0, 0, 0], [0, 0, 0]]], "inputs": "x"}',  # duplicate key: the last wins
    b'{"inputs": [[["\\ud800", 0, 0], [0, 0, 0]]]}',  # lone surrogate
    b'{"inputs": [[[0, 0, 0], [0, 0, 0]]]} trailing',
    b"[" * 1100 + b"]" * 1100,  # deeper than orjson's limit
    b'{"inputs": [[[1.0000000000000002, -0.0, 1E-320], [0, 0, 0]]]}',
    b"",
    b"\xff\xfe\x00",
]


@pytest.mark.parametrize("body", _TRICKY)
def test_the_fast_json_path_accepts_and_refuses_exactly_like_the_stdlib(
    body: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """orjson decodes well-formed bodies; every answer must equal the stdlib-only one."""
    fast = _outcome(body)
    import orjson

    from mlwarden.serve import validate

    def refuse(_: bytes) -> None:
        raise orjson.JSONDecodeError("forced", "", 0)

    monkeypatch.setattr(validate.orjson, "loads", refuse)
    assert fast == _outcome(body)


@given(arrays(np.float64, (2, 2, 3), elements=st.floats(-1.5, 1.5, width=32)))
@settings(max_examples=40, deadline=None)
def test_the_fast_json_path_decodes_the_same_numbers(x: np.ndarray) -> None:
    import orjson

    body = json.dumps({"inputs": x.tolist()}).encode()
    assert orjson.loads(body) == json.loads(body)
    got = _outcome(body)
    assert got[0] == ("ok" if np.abs(x).max() <= 1 else "422")
