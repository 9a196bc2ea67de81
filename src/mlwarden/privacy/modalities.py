"""What membership inference and extraction need to know about each kind of input.

One :class:`PrivacyHooks` row per modality of :mod:`mlwarden.core.modality` (the
data's ``modality`` picks the row; unknown numeric modalities use the tabular row):

* ``perturb`` — the label-only membership attack's noisy copies (Choquette-Choo et
  al., 2021, arXiv:2007.14321): Gaussian noise scaled to each feature's measured range
  (tabular, images), to each clip's RMS level (audio), or random word dropout and
  substitution (text, the paper's "data augmentation" variant for a discrete input);
* ``random_inputs`` — the extraction attacker's ``random`` queries and the inputs of the
  uniform-fidelity figure: uniform within each feature's range *measured on the data*
  (not one global box), white noise at the pool's loudness (audio), bags of words from
  the pool's vocabulary (text);
* ``extend`` — queries beyond the pool once it is used up: mixup of two records
  (numeric, audio) or the first half of one text joined to the second half of another;
* ``encoder`` — fitted on the attacker's own pool, turns queries into the substitute's
  numeric input (identity for arrays; TF-IDF word 1-2 grams for text);
* ``surrogate`` — the substitute the attacker trains: an MLP (arrays, TF-IDF
  features) or a small 1-D convolutional network over a log-magnitude
  spectrogram of the waveform (audio).

Example::

    hooks = hooks_for(dataset)          # the "text" row for the bundled tweets
    noisy = hooks.perturb(x, 0.1, hooks.ranges(x), rng)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

#: Per-feature (low, high) arrays of the flattened input, or None for text.
Ranges = tuple[np.ndarray, np.ndarray] | None


@dataclass(frozen=True)
class PrivacyHooks:
    """One modality's answers to what the privacy attacks need (see the module docs)."""

    name: str
    perturb: Callable[[np.ndarray, float, Ranges, np.random.Generator], np.ndarray]
    random_inputs: Callable[[np.ndarray, int, Ranges, np.random.Generator], np.ndarray]
    extend: Callable[[np.ndarray, int, np.random.Generator], np.ndarray]
    encoder: Callable[[np.ndarray], Callable[[np.ndarray], np.ndarray]]
    surrogate: Callable[[Sequence[int], int], nn.Module]
    numeric: bool = True
    #: Tabular features have their own units: one range per feature. Pixels and samples
    #: share one scale: one range (the data's min and max) for every feature.
    per_feature: bool = False

    def ranges(self, *arrays: np.ndarray) -> Ranges:
        """(low, high) per flattened feature measured on ``arrays``; None for text."""
        if not self.numeric or not arrays:
            return None
        flat = np.concatenate([a.reshape(len(a), -1) for a in arrays]).astype(np.float64)
        if self.per_feature:
            return flat.min(0), flat.max(0)
        width = flat.shape[1]
        return np.full(width, flat.min()), np.full(width, flat.max())


# -- numeric (image, tabular) ------------------------------------------------------------
def _gaussian(x: np.ndarray, sigma: float, ranges: Ranges, rng: np.random.Generator) -> np.ndarray:
    assert ranges is not None
    lo, hi = ranges
    span = np.maximum(hi - lo, 1e-12)
    flat = x.reshape(len(x), -1)
    noisy = flat + rng.normal(0.0, 1.0, flat.shape) * (sigma * span)
    return np.clip(noisy, lo, hi).reshape(x.shape).astype(np.float32)


def _uniform(pool: np.ndarray, n: int, ranges: Ranges, rng: np.random.Generator) -> np.ndarray:
    assert ranges is not None
    lo, hi = ranges
    out = rng.uniform(0.0, 1.0, (n, lo.size)) * (hi - lo) + lo
    return out.reshape((n,) + pool.shape[1:]).astype(np.float32)


def _mixup(pool: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    i, j = rng.integers(0, len(pool), n), rng.integers(0, len(pool), n)
    lam = rng.uniform(0, 1, (n,) + (1,) * (pool.ndim - 1)).astype(np.float32)
    return (lam * pool[i] + (1 - lam) * pool[j]).astype(np.float32)


def _identity_encoder(pool: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    return lambda x: np.asarray(x, dtype=np.float32)


def mlp_surrogate(input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """A fully connected substitute (the attacker does not know the architecture)."""
    from mlwarden.core.models import MLP

    return MLP(int(np.prod(input_shape)), num_classes, hidden=(256, 128))


# -- audio ---------------------------------------------------------------------------------
def _rms(x: np.ndarray) -> np.ndarray:
    flat = x.reshape(len(x), -1).astype(np.float64)
    return np.sqrt((flat**2).mean(1)) + 1e-8


def _audio_noise(
    x: np.ndarray, sigma: float, ranges: Ranges, rng: np.random.Generator
) -> np.ndarray:
    """Noise at ``sigma`` times each clip's RMS (sigma 0.1 is a 20 dB SNR)."""
    scale = (sigma * _rms(x)).reshape((len(x),) + (1,) * (x.ndim - 1))
    return np.clip(x + rng.normal(0.0, 1.0, x.shape) * scale, -1.0, 1.0).astype(np.float32)


def _audio_random(pool: np.ndarray, n: int, ranges: Ranges, rng: np.random.Generator) -> np.ndarray:
    """White noise clips, each as loud as a randomly drawn pool clip."""
    level = _rms(pool)[rng.integers(0, len(pool), n)]
    noise = rng.normal(0.0, 1.0, (n,) + pool.shape[1:])
    noise *= level.reshape((n,) + (1,) * (pool.ndim - 1))
    return np.clip(noise, -1.0, 1.0).astype(np.float32)


class Conv1dSurrogate(nn.Module):
    """A small 1-D convolutional substitute for waveforms ``(B, T)`` or ``(B, C, T)``:
    a log-magnitude STFT front-end (256-sample frames, hop 128; channels averaged), two
    1-D convolutions over time with the frequency bins as channels, average pooling."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, n_fft: int = 256) -> None:
        super().__init__()
        self.n_fft = min(n_fft, int(input_shape[-1]))
        bins = self.n_fft // 2 + 1
        self.register_buffer("window", torch.hann_window(self.n_fft))
        self.body = nn.Sequential(
            nn.Conv1d(bins, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv1d(32, 32, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool1d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            x = x.mean(1)
        spec = torch.stft(
            x,
            self.n_fft,
            max(self.n_fft // 2, 1),
            window=self.window,  # type: ignore[arg-type]
            return_complex=True,
        )
        return self.head(self.body(torch.log1p(spec.abs())))


# -- text ----------------------------------------------------------------------------------
def _words(texts: np.ndarray) -> list[list[str]]:
    return [str(t).split() for t in texts]


def _word_noise(
    x: np.ndarray, sigma: float, ranges: Ranges, rng: np.random.Generator
) -> np.ndarray:
    """Each word is dropped with probability sigma/2 and replaced by another word of the
    same text with probability sigma/2; a text never becomes empty."""
    out = []
    for words in _words(x):
        if not words:
            out.append("")
            continue
        kept = []
        for w in words:
            r = rng.random()
            if r < sigma / 2:
                continue
            kept.append(words[rng.integers(len(words))] if r < sigma else w)
        out.append(" ".join(kept or words[:1]))
    return np.asarray(out, dtype=object)


def _bag_of_words(pool: np.ndarray, n: int, ranges: Ranges, rng: np.random.Generator) -> np.ndarray:
    """Random texts: pool words drawn at random, each text as long as a random pool text."""
    tokens = [w for ws in _words(pool) for w in ws] or ["the"]
    lengths = [max(len(ws), 1) for ws in _words(pool)]
    out = []
    for _ in range(n):
        k = lengths[rng.integers(len(lengths))]
        out.append(" ".join(tokens[i] for i in rng.integers(0, len(tokens), k)))
    return np.asarray(out, dtype=object)


def _splice(pool: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """New texts beyond the pool: the first half of one pool text + the second half of another."""
    words = _words(pool)
    out = []
    for i, j in zip(rng.integers(0, len(pool), n), rng.integers(0, len(pool), n), strict=True):
        a, b = words[i], words[j]
        out.append(" ".join(a[: len(a) // 2] + b[len(b) // 2 :]) or str(pool[i]))
    return np.asarray(out, dtype=object)


class TfidfEncoder:
    """TF-IDF (word 1-2 grams, sublinear tf, at most 2,048 features) fitted on the
    attacker's own pool; dense float32 features for the substitute."""

    def __init__(self, pool: np.ndarray, max_features: int = 2048) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.vectorizer = TfidfVectorizer(
            ngram_range=(1, 2), sublinear_tf=True, max_features=max_features
        ).fit([str(t) for t in pool])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(
            self.vectorizer.transform([str(t) for t in x]).toarray(), dtype=np.float32
        )


# -- the table -----------------------------------------------------------------------------
_NUMERIC = PrivacyHooks(
    "tabular", _gaussian, _uniform, _mixup, _identity_encoder, mlp_surrogate, per_feature=True
)
HOOKS: dict[str, PrivacyHooks] = {
    "tabular": _NUMERIC,
    "image": PrivacyHooks("image", _gaussian, _uniform, _mixup, _identity_encoder, mlp_surrogate),
    "audio": PrivacyHooks(
        "audio", _audio_noise, _audio_random, _mixup, _identity_encoder, Conv1dSurrogate
    ),
    "text": PrivacyHooks(
        "text", _word_noise, _bag_of_words, _splice, TfidfEncoder, mlp_surrogate, numeric=False
    ),
}


def hooks_for(data: Any) -> PrivacyHooks:
    """The row for a Dataset, a modality name, or raw inputs (strings -> text)."""
    from mlwarden.core.modality import get

    name = data if isinstance(data, str) else getattr(data, "modality", None)
    if name is None:
        arr = np.asarray(data)
        name = "text" if arr.dtype.kind in "OUS" else "tabular"
    get(name)  # an unknown name is the modality table's one-line error
    return HOOKS.get(name, _NUMERIC)


def model_input(x: np.ndarray) -> Any:
    """What a model's ``fit``/``predict_proba`` takes: a list of strings for text, else
    the records flattened to ``(N, features)``."""
    if x.dtype.kind in "OUS":
        return [str(t) for t in x]
    return x.reshape(len(x), -1)
