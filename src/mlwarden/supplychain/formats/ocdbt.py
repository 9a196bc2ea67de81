"""Orbax / JAX checkpoints: TensorStore's OCDBT files (``manifest.ocdbt``, and the B+tree
and version-tree nodes in ``d/``), and zarr array metadata that decodes with pickle.

An Orbax checkpoint (``orbax-checkpoint``'s ``StandardCheckpointer``,
``CheckpointManager``) is a folder: JSON metadata (``_CHECKPOINT_METADATA``,
``_METADATA``, ``_sharding``, ``array_metadatas/``), an OCDBT database
(``manifest.ocdbt``, ``ocdbt.process_N/``, data files ``d/<hash>``) or, without OCDBT,
one zarr array per leaf (``.zarray`` / ``zarr.json`` beside its chunk files). Orbax
restores these as arrays and never unpickles or imports anything named in them.

OCDBT manifests and nodes open with a 4-byte big-endian magic (``0x0cdb3a2a`` manifest,
``0x0cdb20de`` node), the encoded length (u64, little-endian, header and checksum
included), a varint format version (0) and a compression byte (0 none, 1 zstd). Data
files may also hold array chunks verbatim before their nodes: those carry no header
and are credited by their place (a ``d/`` folder beside ``manifest.ocdbt``) by the
dispatcher, only when nothing in them parsed as anything else.

A zarr array whose ``filters`` or ``codecs`` include numcodecs' ``pickle`` codec (or an
object dtype decoded with it) unpickles every chunk when read: the chunk files are
scanned as pickles by the dispatcher, and the metadata is reported (MLW-SCN-030).

Example::

    recognise(bytes.fromhex("0cdb3a2a") + (113).to_bytes(8, "little") + b"\\x00\\x01", 113)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mlwarden.core.severity import Severity
from mlwarden.supplychain.formats.base import FormatScanner, Scan
from mlwarden.supplychain.results import Sink
from mlwarden.supplychain.stream import Source, Truncated

MAGICS = {b"\x0c\xdb\x3a\x2a": "manifest", b"\x0c\xdb\x20\xde": "node"}
HEADER = 14  #: magic, length, version 0 (one varint byte), compression
RULE = "MLW-SCN-030"


def recognise(head: bytes, size: int | None) -> bool:
    """An OCDBT manifest or node: magic, a length that fits the file, version 0, a known
    compression."""
    if len(head) < HEADER or head[:4] not in MAGICS:
        return False
    length = int.from_bytes(head[4:12], "little")
    fits = length >= HEADER + 4 and (size is None or length <= size)
    return fits and head[12] == 0 and head[13] in (0, 1)


def scan(src: Source, scan: Scan) -> str:
    """Check each record's header and that its encoded length lies inside the file; the
    payload (keys and array chunks) is data that Orbax restores as arrays. Bytes after
    the records that are not another record are an error: TensorStore never reads them,
    so they are not part of the checkpoint (and may hide anything)."""
    kind = ""
    while not src.at_eof():
        head = src.peek(HEADER)
        if not recognise(head, None):
            raise Truncated(
                f"{src.remaining() or 'some'} bytes at offset {src.pos} follow the OCDBT "
                "record(s) and are not one (TensorStore never reads them)"
            )
        kind = kind or MAGICS[head[:4]]
        length = int.from_bytes(head[4:12], "little")
        src.skip(length)  # Truncated when the file is shorter than declared
    return f"orbax-ocdbt-{kind}"


FORMAT = FormatScanner("ocdbt", recognise, scan)


def looks_like_zarr_array(doc: Any) -> bool:
    """zarr v2 ``.zarray`` or zarr v3 ``zarr.json`` array metadata."""
    if not isinstance(doc, dict):
        return False
    return (
        doc.get("zarr_format") == 2
        and "dtype" in doc
        and "chunks" in doc
        or (doc.get("zarr_format") == 3 and doc.get("node_type") == "array")
    )


def check_zarr_array(doc: dict[str, Any], sink: Sink) -> str:
    """Report an array whose chunks are decoded with pickle (numcodecs ``pickle``)."""
    codecs = [doc.get("compressor"), *(doc.get("filters") or []), *(doc.get("codecs") or [])]
    codecs.append(doc.get("object_codec"))
    for codec in codecs:
        name = ""
        if isinstance(codec, dict):
            name = str(codec.get("id") or codec.get("name") or "")
        if name.lower() in ("pickle", "numcodecs.pickle"):
            sink.add(
                RULE,
                Severity.HIGH,
                f"zarr array decodes its chunks with the {name!r} codec: reading it unpickles "
                "every chunk file (each is scanned as a pickle)",
                global_=name,
            )
    return "zarr-metadata"


#: zarr chunk keys: "0", "0.0", "1.2.3" (v2), "c.0.0" (v3 with "." separator)
_CHUNK = re.compile(r"(c\.)?\d{1,12}(\.\d{1,12}){0,31}|c")


def store_chunk_kind(path: Path) -> str | None:
    """``orbax-ocdbt-data`` for a file of an OCDBT ``d/`` folder beside
    ``manifest.ocdbt``; ``zarr-chunk`` for a chunk file of a zarr array (``.zarray`` in
    its folder, or above nested chunk keys; ``zarr.json`` above a ``c/`` folder); else
    None. By place only: the dispatcher credits such a file only when its bytes parsed
    as nothing else."""
    parent = path.parent
    if parent.name == "d" and (parent.parent / "manifest.ocdbt").is_file():
        return "orbax-ocdbt-data"
    if not _CHUNK.fullmatch(path.name):
        return None
    for folder in [parent, *parent.parents][:33]:
        if (folder / ".zarray").is_file() or (
            folder.name.startswith("c") and (folder.parent / "zarr.json").is_file()
        ):
            return "zarr-chunk"
        if path.name.startswith("c.") and (folder / "zarr.json").is_file():
            return "zarr-chunk"
        if not _CHUNK.fullmatch(folder.name):
            return None
    return None
