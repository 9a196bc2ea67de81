"""Container formats: zip tricks, limits, npy, safetensors, ONNX, Keras."""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from corpus import _onnx_model, _torch_zip, call2

from mlwarden.supplychain import Limits, scan_bytes, scan_file


def test_storage_members_of_a_checkpoint_are_never_parsed(tmp_path: Path) -> None:
    import torch

    # a tensor whose raw bytes start like a malicious pickle must not be read as one
    evil = call2("os", "system", "id")
    raw = np.frombuffer(evil + b"\x00" * (-len(evil) % 4), dtype=np.uint8).copy()
    path = tmp_path / "t.pt"
    torch.save({"w": torch.from_numpy(raw)}, path)
    assert scan_file(path).verdict.value == "safe"


def test_pickle_member_with_any_name_is_scanned() -> None:
    r = scan_bytes(_torch_zip(call2("os", "system", "id"), pkl_name="payload.dat"))
    assert r.verdict.value == "unsafe"
    assert r.findings[0].member.endswith("payload.dat")


def test_bad_crc_does_not_stop_the_scan() -> None:
    data = bytearray(_torch_zip(call2("os", "system", "id")))
    i = data.find(b"PK\x01\x02")
    data[i + 16 : i + 20] = b"\x00\x00\x00\x00"
    assert scan_bytes(bytes(data)).verdict.value == "unsafe"


def test_missing_central_directory_falls_back_to_local_headers() -> None:
    data = _torch_zip(call2("os", "system", "id"))
    r = scan_bytes(data[: data.find(b"PK\x01\x02")])
    assert r.verdict.value == "unsafe"
    assert any("local headers" in i.message for i in r.findings)


def test_nesting_beyond_the_limit_is_reported() -> None:
    data = call2("os", "system", "id")
    for _ in range(4):
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as z:
            z.writestr("inner.zip", data)
        data = out.getvalue()
    r = scan_bytes(data, limits=Limits(max_depth=2))
    assert any(i.rule == "MLW-SCN-010" for i in r.findings)
    assert r.verdict.value != "safe"


def test_decompression_bomb_member_is_not_expanded() -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("zeros.bin", b"\x00" * (4 << 20))
    r = scan_bytes(out.getvalue(), limits=Limits(ratio_floor=1 << 20, max_ratio=100))
    assert [i.rule for i in r.findings] == ["MLW-SCN-010"]
    assert r.verdict.value == "suspicious"


def test_overlapping_zip_entries_are_reported() -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("a.bin", b"hello world")
    data = bytearray(out.getvalue())
    cd = data.find(b"PK\x01\x02")
    eocd = data.find(b"PK\x05\x06")
    entry = bytes(data[cd:eocd])
    dup = entry.replace(b"a.bin", b"b.bin")
    body = data[:cd] + entry + dup
    tail = bytearray(data[eocd:])
    tail[8:10] = struct.pack("<H", 2)
    tail[10:12] = struct.pack("<H", 2)
    tail[12:16] = struct.pack("<I", len(entry) * 2)
    r = scan_bytes(bytes(body + tail))
    assert any("overlapping" in i.message for i in r.findings)


def test_object_npy_is_scanned_as_pickle(tmp_path: Path) -> None:
    path = tmp_path / "o.npy"
    np.save(path, np.array([{"a": 1}, [2]], dtype=object), allow_pickle=True)
    r = scan_file(path)
    assert r.format == "npy-object"
    assert r.verdict.value == "safe"


def test_truncated_npy_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "t.npy"
    np.save(path, np.arange(1000.0))
    path.write_bytes(path.read_bytes()[:500])
    assert scan_file(path).verdict.value == "error"


def _safetensors(header: dict, data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def test_valid_safetensors_header_passes() -> None:
    h = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "__metadata__": {"k": "v"}}
    assert scan_bytes(_safetensors(h, b"\x00" * 8)).verdict.value == "safe"


@pytest.mark.parametrize(
    "header, data, problem",
    [
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 12]}}, 12, "needs"),
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, 16, "data section"),
        ({"a": {"dtype": "XX", "shape": [2], "data_offsets": [0, 8]}}, 8, "unknown dtype"),
        (
            {
                "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
            },
            12,
            "overlaps",
        ),
        ({"a": {"dtype": "U8", "shape": [2], "data_offsets": [4, 6]}}, 6, "gap"),
        ({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, 4, "invalid shape"),
    ],
)
def test_malformed_safetensors_is_flagged(header: dict, data: int, problem: str) -> None:
    r = scan_bytes(_safetensors(header, b"\x00" * data))
    assert r.verdict.value == "suspicious"
    assert problem in r.findings[0].message


def test_onnx_external_data_inside_the_folder_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(_onnx_model("weights/w.bin"))
    assert scan_file(path).verdict.value == "safe"


def test_onnx_external_data_through_a_symlink_out_of_the_folder_is_unsafe(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "link").symlink_to(tmp_path)
    path = model_dir / "m.onnx"
    path.write_bytes(_onnx_model("link/secret.bin"))
    assert scan_file(path).verdict.value == "unsafe"


def test_keras_h5_without_lambda_is_safe(tmp_path: Path) -> None:
    import h5py

    cfg = {
        "class_name": "Sequential",
        "config": {
            "name": "s",
            "layers": [{"class_name": "Dense", "config": {"name": "d", "units": 3}}],
        },
    }
    path = tmp_path / "m.h5"
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(cfg)
    r = scan_file(path)
    assert (r.format, r.verdict.value) == ("keras-h5", "safe")


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    assert scan_file(path).verdict.value == "error"


def test_unrecognised_binary_is_unknown_never_safe(tmp_path: Path) -> None:
    from mlwarden.supplychain import scan_paths

    path = tmp_path / "blob.bin"
    path.write_bytes(bytes(range(256)) * 4)
    assert scan_file(path).verdict.value == "unknown"
    assert scan_paths([path]).exit_code() == 2
    assert scan_paths([path], allow_unknown=True).exit_code() == 0


def test_text_that_merely_starts_like_protocol0_is_text(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("import torch\nloaded the weights today\n")
    r = scan_file(path)
    assert (r.format, r.verdict.value) == ("text", "safe")


def test_zip64_archives_are_read() -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z, z.open("archive/data.pkl", "w", force_zip64=True) as m:
        m.write(call2("os", "system", "id"))
    r = scan_bytes(out.getvalue())
    assert r.verdict.value == "unsafe"


def test_bytes_before_the_archive_are_tolerated() -> None:
    data = b"#!/bin/sh\nexit 0\n" + _torch_zip(call2("os", "system", "id"))
    r = scan_bytes(data)
    assert r.verdict.value == "unsafe"


def _legacy_tar(storage_records: list[bytes]) -> bytes:
    import pickle
    import tarfile

    members = {
        "sys_info": pickle.dumps({"little_endian": True}, protocol=2),
        "pickle": pickle.dumps({"w": 1}, protocol=2),
        "storages": pickle.dumps(len(storage_records), protocol=2) + b"".join(storage_records),
    }
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _storage(key: str, module: str = "torch", name: str = "FloatStorage") -> bytes:
    from corpus import g, u

    record = b"\x80\x02(" + u(key) + u("cpu") + g(module, name) + b"t."
    return record + struct.pack("<q", 2) + b"\x00" * 8


def test_legacy_tar_storages_are_walked_past_their_raw_data() -> None:
    r = scan_bytes(_legacy_tar([_storage("0"), _storage("1")]))
    assert (r.format, r.verdict.value) == ("pytorch-legacy-tar", "safe")


def test_legacy_tar_payload_after_raw_storage_data_is_found() -> None:
    r = scan_bytes(_legacy_tar([_storage("0"), _storage("1", "os", "system")]))
    assert r.verdict.value == "unsafe"
    assert r.findings[0].member == "storages"


def test_crc_mismatch_on_a_benign_checkpoint_is_noted_not_flagged(tmp_path: Path) -> None:
    import torch

    buf = io.BytesIO()
    torch.save({"w": torch.zeros(3)}, buf)
    data = bytearray(buf.getvalue())
    i = data.find(b"PK\x01\x02")  # the first central entry is data.pkl
    data[i + 16 : i + 20] = b"\x00\x00\x00\x00"
    r = scan_bytes(bytes(data))
    assert r.verdict.value == "safe"
    assert any("CRC-32" in f.message and f.severity.value == "low" for f in r.findings)


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_keras_zip_with_weights_h5_is_safe(tmp_path: Path, compression: int) -> None:
    import h5py

    weights = tmp_path / "w.h5"
    with h5py.File(weights, "w") as f:
        f.create_dataset("layers/dense/vars/0", data=np.ones((3, 2), np.float32))
    cfg = {"module": "keras", "class_name": "Sequential", "config": {"name": "s", "layers": []}}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as z:
        z.writestr("metadata.json", json.dumps({"keras_version": "3.4.1"}))
        z.writestr("config.json", json.dumps(cfg))
        z.write(weights, "model.weights.h5")
    r = scan_bytes(out.getvalue())
    assert (r.format, r.verdict.value) == ("keras", "safe"), r.findings
