"""The session 9 red team's attackers do what ``benchmarks/gateway_detection_realworld.py`` says.

Its ``nullspace`` figures mean something only if the search's queries really are one
point to the detectors' reduction (:func:`reduce` / :func:`reduce_audio`, at the default
``max_dims``) while staying in the Linf ball of 0.1, and its ``hsja`` figures only if
HopSkipJump keeps to its budget and ends on the far side of the boundary.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from mlwarden.serve.config import Similarity
from mlwarden.serve.monitor import reduce_audio_many, reduce_many

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def rw() -> Any:
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(
        "gateway_detection_realworld", BENCH / "gateway_detection_realworld.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _kind(rw: Any, shape: tuple[int, ...], bounds: tuple[float, float], modality: str) -> Any:
    rng = np.random.default_rng(0)
    lo, hi = bounds
    x = rng.uniform(lo, hi, (200, *shape)).astype(np.float32)
    y = (x.reshape(200, -1)[:, ::7].mean(axis=1) > (lo + hi) / 2).astype(np.int64)
    model = LogisticRegression(max_iter=500).fit(x.reshape(200, -1), y)
    return rw.long.Kind(x, x, (x, y), model, [], bounds, modality, 200)


@pytest.mark.parametrize(
    ("shape", "bounds", "modality"),
    [((3, 32, 32), (0.0, 1.0), "tensor"), ((1, 8000), (-1.0, 1.0), "audio")],
)
def test_nullspace_queries_are_one_point_to_reduce(rw: Any, shape: Any, bounds: Any,
                                                   modality: str) -> None:  # fmt: skip
    kind = _kind(rw, shape, bounds, modality)
    x0 = kind.data[0]
    y0 = int(kind.labels(x0[None])[0])
    qs = rw.nullspace(kind, x0, y0, 30, 0, 0.005)
    span, dims = bounds[1] - bounds[0], Similarity().max_dims
    red = reduce_audio_many if modality == "audio" else reduce_many
    seen, clean = red(qs, dims, span), red(x0[None], dims, span)
    moved = np.abs(qs - x0).reshape(len(qs), -1).max(axis=1)
    assert moved.max() > 0.02 * span  # the search does move the input
    assert np.abs(seen - clean).max() < 2e-3  # ... where the reduction cannot see it
    assert moved.max() <= 0.1 * span + 1e-5
    assert qs.min() >= bounds[0] and qs.max() <= bounds[1]


def test_hsja_keeps_its_budget_and_crosses_the_boundary(rw: Any) -> None:
    kind = _kind(rw, (64,), (0.0, 1.0), "tensor")
    x0 = kind.data[1]
    y0 = int(kind.labels(x0[None])[0])
    qs = rw.hsja(kind, x0, y0, 120, 0)
    assert qs.shape == (120, 64)
    wrong = kind.labels(qs) != y0
    dist = np.linalg.norm((qs - x0)[wrong], axis=1)
    start = np.linalg.norm(kind.data - x0, axis=1)[kind.labels(kind.data) != y0].min()
    assert wrong.any() and dist.min() < start  # closer than any natural input of another class
