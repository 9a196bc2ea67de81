"""A model-free representation of audio clips for the poisoning detectors.

Activation clustering and spectral signatures read the model's penultimate layer. On
audio that layer is a weak witness of a short trigger: a small model's time-averaged
features blur a 0.1 s chirp, tone or noise burst into the clip's own sound. The input
itself shows it plainly: the trigger adds energy in a few frequency bands for a few
frames, so the loudest frame of those bands jumps while the clip's average barely
moves. :func:`band_embedding` keeps both, per band: the mean over time (the clip's
sound) and the maximum over time (short events), of the log band energies
(:func:`mlwarden.core.audio.log_band_energies`, 32 ms frames, 32 log-spaced bands),
each relative to the clip's overall level so that loud and quiet clips compare.

Measured on poisoned synthetic sound sets (``docs/benchmarks/audio.md``, section g):
within the target class, spectral signatures rank poison with ROC AUC 0.86-1.00 on
this embedding at 5-10% poison (tone, chirp and noise-burst triggers at 10 and 20 dB
SNR) against 0.62-0.91 on a log-mel classifier's penultimate layer.

:func:`tagged` renames a detection made on this embedding so that the report's
detector table keeps it apart from the same detector on the model's activations;
:func:`merged` joins the two for the calibrated ranking
(:mod:`mlwarden.poisoning.ranking`), which then counts the detector once.

Example::

    emb = band_embedding(ds.x, ds.sample_rate)   # (N, 64) float32
    spec = tagged(spectral_signatures(emb, ds.y, eps=0.05))
    spec.name                                   # "spectral-signatures:bands"
"""

from __future__ import annotations

import numpy as np

from mlwarden.core.audio import log_band_energies
from mlwarden.poisoning.detect_data import Detection
from mlwarden.poisoning.ranking import conformal_p

#: Suffix of the detectors that ran on :func:`band_embedding`.
TAG = ":bands"
#: Lowest band energy kept, in log10 units below the clip's level (80 dB).
FLOOR = 8.0


def band_embedding(x: np.ndarray, sample_rate: int, bands: int = 32) -> np.ndarray:
    """Per-band mean and maximum over 32 ms frames of the log10 band energies, minus
    the clip's log10 mean frame energy (floored at :data:`FLOOR` below it): ``(N, samples)`` or ``(N, channels, samples)``
    at ``sample_rate`` Hz -> ``(N, 2 * bands)`` float32 (units: log10 energy ratios).

    Example: ``band_embedding(np.zeros((3, 1600)), 8000).shape == (3, 64)``.
    """
    logs = log_band_energies(x, sample_rate, bands)
    # the clip's level: its mean frame energy over all bands, in log10
    level = np.log10(np.mean(np.sum(10.0**logs, axis=2), axis=1) + 1e-10)
    # floor 80 dB below the level, so that a silent (or, at low rates, empty) band
    # reads the same in a loud clip and a quiet one
    rel = np.maximum(logs - level[:, None, None], -FLOOR)
    return np.concatenate([rel.mean(1), rel.max(1)], axis=1).astype(np.float32)


def tagged(det: Detection) -> Detection:
    """``det`` named ``<name>:bands`` with every reason saying it read band energies."""
    reasons = {i: f"on band energies, {r}" for i, r in det.reasons.items()}
    return Detection(det.name + TAG, det.scores, det.flagged, reasons, det.details)


def merged(model_det: Detection, band_det: Detection, y: np.ndarray) -> Detection:
    """One detector's verdict over both representations, for the calibrated ranking:
    flagged where either run flagged; score ``1 - min(p_model, p_bands)`` with each
    ``p`` the run's conformal p-value (:func:`mlwarden.poisoning.ranking.conformal_p`),
    which the ranking calibrates again against its own null. Named as ``model_det``.

    Two copies of a detector would each take a share of the ranking's Bonferroni
    budget: on a 500-clip set five detectors leave none of the rows significant
    where three list them.
    """
    pa, _ = conformal_p(model_det, y)
    pb, _ = conformal_p(band_det, y)
    reasons = dict(band_det.reasons)
    for i, r in model_det.reasons.items():
        reasons[i] = f"{r}; {reasons[i]}" if i in reasons else r
    return Detection(
        model_det.name,
        1.0 - np.minimum(pa, pb),
        model_det.flagged | band_det.flagged,
        reasons,
        {"model": model_det.details, "bands": band_det.details},
    )
