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
