"""Audio fixtures: the real Silero VAD and real recorded speech (asterisk prompts).

The recordings come from the Debian package ``asterisk-core-sounds-en-wav``, fetched
once into the mlwarden cache by ``apt-get download``; tests that need them skip (and
say why) only when apt cannot reach a mirror.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mlwarden.core.audio_samples import asterisk_sounds, vad_folder


@pytest.fixture(scope="session")
def voice() -> Path:
    root = asterisk_sounds()
    if root is None:
        pytest.skip("asterisk-core-sounds-en-wav could not be fetched (apt unreachable)")
    return root


@pytest.fixture(scope="session")
def vad_dir(voice: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return vad_folder(voice, tmp_path_factory.mktemp("vad"), speech=4)


@pytest.fixture(scope="session")
def vad() -> torch.nn.Module:
    from mlwarden.evasion.audio.models import silero_vad

    torch.set_num_threads(1)
    return silero_vad()


@pytest.fixture(scope="session")
def tiny_audio_model() -> torch.nn.Module:
    """A small differentiable sound classifier: log-mel front-end (torch.stft) + conv."""
    torch.manual_seed(0)
    return MelNet(3).eval()


class MelNet(torch.nn.Module):
    """Waveform ``(B, T)`` or ``(B, C, T)`` -> logits; the front-end keeps gradients."""

    def __init__(self, classes: int, n_mels: int = 16, n_fft: int = 256) -> None:
        super().__init__()
        self.n_fft = n_fft
        freqs = np.linspace(0, 1, n_fft // 2 + 1)
        centres = np.linspace(0, 1, n_mels + 2)
        fb = np.maximum(
            0,
            1 - np.abs(freqs[None, :] - centres[1:-1, None]) / (centres[1] - centres[0]),
        )
        self.register_buffer("fb", torch.tensor(fb, dtype=torch.float32))
        self.register_buffer("window", torch.hann_window(n_fft))
        self.conv = torch.nn.Conv1d(n_mels, 8, 3, padding=1)
        self.head = torch.nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            x = x.mean(1)
        spec = torch.stft(x, self.n_fft, self.n_fft // 2, window=self.window, return_complex=True)
        mel = torch.log(self.fb @ spec.abs().pow(2) + 1e-6)
        return self.head(torch.relu(self.conv(mel)).mean(2))
