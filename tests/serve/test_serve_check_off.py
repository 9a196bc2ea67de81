"""``gateway check`` names the detection rules that do not run in a deployment (MLW-GW-018).

The monitor says nothing when a rule is off (the table rule before ``gateway
calibrate``, query blinding without a declared shape, ``spread`` on short vectors), so
the operator learns it from the check; each claim is also checked on the monitor.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mlwarden.serve.auth import hash_key
from mlwarden.serve.config import Detection, parse_config
from mlwarden.serve.findings import gateway_config_report, off_rules
from mlwarden.serve.monitor import Monitor


def _off(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "gw.yaml"
    path.write_text(text + f"keys: {{a: {{hash: '{hash_key('k')}'}}}}\n")
    path.chmod(0o600)
    found = [f for f in gateway_config_report(path).findings if f.rule == "MLW-GW-018"]
    assert len(found) <= 1 and all(f.severity == "low" for f in found)
    return list(found[0].evidence["problems"]) if found else []


@pytest.mark.parametrize(
    ("text", "needles", "absent"),
    [
        (
            "input: {shape: [30]}\n",
            [
                "manifold (tables): off until",
                "dilution: off",
                "spread: the reduced vectors have 30 values",
            ],
            [],
        ),  # fmt: skip
        (
            "input: {shape: [30]}\ndetection: {dilution: {enabled: true}, manifold: {axes: [[0.6, "
            "0.8" + ", 0.0" * 28 + "]], scales: [0.1], centre: [0.5]}}\n",
            ["spread: the"],
            ["manifold", "dilution"],
        ),  # fmt: skip
        (
            "input: {shape: [30]}\ndetection: {dilution: {enabled: true}, manifold: {axes: [[0.6, "
            "0.8" + ", 0.0" * 28 + "]], scales: [0.1]}}\n",
            ["manifold.centre: unset", "spread: the"],
            ["manifold (tables)", "dilution"],
        ),  # fmt: skip
        (
            "input: {shape: [30]}\ndetection: {manifold: {enabled: false}}\n",
            ["manifold (tables): switched off"],
            [],
        ),  # fmt: skip
        (
            "input: {shape: [3, 32, 32]}\ndetection: {dilution: {enabled: true}}\n",
            [],
            ["manifold", "spread", "blinding", "dilution"],
        ),  # fmt: skip
        ("detection: {dilution: {enabled: true}}\n", ["prada.blinding: off until input.shape"], []),
        (
            "input: {modality: text}\ndetection: {prada: {enabled: false}}\n",
            ["prada: switched off", "spread: not run on text"],
            [],
        ),  # fmt: skip
        (
            "input: {shape: [1, 8, 8]}\ndetection: {similarity: {enabled: false}}\n",
            ["similarity: switched off", "crosskey: off with similarity"],
            [],
        ),  # fmt: skip
    ],
)
def test_rules_off_in_a_deployment_are_named(tmp_path: Path, text: str, needles: list[str],
                                             absent: list[str]) -> None:  # fmt: skip
    off = _off(tmp_path, text)
    for needle in needles:
        assert any(needle in line for line in off), (needle, off)
    for word in absent:
        assert not any(line.startswith(word) for line in off), (word, off)


def test_every_detector_off_is_mlw_gw_005_alone() -> None:
    text = "detection: {blacklight: {enabled: false}, prada: {enabled: false}, similarity: {enabled: false}}"
    assert off_rules(parse_config(text)) == []


def test_the_rules_named_off_do_not_run_on_the_monitor() -> None:
    """The check's claims, on the monitor: a table without axes has no manifold window,
    and a noisy search on 30 values never raises ``spread`` (nor ``manifold``)."""
    rng = np.random.default_rng(0)
    mon = Monitor(Detection(), shape=[30])
    mon.crosskey = None
    x0 = rng.uniform(0, 1, 30)
    xs = np.clip(x0 + rng.normal(0, 0.05, (200, 30)), 0, 1).astype(np.float32)
    kinds = set()
    for i in range(0, 200, 8):
        kinds |= set(mon.inspect("k", xs[i : i + 8], np.zeros(len(xs[i : i + 8]), int)))
    assert mon._keys["k"].manifold is None
    assert "spread" not in kinds and "manifold" not in kinds
    assert "similarity" in kinds  # the search itself is flagged, by the count
    # on 8x8 digits (64 values) the same kind of search does raise spread
    digits = Monitor(Detection(), shape=[1, 8, 8])
    digits.crosskey = None
    d0 = rng.uniform(0, 1, (1, 8, 8))
    ds = np.clip(d0 + rng.normal(0, 0.05, (200, 1, 8, 8)), 0, 1).astype(np.float32)
    seen = set()
    for i in range(0, 200, 8):
        seen |= set(digits.inspect("k", ds[i : i + 8], np.zeros(8, int)))
    assert "spread" in seen, seen
