"""ONNX models with external data: the weight files they name are their data."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from mlwarden.supplychain import scan_paths

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _matmul(weights: np.ndarray) -> onnx.ModelProto:
    """y = x @ w, with ``weights`` as the initializer ``w``."""
    w = numpy_helper.from_array(weights.astype(np.float32), "w")
    rows, cols = weights.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, rows])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cols])],
        [w],
    )
    return helper.make_model(graph)


def _model(folder: Path, location: str = "model.onnx.data") -> Path:
    model = _matmul(np.random.default_rng(0).random((64, 64)))
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


def test_external_data_alone_is_still_unknown(tmp_path: Path) -> None:
    _model(tmp_path)
    out = scan_paths([tmp_path / "model.onnx.data"])
    assert out.files[0].verdict.value == "unknown"


def test_a_pickle_named_as_external_data_is_still_reported(tmp_path: Path) -> None:
    _model(tmp_path)
    (tmp_path / "model.onnx.data").write_bytes(b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00true\x85R.")
    out = scan_paths([tmp_path])
    verdicts = {Path(f.path).name: f.verdict.value for f in out.files}
    assert verdicts["model.onnx.data"] == "unsafe"


def test_unnamed_unknown_files_stay_unknown(tmp_path: Path) -> None:
    _model(tmp_path)
    (tmp_path / "other.bin").write_bytes(b"\x00\x01\x02" * 100)
    out = scan_paths([tmp_path])
    assert {Path(f.path).name: f.verdict.value for f in out.files}["other.bin"] == "unknown"
    assert out.exit_code() == 2


def test_pickle_is_not_affected(tmp_path: Path) -> None:
    (tmp_path / "a.pkl").write_bytes(pickle.dumps({"a": 1}))
    assert scan_paths([tmp_path]).files[0].verdict.value == "safe"


# --- models over the in-memory limit: the protobuf is walked in a memory map ----------------


def _custom_and_traversal(folder: Path) -> Path:
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    w.data_location = TensorProto.EXTERNAL
    del w.external_data[:]
    entry = w.external_data.add()
    entry.key, entry.value = "location", "../../etc/passwd"
    w.ClearField("raw_data")
    body = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "body",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
    )
    graph = helper.make_graph(
        [
            helper.make_node("Backdoor", ["x", "w"], ["z"], domain="com.evil", name="bd"),
            helper.make_node("If", ["c"], ["y"], then_branch=body, else_branch=body),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        [w],
    )
    path = folder / "evil.onnx"
    path.write_bytes(helper.make_model(graph).SerializeToString())
    return path


def _same(path: Path) -> None:
    from mlwarden.supplychain import scan_file
    from mlwarden.supplychain.scanner import Limits

    whole = scan_file(path)
    walked = scan_file(path, limits=Limits(max_json=64))  # forces the memory-mapped walk
    strip = [(i.rule, i.severity, i.message, i.global_) for i in whole.findings]
    assert strip == [(i.rule, i.severity, i.message, i.global_) for i in walked.findings]
    assert (whole.verdict, whole.format) == (walked.verdict, walked.format)
    assert whole.external_data == walked.external_data


def test_walked_and_parsed_models_agree(tmp_path: Path) -> None:
    _same(_custom_and_traversal(tmp_path))
    ext = tmp_path / "ext"
    ext.mkdir()
    _same(_model(ext))
    plain = tmp_path / "plain.onnx"
    plain.write_bytes(_matmul(np.random.default_rng(0).random((32, 32))).SerializeToString())
    _same(plain)


def test_a_model_over_64_mib_is_scanned_not_refused(tmp_path: Path) -> None:
    from mlwarden.supplychain import scan_file

    path = tmp_path / "big.onnx"
    path.write_bytes(_matmul(np.zeros((5000, 3500))).SerializeToString())  # 70 MB inline
    assert path.stat().st_size > 64 << 20
    result = scan_file(path)
    assert (result.format, result.verdict.value) == ("onnx", "safe")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])  # cut inside the weights
    assert scan_file(path).verdict.value == "error"


def test_weights_that_start_like_a_pickle_are_still_credited(tmp_path: Path) -> None:
    # raw float bytes whose first byte is MARK and which then hit an unknown opcode: parsed
    # as a pickle they fail with an anomaly, never an import
    _model(tmp_path)
    data = tmp_path / "model.onnx.data"
    raw = bytearray(data.read_bytes())
    raw[:4] = b"(\xff\x00\x00"
    data.write_bytes(bytes(raw))
    out = scan_paths([tmp_path])
    assert {Path(f.path).name: f.verdict.value for f in out.files}["model.onnx.data"] == "safe"
