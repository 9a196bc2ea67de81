"""Re-rank saved matrix cells: the combined ``suspicious`` list before and after a change
to :func:`mlwarden.poisoning.ranking.combine`, without retraining.

``capture`` runs cells of the issue-18 matrix (``benchmarks/poisoning_vs_peers.py``:
same data, poison, model and ``data_report`` call; ART's detectors are skipped, their
figures are in the matrix) and saves each cell's detections, labels and truth to a
pickle. ``rerank`` combines the saved detections with ``ranking.py`` as it was at a git
ref (``--before``, default ``main``) and as it is now, and prints both lists' F1,
precision and recall.
The trigger ``clean`` trains on the unpoisoned split: its list should be empty.

    nice -n 10 timeout 3600 .venv/bin/python benchmarks/poisoning_rerank.py capture \
        /tmp/i18b/cells mnist5k:badnets:0.01 digits:blended:0.05 digits:clean:0
    .venv/bin/python benchmarks/poisoning_rerank.py --before 7a16f5e rerank /tmp/i18b/cells
    nice -n 10 .venv/bin/python benchmarks/poisoning_rerank.py --before 7a16f5e other
"""

from __future__ import annotations

import argparse
import copy
import logging
import pickle
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import poisoning_vs_peers as pvp  # noqa: E402
from mlwarden.poisoning import detect_data as dd  # noqa: E402
from mlwarden.poisoning import ranking  # noqa: E402
from mlwarden.poisoning.simulate import Poisoned  # noqa: E402


def _list_metrics(rows: list[dict[str, Any]], truth: np.ndarray) -> dict[str, float]:
    flags = np.zeros(len(truth), dtype=bool)
    flags[[r["index"] for r in rows if r["index"] < len(truth)]] = True
    return dd.flag_metrics(flags, truth)


def capture(out: Path, cell: str, seed: int, nc_epochs: int) -> None:
    """Run one cell ``input:trigger:rate`` and pickle what ``combine`` was given."""
    name, trigger, rate = cell.split(":")
    path = out / f"{name}-{trigger}-{rate}-s{seed}.pkl"
    if path.exists():
        return
    seen: dict[str, Any] = {}
    orig_combine, orig_poison = ranking.combine, pvp._poison

    def combine(detections: list[Any], y: np.ndarray, *a: Any, **kw: Any) -> Any:
        seen["detections"] = copy.deepcopy(list(detections))
        seen["y"] = np.asarray(y).copy()
        return orig_combine(detections, y, *a, **kw)

    def poison(name: str, trig: str, train: Any, r: float, target: int, s: int) -> Any:
        if trig == "clean":
            p = Poisoned(train, np.zeros(0, dtype=int), "clean", 0.0, target)
        else:
            p = orig_poison(name, trig, train, r, target, s)
        seen["truth"] = p.is_poison.copy()
        return p

    ranking.combine, pvp._poison = combine, poison  # type: ignore[assignment]
    pvp._art_matrix = lambda *a, **kw: None  # type: ignore[assignment]
    try:
        res = pvp.matrix_cell(name, trigger, float(rate), seed, nc_epochs)
    finally:
        ranking.combine, pvp._poison = orig_combine, orig_poison  # type: ignore[assignment]
    if res.get("status") != "ok":
        print(f"{cell}: {res.get('why')}", flush=True)
        return
    seen["cell"] = {k: res[k] for k in ("input", "trigger", "rate", "seed", "asr", "poison")}
    seen["alone"] = {k: v for k, v in res["ours"].items() if k != "suspicious"}
    with open(path, "wb") as fh:
        pickle.dump(seen, fh)
    print(f"{cell}: saved ({res['seconds']} s)", flush=True)


def _ranking_at(ref: str) -> Any:
    """``mlwarden.poisoning.ranking`` as it was at git ``ref`` (the "before" rule)."""
    import importlib.util
    import subprocess
    import tempfile

    src = subprocess.run(
        ["git", "show", f"{ref}:src/mlwarden/poisoning/ranking.py"],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "ranking_before.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("ranking_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["ranking_before"] = module
    spec.loader.exec_module(module)
    return module


def rerank(out: Path, before: str) -> None:
    """Print before (``ranking.py`` at git ``before``) and after (as it is now) list
    metrics of every saved cell (markdown)."""
    old = _ranking_at(before)
    print(
        "| cell | ASR | poison | list F1 / P / R before | after | flagged -> listed per detector |"
    )
    print("|---|---|---|---|---|---|")
    for path in sorted(out.glob("*.pkl")):
        with open(path, "rb") as fh:
            seen = pickle.load(fh)
        ranked = ranking.combine(copy.deepcopy(seen["detections"]), seen["y"])
        after = _list_metrics(ranked.suspicious, seen["truth"])
        prior = old.combine(copy.deepcopy(seen["detections"]), seen["y"])
        b, c = _list_metrics(prior.suspicious, seen["truth"]), seen["cell"]
        per = ", ".join(f"{k} {v['flagged']}->{v['listed']}" for k, v in ranked.calibration.items())
        print(
            f"| {c['input']} {c['trigger']} {float(c['rate']):.0%} s{c['seed']} | "
            f"{c['asr']:.2f} | {c['poison']} | "
            f"{b['f1']:.3f} / {b['precision']:.2f} / {b['tpr']:.2f} ({len(prior.suspicious)} rows) | "
            f"{after['f1']:.3f} / {after['precision']:.2f} / {after['tpr']:.2f} "
            f"({len(ranked.suspicious)} rows) | {per} |"
        )


def other_case(before: str) -> None:
    """A case built unlike the matrix: ``make_classification`` (8 classes, 24 features,
    2 clusters a class, 3,000 rows), a scikit-learn ``MLPClassifier`` (64, 32), a
    2-value feature trigger (feature 3 = 1.25, feature 17 = 0) stamped on 1% / 3% of
    the other classes' rows relabelled 5, and a clean twin; lists before and after."""
    from sklearn.datasets import make_classification
    from sklearn.neural_network import MLPClassifier

    from mlwarden.core.data import Dataset
    from mlwarden.poisoning.assess import data_report

    old = _ranking_at(before)
    for seed, rate in ((0, 0.01), (1, 0.03), (2, 0.0)):
        x, y = make_classification(
            3000, 24, n_informative=12, n_classes=8, n_clusters_per_class=2, random_state=seed
        )
        x = ((x - x.min(0)) / (x.max(0) - x.min(0))).round(3).astype(np.float32)
        rng = np.random.default_rng(seed)
        idx = rng.choice(np.flatnonzero(y != 5), int(rate * len(y)), replace=False)
        x[np.ix_(idx, [3, 17])] = [1.25, 0.0]
        y[idx] = 5
        truth = np.isin(np.arange(len(y)), idx)
        model = MLPClassifier((64, 32), max_iter=300, random_state=seed).fit(x, y)
        seen: dict[str, Any] = {}
        orig = ranking.combine

        def combine(d: list[Any], yy: np.ndarray, seen: dict = seen, orig: Any = orig) -> Any:
            seen["d"] = copy.deepcopy(d)
            return orig(d, yy)

        ranking.combine = combine  # type: ignore[assignment]
        try:
            ds = Dataset(x=x, y=y.astype(np.int64), name="other")
            data_report(ds, model=model, seed=seed, neural_cleanse_epochs=10)
        finally:
            ranking.combine = orig  # type: ignore[assignment]
        for tag, mod in (("before", old), ("after", ranking)):
            rows = mod.combine(copy.deepcopy(seen["d"]), y).suspicious
            m = _list_metrics(rows, truth)
            print(
                f"seed {seed}, poison {rate:.0%} ({int(truth.sum())} rows), {tag}: {len(rows)} "
                f"rows, F1 {m['f1']:.3f} P {m['precision']:.3f} R {m['tpr']:.3f}"
            )
        print("  flagged:", {d.name: int(d.flagged.sum()) for d in seen["d"] if d.flagged.any()})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["capture", "rerank", "other"])
    ap.add_argument("out", type=Path, nargs="?", help="folder of saved cells")
    ap.add_argument("cells", nargs="*", help="input:trigger:rate (capture)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--nc-epochs", type=int, default=30)
    ap.add_argument("--before", default="main", help="git ref of the rule to compare with")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    if args.mode == "rerank":
        rerank(args.out, args.before)
        return
    if args.mode == "other":
        other_case(args.before)
        return
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)
    args.out.mkdir(parents=True, exist_ok=True)
    for cell in args.cells:
        capture(args.out, cell, args.seed, args.nc_epochs)


if __name__ == "__main__":
    main()
