"""Waveform models: a per-clip wrapper for stateful streaming models, and Silero VAD.

Streaming models (voice-activity detectors, wake-word spotters) take one short frame at
a time and carry a recurrent state between calls. :class:`StreamingClip` turns such a
step module into a clip classifier: it runs the frames of each clip in order with a
fresh state per clip, entirely in torch (gradients flow end to end), and aggregates the
per-frame probability into two classes. :func:`silero_vad` builds it around the real
pretrained Silero VAD (MIT licence, shipped inside the ``silero-vad`` wheel), loaded
only after the scanner passed its TorchScript archive.

Example::

    model = silero_vad()                 # (B, samples) at 16 kHz -> (B, 2) log-probabilities
    model(torch.zeros(1, 16000)).argmax(1)   # tensor([0]): no speech
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from mlwarden.core.errors import UnsafeArtifactError, UserError


class StreamingClip(nn.Module):
    """Run a stateful frame model over whole clips: ``(B, T)`` or ``(B, C, T)`` -> ``(B, 2)``.

    ``step(frames, state) -> (prob, state)`` takes ``(B, context + frame)`` samples and
    returns the probability of the positive class ``(B, 1)``. Each frame is prefixed with
    the last ``context`` samples of the previous one (zeros first), as the streaming
    model expects; a clip shorter than a whole number of frames is zero-padded. The clip
    score is the mean frame probability ``p``; the outputs are ``log(1 - p), log(p)``
    (log-probabilities, so the argmax is ``p > 0.5`` and softmax gives ``1 - p, p``).
    Multi-channel clips are averaged to mono first.

    ``dither`` (amplitude, default 0) adds a fixed pseudo-random signal of that peak
    amplitude to every clip, the same on every call: a model whose front-end takes a
    square root of spectral power (Silero's) has no gradient at exact digital silence
    (NaN), which zero-padded clips are full of; dither far below the quietest sample a
    16-bit file can hold (2^-15, about -90 dBFS) makes every frame differentiable
    without changing what the model hears.
    """

    def __init__(
        self,
        step: nn.Module,
        *,
        frame: int,
        context: int,
        state_shape: tuple[int, ...],
        batch_dim: int = 1,
        dither: float = 0.0,
    ) -> None:
        super().__init__()
        self.step = step
        self.frame = frame
        self.context = context
        self.state_shape = state_shape
        self.batch_dim = batch_dim
        self.dither = float(dither)

    def _dithered(self, x: torch.Tensor) -> torch.Tensor:
        if self.dither <= 0:
            return x
        gen = torch.Generator().manual_seed(0)  # the same pattern on every call
        noise = (torch.rand(x.shape[-1], generator=gen) * 2 - 1) * self.dither
        return x + noise.to(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            x = x.mean(1)
        if x.ndim != 2:
            raise ValueError(
                f"expected (batch, samples) or (batch, channels, samples); got {tuple(x.shape)}"
            )
        b, t = x.shape
        n = max(1, -(-t // self.frame))
        x = self._dithered(nn.functional.pad(x, (0, n * self.frame - t)))
        shape = list(self.state_shape)
        shape.insert(self.batch_dim, b)
        state = x.new_zeros(shape)
        ctx = x.new_zeros(b, self.context)
        probs = []
        for i in range(n):
            chunk = x[:, i * self.frame : (i + 1) * self.frame]
            out, state = self.step(torch.cat([ctx, chunk], 1), state)
            probs.append(out.reshape(b))
            ctx = chunk[:, -self.context :]
        p = torch.stack(probs, 1).mean(1).clamp(1e-6, 1 - 1e-6)
        return torch.stack([torch.log1p(-p), torch.log(p)], 1)


def silero_vad() -> nn.Module:
    """Silero VAD v5 (16 kHz) as a clip classifier: class 0 no speech, 1 speech.

    The TorchScript archive inside the installed ``silero-vad`` package is scanned first
    and refused unless safe. Inputs: ``(B, samples)`` at 16,000 Hz in [-1, 1].
    """
    from mlwarden.supplychain.loader import check_safe

    try:
        import silero_vad as pkg
    except ImportError:
        raise UserError(
            "silero_vad needs the 'silero-vad' package (pip install silero-vad)"
        ) from None
    path = Path(pkg.__file__).parent / "data" / "silero_vad.jit"
    result = check_safe(path)
    if result.error or result.findings:
        raise UnsafeArtifactError(f"{path}: the scanner did not pass it; not loading it")
    scripted = torch.jit.load(str(path), map_location="cpu")
    # dither at 1e-6 (-120 dBFS): Silero's STFT magnitude gives NaN gradients on silence
    model = StreamingClip(scripted._model, frame=512, context=64, state_shape=(2, 128), dither=1e-6)
    model.eval()
    return model


class MelClassifier(nn.Module):
    """A small sound classifier, waveform ``(B, T)`` or ``(B, C, T)`` -> logits: a log-mel
    front-end (``torch.stft`` + triangular filters, differentiable end to end), one
    convolution over time and a linear head on its time average.

    Example::

        net = MelClassifier(4)           # 4 classes; n_fft 256, 16 mel bands
        net(torch.zeros(2, 8000)).shape  # (2, 4)
    """

    def __init__(self, classes: int, n_mels: int = 16, n_fft: int = 256, width: int = 32):
        super().__init__()
        self.n_fft = n_fft
        freqs = torch.linspace(0, 1, n_fft // 2 + 1)
        centres = torch.linspace(0, 1, n_mels + 2)
        spacing = float(centres[1] - centres[0])
        fb = (1 - (freqs[None, :] - centres[1:-1, None]).abs() / spacing).clamp(min=0)
        self.register_buffer("fb", fb)
        self.register_buffer("window", torch.hann_window(n_fft))
        self.conv = nn.Conv1d(n_mels, width, 3, padding=1)
        self.head = nn.Linear(width, classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate layer: the time-averaged conv features, ``(B, width)``."""
        if x.ndim == 3:
            x = x.mean(1)
        window, fb = self.get_buffer("window"), self.get_buffer("fb")
        spec = torch.stft(x, self.n_fft, self.n_fft // 2, window=window, return_complex=True)
        mel = torch.log(fb @ spec.abs().pow(2) + 1e-6)
        return torch.relu(self.conv(mel)).mean(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


class WaveClassifier(nn.Module):
    """A small raw-waveform classifier with no spectrogram front-end, ``(B, T)`` -> logits:
    two strided 1-D convolutions and a linear head on their maximum over time (the
    raw-waveform family of ``benchmarks/audio_backdoor.py``).

    Example::

        net = WaveClassifier(6)
        net(torch.zeros(2, 1600)).shape  # (2, 6)
    """

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv1d(1, 16, 64, stride=8), nn.ReLU(),
            nn.Conv1d(16, 32, 8, stride=4), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x[:, None]).amax(2))


M = TypeVar("M", bound=nn.Module)


def fit_clips(make: Callable[[], M], x: Any, y: Any, *, epochs: int, lr: float, seed: int) -> M:
    """Seed torch with ``seed``, build ``make()`` and train it on waveforms ``x`` ``(N, T)``
    and labels ``y`` with Adam (learning rate ``lr``) and cross-entropy over ``epochs``
    shuffled passes in batches of 64; returns it in eval mode.

    Example::

        net = fit_clips(lambda: WaveClassifier(6), clips, labels, epochs=30, lr=3e-3, seed=0)
    """
    torch.manual_seed(seed)
    xt = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    yt = torch.as_tensor(np.asarray(y), dtype=torch.long)
    net = make()
    opt = torch.optim.Adam(net.parameters(), lr)
    for _ in range(epochs):
        for b in torch.randperm(len(xt)).split(64):
            loss = nn.functional.cross_entropy(net(xt[b]), yt[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


def train_mel_classifier(
    x: Any, y: Any, *, epochs: int = 200, lr: float = 1e-2, seed: int = 0
) -> MelClassifier:
    """Train a :class:`MelClassifier` on waveforms ``x`` ``(N, T)`` and labels ``y`` with
    Adam (full batches of up to 64): the recipe for shadow models as
    ``--trainer mlwarden.evasion.audio.models:train_mel_classifier``.

    Example::

        net = train_mel_classifier(clips, labels)
    """
    classes = int(np.asarray(y).max()) + 1
    return fit_clips(lambda: MelClassifier(classes), x, y, epochs=epochs, lr=lr, seed=seed)
