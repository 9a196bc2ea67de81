"""A detector history (about a megabyte) is committed off the event loop, durably and
in order (issue 19: the state blob used to stall every request while it was written)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from mlwarden.serve.log import AuditLog, AuditLogError, AuditRecord, read_records, read_state


def _rec(i: int, state: list[tuple[str, str, bytes]] | None = None) -> AuditRecord:
    return AuditRecord(
        request_id=f"r{i}", key="k", path="/v1/predict", status=200, decision="allow",
        state=state or [],
    )  # fmt: skip


def test_a_large_state_row_is_committed_off_the_loop_in_order(tmp_path: Path, monkeypatch):
    log = AuditLog(tmp_path / "audit.db")
    assert log.inline
    write = AuditLog._write
    writers: list[str] = []

    def slow_write(self, db, batch):  # a slow disk: 0.3 s a commit
        writers.append(threading.current_thread().name)
        time.sleep(0.3)
        write(self, db, batch)

    monkeypatch.setattr(AuditLog, "_write", slow_write)
    blob = bytes(range(256)) * 4096  # 1 MB

    async def main() -> tuple[int, list[str]]:
        ticks = 0
        done: list[str] = []

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        async def request(rec: AuditRecord) -> None:
            await log.record(rec)
            done.append(rec.request_id)

        tick = asyncio.create_task(ticker())
        big = asyncio.create_task(request(_rec(0, [("k", "detector", blob)])))
        await asyncio.sleep(0)  # the big one's batch is flushed on its own
        await asyncio.sleep(0)
        small = asyncio.create_task(request(_rec(1, [("k", "limits", b"x")])))
        await asyncio.gather(big, small)
        tick.cancel()
        return ticks, done

    ticks, done = asyncio.run(main())
    log.close()
    # the loop kept running while the thread committed: ~60 ticks of 10 ms in 0.6 s
    assert ticks >= 20, ticks
    assert all(w.startswith("mlwarden-audit-state") for w in writers), writers
    assert log.offloaded == 2  # the small one waited its turn behind the big one
    assert done == ["r0", "r1"]
    assert [r["request_id"] for r in read_records(tmp_path / "audit.db")] == ["r0", "r1"]
    state = read_state(tmp_path / "audit.db")
    assert state[("k", "detector")] == blob and state[("k", "limits")] == b"x"


def test_small_rows_stay_inline_and_a_failed_offloaded_commit_fails_its_requests(
    tmp_path: Path, monkeypatch
):
    log = AuditLog(tmp_path / "audit.db")

    async def one(rec: AuditRecord) -> None:
        await log.record(rec)

    asyncio.run(one(_rec(0, [("k", "limits", b"x")])))
    assert log.offloaded == 0

    class _Failing:  # a connection whose disk fails as the thread begins its commit
        in_transaction = False

        def execute(self, sql: str, *args: object) -> None:
            raise sqlite3.OperationalError("disk I/O error")

    write = AuditLog._write
    monkeypatch.setattr(AuditLog, "_write", lambda self, db, batch: write(self, _Failing(), batch))
    with pytest.raises(AuditLogError, match="audit log write failed"):
        asyncio.run(one(_rec(1, [("k", "detector", b"\0" * (1 << 17))])))
    assert log.offloaded == 1
    log.close()
    assert [r["request_id"] for r in read_records(tmp_path / "audit.db")] == ["r0"]
