"""Adversarial audio for people: players, waveforms and spectrograms in the HTML report.

:func:`audio_examples` picks up to ``k`` clips an attack broke and returns, for each,
one PNG (original and adversarial waveform with the perturbation, and both
spectrograms, in dB) and the two clips as inline ``data:audio/wav`` URIs (16-bit PCM,
so the page stays small; the lossless clips are what ``--save-adversarial`` writes).

Example::

    images, players = audio_examples(data, result, "vad", k=3)
    report.images.update(images); report.artifacts["audio_examples"] = players
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np

from mlwarden.core.audio import snr_db
from mlwarden.core.data import Dataset
from mlwarden.report.plots import figure_to_data_uri, new_figure

WAV_URI = "data:audio/wav;base64,"


def audio_examples(
    data: Dataset, result: Any, name: str, k: int = 3
) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """Figures (``report.images``) and players (``report.artifacts["audio_examples"]``)."""
    rate = int(data.sample_rate or 16000)
    broken = np.nonzero(result.clean_correct & ~result.robust)[0][:k]
    images: dict[str, str] = {}
    players: list[dict[str, Any]] = []
    for i in broken:
        clean, adv = _mono(data.x[i]), _mono(result.x_adv[i])
        label = data.sources[i] if i < len(data.sources) else f"clip {i}"
        snr = float(snr_db(clean[None], adv[None])[0])
        images[f"evasion.audio.{name}.{i}"] = _figure(
            clean, adv, rate, f"{label}: {snr:.1f} dB SNR"
        )
        players.append(
            {
                "name": f"{name}: {label}",
                "true": _class(data, int(data.y[i])),
                "adversarial_prediction": _class(data, int(result.adv_pred[i])),
                "snr_db": round(snr, 2),
                "original": wav_uri(clean, rate),
                "adversarial": wav_uri(adv, rate),
            }
        )
    return images, players


def wav_uri(clip: np.ndarray, rate: int) -> str:
    """A mono clip in [-1, 1] as ``data:audio/wav;base64,...`` (16-bit PCM)."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(clip, -1, 1), rate, format="WAV", subtype="PCM_16")
    return WAV_URI + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(clean: np.ndarray, adv: np.ndarray, rate: int, title: str) -> str:
    fig = new_figure(9.0, 4.2)
    axes = fig.subplots(2, 2)
    t = np.arange(len(clean)) / rate
    axes[0, 0].plot(t, clean, lw=0.5, label="original")
    axes[0, 0].plot(t, adv - clean, lw=0.5, color="#d62728", label="perturbation")
    axes[0, 0].set(title=title, xlabel="seconds")
    axes[0, 0].legend(loc="upper right", fontsize=7)
    axes[0, 1].plot(t, adv, lw=0.5, color="#2ca02c")
    axes[0, 1].set(title="adversarial", xlabel="seconds")
    for ax, clip, what in ((axes[1, 0], clean, "original"), (axes[1, 1], adv, "adversarial")):
        with np.errstate(divide="ignore"):  # digital silence (padding) is -inf dB
            ax.specgram(clip, NFFT=512, Fs=rate, noverlap=384, cmap="magma", vmin=-140, vmax=-20)
        ax.set(title=f"{what} spectrogram (dB)", xlabel="seconds", ylabel="Hz")
    return figure_to_data_uri(fig)


def _mono(clip: np.ndarray) -> np.ndarray:
    return np.asarray(clip, np.float64).reshape(-1, clip.shape[-1]).mean(0)


def _class(data: Dataset, c: int) -> str:
    return data.class_names[c] if 0 <= c < len(data.class_names) else str(c)
