"""Registry garbage: staging left by killed adds, orphaned and unreferenced objects.

An add copies each file into the store's ``tmp/`` folder, renames it into
``objects/`` and then commits the version in SQLite. A process killed in between
leaves staged copies in ``tmp/`` or installed objects no version references.

Coordination is one lock file, ``adds.lock`` in the registry folder, held with
``flock``: every add (and import) holds it *shared* for its whole run
(:func:`add_lease`); garbage collection holds it *exclusive*, so it never runs while
an add is in flight and never removes what such an add staged or installed. The
kernel drops the lock of a killed process, so a ``kill -9`` cannot wedge the
registry. An add that finds no other add in flight first sweeps ``tmp/`` (the
staging of killed adds) before taking its shared hold.

Example::

    with add_lease(reg.root):
        ...  # stage, install, commit
    garbage = collect(reg.root, lambda: referenced_digests(reg))
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from mlwarden.core.errors import UserError

LOCK_NAME = "adds.lock"
_F = TypeVar("_F", bound=Callable[..., Any])
_HEX2 = re.compile(r"^[0-9a-f]{2}$")
_HEX62 = re.compile(r"^[0-9a-f]{62}$")


def _open_lock(root: Path) -> int:
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        return os.open(root / LOCK_NAME, flags, 0o600)
    except OSError as exc:
        raise UserError(
            f"{root / LOCK_NAME}: cannot open the registry lock ({exc.strerror})"
        ) from None


def sweep_staging(tmp: Path) -> list[str]:
    """Remove every entry of the store's ``tmp/`` folder (call only with the lock held exclusively)."""
    removed: list[str] = []
    if not tmp.is_dir() or tmp.is_symlink():
        return removed
    for entry in os.scandir(tmp):
        with contextlib.suppress(FileNotFoundError):
            if entry.is_dir(follow_symlinks=False):
                continue  # never recurse: tmp/ holds only flat staged files
            os.unlink(entry.path)
            removed.append(entry.name)
    return removed


@contextlib.contextmanager
def add_lease(root: Path, referenced: Callable[[], Iterable[str]] | None = None) -> Iterator[None]:
    """Hold the registry's add lease (shared) for the duration of one add or import.

    When no other add is in flight, the staging left by killed adds is swept first,
    and, if the add fails, what it staged or installed without committing is removed
    (``referenced`` gives the digests committed versions need).
    """
    fd = _open_lock(root)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # another add is running: its staged files are not garbage
        else:
            sweep_staging(root / "tmp")
            fcntl.flock(fd, fcntl.LOCK_UN)
        fcntl.flock(fd, fcntl.LOCK_SH)
        try:
            yield
        except BaseException:
            if referenced is not None:
                with contextlib.suppress(OSError):
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # only when alone
                    _remove(root, find_garbage(root, referenced()))
            raise
    finally:
        os.close(fd)


def holds_add_lease(method: _F) -> _F:
    """Decorate a registry method that adds objects: it runs under :func:`add_lease`."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        with add_lease(self.store.root, lambda: referenced_digests(self)):
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def exclusive(root: Path, wait: float = 30.0) -> Iterator[None]:
    """Hold the lock exclusively (no add in flight); UserError after ``wait`` seconds."""
    fd = _open_lock(root)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise UserError(
                        f"an add is still running in {root} after {wait:.0f} s; run gc again later"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


def adds_in_flight(root: Path) -> bool:
    """Whether some process holds the add lease now (its staging is not garbage)."""
    if not (root / LOCK_NAME).exists():
        return False
    fd = _open_lock(root)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock we took
    return False


def fsck_problems(root: Path, referenced: Iterable[str]) -> list[str]:
    """``registry fsck`` lines for leftovers; none while an add is in flight (not garbage yet)."""
    if adds_in_flight(root):
        return []
    return find_garbage(root, referenced).problems()


@dataclass
class Garbage:
    """What a registry folder holds that no version needs (relative paths, bytes)."""

    staging: list[str] = field(default_factory=list)
    orphaned: list[str] = field(default_factory=list)
    unreferenced: list[str] = field(default_factory=list)
    bytes: int = 0

    def problems(self) -> list[str]:
        """One line per item, as ``registry fsck`` prints them."""
        return (
            [
                f"leftover staging tmp/{n} (an interrupted add; 'registry gc' removes it)"
                for n in self.staging
            ]
            + [f"orphaned entry objects/{n} (not a content address)" for n in self.orphaned]
            + [
                f"unreferenced object {d[:12]} (no version lists it; 'registry gc' removes it)"
                for d in self.unreferenced
            ]
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "staging": self.staging,
            "orphaned": self.orphaned,
            "unreferenced": self.unreferenced,
            "bytes": self.bytes,
        }


def _size(path: str) -> int:
    try:
        return os.lstat(path).st_size
    except OSError:
        return 0


def find_garbage(root: Path, referenced: Iterable[str]) -> Garbage:
    """List staging, orphaned and unreferenced objects under ``root`` (reads only)."""
    keep = set(referenced)
    out = Garbage()
    tmp, objects = root / "tmp", root / "objects"
    if tmp.is_dir() and not tmp.is_symlink():
        for entry in os.scandir(tmp):
            out.staging.append(entry.name)
            out.bytes += _size(entry.path)
    if objects.is_dir() and not objects.is_symlink():
        for sub in os.scandir(objects):
            if not (_HEX2.match(sub.name) and sub.is_dir(follow_symlinks=False)):
                out.orphaned.append(sub.name)
                out.bytes += _size(sub.path)
                continue
            for entry in os.scandir(sub.path):
                digest = sub.name + entry.name
                if not (_HEX62.match(entry.name) and entry.is_file(follow_symlinks=False)):
                    out.orphaned.append(f"{sub.name}/{entry.name}")
                elif digest not in keep:
                    out.unreferenced.append(digest)
                else:
                    continue
                out.bytes += _size(entry.path)
    out.staging.sort()
    out.orphaned.sort()
    out.unreferenced.sort()
    return out


def referenced_digests(reg: Any) -> set[str]:
    """Every object digest a version of ``reg`` (a :class:`~.registry.Registry`) lists.

    Aliases point at versions, so what an alias needs is in this set too.
    """
    return {
        e.digest
        for name in reg.names()
        for rec in reg.versions(name)
        for e in rec.manifest.files.values()
    }


def collect(
    root: Path, referenced: Callable[[], Iterable[str]], dry_run: bool = False, wait: float = 30.0
) -> Garbage:
    """Remove staging, orphaned and unreferenced objects, with no add in flight.

    ``referenced`` is called *after* the exclusive hold is taken, so a version an
    add committed just before cannot be missed.
    """
    with exclusive(root, wait):
        garbage = find_garbage(root, referenced())
        if not dry_run:
            _remove(root, garbage)
    return garbage


def _remove(root: Path, garbage: Garbage) -> None:
    for name in garbage.staging:
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            os.unlink(root / "tmp" / name)
    for digest in garbage.unreferenced:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(root / "objects" / digest[:2] / digest[2:])
    for rel in garbage.orphaned:
        path = root / "objects" / rel
        with contextlib.suppress(FileNotFoundError):
            if path.is_dir() and not path.is_symlink():
                continue  # a foreign folder is reported, never deleted recursively
            os.unlink(path)
