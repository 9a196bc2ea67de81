"""Content-addressed object store: each distinct file content is kept once, named by SHA-256.

Objects live at ``objects/<first two hex>/<remaining 62 hex>``. Every write goes to a
temporary file in the same file system, is fsync'ed, then renamed into place with
``os.replace`` (atomic on POSIX), and the folder is fsync'ed, so a crash leaves either
no object or a complete one, never a partial file under a digest name. The copy
re-hashes what it writes and refuses to store bytes whose digest differs from the one
expected (a file that changed while it was being added).

Example::

    store = ObjectStore(Path(".mlwarden"))
    store.put(Path("model.bin"), digest)
    store.path(digest).read_bytes()
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

from mlwarden.core.errors import InputFileError
from mlwarden.integrity.hashing import CHUNK, default_workers, hash_file
from mlwarden.integrity.manifest import check_digest


class ObjectStore:
    """Files by SHA-256 under ``root/objects``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.objects = root / "objects"
        self.tmp = root / "tmp"

    def ensure(self) -> None:
        self.objects.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        check_digest(digest)
        return self.objects / digest[:2] / digest[2:]

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def put(self, source: Path, digest: str) -> bool:
        """Copy ``source`` in as object ``digest``; False when it was already stored."""
        if self.has(digest):
            return False
        with open(source, "rb") as src:
            return self.put_stream(src, digest, label=str(source))

    def put_stream(self, src: IO[bytes], digest: str, label: str = "stream") -> bool:
        """Store the bytes read from ``src`` as object ``digest`` (atomically, verified)."""
        dest = self.path(digest)
        if dest.is_file():
            return False
        self.ensure()
        fd, tmp_name = tempfile.mkstemp(dir=self.tmp, prefix="obj-")
        tmp = Path(tmp_name)
        try:
            h = hashlib.sha256()
            buf = bytearray(CHUNK)
            view = memoryview(buf)
            with os.fdopen(fd, "wb") as out:
                while True:
                    n = src.readinto(buf)  # type: ignore[attr-defined]
                    if not n:
                        break
                    h.update(view[:n])
                    out.write(view[:n])
                out.flush()
                os.fsync(out.fileno())
            if h.hexdigest() != digest:
                raise InputFileError(
                    label, "changed while it was being added (its SHA-256 no longer matches)"
                )
            os.chmod(tmp, 0o444)
            dest.parent.mkdir(exist_ok=True)
            os.replace(tmp, dest)
            fsync_dir(dest.parent)
        finally:
            if tmp.exists():
                tmp.unlink()
        return True

    def put_many(self, items: Iterable[tuple[Path, str]], workers: int | None = None) -> int:
        """Store several files in parallel; returns how many objects were new."""
        unique: dict[str, Path] = {}
        for path, digest in items:
            if digest not in unique and not self.has(digest):
                unique[digest] = path
        if not unique:
            return 0
        self.ensure()
        with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
            return sum(pool.map(lambda d: self.put(unique[d], d), unique))

    def check(self, digest: str) -> str:
        """``"ok"``, ``"missing"`` or ``"corrupt"`` (content no longer hashes to its name)."""
        p = self.path(digest)
        if p.is_symlink() or not p.is_file():
            return "missing"
        actual, _ = hash_file(p)
        return "ok" if actual == digest else "corrupt"

    def export_to(self, digest: str, dest: Path) -> None:
        """Write object ``digest`` to ``dest`` atomically (temp file + fsync + rename)."""
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=".mlw-")
        try:
            with os.fdopen(fd, "wb") as out, open(self.path(digest), "rb") as src:
                shutil.copyfileobj(src, out, CHUNK)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp_name, dest)
        finally:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)


def fsync_dir(path: Path) -> None:
    """fsync a folder so a rename inside it survives a crash (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
