"""TensorFlow files: SavedModel, Keras 2 SavedModel metadata, frozen GraphDef, TFLite.

The fixtures under ``fixtures/tf`` were written by TensorFlow 2.21 (and tf-keras 2.21)
with ``fixtures/tf/make_tf_fixtures.py``; TensorFlow is not a dependency, so they are
committed. The malicious shapes would read or write ``/tmp/mlwarden_tf_canary``; they are
only scanned, never loaded.
"""

from __future__ import annotations

import random
import shutil
import struct
from pathlib import Path

import pytest

from mlwarden.supplychain.results import FileResult
from mlwarden.supplychain.scanner import scan_bytes, scan_file, scan_paths, sniff
from mlwarden.supplychain.tf_scan import DANGEROUS_OPS, ProtoError, fields, tf_kind

TF = Path(__file__).parent / "fixtures" / "tf"
CANARY = Path("/tmp/mlwarden_tf_canary")

BENIGN_DIRS = ["benign_module", "keras_dense", "tf1_graph", "benign_module_text"]
#: file -> (format, verdict, rules)
EXPECTED: dict[str, tuple[str, str, set[str]]] = {
    "benign.tflite": ("tf-lite", "safe", set()),
    "frozen_benign.pb": ("tf-graphdef", "safe", set()),
    "custom_op.tflite": ("tf-lite", "suspicious", {"MLW-SCN-008"}),
    "frozen_readwrite.pb": ("tf-graphdef", "unsafe", {"MLW-SCN-014"}),
    "readwrite_module/saved_model.pb": ("tf-savedmodel", "unsafe", {"MLW-SCN-014"}),
    "pyfunc_module/saved_model.pb": ("tf-savedmodel", "unsafe", {"MLW-SCN-014"}),
    "print_to_file_module/saved_model.pb": ("tf-savedmodel", "unsafe", {"MLW-SCN-014"}),
    "keras_lambda/keras_metadata.pb": ("tf-keras-metadata", "unsafe", {"MLW-SCN-005"}),
    "keras_lambda/saved_model.pb": ("tf-savedmodel", "safe", set()),
    "keras_dense/keras_metadata.pb": ("tf-keras-metadata", "safe", set()),
    "benign_module_text/saved_model.pbtxt": ("tf-savedmodel-text", "safe", set()),
    "readwrite_module_text/saved_model.pbtxt": ("tf-savedmodel-text", "unsafe", {"MLW-SCN-014"}),
    "frozen_benign.pbtxt": ("tf-graphdef-text", "safe", set()),
    "frozen_readwrite.pbtxt": ("tf-graphdef-text", "unsafe", {"MLW-SCN-014"}),
    "tf1_ckpt/model.ckpt.meta": ("tf-metagraph", "safe", set()),
    "tf1_ckpt/read_file.meta": ("tf-metagraph", "suspicious", {"MLW-SCN-014"}),
    "tf1_ckpt/model.ckpt.index": ("tf-bundle-index", "safe", set()),
    "tf1_ckpt/model.ckpt.data-00000-of-00001": ("tf-bundle-data", "safe", set()),
    "benign_module/fingerprint.pb": ("tf-fingerprint", "safe", set()),
    "benign_module/variables/variables.index": ("tf-bundle-index", "safe", set()),
    "benign_module/variables/variables.data-00000-of-00001": ("tf-bundle-data", "safe", set()),
}


def _rules(r: FileResult) -> set[str]:
    return {i.rule for i in r.findings}


@pytest.fixture(autouse=True, scope="module")
def _no_canary():
    CANARY.unlink(missing_ok=True)
    yield
    assert not CANARY.exists(), "a TensorFlow op ran: the canary file was written"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_verdicts(name: str) -> None:
    fmt, verdict, rules = EXPECTED[name]
    r = scan_file(TF / name)
    assert (r.format, r.verdict.value) == (fmt, verdict), [i.to_dict() for i in r.findings]
    assert _rules(r) == rules


def test_findings_name_the_ops() -> None:
    msgs = {
        name: " ".join(i.message for i in scan_file(TF / name).findings)
        for name in ("readwrite_module/saved_model.pb", "pyfunc_module/saved_model.pb")
    }
    assert "WriteFile" in msgs["readwrite_module/saved_model.pb"]
    assert "ReadFile" in msgs["readwrite_module/saved_model.pb"]
    assert "EagerPyFunc" in msgs["pyfunc_module/saved_model.pb"]
    severities = {
        i.global_: i.severity.value
        for i in scan_file(TF / "readwrite_module/saved_model.pb").findings
    }
    assert severities == {"WriteFile": "critical", "ReadFile": "high"}
    custom = scan_file(TF / "custom_op.tflite").findings
    assert [i.global_ for i in custom] == ["BesselI1e"]


@pytest.mark.parametrize("folder", BENIGN_DIRS)
def test_benign_savedmodel_folders_are_safe(folder: str) -> None:
    """Every file of a SavedModel folder is identified (no 'unrecognised format')."""
    res = scan_paths([TF / folder])
    assert res.files and res.exit_code() == 0, [
        (f.path, f.format, f.error) for f in res.files if f.verdict.value != "safe"
    ]
    assert all(f.format.startswith("tf-") for f in res.files)


def test_malicious_folders_are_flagged() -> None:
    for folder in ("readwrite_module", "pyfunc_module", "keras_lambda", "print_to_file_module"):
        assert scan_paths([TF / folder]).exit_code() == 1, folder


def test_savedmodel_in_a_zip_is_scanned(tmp_path: Path) -> None:
    import zipfile

    z = tmp_path / "model.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in sorted((TF / "readwrite_module").rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(TF).as_posix())
    r = scan_file(z)
    assert r.verdict.value == "unsafe" and "MLW-SCN-014" in _rules(r)


# --- identification --------------------------------------------------------------------------


def test_onnx_files_still_go_to_the_onnx_scanner() -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    for ir in (1, 3, 8, 10):
        model = helper.make_model(graph, producer_name="pytorch")
        model.ir_version = ir
        data = model.SerializeToString()
        assert tf_kind(data[:512], len(data)) is None
        assert sniff(data[:512], len(data)) == "onnx"
        assert scan_bytes(data).format == "onnx"
    # a custom domain is still reported by the ONNX scanner
    model = helper.make_model(
        helper.make_graph([helper.make_node("Evil", ["x"], ["y"], domain="evil.ops")], "g", [], [])
    )
    assert "MLW-SCN-008" in _rules(scan_bytes(model.SerializeToString()))
    assert onnx is not None


def test_savedmodel_is_not_onnx() -> None:
    data = (TF / "benign_module/saved_model.pb").read_bytes()
    assert data[:3] == b"\x08\x01\x12"  # what ONNX with ir_version 1 looks like too
    assert sniff(data[:512], len(data)) == "tf-savedmodel"


def test_data_shard_needs_its_index(tmp_path: Path) -> None:
    src = TF / "benign_module"
    shutil.copytree(src, tmp_path / "m")
    shard = tmp_path / "m/variables/variables.data-00000-of-00001"
    assert scan_file(shard).format == "tf-bundle-data"
    with shard.open("ab") as f:
        f.write(b"\0")  # one byte the index does not describe
    assert scan_file(shard).verdict.value == "unknown"  # raw bytes: never safe
    (tmp_path / "m/variables/variables.index").unlink()
    assert scan_file(shard).verdict.value == "unknown"


def test_pickle_named_like_a_shard_is_still_a_pickle(tmp_path: Path) -> None:
    """Naming a pickle after a shard (with an index that covers it) hides nothing."""
    import pickle

    payload = pickle.dumps(shutil.rmtree, protocol=2)
    var = tmp_path / "variables"
    var.mkdir()
    shard = var / "variables.data-00000-of-00001"
    index = (TF / "benign_module/variables/variables.index").read_bytes()
    (var / "variables.index").write_bytes(index)
    size = (TF / "benign_module/variables/variables.data-00000-of-00001").stat().st_size
    assert len(payload) < size
    shard.write_bytes(payload.ljust(size, b"\0"))
    r = scan_file(shard)
    assert r.verdict.value == "unsafe" and "MLW-SCN-001" in _rules(r)


# --- the protobuf reader and hostile variants --------------------------------------------------


def test_reader_refuses_lying_lengths() -> None:
    with pytest.raises(ProtoError):
        list(fields(b"\x12\x7f" + b"x" * 10))  # declares 127 bytes, 10 remain
    with pytest.raises(ProtoError):
        list(fields(b"\x08" + b"\xff" * 11))  # varint longer than 10 bytes
    with pytest.raises(ProtoError):
        list(fields(b"\x0b"))  # wire type 3 (group)
    with pytest.raises(ProtoError):
        list(fields(b"\x09\x01\x02"))  # fixed64 cut short
    assert list(fields(b"\x08\x96\x01\x12\x02hi")) == [(1, 0, 150), (2, 2, (5, 7))]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _ld(num: int, payload: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def _graph(*nodes: tuple[str, str, dict[str, bytes]]) -> bytes:
    out = b""
    for name, op, attrs in nodes:
        body = _ld(1, name.encode()) + _ld(2, op.encode())
        for k, v in attrs.items():
            body += _ld(5, _ld(1, k.encode()) + _ld(2, _ld(2, v)))
        out += _ld(1, body)
    return out + _ld(4, b"\x08\x01")  # versions {producer: 1}


def test_hand_built_graphs() -> None:
    assert scan_bytes(_graph(("x", "Placeholder", {}))).verdict.value == "safe"
    evil = scan_bytes(_graph(("x", "Placeholder", {}), ("w", "WriteFile", {})))
    assert evil.format == "tf-graphdef" and evil.verdict.value == "unsafe"
    # checkpoint writes outside TensorFlow's saver are reported; the TF1 saver is not
    assert scan_bytes(_graph(("dump", "SaveV2", {}))).verdict.value == "unsafe"
    assert scan_bytes(_graph(("save/SaveV2", "SaveV2", {}))).verdict.value == "safe"
    stream = scan_bytes(_graph(("p", "PrintV2", {"output_stream": b"file:///etc/cron.d/x"})))
    assert stream.verdict.value == "unsafe"
    assert scan_bytes(_graph(("p", "PrintV2", {"output_stream": b"stderr"}))).verdict.value == (
        "safe"
    )
    for op, attr, value, verdict in (
        ("PrintV2", "output_stream", b"log(warning)", "safe"),
        ("DecodeProtoV2", "descriptor_source", b"local://", "safe"),
        ("DecodeProtoV2", "descriptor_source", b"bytes://\n\x05x.proto", "safe"),
        ("DecodeProtoV2", "descriptor_source", b"/tmp/evil.desc", "suspicious"),
    ):
        got = scan_bytes(_graph(("d", op, {attr: value}))).verdict.value
        assert got == verdict, (op, value)
    mapped = scan_bytes(_graph(("c", "ImmutableConst", {"memory_region_name": b"/etc/shadow"})))
    assert mapped.verdict.value == "suspicious" and "/etc/shadow" in mapped.findings[0].message
    custom = scan_bytes(_graph(("g", "Addons>GeLU", {})))
    assert _rules(custom) == {"MLW-SCN-008"}
    # the op named twice: TensorFlow keeps the last, both are checked
    body = _ld(1, b"n") + _ld(2, b"Identity") + _ld(2, b"WriteFile")
    assert scan_bytes(_ld(1, body) + _ld(4, b"\x08\x01")).verdict.value == "unsafe"
    # a known field with another wire type: TensorFlow would skip it, we refuse
    body = _ld(1, b"n") + _ld(2, b"Identity") + b"\x28\x01"  # attr as a varint
    assert scan_bytes(_ld(1, body) + _ld(4, b"\x08\x01")).verdict.value == "error"


def test_ops_tensorflow_does_not_define() -> None:
    """An op outside TensorFlow's registry needs a custom op library (native code); a
    node whose op names a function of the graph's library calls that function."""
    r = scan_bytes(_graph(("n", "MyCustomKernel", {})))
    assert _rules(r) == {"MLW-SCN-008"} and "MyCustomKernel" in r.findings[0].message
    fdef = _ld(1, _ld(1, b"my_fn")) + _ld(3, _ld(1, b"inner") + _ld(2, b"Identity"))
    call = _ld(1, _ld(1, b"c") + _ld(2, b"my_fn"))
    graph = call + _ld(2, _ld(1, fdef)) + _ld(4, b"\x08\x01")
    assert scan_bytes(graph).verdict.value == "safe"
    # the function's own nodes are checked
    fdef = _ld(1, _ld(1, b"my_fn")) + _ld(3, _ld(1, b"w") + _ld(2, b"WriteFile"))
    graph = call + _ld(2, _ld(1, fdef)) + _ld(4, b"\x08\x01")
    r = scan_bytes(graph)
    assert r.verdict.value == "unsafe" and "function my_fn" in r.findings[0].message


def test_every_listed_op_is_reported() -> None:
    for op, (severity, _) in DANGEROUS_OPS.items():
        r = scan_bytes(_graph(("n", op, {})))
        assert r.findings and r.findings[0].severity is severity, op


def test_asset_outside_the_model_folder() -> None:
    data = bytearray((TF / "benign_module/saved_model.pb").read_bytes())
    # add an AssetFileDef {filename: "../../etc/passwd"} to the MetaGraphDef
    asset = _ld(6, _ld(2, b"../../etc/passwd"))
    tag, pos = data[2], 3
    length = 0
    shift = 0
    while True:
        b = data[pos]
        length |= (b & 0x7F) << shift
        pos += 1
        shift += 7
        if not b & 0x80:
            break
    meta = bytes(data[pos : pos + length]) + asset
    forged = b"\x08\x01" + bytes([tag]) + _varint(len(meta)) + meta
    r = scan_bytes(forged)
    assert r.verdict.value == "suspicious" and "etc/passwd" in r.findings[0].message


def test_text_format_tricks() -> None:
    """String escapes, joined literals, comments and ``<>`` braces hide no op."""
    base = b'node { name: "x" op: "Placeholder" }\n'
    end = b"versions { producer: 1 }\n"
    assert scan_bytes(base + end).verdict.value == "safe"
    for op in (
        b'"WriteFile"',
        b"'WriteFile'",
        b'"Write" "File"',
        b'"Write"\n# a comment\n"File"',
        b'"\\x57riteFile"',
        b'"\\127riteFile"',
    ):
        graph = base + b"node < name: 'w' op: " + op + b" >\n" + end
        r = scan_bytes(graph)
        assert r.format == "tf-graphdef-text" and r.verdict.value == "unsafe", (op, r.error)
    attr = b'attr { key: "output_stream" value { s: "file:///x" } }'
    r = scan_bytes(base + b'node { name: "p" op: "PrintV2" ' + attr + b" }\n" + end)
    assert r.verdict.value == "unsafe"
    # a cut file, an unterminated string and a lone brace are errors
    for bad in (base, base + b'node { name: "w" op: "Write', base + b"node { " + end):
        assert scan_bytes(bad).verdict.value == "error", bad
    assert scan_bytes(b"node was here\n").format == "text"


TRUNCATABLE = [
    "benign.tflite",
    "custom_op.tflite",
    "frozen_benign.pb",
    "frozen_readwrite.pb",
    "benign_module/saved_model.pb",
    "readwrite_module/saved_model.pb",
    "benign_module/variables/variables.index",
    "frozen_readwrite.pbtxt",
    "readwrite_module_text/saved_model.pbtxt",
    "tf1_ckpt/read_file.meta",
]  # (fingerprint.pb: cut after a field it is a valid, older fingerprint, and data either way)


@pytest.mark.parametrize("name", TRUNCATABLE)
def test_truncated_files_are_never_safe(name: str) -> None:
    data = (TF / name).read_bytes()
    step = max(1, len(data) // 300)
    # a text file cut before the words that identify it is text
    for cut in range(64 if name.endswith(".pbtxt") else 4, len(data), step):
        r = scan_bytes(data[:cut])
        assert r.verdict.value != "safe", (cut, r.format)


def test_keras_metadata_cut_inside_a_node_is_never_safe() -> None:
    data = (TF / "keras_lambda/keras_metadata.pb").read_bytes()
    for cut in range(4, len(data), 7):
        r = scan_bytes(data[:cut])
        # a cut between two nodes is a valid, shorter file: the Lambda node comes first
        assert r.verdict.value != "safe", cut


@pytest.mark.parametrize("name", [*EXPECTED, "tf1_graph/saved_model.pb"])
def test_mutations_never_crash(name: str) -> None:
    """Random byte changes: the scan ends in a verdict, and an error is a parse error."""
    data = (TF / name).read_bytes()
    rng = random.Random(name)
    for _ in range(60):
        b = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        r = scan_bytes(bytes(b))
        if r.error is not None:
            assert r.error.startswith(("truncated or corrupt", "scan limit", "malformed")), r.error


def test_tflite_lying_offsets() -> None:
    data = bytearray((TF / "custom_op.tflite").read_bytes())
    for forged in (
        struct.pack("<I", len(data) + 10) + data[4:],  # root table outside the file
        struct.pack("<I", 0xFFFFFFF0) + data[4:],
        bytes(data[:8]) + b"\xff" * (len(data) - 8),
    ):
        r = scan_bytes(bytes(forged))
        assert r.verdict.value == "error", r.format


def test_big_tflite_is_read_where_its_offsets_point(tmp_path: Path) -> None:
    """Over 64 MiB a TFLite file on disk is not loaded whole (LLM models reach GBs)."""
    big = tmp_path / "big.tflite"
    with big.open("wb") as f:
        f.write((TF / "custom_op.tflite").read_bytes())
        f.truncate(65 << 20)  # trailing bytes (like appended metadata) that loaders ignore
    r = scan_file(big)
    assert (r.format, r.verdict.value) == ("tf-lite", "suspicious")
    assert [i.global_ for i in r.findings] == ["BesselI1e"]
    data = bytearray((TF / "custom_op.tflite").read_bytes())
    data[0:4] = struct.pack("<I", (65 << 20) + 4)  # root table past the end
    big.write_bytes(bytes(data))
    with big.open("r+b") as f:
        f.truncate(65 << 20)
    assert scan_file(big).verdict.value == "error"


def test_node_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """A graph of millions of tiny nodes stops at a limit (an error, never safe)."""
    from mlwarden.supplychain import tf_scan

    monkeypatch.setattr(tf_scan, "MAX_NODES", 100)
    graph = _graph(*[(f"n{i}", "Identity", {}) for i in range(101)])
    r = scan_bytes(graph)
    assert r.verdict.value == "error" and "101 nodes" in (r.error or "")
    assert scan_bytes(_graph(*[(f"n{i}", "Identity", {}) for i in range(100)])).verdict.value == (
        "safe"
    )


def test_keras_config_in_the_object_graph() -> None:
    """Keras 2 in TensorFlow <= 2.4 kept layer configs in the SavedModel's object graph
    (SavedUserObject.metadata) instead of keras_metadata.pb."""
    data = (TF / "keras_lambda/keras_metadata.pb").read_bytes()
    configs = [
        data[v[0] : v[1]]
        for _, w, span in fields(data)
        if w == 2
        for n, _, v in fields(data, *span)
        if n == 5
    ]
    lam = next(c for c in configs if b'"Lambda"' in c)
    user_object = _ld(1, b"_tf_keras_layer") + _ld(3, lam)
    object_graph = _ld(1, _ld(4, user_object))
    meta = _ld(1, _ld(1, b"")) + _ld(2, _graph(("x", "Placeholder", {}))) + _ld(7, object_graph)
    r = scan_bytes(b"\x08\x01" + _ld(2, meta))
    assert r.format == "tf-savedmodel" and "MLW-SCN-005" in _rules(r), r.error


def test_a_pipe_in_place_of_the_index_does_not_hang(tmp_path: Path) -> None:
    import os

    shutil.copytree(TF / "benign_module/variables", tmp_path / "v")
    (tmp_path / "v/variables.index").unlink()
    os.mkfifo(tmp_path / "v/variables.index")
    r = scan_file(tmp_path / "v/variables.data-00000-of-00001")
    assert r.verdict.value == "unknown"


def _table(index_entries: int) -> bytes:
    """A LevelDB table as TensorFlow writes a tensor-bundle index: one data block holding
    the header; the index block names that block ``index_entries`` times."""

    def block(entries: list[tuple[bytes, bytes]]) -> bytes:
        body = b"".join(_varint(0) + _varint(len(k)) + _varint(len(v)) + k + v for k, v in entries)
        return body + struct.pack("<II", 0, 1) + b"\0" * 5  # restarts, type, crc

    header = b"\x08\x01\x1a\x02\x08\x01"  # num_shards 1, version {producer 1}
    data = block([(b"", header)])
    handle = _varint(0) + _varint(len(data) - 5)
    meta_off = len(data)
    meta = block([])
    index_off = meta_off + len(meta)
    index = block([(b"k%d" % i, handle) for i in range(index_entries)])
    footer = _varint(meta_off) + _varint(len(meta) - 5) + _varint(index_off)
    footer += _varint(len(index) - 5)
    return data + meta + index + footer.ljust(40, b"\0") + struct.pack("<Q", 0xDB4775248B80FB57)


def test_bundle_index_blocks_are_read_once() -> None:
    good = scan_bytes(_table(1))
    assert (good.format, good.verdict.value) == ("tf-bundle-index", "safe"), good.error
    # a data block named again and again (quadratic work on a crafted index)
    assert scan_bytes(_table(3)).verdict.value == "error"


def test_text_token_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlwarden.supplychain import tf_scan

    monkeypatch.setattr(tf_scan, "MAX_TEXT_TOKENS", 1000)
    graph = b'node { name: "x" op: "Placeholder" }\n' * 200 + b"versions { producer: 1 }\n"
    r = scan_bytes(graph)
    assert r.verdict.value == "error" and "tokens" in (r.error or "")
    deep = b"node { name: 'x' op: 'Identity' attr " + b"{ a " * 100 + b"}" * 100 + b" }"
    assert scan_bytes(deep).verdict.value == "error"  # nested deeper than the parser follows


def test_tflite_custom_ops_that_ship_with_tflite() -> None:
    """TFLite_Detection_PostProcess (SSD detectors), Mfcc... are in TFLite's own resolver."""
    data = bytearray((TF / "custom_op.tflite").read_bytes())
    at = data.rindex(b"BesselI1e")  # the operator code (an earlier one is a tensor name)
    assert data[at - 4 : at] == struct.pack("<I", 9)
    for name, verdict in ((b"Mfcc", "safe"), (b"Evil", "suspicious")):
        forged = bytearray(data)
        forged[at - 4 : at + len(name) + 1] = struct.pack("<I", len(name)) + name + b"\0"
        r = scan_bytes(bytes(forged))
        assert (r.format, r.verdict.value) == ("tf-lite", verdict), name


def test_pickle_in_a_shard_that_stops_the_machine_at_a_limit_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the pickle machine gives up at its own limit an unpickler reads on: never data."""
    from mlwarden.supplychain import pickle_vm

    monkeypatch.setattr(pickle_vm, "MAX_STACK", 50)
    var = tmp_path / "variables"
    var.mkdir()
    index = (TF / "benign_module/variables/variables.index").read_bytes()
    (var / "variables.index").write_bytes(index)
    size = (TF / "benign_module/variables/variables.data-00000-of-00001").stat().st_size
    payload = b"(" * 100 + b"cos\nsystem\n"
    assert len(payload) < size
    shard = var / "variables.data-00000-of-00001"
    shard.write_bytes(payload.ljust(size, b"\0"))
    assert scan_file(shard).verdict.value in ("error", "unsafe")
    assert scan_file(shard).verdict.value != "safe"
