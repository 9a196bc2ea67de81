"""The ``audio`` input of the poisoning matrix (``poisoning_vs_peers.py --inputs audio``).

Data: 1,000 synthetic harmonic sounds of 10 classes, 0.2 s at 8 kHz
(:func:`mlwarden.core.audio_samples.harmonic_sounds`); model: a log-mel classifier
(:class:`~mlwarden.evasion.audio.models.MelClassifier`, 20 epochs of Adam), whose
``embed`` is the penultimate layer ART's detectors read. Triggers, each added at a set
SNR to the chosen clips, which are relabelled to the target (all-to-one):

* ``badnets``: a 0.1 s 1 kHz tone burst at the start of the clip, 10 dB below it (the
  audio analogue of a patch: short, fixed, local);
* ``blended``: white noise over the whole clip, 20 dB below it (a fixed pattern mixed
  into the entire input, as the blended attack of Chen et al. 2017, arXiv:1712.05526);
* ``chirp`` and ``noise-burst``: a 0.1 s 500 Hz-3.2 kHz chirp or white-noise burst,
  10 dB below the clip;
* ``label-flip``: the matrix's targeted flip (one source class relabelled).

Example::

    timeout 3000 nice -n 10 .venv/bin/python benchmarks/poisoning_vs_peers.py \\
        --matrix m.jsonl --inputs audio --triggers badnets,blended,chirp,noise-burst,label-flip \\
        --rates 0.01,0.05,0.10,0.25 --repeats 1 --nc-epochs 30
"""

from __future__ import annotations

import numpy as np
from torch import nn

from mlwarden.core.audio_samples import harmonic_sounds
from mlwarden.core.data import Dataset
from mlwarden.core.errors import UserError
from mlwarden.evasion.audio.models import MelClassifier, fit_clips
from mlwarden.poisoning.simulate import Poisoned, audio_backdoor

RATE, SAMPLES, CLASSES, CLIPS = 8000, 1600, 10, 1000
#: matrix trigger -> (kind, seconds, SNR in dB) of :func:`audio_backdoor`
TRIGGERS = {
    "badnets": ("tone", 0.1, 10.0),
    "blended": ("noise", SAMPLES / RATE, 20.0),
    "chirp": ("chirp", 0.1, 10.0),
    "noise-burst": ("noise", 0.1, 10.0),
}
#: matrix triggers that do not apply to audio, and why
NOT_APPLICABLE = {
    "feature": "a waveform has no discrete feature values; the short trigger is row badnets",
    "clean-label": "not built for audio (needs a PGD step on waveforms within an SNR)",
}


def load() -> Dataset:
    """The harmonic-sound set (10 classes, 1,000 clips of 0.2 s at 8 kHz)."""
    x, y = harmonic_sounds(CLIPS, CLASSES, seed=7, sample_rate=RATE, samples=SAMPLES)
    return Dataset(x=x, y=y, modality="audio", bounds=(-1.0, 1.0), sample_rate=RATE, name="audio")


def model(x: np.ndarray, y: np.ndarray, seed: int, epochs: int = 20) -> MelClassifier:
    """A :class:`MelClassifier` trained on the (poisoned) clips."""
    return fit_clips(lambda: MelClassifier(CLASSES), x, y, epochs=epochs, lr=1e-2, seed=seed)


def poison(trigger: str, train: Dataset, rate: float, target: int, seed: int) -> Poisoned:
    """The poisoned training clips of one cell (label flips are the matrix's own)."""
    if trigger not in TRIGGERS:
        raise UserError(f"no audio trigger {trigger!r}; audio has {', '.join(TRIGGERS)}")
    kind, seconds, snr = TRIGGERS[trigger]
    return audio_backdoor(
        train, rate, target=target, kind=kind, seconds=seconds, snr_db=snr, seed=seed
    )


class Embed(nn.Module):
    """The classifier's penultimate layer as a module's output, for ART's detectors
    (its layers and buffers themselves, not the classifier: ART walks the module tree)."""

    def __init__(self, net: MelClassifier) -> None:
        super().__init__()
        self.n_fft = net.n_fft
        self.conv = net.conv
        self.register_buffer("fb", net.get_buffer("fb"))
        self.register_buffer("window", net.get_buffer("window"))

    forward = MelClassifier.embed
