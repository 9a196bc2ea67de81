"""End to end: the real Silero VAD on real recordings, attacked at 30 dB SNR from the CLI;
the WAV files it writes fool the model when replayed, at the stated SNR."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from mlwarden.cli.main import main
from mlwarden.core.data import load_dataset

MODEL = "mlwarden.evasion.audio.models:silero_vad"


def _run(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(args)
    return int(exc.value.code or 0)


def test_cli_attack_at_30_db_writes_wavs_that_fool_the_model_on_replay(
    vad: torch.nn.Module, vad_dir: Path, tmp_path: Path
) -> None:
    out, report = tmp_path / "adv", tmp_path / "r.json"
    args = [MODEL, str(vad_dir), "--sample-rate", "16000", "--clip-seconds", "0.5"]
    args += ["--snr-db", "30", "--budget", "quick", "--save-adversarial", str(out)]
    html = tmp_path / "r.html"
    assert _run(["evasion", *args, "--json", str(report), "--html", str(html), "--quiet"]) == 0
    page = html.read_text()
    # the report embeds players (original + adversarial) and waveform/spectrogram figures
    assert page.count('<audio controls preload="none" src="data:audio/wav;base64,') >= 2
    assert "media-src data:" in page and "evasion.audio." in page
    saved = json.loads(report.read_text())["metrics"]["saved_adversarial"]["files"]
    assert len(saved) >= 3
    clean = load_dataset(vad_dir, sample_rate=16000, clip_seconds=0.5)
    for row in saved:
        # read back independently of mlwarden: soundfile, the model itself, numpy SNR
        wav, rate = sf.read(out / row["path"], dtype="float32")
        assert rate == 16000 and sf.info(out / row["path"]).subtype == "FLOAT"
        i = clean.sources.index(row["path"])
        noise = np.linalg.norm(wav - clean.x[i])
        assert 20 * np.log10(np.linalg.norm(clean.x[i]) / noise) >= 30 - 1e-3
        with torch.no_grad():
            pred = int(vad(torch.from_numpy(wav)[None]).argmax(1))
        assert pred != clean.y[i], row["path"]


def test_snr_db_on_image_data_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        _run(["evasion", "mlwarden.evasion.audio.models:silero_vad", "digits", "--snr-db", "30"])
        == 2
    )
    assert "audio" in capsys.readouterr().err
