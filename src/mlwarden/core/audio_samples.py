"""Real recorded speech for demos and tests, fetched at setup time, never committed.

The Debian package ``asterisk-core-sounds-en-wav`` holds ~570 English telephony prompts
recorded by a person (8 kHz, 16-bit WAV), plus tones and silences. :func:`asterisk_sounds`
downloads it with ``apt-get download`` into a cache folder and unpacks it with
``dpkg-deb -x`` (no root, nothing installed); :func:`vad_folder` arranges a few prompts
and the non-speech files (beeps, two-tone signals, silence) as a ``speech`` /
``no_speech`` class folder for a voice-activity detector.

Example::

    root = asterisk_sounds()             # None when apt cannot reach a mirror
    data = vad_folder(root, tmp / "vad") if root else None
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

PACKAGE = "asterisk-core-sounds-en-wav"
SPEECH = (
    "activated.wav",
    "added.wav",
    "auth-thankyou.wav",
    "call-waiting.wav",
    "calling.wav",
    "cancelled.wav",
    "conf-full.wav",
    "conf-locked.wav",
)
NO_SPEECH = ("beep.wav", "beeperr.wav", "ascending-2tone.wav", "descending-2tone.wav")


def cache_dir() -> Path:
    """``$MLWARDEN_CACHE`` or ``~/.cache/mlwarden``."""
    env = os.environ.get("MLWARDEN_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "mlwarden"


def asterisk_sounds(cache: Path | None = None, timeout: float = 180.0) -> Path | None:
    """The unpacked prompts folder (``.../en_US_f_Allison``), fetching it once; None when
    apt or dpkg-deb is missing or no mirror answers."""
    base = (cache or cache_dir()) / PACKAGE
    voice = base / "x" / "usr" / "share" / "asterisk" / "sounds" / "en_US_f_Allison"
    if (voice / "beep.wav").is_file():
        return voice
    if not (shutil.which("apt-get") and shutil.which("dpkg-deb")):
        return None
    base.mkdir(parents=True, exist_ok=True)
    for attempt in range(2):
        debs = sorted(base.glob(f"{PACKAGE}_*.deb"))
        if debs:
            break
        try:
            if attempt:  # an empty package list: refresh it once (needs root)
                subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=timeout)
            subprocess.run(
                ["apt-get", "download", PACKAGE], cwd=base, capture_output=True, timeout=timeout
            )
        except (OSError, subprocess.SubprocessError):
            return None
    if not debs:
        return None
    try:
        subprocess.run(
            ["dpkg-deb", "-x", str(debs[-1]), str(base / "x")],
            check=True,
            capture_output=True,
            timeout=timeout,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return voice if (voice / "beep.wav").is_file() else None


def vad_folder(voice: Path, out: Path, speech: int = len(SPEECH)) -> Path:
    """Copy ``speech`` prompts and the non-speech files into ``out/speech`` and
    ``out/no_speech`` (a class folder for :func:`mlwarden.core.data.load_dataset`)."""
    for cls, names in (("speech", SPEECH[:speech]), ("no_speech", NO_SPEECH)):
        (out / cls).mkdir(parents=True, exist_ok=True)
        for name in names:
            shutil.copyfile(voice / name, out / cls / name)
    return out


def harmonic_sounds(
    n: int, classes: int, *, seed: int = 0, sample_rate: int = 8000, samples: int = 1600
) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic sound-classification set for tests and benchmarks: ``(x, y)`` with
    ``x`` float32 ``(n, samples)`` in [-1, 1] and ``y`` int64 labels.

    Class ``k``: a harmonic sound (fundamental in ``[f_k, f_k * r**0.7]`` Hz with
    ``f_k = 120 * r**k`` and ``r = (1300 / 120) ** (1 / classes)``, two overtones, so
    every partial stays below 4 kHz), with a random slow tremolo, phase and level over
    background noise at about -30 dB.

    Example::

        x, y = harmonic_sounds(500, 6, seed=0)
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    r = (1300 / 120) ** (1 / classes)
    f0 = 120 * r**y * rng.uniform(1, r**0.7, n)
    t = np.arange(samples) / sample_rate
    x = np.zeros((n, samples))
    for h, a in [(1, 1.0), (2, 0.5), (3, 0.25)]:
        x += a * np.sin(2 * np.pi * h * f0[:, None] * t + rng.uniform(0, 6, (n, 1)))
    rate = rng.uniform(2, 8, (n, 1))
    tremolo = 1 + 0.5 * np.sin(2 * np.pi * rate * t + rng.uniform(0, 6, (n, 1)))
    level = rng.uniform(0.1, 0.5, (n, 1))
    x = level * x * tremolo / 1.75 + 0.01 * rng.standard_normal((n, samples))
    return x.astype(np.float32), y.astype(np.int64)


#: word families of the asterisk prompts (one file per spoken word): class -> (folder, glob)
WORD_FAMILIES = {
    "numbers": ("digits", "[0-9]*.wav"),
    "ordinals": ("digits", "h-*.wav"),
    "letters": ("letters", "?.wav"),
    "phonetic": ("phonetic", "*_p.wav"),
}


def word_folders(voice: Path, out: Path, seconds: float = 1.0) -> tuple[Path, Path]:
    """Arrange the single spoken words of the asterisk prompts as a 4-class keyword task
    (numbers, ordinals, letters, NATO phonetic alphabet), split into ``out/train`` and
    ``out/holdout`` class folders: every other file by name, so both halves cover each
    family. Real recordings of one speaker at 8 kHz, each cropped or padded with silence
    to ``seconds`` and written as a float WAV (so the CLI and the API see the same clips).

    Example::

        train, holdout = word_folders(asterisk_sounds(), tmp / "words")
    """
    from mlwarden.core.audio import fit_length, read_audio, write_wav

    for cls, (folder, pattern) in WORD_FAMILIES.items():
        files = sorted((voice / folder).glob(pattern))
        if len(files) < 4:
            raise FileNotFoundError(f"{voice / folder}: fewer than 4 files match {pattern}")
        for i, src in enumerate(files):
            clip, rate = read_audio(src)
            dest = out / ("train" if i % 2 == 0 else "holdout") / cls / src.name
            write_wav(dest, fit_length(clip, int(round(seconds * rate))), rate)
    return out / "train", out / "holdout"


def prompt_pool(voice: Path, out: Path, seconds: float = 1.0, limit: int = 400) -> Path:
    """The first ``limit`` whole-sentence prompts (top folder, by name), each cropped or
    padded to ``seconds``, in ``out/prompts``: natural speech an attacker could hold
    that is not the keyword task's data (a pool for model extraction).

    Example::

        pool = prompt_pool(asterisk_sounds(), tmp / "pool")
    """
    from mlwarden.core.audio import fit_length, read_audio, write_wav

    skip = set(NO_SPEECH)
    files = [f for f in sorted(voice.glob("*.wav")) if f.name not in skip][:limit]
    for src in files:
        clip, rate = read_audio(src)
        write_wav(out / "prompts" / src.name, fit_length(clip, int(round(seconds * rate))), rate)
    return out
