"""Link-safe file operations: never read or write through a link someone else planted.

Anyone who can write a folder we write into (a shared output folder, the registry
folder) can plant a symbolic link at the name we are about to create, or swap a
folder on the way for a link, between our check and our write. These helpers
close those windows the way ``openat(2)`` code does:

* a folder is opened once (``O_DIRECTORY | O_NOFOLLOW``) and everything below it is
  reached through that descriptor (``dir_fd=``), so swapping a path component for
  a link afterwards redirects nothing;
* files are created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` (an existing name, link
  or not, is refused) and read with ``O_NOFOLLOW``;
* a name that is (or becomes) a link is an error that names it, never followed.

Example::

    fd = open_dir(Path("restored"), create=True)
    sub = sub_dir(fd, "weights", create=True)
    out = create_file(sub, "model.safetensors")
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import stat
from pathlib import Path

from mlwarden.core.errors import InputFileError
from mlwarden.integrity.hashing import CHUNK, thread_buffer

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | NOFOLLOW | _CLOEXEC
_READ_FLAGS = os.O_RDONLY | NOFOLLOW | _CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW | _CLOEXEC


def _is_link(name: str | Path, parent: int | None) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(name, dir_fd=parent).st_mode)
    except OSError:
        return False


def why(exc: OSError, name: str | Path | None = None, parent: int | None = None) -> str:
    """A short reason for ``exc`` that names a planted link as such.

    ``O_DIRECTORY | O_NOFOLLOW`` on a link fails with ``ENOTDIR`` on Linux, so
    with ``name`` (relative to the open folder ``parent``) the name is checked.
    """
    if exc.errno == errno.ELOOP or (
        exc.errno == errno.ENOTDIR and name is not None and _is_link(name, parent)
    ):
        return "is a symbolic link (refused: a link could redirect the read or write)"
    if exc.errno == errno.EEXIST:
        return "already exists (refused: it is never overwritten or followed)"
    if exc.errno == errno.ENOTDIR:
        return "is not a folder (or a folder on its path is a file or a link)"
    return f"cannot be opened ({exc.strerror or exc})"


def open_dir(path: Path, create: bool = False) -> int:
    """A descriptor of the folder ``path``, whose last component must not be a link.

    With ``create`` the folder (and its parents) is made first. The caller closes
    the descriptor.
    """
    try:
        if create:
            path.mkdir(parents=True, exist_ok=True)
        return os.open(path, _DIR_FLAGS)
    except FileExistsError:
        raise InputFileError(path, "exists and is not a folder") from None
    except OSError as exc:
        raise InputFileError(path, why(exc, path)) from None


def sub_dir(parent: int, name: str, create: bool = False, label: str | None = None) -> int:
    """A descriptor of the folder ``name`` inside the open folder ``parent`` (no links)."""
    try:
        if create:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o755, dir_fd=parent)
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except OSError as exc:
        raise InputFileError(label or name, why(exc, name, parent)) from None


def create_file(parent: int, name: str, mode: int = 0o644, label: str | None = None) -> int:
    """Create the new file ``name`` in the open folder ``parent`` for writing (never follows)."""
    try:
        return os.open(name, _CREATE_FLAGS, mode, dir_fd=parent)
    except OSError as exc:
        raise InputFileError(label or name, why(exc)) from None


def create_temp(parent: int, prefix: str, mode: int = 0o600) -> tuple[int, str]:
    """Create a new file with a random name in ``parent``: (descriptor, name)."""
    for _ in range(100):
        name = f"{prefix}{secrets.token_hex(8)}"
        try:
            return os.open(name, _CREATE_FLAGS, mode, dir_fd=parent), name
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name")


def open_regular(path: str | Path, parent: int | None = None) -> tuple[int, os.stat_result]:
    """Open a regular file for reading without following a link: (descriptor, its stat).

    Raises ``OSError`` (``ELOOP`` for a link, ``EINVAL`` for a FIFO, device or
    folder); the ``stat`` comes from the open descriptor, so it describes exactly
    the file that will be read.
    """
    fd = os.open(path, _READ_FLAGS | getattr(os, "O_NONBLOCK", 0), dir_fd=parent)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def copy_hashing(src: int, dst: int | None) -> tuple[str, int]:
    """Read ``src`` to its end once, hashing it and writing it to ``dst``: (SHA-256, bytes).

    The bytes written are exactly the bytes hashed, so a caller that checks the
    digest afterwards knows what it wrote (or, with ``dst=None``, what it read).
    """
    h = hashlib.sha256()
    size = 0
    buf = thread_buffer(CHUNK)
    view = memoryview(buf)
    with open(src, "rb", buffering=0, closefd=False) as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(view[:n])
            size += n
            if dst is not None:
                done = 0
                while done < n:
                    done += os.write(dst, view[done:n])
    return h.hexdigest(), size
