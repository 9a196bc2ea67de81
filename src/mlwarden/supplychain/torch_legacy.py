"""Legacy PyTorch tar checkpoints (``torch.save`` before 0.4): read as ``torch.load`` reads them.

``torch.load(weights_only=False)`` opens such a file with :mod:`tarfile` and reads three
members by name, in this order (``torch/serialization.py``, ``legacy_load``):

- ``storages`` (extracted to a temporary folder): a pickled count; per storage a pickled
  ``(key, location, storage_type)``, an int64 element count and the raw elements; then
  a pickled list of storage views;
- ``tensors`` (extracted): a pickled count; per tensor a pickled ``(key, storage_id,
  type)``, an int32 ``ndim``, 4 skipped bytes, ``ndim`` int64 sizes and strides and an
  int64 offset;
- ``pickle`` (``extractfile``): the object pickle.

``tarfile`` picks the last member of a name and follows hard links to the member they
name; a symbolic link is created on disk by ``extract`` and opened there, so torch then
reads a file of the loading machine. Every pickle is scanned at the offset torch reads
it from; a structure torch would read differently is an error, never skipped.
"""

from __future__ import annotations

import os
import struct
import tarfile
from typing import IO

from mlwarden.core.severity import Severity
from mlwarden.supplychain.pickle_vm import (
    Global,
    PickleError,
    PickleMachine,
    Seq,
    scan_pickle_stream,
)
from mlwarden.supplychain.results import Sink
from mlwarden.supplychain.stream import Source

#: the members ``torch.load`` reads, in its order
TORCH_MEMBERS = ("storages", "tensors", "pickle")

#: bytes per element of the legacy storage classes (``FloatStorage._dtype`` ...)
STORAGE_ELEM = {
    "Double": 8,
    "Float": 4,
    "Half": 2,
    "BFloat16": 2,
    "Long": 8,
    "Int": 4,
    "Short": 2,
    "Char": 1,
    "Byte": 1,
    "Bool": 1,
    "ComplexFloat": 8,
    "ComplexDouble": 16,
}


def is_legacy_tar(tf: tarfile.TarFile) -> bool:
    """Whether ``torch.load`` would read this tar as a legacy checkpoint (it names
    ``storages``, the first member torch extracts)."""
    return "storages" in tf.getnames()


def scan_legacy_members(tf: tarfile.TarFile, sink: Sink) -> None:
    """Scan ``storages``, ``tensors`` and ``pickle`` as ``torch.load`` reads them.

    Example::

        with tarfile.open("old.pt") as tf:
            scan_legacy_members(tf, sink)
    """
    outer = sink.member
    extracted: dict[str, tarfile.TarInfo] = {}
    readers = {"storages": _scan_storages, "tensors": _scan_tensors, "pickle": _scan_pickle}
    for name in TORCH_MEMBERS:
        stream = _member_stream(tf, name, extracted, sink)
        if stream is None:
            continue
        sink.member = name if outer is None else f"{outer}!{name}"
        readers[name](Source(stream, None), sink)  # type: ignore[arg-type]
    sink.member = outer


def _member_stream(
    tf: tarfile.TarFile, name: str, extracted: dict[str, tarfile.TarInfo], sink: Sink
) -> IO[bytes] | None:
    """What torch reads as member ``name``: the last member of that name, links followed
    as ``tar.extract`` (``storages``, ``tensors``) or ``tar.extractfile`` (``pickle``) do."""
    try:
        member = tf.getmember(name)
    except KeyError:
        return None
    if member.issym():
        sink.add(
            "MLW-SCN-011",
            Severity.HIGH,
            f"legacy checkpoint member {name!r} is a symbolic link to {member.linkname!r}: "
            "torch.load extracts it and reads whatever file that names on the loading "
            "machine (not in the archive, not scanned)",
        )
        return None
    target = member
    if member.islnk():
        sink.add(
            "MLW-SCN-011",
            Severity.LOW,
            f"tar member {name!r} is a hard link to {member.linkname!r} (torch reads the target)",
        )
        # extract() links to a file it extracted before (``storages`` for ``tensors``)
        done = extracted.get(os.path.normpath(member.linkname))
        if done is not None and name != "pickle":
            target = done
    if name != "pickle":
        extracted[name] = target
    try:
        return tf.extractfile(target)
    except KeyError:  # a hard link to a member the archive lacks: torch fails here
        return None


def _count(src: Source, sink: Sink, what: str) -> int:
    count = PickleMachine(src, sink).run()
    if not isinstance(count, int) or count < 0:
        raise PickleError(f"legacy {what!r} member does not start with a count")
    return count


def _scan_storages(src: Source, sink: Sink) -> None:
    for _ in range(_count(src, sink, "storages")):
        args = PickleMachine(src, sink).run()
        elem = None
        if isinstance(args, Seq) and len(args.items) >= 3 and isinstance(args.items[2], Global):
            elem = STORAGE_ELEM.get(args.items[2].name.removesuffix("Storage"))
        if elem is None:
            raise PickleError("legacy storage record without a known storage type")
        (n,) = struct.unpack("<q", src.read(8))
        if n < 0:
            raise PickleError("legacy storage with a negative size")
        src.skip(n * elem)
    if not src.at_eof():  # the storage views (torch fails on a member that ends here)
        PickleMachine(src, sink).run()


def _scan_tensors(src: Source, sink: Sink) -> None:
    for _ in range(_count(src, sink, "tensors")):
        PickleMachine(src, sink).run()
        (ndim,) = struct.unpack("<i", src.read(4))
        if ndim < 0:
            raise PickleError("legacy tensor record with a negative ndim")
        src.skip(4 + 16 * ndim + 8)


def _scan_pickle(src: Source, sink: Sink) -> None:
    scan_pickle_stream(src, sink)
