"""The cross-class detector (MLW-DAT-017) on audio reads the clips' band energies: on
the raw samples it flagged the wrong rows of heavily poisoned sound sets; on band
energies it lists the poison without a model, and a clean set gets no class flagged."""

from __future__ import annotations

import numpy as np
import pytest

from mlwarden.core.audio_samples import harmonic_sounds
from mlwarden.core.data import Dataset
from mlwarden.poisoning import detect_data as dd
from mlwarden.poisoning.assess import data_report
from mlwarden.poisoning.simulate import audio_backdoor

RATE, SAMPLES, K = 8000, 1600, 6


def _sounds(seed: int) -> Dataset:
    x, y = harmonic_sounds(360, K, seed=seed, sample_rate=RATE, samples=SAMPLES)
    return Dataset(x=x, y=y, modality="audio", bounds=(-1.0, 1.0), sample_rate=RATE)


def _cross(report: object) -> tuple[np.ndarray, list[int]]:
    rows = [r["index"] for r in report.suspicious if any("cross-class" in w for w in r["reasons"])]  # type: ignore[attr-defined]
    classes = [f.evidence["class"] for f in report.findings if f.rule == "MLW-DAT-017"]  # type: ignore[attr-defined]
    return np.array(rows, dtype=int), classes


@pytest.mark.parametrize("kind", ["chirp", "noise"])
def test_heavy_audio_poison_found_without_a_model(kind: str) -> None:
    # 25% of the set relabelled to class 0: over half of class 0 is poison, where
    # activation clustering and spectral signatures stop working
    p = audio_backdoor(_sounds(0), 0.25, target=0, kind=kind, snr_db=10.0, seed=0)
    report = data_report(p.dataset, seed=0)
    assert report.metrics["cross_class.input"] == "band energies"
    rows, classes = _cross(report)
    assert classes == [0]
    flags = np.zeros(len(p.is_poison), dtype=bool)
    flags[rows] = True
    m = dd.flag_metrics(flags, p.is_poison)
    assert m["precision"] >= 0.9 and m["tpr"] >= 0.8, m


def test_clean_sound_set_has_no_cross_class_flag() -> None:
    report = data_report(_sounds(1), seed=0)
    rows, classes = _cross(report)
    assert classes == [] and len(rows) == 0
