"""QA: hostile request bodies get a 422 with a reason, never a 500."""

from __future__ import annotations

import pytest

from mlwarden.serve.config import InputSchema
from mlwarden.serve.validate import RequestError, parse_inputs


@pytest.mark.parametrize("depth", [40, 1000, 100_000])
def test_deeply_nested_body_is_refused_not_a_server_error(depth: int) -> None:
    body = b'{"inputs":' + b"[" * depth + b"0" + b"]" * depth + b"}"
    with pytest.raises(RequestError) as exc:
        parse_inputs(body, InputSchema(shape=[1, 8, 8]))
    assert exc.value.status == 422
