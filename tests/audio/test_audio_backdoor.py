"""Audio backdoor simulation: tone, chirp and noise-burst triggers at a set SNR per clip."""

from __future__ import annotations

import numpy as np
import pytest

from mlwarden.core.data import Dataset
from mlwarden.core.errors import UserError
from mlwarden.poisoning.simulate import audio_backdoor, audio_trigger

RATE, N = 8000, 2000


def _tones(n: int, seed: int) -> Dataset:
    """Class 0: a low tone (200-400 Hz), class 1: a high one (900-1400 Hz), with noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    f = np.where(y == 0, rng.uniform(200, 400, n), rng.uniform(900, 1400, n))
    t = np.arange(N) / RATE
    amp = rng.uniform(0.1, 0.6, n)[:, None]
    x = amp * np.sin(2 * np.pi * f[:, None] * t + rng.uniform(0, 6, (n, 1)))
    x += 0.01 * rng.standard_normal((n, N))
    return Dataset(
        x=x.astype(np.float32), y=y.astype(np.int64), modality="audio", bounds=(-1.0, 1.0),
        sample_rate=RATE, class_names=["low", "high"],
    )  # fmt: skip


@pytest.mark.parametrize("kind", ["tone", "chirp", "noise"])
def test_triggers_are_added_at_the_stated_snr(kind: str) -> None:
    ds = _tones(6, 0)
    p = audio_backdoor(ds, 0.5, target=0, kind=kind, snr_db=25, seed=1)
    i = p.poison_index
    d = p.dataset.x[i] - ds.x[i]
    snr = 20 * np.log10(np.linalg.norm(ds.x[i], axis=1) / np.linalg.norm(d, axis=1))
    assert np.allclose(snr, 25, atol=0.05) and np.all(p.dataset.y[i] == 0)
    assert np.count_nonzero(audio_trigger(N, RATE, kind=kind, seconds=0.05)) <= 400


def test_audio_backdoor_refuses_image_data() -> None:
    with pytest.raises(UserError, match="needs audio data"):
        audio_backdoor(Dataset(x=np.zeros((4, 1, 2, 2), np.float32), y=np.arange(4) % 2), 0.5)
