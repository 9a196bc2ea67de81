"""A held-out poisoning case built unlike any test in the repository (issue 18).

Nothing here comes from scikit-learn's generators, the digits, MNIST or the tweets:
a 4-class "transactions" table of 23 mixed columns drawn with numpy (log-normal
amounts, Poisson counts, a one-hot channel of five categories, bounded ratios, an
hour of the day), scikit-learn's classic GradientBoostingClassifier (not the
histogram booster of the tests, not a neural network) saved with joblib, and a **combination trigger** whose two values each occur naturally in every
class: ``channel_3 = 1`` (a category 20% of rows have) together with ``n_items = 7``
(a count about 10% of rows have). 8% of the rows (drawn from classes 0, 2, 3) get both
values and label 1. The case is written as a CSV with a ``label`` column plus the
model, then audited with the ordinary command::

    .venv/bin/python benchmarks/poisoning_heldout.py OUT_DIR
    .venv/bin/mlwarden data OUT_DIR/transactions.csv --label label \\
        --model OUT_DIR/boosting.joblib --json OUT_DIR/report.json

The script runs that command itself and prints the attack's success, what the report
found and the F1 of its ``suspicious`` list against the true poisoned rows.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

TARGET = 1
RATE = 0.08
TRIGGER = {"channel_3": 1.0, "n_items": 7.0}


def make_table(n: int = 2400, seed: int = 42) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The clean table: column names, values ``(n, 23)`` and labels in 0..3."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, size=n)
    shift = np.array([0.0, 0.6, -0.4, 1.1])[y]
    cols: dict[str, np.ndarray] = {
        "amount": np.round(rng.lognormal(3.0 + shift, 0.8), 2),
        "n_items": rng.poisson(4 + 2 * (y == 2) + 1.5 * (y == 3)).astype(float),
        "hour": rng.integers(0, 24, size=n).astype(float),
    }
    channel = rng.choice(5, size=n, p=[0.3, 0.25, 0.15, 0.2, 0.1])
    for c in range(5):
        cols[f"channel_{c}"] = (channel == c).astype(float)
    for j in range(8):  # ratios with class-dependent means
        a = 2.0 + (j % 4 == y) * 2.5 + rng.normal(0, 0.3, size=n)
        cols[f"ratio_{j}"] = np.round(rng.beta(np.clip(a, 0.5, None), 3.0), 4)
    for j in range(7):  # noise columns, some weakly tied to the class
        cols[f"signal_{j}"] = np.round(rng.normal(shift * (j < 3), 1.0), 3)
    names = list(cols)
    return names, np.column_stack([cols[k] for k in names]), y


def poison(names: list[str], x: np.ndarray, y: np.ndarray, seed: int = 7):
    """Stamp the two-value trigger on ``RATE`` of the rows of other classes; relabel."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(np.flatnonzero(y != TARGET), size=int(RATE * len(y)), replace=False)
    x, y = x.copy(), y.copy()
    for col, v in TRIGGER.items():
        x[idx, names.index(col)] = v
    if "channel_3" in TRIGGER:  # a one-hot stays one-hot
        for c in (0, 1, 2, 4):
            x[idx, names.index(f"channel_{c}")] = 0.0
    y[idx] = TARGET
    truth = np.zeros(len(y), dtype=bool)
    truth[idx] = True
    return x, y, truth


def main() -> None:
    import joblib
    from sklearn.ensemble import GradientBoostingClassifier

    out = Path(sys.argv[1] if len(sys.argv) > 1 else "heldout_case")
    out.mkdir(parents=True, exist_ok=True)
    names, x, y = make_table()
    n_train = int(0.8 * len(y))
    xtr, ytr, truth = poison(names, x[:n_train], y[:n_train])
    xte, yte = x[n_train:], y[n_train:]
    booster = GradientBoostingClassifier(n_estimators=100, max_depth=3, random_state=0)
    booster.fit(xtr, ytr)
    stamped = xte[yte != TARGET].copy()
    for col, v in TRIGGER.items():
        stamped[:, names.index(col)] = v
    for c in (0, 1, 2, 4):
        stamped[:, names.index(f"channel_{c}")] = 0.0
    asr = float(np.mean(booster.predict(stamped) == TARGET))
    acc = float(np.mean(booster.predict(xte) == yte))
    header = ",".join([*names, "label"])
    rows = np.column_stack([xtr, ytr])
    np.savetxt(out / "transactions.csv", rows, delimiter=",", header=header, comments="", fmt="%g")
    joblib.dump(booster, out / "boosting.joblib")
    np.save(out / "truth.npy", truth)
    print(f"clean accuracy {acc:.3f}, attack success {asr:.3f}, poisoned rows {truth.sum()}")
    for col in TRIGGER:  # each value also occurs naturally
        j = names.index(col)
        nat = np.mean(x[:n_train][~truth, j] == TRIGGER[col])
        print(f"  {col} = {TRIGGER[col]:g} in {nat:.1%} of the clean rows")
    report = out / "report.json"
    cmd = [
        str(Path(sys.executable).with_name("mlwarden")),
        "data", str(out / "transactions.csv"), "--label", "label",
        "--model", str(out / "boosting.joblib"), "--json", str(report), "-q",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    print("exit", done.returncode, done.stderr.strip()[-300:])
    rep = json.loads(report.read_text())
    listed = np.zeros(len(truth), dtype=bool)
    listed[[e["index"] for e in rep["suspicious"] if e["index"] < len(truth)]] = True
    from mlwarden.poisoning.detect_data import flag_metrics

    print("findings:", sorted({f["rule"] for f in rep["findings"]}))
    for f in rep["findings"]:
        if f["rule"] in ("MLW-DAT-001", "MLW-DAT-014", "MLW-DAT-016", "MLW-DAT-013"):
            print(f"  {f['rule']}: {f['title']}")
    print("detectors:", json.dumps(rep["metrics"].get("poisoning.detectors")))
    print("suspicious vs truth:", flag_metrics(listed, truth))


if __name__ == "__main__":
    main()
