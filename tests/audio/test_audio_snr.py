"""The SNR budget: every attack keeps each clip's signal-to-perturbation ratio, and the
real Silero VAD on real speech falls to PGD/APGD at 30 dB."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mlwarden.core.audio import snr_db
from mlwarden.core.data import load_dataset
from mlwarden.core.errors import UserError
from mlwarden.evasion.attacks.apgd import APGD
from mlwarden.evasion.attacks.pgd import PGD
from mlwarden.evasion.attacks.square import Square


def _clips(n: int, gains: list[float], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 2048)).astype(np.float32)
    x /= np.abs(x).max(axis=1, keepdims=True)
    return (x * np.asarray(gains, np.float32)[:, None]).astype(np.float32)


@settings(max_examples=6, deadline=None)
@given(
    snr=st.floats(min_value=5.0, max_value=50.0),
    gains=st.lists(st.floats(min_value=0.01, max_value=0.9), min_size=3, max_size=3),
    kind=st.sampled_from(["pgd", "apgd", "square"]),
)
def test_attacks_never_go_below_the_snr_of_any_clip(
    tiny_audio_model: torch.nn.Module, snr: float, gains: list[float], kind: str
) -> None:
    x = _clips(3, gains)
    attack = {
        "pgd": PGD(norm="l2", snr_db=snr, steps=5, bounds=(-1, 1)),
        "apgd": APGD(norm="l2", snr_db=snr, steps=5, bounds=(-1, 1)),
        "square": Square(norm="l2", snr_db=snr, n_queries=20, bounds=(-1, 1)),
    }[kind]
    adv = attack.generate(tiny_audio_model, x)
    assert np.all(snr_db(x, adv) >= snr - 1e-3)
    assert np.all(np.abs(adv) <= 1.0)


def test_quiet_and_loud_clips_get_budgets_in_proportion(tiny_audio_model: torch.nn.Module) -> None:
    x = _clips(2, [0.01, 0.8])
    adv = PGD(norm="l2", snr_db=20, steps=10, bounds=(-1, 1)).generate(tiny_audio_model, x)
    moved = np.linalg.norm(adv - x, axis=1)
    # a fixed eps would give both clips the same radius; the SNR ball scales with the clip
    assert moved[1] > 20 * moved[0]


def test_an_snr_budget_needs_the_l2_norm() -> None:
    with pytest.raises(UserError, match="SNR budget is an L2 ball"):
        PGD(norm="linf", snr_db=30).generate(torch.nn.Linear(8, 2), np.zeros((1, 8), np.float32))


def test_silero_vad_on_real_speech_falls_at_30_db(vad: torch.nn.Module, vad_dir: Path) -> None:
    ds = load_dataset(vad_dir, sample_rate=16000, clip_seconds=0.5)
    speech = ds.subset(np.nonzero(ds.y == ds.class_names.index("speech"))[0])
    with torch.no_grad():
        clean = vad(torch.from_numpy(speech.x)).argmax(1).numpy()
    keep = clean == speech.y
    assert keep.sum() >= 3, "the real VAD should hear most of the real prompts"
    x, y = speech.x[keep], speech.y[keep]
    adv = APGD(norm="l2", snr_db=30, steps=20, bounds=(-1, 1)).generate(vad, x, y)
    with torch.no_grad():
        pred = vad(torch.from_numpy(adv)).argmax(1).numpy()
    assert np.all(snr_db(x, adv) >= 30 - 1e-3)
    assert (pred != y).mean() >= 0.5


def test_one_universal_perturbation_fools_real_speech_at_every_clips_snr(
    vad: torch.nn.Module, vad_dir: Path
) -> None:
    from mlwarden.evasion.audio.universal import universal_perturbation

    ds = load_dataset(vad_dir, sample_rate=16000, clip_seconds=0.5)
    speech = ds.subset(np.nonzero(ds.y == ds.class_names.index("speech"))[0])
    res = universal_perturbation(vad, speech.x, speech.y, snr_db=20, steps=30)
    assert res.delta.shape == speech.x.shape[1:]
    adv = np.clip(speech.x + res.delta, -1, 1)
    assert np.all(snr_db(speech.x, adv) >= 20 - 1e-3) and res.min_snr_db >= 20 - 1e-3
    with torch.no_grad():
        pred = vad(torch.from_numpy(adv)).argmax(1).numpy()
    assert res.fooled.sum() >= 1 and np.all(pred[res.fooled] != speech.y[res.fooled])
