"""ONNX models with external data: the weight files they name are their data."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from mlwarden.supplychain import scan_paths

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _model(folder: Path, location: str = "model.onnx.data") -> Path:
    w = numpy_helper.from_array(np.random.rand(64, 64).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
        [w],
    )
    model = helper.make_model(graph)
    path = folder / "model.onnx"
    onnx.save_model(
        model, str(path), save_as_external_data=True, location=location, size_threshold=0
    )
    return path


def test_folder_with_external_data_scans_safe(tmp_path: Path) -> None:
    _model(tmp_path)
    out = scan_paths([tmp_path])
    assert {f.format: f.verdict.value for f in out.files} == {
        "onnx": "safe",
        "onnx-external-data": "safe",
    }
    assert out.exit_code() == 0


def test_external_data_alone_is_still_an_error(tmp_path: Path) -> None:
    _model(tmp_path)
    out = scan_paths([tmp_path / "model.onnx.data"])
    assert out.files[0].verdict.value == "error"


def test_a_pickle_named_as_external_data_is_still_reported(tmp_path: Path) -> None:
    _model(tmp_path)
    (tmp_path / "model.onnx.data").write_bytes(b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00true\x85R.")
    out = scan_paths([tmp_path])
    verdicts = {Path(f.path).name: f.verdict.value for f in out.files}
    assert verdicts["model.onnx.data"] == "unsafe"


def test_unnamed_unknown_files_stay_errors(tmp_path: Path) -> None:
    _model(tmp_path)
    (tmp_path / "other.bin").write_bytes(b"\x00\x01\x02" * 100)
    out = scan_paths([tmp_path])
    assert {Path(f.path).name: f.verdict.value for f in out.files}["other.bin"] == "error"
    assert out.exit_code() == 2


def test_pickle_is_not_affected(tmp_path: Path) -> None:
    (tmp_path / "a.pkl").write_bytes(pickle.dumps({"a": 1}))
    assert scan_paths([tmp_path]).files[0].verdict.value == "safe"
