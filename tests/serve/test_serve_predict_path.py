"""The gateway's predict path without repeated work (issue 19, throughput): the model's
dtype looked up once per module, the answer released without a second check, the
state blob's float16 history cast by torch.

Speed lives in ``benchmarks/``; these guard that the cheaper path answers as before.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mlwarden.core.target import TargetError, TorchTarget, probabilities
from mlwarden.defenses.output import MODES, harden_output
from mlwarden.serve.app import _release
from mlwarden.serve.config import OutputPolicy
from mlwarden.serve.config import Similarity as SimilarityConfig
from mlwarden.serve.monitor import Similarity, _half


class _Counted(nn.Module):
    """A small classifier that counts how often its parameters are walked."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
        self.walks = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def parameters(self, recurse: bool = True):  # type: ignore[no-untyped-def]
        self.walks += 1
        return super().parameters(recurse)


def test_the_module_dtype_is_looked_up_once_and_follows_conversions() -> None:
    torch.manual_seed(0)
    module = _Counted()
    target = TorchTarget(module, access="score")
    x = np.random.default_rng(0).uniform(0, 1, (3, 12)).astype(np.float32)
    first = target.predict(x)
    for _ in range(4):
        np.testing.assert_array_equal(target.predict(x), first)
    assert module.walks == 1  # was one walk every predict
    module.double()  # converted in place: the input follows, float64 all through
    assert target._dtype() is torch.float64
    want = module(torch.from_numpy(x).double()).detach().float().numpy()
    np.testing.assert_array_equal(target.predict(x), want)
    assert module.walks == 1
    other = nn.Sequential(nn.Flatten(), nn.Linear(12, 5)).half()  # another module object
    target.module = other
    assert target._dtype() is torch.float16
    target.module = nn.Flatten()  # no parameters: float32, as before
    assert target._dtype() is torch.float32
    assert target.predict(x).dtype == np.float32


def test_a_stale_dtype_is_refused_not_answered() -> None:
    module = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    target = TorchTarget(module, access="score")
    x = np.ones((2, 12), np.float32)
    target.predict(x)
    module[1] = nn.Linear(12, 5).double()  # new parameters the lookup does not see
    with pytest.raises(TargetError):
        target.predict(x)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("decimals", [0, 2, 3, 8])
def test_release_answers_what_harden_output_answered(mode: str, decimals: int) -> None:
    rng = np.random.default_rng(decimals)
    target = TorchTarget(nn.Sequential(nn.Flatten(), nn.Linear(12, 7)), access="score")
    probs = probabilities(target, rng.normal(0, 3, (64, 12)).astype(np.float32))
    edges = np.array([[0.125, 0.375, 0.5, 0, 0, 0, 0], [1 / 3, 1 / 3, 1 / 3, 0, 0, 0, 0],
                      [0.005, 0.015, 0.025, 0.955, 0, 0, 0], [1.0, 0, 0, 0, 0, 0, 0]])  # fmt: skip
    for p in (probs, edges, probs[:1]):
        policy = OutputPolicy(mode=mode, k=2, decimals=decimals)
        old = harden_output(p, mode, k=2, decimals=decimals)  # the gateway's code until now
        if mode == "round":
            old = np.round(old.astype(np.float64), decimals)
        assert _release(p, policy) == old.tolist()


def test_a_state_blob_halves_the_history_bit_for_bit_as_numpy_did() -> None:
    rng = np.random.default_rng(0)
    # every exponent, random mantissas: ties, subnormals, overflow to infinity
    x = rng.integers(0, 2**32, 400_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    finite = x[np.isfinite(x)][:390_000].reshape(-1, 8)
    edges = np.array([0.0, -0.0, 65504, 65519.99, 65520, 2**-24, 2**-25, 3 * 2**-26,
                      1 + 2**-11, 1 + 3 * 2**-11, np.inf, -np.inf], np.float32)  # fmt: skip
    with np.errstate(over="ignore"):
        for a in (finite, edges, x):  # x holds NaNs: numpy's payloads kept
            got, want = _half(a), a.astype(np.float16)
            assert got.dtype == np.float16
            np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16))
    sim = Similarity(SimilarityConfig(history=64), 8)
    sim.observe_many(rng.uniform(0, 1, (40, 8)).astype(np.float32))
    ring = sim.dump()["ring"]
    assert ring.shape == (40, 8)
    want = sim._ring[:40].astype(np.float16)  # what dump stored until now
    np.testing.assert_array_equal(ring.view(np.uint16), want.view(np.uint16))
