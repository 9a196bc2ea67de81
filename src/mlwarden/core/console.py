"""Console output and progress bars shared by every command.

Progress bars appear only on a terminal and never in ``--quiet`` mode; status
messages go to stderr so that ``--format json`` on stdout stays machine-readable.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")


class Settings:
    quiet: bool = False
    debug: bool = False


settings = Settings()
err = Console(stderr=True, highlight=False, soft_wrap=True)


def progress_enabled() -> bool:
    return not settings.quiet and sys.stderr.isatty()


def info(message: str) -> None:
    """A status line on stderr, unless quiet."""
    if not settings.quiet:
        err.print(message)


@contextmanager
def progress_bar(
    description: str, total: float | None, *, counts: bool = True
) -> Iterator[Progress | None]:
    """A rich progress bar with elapsed time and an estimate of the time left, on a
    terminal only; ``None`` (no output) otherwise: never in ``--quiet`` mode, CI logs or
    piped output. ``counts=False`` hides the ``done/total`` column (weighted work units).

    Example::

        with progress_bar("evasion", total=10) as bar:
            ...
            if bar is not None:
                bar.advance(bar.task_ids[0])
    """
    if not progress_enabled():
        yield None
        return
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        *([MofNCompleteColumn()] if counts else []),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
    ]
    bar = Progress(*columns, console=err, transient=True)
    with bar:
        bar.add_task(description, total=total)
        yield bar


class Stages:
    """Progress of a job made of weighted phases (one bar, time left from the weights).

    ``weights`` maps each phase to its expected cost in any unit; :meth:`start` names
    the running phase, :meth:`done` counts it. Silent when ``bar`` is ``None``.

    Example::

        with progress_bar("evasion", None, counts=False) as bar:
            st = Stages(bar, {"apgd": 100.0, "square": 50.0}, prefix="model.pt")
            st.start("apgd"); ...; st.done("apgd")
    """

    def __init__(self, bar: Progress | None, weights: dict[str, float], prefix: str = "") -> None:
        self.bar, self.weights, self.prefix = bar, dict(weights), prefix
        self.completed = 0.0
        if bar is not None:
            bar.update(bar.task_ids[0], total=max(sum(self.weights.values()), 1e-9), completed=0)

    def start(self, phase: str) -> None:
        if self.bar is not None:
            label = f"{self.prefix}: {phase}" if self.prefix else phase
            self.bar.update(self.bar.task_ids[0], description=label)

    def done(self, phase: str) -> None:
        self.completed += self.weights.pop(phase, 0.0)
        if self.bar is not None:
            self.bar.update(self.bar.task_ids[0], completed=self.completed)


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar when on a terminal."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress_bar(description, total) as bar:
        for item in items:
            yield item
            if bar is not None:
                bar.advance(bar.task_ids[0])
