"""Run independent jobs in-process, on a process pool, or on Ray.

Every embarrassingly parallel piece of work (shadow models, sweeps, scans of many
files, the checks of an audit plan) goes through :func:`get_executor`. The same job
function runs on all three backends; it must be importable at module level (picklable)
for the process and Ray executors.

Example::

    with get_executor("process=2") as ex:
        results = ex.map(train_shadow, seeds)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, TypeVar

from mlwarden.core.errors import UserError

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class JobFailure:
    """A job that raised; returned instead of a result by ``map(..., errors="return")``."""

    index: int
    error: str
    kind: str


class Executor(AbstractContextManager["Executor"]):
    """Map a function over items; results come back in item order.

    :meth:`as_completed` yields ``(index, result)`` as each job finishes, so a caller
    can show one progress display across jobs and keep (cache) each result at once.
    """

    name = "local"
    workers = 1

    def as_completed(
        self, fn: Callable[[T], R], items: Iterable[T], *, errors: str = "raise"
    ) -> Iterator[tuple[int, Any]]:
        """Yield ``(index, result)`` in completion order; a raising job yields a
        :class:`JobFailure` when ``errors="return"``."""
        for i, item in enumerate(items):
            try:
                result: Any = fn(item)
            except Exception as exc:
                if errors == "raise":
                    raise
                result = JobFailure(i, str(exc), type(exc).__name__)
            yield i, result

    def map(
        self,
        fn: Callable[[T], R],
        items: Iterable[T],
        *,
        errors: str = "raise",
        on_done: Callable[[int], None] | None = None,
    ) -> list[Any]:
        items = list(items)
        out: list[Any] = [None] * len(items)
        for i, result in self.as_completed(fn, items, errors=errors):
            out[i] = result
            if on_done:
                on_done(i)
        return out

    def close(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalExecutor(Executor):
    """Runs jobs one after another in this process (the default)."""


class ProcessExecutor(Executor):
    """Runs jobs on a pool of worker processes on this machine (spawned, not forked)."""

    name = "process"

    def __init__(self, workers: int | None = None) -> None:
        import multiprocessing as mp

        cpus = os.cpu_count() or 1
        # more processes than a few per core only add start-up time and memory
        self.workers = min(workers or cpus, max_workers())
        self._pool = ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=mp.get_context("spawn"),
            initializer=_worker_init,
        )

    def as_completed(self, fn, items, *, errors="raise"):  # type: ignore[no-untyped-def]
        futures = {self._pool.submit(fn, item): i for i, item in enumerate(items)}
        for fut in as_completed(futures):
            i = futures[fut]
            try:
                result = fut.result()
            except Exception as exc:
                if errors == "raise":
                    raise
                result = JobFailure(i, str(exc), type(exc).__name__)
            yield i, result

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class RayExecutor(Executor):
    """Runs jobs as Ray tasks: a local Ray instance, or a cluster at ``address``."""

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise UserError("the Ray executor needs Ray: pip install 'mlwarden[ray]'") from None
        self._ray = ray
        self._owns = not ray.is_initialized()
        if self._owns:
            kwargs: dict[str, Any] = {
                "ignore_reinit_error": True,
                "log_to_driver": False,
                "include_dashboard": False,
            }
            if address:
                kwargs["address"] = address
            else:
                kwargs["num_cpus"] = workers or os.cpu_count() or 1
            ray.init(**kwargs)
        self.workers = int(ray.cluster_resources().get("CPU", 1))

    def as_completed(self, fn, items, *, errors="raise"):  # type: ignore[no-untyped-def]
        ray = self._ray
        remote = ray.remote(num_cpus=1)(_call)
        refs = [remote.remote(fn, item) for item in items]
        index = {ref: i for i, ref in enumerate(refs)}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                i = index[ref]
                try:
                    result = ray.get(ref)
                except Exception as exc:
                    if errors == "raise":
                        raise
                    cause = getattr(exc, "cause", None) or exc
                    result = JobFailure(i, str(cause), type(cause).__name__)
                yield i, result

    def close(self) -> None:
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()


def _call(fn: Callable[[Any], Any], item: Any) -> Any:
    _worker_init()
    return fn(item)


def _worker_init() -> None:
    # One thread per worker: N workers on N cores must not each spin N BLAS threads.
    import torch

    torch.set_num_threads(1)


def max_workers() -> int:
    """The most worker processes ``process=N`` starts: four per core (at least 8)."""
    return max(8, 4 * (os.cpu_count() or 1))


def parse_spec(spec: str | None) -> tuple[str, str | None]:
    """Check an executor spec without starting anything: ``(kind, argument)``.

    ``local``, ``process``, ``process=N``, ``ray``, ``ray=ADDRESS`` or ``ray://host:port``.
    """
    spec = (spec or "local").strip()
    if spec.startswith("ray://"):
        return "ray", spec
    kind, _, arg = spec.partition("=")
    if kind == "local" and not arg:
        return "local", None
    if kind == "process":
        if arg and not (arg.isdigit() and int(arg) > 0):
            raise UserError(f"process executor wants a worker count, e.g. process=4; got {arg!r}")
        return "process", arg or None
    if kind == "ray":
        return "ray", arg or None
    raise UserError(f"unknown executor {spec!r}; expected local, process[=N] or ray[=ADDRESS]")


def get_executor(spec: str | None = "local") -> Executor:
    """``local``, ``process``, ``process=N``, ``ray``, ``ray=ADDRESS`` or ``ray://host:port``."""
    kind, arg = parse_spec(spec)
    if kind == "process":
        return ProcessExecutor(int(arg) if arg else None)
    if kind == "ray":
        return RayExecutor(arg)
    return LocalExecutor()


def chunks(items: list[T], n: int) -> Iterator[list[T]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]
