"""One-read ingest: the bytes hashed are the bytes staged, also when writing overlaps hashing."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from mlwarden.core.errors import InputFileError
from mlwarden.integrity.hashing import CHUNK
from mlwarden.integrity.store import ObjectStore
from mlwarden.integrity.store_ingest import PIPELINE_MIN, copy_hashing, install_staged, stage_files


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
    from mlwarden.integrity import store_ingest

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


def test_large_file_takes_the_kernel_path_and_stores_exact_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlwarden.integrity import store_ingest

    monkeypatch.setattr(store_ingest, "PIPELINE_MIN", 1024)
    monkeypatch.setattr(store_ingest, "KERNEL_STEP", CHUNK)
    data = os.urandom(2 * CHUNK + 99)
    (tmp_path / "big").write_bytes(data)
    store = ObjectStore(tmp_path / "reg")
    staged = stage_files(store, [tmp_path / "big"])
    install_staged(store, staged)
    digest = hashlib.sha256(data).hexdigest()
    assert staged[0][1:] == (digest, len(data))
    assert store.check(digest) == "ok"
