"""Reuse the results of audit jobs whose inputs and configuration have not changed.

A job's key is the SHA-256 of: the function it calls, its keyword arguments, the
SHA-256 of every input file (a folder: of every file in it, by relative path) and the
mlwarden version. Change a model file, a parameter or upgrade mlwarden, and the job
runs again. Only successful results are stored; a failed job always reruns.

Entries are JSON files ``<cache_dir>/<key>.json``. A corrupt or unreadable entry is a
miss, never an error.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from mlwarden import __version__
from mlwarden.audit.jobs import Job

_CHUNK = 1 << 20


def file_digest(path: Path) -> str:
    """SHA-256 of a file, or of a folder's files (relative path + content), hex."""
    h = hashlib.sha256()
    if path.is_dir():
        for sub in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(str(sub.relative_to(path)).encode())
            h.update(file_digest(sub).encode())
        return h.hexdigest()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def job_key(job: Job) -> str:
    """The cache key of a job: configuration + content of its inputs + tool version."""
    payload = {
        "function": job.function,
        "kwargs": job.kwargs,
        "inputs": {p: file_digest(Path(p)) for p in job.inputs if Path(p).exists()},
        "mlwarden": __version__,
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class JobCache:
    """Finished job results on disk, keyed by :func:`job_key`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            entry = json.loads(self._path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(entry, dict) or entry.get("key") != key:
            return None
        report = entry.get("report")
        return report if isinstance(report, dict) else None

    def put(self, key: str, job: Job, report: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._path(key)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        entry = {"key": key, "job": job.name, "function": job.function, "report": report}
        tmp.write_text(json.dumps(entry, default=str), encoding="utf-8")
        tmp.replace(path)
