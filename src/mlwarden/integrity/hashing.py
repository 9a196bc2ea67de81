"""Streaming SHA-256 of files, several files hashed in parallel.

``hashlib`` releases the GIL while it hashes a buffer, so a thread pool hashes
several files (or a dataset's many small files) at once; one large file is read in
4 MiB chunks with ``readinto`` into a reused buffer, so memory stays constant and a
multi-GB model hashes at disk (or SHA-256) speed. Sizes are in bytes.

Example::

    digest, size = hash_file(Path("model.safetensors"))
    results = hash_files([Path("a.bin"), Path("b.bin")])
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

#: Read size for large files (bytes). Large enough that the per-call overhead of
#: Python is negligible next to SHA-256 itself.
CHUNK = 4 * 1024 * 1024


def default_workers() -> int:
    """Threads used to hash files in parallel: CPU count + 4, at most 32.

    More threads than cores, as Python's own I/O pools use: while one thread waits
    for a read (cold cache, network storage) another hashes, and hashing itself
    runs outside the GIL.
    """
    return min(32, (os.cpu_count() or 1) + 4)


_local = threading.local()


def thread_buffer(size: int) -> bytearray:
    """This thread's reusable read buffer (no allocation per file)."""
    buf = getattr(_local, "buf", None)
    if buf is None or len(buf) != size:
        buf = _local.buf = bytearray(size)
    return buf


def hash_file(path: str | Path, chunk: int = CHUNK) -> tuple[str, int]:
    """SHA-256 (hex) and size in bytes of one file, streamed in ``chunk``-byte reads."""
    h = hashlib.sha256()
    size = 0
    buf = thread_buffer(chunk)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(view[:n])
            size += n
    return h.hexdigest(), size


def hash_files(paths: Sequence[str | Path], workers: int | None = None) -> list[tuple[str, int]]:
    """Hash several files in parallel threads; results in the order of ``paths``."""
    if not paths:
        return []
    workers = workers or default_workers()
    if workers == 1 or len(paths) == 1:
        return [hash_file(p) for p in paths]
    with ThreadPoolExecutor(max_workers=min(workers, len(paths))) as pool:
        return list(pool.map(hash_file, paths))
