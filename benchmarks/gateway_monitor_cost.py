"""Detector CPU per query, per detector and step, in-process (``Monitor`` alone, one key).

For each input kind of ``benchmarks/gateway_detection_long.py`` (digits with one-pixel
shifts, images 3x32x32, a synthetic table, audio, tweets) the deployment's detection
config is what ``gateway calibrate`` writes (dilution on, a whole-history bar); and
breast-cancer rows with ``similarity.projection`` and the residual test
(``dilution.residual``, :func:`cancer`). A key is first fed ``--history`` distinct queries (10,000:
full histories; 0: a young key), then ``--rounds`` rounds of ``--n`` more distinct
queries, one query a request, through :meth:`Monitor.submit` at the default batch of 8
and through :meth:`Monitor.inspect` one query at a time (batch 1, as ``action: block``,
calibration and the detection benchmarks run it). ``--defaults``: the default detection
config instead (what ``benchmarks/gateway_load.py`` serves: no whole-history bar, no
dilution test).

``--baseline DIR``: a second copy of ``serve/monitor.py``, ``serve/dilution.py`` and ``serve/kernels.py`` (from
``DIR/src/mlwarden/serve``, e.g. an export of an older commit) is loaded beside the
working tree's, fed the same queries, and timed in alternated rounds (ABAB), so before
and after come from one process on one machine load. Every alert of both must agree
(the run stops otherwise). CPU time (``time.process_time``); each detector's share is
the thread CPU time of its calls, medians over rounds.

Run (about 10 minutes on the loaded 2-core box)::

    OMP_NUM_THREADS=1 timeout 1800 nice -n 10 .venv/bin/python \\
        benchmarks/gateway_monitor_cost.py --baseline /tmp/base --out cost.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import tempfile
import time
import types
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from gateway_detection_long import Kind, _calibrated, kinds  # noqa: E402
from mlwarden.serve import monitor as new_monitor  # noqa: E402
from mlwarden.serve.config import Detection  # noqa: E402

STEPS = ("blacklight", "similarity", "dilution", "residual_history", "residual", "prada")


def load_baseline(root: Path) -> types.ModuleType:
    """The monitor module of another tree, importing that tree's dilution module."""
    serve = root / "src" / "mlwarden" / "serve"
    spec = importlib.util.spec_from_file_location("mlw_base_dilution", serve / "dilution.py")
    assert spec is not None and spec.loader is not None
    dil = importlib.util.module_from_spec(spec)
    sys.modules["mlw_base_dilution"] = dil
    spec.loader.exec_module(dil)
    src = (serve / "monitor.py").read_text()
    src = src.replace("from mlwarden.serve.dilution import", "from mlw_base_dilution import")
    if (serve / "kernels.py").exists():  # its own compiled kernels, not this tree's
        # a copy of its own: numba's cache beside the tree's file may hold code compiled as
        # mlwarden.serve.kernels (a run from that tree), whose environments then collide
        # with this tree's ("NRT_adapt_ndarray_to_python: descr is NULL", numpy ran instead)
        copy = Path(tempfile.mkdtemp(prefix="mlw_base_kernels_")) / "mlw_base_kernels.py"
        shutil.copyfile(serve / "kernels.py", copy)
        spec = importlib.util.spec_from_file_location("mlw_base_kernels", copy)
        assert spec is not None and spec.loader is not None
        kern = importlib.util.module_from_spec(spec)
        sys.modules["mlw_base_kernels"] = kern
        spec.loader.exec_module(kern)
        src = src.replace(
            "from mlwarden.serve import kernels", "import mlw_base_kernels as kernels"
        )
    mod = types.ModuleType("mlw_base_monitor")
    mod.__file__ = str(serve / "monitor.py")
    sys.modules["mlw_base_monitor"] = mod
    exec(compile(src, mod.__file__, "exec"), mod.__dict__)
    return mod


class Timed:
    """Wraps the detectors of a key's state so that each call's wall time is summed."""

    def __init__(self) -> None:
        self.ns: dict[str, int] = defaultdict(int)

    def wrap(self, obj: Any, method: str, step: str) -> None:
        fn = getattr(obj, method)
        ns = self.ns

        def timed(*a: Any, **k: Any) -> Any:
            t0 = time.thread_time_ns()
            try:
                return fn(*a, **k)
            finally:
                ns[step] += time.thread_time_ns() - t0

        setattr(obj, method, timed)


def _instrument(mon: Any, key: str, timed: Timed) -> None:
    state = mon._keys[key]
    if state.blacklight is not None:
        timed.wrap(state.blacklight, "observe_many", "blacklight")
    if state.similarity is not None:
        timed.wrap(state.similarity, "observe_many", "similarity")
    if state.residual is not None:
        timed.wrap(state.residual, "observe_many", "residual_history")
    if state.prada is not None:  # a batch's queries at once since session 8
        timed.wrap(state.prada, "flags_many" if hasattr(state.prada, "flags_many") else "flags",
                   "prada")  # fmt: skip
    if state.dilution is not None:
        timed.wrap(state.dilution, "flags", "dilution")
    # the residual test object is built inside Monitor._diluted: time it by class; the
    # class keeps the sink of the monitor instrumented last
    mod = sys.modules[type(mon).__module__]
    res_cls = getattr(mod, "Residual", None)
    if res_cls is None:
        return
    res_cls._sink = timed.ns
    if not getattr(res_cls.flags, "_timed", False):
        fn = res_cls.flags

        def flags(self: Any, *a: Any, **k: Any) -> Any:
            t0 = time.thread_time_ns()
            try:
                return fn(self, *a, **k)
            finally:
                res_cls._sink["residual"] += time.thread_time_ns() - t0

        flags._timed = True  # type: ignore[attr-defined]
        res_cls.flags = flags


def _monitor(mod: types.ModuleType, kind: Kind, det: Detection) -> Any:
    if kind.modality == "text":
        return mod.Monitor(det, scale=1.0, modality="text")
    span = kind.bounds[1] - kind.bounds[0]
    return mod.Monitor(det, shape=list(kind.pool.shape[1:]), scale=span, modality=kind.modality)


def measure(name: str, kind: Kind, det: Detection, mods: dict[str, types.ModuleType],
            history: int, rounds: int, n: int, batch: int) -> dict[str, Any]:  # fmt: skip
    """Per-query CPU and per-step shares for each module version, alternated rounds."""
    need = history + 1 + rounds * n
    feats, labels = kind.feats(det, kind.pool[:need]), kind.labels(kind.pool[:need])
    if len(feats) < need:
        raise SystemExit(f"{name}: {len(feats)} distinct inputs, {need} needed")
    mons, timers, alerts = {}, {}, {}
    for label, mod in mods.items():
        mon = _monitor(mod, kind, det)
        mon.batch = 8
        for i in range(0, history, 8):
            mon.submit("k", feats[i : i + 8], labels[i : i + 8])
        mon.submit("k", feats[history : history + 1], labels[history : history + 1])
        mon.flush("k")
        mon.batch = batch
        if hasattr(mod, "_kernels") and mod._kernels(wait=True) is None:  # compiled first
            raise SystemExit(f"{label}: its numba kernels did not build; numpy would run")
        timers[label] = Timed()
        _instrument(mon, "k", timers[label])
        mons[label], alerts[label] = mon, []
    cpu: dict[str, list[float]] = {k: [] for k in mods}
    steps: dict[str, dict[str, list[float]]] = {k: defaultdict(list) for k in mods}
    call = "inspect" if batch == 1 else "submit"
    for r in range(rounds):
        order = list(mods) if r % 2 == 0 else list(mods)[::-1]
        lo = history + 1 + r * n
        for label in order:
            mon, timer = mons[label], timers[label]
            timer.ns.clear()
            fn = getattr(mon, call)
            got = alerts[label]
            t0 = time.process_time()
            for i in range(lo, lo + n):
                found = fn("k", feats[i : i + 1], labels[i : i + 1])
                if found:
                    got.append((i, sorted((k, sorted(v)) for k, v in found.items())))
            cpu[label].append((time.process_time() - t0) / n * 1e6)
            for step in STEPS:
                steps[label][step].append(timer.ns.get(step, 0) / n / 1e3)
    first = next(iter(mods))
    for label in mods:
        if alerts[label] != alerts[first]:
            raise SystemExit(f"{name}: alerts differ between {first} and {label}")
    out: dict[str, Any] = {"alerts": len(alerts[first])}
    for label in mods:
        row = {"total": round(float(np.median(cpu[label])), 1)}
        row.update({s: round(float(np.median(v)), 1) for s, v in steps[label].items() if any(v)})
        row["rounds"] = [round(t, 1) for t in cpu[label]]
        out[label] = row
    return out


def cancer() -> tuple[Kind, Detection]:
    """Breast-cancer rows with the residual test (``gateway_detection_adaptive.residual_cost``):
    4 principal axes of one half, radius 0.07, ``dilution.residual`` 0.04; the stream is
    the other half resent with N(0, 0.02) (every query a candidate of both tests: the
    worst case)."""
    from sklearn.linear_model import LogisticRegression

    from gateway_detection_modalities import tabular

    x, y, _ = tabular()
    idx = np.random.default_rng(0).permutation(len(x))
    fit, held = x[idx[:284]], x[idx[284:]]
    mean = fit.mean(axis=0)
    axes = np.linalg.svd(fit - mean, full_matrices=False)[2][:4]
    det = Detection.model_validate(
        {
            "similarity": {
                "radius": 0.07,
                "long_neighbours": 200,
                "projection": {"mean": mean.tolist(), "components": axes.tolist()},
            },
            "dilution": {"enabled": True, "ratio": 0.59, "residual": 0.04},
        }  # fmt: skip
    )
    rng = np.random.default_rng(0)
    pool = held[rng.integers(0, len(held), 20_000)] + rng.normal(0, 0.02, (20_000, x.shape[1]))
    pool = np.clip(pool, 0, 1).astype(np.float32)
    model = LogisticRegression(max_iter=500).fit(fit, y[idx[:284]])
    return Kind(pool, held, (fit, y[idx[:284]]), model, [], (0.0, 1.0), "tensor", 0), det


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="digits+shifts,images,tabular,cancer,audio,text")
    ap.add_argument("--history", type=int, default=10_000, help="distinct queries first")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--n", type=int, default=400, help="queries a round")
    ap.add_argument("--batches", default="8,1")
    ap.add_argument("--baseline", type=Path, help="tree whose serve/monitor.py to compare")
    ap.add_argument("--configs", type=Path, help="cache of the calibrated configs (JSON)")
    ap.add_argument("--defaults", action="store_true",
                    help="the default detection config (what gateway_load.py serves) instead "
                    "of the calibrated one")  # fmt: skip
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    mods = {"now": new_monitor}
    if args.baseline:
        mods = {"before": load_baseline(args.baseline), "now": new_monitor}
    cache = json.loads(args.configs.read_text()) if args.configs and args.configs.exists() else {}
    results: dict[str, Any] = {}
    only = set(args.only.split(","))
    todo: dict[str, tuple[Kind, Detection | None]] = {k: (v, None) for k, v in kinds(only).items()}
    if "cancer" in only:
        todo["cancer"] = cancer()
    for name, (kind, fixed) in todo.items():
        if args.defaults:
            fixed = Detection()
        if fixed is None and name not in cache:
            cache[name] = _calibrated(kind)[0].model_dump(mode="json")
            if args.configs:
                args.configs.write_text(json.dumps(cache))
        det = fixed or Detection.model_validate(cache[name])
        for batch in (int(b) for b in args.batches.split(",")):
            res = measure(name, kind, det, mods, args.history, args.rounds, args.n, batch)
            results[f"{name} batch {batch}"] = res
            print(f"{name} batch {batch}: {json.dumps(res)}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
