"""The table of file formats beyond the dispatcher's built-in ones, by content signature.

Each entry is a :class:`~mlwarden.supplychain.formats.base.FormatScanner` in its own
module (recognise by content, scan with limits, report findings). The dispatcher
(:mod:`mlwarden.supplychain.scanner`) asks :func:`recognise` for a stream's format
before its own generic rules (pickle probe, text) and runs the entry's ``scan``;
entries never import the dispatcher. Adding a format is one module and one row here.

Example::

    recognise(b"7z\\xbc\\xaf\\x27\\x1c...", None)   # "7z"
    TABLE["7z"].scan(src, scan)
"""

from __future__ import annotations

from typing import Any

from mlwarden.supplychain.formats import (
    coreml,
    executable,
    framed,
    hydra,
    mlmodel,
    msgpack,
    ocdbt,
    programs,
    rar,
    rserial,
    sevenzip,
    torch7,
    torchserve,
    weights,
    xmldoc,
)
from mlwarden.supplychain.formats.base import FormatScanner, NotScannable, Scan
from mlwarden.supplychain.results import Sink

#: checked in this order; each signature is specific enough that order rarely matters
ORDER: tuple[FormatScanner, ...] = (
    sevenzip.FORMAT,
    framed.ZSTD,
    framed.LZ4,
    rar.FORMAT,
    executable.FORMAT,
    rserial.FORMAT,
    torch7.FORMAT,
    xmldoc.FORMAT,
    msgpack.FORMAT,
    weights.MXNET_FORMAT,
    weights.PADDLE_FORMAT,
    weights.EXECUTORCH_FORMAT,
    weights.COREML_BLOB_FORMAT,
    programs.TENSORRT_FORMAT,
    programs.PDMODEL_FORMAT,
    coreml.FORMAT,
    ocdbt.FORMAT,
)
TABLE: dict[str, FormatScanner] = {f.name: f for f in ORDER}


def recognise(head: bytes, size: int | None) -> str | None:
    """The name of the table's format that claims a stream starting with ``head``."""
    for fmt in ORDER:
        if fmt.recognise(head, size):
            return fmt.name
    return None


def check_text(data: bytes, sink: Sink) -> str | None:
    """Checks of plain text by content (up to 1 MiB of it): Hydra/NeMo YAML configs and
    MLflow ``MLmodel`` files."""
    hydra_found = hydra.check_yaml(data, sink)
    return mlmodel.check_mlmodel(data, sink) or hydra_found


def check_json(doc: Any, sink: Sink) -> str | None:
    """Checks of a parsed JSON document by content: TorchServe manifests, zarr array
    metadata (Orbax checkpoints without OCDBT), Core ML package manifests."""
    if torchserve.looks_like_manifest(doc):
        return torchserve.check_manifest(doc, sink)
    if ocdbt.looks_like_zarr_array(doc):
        return ocdbt.check_zarr_array(doc, sink)
    if coreml.looks_like_package_manifest(doc):
        return coreml.check_package_manifest(doc, sink)
    return None


__all__ = [
    "ORDER",
    "TABLE",
    "check_json",
    "check_text",
    "FormatScanner",
    "NotScannable",
    "Scan",
    "recognise",
]
