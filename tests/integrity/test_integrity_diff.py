"""Tensor-level diffs: our safetensors parser, npz, and version diffs."""

from __future__ import annotations

import contextlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file

from mlwarden.core.errors import InputFileError
from mlwarden.integrity.compare import diff_versions
from mlwarden.integrity.tensordiff import diff_tensors, read_safetensors, read_tensors, sniff


def test_safetensors_parser_matches_the_library(tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    tensors = {
        "w": np.arange(12, dtype=np.float32).reshape(3, 4),
        "b": np.array([1, 2, 3], dtype=np.int64),
        "h": np.ones((2, 2), dtype=np.float16),
        "empty": np.zeros((0, 3), dtype=np.float32),
    }
    save_file(tensors, str(tmp_path / "t.safetensors"))
    ours = read_safetensors(tmp_path / "t.safetensors")
    theirs = load_file(str(tmp_path / "t.safetensors"))
    assert set(ours) == set(theirs)
    for k in theirs:
        assert ours[k].dtype == theirs[k].dtype and np.array_equal(ours[k], theirs[k])


def _raw_safetensors(path: Path, header: dict, data: bytes) -> Path:
    h = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + data)
    return path


@pytest.mark.parametrize(
    "header",
    [
        {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 64]}},  # past the end
        {"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}},  # size mismatch
        {"w": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}},
        {"w": {"dtype": "XX", "shape": [4], "data_offsets": [0, 16]}},
        {"w": {"dtype": "F32", "shape": [4]}},
    ],
)
def test_malformed_safetensors_headers_are_errors(tmp_path: Path, header: dict) -> None:
    path = _raw_safetensors(tmp_path / "bad.safetensors", header, b"\0" * 16)
    with pytest.raises(InputFileError):
        read_safetensors(path)


def test_header_length_beyond_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", 10**9) + b"{}")
    with pytest.raises(InputFileError):
        read_safetensors(path)


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash_the_reader(data: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "f"
        path.write_bytes(data)
        with contextlib.suppress(InputFileError):
            read_tensors(path)


def test_diff_reports_changed_tensor_and_magnitude() -> None:
    old = {"w": np.zeros((10,), np.float32), "b": np.ones(3, np.float32)}
    new = {"w": np.zeros((10,), np.float32), "b": np.ones(3, np.float32), "extra": np.ones(1)}
    new["w"][[2, 5]] = [0.5, -2.0]
    rows = {r["tensor"]: r for r in diff_tensors(old, new)}
    assert rows["b"]["status"] == "unchanged"
    assert rows["extra"]["status"] == "added"
    w = rows["w"]
    assert w["status"] == "changed" and w["changed_fraction"] == pytest.approx(0.2)
    assert w["max_abs_diff"] == pytest.approx(2.0)
    assert w["l2_diff"] == pytest.approx(np.sqrt(4.25))


def test_npz_with_object_array_is_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "o.npz", a=np.array([{"x": 1}], dtype=object))
    with pytest.raises(InputFileError, match="object"):
        read_tensors(tmp_path / "o.npz")


def test_version_diff_names_tensors_in_npz_and_safetensors(reg, tmp_path, scanner):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(8, 8)).astype(np.float32)
    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    v1.mkdir()
    v2.mkdir()
    np.savez(v1 / "data.npz", x=w, y=np.arange(8))
    save_file({"fc.weight": w, "fc.bias": np.zeros(8, np.float32)}, str(v1 / "m.safetensors"))
    w2 = w.copy()
    w2[0, 0] += 1.0
    np.savez(v2 / "data.npz", x=w, y=np.arange(8) % 3)
    save_file({"fc.weight": w2, "fc.bias": np.zeros(8, np.float32)}, str(v2 / "m.safetensors"))
    (v2 / "new.txt").write_bytes(b"hello")
    reg.add(v1, name="m", scanner=scanner)
    reg.add(v2, name="m", scanner=scanner)
    result = diff_versions(reg, reg.resolve("m@1"), reg.resolve("m@2"))
    assert result["added"] == [{"file": "new.txt", "size": 5}]
    changed = {c["file"]: c for c in result["changed"]}
    assert sniff(reg.store.path(changed["m.safetensors"]["new_sha256"])) == "safetensors"
    st_rows = changed["m.safetensors"]["tensors"]
    assert [r["tensor"] for r in st_rows] == ["fc.weight"]
    assert st_rows[0]["max_abs_diff"] == pytest.approx(1.0)
    assert st_rows[0]["changed_fraction"] == pytest.approx(1 / 64)
    assert [r["tensor"] for r in changed["data.npz"]["tensors"]] == ["y"]
