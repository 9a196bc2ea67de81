"""Manifests: safe relative paths only, and folder comparison naming every difference."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlwarden.integrity.hashing import hash_file, hash_files
from mlwarden.integrity.manifest import (
    FileEntry,
    Manifest,
    UnsafeManifestError,
    build_manifest,
    check_relpath,
    compare_folder,
    list_files,
)

DIGEST = "0" * 64


@pytest.mark.parametrize(
    "name",
    [
        "../etc/passwd",
        "a/../../b",
        "/etc/passwd",
        "C:/Windows/x",
        "a\\..\\b",
        "a//b",
        "./a",
        "a/.",
        "",
        "a\x00b",
        "..",
    ],
)
def test_unsafe_manifest_paths_are_rejected(name: str) -> None:
    with pytest.raises(UnsafeManifestError):
        Manifest.from_json({name: {"sha256": DIGEST, "size": 1}})


@given(st.text(alphabet=st.sampled_from("ab./\\:\x00C"), max_size=12))
def test_accepted_paths_stay_inside_the_root(name: str) -> None:
    try:
        check_relpath(name)
    except UnsafeManifestError:
        return
    root = PurePosixPath("/root/x")
    joined = PurePosixPath(os.path.normpath(root / name))
    assert joined.is_relative_to(root) and joined != root
    assert ".." not in PurePosixPath(name).parts


def test_non_hex_digest_and_bool_size_are_rejected() -> None:
    with pytest.raises(UnsafeManifestError):
        Manifest.from_json({"a": {"sha256": "xyz", "size": 1}})
    with pytest.raises(UnsafeManifestError):
        Manifest.from_json({"a": {"sha256": DIGEST, "size": True}})


def test_file_and_folder_with_the_same_name_is_rejected() -> None:
    with pytest.raises(UnsafeManifestError):
        Manifest({"a": FileEntry(DIGEST, 1), "a/b": FileEntry(DIGEST, 1)})


def test_hash_matches_hashlib_for_multi_chunk_file(tmp_path: Path) -> None:
    import hashlib

    data = os.urandom(3 * 1024 * 1024 + 17)
    (tmp_path / "f").write_bytes(data)
    assert hash_file(tmp_path / "f", chunk=1024 * 1024) == (
        hashlib.sha256(data).hexdigest(),
        len(data),
    )


def test_parallel_hashing_keeps_order(tmp_path: Path) -> None:
    paths = []
    for i in range(20):
        p = tmp_path / f"f{i}"
        p.write_bytes(bytes([i]) * (i * 1000))
        paths.append(p)
    assert hash_files(paths, workers=4) == [hash_file(p) for p in paths]


def test_compare_folder_names_modified_missing_and_extra(make_folder) -> None:
    root = make_folder({"a.bin": b"aaa", "sub/b.bin": b"bbb", "c.bin": b"ccc"})
    manifest = build_manifest(root)
    (root / "a.bin").write_bytes(b"AAA")
    (root / "sub" / "b.bin").unlink()
    (root / "sub" / "planted.py").write_bytes(b"print(1)")
    diff = compare_folder(manifest, root)
    assert diff.modified == ["a.bin"]
    assert diff.missing == ["sub/b.bin"]
    assert diff.extra == ["sub/planted.py"]
    assert not diff.clean


def test_symlinked_folder_is_reported_not_followed(make_folder, tmp_path: Path) -> None:
    root = make_folder({"sub/w.bin": b"weights"})
    manifest = build_manifest(root)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "w.bin").write_bytes(b"weights")  # identical bytes, reached through a link
    (root / "sub" / "w.bin").unlink()
    (root / "sub").rmdir()
    (root / "sub").symlink_to(outside)
    diff = compare_folder(manifest, root)
    assert diff.symlinks == ["sub"]
    assert not diff.clean


def test_adding_a_folder_with_a_symlink_is_refused(make_folder, tmp_path: Path) -> None:
    from mlwarden.core.errors import InputFileError

    root = make_folder({"a.bin": b"a"})
    (root / "link").symlink_to(tmp_path)
    with pytest.raises(InputFileError, match="symbolic link"):
        list_files(root)


def test_fifo_in_deployed_folder_is_never_read(make_folder) -> None:
    root = make_folder({"w.bin": b"w"})
    manifest = build_manifest(root)
    (root / "w.bin").unlink()
    os.mkfifo(root / "w.bin")  # reading it would block forever
    diff = compare_folder(manifest, root)
    assert diff.modified == ["w.bin"] and not diff.missing and not diff.extra
