"""TensorFlow files: SavedModel, GraphDef, TFLite, checkpoints and the data beside them.

Parsed with a small protobuf wire-format reader, a text-format reader and a flatbuffer
reader of our own: TensorFlow is never imported. Every declared length, offset and count
is checked against the bytes present; anything that does not parse is an error (never
safe). Formats are identified by structure, never by file name (a SavedModel and an ONNX
model both open with field 1 as a varint and field 2 as bytes: the SavedModel's field 2
is a MetaGraphDef, an ONNX producer name is text).

* ``saved_model.pb`` / ``saved_model.pbtxt`` (``tensorflow.SavedModel``), frozen
  ``GraphDef`` files (binary or text) and TF1 checkpoint graphs (``model.ckpt.meta``, a
  ``MetaGraphDef``): every node of the graph and of every function in its library is
  checked (rule MLW-SCN-014) for operations that read or write files, open databases or
  sockets, or run Python (``PyFunc``, ``EagerPyFunc``: the code is not in the file, but
  the graph calls whatever Python function the loading process registered under the
  token). An op TensorFlow does not define (``data/tf_ops.json``; ``Addons>GeLU``) needs
  a custom op library, native code (MLW-SCN-008). Asset files named outside the model
  folder (``../``, absolute paths) are read at load. Checkpoint ops (``SaveV2``,
  ``RestoreV2``, ``MergeV2Checkpoints``) belong to the saver TensorFlow writes into every
  model (``__inference__traced_save_N`` functions, TF1 ``save/`` nodes); elsewhere they
  are reported.
* ``keras_metadata.pb`` (Keras 2 SavedModel; older TensorFlow kept the same JSON in the
  object graph): every layer config is checked like any Keras config (``Lambda`` layers
  carry marshalled Python).
* ``.tflite`` flatbuffers (``TFL3``): custom operators need native code (MLW-SCN-008);
  ``Flex`` ops run the TensorFlow kernel of the same name and are checked like graph ops;
  every buffer must lie inside the file. Files over 64 MiB are read where offsets point.
* ``fingerprint.pb``, ``*.index`` (a LevelDB-format table holding a tensor-bundle index)
  and ``*.data-NNNNN-of-NNNNN`` (raw tensor bytes, identified only when the index beside
  them describes exactly their bytes; only run through the pickle machine, never loaded
  whole) are data: no code.
"""

from __future__ import annotations

import codecs
import functools
import io
import json
import os
import re
import stat
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlwarden.core.severity import Severity
from mlwarden.supplychain.limits import ScanLimit, read_bounded
from mlwarden.supplychain.polyglot import polyglot_pickle
from mlwarden.supplychain.results import Sink
from mlwarden.supplychain.stream import Source, Truncated

RULE = "MLW-SCN-014"
MAX_PROTO = 1 << 31  #: protobuf's own limit on a serialized message
MAX_NODES = 10_000_000  #: nodes checked per graph (a few seconds per million)
TFLITE_ID = b"TFL3"
SSTABLE_MAGIC = struct.pack("<Q", 0xDB4775248B80FB57)

_W = Severity.CRITICAL
_R = Severity.HIGH
#: TensorFlow ops that reach outside the graph, by what they do.
DANGEROUS_OPS: dict[str, tuple[Severity, str]] = {
    # run Python registered in the loading process
    "PyFunc": (_W, "runs a Python function"),
    "PyFuncStateless": (_W, "runs a Python function"),
    "EagerPyFunc": (_W, "runs a Python function"),
    # write or delete files
    "WriteFile": (_W, "writes a file"),
    "Save": (_W, "writes a checkpoint file"),
    "SaveSlices": (_W, "writes a checkpoint file"),
    "SaveV2": (_W, "writes checkpoint files"),
    "MergeV2Checkpoints": (_W, "writes checkpoint files and deletes folders"),
    "DatasetToTFRecord": (_W, "writes a TFRecord file"),
    "ExperimentalDatasetToTFRecord": (_W, "writes a TFRecord file"),
    "SaveDataset": (_W, "writes a dataset to files"),
    "SaveDatasetV2": (_W, "writes a dataset to files"),
    "DistributedSave": (_W, "writes a dataset to files"),
    "SnapshotDataset": (_W, "writes dataset snapshots to files"),
    "SnapshotDatasetV2": (_W, "writes dataset snapshots to files"),
    "CacheDataset": (_W, "writes cache files"),
    "CacheDatasetV2": (_W, "writes cache files"),
    "CreateSummaryFileWriter": (_W, "writes event files"),
    "CreateSummaryDbWriter": (_W, "writes a database file"),
    "DebugIdentity": (_W, "dumps tensors to files or URLs"),
    "DebugIdentityV2": (_W, "dumps tensors to files"),
    "DebugIdentityV3": (_W, "dumps tensors to files or URLs"),
    "DebugNanCount": (_W, "dumps tensors to files or URLs"),
    "DebugNumericSummary": (_W, "dumps tensors to files or URLs"),
    "FileSystemSetConfiguration": (_W, "changes file-system settings"),
    "DumpTensor": (_W, "writes a tensor to a file"),
    "CalibrationStatisticsSaver": (_W, "writes a statistics file"),
    # network
    "DataServiceDataset": (_W, "connects to a tf.data service"),
    "DataServiceDatasetV2": (_W, "connects to a tf.data service"),
    "DataServiceDatasetV3": (_W, "connects to a tf.data service"),
    "DataServiceDatasetV4": (_W, "connects to a tf.data service"),
    "RegisterDataset": (_W, "connects to a tf.data service"),
    "RegisterDatasetV2": (_W, "connects to a tf.data service"),
    "RpcClient": (_W, "connects to an RPC server"),
    "RpcCall": (_W, "calls an RPC server"),
    "RpcServer": (_W, "opens an RPC server"),
    "RpcServerStart": (_W, "starts an RPC server"),
    # graphs the scanner does not see: a serialized GraphDef in a tensor, remote devices
    "DatasetFromGraph": (_R, "builds a dataset from a serialized graph held in a tensor"),
    "RemoteCall": (_R, "calls a function on another (possibly remote) device"),
    # read files, list folders, open databases
    "ReadFile": (_R, "reads a file"),
    "MatchingFiles": (_R, "lists files"),
    "MatchingFilesDataset": (_R, "lists files"),
    "ExperimentalMatchingFilesDataset": (_R, "lists files"),
    "SnapshotDatasetReader": (_R, "reads dataset snapshot files"),
    "SnapshotChunkDataset": (_R, "reads dataset snapshot files"),
    "SnapshotNestedDatasetReader": (_R, "reads dataset snapshot files"),
    "ListSnapshotChunksDataset": (_R, "lists dataset snapshot files"),
    "ImmutableConst": (_R, "maps a file into memory"),
    "Restore": (_R, "reads a checkpoint file"),
    "RestoreSlice": (_R, "reads a checkpoint file"),
    "RestoreV2": (_R, "reads checkpoint files"),
    "LoadAndRemapMatrix": (_R, "reads a checkpoint file"),
    "GenerateVocabRemapping": (_R, "reads vocabulary files"),
    "TFRecordDataset": (_R, "reads files"),
    "TFRecordDatasetV2": (_R, "reads files"),
    "TextLineDataset": (_R, "reads files"),
    "FixedLengthRecordDataset": (_R, "reads files"),
    "FixedLengthRecordDatasetV2": (_R, "reads files"),
    "CSVDataset": (_R, "reads files"),
    "CSVDatasetV2": (_R, "reads files"),
    "ExperimentalCSVDataset": (_R, "reads files"),
    "LMDBDataset": (_R, "reads a database file"),
    "ExperimentalLMDBDataset": (_R, "reads a database file"),
    "SqlDataset": (_R, "opens a database file"),
    "ExperimentalSqlDataset": (_R, "opens a database file"),
    "LoadDataset": (_R, "reads a saved dataset"),
    "TFRecordReader": (_R, "reads files"),
    "TFRecordReaderV2": (_R, "reads files"),
    "TextLineReader": (_R, "reads files"),
    "TextLineReaderV2": (_R, "reads files"),
    "FixedLengthRecordReader": (_R, "reads files"),
    "FixedLengthRecordReaderV2": (_R, "reads files"),
    "WholeFileReader": (_R, "reads files"),
    "WholeFileReaderV2": (_R, "reads files"),
    "LMDBReader": (_R, "reads a database file"),
    "InitializeTableFromTextFile": (Severity.MEDIUM, "reads a text file into a lookup table"),
    "InitializeTableFromTextFileV2": (Severity.MEDIUM, "reads a text file into a lookup table"),
}
#: checkpoint ops expected in the saver functions TensorFlow adds to every SavedModel
_SAVER_OPS = frozenset(
    {"Save", "SaveSlices", "SaveV2", "MergeV2Checkpoints", "Restore", "RestoreSlice", "RestoreV2"}
)
_SAVER_FUNCTION = re.compile(r"__inference__traced_(?:save|restore)_\d+")
#: the TF1 ``tf.train.Saver`` scope of a graph's checkpoint nodes (``save/SaveV2``)
_SAVER_SCOPE = re.compile(r"save(?:_\d+)?/[^/]+")
#: ops harmless unless an attribute names a file (attribute, what it means)
_FILE_ATTRS = {
    "PrintV2": ("output_stream", "appends to a file"),
    "DecodeProtoV2": ("descriptor_source", "reads a descriptor file"),
    "EncodeProto": ("descriptor_source", "reads a descriptor file"),
}
#: values of those attributes that name no file: PrintV2's standard streams and log levels,
#: a proto descriptor from the binary's own pool or given inline
_HARMLESS_ATTR = re.compile(
    r"stderr|stdout|log\((?:info|warning|error)\)|local://|bytes://.*", re.S
)
#: string attributes the checks read
_STRING_ATTRS = frozenset({"memory_region_name", *(a for a, _ in _FILE_ATTRS.values())})
_OP_NAME = re.compile(rb"[A-Za-z_][A-Za-z0-9_>.]*")
_NODE_NAME = re.compile(rb"[A-Za-z0-9._][A-Za-z0-9_./>\-]*")


#: bytes that are not the protobuf (or flatbuffer) they claim to be: "truncated or corrupt"
ProtoError = Truncated


# --- protobuf wire format -----------------------------------------------------------------

VARINT, I64, LEN, I32 = 0, 1, 2, 5


@functools.cache
def _op_list() -> tuple[str, frozenset[str]]:
    """TensorFlow's own op names (package data, read on first use), and its version."""
    doc = json.loads((Path(__file__).parent / "data" / "tf_ops.json").read_text("utf-8"))
    return str(doc["tensorflow"]), frozenset(doc["ops"])


def tf_ops() -> frozenset[str]:
    """Every op TensorFlow registers (``data/tf_ops.json``, written by
    ``tests/supplychain/fixtures/tf/make_tf_fixtures.py --ops``): an op outside it (and
    not a function of the graph's library) comes from a custom op library or a newer
    TensorFlow."""
    return _op_list()[1]


def tf_version() -> str:
    """The TensorFlow release :func:`tf_ops` lists."""
    return _op_list()[0]


def varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """The varint at ``pos`` (at most 10 bytes, before ``end``) and the position after it."""
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise ProtoError("varint runs past the end of its message")
        b = buf[pos]
        value |= (b & 0x7F) << shift
        pos += 1
        if not b & 0x80:
            return value & 0xFFFFFFFFFFFFFFFF, pos
        shift += 7


def fields(buf: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[int, int, Any]]:
    """``(field, wire type, value)`` of one message: an int for varints and fixed
    numbers, ``(start, end)`` offsets into ``buf`` for length-delimited fields."""
    end = len(buf) if end is None else end
    if not 0 <= start <= end <= len(buf):
        raise ProtoError("message extends past the data")
    pos = start
    while pos < end:
        key, pos = varint(buf, pos, end)
        num, wt = key >> 3, key & 7
        if not 1 <= num < 1 << 29:
            raise ProtoError(f"invalid field number {num}")
        if wt == VARINT:
            value, pos = varint(buf, pos, end)
            yield num, wt, value
        elif wt == LEN:
            n, pos = varint(buf, pos, end)
            if n > end - pos:
                raise ProtoError(f"field {num} declares {n} bytes, {end - pos} remain")
            yield num, wt, (pos, pos + n)
            pos += n
        elif wt in (I64, I32):
            width = 8 if wt == I64 else 4
            if width > end - pos:
                raise ProtoError(f"field {num} runs past the end of its message")
            yield num, wt, int.from_bytes(buf[pos : pos + width], "little")
            pos += width
        else:  # groups (3, 4) are not used by any TensorFlow message; 6 and 7 do not exist
            raise ProtoError(f"field {num} has wire type {wt}")


def validate(buf: bytes, start: int, end: int) -> None:
    """Check that ``buf[start:end]`` is a well-formed message (its own fields only)."""
    for _ in fields(buf, start, end):
        pass


def _typed(buf: bytes, span: tuple[int, int], schema: dict[int, int]) -> Iterator[tuple[int, Any]]:
    """Fields of a message with known wire types: a known field with another wire type is
    an error (TensorFlow would not see what we see)."""
    for num, wt, value in fields(buf, span[0], span[1]):
        want = schema.get(num)
        if want is not None and want != wt:
            raise ProtoError(f"field {num} has wire type {wt}, expected {want}")
        yield num, value


def _text(buf: bytes, span: tuple[int, int]) -> str:
    return bytes(buf[span[0] : span[1]]).decode("utf-8", "backslashreplace")


# --- identification ---------------------------------------------------------------------------


def tf_kind(head: bytes, size: int | None) -> str | None:
    """A TensorFlow file format from its first bytes (a window of up to 512), or None.

    SavedModel and ONNX both start with field 1 (varint) then field 2 (bytes): a
    SavedModel has schema version 1 and its field 2 is a MetaGraphDef whose MetaInfoDef
    comes first; an ONNX producer name is text.
    """
    whole = size is not None and len(head) >= size
    try:
        if head[4:8] == TFLITE_ID and len(head) >= 8:
            return "tf-lite"
        if head[:3] == b"\x08\x01\x12" and _savedmodel_head(head):
            return "tf-savedmodel"
        if head[:1] == b"\x0a" and _graphdef_head(head):
            return "tf-graphdef"
        if head[:1] == b"\x0a" and _keras_metadata_head(head):
            return "tf-keras-metadata"
        if head[:1] == b"\x0a" and _metagraph_head(head):
            return "tf-metagraph"
        if head[:2] == b"\x00\x00" and _bundle_index_head(head):
            return "tf-bundle-index"
        if whole and head[:1] == b"\x08" and _fingerprint(head):
            return "tf-fingerprint"
        if _TEXT_SAVEDMODEL.match(head):
            return "tf-savedmodel-text"
        if _TEXT_GRAPHDEF.match(head):
            return "tf-graphdef-text"
    except ProtoError:
        return None
    return None


def _first(buf: bytes, start: int, end: int) -> tuple[int, int, Any]:
    """The first field of a message that may be cut by the window: its value clipped."""
    key, pos = varint(buf, start, end)
    num, wt = key >> 3, key & 7
    if wt == LEN:
        n, pos = varint(buf, pos, end)
        return num, wt, (pos, min(pos + n, end), n)
    if wt == VARINT:
        value, pos = varint(buf, pos, end)
        return num, wt, value
    return num, wt, None


def _savedmodel_head(head: bytes) -> bool:
    # SavedModel.meta_graphs[0] -> MetaGraphDef.meta_info_def (1) -> MetaInfoDef field:
    # meta_graph_version (1, text) or stripped_op_list (2) whose first OpDef has a name
    num, wt, span = _first(head, 2, len(head))
    if (num, wt) != (2, LEN):
        return False
    num, wt, span = _first(head, span[0], span[1])
    if (num, wt) != (1, LEN):
        return False
    num, wt, span = _first(head, span[0], span[1])
    if wt != LEN or num not in (1, 2, 4, 5):
        return False
    return num != 2 or _oplist_head(head, span)


def _oplist_head(head: bytes, span: tuple[int, int, int]) -> bool:
    """OpList.op[0].name is an op name."""
    num, wt, span = _first(head, span[0], span[1])
    if (num, wt) != (1, LEN):
        return False
    num, wt, span = _first(head, span[0], span[1])
    return (num, wt) == (1, LEN) and _OP_NAME.fullmatch(head[span[0] : span[1]]) is not None


def _metagraph_head(head: bytes) -> bool:
    # a MetaGraphDef on its own (``model.ckpt.meta``): meta_info_def (1) whose
    # meta_graph_version (1, optional) is followed by stripped_op_list (2)
    num, wt, span = _first(head, 0, len(head))
    if (num, wt) != (1, LEN):
        return False
    num, wt, inner = _first(head, span[0], span[1])
    if (num, wt) == (1, LEN):
        if inner[0] + inner[2] >= span[1]:
            return False
        num, wt, inner = _first(head, inner[0] + inner[2], span[1])
    return (num, wt) == (2, LEN) and _oplist_head(head, inner)


def _graphdef_head(head: bytes) -> bool:
    # GraphDef.node[0]: name (1) then op (2), both identifiers
    num, wt, span = _first(head, 0, len(head))
    if (num, wt) != (1, LEN) or span[2] < 4:
        return False
    num, wt, name = _first(head, span[0], span[1])
    if (num, wt) != (1, LEN) or name[1] != name[0] + name[2] or name[1] >= span[1]:
        return False
    if _NODE_NAME.fullmatch(head[name[0] : name[1]]) is None:
        return False
    num, wt, op = _first(head, name[1], span[1])
    if (num, wt) != (2, LEN) or op[1] != op[0] + op[2]:
        return False
    return _OP_NAME.fullmatch(head[op[0] : op[1]]) is not None


def _keras_metadata_head(head: bytes) -> bool:
    # SavedMetadata.nodes[0]: node_id (2), node_path (3), identifier (4) "_tf_keras_..."
    num, wt, span = _first(head, 0, len(head))
    if (num, wt) != (1, LEN):
        return False
    pos, end = span[0], span[1]
    while pos < end:
        num, wt, value = _first(head, pos, end)
        if num == 2 and wt == VARINT:
            _, pos = varint(head, varint(head, pos, end)[1], end)
        elif num == 3 and wt == LEN:
            pos = value[0] + value[2]
        elif num == 4 and wt == LEN:
            return head[value[0] : value[1]].startswith(b"_tf_keras_")
        else:
            return False
    return False


def _bundle_index_head(head: bytes) -> bool:
    # first entry of the first data block: shared 0, key "" and a BundleHeaderProto value
    shared, pos = varint(head, 0, len(head))
    unshared, pos = varint(head, pos, len(head))
    vlen, pos = varint(head, pos, len(head))
    if shared or unshared or not 0 < vlen <= len(head) - pos:
        return False
    schema = {1: VARINT, 2: VARINT, 3: LEN}
    got = dict(_typed(head, (pos, pos + vlen), schema))
    return 1 in got and 3 in got


def _fingerprint(data: bytes) -> bool:
    schema = {1: VARINT, 2: VARINT, 3: VARINT, 4: VARINT, 5: VARINT, 6: LEN, 7: LEN}
    seen = set()
    for num, _ in _typed(data, (0, len(data)), schema):
        if num not in schema:
            return False
        seen.add(num)
    return 1 in seen and 6 in seen


def shard_kind(path: Path, size: int | None) -> str | None:
    """``tf-bundle-data`` when ``path`` is a tensor-bundle data shard that the index file
    beside it describes byte for byte (raw tensor bytes have no signature of their own)."""
    m = re.fullmatch(r"(.+)\.data-(\d{5})-of-(\d{5})", path.name)
    if m is None or size is None:
        return None
    index = path.with_name(m.group(1) + ".index")
    try:
        # non-blocking: a named pipe in the index's place must not hang the scan
        fd = os.open(index, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            with open(fd, "rb", closefd=False) as f:
                data = f.read(64 << 20)
        finally:
            os.close(fd)
        entries = bundle_entries(data)
    except (OSError, ValueError, ProtoError):
        return None
    shard = int(m.group(2))
    if entries.get("num_shards") != int(m.group(3)):
        return None
    spans = sorted(e for e in entries["spans"] if e[0] == shard)
    pos = 0
    for _, off, n in spans:
        if off != pos:
            return None
        pos += n
    return "tf-bundle-data" if pos == size else None


# --- dispatch --------------------------------------------------------------------------------


def scan_tf(kind: str, src: Source, sink: Sink, limit: int) -> str:
    """Scan a stream :func:`tf_kind` or :func:`shard_kind` identified; its format name.

    Data shards are only run through the pickle machine (as far as an unpickler would
    read), and a big TFLite file on disk is read where its offsets point: neither is
    loaded whole (both reach many gigabytes).
    """
    random_access = src.seekable and src.pos == 0 and src.size is not None
    if kind == "tf-bundle-data" or (
        kind == "tf-lite" and random_access and (src.size or 0) > 64 << 20
    ):
        if not random_access:
            if kind == "tf-bundle-data":
                _pickle_first(src, sink, kind)
                return kind
            raise ProtoError("TFLite file larger than 64 MiB in a stream")
        f, size = src.f, int(src.size or 0)
        f.seek(0)
        _pickle_first(Source(f, size), sink, kind)
        if kind == "tf-lite":
            scan_tflite(_FileView(f, size), sink)
        return kind
    data = read_bounded(src, min(limit, MAX_PROTO), kind)
    _pickle_first(Source(io.BytesIO(data), len(data)), sink, kind)
    if kind == "tf-savedmodel":
        scan_savedmodel(data, sink)
    elif kind == "tf-graphdef":
        scan_graphdef(data, sink, "graph")
    elif kind == "tf-metagraph":
        if not _meta_graph(data, (0, len(data)), sink, 1):
            raise ProtoError("MetaGraphDef without a graph (truncated?)")
    elif kind == "tf-savedmodel-text":
        scan_savedmodel_text(data, sink)
    elif kind == "tf-graphdef-text":
        scan_graphdef_text(data, sink)
    elif kind == "tf-keras-metadata":
        scan_keras_metadata(data, sink)
    elif kind == "tf-bundle-index":
        bundle_entries(data)
    elif kind == "tf-fingerprint":
        if not _fingerprint(data):
            raise ProtoError("not a SavedModel fingerprint")
    elif kind == "tf-lite":
        scan_tflite(data, sink)
    else:
        raise ProtoError(f"unknown TensorFlow format {kind}")
    return kind


def _pickle_first(src: Source, sink: Sink, kind: str) -> None:
    """Run the bytes through the pickle machine when an unpickler would start on them
    (as for image signatures): imports met are kept; a complete pickle is a polyglot."""
    polyglot_pickle(
        src, sink, f"a complete pickle that is also a TensorFlow file ({kind}): a polyglot"
    )


# --- SavedModel and GraphDef --------------------------------------------------------------------


def scan_savedmodel(data: bytes, sink: Sink) -> None:
    metas = 0
    for num, value in _typed(data, (0, len(data)), {1: VARINT, 2: LEN}):
        if num == 1:
            if value != 1:
                raise ProtoError(f"SavedModel schema version {value} (TensorFlow writes 1)")
        elif num == 2:
            metas += 1
            _meta_graph(data, value, sink, metas)
        else:
            raise ProtoError(f"SavedModel has an unknown field {num}")
    if not metas:
        raise ProtoError("SavedModel without a MetaGraphDef")


def _meta_graph(data: bytes, span: tuple[int, int], sink: Sink, index: int) -> bool:
    """Check a MetaGraphDef; whether it holds a graph."""
    schema = {n: LEN for n in range(1, 8)}
    graphs = 0
    for num, value in _typed(data, span, schema):
        if num == 1:
            for n, v in _typed(data, value, {1: LEN, 2: LEN, 4: LEN, 5: LEN, 6: LEN}):
                if n == 2:  # stripped_op_list: declarations of the ops used (checked below)
                    validate(data, *v)
        elif num == 2:
            graphs += 1
            scan_graphdef(data, sink, f"meta graph {index}", value)
        elif num == 6:
            for n, v in _typed(data, value, {1: LEN, 2: LEN}):
                if n == 2:
                    _asset(_text(data, v), sink)
        elif num == 7:
            _object_graph(data, value, sink)
    return graphs > 0


def _asset(name: str, sink: Sink) -> None:
    norm = os.path.normpath(name.replace("\\", "/"))
    if os.path.isabs(norm) or norm == ".." or norm.startswith("../") or ":" in name[:3]:
        sink.add(
            RULE,
            Severity.HIGH,
            f"asset file {name!r} is outside the model's assets folder (read when loaded)",
            global_=name,
        )


def _object_graph(data: bytes, span: tuple[int, int], sink: Sink) -> None:
    # SavedObjectGraph.nodes[].user_object (4).metadata (3): Keras 2 configs (older TF)
    for num, wt, value in fields(data, *span):
        if num != 1 or wt != LEN:
            continue
        for n, w, v in fields(data, *value):
            if n != 4 or w != LEN:
                continue
            for n2, w2, v2 in fields(data, *v):
                if n2 == 3 and w2 == LEN and v2[1] > v2[0]:
                    _keras_json(data[v2[0] : v2[1]], sink)


def scan_graphdef(data: bytes, sink: Sink, where: str, span: tuple[int, int] | None = None) -> None:
    """Check the nodes of a GraphDef and of the functions in its library."""
    start, end = span if span is not None else (0, len(data))
    nodes: list[tuple[int, int]] = []
    functions: list[tuple[str, list[tuple[int, int]]]] = []
    versions = 0
    for num, value in _typed(data, (start, end), {1: LEN, 2: LEN, 3: VARINT, 4: LEN, 5: LEN}):
        versions += num == 4
        if num == 1:
            nodes.append(value)
        elif num == 2:
            for n, v in _typed(data, value, {1: LEN, 2: LEN, 3: LEN}):
                if n == 1:
                    functions.append(_function(data, v))
    if span is None and not (nodes and versions):
        # TensorFlow writes ``versions`` after the nodes: without it the file was cut
        raise ProtoError("GraphDef without nodes or without versions (truncated?)")
    total = len(nodes) + sum(len(body) for _, body in functions)
    if total > MAX_NODES:
        raise ScanLimit(f"graph with {total} nodes (more than {MAX_NODES}); not checked")
    graph = _Graph(data, sink, {name for name, _ in functions})
    for value in nodes:
        graph.node(value, where, None)
    for name, body in functions:
        for value in body:
            graph.node(value, f"function {name}", name)


def _function(data: bytes, span: tuple[int, int]) -> tuple[str, list[tuple[int, int]]]:
    """A FunctionDef's name (its signature's) and the spans of its nodes."""
    name = "?"
    nodes = []
    for num, value in _typed(data, span, {1: LEN, 3: LEN, 4: LEN, 5: LEN, 6: LEN}):
        if num == 1:
            for n, v in _typed(data, value, {1: LEN}):
                if n == 1:
                    name = _text(data, v)
        elif num == 3:
            nodes.append(value)
    return name, nodes


class _Graph:
    """The ops of one GraphDef: ``functions`` are the names its library defines (a node
    whose op is one of them calls that function)."""

    def __init__(self, data: bytes, sink: Sink, functions: set[str]) -> None:
        self.data, self.sink, self.functions = data, sink, functions
        #: ops whose check depends on nothing but their name, and found harmless
        self.harmless: set[bytes] = set()

    def node(self, span: tuple[int, int], where: str, function: str | None) -> None:
        data = self.data
        name: tuple[int, int] | None = None
        ops: list[bytes] = []
        attr_spans: list[tuple[int, int]] = []
        for num, wt, value in fields(data, *span):
            if num <= 5 and wt != LEN:
                raise ProtoError(f"NodeDef field {num} has wire type {wt}, expected {LEN}")
            if num == 1:
                name = value
            elif num == 2:
                ops.append(data[value[0] : value[1]])
            elif num == 5:
                attr_spans.append(value)
        for raw in ops:
            if raw in self.harmless:
                continue
            op = raw.decode("utf-8", "backslashreplace")
            if op in self.functions and op not in tf_ops():
                continue  # a call of a function of the library (checked on its own)
            if op in tf_ops() and op not in DANGEROUS_OPS and op not in _FILE_ATTRS:
                self.harmless.add(raw)
                continue
            attrs = self._attrs(attr_spans) if op in _FILE_ATTRS or op in DANGEROUS_OPS else {}
            label = _text(data, name) if name is not None else "?"
            _check_op(op, label, where, function, attrs, self.sink)

    def _attrs(self, spans: list[tuple[int, int]]) -> dict[str, str]:
        data = self.data
        attrs: dict[str, str] = {}
        for span in spans:
            key, val = "", None
            for n, v in _typed(data, span, {1: LEN, 2: LEN}):
                if n == 1:
                    key = _text(data, v)
                else:
                    val = v
            if val is not None and key in _STRING_ATTRS:
                attrs[key] = _attr_string(data, val)
        return attrs


def _check_op(
    op: str,
    node: str,
    where: str,
    function: str | None,
    attrs: dict[str, str],
    sink: Sink,
) -> None:
    danger = DANGEROUS_OPS.get(op)
    if danger is not None:
        if op in _SAVER_OPS and (
            _SAVER_FUNCTION.fullmatch(function or "")
            or (function is None and _SAVER_SCOPE.fullmatch(node))
        ):
            return  # the checkpoint saver TensorFlow writes into every SavedModel
        severity, what = danger
        detail = ""
        if op == "ImmutableConst" and "memory_region_name" in attrs:
            detail = f" {attrs['memory_region_name']!r}"
        sink.add(
            RULE,
            severity,
            f"{where}: node {node!r} runs {op}, which {what}{detail}",
            global_=op,
        )
        return
    if op in _FILE_ATTRS:
        attr, what = _FILE_ATTRS[op]
        value = attrs.get(attr, "")
        if value and not _HARMLESS_ATTR.fullmatch(value):
            sink.add(
                RULE,
                Severity.CRITICAL if op == "PrintV2" else Severity.HIGH,
                f"{where}: node {node!r} runs {op}, which {what} ({attr}={value!r})",
                global_=op,
            )
        return
    if op not in tf_ops():
        sink.add(
            "MLW-SCN-008",
            Severity.HIGH,
            f"{where}: node {node!r} uses op {op!r}, which TensorFlow {tf_version()} does not "
            "define: a custom op library (native code) must be loaded to run it, or the "
            "model needs a newer TensorFlow",
            global_=op,
        )


def _attr_string(data: bytes, span: tuple[int, int]) -> str:
    for n, w, v in fields(data, *span):
        if n == 2 and w == LEN:  # AttrValue.s
            return _text(data, v)
    return ""


# --- text-format protobufs (saved_model.pbtxt, GraphDef .pbtxt) ---------------------------------

#: TensorFlow reads ``saved_model.pbtxt`` when there is no ``saved_model.pb``
_TEXT_SAVEDMODEL = re.compile(
    rb"(?:\s|#[^\n]*\n)*(?:saved_model_schema_version|meta_graphs)\s*[:{<]"
)
_TEXT_GRAPHDEF = re.compile(rb"(?:\s|#[^\n]*\n)*node\s*:?\s*[{<]\s*(?:#[^\n]*\n\s*)*name\s*:")
_TEXT_TOKEN = re.compile(
    rb"""\s+|\#[^\n]*|"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|\[[A-Za-z0-9_./]+\]"""
    rb"""|[A-Za-z_][A-Za-z0-9_]*|[-+]?(?:[0-9.][0-9A-Za-z_.+\-]*|inf|nan)|[{}<>:;,\[\]]"""
)
_ESCAPE = re.compile(rb"\\(x[0-9A-Fa-f]{2}|[0-7]{1,3}|.?)", re.S)
_GOOD_ESCAPES = frozenset(bytes([c]) for c in b"abfnrtv\\'\"01234567x")
MAX_TEXT_TOKENS = 5_000_000  #: about 200 MB of memory while parsing
_TEXT_DEPTH = 64  #: message nesting the text parser follows (TensorFlow's own limit is 100)

TextMessage = list[tuple[str, Any]]


def parse_text_proto(data: bytes) -> TextMessage:
    """A protobuf in text format as ``[(field, value), ...]``: a value is a string (string
    literals unescaped and joined, other scalars as written) or a nested message."""
    tokens: list[bytes] = []
    pos = 0
    while pos < len(data):
        m = _TEXT_TOKEN.match(data, pos)
        if m is None:
            raise ProtoError(f"text protobuf: unexpected byte at offset {pos}")
        tok = m.group()
        if not tok[:1].isspace() and tok[:1] != b"#":
            tokens.append(tok)
            if len(tokens) > MAX_TEXT_TOKENS:
                raise ScanLimit(f"text protobuf with more than {MAX_TEXT_TOKENS} tokens")
        pos = m.end()
    msg, i = _text_message(tokens, 0, None, 0)
    if i != len(tokens):
        raise ProtoError("text protobuf: unbalanced braces")
    return msg


def _text_message(
    tokens: list[bytes], i: int, closer: bytes | None, depth: int
) -> tuple[TextMessage, int]:
    if depth > _TEXT_DEPTH:
        raise ProtoError(f"text protobuf nested deeper than {_TEXT_DEPTH} levels")
    out: TextMessage = []
    while True:
        if i >= len(tokens):
            if closer is None:
                return out, i
            raise ProtoError("text protobuf: a message is not closed (truncated?)")
        tok = tokens[i]
        if tok == closer:
            return out, i + 1
        if not (tok[:1].isalpha() or tok[:1] in (b"_", b"[")):
            raise ProtoError(f"text protobuf: expected a field name, got {tok[:40]!r}")
        name = tok.decode("ascii")
        i += 1
        colon = i < len(tokens) and tokens[i] == b":"
        i += colon
        if i >= len(tokens):
            raise ProtoError("text protobuf: a field has no value (truncated?)")
        if colon and tokens[i] == b"[":
            i += 1
            while i < len(tokens) and tokens[i] != b"]":
                value, i = _text_value(tokens, i, depth)
                out.append((name, value))
                if i < len(tokens) and tokens[i] == b",":
                    i += 1
            if i >= len(tokens):
                raise ProtoError("text protobuf: a list is not closed (truncated?)")
            i += 1
        elif colon or tokens[i] in (b"{", b"<"):
            value, i = _text_value(tokens, i, depth)
            out.append((name, value))
        else:
            raise ProtoError(f"text protobuf: field {name!r} has no value")
        if i < len(tokens) and tokens[i] in (b";", b","):
            i += 1


def _text_value(tokens: list[bytes], i: int, depth: int) -> tuple[Any, int]:
    tok = tokens[i]
    if tok in (b"{", b"<"):
        return _text_message(tokens, i + 1, b"}" if tok == b"{" else b">", depth + 1)
    if tok[:1] in (b'"', b"'"):
        parts = []
        while i < len(tokens) and tokens[i][:1] in (b'"', b"'"):  # adjacent literals join
            parts.append(_unescape(tokens[i][1:-1]))
            i += 1
        return b"".join(parts).decode("utf-8", "backslashreplace"), i
    if tok in (b"}", b">", b"]", b":", b"[", b",", b";"):
        raise ProtoError(f"text protobuf: unexpected {tok!r}")
    return tok.decode("ascii"), i + 1


def _unescape(raw: bytes) -> bytes:
    """C escapes as the protobuf text parser reads them (octal, hex, \\n...)."""
    if b"\\" not in raw:
        return raw
    if any(m.group(1)[:1] not in _GOOD_ESCAPES for m in _ESCAPE.finditer(raw)):
        raise ProtoError("text protobuf: invalid escape in a string")
    try:
        return codecs.escape_decode(raw)[0]  # type: ignore[attr-defined,no-any-return]
    except ValueError:
        raise ProtoError("text protobuf: invalid escape in a string") from None


def _fields_named(msg: TextMessage, name: str) -> list[Any]:
    return [v for k, v in msg if k == name]


def _text_str(msg: TextMessage, name: str) -> str:
    values = [v for v in _fields_named(msg, name) if isinstance(v, str)]
    return values[-1] if values else ""


def scan_savedmodel_text(data: bytes, sink: Sink) -> None:
    doc = parse_text_proto(data)
    metas = [m for m in _fields_named(doc, "meta_graphs") if isinstance(m, list)]
    if not metas:
        raise ProtoError("text SavedModel without meta_graphs")
    for k, meta in enumerate(metas, 1):
        for graph in _fields_named(meta, "graph_def"):
            if isinstance(graph, list):
                _text_graph(graph, sink, f"meta graph {k}")
        for asset in _fields_named(meta, "asset_file_def"):
            if isinstance(asset, list) and _text_str(asset, "filename"):
                _asset(_text_str(asset, "filename"), sink)


def scan_graphdef_text(data: bytes, sink: Sink) -> None:
    doc = parse_text_proto(data)
    if not any(isinstance(n, list) for n in _fields_named(doc, "node")):
        raise ProtoError("text GraphDef without nodes")
    if not _fields_named(doc, "versions"):  # written after the nodes: else the file was cut
        raise ProtoError("text GraphDef without versions (truncated?)")
    _text_graph(doc, sink, "graph")


def _text_graph(graph: TextMessage, sink: Sink, where: str) -> None:
    functions: list[tuple[str, list[Any]]] = []
    for lib in _fields_named(graph, "library"):
        for fn in _fields_named(lib, "function") if isinstance(lib, list) else []:
            if not isinstance(fn, list):
                continue
            sig = [s for s in _fields_named(fn, "signature") if isinstance(s, list)]
            name = _text_str(sig[-1], "name") if sig else "?"
            functions.append((name, _fields_named(fn, "node_def")))
    names = {n for n, _ in functions}

    def node(msg: Any, at: str, function: str | None) -> None:
        if not isinstance(msg, list):
            return
        attrs: dict[str, str] = {}
        for attr in _fields_named(msg, "attr"):
            if isinstance(attr, list) and _text_str(attr, "key") in _STRING_ATTRS:
                for value in _fields_named(attr, "value"):
                    if isinstance(value, list):
                        attrs[_text_str(attr, "key")] = _text_str(value, "s")
        for op in _fields_named(msg, "op"):
            if isinstance(op, str) and not (op in names and op not in tf_ops()):
                _check_op(op, _text_str(msg, "name") or "?", at, function, attrs, sink)

    for n in _fields_named(graph, "node"):
        node(n, where, None)
    for name, body in functions:
        for n in body:
            node(n, f"function {name}", name)


# --- Keras 2 SavedModel metadata ---------------------------------------------------------------


def scan_keras_metadata(data: bytes, sink: Sink) -> None:
    schema = {2: VARINT, 3: LEN, 4: LEN, 5: LEN, 6: LEN}
    nodes = 0
    for num, value in _typed(data, (0, len(data)), {1: LEN}):
        if num != 1:
            raise ProtoError(f"Keras metadata has an unknown field {num}")
        nodes += 1
        for n, v in _typed(data, value, schema):
            if n == 5 and v[1] > v[0]:
                _keras_json(data[v[0] : v[1]], sink)
    if not nodes:
        raise ProtoError("Keras metadata without nodes")


def _keras_json(raw: bytes, sink: Sink) -> None:
    from mlwarden.supplychain.keras_scan import check_keras_config

    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        sink.add("MLW-SCN-006", Severity.HIGH, "Keras SavedModel metadata is not valid JSON")
        return
    # layer metadata: {"class_name", "name", "config": {...}, "build_input_shape", ...}
    check_keras_config(doc, sink)


# --- tensor bundle index (LevelDB table) ---------------------------------------------------------


def bundle_entries(data: bytes) -> dict[str, Any]:
    """Parse a tensor-bundle index: the header and the (shard, offset, size) of tensors."""
    if len(data) < 48 or data[-8:] != SSTABLE_MAGIC:
        raise ProtoError("not a LevelDB table (no table magic at the end)")
    footer = len(data) - 48
    _, pos = _handle(data, footer, len(data) - 8)  # metaindex block
    index_off, index_size = _handle(data, pos, len(data) - 8)[0]
    out: dict[str, Any] = {"spans": []}
    first = True
    block_end = 0
    for _, value in _block(data, index_off, index_size, footer):
        (off, size), _ = _handle(value, 0, len(value))
        if off < block_end or off + size > index_off:
            # each data block once, in order, before the index: no block read twice
            raise ProtoError("table data blocks overlap or are out of order")
        block_end = off + size + 5
        for key, entry in _block(data, off, size, footer):
            if first:
                if key:
                    raise ProtoError("tensor-bundle index does not start with its header")
                head = dict(_typed(entry, (0, len(entry)), {1: VARINT, 2: VARINT, 3: LEN}))
                out["num_shards"] = head.get(1, 0)
                first = False
                continue
            schema = {1: VARINT, 2: LEN, 3: VARINT, 4: VARINT, 5: VARINT, 6: I32, 7: LEN}
            e = dict(_typed(entry, (0, len(entry)), schema))
            out["spans"].append((e.get(3, 0), e.get(4, 0), e.get(5, 0)))
    if first:
        raise ProtoError("tensor-bundle index without a header")
    return out


def _handle(data: bytes, pos: int, end: int) -> tuple[tuple[int, int], int]:
    off, pos = varint(data, pos, end)
    size, pos = varint(data, pos, end)
    return (off, size), pos


def _block(data: bytes, off: int, size: int, end: int) -> Iterator[tuple[bytes, bytes]]:
    """Entries of a table block (uncompressed; prefix-compressed keys)."""
    if off + size + 5 > end:
        raise ProtoError("table block extends past the data")
    if data[off + size] != 0:
        raise ProtoError("compressed table block (TensorFlow writes them uncompressed)")
    if size < 4:
        raise ProtoError("table block too small")
    (restarts,) = struct.unpack_from("<I", data, off + size - 4)
    limit = off + size - 4 - 4 * restarts
    if restarts < 1 or limit < off:
        raise ProtoError("table block restart array is invalid")
    pos, key = off, b""
    while pos < limit:
        shared, pos = varint(data, pos, limit)
        unshared, pos = varint(data, pos, limit)
        vlen, pos = varint(data, pos, limit)
        if shared > len(key) or unshared + vlen > limit - pos:
            raise ProtoError("table entry extends past its block")
        key = key[:shared] + data[pos : pos + unshared]
        pos += unshared
        yield key, data[pos : pos + vlen]
        pos += vlen


# --- TFLite flatbuffers ---------------------------------------------------------------------------


class _FileView:
    """Bytes of a seekable file read where they are asked for (a big TFLite model)."""

    BLOCK = 1 << 16

    def __init__(self, f: Any, size: int) -> None:
        self.f, self.size = f, size
        self.blocks: dict[int, bytes] = {}  #: recently read 64 KiB blocks

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, k: slice) -> bytes:
        start, stop = k.start or 0, min(k.stop, self.size)
        if stop <= start:
            return b""
        first, last = start // self.BLOCK, (stop - 1) // self.BLOCK
        if first == last:  # the tables and vectors the scan walks are small
            block = self.blocks.get(first)
            if block is None:
                if len(self.blocks) >= 64:
                    self.blocks.pop(next(iter(self.blocks)))
                self.f.seek(first * self.BLOCK)
                block = self.blocks[first] = bytes(self.f.read(self.BLOCK))
            at = start - first * self.BLOCK
            return block[at : at + stop - start]
        self.f.seek(start)
        return bytes(self.f.read(stop - start))


class _Flat:
    """Bounds-checked reads of a flatbuffer (bytes, or a :class:`_FileView`)."""

    def __init__(self, data: Any) -> None:
        self.data = data
        self.size = len(data)

    def get(self, pos: int, n: int) -> bytes:
        if not 0 <= pos <= self.size - n:
            raise ProtoError("flatbuffer offset outside the file")
        got = self.data[pos : pos + n]
        if len(got) != n:
            raise ProtoError("the file changed while it was read")
        return bytes(got)

    def u32(self, pos: int) -> int:
        return int.from_bytes(self.get(pos, 4), "little")

    def table(self, pos: int) -> tuple[int, int, int]:
        """(table position, vtable position, vtable size)."""
        vt = pos - int.from_bytes(self.get(pos, 4), "little", signed=True)
        vsize, tsize = struct.unpack("<HH", self.get(vt, 4))
        if vsize < 4 or vsize % 2 or vt + vsize > self.size or pos + tsize > self.size:
            raise ProtoError("flatbuffer vtable is invalid")
        return pos, vt, vsize

    def field(self, table: tuple[int, int, int], i: int) -> int | None:
        pos, vt, vsize = table
        if 4 + 2 * i + 2 > vsize:
            return None
        off = int.from_bytes(self.get(vt + 4 + 2 * i, 2), "little")
        return pos + off if off else None

    def ref(self, at: int) -> int:
        target = at + self.u32(at)
        if target >= self.size:
            raise ProtoError("flatbuffer reference outside the file")
        return target

    def vector(self, at: int) -> tuple[int, int]:
        start = self.ref(at)
        n = self.u32(start)
        return start + 4, n

    def string(self, at: int) -> bytes:
        start, n = self.vector(at)
        if n > self.size - start:
            raise ProtoError("flatbuffer string longer than the file")
        return self.get(start, n)


MAX_TFLITE_ENTRIES = 1 << 20  #: buffers or operator codes walked (models hold thousands)
TFLITE_CUSTOM = 32  #: BuiltinOperator.CUSTOM
#: custom operators TFLite's own BuiltinOpResolver registers (tensorflow/lite/core/kernels/
#: register.cc): no library beyond TFLite is loaded for them
TFLITE_SHIPPED_CUSTOM = frozenset(
    {"TFLite_Detection_PostProcess", "Mfcc", "AudioSpectrogram", "NumericVerify"}
)


def scan_tflite(data: Any, sink: Sink) -> None:
    """Operator codes of a TFLite model (``data``: bytes or a :class:`_FileView`)."""
    fb = _Flat(data)
    model = fb.table(fb.ref(0))
    _tflite_buffers(fb, model)
    at = fb.field(model, 1)  # operator_codes
    if at is None:
        raise ProtoError("TFLite model without operator codes")
    start, n = _table_vector(fb, at, "operator-code", "operator codes")
    for i in range(n):
        code = fb.table(fb.ref(start + 4 * i))
        builtin = None
        at = fb.field(code, 3)
        if at is not None:
            builtin = fb.u32(at)
        at = fb.field(code, 0)
        if builtin is None and at is not None:
            builtin = fb.get(at, 1)[0]
        custom = fb.field(code, 1)
        if custom is None:
            continue
        name = fb.string(custom).decode("utf-8", "backslashreplace")
        if name.startswith("Flex"):
            op = name[4:]
            _check_op(op, name, "tflite (Flex op, a TensorFlow kernel)", None, {}, sink)
            continue
        if name in TFLITE_SHIPPED_CUSTOM:
            continue
        if name or builtin == TFLITE_CUSTOM:
            sink.add(
                "MLW-SCN-008",
                Severity.HIGH,
                f"tflite: custom operator {name!r} (needs a native op library)",
                global_=name,
            )


def _table_vector(fb: _Flat, at: int, one: str, many: str) -> tuple[int, int]:
    """A vector of table offsets: its start and length, bounded by the file and the limit."""
    start, n = fb.vector(at)
    if n > (fb.size - start) // 4:
        raise ProtoError(f"TFLite {one} count larger than the file")
    if n > MAX_TFLITE_ENTRIES:
        raise ProtoError(f"TFLite model with {n} {many} (more than {MAX_TFLITE_ENTRIES})")
    return start, n


def _tflite_buffers(fb: _Flat, model: tuple[int, int, int]) -> None:
    """Every buffer (the weights) lies inside the file: a cut file is an error."""
    at = fb.field(model, 4)
    if at is None:
        return
    start, n = _table_vector(fb, at, "buffer", "buffers")
    for i in range(n):
        buf = fb.table(fb.ref(start + 4 * i))
        at = fb.field(buf, 0)
        if at is not None:
            vstart, size = fb.vector(at)
            if size > fb.size - vstart:
                raise ProtoError(f"TFLite buffer {i} extends past the end of the file")
        at = fb.field(buf, 1)  # offset and size of data stored after the flatbuffer
        if at is not None:
            off = int.from_bytes(fb.get(at, 8), "little")
            sat = fb.field(buf, 2)
            size = int.from_bytes(fb.get(sat, 8), "little") if sat is not None else 0
            if off > 1 and off + size > fb.size:
                raise ProtoError(f"TFLite buffer {i} extends past the end of the file")


__all__ = [
    "DANGEROUS_OPS",
    "ProtoError",
    "fields",
    "parse_text_proto",
    "scan_tf",
    "shard_kind",
    "tf_kind",
    "varint",
]
