"""Writing a rendered report to the path the user named.

A regular file is replaced atomically (a temporary file renamed into place), so a
reader never sees half a report. A path that is not a regular file is written
straight into instead: renaming over ``/dev/stdout``, a named pipe or a terminal
would replace that node with a plain file (as root, in ``/dev``) rather than write
to it. A symbolic link to a regular file is kept and its target replaced.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path``; see the module docs."""
    path = Path(path)
    try:
        mode: int | None = os.stat(path).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
    if mode is not None and not stat.S_ISREG(mode):
        try:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as exc:  # name the path: "disk full" alone does not say where
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        return
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
