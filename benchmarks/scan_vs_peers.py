"""Model-file scanners head to head: picklescan, modelscan, fickling, ModelAudit and mlwarden.

Part 1 (corpora): the malicious corpus (canary payloads) and the benign corpus
(files written by PyTorch, scikit-learn, joblib, NumPy, safetensors and the ONNX
exporter) from ``tests/supplychain/corpus.py`` are scanned by every tool. A file
counts as *flagged* when the tool does not call it clean (an issue,
an error, or a crash: a gate built on the tool would not pass it). Printed: detection
rate, false-flag rate, crashes, and the median CPU time (``time.process_time``, which
a loaded shared machine distorts far less than wall time; wall time is printed too)
over ``--repeats`` runs after one warm-up run. Each run of each tool is a fresh
subprocess that imports only that tool, as its command line would, and the tools
are interleaved so load drift hits them alike.

Part 2 (big files, ``--big``): a 1 GiB raw pickle (a dict of float32 arrays, one
of 512 MiB), a 2 GiB PyTorch zip checkpoint and a 48 MB object-heavy pickle (a
1.5-million-entry dict of small lists) are generated in a temporary folder
and deleted afterwards (warm page cache). Each tool scans each file in a fresh
subprocess (median time of 3 runs, 1 for fickling; highest peak RSS) that reports
its wall time and peak RSS (``VmHWM`` from ``/proc/self/status``), along with the
peak RSS after imports and before the scan.

ModelAudit (promptfoo's ``modelaudit``, a dev extra) runs with
``PROMPTFOO_DISABLE_TELEMETRY=1``; a file counts as flagged when it reports a critical,
warning or high issue, or an error (its verdicts depend on the packages installed beside
it: it uses optional libraries when they import). It takes seconds per file, so it runs
one pass only (its first and only pass gives both its verdicts and its time; the other
tools get a warm-up pass and ``--repeats`` timed passes).

Run::

    timeout 1800 .venv/bin/python benchmarks/scan_vs_peers.py --repeats 3 --big
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# ModelAudit sends usage telemetry unless told not to; children inherit this
os.environ.setdefault("PROMPTFOO_DISABLE_TELEMETRY", "1")
sys.path.insert(0, str(ROOT / "tests" / "supplychain"))


def ours(path: Path) -> bool:
    from mlwarden.supplychain import scan_file

    return scan_file(path).verdict.value != "safe"


def picklescan(path: Path) -> bool:
    from picklescan.scanner import scan_file_path

    r = scan_file_path(str(path))
    return bool(r.issues_count or r.infected_files or r.scan_err)


def modelscan(path: Path) -> bool:
    from modelscan.modelscan import ModelScan

    r = ModelScan().scan(path)
    return bool(r.get("issues") or r.get("errors"))


def fickling(path: Path) -> bool:
    import fickling as fk

    r = fk.scan_file(str(path), graceful=True)
    return not bool(r)


def modelaudit(path: Path) -> bool:
    from modelaudit.core import scan_model_directory_or_file

    r = scan_model_directory_or_file(str(path))
    sev = {str(getattr(i.severity, "value", i.severity)).lower() for i in r.issues}
    return bool(sev & {"critical", "warning", "high"}) or bool(r.has_errors)


#: tools too slow for repeated passes over the corpus (one pass gives verdicts and time)
ONE_PASS = frozenset({"modelaudit"})

TOOLS: dict[str, Callable[[Path], bool]] = {
    "mlwarden": ours,
    "picklescan": picklescan,
    "modelscan": modelscan,
    "fickling": fickling,
    "modelaudit": modelaudit,
}


def run_tool(fn: Callable[[Path], bool], paths: list[Path]) -> tuple[list[bool], int]:
    flags, crashes = [], 0
    sink = io.StringIO()
    for p in paths:
        try:
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                flags.append(bool(fn(p)))
        except Exception:
            crashes += 1
            flags.append(True)
    return flags, crashes


def corpora(repeats: int, workdir: Path) -> dict[str, dict[str, float]]:
    import torch
    from corpus import build_benign, build_malicious

    torch.set_num_threads(1)
    canary = workdir / "CANARY"
    mal = build_malicious(workdir / "malicious", canary)
    ben = build_benign(workdir / "benign")
    mal_paths = [c.path for c in mal]
    print(f"corpora: {len(mal_paths)} malicious, {len(ben)} benign files")
    rows: dict[str, dict[str, float]] = {}
    listing = workdir / "files.json"
    listing.write_text(
        json.dumps({"mal": [str(p) for p in mal_paths], "ben": [str(p) for p in ben]})
    )
    runs: dict[str, list[dict]] = {name: [] for name in TOOLS}
    for rep in range(repeats):
        # each tool in a fresh process that imports only that tool, like its CLI would;
        # tools interleaved, so load drift on a shared machine hits all of them alike
        for name in TOOLS:
            if name in ONE_PASS and rep:
                continue
            code = CORPUS_CHILD.format(
                bench=str(Path(__file__).parent), tool=name, listing=str(listing)
            )
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
            runs[name].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    n_mal = len(mal_paths)
    suffixes = sorted({p.suffix or "(none)" for p in [*mal_paths, *ben]})
    by_suffix: dict[str, dict[str, float]] = {}
    for name in TOOLS:
        flags = runs[name][0]["flags"]
        mflags, bflags = flags[:n_mal], flags[n_mal:]
        missed = [c for c, f in zip(mal, mflags, strict=True) if not f]
        false = [p for p, f in zip(ben, bflags, strict=True) if f]
        rows[name] = {
            "detection": sum(mflags) / len(mflags),
            "false_flags": sum(bflags) / len(bflags),
            "missed": len(missed),
            "false": len(false),
            "crashes": runs[name][0]["crashes"],
            "seconds": statistics.median(r["total"] for r in runs[name]),
            "cpu_seconds": statistics.median(r["cpu"] for r in runs[name]),
        }
        medians = [
            statistics.median(col) for col in zip(*(r["per_file"] for r in runs[name]), strict=True)
        ]
        by_suffix[name] = {
            sfx: sum(
                t
                for p, t in zip([*mal_paths, *ben], medians, strict=True)
                if (p.suffix or "(none)") == sfx
            )
            for sfx in suffixes
        }
        cats = sorted({c.category for c in missed})
        print(
            f"  {name:<10} missed {len(missed):>3} ({', '.join(cats) or '-'}); "
            f"false flags {len(false):>2} ({', '.join(sorted(p.name for p in false))[:160] or '-'})"
        )
    print("\nmedian CPU ms per file type (sum over the files of that type)")
    print(f"{'type':<14}{'files':>6}" + "".join(f"{n:>12}" for n in TOOLS))
    for sfx in suffixes:
        count = sum(1 for p in [*mal_paths, *ben] if (p.suffix or "(none)") == sfx)
        print(f"{sfx:<14}{count:>6}" + "".join(f"{by_suffix[n][sfx] * 1000:>12.1f}" for n in TOOLS))
    rows["by_suffix_ms"] = {n: {k: v * 1000 for k, v in d.items()} for n, d in by_suffix.items()}  # type: ignore[assignment]
    assert not canary.exists(), "a payload ran during the benchmark"
    base = rows["mlwarden"]["cpu_seconds"]
    print(
        f"\n{'tool':<11}{'detection':>10}{'false flags':>13}{'crashes':>9}{'CPU s':>8}"
        f"{'x ours':>8}{'wall s':>8}"
    )
    for name in TOOLS:
        r = rows[name]
        print(
            f"{name:<11}{r['detection']:>9.1%}{r['false_flags']:>12.1%}{r['crashes']:>9.0f}"
            f"{r['cpu_seconds']:>8.3f}{r['cpu_seconds'] / base:>8.2f}{r['seconds']:>8.3f}"
        )
    return rows


CORPUS_CHILD = r"""
import json, sys, time, logging
sys.path.insert(0, {bench!r})
logging.disable(logging.CRITICAL)
import scan_vs_peers as b
from pathlib import Path
files = json.loads(Path({listing!r}).read_text())
paths = [Path(p) for p in files["mal"] + files["ben"]]
fn = b.TOOLS[{tool!r}]
one_pass = {tool!r} in b.ONE_PASS
if not one_pass:
    flags, crashes = b.run_tool(fn, paths)  # warm-up run; its verdicts are the result
per_file, timed = [], []
t0, c0 = time.perf_counter(), time.process_time()
for p in paths:
    t = time.process_time()
    timed.append(b.run_tool(fn, [p]))
    per_file.append(time.process_time() - t)
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
if one_pass:
    flags = [f[0][0] for f in timed]
    crashes = sum(f[1] for f in timed)
print(json.dumps({{"flags": flags, "crashes": crashes, "total": wall, "cpu": cpu, "per_file": per_file}}))
"""

CHILD = r"""
import json, sys, time, logging
sys.path.insert(0, {bench!r})
logging.disable(logging.CRITICAL)
import scan_vs_peers as b
from pathlib import Path
files = json.loads(Path({listing!r}).read_text())
mal = [Path(p) for p in files["mal"]]
ben = [Path(p) for p in files["ben"]]
fn = b.TOOLS[{tool!r}]
mflags, mcrash = b.run_tool(fn, mal)  # warm-up run gives the verdicts
bflags, bcrash = b.run_tool(fn, ben)
times = []
for _ in range({repeats}):
    t0 = time.perf_counter()
    b.run_tool(fn, mal)
    b.run_tool(fn, ben)
    times.append(time.perf_counter() - t0)
print(json.dumps({{"mflags": mflags, "bflags": bflags, "crashes": mcrash + bcrash, "times": times}}))
"""

CHILD = r"""
import json, sys, time, io, contextlib, logging
sys.path.insert(0, {bench!r})
logging.disable(logging.CRITICAL)
import scan_vs_peers as b
from pathlib import Path
fn = b.TOOLS[{tool!r}]
if {tool!r} == "mlwarden":
    import mlwarden.supplychain
elif {tool!r} == "picklescan":
    import picklescan.scanner
elif {tool!r} == "modelscan":
    import modelscan.modelscan
elif {tool!r} == "modelaudit":
    import modelaudit.core
else:
    import fickling
def hwm():
    # VmHWM: this process's own peak resident set (ru_maxrss would include the
    # parent's pages at fork time)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
rss0 = hwm()
t0, c0 = time.perf_counter(), time.process_time()
with contextlib.redirect_stdout(io.StringIO()):
    try:
        flagged = fn(Path({path!r}))
        err = None
    except Exception as exc:
        flagged, err = True, type(exc).__name__
secs, cpu = time.perf_counter() - t0, time.process_time() - c0
rss = hwm()
print(json.dumps({{"seconds": secs, "cpu": cpu, "rss_mb": rss, "rss_import_mb": rss0, "flagged": flagged, "error": err}}))
"""


def big_files(workdir: Path) -> dict[str, dict[str, dict[str, float]]]:
    import pickle

    import numpy as np
    import torch

    raw = workdir / "big_raw.pkl"
    arrays = {"embedding": np.empty(128 << 20, np.float32)}  # 512 MiB
    arrays.update({f"layer{i}.weight": np.empty(16 << 20, np.float32) for i in range(8)})
    with raw.open("wb") as f:
        pickle.dump(arrays, f, protocol=4)
    del arrays
    ckpt = workdir / "big_checkpoint.pt"
    state = {f"block{i}.weight": torch.empty(64 << 20, dtype=torch.float32) for i in range(8)}
    torch.save({"model": state, "epoch": 1}, ckpt)
    del state
    objs = workdir / "object_heavy.pkl"
    with objs.open("wb") as f:
        pickle.dump({f"key{i}": [i, float(i), "v"] for i in range(1_500_000)}, f, protocol=4)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for path in (raw, ckpt, objs):
        size = path.stat().st_size / 2**30
        print(f"\n{path.name}: {size:.2f} GiB")
        print(
            f"{'tool':<11}{'wall s':>9}{'CPU s':>9}{'peak RSS MB':>13}{'RSS after import':>18}"
            f"{'flagged':>9}"
        )
        out[path.name] = {}
        for tool in TOOLS:
            code = CHILD.format(bench=str(Path(__file__).parent), tool=tool, path=str(path))
            reps = []
            if tool == "fickling" and path == objs:
                print(f"{tool:<11} skipped (its symbolic interpreter takes many minutes here)")
                continue
            for _ in range(1 if tool == "fickling" else 3):  # fickling takes minutes here
                proc = subprocess.run(
                    [sys.executable, "-c", code], capture_output=True, text=True, timeout=900
                )
                try:
                    reps.append(json.loads(proc.stdout.strip().splitlines()[-1]))
                except (IndexError, ValueError):
                    print(f"{tool:<11} failed: {proc.stderr.strip()[-200:]}")
                    break
            if not reps:
                continue
            r = dict(reps[0])
            r["seconds"] = statistics.median(x["seconds"] for x in reps)
            r["cpu"] = statistics.median(x["cpu"] for x in reps)
            r["rss_mb"] = max(x["rss_mb"] for x in reps)
            r["runs"] = len(reps)
            out[path.name][tool] = r
            note = f" ({r['error']})" if r["error"] else ""
            print(
                f"{tool:<11}{r['seconds']:>9.3f}{r['cpu']:>9.3f}{r['rss_mb']:>13.0f}"
                f"{r['rss_import_mb']:>18.0f}"
                f"{r['flagged']!s:>9}{note}"
            )
        path.unlink()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--big", action="store_true", help="also run the 1 GiB / 2 GiB files")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--skip-corpora", action="store_true", help="only the big files")
    args = ap.parse_args()
    logging.disable(logging.CRITICAL)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="mlw-scan-bench-") as tmp:
        if not args.skip_corpora:
            results["corpora"] = corpora(args.repeats, Path(tmp))
        if args.big:
            results["big"] = big_files(Path(tmp))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
