"""Per-key workload profiles: a camera key's drifting light is no search (issue 19).

A fixed camera's frames drift in brightness through the day; to the stream detectors
that is a cloud whose centre moves, as a search's does (session 9's realworld benchmark:
992 of 1,000 frames flagged with lighting drift alone). A key declared ``camera``
(``keys.NAME.profile``) has its clouds judged without brightness and contrast
(:func:`mlwarden.serve.profiles.unlit`); other keys are judged as before, and a search
under a drifting light is still flagged on a camera key.
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from mlwarden.cli.main import main
from mlwarden.core.data import load_dataset
from mlwarden.serve.config import GatewayConfig, KeyEntry
from mlwarden.serve.findings import gateway_config_findings
from mlwarden.serve.monitor import Monitor, reduce_many
from mlwarden.serve.profiles import lighting_directions, unlit
from mlwarden.serve.stationary import moving

_MNIST = load_dataset("mnist5k").x.reshape(-1, 1, 28, 28).astype(np.float32)
_LABEL = np.zeros(1, np.int64)
_HASH = "sha256:" + "0" * 64


def _monitor(profile: str | None) -> Monitor:
    # what calibrate picks on MNIST (radius 0.05, Blacklight 0.025 / 40); PRADA off
    from mlwarden.serve.config import Detection

    det = Detection.model_validate({"prada": {"enabled": False},
                                    "similarity": {"radius": 0.05},
                                    "blacklight": {"quantization": 0.025, "threshold": 40}})  # fmt: skip
    mon = Monitor(det, shape=[1, 28, 28], scale=1.0)
    if profile is not None:
        mon.profiles = {"k": profile}
    return mon


def _gains(n: int, rng: np.random.Generator, ramp: bool = False) -> np.ndarray:
    """A light that drifts: +-8% over ``n`` frames (or a ramp of 16%) and a random walk."""
    t = np.arange(n)
    base = 0.16 * t / n - 0.08 if ramp else 0.08 * np.sin(2 * np.pi * t / n)
    return 1 + base + np.clip(np.cumsum(rng.normal(0, 0.004, n)), -0.1, 0.1)


def _frames(x: np.ndarray, gains: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``x`` under each gain, sensor noise N(0, 0.004), 8-bit pixels."""
    f = x[None] * gains[:, None, None, None] + rng.normal(0, 0.004, (len(gains), *x.shape))
    return (np.round(np.clip(f, 0, 1) * 255) / 255).astype(np.float32)


def _alerts(mon: Monitor, xs: np.ndarray) -> int:
    return sum(bool(mon.inspect("k", x[None], _LABEL)) for x in xs)


def test_unlit_leaves_a_drifting_light_still_and_a_walk_moving() -> None:
    rng = np.random.default_rng(0)
    frames = _frames(_MNIST[3] * 0.9, _gains(40, rng, ramp=True), rng)
    rows = reduce_many(frames, 128, 1.0).astype(np.float64)
    ones = lighting_directions(128)
    assert moving(rows) and not moving(unlit(rows, ones))
    # the same light over a walk of block steps (a search's kept point): still moving
    walk = np.cumsum(rng.choice([-1, 0, 0, 0, 1], (40, 128)) * 0.01, axis=0)
    assert moving(rows + walk, lit=ones)


def test_a_camera_key_under_drifting_light_is_not_flagged_and_an_ordinary_key_is() -> None:
    rng = np.random.default_rng(1)
    frames = _frames(_MNIST[7] * 0.9, _gains(400, rng), rng)
    assert _alerts(_monitor(None), frames) >= 200
    assert _alerts(_monitor("camera"), frames) <= 2


def _lit_search(x0: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """A block search (3x3 blocks stepped by +-0.05, Linf 0.1, kept when a fixed linear
    score drops) with fresh noise N(0, 0.01), each query under a light ramping 16%."""
    w = np.random.default_rng(7).normal(size=x0.size)
    gains = _gains(n, rng, ramp=True)
    delta, best, out = np.zeros_like(x0), np.inf, []
    for g in gains:
        cand = delta.copy()
        r, c = rng.integers(0, 26, 2)
        cand[..., r : r + 3, c : c + 3] = np.clip(cand[..., r : r + 3, c : c + 3]
                                                  + rng.choice([-0.05, 0.05]), -0.1, 0.1)  # fmt: skip
        q = np.clip(g * (x0 + cand) + rng.normal(0, 0.01, x0.shape), 0, 1).astype(np.float32)
        out.append(q)
        if float(q.ravel() @ w) < best:
            best, delta = float(q.ravel() @ w), cand
    return np.stack(out)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_search_under_drifting_light_is_flagged_on_a_camera_key(seed: int) -> None:
    rng = np.random.default_rng(seed)
    mon = _monitor("camera")
    _alerts(mon, _frames(_MNIST[20 + seed] * 0.9, _gains(200, rng), rng))  # its own camera first
    for i, x in enumerate(_lit_search(_MNIST[100 + seed], 300, rng)):
        if mon.inspect("k", x[None], _LABEL):
            assert i < 300
            return
    pytest.fail("never flagged in 300 queries")


def test_a_profile_is_declared_per_key_and_reported_by_gateway_check(tmp_path, capsys) -> None:
    with pytest.raises(ValidationError):
        KeyEntry(hash=_HASH, profile="lamp")  # type: ignore[arg-type]
    cfg = tmp_path / "gw.yaml"
    with pytest.raises(SystemExit) as exc:
        main(["gateway", "add-key", "cam1", "--config", str(cfg), "--profile", "camera"])
    assert exc.value.code in (0, None)
    assert "brightness and contrast" in capsys.readouterr().err
    loaded = GatewayConfig.model_validate(yaml.safe_load(cfg.read_text()))
    assert loaded.keys["cam1"].profile == "camera"
    found = [f for f in gateway_config_findings(loaded) if f.rule == "MLW-GW-016"]
    assert len(found) == 1 and "cam1 (camera)" in found[0].description
    with pytest.raises(SystemExit) as exc:
        main(["gateway", "add-key", "cam2", "--config", str(cfg), "--profile", "lamp"])
    assert exc.value.code == 2 and "unknown profile" in capsys.readouterr().err
