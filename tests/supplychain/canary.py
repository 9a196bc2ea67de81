"""Load files with the real victim loaders in a fresh, resource-limited process.

The differential tests need the loader's own answer: does ``pickle.load``, ``numpy.load
(allow_pickle=True)``, ``joblib.load`` or ``torch.load(weights_only=False)`` run the
file's payload? Payloads are harmless canaries (``os.mkdir`` of a marker folder). The
child process records, through a ``sys.addaudithook`` hook, every ``os.mkdir`` outside
its own temporary folder and every process start, so a payload whose marker path a
mutation changed is still seen. Many files go through one child process (imports cost
seconds); each load gets its own alarm, the child a CPU and file-size limit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

LOADERS = ("pickle", "numpy", "joblib", "torch")

_CHILD = r"""
import json, os, pickle, resource, signal, sys, warnings
warnings.simplefilter("ignore")
jobs = json.loads(sys.stdin.read())
own_tmp = os.path.realpath(os.environ["TMPDIR"])
resource.setrlimit(resource.RLIMIT_CPU, (600, 600))
resource.setrlimit(resource.RLIMIT_FSIZE, (256 << 20, 256 << 20))
resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))  # a mutated size cannot take the host
fired = [False]
SPAWN = ("os.system", "os.exec", "os.posix_spawn", "os.spawn", "subprocess.Popen", "os.fork")

def hook(event, args):
    if event == "os.mkdir":
        path = os.path.realpath(os.fsdecode(args[0])) if isinstance(args[0], (str, bytes)) else ""
        if not path.startswith(own_tmp + os.sep):
            fired[0] = True
    elif event in SPAWN:
        fired[0] = True

def alarm(signum, frame):
    raise TimeoutError("load did not finish")

def load(path, loader):
    if loader == "pickle":
        with open(path, "rb") as f:
            return pickle.load(f)
    if loader == "numpy":
        import numpy as np
        out = np.load(path, allow_pickle=True)
        if hasattr(out, "files"):
            return [out[k] for k in out.files]
        return out
    if loader == "joblib":
        import joblib
        return joblib.load(path)
    if loader == "torch":
        import torch
        return torch.load(path, weights_only=False)
    raise ValueError(loader)

for loader in {j[1] for j in jobs}:  # imports outside the timed loads
    try:
        load.__globals__[loader] = __import__(loader)
    except ImportError:
        pass
signal.signal(signal.SIGALRM, alarm)
sys.addaudithook(hook)
for path, loader, seconds in jobs:
    fired[0] = False
    outcome = "ok"
    signal.alarm(seconds)
    try:
        load(path, loader)
    except TimeoutError:
        outcome = "timeout"
    except BaseException as exc:
        outcome = "error: " + type(exc).__name__
    finally:
        signal.alarm(0)
    sys.stdout.write(json.dumps({"fired": fired[0], "outcome": outcome}) + "\n")
    sys.stdout.flush()
"""


def run_loaders(
    jobs: list[tuple[Path, str]], *, seconds: int = 10, batch: int = 200
) -> list[dict[str, object]]:
    """Load each ``(path, loader)`` in a fresh child process; per job ``{"fired": bool,
    "outcome": "ok" | "timeout" | "crash" | "error: <ExceptionName>"}``.

    ``seconds`` bounds each load (a loader that never returns is a ``timeout``); a load
    that kills the child (a crash in native code, the memory limit) is a ``crash`` and a
    new child takes the remaining jobs. Example::

        [r] = run_loaders([(Path("evil.pkl"), "pickle")])
        r["fired"]  # True when the file ran its payload
    """
    results: list[dict[str, object]] = []
    while len(results) < len(jobs):
        chunk = jobs[len(results) : len(results) + batch]  # a bounded child per batch
        done = _child(chunk, seconds, timeout=300 + len(chunk) * (seconds + 2))
        results += done
        if len(done) < len(chunk):
            results.append({"fired": False, "outcome": "crash"})
    return results


def _child(jobs: list[tuple[Path, str]], seconds: int, timeout: float) -> list[dict[str, object]]:
    with tempfile.TemporaryDirectory(prefix="mlw-loaders-") as own_tmp:
        env = {**os.environ, "TMPDIR": own_tmp, "PYTHONDONTWRITEBYTECODE": "1"}
        payload = json.dumps([(str(p), loader, seconds) for p, loader in jobs])
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD],
            input=payload,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            cwd=own_tmp,
        )
    done = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 and not done and proc.returncode > 0:
        raise RuntimeError(f"loader process failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return done


def mkdir_payload(marker: Path) -> bytes:
    """Protocol 0 opcodes that call ``os.mkdir(marker)`` and leave its result on the stack
    (no STOP): the canary of every differential test."""
    return b"cos\nmkdir\n(V" + str(marker).encode() + b"\ntR"
