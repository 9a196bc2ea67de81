"""Membership inference and extraction on an audio classifier (waveform in): WAV class
folders written with soundfile, loaded through the audio loader, a spectral victim and
the 1-D convolutional substitute."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mlwarden.core.audio import write_wav
from mlwarden.core.data import Dataset, load_dataset
from mlwarden.core.target import TorchTarget
from mlwarden.privacy import extract_report, privacy_report

RATE = 8000
SAMPLES = 1000  # 0.125 s


def _tones(root: Path, per_class: int, seed: int) -> Path:
    """Three classes of noisy tones (400, 800, 1600 Hz), random phase and level."""
    rng = np.random.default_rng(seed)
    t = np.arange(SAMPLES) / RATE
    for label, freq in (("low", 400.0), ("mid", 800.0), ("high", 1600.0)):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            f = freq * rng.uniform(0.9, 1.1)
            clip = rng.uniform(0.1, 0.5) * np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3))
            clip += rng.normal(0, 0.2, SAMPLES)
            write_wav(root / label / f"{i:03d}.wav", np.clip(clip, -1, 1)[None], RATE)
    return root


class SpecNet(nn.Module):
    """Log-magnitude spectrum -> linear: a victim unlike the conv substitute."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(SAMPLES // 2 + 1, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.log1p(torch.fft.rfft(x.reshape(len(x), -1)).abs()))


@pytest.fixture(scope="module")
def audio(tmp_path_factory):  # type: ignore[no-untyped-def]
    root: Path = tmp_path_factory.mktemp("privacy-audio")
    train_dir = _tones(root / "train", 24, seed=0)
    holdout_dir = _tones(root / "holdout", 24, seed=1)
    train = load_dataset(str(train_dir))
    torch.manual_seed(0)
    net = SpecNet()
    opt = torch.optim.Adam(net.parameters(), lr=3e-2)
    x, y = torch.as_tensor(train.x), torch.as_tensor(train.y)
    for _ in range(300):  # long enough to memorise the noise of its training clips
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval(), train_dir, holdout_dir


def test_privacy_on_audio_with_scores_and_with_labels_only(audio) -> None:  # type: ignore[no-untyped-def]
    net, train_dir, holdout_dir = audio
    scored = privacy_report(TorchTarget(net), str(train_dir), str(holdout_dir), attack="loss")
    assert scored.data["train"]["modality"] == "audio"
    # the loss attack reads scores: that is the access its figure assumes (not gradients)
    assert scored.metrics["access"] == "score" and scored.metrics["attack"] == "loss"
    assert scored.config["target_access"] == "white"
    assert scored.metrics["auc"] > 0.6  # an overfit victim leaks through its loss
    labels = privacy_report(TorchTarget(net, access="label"), str(train_dir), str(holdout_dir))
    assert labels.metrics["attack"] == "label-only" and labels.metrics["access"] == "label"
    assert "RMS" in labels.findings[0].evidence["config"]["noise"]


def test_extract_on_audio_trains_a_conv_substitute_from_a_clip_pool(audio) -> None:  # type: ignore[no-untyped-def]
    net, train_dir, holdout_dir = audio
    pool = load_dataset(str(holdout_dir))
    test = load_dataset(str(train_dir))
    report = extract_report(TorchTarget(net), pool, budgets=(30, 72), test=test, seed=0)
    m = report.metrics
    assert report.config["modality"] == "audio" and "RMS" in report.config["random_inputs"]
    assert m["queries"] == {"30": 30, "72": 72}
    victim = TorchTarget(net).predict_labels(test.x)
    baseline = np.bincount(victim).max() / len(victim)
    assert m["fidelity"]["72"] > baseline + 0.2
    assert isinstance(pool, Dataset) and pool.x.shape[1:] == (SAMPLES,)
