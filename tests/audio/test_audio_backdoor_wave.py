"""Audio backdoors in raw-waveform models (strided 1-D convolutions, no spectrogram
front-end): Neural Cleanse with triggers sized by the energy they add (an SNR) finds a
tone backdoor that a mask over samples passes as natural, and stays quiet on the clean
twin; the trigger spaces stamp what they claim."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlwarden.core.audio_samples import harmonic_sounds
from mlwarden.core.data import Dataset
from mlwarden.evasion.audio.models import WaveClassifier, fit_clips
from mlwarden.poisoning import audio_trigger as at
from mlwarden.poisoning.simulate import Poisoned, audio_backdoor

RATE, T, K = 8000, 1600, 6


def _train(x: np.ndarray, y: np.ndarray, seed: int) -> torch.nn.Module:
    return fit_clips(lambda: WaveClassifier(K), x, y, epochs=30, lr=3e-3, seed=seed)


@pytest.fixture(scope="module")
def case() -> tuple[Poisoned, torch.nn.Module, torch.nn.Module, Dataset]:
    """The 6-class, seed-1 tone case of ``benchmarks/audio_backdoor.py --models wave``
    (target class 1) and its clean twin; the search sees the same 150 clips as there."""
    torch.set_num_threads(1)
    x, y = harmonic_sounds(500, K, seed=1, sample_rate=RATE, samples=T)
    train = Dataset(x=x, y=y, modality="audio", bounds=(-1.0, 1.0), sample_rate=RATE)
    poisoned = audio_backdoor(train, 0.1, target=1, kind="tone", snr_db=10, seed=1)
    tx, ty = harmonic_sounds(300, K, seed=101, sample_rate=RATE, samples=T)
    test = Dataset(x=tx[:225], y=ty[:225], modality="audio", bounds=(-1.0, 1.0), sample_rate=RATE)
    bad = _train(poisoned.dataset.x, poisoned.dataset.y, 1)
    return poisoned, bad, _train(x, y, 1), test


def test_energy_trigger_sizes_a_planted_trigger_by_its_snr() -> None:
    """The planted 10 dB tone, written as an :class:`EnergyTrigger` pattern, stamps the
    same clips as the backdoor did and has size ``T * 10**(-10 / 10)``: 10 dB."""
    x, y = harmonic_sounds(8, K, seed=3, sample_rate=RATE, samples=T)
    ds = Dataset(x=x, y=y, modality="audio", bounds=(-1.0, 1.0), sample_rate=RATE)
    planted = audio_backdoor(ds, 0.1, target=0, kind="tone", snr_db=10, seed=0).trigger
    p = planted.pattern.astype(np.float64)
    s = np.sqrt(T) * 10 ** (-10 / 20) * p / np.linalg.norm(p)
    trig = at.EnergyTrigger(torch.as_tensor(x), 1, torch.Generator())
    pattern = torch.as_tensor(s[None], dtype=torch.float32)
    stamped = trig.stamp(pattern**2, pattern, torch.as_tensor(x))[0].numpy()
    np.testing.assert_allclose(stamped, planted.apply(x), atol=1e-5)
    assert at.snr_db(float((s**2).sum()), T) == pytest.approx(10.0, abs=1e-6)


def test_spectral_trigger_round_trips_and_replaces_only_masked_cells() -> None:
    """An empty mask leaves clips as they were (the STFT inverts exactly); a full mask with
    zero magnitude silences them."""
    x, _ = harmonic_sounds(4, K, seed=4, sample_rate=RATE, samples=T)
    xt = torch.as_tensor(x)
    trig = at.SpectralTrigger(xt, 1, torch.Generator().manual_seed(0), n_fft=256)
    mask, pattern = trig.decode()
    same = trig.stamp(torch.zeros_like(mask), pattern, xt)[0]
    torch.testing.assert_close(same, xt, atol=1e-5, rtol=0)
    silent = trig.stamp(torch.ones_like(mask), torch.zeros_like(pattern), xt)[0]
    assert float(silent.abs().max()) < 1e-5


def test_tone_backdoor_in_a_raw_waveform_model_found_by_energy_clean_twin_quiet(
    case: tuple[Poisoned, torch.nn.Module, torch.nn.Module, Dataset],
) -> None:
    """The planted class's reversed trigger works at a higher SNR than the planted 10 dB
    tone (the search finds it at most as loud), is flagged by the verified verdict and
    flips held-out clips; the clean twin's smallest trigger is not flagged. A mask over
    samples misses this model (its planted class's mask is 11.5% of the median class's,
    above the 10% the verdict needs; the energy is 8%)."""
    poisoned, bad, clean, test = case
    with torch.no_grad():
        stamped = torch.as_tensor(poisoned.trigger.apply(test.x[test.y != 1]))
        assert float((bad(stamped).argmax(1) == 1).float().mean()) > 0.85
    for model, planted in ((bad, True), (clean, False)):
        nc = at.audio_cleanse(
            model, test.x, sample_rate=RATE, num_classes=K, epochs=20, domains=("energy",)
        )
        v = nc.domain_verdicts["energy"]
        assert v.flagged == planted and nc.domain == "energy", v
        assert nc.suspected_target == (1 if planted else None)
        if planted:
            assert v.candidate == 1 and v.flip_rate >= 0.8
            assert at.snr_db(float(nc.l1[1]), T) >= 9.0


def test_backdoor_report_says_the_energy_search_found_it(
    case: tuple[Poisoned, torch.nn.Module, torch.nn.Module, Dataset],
) -> None:
    """``mlwarden backdoor`` on a raw-waveform audio model: MLW-DAT-007 names the planted
    class and the report says which search domain found it."""
    from mlwarden.poisoning import backdoor_report

    _, bad, _, test = case
    report = backdoor_report(bad, test, epochs=20)
    found = [f for f in report.findings if f.rule == "MLW-DAT-007"]
    assert found and found[0].evidence["suspected_target"] == 1
    assert found[0].evidence["domain"] == report.metrics["neural_cleanse.domain"] == "energy"
    assert "energy" in found[0].description
    assert set(report.metrics["neural_cleanse.domains"]) == set(at.SHIPPED)
