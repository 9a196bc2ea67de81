"""Executors: results in item order from map, completion order from as_completed, failures returned."""

from __future__ import annotations

import math

import pytest

from mlwarden.core.errors import UserError
from mlwarden.core.executor import JobFailure, get_executor, parse_spec

# Jobs must be importable by spawned workers, so use a library function: math.sqrt
# raises ValueError ("math domain error") on a negative number.
ITEMS = [0.0, 1.0, 4.0, -1.0, 16.0, 25.0]


@pytest.mark.parametrize("spec", ["local", "process=2"])
def test_map_keeps_item_order_and_returns_failures(spec: str) -> None:
    with get_executor(spec) as ex:
        out = ex.map(math.sqrt, ITEMS, errors="return")
    assert out[:3] == [0, 1, 2] and out[4:] == [4, 5]
    assert isinstance(out[3], JobFailure)
    assert out[3].kind == "ValueError" and "domain" in out[3].error and out[3].index == 3


@pytest.mark.parametrize("spec", ["local", "process=2"])
def test_as_completed_yields_every_index_once(spec: str) -> None:
    with get_executor(spec) as ex:
        pairs = list(ex.as_completed(math.sqrt, [25.0, 36.0, 49.0, -1.0], errors="return"))
    assert sorted(i for i, _ in pairs) == [0, 1, 2, 3]
    got = dict(pairs)
    assert got[0] == 5 and isinstance(got[3], JobFailure)


def test_errors_raise_by_default() -> None:
    with get_executor("local") as ex, pytest.raises(ValueError):
        ex.map(math.sqrt, [-1.0])


def test_on_done_is_called_once_per_job() -> None:
    seen: list[int] = []
    with get_executor("local") as ex:
        ex.map(math.sqrt, [1.0, 2.0], on_done=seen.append)
    assert sorted(seen) == [0, 1]


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("local", ("local", None)),
        ("process", ("process", None)),
        ("process=4", ("process", "4")),
        ("ray", ("ray", None)),
        ("ray=auto", ("ray", "auto")),
        ("ray://head:10001", ("ray", "ray://head:10001")),
    ],
)
def test_parse_spec(spec: str, parsed: tuple) -> None:
    assert parse_spec(spec) == parsed


@pytest.mark.parametrize("spec", ["gpu", "process=zero", "process=0", "local=3"])
def test_bad_specs_are_user_errors(spec: str) -> None:
    with pytest.raises(UserError):
        parse_spec(spec)


def test_process_worker_count_is_capped() -> None:
    from mlwarden.core.executor import ProcessExecutor, max_workers

    ex = ProcessExecutor(1000)
    try:
        assert ex.workers == max_workers() < 1000
    finally:
        ex.close()
