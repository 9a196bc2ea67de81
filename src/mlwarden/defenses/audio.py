"""Audio restoration steps: the guide's "scaling and encoding steps" for waveforms.

Each step is a :class:`~mlwarden.defenses.transforms.Transform` on a batch of clips
``(N, samples)`` or ``(N, channels, samples)`` in [-1, 1] at ``sample_rate`` Hz, usable
in ``--defend``, :class:`~mlwarden.defenses.defended.DefendedTarget` and the gateway.
How an adaptive attack gets through each (Athalye, Carlini & Wagner 2018, "Obfuscated
Gradients Give a False Sense of Security", arXiv:1802.00420):

* ``resample:rate=8000`` — down to ``rate`` and back up, band-limited (FFT), so all
  content above ``rate / 2`` is removed; differentiable.
* ``lowpass:hz=4000`` — windowed-sinc FIR low-pass (Hann window, 255 taps); differentiable.
* ``quantize:bits=8`` — ``2^bits`` uniform levels over [-1, 1]; not differentiable (BPDA).
* ``mp3:kbps=32`` — MP3 (LAME, constant bit rate) and decoded again (libsndfile/mpg123),
  the encoder delay removed; not differentiable (BPDA).
* ``opus:kbps=16`` — Ogg Opus through libsndfile and back; not differentiable (BPDA).
* ``noise:snr_db=40`` — Gaussian noise at that SNR per clip, fresh every call;
  randomised (EOT, Athalye et al. 2018, arXiv:1707.07397), differentiable.
* ``random_chain:k=2`` — ``k`` of the steps above (default settings) in random order,
  drawn per call; randomised and not differentiable (BPDA + EOT).

Beside straight-through BPDA, every non-differentiable step has a differentiable,
random stand-in (``surrogate``) for a stronger adaptive attack with EOT over its draws:
quantisation as uniform additive noise one level wide; a codec as its own fitted
time-frequency gains plus its own quantisation noise, re-fitted on the current clips
at every call.

Example::

    chain = build_chain([{"type": "mp3", "kbps": 32, "sample_rate": 16000}], bounds=(-1, 1))
    restored = chain(torch.as_tensor(clips))
"""

from __future__ import annotations

import functools
import io
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mlwarden.core.errors import UserError
from mlwarden.defenses.transforms import Bounds, Transform

#: The spec ``type`` of every audio step (the gateway and ``--defend`` fill in the rate).
AUDIO_STEPS = ("resample", "lowpass", "quantize", "mp3", "opus", "noise", "random_chain")


class AudioTransform(Transform):
    """Base of the audio steps: checks the batch shape and the sample rate (Hz)."""

    def __init__(self, sample_rate: int = 16000, bounds: Bounds = (-1.0, 1.0)) -> None:
        super().__init__(bounds)
        if not 1000 <= int(sample_rate) <= 192_000:
            raise UserError(f"{self.name}: sample_rate must be 1000..192000 Hz; got {sample_rate}")
        self.sample_rate = int(sample_rate)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim not in (2, 3):
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise UserError(
                f"{self.name}: expected clips (N, samples) or (N, channels, samples); got {shape}"
            )
        return self.forward(x)

    def describe(self) -> dict[str, Any]:
        return {"type": self.name, "sample_rate": self.sample_rate}


class Resample(AudioTransform):
    """Down to ``rate`` Hz and back up (band-limited FFT resampling): removes every
    frequency above ``rate / 2``. Differentiable."""

    name = "resample"

    def __init__(self, rate: int = 8000, **kw: Any) -> None:
        super().__init__(**kw)
        if not 1000 <= int(rate) < self.sample_rate:
            raise UserError(
                f"resample: rate must be 1000 Hz..{self.sample_rate - 1} Hz; got {rate}"
            )
        self.rate = int(rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[-1]
        m = max(1, round(n * self.rate / self.sample_rate))
        spec = torch.fft.rfft(x)
        down = torch.fft.irfft(spec[..., : m // 2 + 1], n=m) * (m / n)
        up = torch.fft.irfft(torch.fft.rfft(down), n=n) * (n / m)
        return up.clamp(*self.bounds)

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"rate": self.rate}


class Lowpass(AudioTransform):
    """Windowed-sinc FIR low-pass at ``hz`` (Hann window, ``taps`` odd). Differentiable."""

    name = "lowpass"

    def __init__(self, hz: float = 4000.0, taps: int = 255, **kw: Any) -> None:
        super().__init__(**kw)
        if not 0 < float(hz) < self.sample_rate / 2:
            raise UserError(f"lowpass: hz must be in (0, {self.sample_rate / 2:g}); got {hz}")
        self.hz, self.taps = float(hz), int(taps) | 1
        t = torch.arange(self.taps, dtype=torch.float64) - self.taps // 2
        fc = self.hz / self.sample_rate
        h = 2 * fc * torch.sinc(2 * fc * t) * torch.hann_window(self.taps, periodic=False)
        self.kernel = (h / h.sum()).float().view(1, 1, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, 1, x.shape[-1])
        out = F.conv1d(F.pad(flat, (self.taps // 2, self.taps // 2)), self.kernel.to(x))
        return out.reshape(x.shape).clamp(*self.bounds)

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"hz": self.hz}


class Quantize(AudioTransform):
    """Round every sample to one of ``2^bits`` levels over [-1, 1] (8 bits: mu-law-free
    8-bit PCM). Not differentiable: attacked with BPDA."""

    name = "quantize"
    differentiable = False

    def __init__(self, bits: int = 8, **kw: Any) -> None:
        super().__init__(**kw)
        if not 1 <= int(bits) <= 24:
            raise UserError(f"quantize: bits must be 1..24; got {bits}")
        self.bits = int(bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = 2 ** (self.bits - 1)
        return (torch.round(x * half) / half).clamp(*self.bounds)

    surrogate_randomized = True

    def surrogate(self, x: torch.Tensor) -> torch.Tensor:
        """The additive-noise model of quantisation: ``x`` plus uniform noise one level
        wide (Widrow & Kollar 2008, "Quantization Noise"). Differentiable, random (EOT)."""
        step = 2.0 ** (1 - self.bits)
        return (x + (torch.rand_like(x) - 0.5) * step).clamp(*self.bounds)

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"bits": self.bits}


class _Codec(AudioTransform):
    """A lossy codec round trip, clip by clip, in numpy; not differentiable (BPDA)."""

    differentiable = False

    surrogate_randomized = True

    def __init__(self, kbps: float, **kw: Any) -> None:
        super().__init__(**kw)
        self.kbps = float(kbps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arr = x.detach().cpu().float().numpy()
        flat = arr.reshape(-1, arr.shape[-1])
        out = np.stack([self._round_trip(row) for row in flat]).reshape(arr.shape)
        return torch.from_numpy(out).to(x).clamp(*self.bounds)

    def surrogate(self, x: torch.Tensor) -> torch.Tensor:
        """The codec as it treats these very clips, fitted afresh from its own round trip
        at every call: a gain per time-frequency bin (what survives of each band in each
        frame, in [0, 1]) plus complex Gaussian noise with the power the gain leaves
        unexplained (the quantisation noise at this bit rate, bin by bin). STFT of about
        32 ms, Hann window, 75% overlap. Differentiable through the gains; random (EOT).
        A perturbation the attack finds through it must survive the codec's own noise.
        """
        n = x.shape[-1]
        flat = x.reshape(-1, n)
        n_fft = 2 ** max(6, round(math.log2(0.032 * self.sample_rate)))
        win = torch.hann_window(n_fft, dtype=flat.dtype, device=flat.device)

        def stft(z: torch.Tensor) -> torch.Tensor:
            return torch.stft(z, n_fft, n_fft // 4, window=win, pad_mode="constant",
                              return_complex=True)  # fmt: skip

        with torch.no_grad():
            spec, coded = stft(flat.detach()), stft(self.forward(flat.detach()))
            power = spec.abs().pow(2)
            floor = 1e-8 * power.amax(dim=(1, 2), keepdim=True) + 1e-20
            gain = ((coded * spec.conj()).real / (power + floor)).clamp(0.0, 1.0)
            left = (coded - gain * spec).abs() / math.sqrt(2)
            noise = torch.complex(torch.randn_like(left), torch.randn_like(left)) * left
        out = torch.istft(gain * stft(flat) + noise, n_fft, n_fft // 4, window=win, length=n)
        return out.reshape(x.shape).clamp(*self.bounds)

    def _round_trip(self, clip: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"kbps": self.kbps}


class Mp3(_Codec):
    """MP3 at ``kbps`` constant bit rate (LAME via ``lameenc``), decoded by libsndfile;
    the encoder's delay is measured once per rate and removed, so samples stay aligned."""

    name = "mp3"

    def __init__(self, kbps: int = 32, **kw: Any) -> None:
        super().__init__(kbps, **kw)
        if int(kbps) not in (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 256, 320):
            raise UserError(f"mp3: kbps must be an MP3 bit rate such as 32, 64, 128; got {kbps}")

    def _round_trip(self, clip: np.ndarray) -> np.ndarray:
        n = len(clip)
        delay = _mp3_delay(self.sample_rate, int(self.kbps))
        out = _mp3(clip, self.sample_rate, int(self.kbps))[delay : delay + n]
        return np.pad(out, (0, n - len(out))).astype(np.float32)


def _mp3(clip: np.ndarray, rate: int, kbps: int) -> np.ndarray:
    import lameenc
    import soundfile as sf

    enc = lameenc.Encoder()
    enc.set_bit_rate(kbps)
    enc.set_in_sample_rate(rate)
    enc.set_channels(1)
    enc.set_quality(2)
    pcm = np.round(np.clip(clip, -1, 1) * 32767).astype("<i2").tobytes()
    data = bytes(enc.encode(pcm) + enc.flush())
    out, _ = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return np.asarray(out[:, 0])


@functools.lru_cache(maxsize=32)
def _mp3_delay(rate: int, kbps: int) -> int:
    """Samples the MP3 round trip shifts a clip by (encoder + decoder delay), by
    cross-correlating a windowed chirp with its decoded copy."""
    t = np.arange(rate // 2) / rate
    probe = (0.5 * np.sin(2 * np.pi * (200 + 1000 * t) * t) * np.hanning(len(t))).astype(np.float32)
    out = _mp3(probe, rate, kbps)
    corr = np.correlate(out, probe, "full")
    return max(0, int(corr.argmax()) - (len(probe) - 1))


class Opus(_Codec):
    """Ogg Opus at about ``kbps`` (libsndfile maps its compression level linearly to
    6..256 kbit/s), decoded again. Rates: 8, 12, 16, 24 or 48 kHz."""

    name = "opus"

    def __init__(self, kbps: float = 16, **kw: Any) -> None:
        super().__init__(kbps, **kw)
        if not 6 <= self.kbps <= 256:
            raise UserError(f"opus: kbps must be 6..256; got {kbps}")
        if self.sample_rate not in (8000, 12000, 16000, 24000, 48000):
            raise UserError(
                f"opus: works at 8, 12, 16, 24 or 48 kHz; the clips are {self.sample_rate} Hz "
                "(resample them with --sample-rate)"
            )

    def _round_trip(self, clip: np.ndarray) -> np.ndarray:
        import soundfile as sf

        buf = io.BytesIO()
        level = 1.0 - (self.kbps - 6.0) / 250.0
        sf.write(buf, clip, self.sample_rate, format="OGG", subtype="OPUS", compression_level=level)
        buf.seek(0)
        out, _ = sf.read(buf, dtype="float32", always_2d=True)
        n = len(clip)
        return np.pad(out[:n, 0], (0, max(0, n - len(out)))).astype(np.float32)


class Noise(AudioTransform):
    """Add Gaussian noise ``snr_db`` dB below each clip (L2 energy), fresh every call.
    Randomised (attacked with EOT); differentiable."""

    name = "noise"
    randomized = True

    def __init__(self, snr_db: float = 40.0, seed: int | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        if not math.isfinite(float(snr_db)):
            raise UserError(f"noise: snr_db must be a number of dB; got {snr_db}")
        self.snr_db = float(snr_db)
        self.generator = torch.Generator()
        self.generator.manual_seed(seed if seed is not None else int(torch.seed() % 2**63))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(x.shape, generator=self.generator).to(x)
        dims = tuple(range(1, x.ndim))
        scale = x.detach().norm(dim=dims, keepdim=True) / noise.norm(dim=dims, keepdim=True)
        return (x + noise * scale.clamp_min(0) * 10 ** (-self.snr_db / 20)).clamp(*self.bounds)

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"snr_db": self.snr_db}


class RandomChain(AudioTransform):
    """``k`` distinct steps (resample 8 kHz, low-pass 4 kHz, 8-bit, MP3 32 kbit/s, noise
    40 dB) in a random order, drawn afresh for every batch. Randomised, not
    differentiable: attacked with BPDA and EOT."""

    name = "random_chain"
    randomized = True
    differentiable = False

    def __init__(self, k: int = 2, seed: int | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        rate = self.sample_rate
        half = min(rate // 2, 8000)
        self.pool: list[Transform] = [
            Resample(rate=half, sample_rate=rate, bounds=self.bounds),
            Lowpass(hz=min(4000.0, rate / 4), sample_rate=rate, bounds=self.bounds),
            Quantize(bits=8, sample_rate=rate, bounds=self.bounds),
            Noise(snr_db=40, seed=seed, sample_rate=rate, bounds=self.bounds),
        ]
        if rate in (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000):
            self.pool.append(Mp3(kbps=32, sample_rate=rate, bounds=self.bounds))
        if not 1 <= int(k) <= len(self.pool):
            raise UserError(f"random_chain: k must be 1..{len(self.pool)}; got {k}")
        self.k = int(k)
        self.generator = torch.Generator()
        self.generator.manual_seed(seed if seed is not None else int(torch.seed() % 2**63))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in torch.randperm(len(self.pool), generator=self.generator)[: self.k].tolist():
            x = self.pool[i](x)
        return x

    def surrogate(self, x: torch.Tensor) -> torch.Tensor:
        """A fresh draw of ``k`` steps, each through its own stand-in."""
        for i in torch.randperm(len(self.pool), generator=self.generator)[: self.k].tolist():
            x = self.pool[i].surrogate(x)
        return x

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"k": self.k}


def with_sample_rate(spec: list[dict[str, Any]], rate: int) -> list[dict[str, Any]]:
    """Give every audio step of a chain spec the clips' sample rate (unless it has one)."""
    return [({"sample_rate": rate} | e) if e.get("type") in AUDIO_STEPS else e for e in spec]


STEPS: dict[str, type[AudioTransform]] = {
    "resample": Resample,
    "lowpass": Lowpass,
    "quantize": Quantize,
    "mp3": Mp3,
    "opus": Opus,
    "noise": Noise,
    "random_chain": RandomChain,
}
