"""The data audit on audio reads the clips' band energies beside the model's penultimate
layer (``poisoning.audio_features``): a short trigger shows in the loudest frame of its
bands, and activation clustering and spectral signatures run on both representations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mlwarden.core.audio_samples import harmonic_sounds
from mlwarden.core.data import Dataset
from mlwarden.evasion.audio.models import MelClassifier, fit_clips
from mlwarden.poisoning.audio_features import band_embedding
from mlwarden.poisoning.simulate import audio_backdoor, audio_trigger

RATE, SAMPLES, K = 8000, 1600, 6
BANDS = 32


def _sounds(n: int, seed: int) -> Dataset:
    x, y = harmonic_sounds(n, K, seed=seed, sample_rate=RATE, samples=SAMPLES)
    return Dataset(x=x, y=y, modality="audio", bounds=(-1.0, 1.0), sample_rate=RATE)


def _train(ds: Dataset, seed: int = 0) -> MelClassifier:
    return fit_clips(lambda: MelClassifier(K), ds.x, ds.y, epochs=20, lr=1e-2, seed=seed)


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

    # the model's layer alone: no detector reads band energies (cross-class reads the
    # waveform samples, as before it was given the bands)
    monkeypatch.setattr(assess, "_band_detectors", lambda *a: (None, None))
    monkeypatch.setattr(assess, "_cross_class_input", lambda report, ds: ds.x)
    alone = _listed(data_report(ds, model=net, neural_cleanse_epochs=0))
    assert truth[listed].sum() >= truth[alone].sum() + 5, (truth[listed].sum(), truth[alone].sum())


def test_cli_lists_poison_for_a_traced_model_whose_layers_cannot_be_read(
    tmp_path: Path,
) -> None:
    """A traced TorchScript model has no ``embed`` and is no Sequential, so activation
    clustering and spectral signatures cannot read its penultimate layer; Neural Cleanse
    names the target class and the band-energy detectors find the poison in it."""
    import soundfile as sf

    from mlwarden.cli.main import main

    torch.set_num_threads(1)
    p = audio_backdoor(_sounds(400, 5), 0.1, target=2, kind="noise", snr_db=10, seed=5)
    ds = p.dataset
    for i in range(len(ds)):
        folder = tmp_path / "clips" / f"c{ds.y[i]}"
        folder.mkdir(parents=True, exist_ok=True)
        sf.write(folder / f"{i:03d}.wav", ds.x[i], RATE, subtype="FLOAT")
    model = tmp_path / "model.pt"
    torch.jit.trace(_train(ds, seed=5), torch.as_tensor(ds.x[:2])).save(str(model))
    out = tmp_path / "r.json"
    args = ["data", str(tmp_path / "clips"), "--model", str(model), "--nc-epochs", "5"]
    with pytest.raises(SystemExit):
        main([*args, "--json", str(out), "-q"])
    report = json.loads(out.read_text())
    table = report["metrics"]["poisoning.detectors"]
    assert not table["activation-clustering"]["ran"] and table["activation-clustering:bands"]["ran"]
    found = [f for f in report["findings"] if f["rule"] == "MLW-DAT-001"]
    assert found and found[0]["evidence"]["classes"] == [2]
    # the folder loads class by class, file by file: map its rows back to the clips
    order = sorted(range(len(ds)), key=lambda i: (ds.y[i], i))
    truth = p.is_poison[order]
    listed = [r["index"] for r in report["suspicious"]]
    assert truth[listed].mean() >= 0.8 and truth[listed].sum() >= 0.25 * truth.sum()


def test_a_clean_sound_set_gets_no_class_flagged_through_a_traced_model() -> None:
    """The clean twin of the case above: nothing names a class, so the band-energy
    detectors list nothing of their own (on this set band clustering alone splits
    class 5, silhouette 0.20, and spectral signatures always take 7.5% of each class)."""
    from mlwarden.poisoning import data_report

    torch.set_num_threads(1)
    ds = _sounds(400, 5)
    traced = torch.jit.trace(_train(ds, seed=5), torch.as_tensor(ds.x[:2]))
    report = data_report(ds, model=traced, neural_cleanse_epochs=5)
    table = report.metrics["poisoning.detectors"]
    assert table["activation-clustering:bands"] == {"ran": True, "flagged": 0}, table
    assert table["spectral-signatures:bands"] == {"ran": True, "flagged": 0}, table
    assert not {"MLW-DAT-001", "MLW-DAT-011"} & {f.rule for f in report.findings}
    assert report.suspicious == []
