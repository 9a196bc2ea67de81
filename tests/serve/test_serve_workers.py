"""The request path's own costs: the worker pool, request ids, the head checks (issue 19).

``serve.workers.WorkerPool`` replaces ``run_in_executor`` on a ``ThreadPoolExecutor``
for the model and the detectors (a third of its CPU a hop); it must keep what the
executor gave: results and exceptions back to the awaiting request, at most
``max_workers`` threads, calls in flight finished at shutdown. Request ids no longer
cost a system call (and a GIL hand-off on the event loop) each.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest

from mlwarden.serve import app as app_module
from mlwarden.serve.workers import WorkerPool


def test_the_pool_returns_results_and_raises_the_callers_exceptions():
    pool = WorkerPool(2, "t")

    def boom(x: int) -> int:
        raise ValueError(f"bad {x}")

    async def main() -> tuple[list[int], str]:
        got = await asyncio.gather(*[pool.run(lambda a, b: a * b, i, 3) for i in range(20)])
        with pytest.raises(ValueError, match="bad 7") as err:
            await pool.run(boom, 7)
        return list(got), str(err.value)

    got, message = asyncio.run(main())
    assert got == [3 * i for i in range(20)] and message == "bad 7"
    pool.shutdown()


def test_the_pool_runs_calls_in_at_most_max_workers_threads_at_once():
    pool = WorkerPool(3, "t")
    lock = threading.Lock()
    now = [0]
    peak = [0]
    names: set[str] = set()

    together = threading.Barrier(3, timeout=30)  # three calls must run at once

    def work() -> None:
        with lock:
            now[0] += 1
            peak[0] = max(peak[0], now[0])
            names.add(threading.current_thread().name)
        together.wait()
        time.sleep(0.01)
        with lock:
            now[0] -= 1

    async def main() -> None:
        await asyncio.gather(*[pool.run(work) for _ in range(12)])

    asyncio.run(main())
    pool.shutdown()
    assert peak[0] == 3  # calls waiting started threads up to the bound, not beyond
    assert len(names) == 3 and all(n.startswith("t_") for n in names)


def test_shutdown_finishes_queued_calls_and_refuses_new_ones():
    pool = WorkerPool(1, "t")
    done: list[int] = []

    async def main() -> list[asyncio.Future[None]]:
        futs = [pool.run(lambda i=i: (time.sleep(0.01), done.append(i))[0]) for i in range(5)]
        await asyncio.sleep(0)
        return futs

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(main())
        pool.shutdown()  # joins: every call queued before it has run
        assert done == [0, 1, 2, 3, 4]

        async def late() -> None:
            pool.run(lambda: None)

        with pytest.raises(RuntimeError, match="shut down"):
            loop.run_until_complete(late())
    finally:
        loop.close()


def test_a_call_raising_stopiteration_still_answers():
    pool = WorkerPool(1, "t")

    async def main() -> str:
        with pytest.raises(RuntimeError, match="StopIteration") as err:
            await asyncio.wait_for(pool.run(next, iter(())), 30)
        return str(err.value)

    assert "StopIteration" in asyncio.run(main())  # not a future left unsettled
    pool.shutdown()


def test_a_thread_that_cannot_start_leaves_the_call_to_the_running_ones(monkeypatch):
    pool = WorkerPool(2, "t")
    gate = threading.Event()

    async def main() -> list[int]:
        first = pool.run(lambda: (gate.wait(30), 1)[1])
        monkeypatch.setattr(threading.Thread, "start", _refuse)
        second = pool.run(lambda: 2)  # its thread fails to start: the first thread takes it
        gate.set()
        return list(await asyncio.gather(first, second))

    assert asyncio.run(main()) == [1, 2]
    assert len(pool._threads) == 1
    pool.shutdown()
    lone = WorkerPool(1, "t")

    async def none() -> None:
        lone.run(lambda: None)

    with pytest.raises(RuntimeError, match="can't start"):
        asyncio.run(none())  # no thread at all: the request fails (a 500), never hangs


def _refuse(self: threading.Thread) -> None:
    raise RuntimeError("can't start new thread")


def test_a_cancelled_request_does_not_break_the_worker():
    pool = WorkerPool(1, "t")
    gate = threading.Event()

    async def main() -> int:
        first = pool.run(gate.wait, 5)
        first.cancel()  # the client went away; the call still runs to its end
        gate.set()
        return await pool.run(lambda: 42)

    assert asyncio.run(main()) == 42
    pool.shutdown()


def test_the_gateway_serves_through_the_worker_pool(gw_config, sklearn_target):
    gateway = app_module.create_app(sklearn_target, gw_config()).state.gateway
    assert isinstance(gateway.pool, WorkerPool)
    gateway.close()


def test_request_ids_are_distinct_and_drawn_4_kb_at_a_time(monkeypatch):
    calls: list[int] = []
    real = os.urandom

    def counting(n: int) -> bytes:
        calls.append(n)
        return real(n)

    monkeypatch.setattr(app_module.os, "urandom", counting)
    ids = app_module._RequestIds()
    got = [ids() for _ in range(1000)]
    assert len(set(got)) == 1000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in got)
    assert calls == [4096] * 4  # one system call per 256 ids (was one per id)


def test_a_forked_child_does_not_repeat_the_parents_request_ids():
    ids = app_module._RequestIds()
    ids()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(w, ids().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    os.close(w)
    child = os.read(r, 64).decode()
    os.close(r)
    assert len(child) == 32 and child != ids()


def test_the_head_is_read_in_one_pass_as_starlette_reads_it():
    from starlette.datastructures import Headers

    raw = [
        (b"host", b"x"),
        (b"authorization", b"Bearer a\xe9"),
        (b"content-length", b"12"),
        (b"authorization", b"Bearer b"),
        (b"content-length", b"13"),
    ]
    head, ref = app_module._Head(raw), Headers(raw=raw)
    assert head.auth == ref.getlist("authorization") == ["Bearer a\xe9", "Bearer b"]
    assert head.length == ref.get("content-length") == "12"
    assert not head.chunked
    chunked = app_module._Head([(b"transfer-encoding", b"chunked")])
    assert chunked.chunked and chunked.length is None and chunked.auth == []
