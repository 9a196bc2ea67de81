"""Input restoration transforms: shape, range, flags and the spec builder."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mlwarden.core.errors import UserError
from mlwarden.defenses.transforms import (
    REGISTRY,
    BitDepthReduction,
    JpegCompression,
    MedianFilter,
    RandomResizePad,
    build_chain,
)

ALL_SPECS = [{"type": name} for name in REGISTRY]


@pytest.mark.parametrize("spec", ALL_SPECS, ids=[s["type"] for s in ALL_SPECS])
@pytest.mark.parametrize("channels", [1, 3])
def test_transform_keeps_shape_and_bounds(spec: dict, channels: int) -> None:
    x = torch.rand(3, channels, 8, 8, generator=torch.Generator().manual_seed(0))
    out = build_chain([spec])(x)
    assert out.shape == x.shape
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


@given(bits=st.integers(1, 8), lo=st.floats(-2, 0), width=st.floats(0.5, 3))
@settings(max_examples=25, deadline=None)
def test_bit_depth_output_has_at_most_2_pow_bits_levels(bits: int, lo: float, width: float) -> None:
    x = torch.rand(2, 1, 6, 6, generator=torch.Generator().manual_seed(1)) * width + lo
    out = BitDepthReduction(bits, bounds=(lo, lo + width))(x)
    assert len(torch.unique(out)) <= 2**bits
    assert float(out.min()) >= lo - 1e-6 and float(out.max()) <= lo + width + 1e-6


def test_median_filter_removes_a_single_spike() -> None:
    x = torch.zeros(1, 1, 7, 7)
    x[0, 0, 3, 3] = 1.0
    assert float(MedianFilter(3)(x).abs().max()) == 0.0


def test_jpeg_changes_noise_but_keeps_a_flat_image() -> None:
    flat = torch.full((1, 1, 16, 16), 0.5)
    assert torch.allclose(JpegCompression(90)(flat), flat, atol=2 / 255)
    noise = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert float((JpegCompression(30)(noise) - noise).abs().mean()) > 0.02


def test_random_resize_pad_differs_between_calls_but_is_seeded() -> None:
    x = torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    a, b = RandomResizePad(seed=3), RandomResizePad(seed=3)
    first = a(x)
    assert torch.equal(first, b(x))
    assert not all(torch.equal(first, a(x)) for _ in range(3))


def test_chain_flags_combine() -> None:
    chain = build_chain([{"type": "median"}, {"type": "random_resize_pad"}])
    assert chain.differentiable and chain.randomized
    chain = build_chain([{"type": "jpeg", "quality": 50}, {"type": "downscale"}])
    assert not chain.differentiable and not chain.randomized
    assert chain.describe()["transforms"][0] == {"type": "jpeg", "quality": 50}


@pytest.mark.parametrize(
    "spec",
    [
        [{"type": "blur"}],
        [{"quality": 5}],
        [{"type": "jpeg", "quality": 0}],
        [{"type": "median", "size": 2}],
        [{"type": "bit_depth", "nbits": 3}],
        {"type": "jpeg"},
    ],
)
def test_build_chain_rejects_bad_specs_with_user_error(spec: object) -> None:
    with pytest.raises(UserError):
        build_chain(spec)  # type: ignore[arg-type]


def test_transform_rejects_non_image_batch() -> None:
    with pytest.raises(UserError, match="N, C, H, W"):
        MedianFilter()(torch.zeros(3, 4))
