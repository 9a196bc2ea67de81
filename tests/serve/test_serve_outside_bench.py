"""The outside benchmark's re-encoding is JPEG's (``benchmarks/gateway_detection_outside.py``).

Its benign clients' resends and its camouflaged attackers both go through
:func:`jpeg`; figures of "JPEG re-shares" mean something only if the lossy step is the
one a phone applies. Checked against libjpeg through Pillow, grey scale (no chroma
subsampling), at three qualities.
"""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "gateway_detection_outside.py"


@pytest.fixture(scope="module")
def outside():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gateway_detection_outside", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    from mlwarden.core.data import load_dataset

    return np.asarray(load_dataset("mnist5k").x[:20]).reshape(-1, 28, 28)


@pytest.mark.parametrize("quality", [50, 75, 95])
def test_jpeg_matches_libjpeg(outside, images: np.ndarray, quality: int) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    mine_vs_lib, lib_vs_plain = [], []
    for im in images:
        pixels = np.round(im * 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels, "L").save(buf, "JPEG", quality=quality)
        lib = np.asarray(Image.open(io.BytesIO(buf.getvalue())), dtype=np.float64)
        mine = outside.jpeg(pixels / 255.0, quality) * 255
        mine_vs_lib.append(np.abs(mine - lib).mean())
        lib_vs_plain.append(np.abs(lib - pixels).mean())
    # libjpeg's integer DCT differs from the exact one by a fraction of a grey level;
    # the coding itself moves pixels by 0.7-5 levels at these qualities
    assert np.mean(mine_vs_lib) < 0.3
    assert np.mean(mine_vs_lib) < np.mean(lib_vs_plain) / 2
