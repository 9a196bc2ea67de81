"""The demo's audio step: the real Silero VAD on real recorded speech, attacked at 30 dB.

Fetches the asterisk prompts (``apt-get download``, cached; see
:mod:`mlwarden.core.audio_samples`), builds a small ``speech`` / ``no_speech`` folder
under the demo folder, runs the quick evaluation at 30 dB SNR and writes every
successful adversarial clip as a float WAV under ``DEMO/audio-adversarial``, each
replayed to the model. Without apt (or a mirror) the step is skipped, and says why.
"""

from __future__ import annotations

from mlwarden.core.audio_samples import asterisk_sounds, vad_folder
from mlwarden.core.demo_context import DemoContext
from mlwarden.core.findings import CheckRecord, Report

MODEL = "mlwarden.evasion.audio.models:silero_vad"
SNR_DB = 30.0


def run(ctx: DemoContext) -> Report:
    """Evaluate Silero VAD on 4 spoken prompts and 4 tones (0.5 s, 16 kHz) at 30 dB."""
    from mlwarden.evasion.report import evasion_report

    voice = asterisk_sounds()
    if voice is None:
        report = Report.new(command="evasion (audio demo)", seed=ctx.seed)
        report.checks.append(
            CheckRecord(
                name="audio",
                status="skipped",
                message="asterisk-core-sounds-en-wav could not be fetched with apt-get",
            )
        )
        return report
    data = vad_folder(voice, ctx.out_dir / "audio-data", speech=4)
    report = evasion_report(
        [MODEL],
        str(data),
        seed=ctx.seed,
        budget="quick",
        snr_db=SNR_DB,
        sample_rate=16000,
        clip_seconds=0.5,
        save_adversarial=str(ctx.out_dir / "audio-adversarial"),
        names=["silero_vad"],
    )
    report.command = "evasion (audio demo)"
    return report
