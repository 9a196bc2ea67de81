"""benchmarks/gateway_detection_plain.py: the issue's three benign forms, built apart."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from tests.serve.conftest import bench_module

from mlwarden.serve.config import Detection


@pytest.fixture(scope="module")
def plain() -> Any:
    return bench_module("gateway_detection_plain")


@pytest.fixture(scope="module")
def kind(plain, digits, digits_model) -> Any:
    xtr, ytr, xte, _ = digits
    x = xte.astype(np.float32)
    return plain.long.Kind(x, x, (xtr, ytr), digits_model, [], (0.0, 1.0), "tensor", len(x))


def test_mnist_digits_come_out_on_the_8x8_grid(plain):
    img = np.zeros((2, 28, 28), dtype=np.float32)
    img[0, 4:24, 4:24] = 1.0  # a box filled: every block full
    img[1, 4:14, 4:24] = 1.0  # its top half
    out = plain.digits_8x8(img)
    assert out.shape == (2, 1, 8, 8)
    assert np.array_equal(out[0, 0], np.ones((8, 8)))
    assert out[1, 0, :4].min() == 1.0 and out[1, 0, 5:].max() == 0.0
    assert np.array_equal(out * 16, np.round(out * 16))  # counts of 16


def test_jitter_has_the_asked_spread_and_stays_in_range(plain):
    rng = np.random.default_rng(0)
    x = np.full(20000, 0.5, dtype=np.float32)
    out = plain.jitter(x, rng, 0.02, (0.0, 1.0), 255)
    assert abs(float(np.std(out - x)) - 0.02) < 0.002
    edge = plain.jitter(np.zeros(1000, np.float32), rng, 0.03, (0.0, 1.0), 255)
    assert edge.min() >= 0.0 and np.allclose(edge * 255, np.round(edge * 255), atol=1e-3)


def test_the_clients_are_what_they_say(plain, kind):
    sorted_ = plain.stream("sorted", kind, "x", 300, 0, 0.02)
    assert len(sorted_) == 300 and np.all(np.diff(kind.labels(sorted_)) >= 0)
    assert len({x.tobytes() for x in sorted_}) == 300  # distinct
    draws = plain.stream("draw20", kind, "x", 500, 0, 0.02)
    assert len(draws) == 500 and len({x.tobytes() for x in draws}) <= 20
    noisy = plain.stream("jitter-sorted", kind, "x", 400, 0, 0.02)
    assert np.all(np.diff(kind.labels(noisy)) >= 0)
    assert len({x.tobytes() for x in noisy}) > 390  # fresh noise each send
    assert plain.stream("other", kind, "x", 10, 0, 0.02) is None  # digits only


def test_flags_are_counted_per_1000_and_located(plain, kind):
    """A noiseless block walk on one digit is flagged early: the counting sees a flag."""
    det = Detection()
    rng = np.random.default_rng(1)
    x0 = kind.data[0]
    walk = [x0.copy()]
    for _ in range(59):
        q = walk[-1].copy()
        y, x = rng.integers(0, 7, 2)
        q[0, y : y + 2, x : x + 2] = np.clip(q[0, y : y + 2, x : x + 2] + 0.1, 0, 1)
        walk.append(q)
    res = plain.flagged(kind, det, np.stack(walk))
    assert res["n"] == 60 and res["any"] > 0 and res["at"] and res["at"][0] <= 20
