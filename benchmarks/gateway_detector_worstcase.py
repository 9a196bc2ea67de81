"""Detector CPU a query, stage by stage, for normal clients and for clients that shape
their queries to be expensive (issue 19, session 10).

One key, ``Monitor.submit`` one query a request (``--batch``: 8, the default; 1 as
``action: block``), images 3x32x32 at the default detection config (what
``benchmarks/gateway_load.py`` serves: every stage on but dilution). The key is first
fed ``--history`` queries of the client (10,000: a full history), then ``--n`` more are
timed (thread CPU time of each stage's calls, ``time.thread_time``; the whole
``submit`` too). Clients:

- ``distinct``: distinct smooth images, never resent (a normal client);
- ``resend``: 20 images resent with fresh noise of 0.01 (benign, often a candidate);
- ``search``: the issue's noisy random search (2x2 windows of +-0.05, kept with
  probability 0.2, fresh noise sigma 0.01): every query a similarity candidate, so the
  still-ball rule judges every one (the worst case measured in session 9: ~4.5 ms);
- ``search05``: the same with sigma 0.05 (wider clouds).

``--config JSON``: detection settings over the defaults (e.g. dilution on, as ``gateway
calibrate`` writes it). ``--baseline DIR``: ``DIR/src/mlwarden/serve/stationary.py`` (an older tree's) is run on
every call of ``still`` and ``settle`` beside the working tree's, in alternated order,
its verdicts compared (the run stops on a difference) and its CPU reported as
``still_base`` / ``settle_base``; the alerts returned are the working tree's.

Run (about 10 minutes on the loaded 2-core box)::

    OMP_NUM_THREADS=1 timeout 1800 nice -n 10 .venv/bin/python \\
        benchmarks/gateway_detector_worstcase.py --baseline /tmp/base --out worst.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mlwarden.serve import crosskey, dilution, monitor
from mlwarden.serve.config import Detection

SHAPE = (3, 32, 32)
CPU: dict[str, float] = defaultdict(float)


def _timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        t0 = time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            CPU[name] += time.thread_time() - t0

    return run


def instrument(base: Any | None) -> None:
    """Time each stage where the monitor calls it (and the baseline's beside, if given)."""
    for cls, attr, name in ((monitor.Blacklight, "observe_many", "blacklight"),
                            (monitor.Similarity, "observe_many", "similarity"),
                            (monitor.Prada, "flags_many", "prada"),
                            (dilution.Dilution, "flags", "dilution"),
                            (crosskey.CrossKey, "observe", "crosskey"),
                            (monitor.Monitor, "_steady", "answers")):  # fmt: skip
        setattr(cls, attr, _timed(name, getattr(cls, attr)))
    for attr in ("still", "settle"):
        mine = _timed(attr, getattr(monitor, attr))
        if base is None:
            setattr(monitor, attr, mine)
            continue
        setattr(monitor, attr, _beside(mine, _timed(f"{attr}_base", getattr(base, attr)), attr))


def _beside(mine: Callable[..., Any], theirs: Callable[..., Any], attr: str) -> Callable[..., Any]:
    calls = [0]

    def run(sim: Any, vs: np.ndarray, *args: Any) -> Any:
        calls[0] += 1
        if attr == "settle":  # settle changes the held clouds: the baseline gets copies
            held = [monitor.Cloud(**{**vars(h), "rows": h.rows.copy(), "ids": h.ids.copy()})
                    for h in args[1]]  # fmt: skip
            other = (args[0], held, *args[2:])
        else:
            other = args
        first = calls[0] % 2
        a = theirs(sim, vs, *other) if first else None
        out = mine(sim, vs, *args)
        b = a if first else theirs(sim, vs, *other)
        _same(attr, out, b)
        return out

    return run


def _same(attr: str, out: Any, base: Any) -> None:
    if attr == "still":
        ok = out[0] == base[0] and set(out[1]) == set(base[1])
    else:
        ok = [h.gid for h in out[0]] == [h.gid for h in base[0]] and [
            h.gid for h in out[1]] == [h.gid for h in base[1]]  # fmt: skip
    if not ok:
        raise SystemExit(f"{attr}: the baseline's verdicts differ")


def client(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` queries of a client (module docstring)."""
    smooth = lambda k: np.kron(rng.random((k, 3, 8, 8)), np.ones((1, 1, 4, 4)))  # noqa: E731
    if kind == "distinct":
        return smooth(n).astype(np.float32)
    if kind == "resend":
        pool = smooth(20)
        xs = pool[rng.integers(0, 20, n)] + rng.normal(0, 0.01, (n, *SHAPE))
        return np.clip(xs, 0, 1).astype(np.float32)
    sigma = 0.05 if kind == "search05" else 0.01
    x0, delta, out = smooth(1)[0], np.zeros(SHAPE), []
    for _ in range(n):
        cand = delta.copy()
        r, c = rng.integers(0, 31, 2)
        cand[:, r : r + 2, c : c + 2] = rng.choice([-0.05, 0.05])
        out.append(np.clip(x0 + cand + rng.normal(0, sigma, SHAPE), 0, 1))
        if rng.random() < 0.2:
            delta = cand
    return np.asarray(out, dtype=np.float32)


def measure(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed)
    det = Detection.model_validate({**json.loads(args.config), "batch": args.batch})
    mon = monitor.Monitor(det, shape=list(SHAPE))
    label = np.zeros(1, dtype=np.int64)
    warm = client(kind, args.history, rng)
    for i in range(len(warm)):
        mon.submit("k", warm[i : i + 1], label)
    xs = client(kind, args.n, rng)
    CPU.clear()
    t0, flagged = time.thread_time(), 0
    for i in range(len(xs)):
        flagged += bool(mon.submit("k", xs[i : i + 1], label))
    total = time.thread_time() - t0 - CPU.get("still_base", 0.0) - CPU.get("settle_base", 0.0)
    stages = {k: round(v / args.n * 1e6, 1) for k, v in sorted(CPU.items())}
    return {"client": kind, "us_a_query": round(total / args.n * 1e6, 1), "stages": stages,
            "flagged": flagged, "n": args.n, "history": args.history, "batch": args.batch}  # fmt: skip


def load_baseline(root: Path, name: str = "stationary") -> Any:
    """``serve/NAME.py`` of the tree at ``root``, as module ``mlw_base_NAME``."""
    path = root / "src" / "mlwarden" / "serve" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"mlw_base_{name}", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[f"mlw_base_{name}"] = mod
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", default="distinct,resend,search,search05")
    p.add_argument("--history", type=int, default=10_000)
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--baseline", type=Path, default=None)
    p.add_argument(
        "--config",
        default="{}",
        help='detection overrides, JSON: \'{"dilution": {"enabled": true}}\'',
    )
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    instrument(load_baseline(args.baseline) if args.baseline else None)
    rows = []
    for kind in args.only.split(","):
        row = measure(kind, args)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
