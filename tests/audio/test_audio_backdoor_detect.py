"""Audio backdoors found in the data and in the model: a small sound classifier (log-mel
front-end, waveform input) trained with a chirp trigger at 10 dB SNR on 10% of its
clips, beside the same classifier trained on clean clips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mlwarden.core.data import Dataset
from mlwarden.evasion.audio.models import fit_clips
from mlwarden.poisoning.simulate import Poisoned, audio_backdoor

from .conftest import MelNet

RATE, N, K = 8000, 1600, 6


def _sounds(n: int, seed: int) -> Dataset:
    """Class k: a harmonic sound (fundamental within 30% above 150 * 1.45^k Hz, two
    overtones) with a random slow tremolo, phase and level, over background noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, n)
    f0 = 150 * 1.45**y * rng.uniform(1, 1.3, n)
    t = np.arange(N) / RATE
    x = np.zeros((n, N))
    for h, a in [(1, 1.0), (2, 0.5), (3, 0.25)]:
        x += a * np.sin(2 * np.pi * h * f0[:, None] * t + rng.uniform(0, 6, (n, 1)))
    tremolo = 1 + 0.5 * np.sin(
        2 * np.pi * rng.uniform(2, 8, (n, 1)) * t + rng.uniform(0, 6, (n, 1))
    )
    x = rng.uniform(0.1, 0.5, (n, 1)) * x * tremolo / 1.75 + 0.01 * rng.standard_normal((n, N))
    return Dataset(
        x=x.astype(np.float32), y=y.astype(np.int64), modality="audio", bounds=(-1.0, 1.0),
        sample_rate=RATE, class_names=[f"sound{c}" for c in range(K)],
    )  # fmt: skip


class WideMelNet(MelNet):
    """MelNet with 32 feature channels: an embedding wide enough to cluster."""

    def __init__(self, classes: int) -> None:
        super().__init__(classes)
        self.conv = torch.nn.Conv1d(16, 32, 3, padding=1)
        self.head = torch.nn.Linear(32, classes)


def _train(ds: Dataset, epochs: int = 20) -> torch.nn.Module:
    return fit_clips(lambda: WideMelNet(K), ds.x, ds.y, epochs=epochs, lr=1e-2, seed=0)


@pytest.fixture(scope="module")
def case() -> tuple[Poisoned, torch.nn.Module, torch.nn.Module, Dataset]:
    torch.set_num_threads(1)
    train = _sounds(500, 0)
    poisoned = audio_backdoor(train, 0.1, target=0, kind="chirp", snr_db=10, seed=0)
    return poisoned, _train(poisoned.dataset), _train(train), _sounds(150, 1)


def test_the_planted_trigger_works(
    case: tuple[Poisoned, torch.nn.Module, torch.nn.Module, Dataset],
) -> None:
    poisoned, bad, clean, test = case
    others = test.x[test.y != 0]
    with torch.no_grad():
        asr = (bad(torch.as_tensor(poisoned.trigger.apply(others))).argmax(1) == 0).float().mean()
        acc = (clean(torch.as_tensor(test.x)).argmax(1).numpy() == test.y).mean()
    assert float(asr) > 0.85 and acc > 0.95


def test_backdoor_verdict_names_the_planted_class_and_stays_quiet_on_the_clean_twin(
    case: tuple[Poisoned, torch.nn.Module, torch.nn.Module, Dataset],
) -> None:
    """``mlwarden backdoor`` on audio: Neural Cleanse over waveform samples, judged by the
    verified norm verdict (gap to the next class, ratio to the median, the trigger
    re-checked on held-out clips), not the MAD index on raw norms (which missed this
    model: its index was 0.8). The clean twin, same recipe and data without poison,
    gets no finding."""
    from mlwarden.poisoning import backdoor_report

    _, bad, clean, test = case
    for model, planted in ((bad, True), (clean, False)):
        report = backdoor_report(model, test, epochs=20)
        verdict = report.metrics["neural_cleanse.verdict"]
        l1 = np.array([report.metrics["neural_cleanse.l1"][str(c)] for c in range(K)])
        found = [f for f in report.findings if f.rule == "MLW-DAT-007"]
        assert verdict["flagged"] == planted == bool(found), verdict
        assert report.metrics["suspected_target"] == (0 if planted else None)
        assert (l1[0] < 0.1 * np.median(l1)) == planted, l1
        if planted:
            # the reversed trigger flips clips the search never saw
            assert verdict["candidate"] == 0 and verdict["flip_rate"] >= 0.8
            assert found[0].evidence["suspected_target"] == 0
            assert "next smallest class" in found[0].description


def test_data_audit_with_the_model_names_the_poisoned_class_and_calls_no_clip_mislabelled(
    case: tuple[Poisoned, torch.nn.Module, torch.nn.Module, Dataset],
) -> None:
    """Through ``mlwarden data --model``: the detectors run on the model's embeddings
    (activation clustering, spectral signatures) and gradients (Neural Cleanse), label
    issues and outliers on band energies, not raw samples."""
    from mlwarden.poisoning import data_report

    poisoned, bad, _, _ = case
    report = data_report(poisoned.dataset, model=bad, neural_cleanse_epochs=20)
    ran = {n for n, d in report.metrics["poisoning.detectors"].items() if d["ran"]}
    assert {"activation-clustering", "spectral-signatures", "neural-cleanse"} <= ran
    backdoored = [f for f in report.findings if f.rule == "MLW-DAT-001"]
    assert backdoored and backdoored[0].evidence["classes"] == [0]
    truth = np.zeros(len(poisoned.dataset), bool)
    truth[poisoned.poison_index] = True
    listed = np.array([r["index"] for r in report.suspicious])
    in_target = listed[poisoned.dataset.y[listed] == 0]
    # all-to-one from five source classes: what is listed in the named class is poison
    assert len(in_target) >= 5 and truth[in_target].mean() >= 0.8, truth[in_target]
    assert report.metrics.get("label_issues.flagged", 0) <= 0.05 * len(truth)


@pytest.mark.parametrize("command", ["backdoor", "data"])
def test_cli_takes_a_wav_folder_and_a_torchscript_audio_model(
    command: str,
    case: tuple[Poisoned, torch.nn.Module, torch.nn.Module, Dataset],
    tmp_path: Path,
) -> None:
    import json

    import soundfile as sf

    from mlwarden.cli.main import main

    _, bad, _, test = case
    for i in range(60):
        folder = tmp_path / "clips" / f"sound{test.y[i]}"
        folder.mkdir(parents=True, exist_ok=True)
        sf.write(folder / f"{i:03d}.wav", test.x[i], RATE, subtype="FLOAT")
    model = tmp_path / "model.pt"
    torch.jit.trace(bad, torch.as_tensor(test.x[:2])).save(str(model))
    out = tmp_path / "r.json"
    args = [command, str(model), str(tmp_path / "clips"), "--epochs", "2"]
    if command == "data":
        args = ["data", str(tmp_path / "clips"), "--model", str(model), "--nc-epochs", "2"]
    with pytest.raises(SystemExit):
        main([*args, "--json", str(out), "-q"])
    report = json.loads(out.read_text())
    assert report["data"]["modality"] == "audio" and report["data"]["sample_rate"] == RATE
    assert report["metrics"]["poisoning.detectors" if command == "data" else "anomaly_index"]


def test_norm_statistics_rank_unfound_triggers_above_every_found_one() -> None:
    """A class whose search never reached the success threshold is not the candidate,
    however small its last mask, and counts above every found trigger in the median."""
    from mlwarden.poisoning.detect_model import norm_statistics

    l1 = np.array([1.0, 5.0, 300.0, 400.0, 500.0])
    success = np.array([0.2, 1.0, 1.0, 1.0, 0.0])
    c, gap, ratio, log_index = norm_statistics(l1, success)
    assert c == 1
    assert gap == pytest.approx(5 / 300)
    assert ratio == pytest.approx(5 / 400)  # median of (1000, 5, 300, 400, 1000)
    assert log_index > 3
    # no shortcut: the smallest is within a factor of two of the next
    c, gap, ratio, _ = norm_statistics(np.array([40.0, 60, 80, 900, 1000]), np.ones(5))
    assert (c, round(gap, 3), round(ratio, 3)) == (0, 0.667, 0.5)
