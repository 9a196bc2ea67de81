"""Integrity benchmark: hashing, signing and verification throughput against peers.

Peers on the same input, in one process: coreutils ``sha256sum`` and sigstore's
``model-signing`` (sign and verify with an elliptic-curve key, file serialization,
SHA-256). Workloads:

1. one large file (default 2 GiB of random bytes, a single-file model);
2. a many-file model folder (default 1,000 safetensors shards of 1 MiB);
3. a dataset of 10,000 small files (one ``.npy`` uint8 image per sample, 1-4 KiB):
   ``registry add`` (scan + hash + store + sign) and ``verify`` latency;
4. ``interop``: signatures made by each tool verified by the other, for each key type
   (ECDSA P-256 / P-384 / P-521, Ed25519), files and shards serialization, a
   one-byte tamper each way, and the signature ``registry add --sign KEY`` writes
   next to the version verified by model-signing; then ``mlwarden sign`` / ``mlwarden verify`` (the
   Sigstore-bundle path, no registry) against model-signing's sign / verify on one
   large file (``--interop-mib``) and on 2,000 small files (``--interop-small``).

The large inputs are real safetensors files (random F32 weights), so the registry's
model-file scanner (``mlwarden.supplychain``) runs on them as it would in use.

Every figure is the median over ``--repeats`` runs, the tools run round-robin within
each repeat (so load drifts on a shared machine hit all of them alike), with the page
cache warm (each input is read once first): the figures measure hashing and
bookkeeping, not the disk. ``registry add`` (scan + hash + copy into the store with
fsync + sign + commit) runs once per workload. Throughput in MiB/s (2^20 bytes per second); latency in seconds.

Run::

    timeout 1800 .venv/bin/python benchmarks/integrity_vs_peers.py --repeats 3
    timeout 900 .venv/bin/python benchmarks/integrity_vs_peers.py --only interop --repeats 3
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import random
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mlwarden.integrity.dsse import (
    make_statement,
    sign_statement,
    statement_manifest,
    verify_envelope,
)
from mlwarden.integrity.hashing import hash_files
from mlwarden.integrity.keys import generate_keypair, load_private_key, load_public_key
from mlwarden.integrity.manifest import build_manifest, compare_folder
from mlwarden.integrity.registry import Registry
from mlwarden.integrity.signature_check import sign_model, verify_signature_report
from mlwarden.integrity.verify import verify_report

MIB = 1024 * 1024


def real_scanner() -> bool:
    try:
        return hasattr(importlib.import_module("mlwarden.supplychain"), "scan_paths")
    except ImportError:
        return False


def pass_all(paths: Sequence[Path]) -> dict[str, tuple[str, str]]:
    return {str(p): ("safe", "") for p in paths}


def write_random(path: Path, size: int, prefix: bytes = b"") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(prefix)
        left = size
        while left:
            n = min(left, 16 * MIB)
            f.write(os.urandom(n))
            left -= n


def write_safetensors(path: Path, size: int) -> None:
    """A real safetensors file: one F32 tensor of ``size`` bytes of random weights."""
    count = size // 4
    header = json.dumps(
        {"weight": {"dtype": "F32", "shape": [count], "data_offsets": [0, 4 * count]}}
    ).encode()
    header += b" " * (-len(header) % 8)
    write_random(path, 4 * count, prefix=struct.pack("<Q", len(header)) + header)


def sha256sum(paths: Sequence[Path]) -> None:
    # xargs batches the names like a shell glob would; one sha256sum process at a time
    proc = subprocess.run(
        ["xargs", "-0", "sha256sum"],
        input=b"\0".join(str(p).encode() for p in paths),
        stdout=subprocess.DEVNULL,
        check=True,
    )
    assert proc.returncode == 0


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]


class ModelSigning:
    """sigstore model-signing with a P-256 key (it has no Ed25519 signer)."""

    def __init__(self, work: Path) -> None:
        from model_signing import hashing, signing, verifying

        self.hashing, self.signing, self.verifying = hashing, signing, verifying
        key = ec.generate_private_key(ec.SECP256R1())
        self.priv = work / "ms.key"
        self.pub = work / "ms.pub"
        self.priv.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        self.pub.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def hash(self, model: Path) -> None:
        self.hashing.Config().use_file_serialization().hash(model)

    def sign(self, model: Path, sig: Path) -> None:
        self.signing.Config().use_elliptic_key_signer(private_key=self.priv).sign(model, sig)

    def verify(self, model: Path, sig: Path) -> None:
        self.verifying.Config().use_elliptic_key_verifier(public_key=self.pub).verify(model, sig)


def ours_verify_deployed(envelope: str, pub: Path, model: Path) -> None:
    """What model-signing's verify does: check the signature, then re-hash the copy."""
    statement, _ = verify_envelope(envelope, [load_public_key(pub)])
    diff = compare_folder(statement_manifest(statement), model)
    assert diff.clean, diff


def interleaved(
    jobs: dict[str, Callable[[], Any]], repeats: int, raw: dict[str, list[float]] | None = None
) -> dict[str, float]:
    """Median seconds per job, run round-robin so load drifts hit all alike.

    The order rotates each repeat, so no tool always runs first (after a peer's
    garbage) or last. ``raw`` receives every repeat's wall seconds per job, and
    under ``NAME:cpu`` its CPU seconds (this process, all threads): on a shared
    machine the CPU time is the figure the load does not inflate.
    """
    times: dict[str, list[float]] = {name: [] for name in jobs} if raw is None else raw
    times.update({name: [] for name in jobs})
    times.update({f"{name}:cpu": [] for name in jobs})
    names = list(jobs)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn = jobs[name]
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            times[name].append(time.perf_counter() - t0)
            times[f"{name}:cpu"].append(time.process_time() - c0)
    return {name: statistics.median(times[name]) for name in jobs}


def workload(
    label: str,
    model: Path,
    work: Path,
    ms: ModelSigning | None,
    key: Path,
    pub: Path,
    repeats: int,
    scanner: Any,
) -> dict[str, Any]:
    files = all_files(model)
    total = sum(p.stat().st_size for p in files)
    print(f"\n== {label}: {len(files)} files, {total / MIB:.0f} MiB ==", flush=True)
    sha256sum(files)  # warm the page cache
    out: dict[str, Any] = {"files": len(files), "bytes": total}

    reg_root = work / f"reg-{label}"
    shutil.rmtree(reg_root, ignore_errors=True)
    t0 = time.perf_counter()
    with Registry.open(reg_root) as reg:
        rec = reg.add(model, name="bench", sign_key=key, scanner=scanner, source="bench")
    out["ours_add_s"] = round(time.perf_counter() - t0, 3)
    envelope = rec.envelope
    assert envelope is not None
    private_key = load_private_key(key)

    def registry_verify() -> None:
        report = verify_report("bench@1", registry=reg_root, trust=[pub])
        assert report.findings == [], [f.title for f in report.findings]

    jobs: dict[str, Callable[[], Any]] = {
        "sha256sum": lambda: sha256sum(files),
        "ours_hash": lambda: hash_files(files),
        "ours_manifest": lambda: build_manifest(model),
        "ours_sign": lambda: sign_statement(
            make_statement(build_manifest(model), {"name": "bench"}), private_key
        ),
        "ours_verify": lambda: ours_verify_deployed(envelope, pub, model),
        "ours_registry_verify": registry_verify,
    }
    if ms is not None:
        sig = work / f"{label}.sig"
        ms.sign(model, sig)
        jobs["ms_hash"] = lambda: ms.hash(model)
        jobs["ms_sign"] = lambda: ms.sign(model, sig)
        jobs["ms_verify"] = lambda: ms.verify(model, sig)
    for name, seconds in interleaved(jobs, repeats).items():
        out[f"{name}_s"] = round(seconds, 3)
        out[f"{name}_mibs"] = round(total / MIB / seconds, 1)
    out["hash_ratio_vs_sha256sum"] = round(out["sha256sum_s"] / out["ours_hash_s"], 2)
    if ms is not None:
        out["verify_speedup_vs_model_signing"] = round(out["ms_verify_s"] / out["ours_verify_s"], 2)
        out["sign_speedup_vs_model_signing"] = round(out["ms_sign_s"] / out["ours_sign_s"], 2)
    shutil.rmtree(reg_root, ignore_errors=True)
    for k, v in out.items():
        print(f"  {k:36s} {v}", flush=True)
    return out


def _ms_sign(priv: Path, model: Path, sig: Path, shard: int | None) -> None:
    from model_signing import hashing, signing

    cfg = hashing.Config().set_ignored_paths(paths=[sig.name])
    if shard:
        cfg.use_shard_serialization(shard_size=shard)
    signing.Config().use_elliptic_key_signer(private_key=priv).set_hashing_config(cfg).sign(
        model, sig
    )


def _ms_verify(pub: Path, model: Path, sig: Path) -> str:
    from model_signing import verifying

    try:
        verifying.Config().use_elliptic_key_verifier(public_key=pub).verify(model, sig)
    except Exception as exc:  # the reference reports every failure as an exception
        return f"refused ({type(exc).__name__})"
    return "ok"


def _ours_verify(pub: Path, model: Path, sig: Path) -> str:
    report = verify_signature_report(model, sig, trust=[pub])
    return (
        "ok"
        if not report.findings
        else "refused (" + ",".join(f.rule for f in report.findings) + ")"
    )


def _tamper(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))


#: Who signs -> who verifies. "registry": ``registry add --sign KEY`` (the registry's own
#: records signed with that key) and the model-signing bundle it writes next to the version.
DIRECTIONS = (
    "model_signing -> mlwarden",
    "mlwarden -> model_signing",
    "registry -> model_signing",
)


def _registry_sign(work: Path, model: Path, priv: Path) -> Path:
    from mlwarden.integrity.registry_signatures import write_version_signature

    root = work / "interop-registry"
    shutil.rmtree(root, ignore_errors=True)
    with Registry.open(root) as reg:
        rec = reg.add(model, name="interop", scanner=pass_all, sign_key=priv)
        return write_version_signature(reg.store.root, rec, priv)


def interop_matrix(work: Path) -> list[dict[str, Any]]:
    """Each direction x key type x serialization: clean verify, then after a one-byte tamper."""
    rows = []
    for key_type in ("ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "ed25519"):
        priv, pub = generate_keypair(work / "interop-keys" / key_type, key_type)
        for shard in (None, 4096):
            for direction in DIRECTIONS:
                model = work / "interop-model"
                shutil.rmtree(model, ignore_errors=True)
                for i in range(20):
                    write_random(model / f"part{i // 10}" / f"w{i:02d}.bin", 10_000)
                sig = model / "model.sig"
                row: dict[str, Any] = {
                    "keys": key_type,
                    "serialization": "shards" if shard else "files",
                    "direction": direction,
                }
                try:
                    if direction.startswith("model_signing"):
                        _ms_sign(priv, model, sig, shard)
                        check = _ours_verify
                    elif direction.startswith("registry"):
                        if shard:  # the registry signs its manifest: files, SHA-256
                            continue
                        sig = _registry_sign(work, model, priv)
                        check = _ms_verify
                    else:
                        sign_model(
                            model,
                            priv,
                            sig,
                            method="shards" if shard else "files",
                            shard_size=shard or 10**9,
                        )
                        check = _ms_verify
                except Exception as exc:
                    row.update(clean=f"cannot sign ({type(exc).__name__})", tampered="-")
                    rows.append(row)
                    continue
                row["clean"] = check(pub, model, sig)
                _tamper(model / "part1" / "w13.bin")
                row["tampered"] = check(pub, model, sig)
                rows.append(row)
    for r in rows:
        print(
            f"  {r['keys']:11s} {r['serialization']:6s} {r['direction']:26s} "
            f"clean={r['clean']:24s} tampered={r['tampered']}",
            flush=True,
        )
    return rows


def interop_speed(label: str, model: Path, work: Path, repeats: int) -> dict[str, Any]:
    """mlwarden sign / verify (Sigstore bundle) against model_signing sign / verify, P-256."""
    files = all_files(model)
    total = sum(p.stat().st_size for p in files)
    print(f"\n== interop {label}: {len(files)} files, {total / MIB:.0f} MiB ==", flush=True)
    sha256sum(files)  # warm the page cache
    priv, pub = generate_keypair(work / "speed-keys" / label, "ecdsa-p256")
    ours_sig, ms_sig = work / f"{label}-ours.sig", work / f"{label}-ms.sig"
    sign_model(model, priv, ours_sig)
    _ms_sign(priv, model, ms_sig, None)
    registries: list[Path] = []

    def registry_add() -> None:
        """registry add (scan + hash + store copy + commit) into a fresh registry."""
        registries.append(work / f"{label}-reg{len(registries)}")
        with Registry.open(registries[-1]) as reg:
            # random .bin files are not model files: only the safetensors file meets the scanner
            real = real_scanner() and label == "single_file"
            reg.add(model, name="bench", scanner=None if real else pass_all)

    jobs: dict[str, Callable[[], Any]] = {
        "ours_sign": lambda: sign_model(model, priv, ours_sig),
        "ms_sign": lambda: _ms_sign(priv, model, ms_sig, None),
        "ours_verify": lambda: _ours_verify(pub, model, ms_sig),
        "ms_verify": lambda: _ms_verify(pub, model, ours_sig),
        "ours_registry_add": registry_add,
    }
    out: dict[str, Any] = {"files": len(files), "bytes": total}
    raw: dict[str, list[float]] = {}
    for name, seconds in interleaved(jobs, repeats, raw).items():
        out[f"{name}_s"] = round(seconds, 3)
    out["sign_speedup_vs_model_signing"] = round(out["ms_sign_s"] / out["ours_sign_s"], 2)
    out["verify_speedup_vs_model_signing"] = round(out["ms_verify_s"] / out["ours_verify_s"], 2)
    out["registry_add_over_ms_sign"] = round(out["ours_registry_add_s"] / out["ms_sign_s"], 2)
    # the same repeat's pair saw the same load: the paired ratios are the steadier figure
    paired = sorted(a / m for a, m in zip(raw["ours_registry_add"], raw["ms_sign"], strict=True))
    out["registry_add_over_ms_sign_paired"] = [round(r, 2) for r in paired]
    out["registry_add_over_ms_sign_paired_median"] = round(statistics.median(paired), 2)
    for name in ("ours_registry_add", "ms_sign", "ours_sign"):
        out[f"{name}_cpu_s"] = round(statistics.median(raw[f"{name}:cpu"]), 3)
    out["registry_add_over_ms_sign_cpu"] = round(
        out["ours_registry_add_cpu_s"] / out["ms_sign_cpu_s"], 2
    )
    for root in registries:
        shutil.rmtree(root, ignore_errors=True)
    for k, v in out.items():
        print(f"  {k:36s} {v}", flush=True)
    return out


def run_interop(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    print("\n== interop matrix ==", flush=True)
    out: dict[str, Any] = {"matrix": interop_matrix(work)}
    big = work / "interop-single" / "model.safetensors"
    write_safetensors(big, args.interop_mib * MIB)
    out["single_file"] = interop_speed("single_file", big, work, args.repeats)
    shutil.rmtree(big.parent, ignore_errors=True)
    small = work / "interop-small"
    rng = random.Random(0)
    for i in range(args.interop_small):
        write_random(small / f"class{i % 10}" / f"f{i:05d}.bin", rng.randint(1024, 4096))
    out["small_files"] = interop_speed("small_files", small, work, args.repeats)
    shutil.rmtree(small, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gib", type=float, default=2.0)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--file-kib", type=int, default=1024)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--only",
        default="single,many,small",
        help="Comma-separated workloads to run: single, many, small, interop.",
    )
    parser.add_argument("--interop-mib", type=int, default=1024)
    parser.add_argument("--interop-small", type=int, default=2000)
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="mlw-integrity-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    scanner = None if real_scanner() else pass_all
    try:
        ms: ModelSigning | None = ModelSigning(work)
    except ImportError as exc:
        print(f"model-signing unavailable ({exc}); peer columns skipped")
        ms = None
    key, pub = generate_keypair(work / "keys" / f"bench-{os.getpid()}.key")
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "scanner": "mlwarden.supplychain" if scanner is None else "not installed (pass-all)",
            "repeats": args.repeats,
        }
    }
    try:
        only = set(args.only.split(","))
        big = work / "single" / "model.safetensors"
        if "single" in only:
            if not big.exists():
                write_safetensors(big, int(args.size_gib * 1024**3))
            results["single_file"] = workload(
                "single_file", big, work, ms, key, pub, args.repeats, scanner
            )
            shutil.rmtree(work / "single", ignore_errors=True)

        folder = work / "many"
        if "many" in only:
            if not folder.exists():
                for i in range(args.files):
                    name = f"shard{i // 100:02d}/w{i:05d}.safetensors"
                    write_safetensors(folder / name, args.file_kib * 1024)
            results["many_files"] = workload(
                "many_files", folder, work, ms, key, pub, args.repeats, scanner
            )
            shutil.rmtree(folder, ignore_errors=True)

        data = work / "dataset"
        if "small" in only:
            if not data.exists():
                rng = random.Random(0)
                for i in range(args.small):
                    p = data / f"class{i % 10}" / f"img{i:05d}.npy"
                    p.parent.mkdir(parents=True, exist_ok=True)
                    rows = rng.randint(32, 128)  # 1-4 KiB uint8 images, one .npy per sample
                    np.save(p, np.frombuffer(os.urandom(rows * 32), np.uint8).reshape(rows, 32))
            results["small_files"] = workload(
                "small_files", data, work, ms, key, pub, args.repeats, scanner
            )
        if "interop" in only:
            results["interop"] = run_interop(work, args)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print("\n" + json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
