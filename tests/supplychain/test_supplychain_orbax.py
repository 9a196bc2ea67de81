"""Orbax / JAX checkpoints written by orbax-checkpoint 0.12.8 (committed;
``fixtures/orbax/make.py`` rewrites them): OCDBT manifests and nodes recognised by
content, verbatim chunks in ``d/`` and zarr chunk files credited by place only when
nothing in them parsed as anything else; a pickle planted among them stays unsafe, and
a zarr array decoded with the pickle codec is reported. The canary is never run."""

from __future__ import annotations

import os
import pickle
import shutil
import zlib
from pathlib import Path
from typing import Any

import pytest

from mlwarden.supplychain import Verdict, scan_bytes, scan_paths

FIX = Path(__file__).parent / "fixtures" / "orbax"
CANARY = "echo CANARY"


class _Evil:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (CANARY,))


EVIL = pickle.dumps(_Evil())


def _copy(tmp_path: Path, name: str) -> Path:
    return Path(shutil.copytree(FIX / name, tmp_path / name))


def _by_name(res: Any) -> dict[str, Any]:
    return {Path(f.path).relative_to(FIX).as_posix(): f for f in res.files}


def test_orbax_checkpoints_scan_clean() -> None:
    res = scan_paths([FIX / "ocdbt", FIX / "chunked", FIX / "zarr"])
    assert res.exit_code() == 0, [(f.path, f.verdict, f.error) for f in res.files]
    formats = {f.format for f in res.files}
    assert {"orbax-ocdbt-manifest", "orbax-ocdbt-node", "orbax-ocdbt-data"} <= formats
    assert "zarr-metadata" in formats
    chunked = [f for f in res.files if f.format == "orbax-ocdbt-data"]
    assert chunked and all(os.path.getsize(f.path) > 1000 for f in chunked)


def test_the_same_chunk_outside_a_checkpoint_is_not_credited(tmp_path: Path) -> None:
    ckpt = _copy(tmp_path, "chunked")
    data = max(ckpt.rglob("d/*"), key=lambda p: p.stat().st_size)
    loose = tmp_path / "weights.bin"
    shutil.copy(data, loose)
    assert scan_paths([loose]).files[0].verdict is not Verdict.SAFE


@pytest.mark.parametrize("payload", ["pickle", "zstd-pickle", "zlib-pickle"])
def test_a_pickle_planted_in_a_data_folder_stays_unsafe(tmp_path: Path, payload: str) -> None:
    zstandard = pytest.importorskip("zstandard")
    ckpt = _copy(tmp_path, "ocdbt")
    data = {
        "pickle": EVIL,
        "zstd-pickle": zstandard.ZstdCompressor().compress(EVIL),
        "zlib-pickle": zlib.compress(EVIL),
    }[payload]
    (ckpt / "d" / "0123456789abcdef0123456789abcdef").write_bytes(data)
    res = scan_paths([ckpt])
    bad = [f for f in res.files if f.verdict is Verdict.UNSAFE]
    assert [Path(f.path).name for f in bad] == ["0123456789abcdef0123456789abcdef"]
    assert res.exit_code() == 1


def test_raw_zarr_chunks_are_credited_only_inside_an_array(tmp_path: Path) -> None:
    ckpt = _copy(tmp_path, "zarr")
    # an uncompressed float chunk whose first byte is a pickle opcode (']', EMPTY_LIST)
    raw = bytes([0x5D]) + bytes(range(1, 64))
    (ckpt / "params.dense.kernel" / "0.1").write_bytes(raw)
    res = scan_paths([ckpt])
    assert res.exit_code() == 0
    assert {Path(f.path).name: f.format for f in res.files}["0.1"] == "zarr-chunk"
    assert scan_bytes(raw, name="0.1").verdict is not Verdict.SAFE


def test_a_zarr_array_decoded_with_pickle_is_reported(tmp_path: Path) -> None:
    ckpt = _copy(tmp_path, "zarr")
    meta = ckpt / "step" / ".zarray"
    doc = meta.read_text().replace('"filters":null', '"filters":[{"id":"pickle","protocol":5}]')
    doc = doc.replace('"dtype":"<i8"', '"dtype":"|O"')
    meta.write_text(doc)
    (ckpt / "step" / "0").write_bytes(EVIL)
    res = scan_paths([ckpt])
    verdicts = {Path(f.path).relative_to(ckpt).as_posix(): f for f in res.files}
    assert verdicts["step/.zarray"].verdict is Verdict.SUSPICIOUS
    assert "unpickles every chunk" in verdicts["step/.zarray"].findings[0].message
    assert verdicts["step/0"].verdict is Verdict.UNSAFE


@pytest.mark.parametrize("cut", [20, 60, -1])
def test_a_cut_ocdbt_file_is_never_safe(cut: int) -> None:
    data = (FIX / "ocdbt" / "manifest.ocdbt").read_bytes()[:cut]
    res = scan_bytes(data, name="manifest.ocdbt")
    assert res.verdict is not Verdict.SAFE, res.format


def test_an_ocdbt_header_does_not_whitewash_a_pickle_behind_it() -> None:
    data = (FIX / "ocdbt" / "manifest.ocdbt").read_bytes()
    res = scan_bytes(data + EVIL, name="manifest.ocdbt")
    # the declared length ends before the pickle: the bytes after it are not OCDBT's
    assert res.verdict is Verdict.ERROR and "follow the OCDBT record" in (res.error or "")
    # two whole records back to back are fine
    assert scan_bytes(data + data, name="manifest.ocdbt").verdict is Verdict.SAFE
