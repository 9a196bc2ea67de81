"""Worker threads for model calls and detectors, awaited from the event loop.

``loop.run_in_executor(ThreadPoolExecutor, ...)`` costs two futures, a work item, the
executor's lock and idle semaphore, and a chain of callbacks between a
``concurrent.futures.Future`` and an asyncio one on every call: 16 us of CPU a hop with
trivial work, against 4 us for this pool (8 concurrent callers, uvloop, alternated
runs; ``docs/benchmarks/gateway.md``). :class:`WorkerPool` puts ``(loop, future,
function, args)`` on a ``queue.SimpleQueue`` (C, no Python lock) and a worker sets the
asyncio future's outcome with one ``call_soon_threadsafe``. Threads start as calls
need them, up to ``max_workers``, like ``ThreadPoolExecutor``'s.

Example::

    pool = WorkerPool(6, "mlwarden-infer")
    result = await pool.run(model_call, x)   # in a coroutine
    pool.shutdown()                          # calls already queued still run
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
_Item = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...]]


class WorkerPool:
    """Up to ``max_workers`` threads running the calls handed to :meth:`run`, in order."""

    def __init__(self, max_workers: int, thread_name_prefix: str = "worker") -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self._max_workers = max_workers
        self._prefix = thread_name_prefix
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        # Threads waiting for a call and not yet claimed by one (under _lock). While all
        # threads are busy it may count some that will find a call already queued: then
        # there are max_workers of them, and every queued call is still taken in turn.
        self._idle = 0
        self._lock = threading.Lock()
        self._closed = False

    @property
    def max_workers(self) -> int:
        return self._max_workers

    def run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """``fn(*args)`` in a worker thread; await the result (or its exception)."""
        if self._closed:
            raise RuntimeError("the worker pool is shut down")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        with self._lock:
            if self._idle:
                self._idle -= 1  # a waiting thread takes it
                grow = False
            else:
                grow = len(self._threads) < self._max_workers
            if grow:
                t = threading.Thread(
                    target=self._work, name=f"{self._prefix}_{len(self._threads)}", daemon=True
                )
                self._threads.append(t)
        self._queue.put((loop, fut, fn, args))
        if grow:
            try:
                t.start()
            except RuntimeError:  # no thread to be had: the ones running take the call
                with self._lock:
                    self._threads.remove(t)
                    if not self._threads:
                        raise
        return fut

    def _work(self) -> None:
        get = self._queue.get
        while True:
            item = get()
            if item is None:
                return
            loop, fut, fn, args = item
            try:
                outcome, ok = fn(*args), True
            except StopIteration:  # an asyncio future refuses it (and would never settle)
                outcome, ok = RuntimeError("a worker call raised StopIteration"), False
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting request
                outcome, ok = exc, False
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(_settle, fut, outcome, ok)
            del item, loop, fut, fn, args, outcome  # hold no request's data while idle
            with self._lock:
                self._idle += 1

    def shutdown(self) -> None:
        """Refuse new calls, let the queued ones finish, and join the threads."""
        self._closed = True
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            if t is not threading.current_thread():
                t.join()


def _settle(fut: asyncio.Future[Any], outcome: Any, ok: bool) -> None:
    if fut.done():  # the request was cancelled meanwhile
        return
    if ok:
        fut.set_result(outcome)
    else:
        fut.set_exception(outcome)
