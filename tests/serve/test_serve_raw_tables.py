"""Tables served in raw units: ``gateway calibrate`` learns each feature's spread
(``detection.feature_scale``) and the detectors measure in it (issue 19)."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from sklearn.datasets import load_breast_cancer

from mlwarden.cli.main import main
from mlwarden.core.errors import InputFileError, UserError
from mlwarden.serve.calibrate import feature_scale, search_stream
from mlwarden.serve.config import Detection, load_config, parse_config
from mlwarden.serve.monitor import Monitor

HIGH = 5000.0  # the declared range: breast-cancer features span [0, 4254], most below 1


def _rows() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Raw breast-cancer rows (the model carries its own scaler), split 300 / 269."""
    d = load_breast_cancer()
    order = np.random.default_rng(0).permutation(len(d.data))
    x, y = d.data.astype(np.float32)[order], d.target.astype(np.int64)[order]
    return x[:300], y[:300], x[300:], y[300:]


def _first_alert(mon: Monitor, key: str, xs: np.ndarray, labels: np.ndarray) -> int | None:
    """The query (1-based) at which ``key`` is first flagged: with ``block``, blocked."""
    for i in range(len(xs)):
        if mon.inspect(key, xs[i : i + 1], labels[i : i + 1]):
            return i + 1
    return None


def test_raw_unit_rows_calibrate_and_are_served_without_blocking(tmp_path, capsys) -> None:
    train_x, train_y, test_x, test_y = _rows()
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(f"input: {{range: [0, {HIGH:g}]}}\ndetection: {{action: block}}\n")
    np.savez(tmp_path / "rows.npz", x=train_x, y=train_y)
    with pytest.raises(SystemExit) as exc:
        main(["gateway", "calibrate", str(cfg), str(tmp_path / "rows.npz"), "--benign", "600"])
    out = capsys.readouterr().out
    assert exc.value.code in (0, None), out
    served = load_config(tmp_path / "gw.calibrated.yaml")  # persisted, validated
    assert served.input.shape == [30]
    scale = served.detection.feature_scale
    assert scale is not None and len(scale.spread) == 30
    # the gateway's own monitor, as serve/app.py builds it (scale: the declared range)
    mon = Monitor(served.detection, served.input.shape, scale=HIGH)
    rows = np.concatenate([test_x, train_x])[:250]
    labels = np.concatenate([test_y, train_y])[:250]
    assert _first_alert(mon, "benign", rows, labels) is None  # 250 distinct rows
    # the defaults (one radius, bin, noise level for [0, 5000]) block at the 21st row
    # (the count alone, as before session 7: the still-ball rule, now on by default,
    # excuses some of these distinct rows as a still ball and blocks at the 88th)
    old = Monitor(Detection.model_validate({"action": "block", "similarity": {"stationary": False}}),
                  [30], scale=HIGH)  # fmt: skip
    assert _first_alert(old, "benign", rows, labels) == 21
    spread = np.asarray(scale.spread, dtype=np.float32)
    for k in range(3):  # sigma 0.05 of each feature's spread, around held-out rows
        qs = search_stream(test_x[k], (0.0, HIGH), 0.05, 300, seed=200 + k, spread=spread)
        first = _first_alert(mon, f"search-{k}", qs, np.full(300, test_y[k]))
        assert first is not None and first <= 300


def test_feature_scale_is_robust_and_floored() -> None:
    rng = np.random.default_rng(1)
    x = np.column_stack([rng.uniform(0, 1, 500), rng.uniform(0, 1000, 500), np.full(500, 7.0),
                         (np.arange(500) < 3).astype(float)])  # fmt: skip
    x[0, 0] = 5000.0  # one outlier row must not squeeze the feature's other rows together
    fs = feature_scale(x)
    assert 0.9 < fs.spread[0] < 1.0 and 900 < fs.spread[1] < 1000
    assert fs.spread[2] > 0.5  # constant: a typical feature's spread, never a tiny floor
    assert fs.spread[3] == 1.0  # 0 between the percentiles: its min..max
    assert fs.centre[2] == 7.0


def test_bad_or_mismatched_feature_scale_gets_one_clear_line() -> None:
    with pytest.raises(InputFileError, match="spread values must be finite numbers > 0"):
        parse_config("detection: {feature_scale: {centre: [0, 0], spread: [1, 0]}}")
    with pytest.raises(InputFileError, match="they must match"):
        parse_config("detection: {feature_scale: {centre: [0], spread: [1, 2]}}")
    cfg = parse_config("detection: {feature_scale: {centre: [0, 0], spread: [1, 2]}}")
    with pytest.raises(UserError, match="feature_scale has 2 values, but the input has 3"):
        Monitor(cfg.detection, [3])
    with pytest.raises(UserError, match="undeclared"):
        Monitor(cfg.detection, None)
    assert yaml.safe_load(yaml.safe_dump(cfg.model_dump(mode="json")))["detection"][
        "feature_scale"
    ] == {"centre": [0.0, 0.0], "spread": [1.0, 2.0]}
