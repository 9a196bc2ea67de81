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

import contextlib
import ctypes
import errno
import functools
import hashlib
import os
import stat
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from mlwarden.core.errors import InputFileError
from mlwarden.integrity.hashing import CHUNK, default_workers, thread_buffer
from mlwarden.integrity.manifest import check_digest
from mlwarden.integrity.safeio import (
    NOFOLLOW,
    copy_hashing,
    create_file,
    create_temp,
    open_dir,
    open_regular,
    sub_dir,
    why,
)

_DIR_READ = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class ObjectStore:
    """Files by SHA-256 under ``root/objects``.

    Every path below ``root`` is reached through folder descriptors without
    following links (:mod:`.safeio`): someone who can write the registry folder and
    replaces ``tmp/``, ``objects/`` or ``objects/ab`` with a link cannot make us
    write elsewhere, and a linked or hard-linked object is reported, never trusted.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.objects = root / "objects"
        self.tmp = root / "tmp"
        self._objects_str = str(self.objects)

    def ensure(self) -> None:
        for folder in (self.objects, self.tmp):
            os.close(open_dir(folder, create=True))

    def path(self, digest: str) -> Path:
        check_digest(digest)
        return self.objects / digest[:2] / digest[2:]

    def path_str(self, digest: str) -> str:
        """:meth:`path` as a string, without pathlib's cost (hot loop over 10,000 files)."""
        check_digest(digest)
        return os.path.join(self._objects_str, digest[:2], digest[2:])

    def has(self, digest: str) -> bool:
        """Is ``digest`` stored as a regular file (a link or folder in its place is not)?"""
        try:
            return stat.S_ISREG(os.lstat(self.path_str(digest)).st_mode)
        except OSError:
            return False

    def open_object(self, digest: str) -> tuple[int, os.stat_result]:
        """Open object ``digest`` for reading: (descriptor, stat of that descriptor).

        Neither ``objects/``, its ``ab/`` folder nor the object may be a link
        (``OSError`` with ``ELOOP``); a missing object raises ``FileNotFoundError``.
        """
        check_digest(digest)
        objects = os.open(self.objects, _DIR_READ)
        try:
            sub = os.open(digest[:2], _DIR_READ, dir_fd=objects)
            try:
                return open_regular(digest[2:], parent=sub)
            finally:
                os.close(sub)
        finally:
            os.close(objects)

    def inspect(self, digest: str) -> tuple[str, int]:
        """(status, size): status ``ok``, ``missing``, ``corrupt``, ``a symbolic link``,
        ``hard-linked`` (another name can change its bytes) or ``not a regular file``.
        """
        return self.inspect_many([digest])[0]

    def inspect_many(
        self, digests: Sequence[str], workers: int | None = None
    ) -> list[tuple[str, int]]:
        """:meth:`inspect` for many objects, hashed in parallel threads.

        ``objects/`` and each ``ab/`` folder are opened once (``O_NOFOLLOW``) and
        every object is opened relative to its folder's descriptor.
        """
        for d in digests:
            check_digest(d)
        try:
            objects = os.open(self.objects, _DIR_READ)
        except OSError as exc:
            return [(self._link_or(exc, self.objects, "missing"), 0)] * len(digests)
        subs: dict[str, int | str] = {}
        try:
            for d in digests:
                if d[:2] not in subs:
                    try:
                        subs[d[:2]] = os.open(d[:2], _DIR_READ, dir_fd=objects)
                    except OSError as exc:
                        subs[d[:2]] = self._link_or(exc, self.objects / d[:2], "missing")

            def one(digest: str) -> tuple[str, int]:
                sub = subs[digest[:2]]
                return (sub, 0) if isinstance(sub, str) else _inspect_at(sub, digest)

            if len(digests) > 1:
                size = min(workers or default_workers(), len(digests))
                with ThreadPoolExecutor(max_workers=size) as pool:
                    return list(pool.map(one, digests))
            return [one(d) for d in digests]
        finally:
            for fd in subs.values():
                if isinstance(fd, int):
                    os.close(fd)
            os.close(objects)

    @staticmethod
    def _link_or(exc: OSError, path: Path, otherwise: str) -> str:
        if exc.errno == errno.ELOOP or os.path.islink(path):
            return "a symbolic link"
        return otherwise if exc.errno in (errno.ENOENT, errno.ENOTDIR) else "not a regular file"

    def check(self, digest: str) -> str:
        """The status of :meth:`inspect` alone."""
        return self.inspect(digest)[0]

    def put(self, source: Path, digest: str, sync_dir: bool = True) -> bool:
        """Copy ``source`` in as object ``digest``; False when it was already stored."""
        if self.has(digest):
            return False
        with open(source, "rb") as src:
            return self.put_stream(src, digest, label=str(source), sync_dir=sync_dir)

    def put_stream(
        self, src: IO[bytes], digest: str, label: str = "stream", sync_dir: bool = True
    ) -> bool:
        """Store the bytes read from ``src`` as object ``digest`` (atomically, verified).

        The object's data is fsync'ed before the rename; with ``sync_dir=False`` the
        caller must call :meth:`sync_dirs` before it relies on the rename surviving a
        crash.
        """
        if self.has(digest):
            return False
        self.ensure()
        tmp = self.stage(src, digest, label, fsync=True)
        self.install(tmp, digest)
        if sync_dir:
            fsync_dir(self.path(digest).parent)
        return True

    def stage(
        self, src: IO[bytes], digest: str, label: str, fsync: bool, tmp_dir: int | None = None
    ) -> str:
        """Copy ``src`` to a new file in ``tmp/``, re-hashing it; its name (removed on error).

        ``tmp_dir``: an open descriptor of ``tmp/`` to reuse (many objects).
        """
        folder = open_dir(self.tmp) if tmp_dir is None else tmp_dir
        try:
            fd, name = create_temp(folder, "obj-")
            try:
                h = hashlib.sha256()
                buf = thread_buffer(CHUNK)
                view = memoryview(buf)
                with os.fdopen(fd, "wb") as out:
                    while True:
                        n = src.readinto(buf)  # type: ignore[attr-defined]
                        if not n:
                            break
                        h.update(view[:n])
                        out.write(view[:n])
                    out.flush()
                    os.fchmod(out.fileno(), 0o444)
                    if fsync:
                        os.fsync(out.fileno())
                if h.hexdigest() != digest:
                    raise InputFileError(
                        label, "changed while it was being added (its SHA-256 no longer matches)"
                    )
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=folder)
                raise
        finally:
            if tmp_dir is None:
                os.close(folder)
        return name

    def install(self, tmp: str, digest: str, dirs: _Folders | None = None) -> None:
        """Rename the staged file ``tmp`` (in ``tmp/``) to its object name (no links followed)."""
        own = dirs is None
        folders = _Folders(self) if dirs is None else dirs
        try:
            os.replace(tmp, digest[2:], src_dir_fd=folders.tmp, dst_dir_fd=folders.sub(digest))
        finally:
            if own:
                folders.close()

    def discard(self, staged: Iterable[str]) -> None:
        """Remove staged files that will not be installed."""
        tmp_dir = open_dir(self.tmp)
        try:
            for name in staged:
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=tmp_dir)
        finally:
            os.close(tmp_dir)

    def put_many(self, items: Iterable[tuple[Path, str]], workers: int | None = None) -> int:
        """Store several files: copy all in parallel, one durability barrier, then rename.

        Ordering keeps every object name pointing at complete bytes even across a
        power loss: (1) every object is written to a temporary file and re-hashed,
        (2) one ``syncfs`` makes all that data durable, (3) the files are renamed to
        their digest names, (4) a second ``syncfs`` makes the renames durable. Two
        barriers instead of one fsync per file (10,000 small files: seconds, not
        minutes). Returns how many objects were new.
        """
        unique: dict[str, Path] = {}
        for path, digest in items:
            if digest not in unique and not self.has(digest):
                unique[digest] = path
        if not unique:
            return 0
        self.ensure()
        folders = _Folders(self)

        def stage(digest: str) -> str:
            with open(unique[digest], "rb") as src:
                return self.stage(src, digest, str(unique[digest]), False, folders.tmp)

        staged: dict[str, str] = {}
        try:
            with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
                for d, name in zip(unique, pool.map(stage, unique), strict=True):
                    staged[d] = name
            sync_filesystem(self.tmp)
            for d in list(staged):
                self.install(staged.pop(d), d, folders)
            sync_filesystem(self.objects)
        finally:
            if staged:
                self.discard(staged.values())
            folders.close()
        return len(unique)

    def sync_dirs(self, digests: Iterable[str]) -> None:
        """fsync the object folders of ``digests`` (once each) and ``objects/`` itself."""
        for folder in sorted({self.path(d).parent for d in digests}):
            fsync_dir(folder)
        fsync_dir(self.objects)

    def copy_out(self, digest: str, parent: int, name: str, label: str) -> None:
        """Write object ``digest`` as the NEW file ``name`` in the open folder ``parent``.

        The object is read once, hashed while it is copied, and the copy is fsync'ed;
        if the bytes read do not hash to ``digest`` (changed in the store, or a
        link), the copy is removed and :class:`InputFileError` raised. ``name`` must
        not exist (``O_EXCL``, never follows a link planted there).
        """
        try:
            src, st = self.open_object(digest)
        except OSError as exc:
            raise InputFileError(self.path(digest), why(exc)) from None
        try:
            out = create_file(parent, name, 0o644, label=label)
            try:
                actual, _ = copy_hashing(src, out)
                os.fsync(out)
            finally:
                os.close(out)
        finally:
            os.close(src)
        if actual != digest or st.st_nlink > 1:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=parent)
            what = (
                "is hard-linked (another name can change its bytes)"
                if actual == digest
                else "was modified in the store (its SHA-256 no longer matches its name)"
            )
            raise InputFileError(self.path(digest), f"{what}; refusing to use its bytes")


def _inspect_at(folder: int, digest: str) -> tuple[str, int]:
    try:
        fd, st = open_regular(digest[2:], parent=folder)
    except FileNotFoundError:
        return "missing", 0
    except OSError as exc:
        return ("a symbolic link" if exc.errno == errno.ELOOP else "not a regular file"), 0
    try:
        if st.st_nlink > 1:
            return "hard-linked", st.st_size
        actual, size = copy_hashing(fd, None)
    finally:
        os.close(fd)
    return ("ok" if actual == digest else "corrupt"), size


class _Folders:
    """Descriptors of ``tmp/``, ``objects/`` and ``objects/ab/``, opened once (no links)."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.tmp = open_dir(store.tmp)
        try:
            self.objects = open_dir(store.objects)
        except BaseException:
            os.close(self.tmp)
            raise
        self.subs: dict[str, int] = {}

    def sub(self, digest: str) -> int:
        fd = self.subs.get(digest[:2])
        if fd is None:
            label = str(self.store.path(digest).parent)
            fd = self.subs[digest[:2]] = sub_dir(self.objects, digest[:2], True, label)
        return fd

    def close(self) -> None:
        for fd in (self.tmp, self.objects, *self.subs.values()):
            os.close(fd)
        self.subs.clear()


def sync_filesystem(path: Path) -> None:
    """Make every write to the file system holding ``path`` durable (``syncfs(2)``).

    Falls back to ``sync(2)`` where ``syncfs`` is unavailable; both wait for the
    data to reach the device on Linux.
    """
    libc = _libc()
    if libc is not None:
        fd = os.open(path, os.O_RDONLY)
        try:
            if libc.syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    os.sync()


@functools.cache
def _libc() -> Any:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc if hasattr(libc, "syncfs") else None
    except OSError:
        return None


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
