"""The data audit on audio reads the clips' band energies beside the model's penultimate
layer (``poisoning.audio_features``): a short trigger shows in the loudest frame of its
bands, and activation clustering and spectral signatures run on both representations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlwarden.core.audio_samples import harmonic_sounds
from mlwarden.core.data import Dataset
from mlwarden.evasion.audio.models import MelClassifier
from mlwarden.poisoning.audio_features import band_embedding
from mlwarden.poisoning.simulate import audio_backdoor, audio_trigger

RATE, SAMPLES, K = 8000, 1600, 6
BANDS = 32


def _sounds(n: int, seed: int) -> Dataset:
    x, y = harmonic_sounds(n, K, seed=seed, sample_rate=RATE, samples=SAMPLES)
    return Dataset(x=x, y=y, modality="audio", bounds=(-1.0, 1.0), sample_rate=RATE)


def _train(ds: Dataset, seed: int = 0) -> MelClassifier:
    torch.manual_seed(seed)
    net = MelClassifier(K)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    x, y = torch.as_tensor(ds.x), torch.as_tensor(ds.y)
    for _ in range(20):
        for b in torch.randperm(len(x)).split(64):
            loss = torch.nn.functional.cross_entropy(net(x[b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


def _band_of(hz: float) -> int:
    edges = np.geomspace(50.0, RATE / 2, BANDS + 1)
    return int(np.searchsorted(edges, hz, side="right") - 1)


def test_band_embedding_ignores_loudness() -> None:
    x = _sounds(20, 3).x
    a, b = band_embedding(x, RATE), band_embedding(0.1 * x, RATE)
    assert a.shape == (20, 2 * BANDS) and a.dtype == np.float32
    np.testing.assert_allclose(a, b, atol=1e-3)


def test_a_short_tone_shows_in_its_bands_loudest_frame_more_than_in_its_mean() -> None:
    """A 0.1 s 1 kHz burst 20 dB below the clip: the band holding 1 kHz gains far more
    in its loudest frame than on average, and bands far from 1 kHz barely move."""
    x = _sounds(40, 4).x
    tone = audio_trigger(SAMPLES, RATE, kind="tone", seconds=0.05, position=0.5)
    gain = np.linalg.norm(x, axis=1, keepdims=True) / np.linalg.norm(tone) * 10 ** (-20 / 20)
    before, after = band_embedding(x, RATE), band_embedding(x + gain * tone, RATE)
    b = _band_of(1000.0)
    rise_max = after[:, BANDS + b] - before[:, BANDS + b]
    rise_mean = after[:, b] - before[:, b]
    assert np.median(rise_max) > 0.5, rise_max
    assert np.median(rise_max) > 2 * np.median(rise_mean)
    far = [_band_of(100.0), _band_of(3500.0)]
    assert np.abs(after[:, far] - before[:, far]).max() < 0.1


@pytest.fixture(scope="module")
def poisoned() -> tuple[Dataset, np.ndarray, MelClassifier]:
    """A noise burst 10 dB below the clip on 10% of 600 clips (all-to-one into class 0,
    about 38% of that class), and a log-mel classifier trained on them."""
    torch.set_num_threads(1)
    p = audio_backdoor(_sounds(600, 0), 0.1, target=0, kind="noise", snr_db=10, seed=0)
    return p.dataset, p.is_poison, _train(p.dataset)


def _listed(report) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.array([r["index"] for r in report.suspicious], dtype=int)


def test_the_audit_lists_poison_the_penultimate_layer_alone_misses(
    poisoned: tuple[Dataset, np.ndarray, MelClassifier], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both representations run and are named in the detector table; the calibrated list
    is poison (precision >= 0.8) and holds more of it than the model's layer alone."""
    from mlwarden.poisoning import assess, data_report

    ds, truth, net = poisoned
    report = data_report(ds, model=net, neural_cleanse_epochs=0)
    table = report.metrics["poisoning.detectors"]
    for name in ("activation-clustering", "spectral-signatures"):
        assert table[name]["ran"] and table[name + ":bands"]["ran"], table
    listed = _listed(report)
    assert len(listed) and truth[listed].mean() >= 0.8, truth[listed].mean()
    assert any("on band energies" in " ".join(r["reasons"]) for r in report.suspicious)

    monkeypatch.setattr(assess, "_band_detectors", lambda *a: (None, None))
    alone = _listed(data_report(ds, model=net, neural_cleanse_epochs=0))
    assert truth[listed].sum() >= truth[alone].sum() + 5, (truth[listed].sum(), truth[alone].sum())
