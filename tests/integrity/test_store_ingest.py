"""One-read ingest: the bytes hashed are the bytes staged, also when writing overlaps hashing."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
from pathlib import Path

import pytest

from mlwarden.core.errors import InputFileError
from mlwarden.integrity import store_ingest
from mlwarden.integrity.hashing import CHUNK
from mlwarden.integrity.store import ObjectStore
from mlwarden.integrity.store_ingest import (
    DIRECT_ALIGN,
    PIPELINE_MIN,
    copy_hashing,
    install_staged,
    stage_files,
)


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, 2 * CHUNK + 12345])
@pytest.mark.parametrize("pipelined", [False, True])
def test_copy_hashing_copies_and_hashes_exactly(tmp_path: Path, size: int, pipelined: bool) -> None:
    data = os.urandom(size)
    (tmp_path / "src").write_bytes(data)
    src = os.open(tmp_path / "src", os.O_RDONLY)
    out = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        digest, n = copy_hashing(src, out, PIPELINE_MIN if pipelined else 0)
    finally:
        os.close(src)
        os.close(out)
    assert (digest, n) == (hashlib.sha256(data).hexdigest(), size)
    assert (tmp_path / "out").read_bytes() == data


def test_stage_then_install_stores_each_content_once(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "reg")
    files = []
    for i, data in enumerate([b"a" * 10, b"b" * 20, b"a" * 10]):  # a duplicate content
        files.append(tmp_path / f"f{i}")
        files[-1].write_bytes(data)
    staged = stage_files(store, files)
    assert [d for _, d, _ in staged] == [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    install_staged(store, staged)
    assert all(store.check(d) == "ok" for _, d, _ in staged)
    assert list((tmp_path / "reg" / "tmp").iterdir()) == []


def test_a_link_is_never_followed_and_nothing_stays_staged(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "reg")
    (tmp_path / "ok").write_bytes(b"ok")
    (tmp_path / "secret").write_bytes(b"host file")
    (tmp_path / "link").symlink_to(tmp_path / "secret")
    with pytest.raises(InputFileError, match="link"):
        stage_files(store, [tmp_path / "ok", tmp_path / "link"])
    assert list((tmp_path / "reg" / "tmp").iterdir()) == []


@pytest.mark.parametrize("size", [0, 1, 3 * CHUNK + 7])
def test_kernel_copy_hashes_the_staged_bytes_block_by_block(
    tmp_path: Path, size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_ingest, "KERNEL_STEP", CHUNK)  # several copy/hash rounds
    data = os.urandom(size)
    (tmp_path / "src").write_bytes(data)
    src = os.open(tmp_path / "src", os.O_RDONLY)
    out = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT, 0o600)
    reader = os.open(tmp_path / "out", os.O_RDONLY)
    try:
        digest, n = store_ingest.kernel_copy_hashing(src, out, reader)
    finally:
        for fd in (src, out, reader):
            os.close(fd)
    assert (digest, n) == (hashlib.sha256(data).hexdigest(), size)
    assert (tmp_path / "out").read_bytes() == data


def _no_direct_io(fd: int, on: bool) -> None:
    raise OSError(errno.EINVAL, "no O_DIRECT here (as on tmpfs)")


def test_without_direct_io_a_large_file_takes_the_kernel_path_and_stores_exact_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_ingest, "PIPELINE_MIN", 1024)
    monkeypatch.setattr(store_ingest, "KERNEL_STEP", CHUNK)
    monkeypatch.setattr(store_ingest, "_set_direct", _no_direct_io)
    kernel = _spy(monkeypatch, "kernel_copy_hashing")
    data = os.urandom(2 * CHUNK + 99)
    (tmp_path / "big").write_bytes(data)
    store = ObjectStore(tmp_path / "reg")
    staged = stage_files(store, [tmp_path / "big"])
    install_staged(store, staged)
    digest = hashlib.sha256(data).hexdigest()
    assert kernel == [1]
    assert staged[0][1:] == (digest, len(data))
    assert store.check(digest) == "ok"


def _spy(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    calls: list[int] = []
    real = getattr(store_ingest, name)

    def counted(*args: object) -> object:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(store_ingest, name, counted)
    return calls


def _direct_io_here(folder: Path) -> bool:
    fd = os.open(folder / ".probe", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        store_ingest._set_direct(fd, True)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


@pytest.mark.parametrize(
    "size", [0, 1, DIRECT_ALIGN, CHUNK - 1, CHUNK, 2 * CHUNK + DIRECT_ALIGN, 4 * CHUNK + 7]
)
def test_direct_copy_writes_exactly_the_bytes_it_hashes(tmp_path: Path, size: int) -> None:
    if not _direct_io_here(tmp_path):
        pytest.skip(f"the file system of {tmp_path} has no O_DIRECT")
    data = os.urandom(size)
    (tmp_path / "src").write_bytes(data)
    src = os.open(tmp_path / "src", os.O_RDONLY)
    out = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        digest, n = store_ingest.direct_copy_hashing(src, out)
        flags = fcntl.fcntl(out, fcntl.F_GETFL)
    finally:
        os.close(src)
        os.close(out)
    assert (digest, n) == (hashlib.sha256(data).hexdigest(), size)
    assert (tmp_path / "out").read_bytes() == data
    assert not flags & os.O_DIRECT  # left as it was found


def test_a_large_file_is_staged_with_direct_io(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not _direct_io_here(tmp_path):
        pytest.skip(f"the file system of {tmp_path} has no O_DIRECT")
    monkeypatch.setattr(store_ingest, "PIPELINE_MIN", 1024)
    direct, kernel = (
        _spy(monkeypatch, "direct_copy_hashing"),
        _spy(monkeypatch, "kernel_copy_hashing"),
    )
    data = os.urandom(3 * CHUNK + 5)
    (tmp_path / "big").write_bytes(data)
    store = ObjectStore(tmp_path / "reg")
    staged = stage_files(store, [tmp_path / "big"])
    install_staged(store, staged)
    assert (direct, kernel) == ([1], [])
    assert store.path(hashlib.sha256(data).hexdigest()).read_bytes() == data


def test_a_direct_write_refused_midway_starts_over_and_stores_exact_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A device whose block is larger than 4 KiB refuses the second write: nothing is half-kept."""
    monkeypatch.setattr(store_ingest, "PIPELINE_MIN", 1024)
    monkeypatch.setattr(store_ingest, "_set_direct", lambda fd, on: None)
    writes: list[int] = []
    real = store_ingest._pwrite_all

    def refuse_second(fd: int, view: memoryview, offset: int) -> None:
        writes.append(offset)
        if len(writes) == 2:
            raise OSError(errno.EINVAL, "Invalid argument")
        real(fd, view, offset)

    monkeypatch.setattr(store_ingest, "_pwrite_all", refuse_second)
    data = os.urandom(3 * CHUNK + 5)
    (tmp_path / "big").write_bytes(data)
    store = ObjectStore(tmp_path / "reg")
    staged = stage_files(store, [tmp_path / "big"])
    assert len(list((tmp_path / "reg" / "tmp").iterdir())) == 1
    install_staged(store, staged)
    assert store.path(hashlib.sha256(data).hexdigest()).read_bytes() == data
    assert list((tmp_path / "reg" / "tmp").iterdir()) == []


def test_a_disk_error_during_a_direct_write_removes_the_staged_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_ingest, "PIPELINE_MIN", 1024)
    monkeypatch.setattr(store_ingest, "_set_direct", lambda fd, on: None)

    def disk_full(fd: int, view: memoryview, offset: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_ingest, "_pwrite_all", disk_full)
    (tmp_path / "big").write_bytes(os.urandom(2 * CHUNK))
    store = ObjectStore(tmp_path / "reg")
    with pytest.raises(OSError, match="No space"):
        stage_files(store, [tmp_path / "big"])
    assert list((tmp_path / "reg" / "tmp").iterdir()) == []


@pytest.mark.parametrize("each", [True, False])
def test_install_makes_data_durable_before_the_rename_and_the_rename_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, each: bool
) -> None:
    """fsync per file (few objects) or syncfs (many): either way data, rename, folder."""
    if not each:
        monkeypatch.setattr(store_ingest, "FSYNC_EACH_MAX", 0)
    events: list[str] = []
    real_fsync, real_replace, real_syncfs = os.fsync, os.replace, store_ingest.sync_filesystem

    def fsync(fd: int) -> None:
        events.append("fsync " + os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def replace(src: str, dst: str, **kw: int) -> None:
        events.append("rename " + src)
        real_replace(src, dst, **kw)

    def syncfs(path: Path) -> None:
        events.append("syncfs")
        real_syncfs(path)

    files = []
    for i in range(3):
        files.append(tmp_path / f"f{i}")
        files[-1].write_bytes(os.urandom(100 + i))
    store = ObjectStore(tmp_path / "reg")
    staged = stage_files(store, files)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(store_ingest, "sync_filesystem", syncfs)
    install_staged(store, staged)
    renames = [i for i, e in enumerate(events) if e.startswith("rename")]
    assert len(renames) == 3
    before, after = events[: renames[0]], events[renames[-1] + 1 :]
    if each:
        for name, _, _ in staged:
            assert any(e.endswith("/tmp/" + name) for e in before)
        objects = str(tmp_path / "reg" / "objects")
        assert {f"fsync {objects}/{d[:2]}" for _, d, _ in staged} <= set(after)
        assert f"fsync {objects}" in after
    else:
        assert before == ["syncfs"] and after == ["syncfs"]
    assert all(store.check(d) == "ok" for _, d, _ in staged)
