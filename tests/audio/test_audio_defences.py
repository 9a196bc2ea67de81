"""Audio restoration steps: what each one does to a clip, and the adaptive measurement."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mlwarden.cli.evasion import parse_defence
from mlwarden.core.errors import UserError
from mlwarden.defenses.transforms import build_chain

RATE = 16000


def _tone(hz: float, seconds: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(seconds * RATE)) / RATE
    return (0.5 * torch.sin(2 * torch.pi * hz * t))[None]


def _step(spec: str) -> object:
    return build_chain([e | {"sample_rate": RATE} for e in parse_defence(spec)], bounds=(-1.0, 1.0))


def _energy(x: torch.Tensor) -> float:
    return float(x.pow(2).mean())


@pytest.mark.parametrize(
    "spec",
    [
        "resample:rate=8000",
        "lowpass:hz=4000",
        "quantize:bits=8",
        "mp3:kbps=32",
        "opus:kbps=16",
        "noise:snr_db=40",
        "random_chain:k=2",
    ],
)
def test_every_step_keeps_shape_and_range_and_describes_itself(spec: str) -> None:
    chain = _step(spec)
    x = torch.cat([_tone(440), _tone(3000)]) * 1.9  # clipped tones: values at the bounds
    x = x.clamp(-1, 1)
    out = chain(x)  # type: ignore[operator]
    assert out.shape == x.shape and float(out.abs().max()) <= 1.0
    again = build_chain(chain.describe()["transforms"], bounds=(-1.0, 1.0))  # type: ignore[attr-defined]
    assert again.describe() == chain.describe()  # type: ignore[attr-defined]


@pytest.mark.parametrize("spec", ["resample:rate=8000", "lowpass:hz=4000"])
def test_band_limiting_steps_remove_what_lies_above_the_cut(spec: str) -> None:
    chain = _step(spec)
    assert _energy(chain(_tone(6000))) < 1e-3 * _energy(_tone(6000))  # type: ignore[operator]
    low = _tone(1000)
    assert torch.allclose(chain(low)[:, 400:-400], low[:, 400:-400], atol=0.02)  # type: ignore[operator]


def test_mp3_round_trip_is_time_aligned() -> None:
    x = _tone(500) * torch.hann_window(RATE // 2)
    out = _step("mp3:kbps=32")(x)  # type: ignore[operator]
    assert float(torch.corrcoef(torch.stack([x[0], out[0]]))[0, 1]) > 0.95


def test_quantize_keeps_two_to_the_bits_levels() -> None:
    out = _step("quantize:bits=4")(torch.linspace(-1, 1, 1000)[None])  # type: ignore[operator]
    assert len(torch.unique(out)) <= 17


def test_noise_is_fresh_each_call_at_the_stated_snr() -> None:
    chain = _step("noise:snr_db=40")
    x = _tone(300)
    a, b = chain(x), chain(x)  # type: ignore[operator]
    assert chain.randomized and not torch.equal(a, b)  # type: ignore[attr-defined]
    snr = 20 * torch.log10(x.norm() / (a - x).norm())
    assert float(snr) == pytest.approx(40, abs=0.1)


def test_opus_at_an_unsupported_rate_is_one_clear_error() -> None:
    with pytest.raises(UserError, match="opus: works at 8, 12, 16, 24 or 48 kHz"):
        build_chain([{"type": "opus", "kbps": 16, "sample_rate": 44100}], bounds=(-1, 1))


def test_an_image_batch_into_an_audio_step_is_refused() -> None:
    with pytest.raises(UserError, match=r"expected clips \(N, samples\)"):
        _step("resample:rate=8000")(torch.zeros(1, 1, 8, 8))  # type: ignore[operator]


def test_cli_defence_report_puts_non_adaptive_beside_adaptive_and_rates_adaptive(
    vad_dir: Path, tmp_path: Path
) -> None:
    from mlwarden.cli.main import main

    report = tmp_path / "r.json"
    args = ["evasion", "mlwarden.evasion.audio.models:silero_vad", str(vad_dir)]
    args += ["--sample-rate", "16000", "--clip-seconds", "0.5", "--snr-db", "30"]
    args += ["--budget", "quick", "--defend", "resample:rate=8000", "--json", str(report), "-q"]
    with pytest.raises(SystemExit):
        main(args)
    defence = json.loads(report.read_text())["metrics"]["defence"]
    assert defence["rated_on"] == "adaptive"
    # band-limiting looks strong against clips crafted on the bare model, and is not
    assert defence["adaptive_robust_accuracy"] < defence["non_adaptive_robust_accuracy"]
    assert defence["rating"] != "holds"
    assert np.isfinite(defence["adaptive_robust_accuracy"])


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _speechlike(seconds: float = 0.5) -> torch.Tensor:
    """Harmonics of 150 Hz up to 7.5 kHz under a syllable envelope, two clips."""
    t = torch.arange(int(seconds * RATE)) / RATE
    tone = sum(torch.sin(2 * torch.pi * 150 * k * t) / k for k in range(1, 50))
    env = torch.sin(torch.pi * t / seconds) ** 2
    x = torch.stack([tone * env, torch.roll(tone, 37) * env.flip(0)])
    return 0.4 * x / x.abs().max()


def _band_power(x: torch.Tensor, bands: int = 16) -> torch.Tensor:
    spec = torch.fft.rfft(x).abs().pow(2).sum(0)
    return torch.stack([b.sum() for b in spec.chunk(bands)])


@pytest.mark.parametrize("spec", ["mp3:kbps=32", "opus:kbps=16"])
def test_codec_stand_in_has_the_codec_spectrum_and_fresh_noise(spec: str) -> None:
    chain = _step(spec)
    x = _speechlike()
    real, fitted = _band_power(chain(x)), _band_power(chain.surrogate(x))  # type: ignore[operator, attr-defined]
    # band by band, the stand-in's power is far closer to the codec's than the input's is
    assert float((fitted - real).abs().max()) < 0.5 * float((_band_power(x) - real).abs().max())
    assert not torch.equal(chain.surrogate(x), chain.surrogate(x))  # type: ignore[attr-defined]


def test_codec_stand_in_passes_no_gradient_where_the_codec_keeps_nothing() -> None:
    """MP3 at 32 kbit/s keeps nothing near 7.9 kHz: straight-through BPDA would send the
    attack there, the fitted stand-in does not."""
    chain = _step("mp3:kbps=32")
    x = _speechlike().requires_grad_(True)
    t = torch.arange(x.shape[1]) / RATE
    probe = torch.sin(2 * torch.pi * 7900 * t)
    (g,) = torch.autograd.grad((chain.surrogate(x) * probe).sum(), x)  # type: ignore[attr-defined]
    assert torch.isfinite(g).all()
    high = float((g * probe).sum(1).abs().max()) / float(probe.pow(2).sum())
    assert high < 0.05  # straight-through would give 1.0


def test_quantize_stand_in_adds_noise_within_one_level() -> None:
    chain = _step("quantize:bits=8")
    x = _speechlike().requires_grad_(True)
    out = chain.surrogate(x)  # type: ignore[attr-defined]
    assert float((out - x).abs().max()) <= 2.0**-8 + 1e-6
    (g,) = torch.autograd.grad(out.sum(), x)
    assert torch.equal(g, torch.ones_like(g))


def test_surrogate_target_answers_with_the_real_chain(tiny_audio_model: torch.nn.Module) -> None:
    from mlwarden.defenses.defended import DefendedTarget

    x = _speechlike().numpy()
    spec = [{"type": "mp3", "kbps": 32, "sample_rate": RATE}]
    real = DefendedTarget(tiny_audio_model, spec, bounds=(-1, 1))
    stand_in = DefendedTarget(tiny_audio_model, spec, bounds=(-1, 1), surrogate=True)
    assert stand_in.randomized and not real.randomized
    assert np.array_equal(stand_in.predict(x), real.predict(x))
