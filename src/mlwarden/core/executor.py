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
    """Map a function over items; results come back in item order."""

    name = "local"
    workers = 1

    def map(
        self,
        fn: Callable[[T], R],
        items: Iterable[T],
        *,
        errors: str = "raise",
        on_done: Callable[[int], None] | None = None,
    ) -> list[Any]:
        out: list[Any] = []
        for i, item in enumerate(items):
            try:
                out.append(fn(item))
            except Exception as exc:
                if errors == "raise":
                    raise
                out.append(JobFailure(i, str(exc), type(exc).__name__))
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

        self.workers = workers or os.cpu_count() or 1
        self._pool = ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=mp.get_context("spawn"),
            initializer=_worker_init,
        )

    def map(self, fn, items, *, errors="raise", on_done=None):  # type: ignore[no-untyped-def]
        items = list(items)
        futures = {self._pool.submit(fn, item): i for i, item in enumerate(items)}
        results: list[Any] = [None] * len(items)
        for fut in as_completed(futures):
            i = futures[fut]
            try:
                results[i] = fut.result()
            except Exception as exc:
                if errors == "raise":
                    raise
                results[i] = JobFailure(i, str(exc), type(exc).__name__)
            if on_done:
                on_done(i)
        return results

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

    def map(self, fn, items, *, errors="raise", on_done=None):  # type: ignore[no-untyped-def]
        ray = self._ray
        remote = ray.remote(num_cpus=1)(_call)
        refs = [remote.remote(fn, item) for item in items]
        index = {ref: i for i, ref in enumerate(refs)}
        results: list[Any] = [None] * len(refs)
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                i = index[ref]
                try:
                    results[i] = ray.get(ref)
                except Exception as exc:
                    if errors == "raise":
                        raise
                    cause = getattr(exc, "cause", exc)
                    results[i] = JobFailure(i, str(cause), type(cause).__name__)
                if on_done:
                    on_done(i)
        return results

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


def get_executor(spec: str | None = "local") -> Executor:
    """``local``, ``process``, ``process=N``, ``ray``, ``ray=ADDRESS`` or ``ray://host:port``."""
    spec = (spec or "local").strip()
    kind, _, arg = spec.partition("=")
    if kind == "local":
        return LocalExecutor()
    if kind == "process":
        try:
            workers = int(arg) if arg else None
        except ValueError:
            raise UserError(
                f"process executor wants a worker count, e.g. process=4; got {arg!r}"
            ) from None
        return ProcessExecutor(workers)
    if kind == "ray":
        return RayExecutor(arg or None)
    if spec.startswith("ray://"):
        return RayExecutor(spec)
    raise UserError(f"unknown executor {spec!r}; expected local, process[=N] or ray[=ADDRESS]")


def chunks(items: list[T], n: int) -> Iterator[list[T]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]
