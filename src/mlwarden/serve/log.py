"""The gateway's audit log: one SQLite row per request, durable before the response.

ATLAS mitigation AML.M0024 (AI Telemetry Logging). Every answered request has a row
with the time, the caller's key *name* (never the key), the request id, the SHA-256
digest of the request body, the number of inputs, the decision, the HTTP status,
any detector alerts and the latency.

Durability: a request handler hands its record to :meth:`AuditLog.record` and does
not answer until the writer thread has committed it. The writer takes every record
waiting in its queue, inserts them in one transaction and commits once (group
commit), so concurrent requests share a commit instead of queueing for one each.
The database is in WAL mode; with ``synchronous=NORMAL`` a committed row survives a
crash of the server process (kill -9), with ``synchronous=FULL`` also a power loss
(at the cost of an fsync per group).

Example::

    log = AuditLog(Path("audit.db"))
    await log.record(AuditRecord(key="alice", status=200, decision="allow", ...))
    log.close()
"""

from __future__ import annotations

import asyncio
import functools
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    request_id TEXT NOT NULL,
    key TEXT,
    path TEXT NOT NULL,
    status INTEGER NOT NULL,
    decision TEXT NOT NULL,
    input_digest TEXT,
    n_inputs INTEGER NOT NULL,
    latency_ms REAL NOT NULL,
    alerts TEXT NOT NULL,
    detail TEXT NOT NULL
)
"""


# What must survive a restart: blocks, query budgets, detector histories (one row each
# per key and kind; see mlwarden.serve.app.Gateway.restore).
_STATE_SCHEMA = """
CREATE TABLE IF NOT EXISTS state (
    key TEXT NOT NULL,
    kind TEXT NOT NULL,
    value BLOB NOT NULL,
    ts REAL NOT NULL,
    PRIMARY KEY (key, kind)
)
"""


@dataclass
class AuditRecord:
    """One request as the audit log stores it (times in seconds, latency in ms)."""

    request_id: str
    key: str | None
    path: str
    status: int
    decision: str
    input_digest: str | None = None
    n_inputs: int = 0
    latency_ms: float = 0.0
    alerts: str = ""
    detail: str = ""
    ts: float = field(default_factory=time.time)
    # Gateway state written in the same transaction as the row: (key, kind, value).
    state: list[tuple[str, str, bytes]] = field(default_factory=list, repr=False)


_COLUMNS = [f.name for f in fields(AuditRecord) if f.name != "state"]
_UPSERT = (
    "INSERT INTO state (key, kind, value, ts) VALUES (?, ?, ?, ?) "
    "ON CONFLICT(key, kind) DO UPDATE SET value = excluded.value, ts = excluded.ts"
)
_INSERT = f"INSERT INTO requests ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"


def _private(path: Path) -> None:
    """Create ``path`` with mode 0600, or take group/other access away from it.

    SQLite gives the ``-wal`` and ``-shm`` files the database file's mode, so the
    request history (key names, input digests) is readable by the owner only.
    """
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, 0o600)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


# Batches whose state rows hold at least this many bytes (a detector history) are
# committed off the event loop (AuditLog._offload); budgets and blocks are tiny.
_OFFLOAD_BYTES = 64 * 1024


def _relay(loop: asyncio.AbstractEventLoop, fut: asyncio.Future[None], done: Future[None]) -> None:
    """Pass a commit's outcome from the committing thread to a request's future."""

    def settle() -> None:
        if fut.done():  # the request was cancelled; its row is stored all the same
            return
        error = done.exception()
        if error is None:
            fut.set_result(None)
        else:
            fut.set_exception(error)

    loop.call_soon_threadsafe(settle)


class AuditLogError(RuntimeError):
    """The audit log could not store a record (the request must then fail)."""


class AuditLog:
    """SQLite audit log with group commits, in the event loop or in a writer thread.

    With ``synchronous="normal"`` a commit is a WAL append without fsync (tens of
    microseconds), so by default it runs *inline* on the event loop: records that
    arrive in the same loop iteration are committed together by one callback, with no
    thread hand-off on the request path. A batch carrying a large state row (a key's
    detector history, ~1.3 MB) is the exception: a thread commits it while the loop
    goes on serving (:meth:`_offload`). With ``"full"`` every commit fsyncs, so a
    writer thread does it and the loop only waits.

    Args:
        path: the database file (created with its table if missing).
        synchronous: ``"normal"`` (survives a process crash) or ``"full"`` (also power loss).
        max_batch: most records per transaction (writer-thread mode).
        inline: commit on the event loop; default: when ``synchronous`` is normal.
    """

    def __init__(
        self,
        path: Path,
        synchronous: str = "normal",
        max_batch: int = 1024,
        inline: bool | None = None,
    ) -> None:
        self.path = Path(path)
        self.synchronous = synchronous.upper()
        if self.synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be 'normal' or 'full'; got {synchronous!r}")
        self.max_batch = max_batch
        self.commits = 0
        self.written = 0
        self.inline = self.synchronous == "NORMAL" if inline is None else inline
        self._pending: list[tuple[AuditRecord, asyncio.Future[None]]] = []
        self._flush_scheduled = False
        self._committer: ThreadPoolExecutor | None = None  # large state rows (see _offload)
        self._behind = 0  # batches handed to it and not committed yet
        self.offloaded = 0
        self._db: sqlite3.Connection | None = None
        if self.inline:
            try:
                self._db = self._connect(check_same_thread=False)
            except (sqlite3.Error, OSError) as exc:
                raise AuditLogError(f"cannot open audit log {self.path}: {exc}") from None
        self._queue: queue.SimpleQueue[tuple[AuditRecord, Future[None]] | None] = (
            queue.SimpleQueue()
        )
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="mlwarden-audit", daemon=True)
        if self.inline:
            return
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise AuditLogError(f"cannot open audit log {self.path}: {self._error}")

    def _connect(self, check_same_thread: bool = True) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _private(self.path)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=check_same_thread)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self.synchronous}")
        db.execute(_SCHEMA)
        db.execute(_STATE_SCHEMA)
        return db

    def _run(self) -> None:
        try:
            db = self._connect()
        except (sqlite3.Error, OSError) as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        stop = False
        while not stop:
            item = self._queue.get()
            batch: list[tuple[AuditRecord, Future[None]]] = []
            if item is None:
                stop = True
            else:
                batch.append(item)
            while len(batch) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    continue
                batch.append(nxt)
            if batch:
                self._write(db, batch)
        db.close()

    def _write(
        self,
        db: sqlite3.Connection,
        batch: list[tuple[AuditRecord, Future[None]]]
        | list[tuple[AuditRecord, asyncio.Future[None]]],
    ) -> None:
        try:
            db.execute("BEGIN")
            db.executemany(_INSERT, [tuple(getattr(rec, c) for c in _COLUMNS) for rec, _ in batch])
            states = [(k, kind, v, rec.ts) for rec, _ in batch for k, kind, v in rec.state]
            if states:
                db.executemany(_UPSERT, states)
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(AuditLogError(f"audit log write failed: {exc}"))
            return
        self.commits += 1
        self.written += len(batch)
        for _, fut in batch:
            if not fut.done():  # a request cancelled by its client is still logged
                fut.set_result(None)

    def submit(self, record: AuditRecord) -> Future[None]:
        """Queue a record; the future completes once it is committed."""
        fut: Future[None] = Future()
        if not self._thread.is_alive():
            fut.set_exception(AuditLogError("audit log is closed"))
            return fut
        self._queue.put((record, fut))
        return fut

    async def record(self, record: AuditRecord) -> None:
        """Store a record; returns once it is committed (raises :class:`AuditLogError`)."""
        if not self.inline:
            await asyncio.wrap_future(self.submit(record))
            return
        if self._db is None:
            raise AuditLogError("audit log is closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._pending.append((record, fut))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        await fut

    def _flush(self) -> None:
        """Commit every record queued in this loop iteration in one transaction."""
        batch, self._pending = self._pending, []
        self._flush_scheduled = False
        if self._db is None:
            for _, fut in batch:
                fut.set_exception(AuditLogError("audit log is closed"))
            return
        size = sum(len(v) for rec, _ in batch for _, _, v in rec.state)
        if self._behind or size >= _OFFLOAD_BYTES:
            self._offload(batch)
            return
        self._write(self._db, batch)

    def _offload(self, batch: list[tuple[AuditRecord, asyncio.Future[None]]]) -> None:
        """Commit ``batch`` in the log's own thread, so the loop serves other requests.

        A detector history (about 1.3 MB) took milliseconds to write inline: every
        request of the server waited. The requests of ``batch`` still wait for their
        commit (same durability); the batches after it go the same way until the thread
        has caught up, so rows keep their order and one connection is never used by two
        threads at once.
        """
        loop = asyncio.get_running_loop()
        assert self._db is not None  # checked by _flush
        if self._committer is None:
            self._committer = ThreadPoolExecutor(1, thread_name_prefix="mlwarden-audit-state")
        proxies: list[tuple[AuditRecord, Future[None]]] = []
        for rec, fut in batch:
            proxy: Future[None] = Future()  # set from the thread; relayed to the loop
            proxy.add_done_callback(functools.partial(_relay, loop, fut))
            proxies.append((rec, proxy))
        self._behind += 1
        self.offloaded += 1
        done = self._committer.submit(self._write, self._db, proxies)
        done.add_done_callback(lambda _: loop.call_soon_threadsafe(self._caught_up))

    def _caught_up(self) -> None:
        self._behind -= 1

    def close(self) -> None:
        """Commit what is queued and stop the writer thread (or close the connection)."""
        if self.inline:
            if self._committer is not None:
                self._committer.shutdown(wait=True)  # offloaded commits finish first
                self._committer = None
                self._behind = 0
            if self._db is not None:
                if self._pending:
                    self._flush()
                self._db.close()
                self._db = None
            return
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()


class Sampler:
    """Token bucket for audit rows of unauthenticated requests (``rate`` rows/s, ``burst``).

    An unauthenticated flood would otherwise write one row per request. Each admitted
    row carries how many were skipped since the previous one (:meth:`admit` returns it;
    ``None``: skip this row); every request is still counted in ``/metrics``.

    Example::

        sampler = Sampler(rate=1.0, burst=20)
        skipped = sampler.admit()   # 0 for the first 20, then None until a token refills
    """

    def __init__(
        self, rate: float = 1.0, burst: int = 20, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        self._tokens = self.burst
        self._stamp = clock()
        self.skipped = 0

    def admit(self) -> int | None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens < 1.0:
            self.skipped += 1
            return None
        self._tokens -= 1.0
        skipped, self.skipped = self.skipped, 0
        return skipped


def read_state(path: Path) -> dict[tuple[str, str], bytes]:
    """The gateway state stored beside an audit log: (key, kind) -> value."""
    path = Path(path)
    if not path.exists():
        return {}
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        has = db.execute("SELECT name FROM sqlite_master WHERE type='table' AND name='state'")
        if has.fetchone() is None:
            return {}
        return {
            (k, kind): bytes(v) for k, kind, v in db.execute("SELECT key, kind, value FROM state")
        }
    finally:
        db.close()


def write_state(path: Path, states: list[tuple[str, str, bytes]]) -> None:
    """Store state rows outside a request (at shutdown); errors are ignored."""
    if not states:
        return
    try:
        _private(Path(path))  # rotated away while serving: not recreated world-readable
        db = sqlite3.connect(Path(path), isolation_level=None)
    except (sqlite3.Error, OSError):
        return
    try:
        db.execute(_STATE_SCHEMA)
        now = time.time()
        db.executemany(_UPSERT, [(k, kind, v, now) for k, kind, v in states])
    except sqlite3.Error:
        pass
    finally:
        db.close()


def delete_state(path: Path, key: str, kind: str) -> bool:
    """Remove one state row (e.g. a key's block); ``True`` when there was one."""
    db = sqlite3.connect(Path(path), isolation_level=None)
    try:
        db.execute(_STATE_SCHEMA)
        return db.execute("DELETE FROM state WHERE key = ? AND kind = ?", (key, kind)).rowcount > 0
    finally:
        db.close()


def read_records(path: Path) -> list[dict[str, object]]:
    """All rows of an audit log, oldest first (for tests, reports and `audit` checks)."""
    db = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
    try:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM requests ORDER BY id")]
    finally:
        db.close()
