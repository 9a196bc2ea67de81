"""Parser differentials (issue 20): files the scanner once called safe that real loaders run.

Each case builds the file, proves in a fresh process that the real loader runs its canary
(``os.mkdir`` of a marker folder), and asserts the scan is never ``safe`` (and ``unsafe``
where the payload is in bytes the scanner now reads as the loader does). All loads go
through one child process (see ``canary.py``): imports cost seconds.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import struct
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from canary import mkdir_payload, run_loaders

from mlwarden.supplychain import scan_file, scan_paths

joblib = pytest.importorskip("joblib")
torch = pytest.importorskip("torch")


def _u(text: bytes) -> bytes:
    return b"X" + struct.pack("<I", len(text)) + text


def npy_object(marker: Path, descr: object = "object") -> bytes:
    """Case 1: a .npy header whose descr spells an object dtype without a leading ``O``."""
    header = repr({"descr": descr, "fortran_order": False, "shape": (1,)}).encode()
    header += b" " * ((-(10 + len(header) + 1)) % 64) + b"\n"
    head = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header
    return head + mkdir_payload(marker) + b"."


def npz_object(marker: Path) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("x.npy", npy_object(marker))
    return out.getvalue()


def npz_lzma_member(marker: Path) -> bytes:
    """An object array in an LZMA-compressed npz member (zipfile, so numpy, reads it)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_LZMA) as z:
        z.writestr("x.npy", npy_object(marker))
    return out.getvalue()


def ustar_polyglot(marker: Path) -> bytes:
    """Case 2: a valid ustar archive whose first member name is a whole pickle."""
    name = (mkdir_payload(marker) + b".").decode()
    assert len(name) < 100, "marker path too long for a ustar name field"
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        info = tarfile.TarInfo(name)
        info.size = 4
        tf.addfile(info, io.BytesIO(b"data"))
    return out.getvalue()


def _wrapper_state(count: int, align: bytes) -> bytes:
    return (
        b"}("
        + _u(b"subclass")
        + b"cnumpy\nndarray\n"
        + _u(b"shape")
        + b"K"
        + bytes([count])
        + b"\x85"
        + _u(b"order")
        + _u(b"C")
        + _u(b"dtype")
        + b"cnumpy\ndtype\n"
        + _u(b"u1")
        + b"\x85R"
        + _u(b"allow_mmap")
        + b"\x89"
        + (_u(b"numpy_array_alignment_bytes") + align if align else b"")
        + b"ub"
    )


def joblib_unaligned(marker: Path) -> bytes:
    """Case 3: a wrapper with ``numpy_array_alignment_bytes=None`` (joblib reads no padding
    byte); the array's first byte, read as a padding length, hides the next 10 opcodes."""
    memo = _u(b"os") + b"q\x01" + _u(b"mkdir") + b"q\x02" + _u(str(marker).encode()) + b"q\x03000"
    hidden = b"h\x01h\x02\x93h\x03\x85R0"  # os.mkdir(marker) from the memo, result popped
    wrapper = b"cjoblib.numpy_pickle\nNumpyArrayWrapper\n)\x81" + _wrapper_state(4, b"N")
    return b"\x80\x02" + memo + wrapper + bytes([len(hidden) - 1, 0, 0, 0]) + hidden + b"."


def joblib_reconstructed_wrapper(marker: Path) -> bytes:
    """A wrapper made by ``copyreg._reconstructor``: joblib reads the array bytes after its
    BUILD too, here a BINBYTES opcode that would swallow the payload for a scanner."""
    payload = mkdir_payload(marker) + b"0"
    array = b"B" + struct.pack("<I", len(payload))
    maker = b"ccopyreg\n_reconstructor\n(cjoblib.numpy_pickle\nNumpyArrayWrapper\ncbuiltins\nobject\nNtR"
    return b"\x80\x02" + maker + _wrapper_state(len(array), b"") + array + payload + b"."


def joblib_dtype_elsize(marker: Path) -> bytes:
    """A wrapper whose ``<f8`` dtype state claims 4-byte elements: numpy ignores that (8
    bytes each), so joblib skips 16 array bytes where a reader trusting the state skips 8
    and meets a BINBYTES that would swallow the payload."""
    payload = mkdir_payload(marker) + b"0"
    dtype = (
        b"cnumpy\ndtype\n"
        + _u(b"f8")
        + b"\x89\x88\x87R(K\x03"
        + _u(b"<")
        + b"NNNJ\x04\x00\x00\x00J\xff\xff\xff\xffK\x00tb"
    )
    state = _wrapper_state(2, b"").replace(b"cnumpy\ndtype\n" + _u(b"u1") + b"\x85R", dtype)
    array = b"\x00" * 8 + b"B" + struct.pack("<I", 3 + len(payload)) + b"\x00" * 3
    wrapper = b"cjoblib.numpy_pickle\nNumpyArrayWrapper\n)\x81" + state
    return b"\x80\x02" + wrapper + array + payload + b"."


def lz4_two_frames(marker: Path) -> bytes:
    """Case 4 for joblib's lz4 compressor: the payload in the second frame."""
    frame = pytest.importorskip("lz4.frame")
    return frame.compress(b"(S'harmless") + frame.compress(b"'\n1" + mkdir_payload(marker) + b".")


def multistream(kind: str) -> Callable[[Path], bytes]:
    """Case 4: the pickle split over two concatenated compressed streams (joblib reads both)."""
    compress: dict[str, Callable[[bytes], bytes]] = {
        "bz2": bz2.compress,
        "xz": lzma.compress,
        "lzma": lambda d: lzma.compress(d, format=lzma.FORMAT_ALONE),
    }

    def build(marker: Path) -> bytes:
        # protocol 0 (the first byte is only "maybe a pickle"); the first stream alone is a
        # string cut short, the whole payload is in the second
        first, second = b"(S'harmless", b"'\n1" + mkdir_payload(marker) + b"."
        return compress[kind](first) + compress[kind](second)

    return build


def torch_zip_decoy(marker: Path) -> bytes:
    """Case 5: ``data/a.pkl`` names ``data.pkl`` as a storage; torch loads ``data/data.pkl``."""
    decoy = b"\x80\x02(" + _u(b"storage") + _u(b"x") + _u(b"data.pkl") + b"tQ."
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("data/a.pkl", decoy)
        z.writestr("data/data.pkl", b"\x80\x02" + mkdir_payload(marker) + b".")
        z.writestr("data/version", b"3\n")
    return out.getvalue()


def nul_int_pickle(marker: Path) -> bytes:
    """Case 7: ``I1\\x00`` is the number 1 for CPython (strtol stops at the NUL)."""
    return b"I1\x00\n0" + mkdir_payload(marker) + b"0I1\n."


def legacy_tar_hardlink(marker: Path) -> bytes:
    """Case 6: ``storages`` is a hard link to a member holding the case 7 stream."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        data = nul_int_pickle(marker)
        info = tarfile.TarInfo("x")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("storages")
        link.type = tarfile.LNKTYPE
        link.linkname = "x"
        tf.addfile(link)
    return out.getvalue()


def joblib_zlib_trailing(marker: Path, kind: str = "zlib") -> bytes:
    """A joblib file with a second zlib/gzip stream: joblib's reader loops forever."""
    out = io.BytesIO()
    joblib.dump({"a": 1}, out, compress=kind)
    extra = zlib.compress(b"more") if kind == "zlib" else gzip.compress(b"more")
    return out.getvalue() + extra


#: name -> (builder, loader, whether the payload runs (else the loader hangs), verdicts)
CASES: dict[str, tuple[Callable[[Path], bytes], str, bool, tuple[str, ...]]] = {
    "npy_descr_object": (npy_object, "numpy", True, ("unsafe",)),
    "npz_descr_object": (npz_object, "numpy", True, ("unsafe",)),
    "npz_lzma_member": (npz_lzma_member, "numpy", True, ("unsafe",)),
    "ustar_polyglot_pickle": (ustar_polyglot, "pickle", True, ("unsafe",)),
    "ustar_polyglot_joblib": (ustar_polyglot, "joblib", True, ("unsafe",)),
    "ustar_polyglot_numpy": (ustar_polyglot, "numpy", True, ("unsafe",)),
    "joblib_alignment_none": (joblib_unaligned, "joblib", True, ("unsafe",)),
    "joblib_reconstructed_wrapper": (joblib_reconstructed_wrapper, "joblib", True, ("unsafe",)),
    "joblib_dtype_state_elsize": (joblib_dtype_elsize, "joblib", True, ("unsafe",)),
    "joblib_lz4_two_frames": (lz4_two_frames, "joblib", True, ("unsafe",)),
    "joblib_bz2_two_streams": (multistream("bz2"), "joblib", True, ("unsafe",)),
    "joblib_xz_two_streams": (multistream("xz"), "joblib", True, ("unsafe",)),
    "joblib_lzma_two_streams": (multistream("lzma"), "joblib", True, ("unsafe",)),
    "torch_zip_decoy_storage": (torch_zip_decoy, "torch", True, ("unsafe",)),
    "legacy_tar_hardlink": (legacy_tar_hardlink, "torch", True, ("unsafe",)),
    "pickle_nul_int": (nul_int_pickle, "pickle", True, ("unsafe",)),
    "joblib_zlib_two_streams": (joblib_zlib_trailing, "joblib", False, ("unsafe", "suspicious")),
    "joblib_gzip_two_streams": (
        lambda m: joblib_zlib_trailing(m, "gzip"),
        "joblib",
        False,
        ("unsafe", "suspicious"),
    ),
}


@pytest.fixture(scope="module")
def built() -> Iterator[dict[str, tuple[Path, dict[str, object]]]]:
    """Every case written to disk and loaded once by its real loader in a child process."""
    # a short folder: the ustar case carries the marker path inside a 100-byte name field
    root = Path(tempfile.mkdtemp(prefix="mlw20-"))
    paths = {}
    for k, (name, (build, _, _, _)) in enumerate(CASES.items()):
        path = root / f"{name}.bin"
        path.write_bytes(build(root / f"m{k}"))
        paths[name] = path
    # a load that runs its payload does so at once; one that hangs is stopped after 2 s
    jobs = [(paths[n], CASES[n][1]) for n in CASES]
    results = run_loaders(jobs, seconds=2)
    yield {n: (paths[n], r) for n, r in zip(CASES, results, strict=True)}
    for p in sorted(root.rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    root.rmdir()


@pytest.mark.parametrize("name", list(CASES))
def test_the_real_loader_runs_it_and_the_scan_is_not_safe(
    name: str, built: dict[str, tuple[Path, dict[str, object]]]
) -> None:
    path, loaded = built[name]
    runs = CASES[name][2]
    if runs:
        assert loaded["fired"], f"{name}: {CASES[name][1]} did not run the payload: {loaded}"
    else:
        assert loaded["outcome"] == "timeout", f"{name}: the loader returned: {loaded}"
    result = scan_file(path)
    assert result.verdict.value in CASES[name][3], (name, [i.to_dict() for i in result.findings])


@pytest.mark.parametrize(
    "descr", ["object", "|O", "O", "O8", [("a", "O")], ("O", (2,)), [("a", [("b", "object")])]]
)
def test_every_object_descr_numpy_accepts_is_read_as_a_pickle(
    descr: object, tmp_path: Path
) -> None:
    assert np.lib.format.descr_to_dtype(descr).hasobject
    path = tmp_path / "a.npy"
    path.write_bytes(npy_object(tmp_path / "m", descr))
    assert scan_file(path).verdict.value == "unsafe"


def test_a_legacy_tar_symlinked_member_is_never_safe(tmp_path: Path) -> None:
    out = tmp_path / "old.pt"
    with tarfile.open(out, mode="w") as tf:
        link = tarfile.TarInfo("storages")
        link.type = tarfile.SYMTYPE
        link.linkname = "/tmp/elsewhere"
        tf.addfile(link)
    assert scan_file(out).verdict.value in ("unsafe", "suspicious")


def test_a_limit_stop_is_never_credited_as_onnx_external_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from mlwarden.supplychain import pickle_vm

    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [w],
    )
    model = tmp_path / "model.onnx"
    onnx.save_model(
        helper.make_model(graph),
        str(model),
        save_as_external_data=True,
        location="weights.bin",
        size_threshold=0,
    )
    # more MARKs than the machine follows (a lowered limit keeps the test fast): pickle.load
    # reads on and runs the rest, so the file can never be credited as weights
    monkeypatch.setattr(pickle_vm, "MAX_STACK", 1000)
    evil = b"(" * 1100 + b"1" * 1100 + mkdir_payload(tmp_path / "m") + b"."
    (tmp_path / "weights.bin").write_bytes(evil)
    verdicts = {Path(f.path).name: f.verdict.value for f in scan_paths([tmp_path]).files}
    assert verdicts["weights.bin"] != "safe"
    assert not os.path.exists(tmp_path / "m")


_LINE_BYTES = [*(bytes([c]) for c in b"'\"\\xuUN079a{} nf8+-.e_L\t"), b"\x00", b"\xff", b"\xc3\xa9"]


@pytest.mark.parametrize("op", [b"S", b"V", b"I", b"L", b"F", b"p", b"g", b"P", b"c"])
def test_every_text_line_an_unpickler_reads_the_machine_reads(op: bytes) -> None:
    """Lines of text opcodes (numbers, strings, memo indices, persistent ids, globals) that
    CPython's C unpickler or the pure-Python one (joblib's) accepts never stop the machine:
    an unpickler that reads on past where the scanner stopped runs what it never saw."""
    import pickle
    import random

    from mlwarden.supplychain import scan_bytes

    rng = random.Random(20)
    for _ in range(400):
        line = b"".join(rng.choice(_LINE_BYTES) for _ in range(rng.randint(0, 6)))
        if op == b"p":
            data = b"N" + op + line + b"\n."
        elif op == b"g":
            data = b"Np0\n0" + op + line + b"\n."
        elif op == b"c":
            data = op + b"collections\n" + line + b"OrderedDict\n."
        else:
            data = op + line + b"\n."
        accepted = False
        for load in (pickle.loads, pickle._loads):  # type: ignore[attr-defined]
            try:
                load(data)
                accepted = True
            except Exception:
                pass
        if accepted:
            assert scan_bytes(data).error is None, (op, line)
