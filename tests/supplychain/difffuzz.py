"""Differential fuzzing of the scanner against the real loaders (issue 20).

Seeds are files written by the real libraries (``pickle`` protocols 0-5, ``joblib.dump``
plain and with every compressor, ``numpy.save``/``savez`` of object arrays, ``torch.save``
zip and legacy formats, a legacy tar checkpoint), each carrying a harmless canary
(``os.mkdir`` of a marker folder). Grammar-aware mutators rewrite what a loader reads
without changing what it runs: number spellings (INT/LONG/FLOAT/PUT/GET lines, as text,
hex, octal, with blanks, a ``+``, a NUL and junk), memo use (strings through PUT/GET,
MEMOIZE made explicit, frames dropped), GLOBAL and STACK_GLOBAL swapped, compressed
stream boundaries (one stream split into several, trailing zeros or junk), zip member
order, prefix, name case and decoy pickles, tar member order, duplicate names, hard
links and the pre-POSIX header, ``.npy`` header versions and dtype spellings.

Every mutant is scanned, then loaded by its real loaders in a sandboxed child process
(:func:`canary.run_loaders`). A *bypass* is a mutant whose payload ran while the scan
said ``safe``; the target is none. Used by ``test_supplychain_difffuzz.py`` (a short
seeded run) and ``benchmarks/scan_fuzz.py`` (the long run).

Example::

    seeds = build_seeds(Path("/tmp/fuzz"))
    report = run(seeds, mutants_per_seed=20, seed=0, workdir=Path("/tmp/fuzz"))
    report.bypasses  # [] is the target
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import pickle
import pickletools
import random
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from canary import run_loaders

from mlwarden.supplychain import scan_file

Op = tuple[str, bytes]  #: an opcode's name and its exact bytes


class Canary:
    """Pickles as ``os.mkdir(marker)``: the payload every seed carries."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (self.marker,))


@dataclass
class Seed:
    name: str
    kind: str  #: pickle, joblib, joblib-<compressor>, npy, npz, torch-zip, torch-legacy, tar
    data: bytes
    loaders: tuple[str, ...]


@dataclass
class Report:
    tried: dict[str, int] = field(default_factory=dict)  #: mutants loaded, per loader
    fired: dict[str, int] = field(default_factory=dict)  #: of which ran the payload
    verdicts: dict[str, int] = field(default_factory=dict)  #: scan verdicts of fired ones
    by_loader: dict[str, dict[str, int]] = field(default_factory=dict)  #: the same, per loader
    bypasses: list[tuple[str, str, str]] = field(default_factory=list)  #: (mutant, loader, how)
    outcomes: dict[str, int] = field(default_factory=dict)  #: ok / timeout / crash / error: X


# --- seeds ---------------------------------------------------------------------------------


def build_seeds(root: Path) -> list[Seed]:
    """Seed files written by the real libraries, each with a canary under ``root``."""
    import joblib
    import numpy as np
    import torch

    marker = str(root / "fired")
    obj = {"w": [1, 2.5, 300, 70000, -5], "name": "model", "c": Canary(marker)}
    seeds = [
        Seed(f"pickle-p{p}", "pickle", pickle.dumps(obj, protocol=p), ("pickle",)) for p in range(6)
    ]
    seeds[2].loaders = ("pickle", "joblib", "numpy", "torch")
    arrays = {"a": np.arange(6, dtype=np.float32), "c": Canary(marker)}
    compressors: list[str | None] = [None, "zlib", "gzip", "bz2", "xz", "lzma"]
    try:
        import lz4.frame  # noqa: F401  (joblib's optional compressor)

        compressors.append("lz4")
    except ImportError:
        pass
    for comp in compressors:
        out = io.BytesIO()
        joblib.dump(arrays, out, compress=comp if comp else 0)
        seeds.append(
            Seed(f"joblib-{comp or 'raw'}", f"joblib-{comp or 'raw'}", out.getvalue(), ("joblib",))
        )
    out = io.BytesIO()
    np.save(out, np.array([Canary(marker), 1], dtype=object), allow_pickle=True)
    seeds.append(Seed("npy-object", "npy", out.getvalue(), ("numpy",)))
    out = io.BytesIO()
    np.savez(out, x=np.array([Canary(marker)], dtype=object), y=np.arange(3))
    seeds.append(Seed("npz-object", "npz", out.getvalue(), ("numpy",)))
    for proto in (2, 4):
        out = io.BytesIO()
        torch.save({"t": torch.arange(4.0), "c": Canary(marker)}, out, pickle_protocol=proto)
        seeds.append(Seed(f"torch-zip-p{proto}", "torch-zip", out.getvalue(), ("torch",)))
    out = io.BytesIO()
    torch.save(
        {"t": torch.arange(4.0), "c": Canary(marker)}, out, _use_new_zipfile_serialization=False
    )
    seeds.append(Seed("torch-legacy", "torch-legacy", out.getvalue(), ("torch",)))
    seeds.append(Seed("torch-legacy-tar", "tar", _legacy_tar(marker), ("torch",)))
    return seeds


def _legacy_tar(marker: str) -> bytes:
    """A legacy tar checkpoint (torch < 0.4 layout): no storages, the canary in ``pickle``."""
    members = [
        ("sys_info", pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2)),
        ("storages", pickle.dumps(0, protocol=2) + pickle.dumps([], protocol=2)),
        ("tensors", pickle.dumps(0, protocol=2)),
        ("pickle", pickle.dumps({"c": Canary(marker)}, protocol=2)),
    ]
    return _write_tar(members)


def _write_tar(members: list[tuple[str, bytes]], links: dict[str, str] | None = None) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if links and name in links:
                info.type = tarfile.LNKTYPE
                info.linkname = links[name]
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return out.getvalue()


# --- pickle opcode rewriting -----------------------------------------------------------------


def ops_of(data: bytes) -> list[Op] | None:
    """The opcodes of the first pickle in ``data`` as exact byte slices, with FRAMEs dropped
    and MEMOIZE made an explicit PUT (so later rewrites cannot shift memo indices)."""
    try:
        parsed = list(pickletools.genops(data))
    except Exception:
        return None
    out: list[Op] = []
    memo = 0
    for k, (op, _arg, pos) in enumerate(parsed):
        end = parsed[k + 1][2] if k + 1 < len(parsed) else (pos or 0) + 1
        raw = data[pos:end]
        if op.name == "FRAME":
            continue
        if op.name == "MEMOIZE":
            raw = b"r" + struct.pack("<I", memo)
            out.append(("LONG_BINPUT", raw))
            memo += 1
            continue
        if op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo += 1
        out.append((op.name, raw))
    return out


def emit(ops: list[Op]) -> bytes:
    return b"".join(raw for _, raw in ops)


def _int_value(name: str, raw: bytes) -> int | None:
    if name == "LONG1":
        return int.from_bytes(raw[2 : 2 + raw[1]], "little", signed=True)
    if name == "BININT1":
        return raw[1]
    if name == "BININT2":
        return int(struct.unpack("<H", raw[1:3])[0])
    if name == "BININT":
        return int(struct.unpack("<i", raw[1:5])[0])
    if name in ("BINPUT", "BINGET"):
        return raw[1]
    if name in ("LONG_BINPUT", "LONG_BINGET"):
        return int(struct.unpack("<I", raw[1:5])[0])
    return None


def _spell(n: int, rng: random.Random, base0: bool) -> bytes:
    """``n`` as an INT (``base0``) or PUT/GET line that CPython's unpickler reads as ``n``."""
    forms = [str(n), f" {n}", f"+{n}" if n >= 0 else str(n), f"{n}\x00junk", f"{n}\x00"]
    if base0:
        forms += [hex(n) if n >= 0 else f"-{hex(-n)}", f"0o{n:o}" if n >= 0 else str(n)]
        if n > 0:
            forms.append(f"0{n:o}")
    return rng.choice(forms).encode()


def respell_numbers(ops: list[Op], rng: random.Random) -> list[Op]:
    out: list[Op] = []
    for name, raw in ops:
        v = _int_value(name, raw)
        if v is None or rng.random() < 0.3:
            out.append((name, raw))
        elif name == "LONG1":
            out.append(("LONG", b"L" + _spell(v, rng, True) + rng.choice([b"L", b""]) + b"\n"))
        elif name.startswith("BININT"):
            if v in (0, 1) and rng.random() < 0.5:
                out.append((name, raw))  # "00"/"01" lines would read as booleans
            else:
                out.append(("INT", b"I" + _spell(v, rng, True) + b"\n"))
        elif "PUT" in name:
            out.append(("PUT", b"p" + _spell(v, rng, False) + b"\n"))
        else:
            out.append(("GET", b"g" + _spell(v, rng, False) + b"\n"))
    return out


def respell_floats(ops: list[Op], rng: random.Random) -> list[Op]:
    out: list[Op] = []
    for name, raw in ops:
        if name == "BINFLOAT":
            (v,) = struct.unpack(">d", raw[1:9])
            text = rng.choice([repr(v), f"{v}\x00junk", f"{v!r}\x00"])
            out.append(("FLOAT", b"F" + text.encode() + b"\n"))
        else:
            out.append((name, raw))
    return out


def memo_strings(ops: list[Op], rng: random.Random) -> list[Op]:
    """Strings go through the memo: pushed, PUT at a fresh index, popped, fetched back."""
    out: list[Op] = []
    fresh = 50_000 + rng.randrange(1000)
    for name, raw in ops:
        out.append((name, raw))
        if name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "STRING") and rng.random() < 0.7:
            idx = struct.pack("<I", fresh)
            out += [("LONG_BINPUT", b"r" + idx), ("POP", b"0"), ("LONG_BINGET", b"j" + idx)]
            fresh += 1
    return out


def swap_globals(ops: list[Op], rng: random.Random) -> list[Op]:
    """GLOBAL ``mod name`` <-> two strings and STACK_GLOBAL."""
    out: list[Op] = []
    k = 0
    while k < len(ops):
        name, raw = ops[k]
        if name == "GLOBAL":
            mod, attr = raw[1:-1].split(b"\n")
            out += [("BINUNICODE", _binunicode(mod)), ("BINUNICODE", _binunicode(attr))]
            out.append(("STACK_GLOBAL", b"\x93"))
        elif (
            name == "STACK_GLOBAL"
            and len(out) >= 2
            and out[-1][0].endswith("UNICODE")
            and out[-2][0].endswith("UNICODE")
            and rng.random() < 0.8
        ):
            attr, mod = _text(out.pop()[1]), _text(out.pop()[1])
            out.append(("GLOBAL", b"c" + mod + b"\n" + attr + b"\n"))
        else:
            out.append((name, raw))
        k += 1
    return out


def _binunicode(text: bytes) -> bytes:
    return b"X" + struct.pack("<I", len(text)) + text


def _text(raw: bytes) -> bytes:
    if raw[:1] == b"\x8c":
        return raw[2 : 2 + raw[1]]
    return raw[5:]


def drop_proto(ops: list[Op], rng: random.Random) -> list[Op]:
    return [(n, r) for n, r in ops if n != "PROTO"]


PICKLE_MUTATORS: dict[str, Callable[[list[Op], random.Random], list[Op]]] = {
    "numbers": respell_numbers,
    "floats": respell_floats,
    "memo": memo_strings,
    "globals": swap_globals,
    "proto": drop_proto,
}


def pickle_len(data: bytes) -> int | None:
    """Bytes of the first pickle in ``data`` (through its STOP)."""
    try:
        *_, (_, _, pos) = pickletools.genops(data)
    except Exception:
        return None
    return (pos or 0) + 1


def mutate_pickle(data: bytes, rng: random.Random) -> tuple[bytes, list[str]]:
    """The first pickle of ``data`` rewritten by 1-3 mutators; what follows it is kept."""
    ops, n = ops_of(data), pickle_len(data)
    if ops is None or n is None:
        return data, []
    names = rng.sample(sorted(PICKLE_MUTATORS), rng.randint(1, 3))
    for name in names:
        ops = PICKLE_MUTATORS[name](ops, rng)
    return emit(ops) + data[n:], names


# --- containers ------------------------------------------------------------------------------


def _lz4(data: bytes) -> bytes:
    import lz4.frame

    return bytes(lz4.frame.compress(data))


_COMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "lz4": _lz4,
    "zlib": zlib.compress,
    "gzip": gzip.compress,
    "bz2": bz2.compress,
    "xz": lzma.compress,
    "lzma": lambda d: lzma.compress(d, format=lzma.FORMAT_ALONE),
}


def _decompress(kind: str, data: bytes) -> bytes:
    if kind == "zlib":
        return zlib.decompress(data)
    if kind == "gzip":
        return gzip.decompress(data)
    if kind == "bz2":
        return bz2.decompress(data)
    if kind == "lz4":
        import lz4.frame

        return bytes(lz4.frame.decompress(data))
    return lzma.decompress(data)


def restream(kind: str, data: bytes, rng: random.Random) -> tuple[bytes, list[str]]:
    """The decompressed content cut into 2-4 streams; maybe trailing zeros or junk."""
    plain = _decompress(kind, data)
    cuts = sorted(rng.sample(range(1, max(2, len(plain))), min(rng.randint(1, 3), len(plain) - 1)))
    parts = [plain[a:b] for a, b in zip([0, *cuts], [*cuts, len(plain)], strict=True)]
    out = b"".join(_COMPRESS[kind](p) for p in parts)
    how = [f"{len(parts)} streams"]
    if rng.random() < 0.3:
        out += rng.choice([b"\0" * 8, b"junk after the streams"])
        how.append("trailing")
    return out, how


def zip_mutate(data: bytes, rng: random.Random) -> tuple[bytes, list[str]]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        members = [(i.filename, z.read(i.filename)) for i in z.infolist()]
    how: list[str] = []
    pkl = next((n for n, _ in members if n.endswith("/data.pkl")), None)
    if pkl is not None and rng.random() < 0.5:
        body, names = mutate_pickle(dict(members)[pkl], rng)
        members = [(n, body if n == pkl else d) for n, d in members]
        how += names
    if rng.random() < 0.5:
        prefix = rng.choice(["archive", "x", "a" * 40, "data"])
        members = [(prefix + "/" + n.split("/", 1)[1], d) for n, d in members]
        how.append("prefix")
    if rng.random() < 0.3 and pkl is not None:
        members = [(n.replace("data.pkl", "DATA.PKL"), d) for n, d in members]
        how.append("case")
    if rng.random() < 0.4:
        top = members[0][0].split("/", 1)[0]
        decoy = (
            pickle.dumps(0, protocol=2)[:-1]
            + b"(X\x01\x00\x00\x00sX\x01\x00\x00\x00xX\x08\x00\x00\x00data.pklt0."
        )
        members.insert(0, (f"{top}/a.pkl", decoy))
        how.append("decoy")
    if rng.random() < 0.4:
        head, rest = members[:1], members[1:]
        rng.shuffle(rest)
        members = head + rest
        how.append("order")
    out = io.BytesIO()
    method = rng.choice([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
    with zipfile.ZipFile(out, "w", compression=method) as z:
        for n, d in members:
            z.writestr(n, d)
    return out.getvalue(), [*how, "deflated" if method else "stored"]


def tar_mutate(data: bytes, rng: random.Random) -> tuple[bytes, list[str]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        members = [(m.name, tf.extractfile(m).read()) for m in tf.getmembers() if m.isfile()]  # type: ignore[union-attr]
    how: list[str] = []
    links: dict[str, str] = {}
    body = dict(members)["pickle"]
    if rng.random() < 0.5:
        body, names = mutate_pickle(body, rng)
        members = [(n, body if n == "pickle" else d) for n, d in members]
        how += names
    if rng.random() < 0.4:
        members.insert(0, ("pickle", pickle.dumps({"benign": 1}, protocol=2)))
        how.append("duplicate")  # tarfile reads the last member of a name
    if rng.random() < 0.4:
        target = rng.choice(["x", "weights/blob", "pickle.bak"])
        members = [(n, d) for n, d in members if n != "pickle"] + [(target, body), ("pickle", b"")]
        links["pickle"] = target
        how.append("hardlink")
    if rng.random() < 0.3:
        rng.shuffle(members)
        how.append("order")
    out = _write_tar(members, links)
    if rng.random() < 0.3:
        out = _to_v7(out)
        how.append("v7")
    return out, how


def _to_v7(data: bytes) -> bytes:
    """Every ustar header rewritten without its magic (the pre-POSIX format)."""
    buf = bytearray(data)
    pos = 0
    while pos + 512 <= len(buf) and buf[pos]:
        header = buf[pos : pos + 512]
        size = int(header[124:136].split(b"\0")[0].strip() or b"0", 8)
        header[257:265] = b"\0" * 8
        header[148:156] = b" " * 8
        header[148:156] = b"%06o\0 " % sum(header)
        buf[pos : pos + 512] = header
        pos += 512 + (size + 511) // 512 * 512
    return bytes(buf)


_OBJECT_DESCRS = ["'|O'", "'O'", "'object'", "'O8'", "[('f0', '|O')]", "('|O', (1,))"]


def npy_mutate(data: bytes, rng: random.Random) -> tuple[bytes, list[str]]:
    major = data[6]
    hlen = struct.unpack("<H", data[8:10])[0] if major == 1 else struct.unpack("<I", data[8:12])[0]
    start = 10 if major == 1 else 12
    header = data[start : start + hlen].decode("latin-1")
    body = data[start + hlen :]
    how: list[str] = []
    descr = header.split("'descr': ", 1)[1].split(", 'fortran_order'", 1)[0]
    if "O" in descr and rng.random() < 0.7:
        new = rng.choice(_OBJECT_DESCRS)
        shape = header.split("'shape': ", 1)[1].split("}", 1)[0].rstrip(", ")
        if new.startswith("("):
            shape = "(" + shape.strip("(), ").split(",")[0] + ",)"  # subarray adds a dim
            shape = shape if shape != "(,)" else "(1,)"
        header = f"{{'descr': {new}, 'fortran_order': False, 'shape': {shape}, }}"
        how.append("descr " + new)
    if "O" in descr and rng.random() < 0.5:
        body, names = mutate_pickle(body, rng)
        how += names
    version = rng.choice([1, 2, 3])
    text = header.strip().encode("latin-1")
    text += b" " * ((-(12 + len(text) + 1)) % 64) + b"\n"
    length = struct.pack("<H", len(text)) if version == 1 else struct.pack("<I", len(text))
    how.append(f"v{version}")
    return b"\x93NUMPY" + bytes([version, 0]) + length + text + body, how


def npz_mutate(data: bytes, rng: random.Random) -> tuple[bytes, list[str]]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        members = [(i.filename, z.read(i.filename)) for i in z.infolist()]
    how: list[str] = []
    out_members = []
    for n, d in members:
        if d[:6] == b"\x93NUMPY" and b"O" in d[10:80]:
            d, names = npy_mutate(d, rng)
            how += names
        out_members.append((n, d))
    if rng.random() < 0.4:
        rng.shuffle(out_members)
        how.append("order")
    out = io.BytesIO()
    method = rng.choice(
        [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA]
    )
    with zipfile.ZipFile(out, "w", compression=method) as z:
        for n, d in out_members:
            z.writestr(n, d)
    return out.getvalue(), [*how, f"method {method}"]


def mutate(seed: Seed, rng: random.Random) -> tuple[bytes, list[str]]:
    """One grammar-aware mutant of ``seed`` and the mutations applied."""
    kind = seed.kind
    if kind == "pickle":
        body, how = mutate_pickle(seed.data, rng)
        if rng.random() < 0.2:  # a second pickle behind the first: load() runs only one
            body = pickle.dumps(1, protocol=rng.randint(0, 5)) + body
            how.append("prepended")
        return body, how
    if kind.startswith("joblib-") and kind != "joblib-raw":
        return restream(kind.split("-", 1)[1], seed.data, rng)
    if kind == "torch-zip":
        return zip_mutate(seed.data, rng)
    if kind == "tar":
        return tar_mutate(seed.data, rng)
    if kind == "npy":
        return npy_mutate(seed.data, rng)
    if kind == "npz":
        return npz_mutate(seed.data, rng)
    if kind == "torch-legacy":  # the five stacked pickles: rewrite the fourth (the object)
        return _legacy_mutate(seed.data, rng)
    return seed.data, []  # joblib-raw: array bytes sit between opcodes; seeds vary instead


def _legacy_mutate(data: bytes, rng: random.Random) -> tuple[bytes, list[str]]:
    parts = []
    pos = 0
    for _ in range(5):
        n = pickle_len(data[pos:])
        if n is None:
            return data, []
        parts.append(data[pos : pos + n])
        pos += n
    parts[3], how = mutate_pickle(parts[3], rng)
    if rng.random() < 0.4:  # torch compares the unpickled magic number, not its bytes
        ops = ops_of(parts[0])
        if ops is not None:
            parts[0] = emit(respell_numbers(ops, rng))
            how.append("magic respelled")
    return b"".join(parts) + data[pos:], how


# --- the run ---------------------------------------------------------------------------------


def run(
    seeds: list[Seed], *, mutants_per_seed: int, seed: int, workdir: Path, seconds: int = 2
) -> Report:
    """Mutate every seed, scan every mutant, load it with each of its loaders in a sandbox."""
    rng = random.Random(seed)
    report = Report()
    jobs: list[tuple[Path, str]] = []
    info: list[tuple[str, str]] = []  # (mutant name, verdict)
    for s in seeds:
        for k in range(mutants_per_seed):
            data, how = mutate(s, rng)
            path = workdir / f"{s.name}-{k}.bin"
            path.write_bytes(data)
            verdict = scan_file(path).verdict.value
            for loader in s.loaders:
                jobs.append((path, loader))
                info.append((f"{path.name} [{', '.join(how) or 'as written'}]", verdict))
    results = run_loaders(jobs, seconds=seconds)
    for (_, loader), (name, verdict), res in zip(jobs, info, results, strict=True):
        report.tried[loader] = report.tried.get(loader, 0) + 1
        outcome = str(res["outcome"])
        report.outcomes[outcome] = report.outcomes.get(outcome, 0) + 1
        if not res["fired"]:
            continue
        report.fired[loader] = report.fired.get(loader, 0) + 1
        report.verdicts[verdict] = report.verdicts.get(verdict, 0) + 1
        mine = report.by_loader.setdefault(loader, {})
        mine[verdict] = mine.get(verdict, 0) + 1
        if verdict == "safe":
            report.bypasses.append((name, loader, str(res["outcome"])))
    return report
