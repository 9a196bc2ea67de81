"""Core ML: ``.mlmodel`` files and ``.mlpackage`` folders written by coremltools 9.0
(committed; ``fixtures/coreml/make.py`` rewrites them) are parsed as Core ML, not as
ONNX; custom layers and models (native classes chosen by name) and linked models found
wherever they sit. Variants an attacker would build are spliced byte-exact from the
published protobuf (Model.proto, NeuralNetwork.proto)."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from mlwarden.supplychain import Verdict, scan_bytes, scan_file, scan_paths

FIX = Path(__file__).parent / "fixtures" / "coreml"


def _key(num: int, wt: int) -> bytes:
    return _varint(num << 3 | wt)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _msg(num: int, body: bytes) -> bytes:
    return _key(num, 2) + _varint(len(body)) + body


def _custom_layer(name: str, cls: str, weights: int = 0) -> bytes:
    """A NeuralNetworkLayer whose oneof is CustomLayerParams (field 500), with ``weights``
    bytes of float weights (WeightParams.floatValue, packed) before the class name."""
    params = b""
    if weights:
        params += _msg(20, _msg(1, b"\x00" * weights))
    params += _msg(10, cls.encode())
    return _msg(1, name.encode()) + _msg(2, b"x") + _msg(3, b"y") + _msg(500, params)


def _model(kind_field: int, body: bytes, version: int = 4) -> bytes:
    dense = (FIX / "dense.mlmodel").read_bytes()
    description = dense[2 : 2 + 2 + dense[3]]  # field 2 of the real file, as written
    return _key(1, 0) + _varint(version) + description + _msg(kind_field, body)


@pytest.mark.parametrize(
    "name", ["dense.mlmodel", "program.mlpackage/Data/com.apple.CoreML/model.mlmodel"]
)
def test_coremltools_models_are_core_ml_and_clean(name: str) -> None:
    res = scan_file(FIX / name)
    assert (res.format, res.verdict, res.findings) == ("coreml", Verdict.SAFE, [])


def test_an_mlpackage_folder_scans_clean() -> None:
    res = scan_paths([FIX / "program.mlpackage"])
    assert res.exit_code() == 0
    assert {f.format for f in res.files} == {"coreml", "coreml-weights", "coreml-manifest"}


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("custom_layer.mlmodel", "custom layer 'native' needs the class 'AcmeNativeLayer'"),
        ("loop_custom.mlmodel", "custom layer 'hidden' needs the class 'AcmeNativeLayer'"),
        ("pipeline_custom_model.mlmodel", "custom model (model.pipeline[0].model[1])"),
        ("linked_absolute.mlmodel", "searches '/private/var/tmp', outside the app"),
    ],
)
def test_code_and_outside_models_are_flagged(name: str, words: str) -> None:
    res = scan_file(FIX / name)
    assert res.format == "coreml" and res.verdict is Verdict.SUSPICIOUS
    messages = [i.message for i in res.findings if i.rule == "MLW-SCN-029"]
    assert any(words in m for m in messages), messages


def test_a_linked_model_in_the_bundle_is_noted_not_failed() -> None:
    res = scan_file(FIX / "linked_bundle.mlmodel")
    assert res.verdict is Verdict.SAFE
    assert [i.severity.value for i in res.findings] == ["medium"]


def test_before_this_onnx_called_a_custom_layer_clean() -> None:
    """The parser the file was read with until now accepts it: the differential that
    made this format necessary."""
    onnx = pytest.importorskip("onnx")
    data = (FIX / "custom_layer.mlmodel").read_bytes()
    model = onnx.ModelProto()
    model.ParseFromString(data)  # no error: every Core ML field is unknown to ONNX
    assert len(model.graph.node) == 0


def test_a_custom_layer_behind_megabytes_of_weights_is_found() -> None:
    nn = _msg(1, _custom_layer("big", "Dense", 0)) + _msg(1, _custom_layer("late", "Evil", 3 << 20))
    res = scan_bytes(_model(500, nn), name="m.mlmodel")
    found = [i.global_ for i in res.findings if i.rule == "MLW-SCN-029"]
    assert res.format == "coreml" and found == ["Dense", "Evil"]


def test_custom_layers_nested_in_branches_and_pipelines_are_found() -> None:
    inner_nn = _msg(1, _custom_layer("deep", "DeepNative"))
    branch = _msg(2, inner_nn)  # elseBranch
    layer = _msg(1, b"if") + _msg(605, branch)
    member = _model(500, _msg(1, layer))
    pipeline = _msg(1, member) + _msg(2, b"stage")  # Pipeline.models, Pipeline.names
    res = scan_bytes(_model(200, _msg(1, pipeline)), name="p.mlmodel")  # pipelineClassifier
    assert [i.global_ for i in res.findings] == ["DeepNative"]
    assert res.verdict is Verdict.SUSPICIOUS


def test_inside_archives_too() -> None:
    data = (FIX / "custom_layer.mlmodel").read_bytes()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("Model.mlpackage/Data/com.apple.CoreML/model.mlmodel", data)
    assert scan_bytes(buf.getvalue(), name="m.zip").verdict is Verdict.SUSPICIOUS
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        info = tarfile.TarInfo("model.mlmodel")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    assert scan_bytes(buf.getvalue(), name="m.tgz").verdict is Verdict.SUSPICIOUS


@pytest.mark.parametrize("cut", [5, 30, 60, -3])
def test_a_truncated_model_is_an_error_never_safe(cut: int) -> None:
    data = (FIX / "custom_layer.mlmodel").read_bytes()[:cut]
    res = scan_bytes(data, name="m.mlmodel")
    assert res.verdict is Verdict.ERROR, res.format


def test_nesting_past_the_limit_is_an_error_not_a_crash() -> None:
    body = _model(500, _msg(1, _custom_layer("x", "Leaf")))
    for _ in range(200):
        body = _model(202, _msg(1, body))
    res = scan_bytes(body, name="deep.mlmodel")
    assert res.verdict is Verdict.ERROR and "nested deeper" in (res.error or "")


def test_onnx_and_tensorflow_files_keep_their_formats(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    for producer in ("pytorch", ""):
        model = helper.make_model(graph, producer_name=producer)
        path = tmp_path / "m.onnx"
        onnx.save(model, path)
        assert scan_file(path).format == "onnx"
    tf = Path(__file__).parent / "fixtures" / "tf"
    for pb in tf.rglob("*.pb"):
        assert scan_file(pb).format != "coreml", pb


def test_a_package_item_pointing_outside_the_package_is_flagged(tmp_path: Path) -> None:
    import json
    import shutil

    pkg = Path(shutil.copytree(FIX / "program.mlpackage", tmp_path / "m.mlpackage"))
    manifest = pkg / "Manifest.json"
    assert scan_file(manifest).format == "coreml-manifest"
    doc = json.loads(manifest.read_text())
    first = next(iter(doc["itemInfoEntries"].values()))
    first["path"] = "../../../../home/user/.ssh/id_rsa"
    manifest.write_text(json.dumps(doc))
    res = scan_file(manifest)
    assert res.verdict is Verdict.SUSPICIOUS and "outside the package" in res.findings[0].message
