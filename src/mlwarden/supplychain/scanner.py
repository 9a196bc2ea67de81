"""Scan model files without loading them: identify the format by content, dispatch.

Formats (identified by magic bytes and structure, never by file name): raw pickle
(protocols 0-5, several per stream), PyTorch zip checkpoints and TorchScript
archives (every member that is a pickle, whatever its name), ``torch.export``
``.pt2`` archives, legacy PyTorch (stacked pickles; tar), NumPy ``.npy``/``.npz``,
joblib (plain or zlib/gzip/bz2/xz/lzma compressed, with inline arrays), Keras HDF5
and ``.keras``, ONNX (with its external-data files), safetensors, GGUF (headers and chat
templates), TensorFlow SavedModels, GraphDefs and TFLite files, skops ``.skops``, the
formats of the :mod:`~mlwarden.supplychain.formats` table (7z, zstd, LZ4, RAR,
executables, R, Torch7, XML, Hydra/NeMo configs, TorchServe manifests, Flax MessagePack,
MXNet, PaddlePaddle, ExecuTorch, TensorRT, Core ML weight blobs), and
archives nested in one another, under :class:`Limits` that stop decompression bombs. JSON
documents are checked for Keras configs, skops schemas, Hugging Face ``auto_map`` custom
code and chat templates, text files for Jinja template injection; images, audio, tables,
XGBoost UBJSON and SentencePiece models are data. An HDF5 file behind a user block and a
zip appended to another file (polyglots) are found too.

Example::

    result = scan_file("model.pt")
    result.verdict            # Verdict.SAFE / SUSPICIOUS / UNSAFE / ERROR / UNKNOWN
    [i.to_dict() for i in result.findings]
"""

from __future__ import annotations

import errno
import io
import os
import stat
import struct
import sys
import tarfile
import tempfile
import time
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from mlwarden.core.severity import Severity
from mlwarden.supplychain import formats
from mlwarden.supplychain.formats.base import NotScannable
from mlwarden.supplychain.limits import DEFAULT_LIMITS, Limits, ScanLimit
from mlwarden.supplychain.limits import read_bounded as _read_bounded
from mlwarden.supplychain.pickle_vm import (
    _PLAUSIBLE_FIRST,
    PickleError,
    Seq,
    scan_pickle_stream,
)
from mlwarden.supplychain.policy import DEFAULT_POLICY, Policy
from mlwarden.supplychain.polyglot import limit_error as _limit_error
from mlwarden.supplychain.polyglot import polyglot_pickle
from mlwarden.supplychain.polyglot import stopped_at_limit as _stopped_at_limit
from mlwarden.supplychain.polyglot import unpickler_reads_number as _unpickler_reads_number
from mlwarden.supplychain.results import FileResult, ScanResult, Sink
from mlwarden.supplychain.secrets import TEXT_WINDOW, check_secrets
from mlwarden.supplychain.secrets import WINDOW as SECRETS_WINDOW
from mlwarden.supplychain.stream import Decompressed, Source, TooLarge, Truncated
from mlwarden.supplychain.tf_scan import scan_tf, shard_kind, tf_kind
from mlwarden.supplychain.torch_legacy import TORCH_MEMBERS, is_legacy_tar, scan_legacy_members
from mlwarden.supplychain.ziparchive import (
    EOCD,
    ZipFormatError,
    has_central_directory,
    open_member,
    read_entries,
)

TORCH_LEGACY_MAGIC = bytes.fromhex("80028a0a6cfc9c46f9206aa850192e")
_PRINTABLE = bytes([9, 10, 13, *range(0x20, 0x100)])
TEXT_OPS = 2  #: opcodes a text file may parse as before it counts as a damaged pickle
#: files up to this size are read in one call and scanned in memory: the same bytes then
#: feed format detection, the parsers and the embedded-executable search (one 1 MiB
#: window), with no buffered re-reads or ``pread`` of the file
SMALL_FILE = 1 << 20
MAX_TEMPLATE_TEXT = 1 << 20  #: longest text checked as a Jinja template (bytes)
DRAIN_CHUNKS = 8  #: MiB of a compressed file's content read past what the scan needed
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
NPY_MAGIC = b"\x93NUMPY"


class UnknownFormat(ScanLimit):
    """No rule recognises the file: verdict ``unknown`` (a ScanLimit, so that a zip or
    HDF5 file found behind the unknown bytes is still scanned)."""


class _NotAFile(Exception):
    """The path is a pipe, device, socket or directory, not a file to scan."""


class _Ctx:
    def __init__(self, sink: Sink, limits: Limits, path: Path) -> None:
        self.sink = sink
        self.limits = limits
        self.path = path
        self.budget = limits.max_total_bytes
        self.formats: list[str] = []
        self.in_memory = False  #: scanning bytes: no folder for ONNX external data
        self.top_kind = "unknown"  #: what the top-level stream was identified as
        self.nested_depth = 0
        self.whole: bytes | None = None  #: the top-level file, when one read held all of it
        sink.on_nested = self.scan_nested_bytes

    def scan_nested_bytes(self, src: Source, n: int, offset: int) -> None:
        """Scan ``n`` bytes of ``src`` (a pickle's bytes payload) as a file of their own."""
        if self.nested_depth >= self.limits.max_depth:
            raise ScanLimit(f"nested loaders deeper than {self.limits.max_depth} levels")
        outer = self.sink.member
        self.sink.member = f"{outer + '!' if outer else ''}bytes@{offset}"
        self.nested_depth += 1
        try:
            if n <= 64 << 20:
                data = src.read(n)
                _scan_stream(
                    io.BytesIO(data), n, self, self.nested_depth, name="nested", unpickled=True
                )
            else:
                with tempfile.TemporaryFile() as tmp:
                    left = n
                    while left:
                        chunk = src.read(min(left, 1 << 20))
                        tmp.write(chunk)
                        left -= len(chunk)
                    tmp.seek(0)
                    _scan_stream(tmp, n, self, self.nested_depth, name="nested", unpickled=True)
        finally:
            self.nested_depth -= 1
            self.sink.member = outer


# --- entry points -----------------------------------------------------------------------


def scan_file(
    path: str | Path, policy: Policy | None = None, limits: Limits | None = None
) -> FileResult:
    """Scan one file. Never raises for a bad file: problems become its verdict."""
    if not isinstance(path, Path):
        path = Path(path)
    result = FileResult(path=str(path))
    sink = Sink(result, policy or DEFAULT_POLICY)
    ctx = _Ctx(sink, limits or DEFAULT_LIMITS, path)
    start = time.perf_counter()
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below)
        fd = _open_regular(path)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                # a FIFO or socket holds no file and a device never ends: not model files
                raise _NotAFile(f"not a regular file ({_file_kind(info.st_mode)}); not scanned")
            size = info.st_size
            if size <= SMALL_FILE:
                # one read, then parsing in memory: no further system calls
                data = _read_exactly(fd, size)
                try:
                    result.format = _scan_top(io.BytesIO(data), len(data), ctx)
                finally:  # also for a file of no known format, or one that failed
                    _embedded(lambda o, n: data[o : o + n], size, result, ctx)
            else:
                try:
                    with open(fd, "rb", closefd=False) as f:
                        result.format = _scan_top(f, size, ctx)
                finally:
                    _embedded(lambda o, n: os.pread(fd, n, o), size, result, ctx)
        finally:
            os.close(fd)
    except UnknownFormat as exc:
        _unknown(result, sink, str(exc))
    except (Truncated, PickleError, ZipFormatError, TooLarge, ScanLimit, NotScannable) as exc:
        _error(result, sink, _describe(exc))
    except _NotAFile as exc:
        _error(result, sink, str(exc))
    except OSError as exc:
        _error(result, sink, f"cannot read the file ({exc.strerror or exc})")
    except Exception as exc:  # fail closed: anything unexpected is an error, never safe
        _error(result, sink, f"{type(exc).__name__}: {exc}")
    if result.format == "unknown":
        result.format = ctx.formats[0] if ctx.formats else ctx.top_kind
    result.seconds = time.perf_counter() - start
    return result


#: formats that are programs themselves, or search their own bytes for them
_PROGRAM_FORMATS = frozenset({"elf", "pe", "macho", "script", "llamafile", "tensorrt-engine"})


def _embedded(read: Any, size: int, result: FileResult, ctx: _Ctx) -> None:
    """Executables embedded anywhere in the file's first bytes (a bounded search)."""
    if result.format in _PROGRAM_FORMATS or any(i.rule == "MLW-SCN-020" for i in result.findings):
        return
    ctx.sink.member = None
    formats.executable.find_embedded(read, size, ctx.limits.max_exec_search, ctx.sink)


_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def _open_regular(path: Path) -> int:
    """A descriptor of ``path``; a socket (which cannot be opened) is named as such."""
    try:
        return os.open(path, os.O_RDONLY | _O_NONBLOCK | _O_CLOEXEC)
    except OSError:
        try:
            mode = os.stat(path).st_mode
        except OSError:
            mode = stat.S_IFREG
        if not stat.S_ISREG(mode):
            raise _NotAFile(f"not a regular file ({_file_kind(mode)}); not scanned") from None
        raise


def _read_exactly(fd: int, size: int) -> bytes:
    """Up to ``size`` bytes from ``fd`` (fewer only if the file shrank meanwhile)."""
    data = os.read(fd, size)
    if len(data) < size:
        parts = [data]
        got = len(data)
        while got < size:
            more = os.read(fd, size - got)
            if not more:
                break
            parts.append(more)
            got += len(more)
        data = b"".join(parts)
    return data


def _file_kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a plain file"


def scan_bytes(
    data: bytes, name: str = "<bytes>", policy: Policy | None = None, limits: Limits | None = None
) -> FileResult:
    """Scan an in-memory file (same rules as :func:`scan_file`)."""
    result = FileResult(path=name)
    sink = Sink(result, policy or DEFAULT_POLICY)
    ctx = _Ctx(sink, limits or Limits(), Path(name))
    ctx.in_memory = True
    start = time.perf_counter()
    try:
        result.format = _scan_top(io.BytesIO(data), len(data), ctx)
    except UnknownFormat as exc:
        _unknown(result, sink, str(exc))
    except (Truncated, PickleError, ZipFormatError, TooLarge, ScanLimit, NotScannable) as exc:
        _error(result, sink, _describe(exc))
    except Exception as exc:  # fail closed
        _error(result, sink, f"{type(exc).__name__}: {exc}")
    if result.format == "unknown":
        result.format = ctx.formats[0] if ctx.formats else ctx.top_kind
    result.seconds = time.perf_counter() - start
    return result


def _scan_top(f: IO[bytes], size: int, ctx: _Ctx) -> str:
    """Scan a whole file; a file that also ends in a zip archive is scanned as both.

    Loaders find a zip by its end record, so ``torch.load`` reads a shell script,
    pickle or image with a checkpoint appended (a polyglot) as that checkpoint.
    """
    failure: Exception | None = None
    fmt = "unknown"
    try:
        fmt = _scan_stream(f, size, ctx, depth=0, top=True)
    except (Truncated, PickleError, ZipFormatError, TooLarge, ScanLimit) as exc:
        failure = exc
    small = ctx.whole is not None and EOCD not in ctx.whole  # whole file already read
    if ctx.top_kind != "zip" and size > 22 and not small and has_central_directory(f, size):
        ctx.sink.add(
            "MLW-SCN-011",
            Severity.LOW,
            f"the file is also a zip archive (a {ctx.top_kind}/zip polyglot); both were scanned",
        )
        zip_fmt = _scan_zip(f, size, ctx, depth=0)
        return zip_fmt if failure is not None or fmt in ("text", "unknown") else fmt
    if ctx.top_kind != "hdf5" and size >= 520:
        behind = _hdf5_offset(f, size)
        if behind is not None:
            # the HDF5 library looks for its superblock at 0, 512, 1024, 2048...: h5py and
            # Keras open the file whatever its first bytes (a "user block") hold
            leading = "text or data" if fmt in ("text", "unknown", "data") else ctx.top_kind
            # high when an unpickler would run the part in front; a zip (a .keras file
            # holds HDF5 weights, which may land on such an offset) or data is low
            runs = ctx.top_kind in ("pickle", "pytorch-legacy") and fmt not in ("text", "data")
            ctx.sink.add(
                "MLW-SCN-011",
                Severity.HIGH if runs else Severity.LOW,
                f"an HDF5 file starts at byte {behind}, behind {leading} (a user block); "
                "both were scanned",
            )
            from mlwarden.supplychain.keras_scan import scan_h5

            f.seek(0)
            h5_fmt = scan_h5(f, ctx.sink)
            return h5_fmt if failure is not None or fmt in ("text", "unknown", "data") else fmt
    if failure is not None:
        raise failure
    return fmt


def _hdf5_offset(f: IO[bytes], size: int) -> int | None:
    """Where an HDF5 superblock sits after a user block (512, 1024, 2048... bytes), if any."""
    try:
        fd = f.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        fd = -1  # in memory
    at = 512
    while at + 8 <= size:
        if fd >= 0:
            found = os.pread(fd, 8, at)  # no buffer refill, no seek
        else:
            f.seek(at)
            found = f.read(8)
        if found == HDF5_MAGIC:
            return at
        at *= 2
    return None


def scan_paths(
    paths: Iterable[str | Path],
    policy: Policy | None = None,
    *,
    allow: Iterable[str] = (),
    limits: Limits | None = None,
    executor: str | None = None,
    allow_unknown: bool = False,
) -> ScanResult:
    """Scan files and directories (recursively, in name order).

    ``allow_unknown``: files of no known format (verdict ``unknown``) do not fail the
    scan's exit status; they stay listed.

    ``executor`` (``local``, ``process[=N]``, ``ray[=ADDR]``) spreads the files over
    :func:`mlwarden.core.executor.get_executor` workers; results keep file order.
    """
    allow = list(allow)
    if allow:
        base = policy or DEFAULT_POLICY
        policy = Policy(allow=[*base.allow, *allow], deny=list(base.deny))
    pol = policy or DEFAULT_POLICY
    out = ScanResult(policy=pol, allow_unknown=allow_unknown)
    from mlwarden.core.executor import get_executor, parse_spec

    parse_spec(executor)  # a bad spec is an error even when one file needs no workers
    files = expand_paths(paths)
    jobs = [(p, pol, limits) for p in files]
    if executor in (None, "local") or len(files) < 2:
        if sys.stderr.isatty():  # a progress bar (rich) only where one can show
            from mlwarden.core.console import track

            out.files = [_scan_job(j) for j in track(jobs, "scanning", total=len(jobs))]
        else:
            out.files = [_scan_job(j) for j in jobs]
    else:
        with get_executor(executor) as ex:
            out.files = ex.map(_scan_job, jobs)
    _credit_external_data(out.files)
    _credit_store_chunks(out.files)
    return out


#: findings raw weights may produce when parsed as a pickle: opcode anomalies, the parse
#: failure, container notes (never an import or a call)
_DATA_NOISE = frozenset({"MLW-SCN-003", "MLW-SCN-004", "MLW-SCN-011", "MLW-SCN-026"})


def _credit_external_data(files: list[FileResult]) -> None:
    """Raw tensor files that a scanned ONNX model names as its external data are data.

    ONNX models over 2 GB keep their weights in such files: bytes with no format of
    their own, which the runtime reads as raw tensors. Scanned alone they are
    unrecognised (an error, or a failed pickle parse when the first weight byte happens
    to be an opcode); named by a model scanned in the same run, they are its weights.
    Files with an import or call finding (what an unpickler would run) are not credited.
    """
    named = {
        p: "openvino-weights" if f.format == "openvino-ir" else "onnx-external-data"
        for f in files
        for p in f.external_data
    }
    if not named:
        return
    for k, f in enumerate(files):
        if not _raw_weights_failure(f):
            continue
        try:
            real = str(Path(f.path).resolve())
        except (OSError, RuntimeError):
            continue
        if real in named:
            files[k] = FileResult(path=f.path, format=named[real], seconds=f.seconds)


def _credit_store_chunks(files: list[FileResult]) -> None:
    """Verbatim array chunks of Orbax/TensorStore checkpoints (OCDBT data files, zarr
    chunks) are data, like ONNX external data: credited by their place
    (:func:`formats.ocdbt.store_chunk_kind`) only when their scan found nothing but what
    raw weights produce (a chunk that parses as a pickle with imports keeps its verdict)."""
    for k, f in enumerate(files):
        if _raw_weights_failure(f) or _compressed_data_failure(f):
            kind = formats.ocdbt.store_chunk_kind(Path(f.path))
            if kind is not None:
                files[k] = FileResult(path=f.path, format=kind, seconds=f.seconds)


#: compressions TensorStore's codecs write chunks with (zarr: zstd, gzip, zlib, bz2, lz4)
_CHUNK_COMPRESSIONS = frozenset({"zstd", "gzip", "zlib", "bz2", "xz", "lzma", "lz4"})


def _compressed_data_failure(f: FileResult) -> bool:
    """A compressed stream whose content failed as a pickle with noise findings only: a
    compressed array chunk read as ``joblib.load`` would read it (never a limit stop)."""
    if f.format not in _CHUNK_COMPRESSIONS or f.error is None or f.error.startswith("scan limit"):
        return False
    return all(
        i.rule in _DATA_NOISE and (i.rule != "MLW-SCN-011" or i.severity < Severity.HIGH)
        for i in f.findings
    )


def _raw_weights_failure(f: FileResult) -> bool:
    """A failed scan that raw weights produce: an unrecognised format, or a pickle parse
    that fails where an unpickler fails too, with noise findings only. Never a stop at one
    of the scanner's own limits (an unpickler would read on: nothing after it was seen),
    never another format's failure, never a disguised pickle (high container note)."""
    if not f.unknown and (f.error is None or f.format not in ("pickle", "unknown")):
        return False
    if f.error is not None and f.error.startswith("scan limit"):
        return False
    return all(
        i.rule in _DATA_NOISE and (i.rule != "MLW-SCN-011" or i.severity < Severity.HIGH)
        for i in f.findings
    )


def _scan_job(job: tuple[Path, Policy, Limits | None]) -> FileResult:
    """One file of :func:`scan_paths` (module level, so process/Ray workers can run it)."""
    path, pol, limits = job
    problem = _unscannable(path)
    if problem is not None:
        res = FileResult(path=str(path))
        _error(res, Sink(res, pol), problem)
        return res
    return scan_file(path, pol, limits)


def _unscannable(path: Path) -> str | None:
    """Why ``path`` (a name or folder :func:`expand_paths` listed) has no file to scan."""
    try:
        info = os.stat(path)
    except OSError as exc:
        if os.path.islink(path):
            if exc.errno == errno.ELOOP:
                return "symbolic link loop (the link never reaches a file); not scanned"
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            return f"dangling symbolic link (its target {target!r} does not exist); not scanned"
        if exc.errno == errno.ENOENT:
            return "no such file or directory"
        return f"cannot read the file ({exc.strerror or exc})"
    if not stat.S_ISDIR(info.st_mode):
        return None
    if os.path.islink(path):
        return (
            f"symbolic link to a folder outside the scanned folder ({os.path.realpath(path)!r}); "
            "not followed, so its files were not scanned (scan that folder directly)"
        )
    try:
        with os.scandir(path):
            pass
    except OSError as exc:
        return f"cannot list the folder ({exc.strerror or exc}); its files were not scanned"
    return "a folder that could not be listed while scanning; its files were not scanned"


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files named and the files under folders named (recursively, in name order).

    What cannot be walked stays in the list so that its scan reports why, instead of
    vanishing from a folder's verdict: a folder that cannot be listed, and a link to a
    folder outside the one scanned (links are not followed; a link to a folder inside
    it adds nothing, and a link loop ends there).
    """
    files: list[Path] = []
    for raw in paths:
        p = Path(raw)
        try:
            is_dir = p.is_dir()
        except OSError:  # a name too long, say: its scan reports the reason
            is_dir = False
        if not is_dir:
            files.append(p)
            continue
        top = os.path.realpath(p)

        def unlistable(exc: OSError, fallback: Path = p) -> None:
            files.append(Path(exc.filename) if exc.filename else fallback)

        for root, dirs, names in os.walk(p, onerror=unlistable, followlinks=False):
            dirs.sort()
            listed = list(names)
            for d in dirs:
                full = os.path.join(root, d)
                if os.path.islink(full) and not _inside(os.path.realpath(full), top):
                    listed.append(d)
            files.extend(Path(root) / n for n in sorted(listed))
    return files


def _inside(real: str, top: str) -> bool:
    return real == top or real.startswith(top.rstrip(os.sep) + os.sep)


def _error(result: FileResult, sink: Sink, message: str) -> None:
    result.error = message
    sink.member = None
    sink.add("MLW-SCN-004", Severity.HIGH, f"could not be scanned: {message}")


def _unknown(result: FileResult, sink: Sink, message: str) -> None:
    result.unknown = True
    sink.member = None
    sink.add("MLW-SCN-026", Severity.MEDIUM, f"{message}; nothing in it was checked")


def _describe(exc: Exception) -> str:
    kind = {
        Truncated: "truncated or corrupt",
        PickleError: "malformed pickle",
        ZipFormatError: "malformed zip archive",
        TooLarge: "scan limit",
        ScanLimit: "scan limit",
        NotScannable: "not scannable",
    }.get(type(exc), type(exc).__name__)
    return f"{kind}: {exc}"


# --- format identification ----------------------------------------------------------------


#: Signatures of common data files (images, audio, documents, columnar tables). They hold
#: no code for any model loader; a file that carries one is still run through the pickle
#: machine when its first byte is an opcode, since a pickle may wear an image's header.
MEDIA_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "png"),
    (b"\xff\xd8\xff", 0, "jpeg"),
    (b"GIF87a", 0, "gif"),
    (b"GIF89a", 0, "gif"),
    (b"II*\x00", 0, "tiff"),
    (b"MM\x00*", 0, "tiff"),
    (b"WEBP", 8, "webp"),
    (b"WAVE", 8, "wav"),
    (b"%PDF-", 0, "pdf"),
    (b"PAR1", 0, "parquet"),
    (b"ARROW1", 0, "arrow"),
    (b"fLaC", 0, "flac"),
    (b"OggS", 0, "ogg"),
)


#: first bytes of the signatures above (``RIFF`` for those at offset 8, ``BM`` for BMP)
_MEDIA_FIRST = frozenset([m[0] for m, at, _ in MEDIA_SIGNATURES if at == 0] + [*b"RB"])


def _media_kind(head: bytes) -> str | None:
    if head[0] not in _MEDIA_FIRST:
        return None
    for magic, at, name in MEDIA_SIGNATURES:
        if head[at : at + len(magic)] == magic:
            if at == 8 and head[:4] != b"RIFF":
                continue
            return name
    if head[:2] == b"BM" and len(head) >= 14:
        # BMP: the declared file size and pixel offset are little-endian and sane
        declared, offset = struct.unpack("<I", head[2:6])[0], struct.unpack("<I", head[10:14])[0]
        if 14 <= offset < declared:
            return "bmp"
    return None


def sniff(head: bytes, size: int | None) -> str:
    """The format of a stream from its first bytes (at least 512 when available)."""
    if not head:
        return "empty"
    media = _media_kind(head)
    if media is not None:
        return "media:" + media
    if head.startswith(TORCH_LEGACY_MAGIC):
        return "torch-legacy"
    if head[:4] == b"GGUF" and len(head) >= 8:
        return "gguf"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
        return "zip"
    if head.startswith(NPY_MAGIC):
        return "npy"
    if head.startswith(HDF5_MAGIC):
        return "hdf5"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"BZh") and head[3:4].isdigit():
        return "bz2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if (
        head[:1] == b"\x5d"
        and head[1:5] in (b"\x00\x00\x80\x00", b"\x00\x00\x01\x00")
        or (head[:3] == b"\x5d\x00\x00" and len(head) >= 13)
    ):
        return "lzma"
    if head[:1] == b"\x78" and len(head) > 1 and (head[0] * 256 + head[1]) % 31 == 0:
        return "zlib"
    if len(head) > 262 and head[257:262] == b"ustar" or _is_v7_tar(head):
        return "tar"
    if _is_safetensors(head, size):
        return "safetensors"
    if head[:1] == b"\x80" and len(head) > 1 and 0 < head[1] <= 5:
        return "pickle"
    listed = formats.recognise(head, size)
    if listed is not None:
        return "fmt:" + listed
    tf = tf_kind(head, size)  # before ONNX: a SavedModel starts like one
    if tf is not None:
        return tf
    if _is_onnx(head):
        return "onnx"
    if head[0] in _PLAUSIBLE_FIRST:
        return "pickle?"
    if _is_text(head):
        return "text"
    data = _data_kind(head)
    if data is not None:
        return "media:" + data
    return "unknown"


#: XGBoost's UBJSON model (``save_model("m.ubj")``, and its default for other names): an
#: object whose first key is ``learner``, its length written as UBJSON int64, int8 or uint8.
XGBOOST_UBJ = (b"{L\x00\x00\x00\x00\x00\x00\x00\x07learner", b"{i\x07learner", b"{U\x07learner")


def _data_kind(head: bytes) -> str | None:
    """Binary data formats of ML libraries that carry no code for any loader.

    Consulted only for bytes no other rule claims. Neither first byte (``{``, ``\\n``) is
    a pickle opcode, so no unpickler runs a single instruction of these files.
    """
    if head.startswith(XGBOOST_UBJ):
        return "xgboost-ubj"
    if _is_sentencepiece(head):
        return "sentencepiece"
    return None


def _varint(buf: bytes, pos: int) -> tuple[int, int] | None:
    value = shift = 0
    while pos < len(buf) and shift < 64:
        b = buf[pos]
        value |= (b & 0x7F) << shift
        pos += 1
        if not b & 0x80:
            return value, pos
        shift += 7
    return None


def _is_sentencepiece(head: bytes) -> bool:
    """A SentencePiece ``ModelProto`` (``tokenizer.model``, ``spiece.model``), by structure.

    The file opens with its vocabulary: repeated field 1 messages, each a piece (field 1,
    UTF-8 text), an optional score (field 2, float) and an optional type (field 3, 1-6).
    At least two whole pieces must parse, or the whole file; other fields of ModelProto
    (trainer/normalizer specs, 2-5) may follow the pieces.
    """
    pos = pieces = 0
    while pos < len(head):
        tag = head[pos]
        if tag != 0x0A:
            return pieces >= 1 and tag in (0x12, 0x1A, 0x22, 0x2A)
        got = _varint(head, pos + 1)
        if got is None:
            break
        length, start = got
        end = start + length
        if end > len(head):
            break  # cut by the window
        if not _is_piece(head[start:end]):
            return False
        pieces += 1
        pos = end
    return pieces >= 2 or (pieces >= 1 and pos == len(head))


def _is_piece(msg: bytes) -> bool:
    if msg[:1] != b"\x0a":
        return False
    pos = 0
    while pos < len(msg):
        tag = msg[pos]
        if tag == 0x0A:  # piece
            got = _varint(msg, pos + 1)
            if got is None or got[0] == 0 or got[1] + got[0] > len(msg):
                return False
            try:
                msg[got[1] : got[1] + got[0]].decode("utf-8")
            except UnicodeDecodeError:
                return False
            pos = got[1] + got[0]
        elif tag == 0x15:  # score: fixed 32-bit float
            pos += 5
        elif tag == 0x18:  # type: NORMAL, UNKNOWN, CONTROL, USER_DEFINED, BYTE, UNUSED
            got = _varint(msg, pos + 1)
            if got is None or not 1 <= got[0] <= 6:
                return False
            pos = got[1]
        else:
            return False
    return pos == len(msg)


def _is_v7_tar(head: bytes) -> bool:
    """A tar header without the ustar marker (the pre-POSIX format), which ``tarfile`` and
    so ``torch.load`` read too: its checksum field matches the header's byte sum."""
    if len(head) < 512 or not head[0]:
        return False
    try:
        want = int(head[148:156].split(b"\0", 1)[0].strip() or b"x", 8)
    except ValueError:
        return False
    unsigned = 256 + sum(head[:148]) + sum(head[156:512])  # the field counts as 8 blanks
    signed = 256 + sum(struct.unpack("148b", head[:148]) + struct.unpack("356b", head[156:512]))
    return want in (unsigned, signed)


def _is_safetensors(head: bytes, size: int | None) -> bool:
    if len(head) < 10:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return head[8:9] == b"{" and n >= 2 and (size is None or n + 8 <= size)


def _is_onnx(head: bytes) -> bool:
    # ModelProto starts with ir_version (field 1, varint), then a string or message field
    if len(head) < 4 or head[0] != 0x08 or not 1 <= head[1] <= 20:
        return False
    tag = head[2]
    return tag in (0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72, 0xA2)


def _is_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # the 512-byte window may cut a multi-byte character at its very end
        if len(head) < 512 or exc.start < len(head) - 3:
            return False
    return not head.translate(None, _PRINTABLE)


# --- dispatch -------------------------------------------------------------------------


def _scan_stream(
    f: IO[bytes],
    size: int | None,
    ctx: _Ctx,
    depth: int,
    top: bool = False,
    name: str = "",
    unpickled: bool = False,
) -> str:
    """Scan one stream (a file or an archive member); returns its format name.

    ``unpickled``: a loader hands this stream to an unpickler from its first byte (the
    content of a compressed top-level file for ``joblib.load``, bytes a pickle passes to
    ``torch.load``), as for a top-level file: a failed pickle parse is then an error,
    never data or text, and other formats are also read as the pickle they may be.
    """
    unpickled = unpickled or top
    if depth > ctx.limits.max_depth:
        ctx.sink.add(
            "MLW-SCN-010",
            Severity.HIGH,
            f"archives nested deeper than {ctx.limits.max_depth} levels; not scanned further",
        )
        return "nested"
    src = Source(f, size)
    head = src.peek(512)
    kind = sniff(head, size)
    if kind in _SECRET_KINDS or kind.startswith("tf-"):
        # what the first read already holds (up to 64 KiB): no extra reading; archives and
        # compressed streams are searched member by member, media and arrays not at all
        check_secrets(src.buf[src.i : src.i + SECRETS_WINDOW], ctx.sink, src.pos)
    if top and kind in ("unknown", "pickle?", "pickle") and not ctx.in_memory:
        kind = shard_kind(ctx.path, size) or kind  # raw tensors its bundle index describes
    if top:
        ctx.top_kind = {"pickle?": "pickle", "torch-legacy": "pytorch-legacy"}.get(
            kind, kind.removeprefix("fmt:")
        )
        if size is not None and len(src.buf) >= size:
            ctx.whole = src.buf
    if kind == "empty":
        if top:
            raise ScanLimit("empty file: nothing to scan") from None
        return "empty"
    if kind == "pickle":
        return _scan_raw_pickle(src, ctx)
    if kind.startswith("fmt:"):
        return _scan_listed(formats.TABLE[kind[4:]], src, size, ctx, depth, unpickled)
    if kind.startswith("media:"):
        return _scan_media(src, ctx, kind.partition(":")[2])
    if kind == "pickle?":
        # a few bytes that start with an opcode are a cut-off pickle unless they are text
        # that no unpickler accepts (``torch\n`` in a requirements file)
        text = _is_text(head)
        peeked = src.peek(MAX_TEMPLATE_TEXT) if text else b""
        fmt = _probe_pickle(src, ctx, text=text, short=len(head) < 16, top=unpickled)
        return _text_template(peeked, ctx) if fmt == "text" and text else fmt
    if kind == "torch-legacy":
        scan_pickle_stream(src, ctx.sink, count=5)
        return "pytorch-legacy"
    if kind == "npy":
        return _scan_npy(src, ctx)
    if kind in ("gzip", "bz2", "xz", "lzma", "zlib"):
        if kind == "bz2" and unpickled:  # ``B`` is BINBYTES: an unpickler starts on it
            with _seekable(src, size, ctx) as (g, gsize):
                g.seek(0)
                polyglot_pickle(
                    Source(g, gsize),
                    ctx.sink,
                    "a complete pickle wearing a bz2 signature (a bz2/pickle polyglot)",
                )
                g.seek(0)
                return _scan_compressed(Source(g, gsize), kind, ctx, depth, name, unpickled)
        return _scan_compressed(src, kind, ctx, depth, name, unpickled)
    if kind == "zip":
        with _seekable(src, size, ctx) as (g, gsize):
            return _scan_zip(g, gsize, ctx, depth)
    if kind == "tar":
        return _scan_tar(src, size, ctx, depth, unpickled)
    if kind == "gguf":
        return _scan_gguf(src, size, ctx)
    if kind == "safetensors":
        from mlwarden.supplychain.safetensors_scan import scan_safetensors

        scan_safetensors(src, ctx.sink)
        return "safetensors"
    if kind == "hdf5":
        from mlwarden.supplychain.keras_scan import scan_h5

        with _seekable(src, size, ctx) as (g, _):
            return scan_h5(g, ctx.sink)
    if kind.startswith("tf-"):
        return scan_tf(kind, src, ctx.sink, max(ctx.limits.max_json, 1 << 30))
    if kind == "onnx":
        from mlwarden.supplychain.onnx_scan import scan_onnx

        base = ctx.path.parent if top and not ctx.in_memory else None
        if size is not None and size > ctx.limits.max_json:
            _scan_big_onnx(src, size, ctx, base)
            return "onnx"
        data = _read_bounded(src, ctx.limits.max_json, "ONNX model")
        scan_onnx(data, ctx.sink, base)
        return "onnx"
    if kind == "text":
        if head.lstrip()[:1] in (b"{", b"["):
            return _scan_json(src, ctx, name)
        return _scan_text(src, ctx)
    if top:
        raise UnknownFormat("unrecognised file format (not a model format this scanner knows)")
    return "data"


class _FormatScan:
    """What a format module of :mod:`mlwarden.supplychain.formats` may use of this scan."""

    def __init__(self, ctx: _Ctx, depth: int, unpickled: bool = False) -> None:
        self.ctx, self.depth = ctx, depth
        self.unpickled = unpickled  #: a loader unpickles what nested() is handed
        self.sink = ctx.sink
        self.limits = ctx.limits
        self.path = ctx.path if depth == 0 and not ctx.in_memory else None

    def nested(self, f: IO[bytes], size: int | None, name: str) -> str:
        outer = self.sink.member
        if name:
            self.sink.member = name if outer is None else f"{outer}!{name}"
        try:
            return _scan_stream(
                f, size, self.ctx, self.depth + 1, name=name, unpickled=self.unpickled
            )
        finally:
            self.sink.member = outer

    def charge(self, n: int) -> None:
        self.ctx.budget -= n
        if self.ctx.budget < 0:
            raise ScanLimit("archive expands beyond the decompressed-bytes budget")

    def budget(self) -> int:
        return self.ctx.budget


#: compressed frames ``joblib.load`` decompresses and unpickles (lz4; zstd alike)
_UNPICKLED_FRAMES = frozenset({"lz4", "zstd"})


def _scan_listed(
    fmt: formats.FormatScanner,
    src: Source,
    size: int | None,
    ctx: _Ctx,
    depth: int,
    unpickled: bool = False,
) -> str:
    """A format of the table; one whose first byte an unpickler would run is probed as a
    pickle first (a polyglot), as GGUF and media files are. The content of compressed
    frames a loader unpickles is scanned as strictly as a top-level pickle."""
    scan = _FormatScan(ctx, depth, unpickled and fmt.name in _UNPICKLED_FRAMES)
    first = src.peek(1)
    if not fmt.seekable and first[0] not in _PLAUSIBLE_FIRST:
        return fmt.scan(src, scan)
    with _seekable(src, size, ctx) as (g, gsize):
        g.seek(0)
        polyglot_pickle(
            Source(g, gsize),
            ctx.sink,
            f"a complete pickle wearing a {fmt.name} signature (a {fmt.name}/pickle polyglot)",
        )
        g.seek(0)
        return fmt.scan(Source(g, gsize), scan)


#: formats whose first bytes hold strings a secret may sit in (pickle constants, headers,
#: metadata, configs); searched for secrets (MLW-SCN-027)
_SECRET_KINDS = frozenset(
    {"text", "pickle", "pickle?", "torch-legacy", "safetensors", "gguf", "onnx", "fmt:xml"}
)


def _scan_raw_pickle(src: Source, ctx: _Ctx) -> str:
    before = ctx.sink.joblib_arrays
    scan_pickle_stream(src, ctx.sink)
    return "joblib" if ctx.sink.joblib_arrays > before else "pickle"


def _probe_pickle(src: Source, ctx: _Ctx, *, text: bool, top: bool, short: bool = False) -> str:
    """Data whose first byte is a protocol 0/1 opcode: a pickle if it parses as one.

    Protocol 0 pickles are printable text, so text that hits an opcode no pickle
    could hold is text (its imports of real names are kept even then: the
    unpickler runs everything before the point where it fails). Text that runs
    more than ``TEXT_OPS`` opcodes before failing is a damaged pickle: an error,
    never safe. (Within two opcodes no call can have happened: a call needs an
    import, its arguments and REDUCE.) Text under 16 bytes counts as text only when
    the unpickler would reject it outright; one that merely ends early is a cut-off
    pickle (an error).
    """
    mark = ctx.sink.checkpoint()
    try:
        return _scan_raw_pickle(src, ctx)
    except (PickleError, Truncated) as exc:
        if _stopped_at_limit(exc) or _unpickler_reads_number(src, exc):
            raise _limit_error(exc) from None
        rejected = not short or isinstance(exc, PickleError)
        if (text and rejected and getattr(exc, "ops", 0) <= TEXT_OPS) or not top:
            ctx.sink.rollback(mark, keep_rules=("MLW-SCN-001", "MLW-SCN-002"))
            return "text" if text else "data"
        raise


def _scan_media(src: Source, ctx: _Ctx, name: str) -> str:
    """An image, audio, document or table file, by its signature.

    When the signature's first byte is also a pickle opcode (GIF's ``G``, BMP's ``B``,
    PNG's ``0x89``...), the bytes are run through the pickle machine: an unpickler
    given this file executes exactly those opcodes until it fails. Any import seen
    on the way is kept as a finding; without one, nothing could have run, and the
    file is the data its signature says.
    """
    fmt = polyglot_pickle(
        src, ctx.sink, f"a complete pickle wearing a {name} signature (an image/pickle polyglot)"
    )
    return fmt if fmt is not None else name


def _scan_gguf(src: Source, size: int | None, ctx: _Ctx) -> str:
    """A GGUF file; first run through the pickle machine, since ``G`` is an opcode too
    (an unpickler given this file would execute it): a complete pickle wearing GGUF's
    magic is a polyglot, and any import met on the way is kept, as for media files."""
    from mlwarden.supplychain.gguf_scan import scan_gguf

    with _seekable(src, size, ctx) as (g, gsize):
        g.seek(0)
        polyglot_pickle(
            Source(g, gsize),
            ctx.sink,
            "a complete pickle wearing a GGUF signature (a GGUF/pickle polyglot)",
        )
        g.seek(0)
        return scan_gguf(Source(g, gsize), ctx.sink)


def _scan_big_onnx(src: Source, size: int, ctx: _Ctx, base: Path | None) -> None:
    """An ONNX model over ``max_json``: its protobuf walked in a memory map, payloads
    skipped (protobuf caps a model at 2 GiB; weights beyond live in external data)."""
    import mmap

    from mlwarden.supplychain.onnx_scan import scan_onnx_wire

    if size >= 2 << 30:
        raise ScanLimit("ONNX model of 2 GiB or more (protobuf cannot hold it)")
    with _seekable(src, size, ctx) as (g, gsize):
        try:
            fileno = g.fileno()
        except (AttributeError, OSError, io.UnsupportedOperation):
            g.seek(0)
            scan_onnx_wire(g.read(gsize), ctx.sink, base)  # a stored archive member
            return
        with mmap.mmap(fileno, 0, access=mmap.ACCESS_READ) as mm:
            scan_onnx_wire(mm, ctx.sink, base)


# --- pickles inside other formats ---------------------------------------------------------


def _scan_npy(src: Source, ctx: _Ctx) -> str:
    """``.npy``: a header dict, then the array; when the dtype holds Python objects the
    array is a pickle (``np.load(allow_pickle=True)`` unpickles it).

    The header is read as ``np.load`` reads it (numpy's own header parser: ``ast.literal_eval``,
    the Python 2 header filter, ``descr_to_dtype``), and object-ness is the dtype's own
    ``hasobject``, so every spelling numpy accepts (``'object'``, ``'|O'``, fields,
    subarrays) counts. Building a dtype from a literal never unpickles anything.
    """
    src.read(6)
    version = (src.read(1)[0], src.read(1)[0])
    if version not in ((1, 0), (2, 0), (3, 0)):
        raise Truncated(f"unknown .npy format version {version[0]}.{version[1]}")
    short = version == (1, 0)
    (hlen,) = struct.unpack("<H" if short else "<I", src.read(2 if short else 4))
    if hlen > 1 << 20:
        raise Truncated(f".npy header of {hlen} bytes")
    dtype, count = _npy_header(src.read(hlen), version)
    if dtype.hasobject:
        ctx.sink.add(
            "MLW-SCN-011",
            Severity.INFO,
            ".npy object array: its data is a pickle (loads only with allow_pickle=True)",
        )
        scan_pickle_stream(src, ctx.sink)
        return "npy-object"
    if src.seekable:  # checks the file holds the array; in a compressed member, reading
        src.skip(count * dtype.itemsize)  # it would decompress data no loader unpickles
    return "npy"


def _npy_header(raw: bytes, version: tuple[int, int]) -> tuple[Any, int]:
    """(dtype, element count) of a ``.npy`` header, read by numpy's own header reader."""
    import numpy as np

    try:
        from numpy.lib._format_impl import (  # type: ignore[attr-defined]  # numpy >= 2
            _read_array_header,
        )
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.lib.format import _read_array_header  # type: ignore[attr-defined,no-redef]
    length = struct.pack("<H" if version == (1, 0) else "<I", len(raw))
    try:
        shape, _, dtype = _read_array_header(io.BytesIO(length + raw), version, 1 << 64)
        count = 1
        for d in shape:
            count *= int(d)
    except (ValueError, SyntaxError, KeyError, TypeError, MemoryError, RecursionError) as exc:
        raise Truncated(f".npy header that numpy refuses ({str(exc)[:120]})") from None
    if not isinstance(dtype, np.dtype):
        raise Truncated(".npy header without a dtype")
    return dtype, count


def _scan_compressed(
    src: Source, kind: str, ctx: _Ctx, depth: int, name: str, unpickled: bool
) -> str:
    """A compressed stream, every concatenated stream of it (as CPython's readers read
    them). A top-level one is what ``joblib.load`` decompresses and unpickles, so its
    content is scanned as strictly as a top-level pickle; bytes after the first zlib or
    gzip stream make joblib's reader loop forever (a denial of service)."""
    stream = Decompressed(_SourceFile(src), kind, ctx.budget)  # type: ignore[arg-type]
    buffered = io.BufferedReader(stream, 1 << 20)  # type: ignore[arg-type]
    inner = _scan_stream(
        buffered,  # type: ignore[arg-type]
        None,
        ctx,
        depth + 1,
        name=name,
        unpickled=unpickled,
    )
    # to the end of the first stream, if joblib's read-ahead reaches it: do other bytes
    # follow it? (a longer stream is not drained: no loader reads that far, and a bomb of
    # zeros after the pickle would cost the scan minutes)
    for _ in range(DRAIN_CHUNKS):
        if stream.trailing or not buffered.read(1 << 20):
            break
    if unpickled and stream.trailing and kind in ("zlib", "gzip"):
        ctx.sink.add(
            "MLW-SCN-010",
            Severity.HIGH,
            f"bytes follow the end of the first {kind} stream: joblib.load never returns on "
            f"this file (its {kind} reader loops at the end of a stream); "
            f"{stream.streams} stream(s) scanned",
        )
    ctx.budget -= stream.produced
    return f"{inner}+{kind}" if inner not in ("joblib",) else f"joblib+{kind}"


class _SourceFile:
    """A Source viewed as a plain readable file (for decompressors)."""

    def __init__(self, src: Source) -> None:
        self.src = src

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            n = 1 << 20
        got = self.src.peek(n)
        self.src.skip(len(got))
        return got


class _seekable:
    """A seekable view of a stream: the file itself, or a spooled temporary copy."""

    def __init__(self, src: Source, size: int | None, ctx: _Ctx) -> None:
        self.src, self.size, self.ctx = src, size, ctx
        self.tmp: IO[bytes] | None = None

    def __enter__(self) -> tuple[IO[bytes], int]:
        f = self.src.f
        if self.size is not None and self.src.seekable and self.src.pos == 0:
            return f, self.size
        tmp = tempfile.TemporaryFile()
        self.tmp = tmp
        total = 0
        while True:
            chunk = self.src.peek(1 << 20)
            if not chunk:
                break
            self.src.skip(len(chunk))
            total += len(chunk)
            if total > self.ctx.limits.max_spool:
                raise ScanLimit(f"nested archive larger than {self.ctx.limits.max_spool} bytes")
            tmp.write(chunk)
        tmp.seek(0)
        return tmp, total

    def __exit__(self, *exc: object) -> None:
        if self.tmp is not None:
            self.tmp.close()


# --- zip: PyTorch, TorchScript, .pt2, npz, .keras ---------------------------------------------


class _Crc:
    """Pass reads through, keeping the CRC-32 and count of the bytes seen."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.crc = 0
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.crc = zlib.crc32(data, self.crc)
        self.count += len(data)
        return data

    def seekable(self) -> bool:
        return False


def _zip_kind(names: list[str]) -> str:
    base = {n.rsplit("/", 1)[-1] for n in names}
    if any("/code/" in n or n.startswith("code/") for n in names) and "constants.pkl" in base:
        return "torchscript"
    if "archive_format" in base or any(n.endswith("models/model.json") for n in names):
        return "torch-export"
    if "data.pkl" in base:
        return "pytorch-zip"
    if "config.json" in base and ("metadata.json" in base or "model.weights.h5" in base):
        return "keras"
    files = [n for n in names if not n.endswith("/")]
    if "schema.json" in files and all(
        n == "schema.json" or n.endswith((".npy", ".npz", ".bin")) for n in files
    ):
        return "skops"
    if files and all(n.endswith(".npy") for n in files):
        return "npz"
    return "zip"


def _scan_zip(f: IO[bytes], size: int, ctx: _Ctx, depth: int) -> str:
    sink = ctx.sink
    if depth == 0:  # a few KB of overlapping or nested members must not cost minutes
        cap = max(ctx.limits.archive_floor, int(size * ctx.limits.archive_ratio))
        ctx.budget = min(ctx.budget, cap)
    entries, notes = read_entries(f, size)
    outer_member = sink.member
    for note in notes:
        bomb = "overlapping" in note
        # a member that extracts outside its folder (zip slip) overwrites files: high
        high = bomb or "(zip slip)" in note
        sink.add(
            "MLW-SCN-010" if bomb else "MLW-SCN-011", Severity.HIGH if high else Severity.LOW, note
        )
    kind = _zip_kind([e.name for e in entries])
    was_ts = sink.torchscript
    if kind == "torchscript":
        sink.torchscript = True
    storages: set[str] = set()

    def note_pid(pid: Any) -> None:
        if isinstance(pid, Seq) and len(pid.items) >= 3 and isinstance(pid.items[2], str):
            storages.add(pid.items[2])
        elif isinstance(pid, str):
            storages.add(pid)

    # bit 1 of an LZMA member says its stream ends with an end marker (zipfile writes it)
    odd_flags = [e.name for e in entries if e.flags & ~(0x080A if e.method == 14 else 0x0808)]
    if odd_flags:
        sink.add(
            "MLW-SCN-011",
            Severity.LOW,
            f"flag bits that loaders ignore (e.g. encryption) are set on {len(odd_flags)} "
            f"member(s), first {odd_flags[0]!r}",
        )
    files = [e for e in entries if not e.is_dir]
    pickles_first = sorted(files, key=lambda e: 0 if e.name.lower().endswith(".pkl") else 1)
    for e in pickles_first:
        label = e.name if outer_member is None else f"{outer_member}!{e.name}"
        sink.member = label
        parent, _, leaf = e.name.rpartition("/")
        # torch finds records case-blind (miniz), so ``DATA.PKL`` is its data.pkl; a .pkl
        # member is a pickle whatever another pickle calls it (a decoy naming the real
        # data.pkl as a storage must not hide it)
        is_pickle = e.name.lower().endswith(".pkl")
        if (
            not is_pickle
            and leaf in storages
            and parent.rsplit("/", 1)[-1] in ("data", "constants")
        ):
            continue  # a tensor's raw bytes, referenced by a pickle: never parsed
        # an .npy member is read up to its header (object arrays: their pickle, within the
        # budget): a big, compressible array written by np.savez_compressed is no bomb
        if e.method in (8, 12) and e.usize > ctx.limits.ratio_floor and leaf[-4:] != ".npy":
            ratio = e.usize / max(e.csize, 1)
            if ratio > ctx.limits.max_ratio:
                sink.add(
                    "MLW-SCN-010",
                    Severity.HIGH,
                    f"member expands {ratio:.0f}x to {e.usize} bytes (decompression bomb); "
                    "not scanned",
                )
                continue
        stream, msize = open_member(f, e, ctx.budget)
        if is_pickle:
            checked = _Crc(stream)
            src = Source(checked, msize)  # type: ignore[arg-type]
            src.peek(1)
            check_secrets(src.buf[src.i : src.i + SECRETS_WINDOW], sink)
            scan_pickle_stream(src, sink, on_persistent=note_pid)
            if src.at_eof() and checked.count == e.usize and checked.crc != e.crc:
                sink.add(
                    "MLW-SCN-011",
                    Severity.LOW,
                    f"CRC-32 of the member is {checked.crc:08x}, the archive records "
                    f"{e.crc:08x} (torch.load ignores this; zipfile-based scanners refuse)",
                )
            continue
        if msize is not None and msize == 0:
            continue
        fmt = _scan_stream(stream, msize, ctx, depth + 1, name=e.name)
        if e.flags & 1 and fmt in ("data", "unknown"):
            # loaders (miniz) ignore the flag and read the member as it is; bytes that are
            # no format at all are what real encryption leaves: ciphertext, unchecked
            raise NotScannable(
                f"zip member {e.name!r} is encrypted: its contents cannot be checked without "
                "the password"
            )
        if isinstance(stream, Decompressed):
            ctx.budget -= stream.produced
            if ctx.budget <= 0:
                raise ScanLimit("archive expands beyond the decompressed-bytes budget")
        if fmt not in ("data", "text", "empty", "json"):
            ctx.formats.append(fmt)
    sink.member = outer_member
    sink.torchscript = was_ts
    return kind


def _secrets_beyond_window(data: bytes, ctx: _Ctx) -> None:
    """Secrets in a text or JSON document past the first read's window (which the
    dispatcher searched), up to ``TEXT_WINDOW``: the bytes are in memory already."""
    if len(data) > SECRETS_WINDOW:
        check_secrets(data[SECRETS_WINDOW:], ctx.sink, SECRETS_WINDOW, TEXT_WINDOW)


def _scan_text(src: Source, ctx: _Ctx) -> str:
    return _text_template(src.peek(MAX_TEMPLATE_TEXT + 1), ctx)


def _text_template(data: bytes, ctx: _Ctx) -> str:
    """Plain text; one holding Jinja markers (``chat_template.jinja`` beside a Hugging Face
    model) is checked as a chat template when it parses as one."""
    found = formats.check_text(data[:MAX_TEMPLATE_TEXT], ctx.sink) or "text"
    _secrets_beyond_window(data[:MAX_TEMPLATE_TEXT], ctx)
    if len(data) > MAX_TEMPLATE_TEXT or (b"{%" not in data and b"{{" not in data):
        return found
    from mlwarden.supplychain.gguf_scan import check_chat_template

    text = data.decode("utf-8", "replace")
    check_chat_template(text, "Jinja template", ctx.sink, known=False)
    return found


def _scan_json(src: Source, ctx: _Ctx, name: str) -> str:
    import json

    data = _read_bounded(src, ctx.limits.max_json, "JSON document")
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return _text_template(data, ctx)  # not JSON: text starting with a brace
    _secrets_beyond_window(data, ctx)
    from mlwarden.supplychain.hf_scan import check_hf_config, looks_like_hf_config
    from mlwarden.supplychain.keras_scan import check_keras_config, looks_like_keras
    from mlwarden.supplychain.skops_scan import check_skops_schema, looks_like_skops

    if looks_like_skops(doc):
        check_skops_schema(doc, ctx.sink, ctx.sink.policy)
        return "skops-schema"
    if looks_like_keras(doc):
        check_keras_config(doc, ctx.sink)
        return "keras-config"
    if looks_like_hf_config(doc):
        check_hf_config(doc, ctx.sink)
    if isinstance(doc, dict) and "chat_template" in doc:
        _check_json_templates(doc["chat_template"], ctx.sink)
    return formats.check_json(doc, ctx.sink) or "json"


def _check_json_templates(value: Any, sink: Sink) -> None:
    """``chat_template`` of a ``tokenizer_config.json``: a string, or a list of
    ``{"name", "template"}`` (transformers renders them sandboxed; other tools copy them
    into GGUF files, whose loaders may not)."""
    from mlwarden.supplychain.gguf_scan import check_chat_template

    entries = [("chat_template", value)] if isinstance(value, str) else []
    if isinstance(value, list):
        for item in value[:64]:
            if isinstance(item, dict) and isinstance(item.get("template"), str):
                entries.append((f"chat_template.{item.get('name')}", item["template"]))
    for where, text in entries:
        if len(text) <= MAX_TEMPLATE_TEXT:
            check_chat_template(text, where, sink)


# --- tar: legacy PyTorch and plain archives ---------------------------------------------


def _scan_tar(src: Source, size: int | None, ctx: _Ctx, depth: int, unpickled: bool) -> str:
    """A tar archive: a legacy PyTorch checkpoint when it names ``storages`` (read as
    ``torch.load`` reads it), every other regular member as a file of its own. A stream
    an unpickler reads from its first byte (``pickle.load``, ``joblib.load``,
    ``numpy.load``, torch's fallback when tarfile refuses the file) is also run through
    the pickle machine: a tar header's name field can hold a whole pickle."""
    outer = ctx.sink.member
    kind = "tar"
    with _seekable(src, size, ctx) as (g, gsize):
        if unpickled:
            g.seek(0)
            polyglot_pickle(
                Source(g, gsize),
                ctx.sink,
                "a complete pickle in a tar header (a tar/pickle polyglot: pickle.load, "
                "joblib.load and numpy.load run it)",
            )
        g.seek(0)
        try:
            with tarfile.open(fileobj=g, mode="r:") as tf:
                legacy = is_legacy_tar(tf)
                if legacy:
                    kind = "pytorch-legacy-tar"
                    scan_legacy_members(tf, ctx.sink)
                read_by_torch = {id(tf.getmember(n)) for n in TORCH_MEMBERS if n in tf.getnames()}
                for m in tf.getmembers():
                    if legacy and id(m) in read_by_torch:
                        continue
                    _scan_tar_member(tf, m, ctx, depth, outer)
        except tarfile.TarError as exc:
            raise Truncated(f"tar archive unreadable ({exc})") from None
    ctx.sink.member = outer
    return kind


def _scan_tar_member(
    tf: tarfile.TarFile, m: tarfile.TarInfo, ctx: _Ctx, depth: int, outer: str | None
) -> None:
    if not m.isfile():
        if m.issym() or m.islnk():
            ctx.sink.add(
                "MLW-SCN-011", Severity.LOW, f"tar member {m.name!r} is a link to {m.linkname!r}"
            )
        return
    ctx.sink.member = m.name if outer is None else f"{outer}!{m.name}"
    stream = tf.extractfile(m)
    if stream is None:
        return
    if m.name in ("sys_info",):
        scan_pickle_stream(Source(stream, None), ctx.sink)  # type: ignore[arg-type]
    else:
        _scan_stream(stream, m.size, ctx, depth + 1, name=m.name)  # type: ignore[arg-type]
