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
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

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
def progress_bar(description: str, total: int | None) -> Iterator[Progress | None]:
    """A rich progress bar on a terminal; ``None`` (no output) otherwise."""
    if not progress_enabled():
        yield None
        return
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )
    with bar:
        bar.add_task(description, total=total)
        yield bar


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar when on a terminal."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress_bar(description, total) as bar:
        for item in items:
            yield item
            if bar is not None:
                bar.advance(bar.task_ids[0])
