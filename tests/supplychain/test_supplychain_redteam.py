"""Hostile and unusual inputs to ``mlwarden scan`` and the scanner's public functions.

The promise under test: every bad input gets one clear line and a non-zero exit, never a
traceback, a hang or unbounded memory; what cannot be parsed is never reported safe; the
JSON output keeps the documented interface (issue 3), also for errors; SARIF stays valid.
Big inputs are sparse or built lazily, so the whole file runs in seconds.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
import stat
import struct
import tarfile
import threading
import time
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

import pytest

from mlwarden.cli.main import main
from mlwarden.core.errors import UserError
from mlwarden.core.findings import Severity
from mlwarden.supplychain import Limits, safe_load, scan_file, scan_paths
from mlwarden.supplychain.policy import DEFAULT_POLICY
from mlwarden.supplychain.results import MAX_LISTED, FileResult, Sink


def _payload(canary: Path) -> bytes:
    """What an unpickler would run: a harmless canary (these files are never loaded)."""
    return b"cos\nsystem\n(S'touch " + str(canary).encode() + b"'\ntR."


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(["scan", *args])
    cap = capsys.readouterr()
    return int(exc.value.code or 0), cap.out, cap.err


def _refused(path: Path) -> None:
    """safe_load raises one of our errors, in one line, and loads nothing."""
    with pytest.raises(UserError) as exc:
        safe_load(path)
    assert "\n" not in str(exc.value)


# --- the pickle machine stopping at a limit is never "text" -----------------------------------


@pytest.mark.parametrize(
    "opener", [b"S'" + b"a" * (2 << 20) + b"'\n0", b"V" + b"a" * (2 << 20) + b"\n0"]
)
def test_a_protocol_0_line_longer_than_the_scanner_reads_is_not_text(
    tmp_path: Path, canary: Path, opener: bytes
) -> None:
    # pickle.loads() reads the long line, pops it and then runs os.system: the scanner
    # once gave up on the line, rolled back and called the file text (safe)
    data = opener + _payload(canary)
    plain = tmp_path / "long.pkl"
    plain.write_bytes(data)
    packed = tmp_path / "long.pkl.gz"  # joblib.load() unpacks and unpickles it
    packed.write_bytes(gzip.compress(data))
    for path in (plain, packed):
        res = scan_file(path)
        assert res.verdict.value == "error", (path, res.format, res.findings)
        assert "line longer than" in (res.error or "")
        _refused(path)


def test_a_mark_blow_up_inside_a_compressed_stream_is_not_data(
    tmp_path: Path, canary: Path
) -> None:
    # a million MARKs and POP_MARKs are fine for pickle.loads; the scanner stops at its limit
    data = b"(" * 1_000_001 + b"1" * 1_000_001 + _payload(canary)
    path = tmp_path / "marks.pkl.gz"
    path.write_bytes(gzip.compress(data))
    res = scan_file(path)
    assert res.verdict.value == "error" and "blow-up" in (res.error or "")


def test_a_limit_inside_a_media_signature_is_not_the_image(tmp_path: Path, canary: Path) -> None:
    # GIF89a: 'G' is BINFLOAT (8 bytes), then the MARK blow-up, then the payload
    data = b"GIF89a\x00\x00\x00" + b"(" * 1_000_001 + b"1" * 1_000_001 + _payload(canary)
    path = tmp_path / "image.gif"
    path.write_bytes(data)
    res = scan_file(path)
    assert res.verdict.value == "error", (res.format, res.findings)


def test_long_text_lines_that_no_unpickler_reads_stay_text(tmp_path: Path) -> None:
    # a first line with a long module name fails in the unpickler too (no such module)
    path = tmp_path / "notes.txt"
    path.write_text("c" + "x" * 10_000 + "\nmore text\n")
    assert scan_file(path).format == "text"


# --- folders: what cannot be walked is reported, never dropped --------------------------------


def _good_pickle(path: Path) -> Path:
    path.write_bytes(pickle.dumps({"weights": [1.0, 2.0]}, protocol=2))
    return path


@pytest.fixture()
def locked_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder that cannot be listed (chmod 000; under root, listing it is made to fail)."""
    locked = tmp_path / "tree" / "locked"
    locked.mkdir(parents=True)
    _good_pickle(locked / "hidden.pkl")
    locked.chmod(0)
    if os.geteuid() == 0:  # root reads anything: refuse the listing the way the OS would
        real = os.scandir

        def scandir(path: object = ".") -> object:
            if os.fspath(path) == str(locked):  # type: ignore[arg-type]
                raise PermissionError(13, "Permission denied", str(locked))
            return real(path)  # type: ignore[arg-type]

        monkeypatch.setattr(os, "scandir", scandir)
    yield locked
    locked.chmod(0o755)


def test_a_folder_that_cannot_be_listed_is_an_error_not_a_clean_folder(
    locked_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = locked_folder.parent
    _good_pickle(tree / "good.pkl")
    result = scan_paths([tree])
    by_path = {f.path: f for f in result.files}
    assert by_path[str(tree / "good.pkl")].verdict.value == "safe"
    locked = by_path[str(locked_folder)]
    assert locked.verdict.value == "error" and "cannot list the folder" in (locked.error or "")
    assert result.exit_code() == 2


def test_symbolic_links_in_a_folder(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    _good_pickle(outside / "model.pkl")
    _good_pickle(tree / "good.pkl")
    (tree / "loop1").symlink_to("loop2")
    (tree / "loop2").symlink_to("loop1")
    (tree / "dangling").symlink_to("nowhere")
    (tree / "sub" / "up").symlink_to("..")  # a loop back into the tree: nothing new
    (tree / "out_file").symlink_to(outside / "model.pkl")  # the loader reads it: scanned
    (tree / "out_dir").symlink_to(outside)  # not followed: reported
    result = scan_paths([tree])
    got = {Path(f.path).name: (f.verdict.value, f.error or "") for f in result.files}
    assert set(got) == {"good.pkl", "loop1", "loop2", "dangling", "out_file", "out_dir"}
    assert got["good.pkl"][0] == got["out_file"][0] == "safe"
    assert "loop" in got["loop1"][1] and "loop" in got["loop2"][1]
    assert "dangling" in got["dangling"][1] and "nowhere" in got["dangling"][1]
    assert got["out_dir"][0] == "error" and "not followed" in got["out_dir"][1]
    assert result.exit_code() == 2


def test_special_files_in_a_folder_are_refused_without_waiting(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    os.mkfifo(tree / "pipe")
    (tree / "zero").symlink_to("/dev/zero")
    result = scan_paths([tree])
    assert [f.verdict.value for f in result.files] == ["error", "error"]
    assert all("not a regular file" in (f.error or "") for f in result.files)


# --- hostile names: the output stays one line per item, valid JSON, valid SARIF ----------------


@pytest.fixture()
def odd_names(tmp_path: Path) -> Path:
    tree = tmp_path / "names"
    tree.mkdir()
    evil = pickle.dumps(eval, protocol=2)  # imports builtins.eval (never loaded here)
    for raw in (
        b"with space.pkl",
        b"new\nline.pkl",
        b"bad\xff\xfebytes.pkl",
        b"esc\x1b[31mred.pkl",
        b"x[b][i].pkl",
        b"rtl\xe2\x80\xaegnp.pkl",
    ):
        (tree / os.fsdecode(raw)).write_bytes(evil)
    with zipfile.ZipFile(tree / "z.zip", "w") as z:
        z.writestr("a[/]\x1b[2J\nSAFE forged line.pkl", evil)
    return tree


def test_text_output_escapes_names_from_the_files(
    odd_names: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run([str(odd_names)], capsys)
    assert code == 1 and err == ""
    lines = out.splitlines()
    verdicts = [line for line in lines if not line.startswith(" ")]
    assert len(verdicts) == 7 + 1  # one line per file, then the summary
    assert all(line.startswith("UNSAFE") for line in verdicts[:-1])
    assert "\x1b" not in out and "\u202e" not in out
    assert "new\\nline.pkl" in out and "bad\\xff\\xfebytes.pkl" in out and "x[b][i].pkl" in out
    assert any("a[/]\\x1b[2J\\nSAFE forged line.pkl" in line for line in lines)


def test_json_and_sarif_stay_valid_with_names_that_are_not_utf8(
    odd_names: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.report.conftest import sarif_errors

    code, out, _ = run([str(odd_names), "--format", "json"], capsys)
    assert code == 1
    out.encode("utf-8")  # no lone surrogates
    doc = json.loads(out)
    assert set(doc) == {"schema_version", "files"} and len(doc["files"]) == 7
    paths = {Path(f["path"]).name for f in doc["files"]}
    assert "bad\\xff\\xfebytes.pkl" in paths and "new\nline.pkl" in paths
    json.dumps(doc, ensure_ascii=False).encode("utf-8")
    code, out, _ = run([str(odd_names), "--format", "sarif"], capsys)
    assert code == 1
    assert sarif_errors(json.loads(out)) == []
    reports = {k: tmp_path / f"r.{k}" for k in ("json", "html", "sarif", "junit")}
    code, _, err = run(
        [str(odd_names), "-q", *(a for k, p in reports.items() for a in (f"--{k}", str(p)))],
        capsys,
    )
    assert code == 1 and "error" not in err
    assert sarif_errors(json.loads(reports["sarif"].read_text(encoding="utf-8"))) == []
    json.loads(reports["json"].read_text(encoding="utf-8"))
    ElementTree.parse(reports["junit"])


# --- options: policy files and report paths ---------------------------------------------------


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda p: os.mkfifo(p), "not a regular file"),  # read_text() waited for a writer
        (lambda p: p.symlink_to("/dev/zero"), "not a regular file"),  # read until memory ran out
        (lambda p: p.mkdir(), "not a regular file"),
        (lambda p: p.write_bytes(b"allow: []\n" + b"#" * (2 << 20)), "bytes, more than"),
        (lambda p: p.write_text("allow: " + "[" * 5000 + "]" * 5000), "nested too deeply"),
    ],
    ids=["fifo", "device", "folder", "huge", "deep"],
)
def test_a_policy_file_that_is_no_policy_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: object, needle: str
) -> None:
    model = _good_pickle(tmp_path / "m.pkl")
    policy = tmp_path / "policy.yaml"
    make(policy)  # type: ignore[operator]
    code, out, err = run([str(model), "--policy", str(policy)], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err


def test_a_yaml_billion_laughs_policy_is_refused_quickly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = ['a: &a ["x.y", "x.y", "x.y", "x.y", "x.y", "x.y", "x.y", "x.y", "x.y"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]")
    lines.append("allow: *i")
    policy = tmp_path / "bomb.yaml"
    policy.write_text("\n".join(lines) + "\n")
    model = _good_pickle(tmp_path / "m.pkl")
    code, _, err = run([str(model), "--policy", str(policy)], capsys)
    assert code == 2 and err.count("\n") == 1


def test_reports_go_into_pipes_and_through_links_without_replacing_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _good_pickle(tmp_path / "m.pkl")
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(pipe.read_bytes()), daemon=True)
    reader.start()
    real = tmp_path / "real.sarif"
    real.write_text("{}")
    link = tmp_path / "link.sarif"
    link.symlink_to(real.name)
    code, _, err = run([str(model), "-q", "--json", str(pipe), "--sarif", str(link)], capsys)
    reader.join(10)
    assert code == 0, err
    assert stat.S_ISFIFO(pipe.lstat().st_mode)  # a rename over it made it a plain file
    assert json.loads(got[0])["command"] == "scan"
    assert link.is_symlink() and json.loads(real.read_text())["version"] == "2.1.0"


# --- zip archives ------------------------------------------------------------------------


def _local(name: str, csize: int, usize: int, method: int = 0, crc: int = 0) -> bytes:
    raw = name.encode()
    fields = (20, 0, method, 0, 0, crc, csize, usize, len(raw), 0)
    return b"PK\x03\x04" + struct.pack("<HHHHHIIIHH", *fields) + raw


def _central(
    name: str, csize: int, usize: int, offset: int, method: int = 0, crc: int = 0
) -> bytes:
    raw = name.encode()
    fields = (20, 20, 0, method, 0, 0, crc, csize, usize, len(raw), 0, 0, 0, 0, 0, offset)
    return b"PK\x01\x02" + struct.pack("<HHHHHHIIIHHHHHII", *fields) + raw


def _zip(body: bytes, central: list[bytes]) -> bytes:
    """An archive from its members' bytes and central records (ZIP64 end records past 65535)."""
    cd = b"".join(central)
    n = len(central)
    end = b""
    if n > 0xFFFF:
        at = len(body) + len(cd)
        end = b"PK\x06\x06" + struct.pack("<QHHIIQQQQ", 44, 45, 45, 0, 0, n, n, len(cd), len(body))
        end += b"PK\x06\x07" + struct.pack("<IQI", 0, at, 1)
        n = 0xFFFF
    tail = struct.pack("<HHHHIIH", 0, 0, n, n, len(cd), len(body), 0)
    return body + cd + end + b"PK\x05\x06" + tail


def test_fifield_overlapping_members_are_one_bomb_finding(tmp_path: Path) -> None:
    # each member's deflate stream quotes the next member's local header in a stored
    # block, so every member holds all the ones after it (a non-recursive zip bomb)
    kernel = zlib.compressobj(9, zlib.DEFLATED, -15)
    tail = kernel.compress(b"\x00" * (1 << 20)) + kernel.flush()
    names = [f"{i:03d}.bin" for i in range(50)]
    sizes = [(len(tail), 1 << 20)]
    headers = [_local(names[-1], *sizes[0], method=8)]
    for name in reversed(names[:-1]):  # member i's data: a block quoting header i+1, then its data
        csize, usize = sizes[0]
        sizes.insert(0, (csize + 5 + len(headers[0]), usize + len(headers[0])))
        headers.insert(0, _local(name, *sizes[0], method=8))
    body, offsets = b"", []
    for i, header in enumerate(headers):
        offsets.append(len(body))
        body += header
        if i + 1 < len(headers):  # the block header; its content is the next local header
            nxt = len(headers[i + 1])
            body += b"\x00" + struct.pack("<HH", nxt, nxt ^ 0xFFFF)
    body += tail
    cds = [
        _central(n, c, u, o, method=8) for n, (c, u), o in zip(names, sizes, offsets, strict=True)
    ]
    path = tmp_path / "bomb.zip"
    path.write_bytes(_zip(body, cds))
    res = scan_file(path)
    bombs = [i for i in res.findings if i.rule == "MLW-SCN-010"]
    assert len(bombs) == 1 and "49 member(s) overlap" in bombs[0].message
    assert res.verdict.value != "safe"


def test_many_entries_sharing_one_member_are_one_finding(tmp_path: Path) -> None:
    payload = pickle.dumps({"w": 1}, protocol=2)
    crc = zlib.crc32(payload)
    body = _local("data.pkl", len(payload), len(payload), crc=crc) + payload
    cds = [_central(f"m{i}.pkl", len(payload), len(payload), 0, crc=crc) for i in range(1000)]
    path = tmp_path / "shared.zip"
    path.write_bytes(_zip(body, cds))
    res = scan_file(path)
    assert len(res.findings) <= 3, [i.message for i in res.findings]
    assert any("999 member(s) overlap" in i.message for i in res.findings)
    assert res.verdict.value != "safe"


def test_a_hundred_thousand_tiny_members(tmp_path: Path) -> None:
    payload = pickle.dumps(1, protocol=2)
    crc = zlib.crc32(payload)
    body, cds = bytearray(), []
    for i in range(100_000):
        cds.append(_central(f"m{i}.pkl", len(payload), len(payload), len(body), crc=crc))
        body += _local(f"m{i}.pkl", len(payload), len(payload), crc=crc) + payload
    path = tmp_path / "many.zip"
    path.write_bytes(_zip(bytes(body), cds))
    start = time.perf_counter()
    res = scan_file(path)
    assert res.verdict.value == "safe", res.findings[:3]
    assert time.perf_counter() - start < 30


def test_member_names_that_climb_out_are_reported(tmp_path: Path, canary: Path) -> None:
    path = tmp_path / "slip.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("../../home/user/.bashrc", "touch " + str(canary))
        z.writestr("/etc/cron.d/x", "* * * * * root touch " + str(canary))
        z.writestr("ok.txt", "fine")
    res = scan_file(path)
    slips = [i for i in res.findings if "zip slip" in i.message]
    assert len(slips) == 1 and "(and 1 more)" in slips[0].message
    assert slips[0].severity.value == "high" and res.verdict.value == "suspicious"


def test_overlapping_nested_archives_stop_at_the_archive_budget(tmp_path: Path) -> None:
    # one deflated member that inflates to a zip-looking 32 MiB, listed 200 times: each
    # entry was inflated and spooled to disk (a 32 KB file cost minutes at full scale)
    raw = b"PK\x03\x04" + b"\x00" * (32 << 20)
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = packer.compress(raw) + packer.flush()
    crc = zlib.crc32(raw)
    body = _local("a.zip", len(data), len(raw), method=8, crc=crc) + data
    cds = [_central("a.zip", len(data), len(raw), 0, method=8, crc=crc) for _ in range(200)]
    path = tmp_path / "spool.zip"
    path.write_bytes(_zip(body, cds))
    start = time.perf_counter()
    res = scan_file(path, limits=Limits(archive_floor=128 << 20))
    assert time.perf_counter() - start < 20
    assert res.verdict.value == "error" and "limit" in (res.error or "")


def test_a_compressed_npz_of_a_big_zero_array_is_neither_inflated_nor_a_bomb(
    tmp_path: Path,
) -> None:
    np = pytest.importorskip("numpy")
    path = tmp_path / "sparse.npz"
    np.savez_compressed(path, w=np.zeros((300, 1 << 18), dtype=np.float32), b=np.ones(3))
    res = scan_file(path, limits=Limits(ratio_floor=1 << 20))
    assert res.verdict.value == "safe", res.findings
    assert res.seconds < 5


def test_a_tar_declaring_a_huge_member_is_seeked_past(tmp_path: Path) -> None:
    info = tarfile.TarInfo("model.pkl")
    info.size = 5 << 30
    path = tmp_path / "huge.tar"
    with path.open("wb") as f:
        f.write(info.tobuf(format=tarfile.GNU_FORMAT))
        f.write(pickle.dumps({"w": 1}, protocol=2))
        f.truncate(512 + (5 << 30) + 1024)  # sparse: the 5 GB are never written
    start = time.perf_counter()
    res = scan_file(path)
    assert time.perf_counter() - start < 10  # read through, it took 15-25 s
    assert res.format == "tar" and res.verdict.value != "unsafe"
    cut = tmp_path / "cut.tar"  # the member's data is missing: an error, not a clean tar
    with cut.open("wb") as f:
        f.write(info.tobuf(format=tarfile.GNU_FORMAT))
        f.write(pickle.dumps({"w": 1}, protocol=2))
    assert scan_file(cut).verdict.value == "error"


# --- every hostile input: safe_load refuses in one line; process workers agree ------------------


def _hostile(root: Path, canary: Path) -> list[Path]:
    """A mixed folder of inputs that must never load or pass."""
    root.mkdir()
    files: dict[str, bytes] = {
        "empty.pkl": b"",
        "stop.pkl": b".",
        "long_line.pkl": b"V" + b"a" * (1 << 17) + b"\n0" + _payload(canary),
        "truncated.pkl": pickle.dumps({"w": list(range(50))}, protocol=2)[:-9],
        "long4.pkl": b"\x80\x02\x8a\xff" + b"\x00" * 16,
        "giant_shape.npy": _npy("<f8", (10**12, 10**12)),
        "neg_shape.npy": _npy("<f8", (-1, 5)),
        "bad_dtype.npy": _npy("<zz", (2,)),
        "st_negative.safetensors": _safetensors(
            {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}
        ),
        "st_bool.safetensors": _safetensors(
            {"dtype": "F32", "shape": [2], "data_offsets": [False, True]}
        ),
        "st_overflow.safetensors": _safetensors(
            {"dtype": "F32", "shape": [2], "data_offsets": [0, 2**64 + 8]}
        ),
        "onnx_cut.onnx": b"\x08\x07\x12\x07pytorch\x1a\xff\xff",
        "h5_cut.h5": b"\x89HDF\r\n\x1a\n" + b"\x00" * 600,
        "gz20.gz": _gzip_n(pickle.dumps({"w": 1}, protocol=2), 20),
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    return sorted(root.iterdir())


def _npy(descr: str, shape: tuple[int, ...]) -> bytes:
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\x00" * 64


def _safetensors(tensor: dict[str, object]) -> bytes:
    header = json.dumps({"t": tensor}).encode()
    return struct.pack("<Q", len(header)) + header + b"\x00" * 8


def _gzip_n(data: bytes, levels: int) -> bytes:
    for _ in range(levels):
        data = gzip.compress(data)
    return data


def test_safe_load_refuses_every_hostile_input_in_one_line(tmp_path: Path, canary: Path) -> None:
    from mlwarden.supplychain import load_target

    for path in _hostile(tmp_path / "hostile", canary):
        res = scan_file(path)
        # one byte '.' is text to the scanner (no unpickler gets past an empty STOP)
        assert res.verdict.value != "safe" or path.name == "stop.pkl", (path.name, res.format)
        _refused(path)
        with pytest.raises(UserError):
            load_target(str(path))
    assert not canary.exists()


def test_hostile_messages_name_the_problem(tmp_path: Path, canary: Path) -> None:
    got = {p.name: scan_file(p) for p in _hostile(tmp_path / "hostile", canary)}
    assert "truncated or corrupt: not a valid ONNX" in (got["onnx_cut.onnx"].error or "")
    assert "truncated or corrupt: HDF5 file unreadable" in (got["h5_cut.h5"].error or "")
    assert any("[False, True]" in i.message for i in got["st_bool.safetensors"].findings)
    assert any("nested deeper" in i.message for i in got["gz20.gz"].findings)
    for name in ("giant_shape.npy", "neg_shape.npy", "bad_dtype.npy"):  # not "malformed pickle"
        assert (got[name].error or "").startswith("truncated or corrupt"), got[name].error


def _mixed_tree(tmp_path: Path, canary: Path) -> Path:
    """The hostile inputs plus a good and an evil pickle, in one folder."""
    root = tmp_path / "hostile"
    _hostile(root, canary)
    _good_pickle(root / "good.pkl")
    (root / "evil.pkl").write_bytes(_payload(canary))
    return root


def test_process_workers_give_the_same_results_as_local(
    tmp_path: Path, canary: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _mixed_tree(tmp_path, canary)
    code_local, local, _ = run([str(root), "--format", "json"], capsys)
    code_proc, proc, _ = run([str(root), "--format", "json", "--executor", "process=2"], capsys)
    assert code_local == code_proc == 1
    assert json.loads(local) == json.loads(proc)


def test_a_name_too_long_is_one_error_entry_and_the_rest_is_scanned(tmp_path: Path) -> None:
    good = _good_pickle(tmp_path / "good.pkl")
    result = scan_paths([tmp_path / ("a" * 300), good])  # ENAMETOOLONG ended the whole scan
    assert [f.verdict.value for f in result.files] == ["error", "safe"]
    assert "too long" in (result.files[0].error or "")


def test_a_gguf_pickle_polyglot_at_a_limit_is_an_error(tmp_path: Path, canary: Path) -> None:
    # 'G' is BINFLOAT: an unpickler reads 'GUF' and the version as a float, then goes on
    data = b"GGUF\x03\x00\x00\x00\x00" + b"(" * 1_000_001 + b"1" * 1_000_001 + _payload(canary)
    path = tmp_path / "model.gguf"
    path.write_bytes(data)
    assert scan_file(path).verdict.value == "error"


# --- small and special inputs through the command ---------------------------------------------


def test_pipes_and_devices_on_the_command_line_do_not_block(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)  # nobody ever writes: opening it for reading used to wait forever
    code, out, err = run([str(pipe), "/dev/zero", "/dev/urandom", "--format", "json"], capsys)
    assert code == 2 and err == ""
    doc = json.loads(out)
    assert [f["verdict"] for f in doc["files"]] == ["error"] * 3
    assert all("not a regular file" in f["findings"][0]["message"] for f in doc["files"])


def test_every_one_byte_file_and_an_empty_one(tmp_path: Path) -> None:
    tree = tmp_path / "bytes"
    tree.mkdir()
    for b in range(256):
        (tree / f"{b:03d}").write_bytes(bytes([b]))
    (tree / "empty").write_bytes(b"")
    result = scan_paths([tree])
    assert len(result.files) == 257
    for f in result.files:
        # one byte runs no code: printable ones are text, the rest cannot be parsed (an
        # opcode: a cut-off pickle) or are of no known format
        assert f.verdict.value in ("safe", "error", "unknown"), (f.path, f.format)
        assert f.verdict.value in ("error", "unknown") or f.format == "text", (f.path, f.format)
    assert result.files[-1].verdict.value == "error"  # the empty file is never safe


def test_an_empty_folder_in_json_mode_prints_no_document(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # no JSON rather than '"files": []', which a consumer ignoring the exit status would
    # read as a clean scan: stdout stays empty, one line on stderr, exit 2
    (tmp_path / "models").mkdir()
    code, out, err = run([str(tmp_path / "models"), "--format", "json"], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1 and "nothing to scan" in err


def test_a_5_gb_sparse_file_of_zeros_is_refused_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "zeros.bin"
    with path.open("wb") as f:
        f.truncate(5 << 30)
    start = time.perf_counter()
    res = scan_file(path)
    assert time.perf_counter() - start < 5
    assert res.verdict.value == "unknown" and res.unknown and res.error is None
    assert any("unrecognised" in i.message for i in res.findings)


def test_sarif_is_valid_for_every_kind_of_verdict(
    tmp_path: Path, canary: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.report.conftest import sarif_errors

    root = _mixed_tree(tmp_path, canary)
    code, out, _ = run([str(root), "--format", "sarif"], capsys)
    assert code == 1
    log = json.loads(out)
    assert sarif_errors(log) == []
    rules = {r["ruleId"] for r in log["runs"][0]["results"]}
    assert {"MLW-SCN-001", "MLW-SCN-004", "MLW-SCN-009"} <= rules


# --- many findings: bounded output -----------------------------------------------------------


def test_a_pickle_importing_100k_names_gives_a_bounded_report(
    tmp_path: Path, canary: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # each distinct import was its own finding: 200k names, 3.7 MB, made a 500 MB SARIF log,
    # 4 GB of memory and 48 s (the report built each file's verdict once per finding)
    ops = [b"\x80\x02"]
    ops += [b"cmypkg\nName%d\n0" % i for i in range(100_000)]
    path = tmp_path / "names.pkl"
    path.write_bytes(b"".join(ops) + _payload(canary))
    start = time.perf_counter()
    code, out, _ = run([str(path), "--format", "sarif"], capsys)
    assert time.perf_counter() - start < 30
    assert code == 1 and len(out) < 5_000_000
    res = scan_file(path)
    assert res.verdict.value == "unsafe"  # os.system after the flood is still listed
    suspicious = [i for i in res.findings if i.rule == "MLW-SCN-002"]
    assert len(suspicious) == MAX_LISTED + 1
    assert suspicious[-1].count == 100_000 - MAX_LISTED
    assert f"{100_000 - MAX_LISTED} more finding(s)" in suspicious[-1].message


def test_the_sum_up_survives_a_rollback() -> None:
    res = FileResult(path="x")
    sink = Sink(res, DEFAULT_POLICY)
    for i in range(MAX_LISTED + 5):
        sink.add("MLW-SCN-002", Severity.HIGH, f"imports a.b{i}", global_=f"a.b{i}")
    mark = sink.checkpoint()
    sink.add("MLW-SCN-003", Severity.HIGH, "odd opcode")
    sink.add("MLW-SCN-002", Severity.CRITICAL, "imports a.z", global_="a.z")
    sink.rollback(mark, keep_rules=("MLW-SCN-002",))
    assert [i.rule for i in res.findings].count("MLW-SCN-003") == 0
    [more] = [i for i in res.findings if "more finding" in i.message]
    assert more.count == 6 and more.severity is Severity.CRITICAL
    sink.rollback(0)
    assert res.findings == []
    sink.add("MLW-SCN-002", Severity.HIGH, "imports a.b0", global_="a.b0")
    assert len(res.findings) == 1 and res.findings[0].count == 1


# --- numbers the unpickler reads in base 0 -----------------------------------------------------


@pytest.mark.parametrize("number", [b"I0x10", b"I0o17", b"I0b101", b"I 0x1f", b"L0x10L", b"L-0b11"])
def test_an_int_in_base_0_is_not_text(tmp_path: Path, canary: Path, number: bytes) -> None:
    # CPython's unpickler reads INT and LONG with strtol/int(s, 0): 'I0x10' is 16. The
    # scanner's base-10 parse failed on the first opcode, so the file passed as text (safe)
    # while pickle.loads() ran os.system; the machine now reads numbers the same way
    path = tmp_path / "hex.pkl"
    path.write_bytes(number + b"\n0" + _payload(canary))
    result = scan_file(path)
    assert result.verdict.value == "unsafe"
    assert any(i.rule == "MLW-SCN-001" for i in result.findings)
    gif = tmp_path / "hex.gif"
    gif.write_bytes(b"GIF89a\x00\x00\x00" + number + b"\n0" + _payload(canary))
    assert scan_file(gif).verdict.value in ("unsafe", "error")


def test_text_that_starts_like_an_int_stays_text(tmp_path: Path) -> None:
    for i, text in enumerate(["Introduction\nThis is text.\n", "Lorem ipsum\n", "I12\nfoo\n"]):
        path = tmp_path / f"t{i}.txt"
        path.write_text(text)
        assert scan_file(path).format == "text", text
