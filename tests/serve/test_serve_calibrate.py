"""``mlwarden gateway calibrate``: detector settings from the operator's benign data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from sklearn.datasets import load_breast_cancer

from mlwarden.cli.main import main
from mlwarden.core.data import load_dataset
from mlwarden.serve.answers import SPREAD
from mlwarden.serve.calibrate import benign_streams, calibrate, search_stream
from mlwarden.serve.config import Detection, GatewayConfig, load_config
from mlwarden.serve.monitor import Monitor


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out + err


def _tinted_digits(n: int, seed: int) -> np.ndarray:
    """MNIST digits padded to 3x32x32 with a random tint per image (not 8x8 digits)."""
    ds = load_dataset("mnist5k")
    rng = np.random.default_rng(seed)
    x = ds.x.reshape(len(ds.x), 28, 28)[rng.permutation(len(ds.x))[:n]]
    padded = np.zeros((n, 32, 32), dtype=np.float32)
    padded[:, 2:30, 2:30] = x
    return padded[:, None] * rng.uniform(0.3, 1.0, (n, 3, 1, 1)).astype(np.float32)


def _flagged(det: Detection, xs: np.ndarray) -> int:
    mon = Monitor(det, shape=list(xs.shape[1:]), scale=1.0)
    labels = np.zeros(len(xs), dtype=np.int64)
    return sum(bool(mon.inspect("k", xs[i : i + 1], labels[i : i + 1])) for i in range(len(xs)))


def _first_flag(det: Detection, qs: np.ndarray) -> int | None:
    mon = Monitor(det, shape=list(qs.shape[1:]), scale=1.0)
    labels = np.zeros(len(qs), dtype=np.int64)
    for i in range(len(qs)):
        if mon.inspect("atk", qs[i : i + 1], labels[i : i + 1]):
            return i + 1
    return None


def test_calibrated_image_config_meets_both_figures_on_fresh_streams(tmp_path, capsys) -> None:
    x = _tinted_digits(1200, seed=0)
    cfg = tmp_path / "gw.yaml"
    cfg.write_text("# operator's comment\ninput: {shape: [3, 32, 32], range: [0, 1]}\n")
    np.savez(tmp_path / "benign.npz", x=x, y=np.zeros(len(x), dtype=np.int64))
    code, out = _run(["gateway", "calibrate", str(cfg), str(tmp_path / "benign.npz"),
                      "--benign", "400", "--seed", "3"], capsys)  # fmt: skip
    assert code == 0, out
    assert "wrote" in out and "comments" in out
    assert cfg.read_text().startswith("# operator's comment")  # the original is untouched
    det = load_config(tmp_path / "gw.calibrated.yaml").detection
    assert det.similarity.radius < Detection().similarity.radius
    assert det.answers.spread is None  # measured on tabular rows only (serve/answers.py)
    # the defaults alarm on this data; the calibrated settings do not, on streams the
    # calibration never saw (other images, other seeds), and still catch the search
    fresh = _tinted_digits(2000, seed=7)[1200:]
    streams = benign_streams(fresh, (0.0, 1.0), 400, 0.01, seed=11)
    assert _flagged(Detection(), streams["distinct"]) > 40
    for xs in streams.values():
        assert _flagged(det, xs) <= 1
    for k in range(2):
        first = _first_flag(det, search_stream(fresh[k], (0.0, 1.0), 0.05, 300, seed=20 + k))
        assert first is not None and first <= 300


def test_a_budget_no_setting_can_meet_is_reported_not_hidden(tmp_path, capsys) -> None:
    # Breast-cancer rows are separated along their principal axes (flagged at 30-90;
    # tests/serve/test_serve_stream_modalities.py); a search that must be flagged within
    # 20 queries cannot be, since every setting tried needs at least 20 neighbours.
    d = load_breast_cancer()
    lo, hi = d.data.min(axis=0), d.data.max(axis=0)
    x = ((d.data - lo) / (hi - lo)).astype(np.float32)
    cfg = tmp_path / "gw.yaml"
    cfg.write_text("input: {shape: [30], range: [0, 1]}\n")
    np.savez(tmp_path / "rows.npz", x=x, y=d.target)
    args = ["gateway", "calibrate", str(cfg), str(tmp_path / "rows.npz"), "--benign", "300",
            "--budget", "20", "--json", str(tmp_path / "r.json"), "--fail-on", "medium"]  # fmt: skip
    code, out = _run(args, capsys)
    assert code != 0
    assert "no setting meets both" in out
    assert not (tmp_path / "gw.calibrated.yaml").exists()
    report = json.loads((tmp_path / "r.json").read_text())
    (finding,) = [f for f in report["findings"] if f["rule"] == "MLW-GW-013"]
    assert "similarity" in finding["description"]
    assert yaml.safe_load(cfg.read_text()) == {"input": {"shape": [30], "range": [0, 1]}}


def test_calibration_is_deterministic_for_a_seed() -> None:
    d = load_breast_cancer()
    x = ((d.data - d.data.min(0)) / (d.data.max(0) - d.data.min(0))).astype(np.float32)
    cfg = GatewayConfig.model_validate({"input": {"range": [0, 1]}})
    a = calibrate(cfg, x, benign=200, searches=1, seed=5, sigma=0.02)
    b = calibrate(cfg, x, benign=200, searches=1, seed=5, sigma=0.02)
    assert a.summary() == b.summary()
    # rows of one axis: alerts on clouds whose answers stay put drop (serve/answers.py)
    assert a.summary()["answers_spread"] == SPREAD


def test_bad_data_gets_one_clear_line(tmp_path, capsys) -> None:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text("input: {shape: [3, 32, 32], range: [0, 1]}\n")
    np.savez(tmp_path / "rows.npz", x=np.zeros((100, 30), np.float32), y=np.zeros(100))
    code, out = _run(["gateway", "calibrate", str(cfg), str(tmp_path / "rows.npz")], capsys)
    assert code != 0
    assert "input.shape is [3, 32, 32]" in out and "Traceback" not in out
