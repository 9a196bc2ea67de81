"""Short text files and HDF5 files behind a user block."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from mlwarden.supplychain import scan_bytes, scan_file


@pytest.mark.parametrize("text", [b"torch\n", b"MIT\n", b"numpy>=1\n", b"hi", b"lorem\n"])
def test_short_text_that_no_unpickler_accepts_is_text(text: bytes) -> None:
    result = scan_bytes(text)
    assert (result.verdict.value, result.format) == ("safe", "text"), result.findings


@pytest.mark.parametrize("data", [b"NN", b"(", b"(S'x'\n", b"cos\nsystem\n"])
def test_short_cut_off_pickles_stay_errors_or_worse(data: bytes) -> None:
    result = scan_bytes(data)
    assert result.verdict.value in ("error", "unsafe"), result.findings
    if b"system" in data:
        assert any(i.global_ == "os.system" for i in result.findings)


LAMBDA_CONFIG = {
    "class_name": "Sequential",
    "config": {
        "name": "s",
        "layers": [
            {
                "class_name": "Lambda",
                "config": {
                    "name": "lam",
                    "function": ["4wEAAAAA", None, None],
                    "function_type": "lambda",
                },
            }
        ],
    },
}


def _h5_with_userblock(path: Path, lead: bytes, config: dict | None, size: int = 512) -> Path:
    with h5py.File(path, "w", userblock_size=size) as f:
        if config is not None:
            f.attrs["model_config"] = json.dumps(config)
        f.create_dataset("w", data=np.ones(3))
    data = bytearray(path.read_bytes())
    data[: len(lead)] = lead
    path.write_bytes(bytes(data))
    return path


def test_keras_h5_behind_a_text_user_block_is_found(tmp_path: Path) -> None:
    lead = (b"# model card\n" * 100)[:1024]
    result = scan_file(_h5_with_userblock(tmp_path / "m.h5", lead, LAMBDA_CONFIG, 1024))
    assert result.verdict.value == "unsafe"
    assert {i.rule for i in result.findings} >= {"MLW-SCN-005", "MLW-SCN-011"}


def test_benign_h5_behind_a_user_block_is_safe(tmp_path: Path) -> None:
    result = scan_file(_h5_with_userblock(tmp_path / "w.h5", b"\0" * 512, None))
    assert result.verdict.value == "safe"
    assert result.format == "hdf5"


def test_pickle_in_front_of_hdf5_is_a_polyglot(tmp_path: Path) -> None:
    payload = b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00true\x85R."
    result = scan_file(_h5_with_userblock(tmp_path / "p.h5", payload, LAMBDA_CONFIG))
    rules = {i.rule for i in result.findings}
    assert {"MLW-SCN-001", "MLW-SCN-005", "MLW-SCN-011"} <= rules
    assert any(i.rule == "MLW-SCN-011" and i.severity.value == "high" for i in result.findings)


def test_keras_config_nested_too_deeply_is_reported_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "deep.h5"
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = "[" * 100_000 + "]" * 100_000
    result = scan_file(path)
    assert result.verdict.value == "suspicious"
    assert "nested too deeply" in result.findings[0].message


def test_hdf5_member_of_a_zip_on_a_probe_offset_is_not_a_false_alarm(tmp_path: Path) -> None:
    import zipfile

    weights = tmp_path / "w.h5"
    with h5py.File(weights, "w") as f:
        f.create_dataset("kernel", data=np.ones((4, 4)))
    path = tmp_path / "model.keras"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.write(weights, "m" * (1024 - 30))  # member data starts at byte 1024
    assert path.read_bytes()[1024:1032] == b"\x89HDF\r\n\x1a\n"
    result = scan_file(path)
    assert result.verdict.value == "safe", [i.message for i in result.findings]
