"""Audio data: bounded decoding, resampling, one clip length, and 32-bit float WAV output.

A waveform dataset is a :class:`~mlwarden.core.data.Dataset` with ``modality="audio"``:
``x`` is float32 in [-1, 1], shaped ``(N, samples)`` for mono and
``(N, channels, samples)`` otherwise; ``sample_rate`` is in Hz and ``sources`` holds each
clip's path relative to the dataset root (so adversarial clips can be written to the
same relative paths).

Two layouts load: a folder with one sub-folder per class (``ROOT/<class>/<file>``,
as image folders) and a CSV with ``path,label`` columns (paths relative to the CSV).
WAV, FLAC, Ogg Vorbis/Opus and MP3 decode through libsndfile (the ``soundfile``
wheel). Decoding is bounded: the header's frame count, rate and channels are checked
before any sample is decoded, and no file is ever decoded past the limit whatever its
header claims (a decompression bomb or a lying header), so a truncated, corrupt,
10-hour or bomb file costs one clear line, not memory.

Example::

    ds = load_audio("speech/", sample_rate=16000, clip_seconds=1.0)
    ds.x.shape          # (N, 16000)
    write_wav("adv/yes/a.wav", ds.x[0], ds.sample_rate)
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlwarden.core.errors import InputFileError, UserError
from mlwarden.core.target import HttpTarget, TargetError

AUDIO_SUFFIXES = {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3"}


@dataclass(frozen=True)
class AudioLimits:
    """What one load may cost. Seconds and Hz are per file; bytes per file on disk."""

    max_seconds: float = 600.0
    max_rate: int = 192_000
    min_rate: int = 1_000
    max_channels: int = 8
    max_file_bytes: int = 512 * 1024**2
    #: every clip of the dataset together, float32 samples after padding/cropping
    max_total_samples: int = 500_000_000


DEFAULT_LIMITS = AudioLimits()


def read_audio(
    path: str | Path, *, limits: AudioLimits = DEFAULT_LIMITS, seconds: float | None = None
) -> tuple[np.ndarray, int]:
    """Decode one file to float32 ``(channels, frames)`` in [-1, 1] and its rate in Hz.

    ``seconds`` decodes only the start of the file (the clip that will be kept, plus a
    few frames for the resampler), which bounds the work for long files. Raises
    :class:`InputFileError` with one line for anything unreadable.
    """
    import soundfile as sf

    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InputFileError(path, f"cannot be read ({exc.strerror or exc})") from None
    if size > limits.max_file_bytes:
        raise InputFileError(
            path, f"is {size} bytes, over the {limits.max_file_bytes}-byte limit for one clip"
        )
    if path.suffix.lower() in {".wav", ".wave"}:
        _check_wav_chunks(path, size, limits)
    try:
        with sf.SoundFile(str(path)) as fh:
            rate, channels, frames = int(fh.samplerate), int(fh.channels), int(fh.frames)
            _check_header(path, rate, channels, frames, limits)
            cap = int(limits.max_seconds * rate)
            max_frames = None if seconds is None else math.ceil(seconds * rate) + 64
            want = cap if max_frames is None else min(cap, max_frames)
            # one frame more than allowed: a header that under-reports is caught too
            data = fh.read(frames=want + 1, dtype="float32", always_2d=True)
    except InputFileError:
        raise
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError, TypeError) as exc:
        raise InputFileError(path, f"not a readable audio file ({_one_line(exc)})") from None
    got = len(data)
    if got > want and max_frames is None:
        raise InputFileError(
            path,
            f"decodes to more than {limits.max_seconds:g} s at {rate} Hz although its header "
            f"claims {frames} frames; refusing it (a lying header or a decompression bomb)",
        )
    data = data[:want]
    expected = frames if max_frames is None else min(frames, max_frames)
    if got < expected and path.suffix.lower() in {".wav", ".wave", ".flac"}:
        raise InputFileError(
            path, f"is truncated: its header promises {frames} frames, only {got} decode"
        )
    if got == 0:
        raise InputFileError(path, "holds no audio frames")
    if not np.all(np.isfinite(data)):
        raise InputFileError(path, "holds NaN or infinite samples")
    return np.ascontiguousarray(np.clip(data.T, -1.0, 1.0)), rate


def _check_wav_chunks(path: Path, size: int, limits: AudioLimits) -> None:
    """Read the RIFF chunk list ourselves: libsndfile quietly shortens a ``data`` chunk
    that claims more bytes than the file holds, so a truncated file (or one whose header
    claims 10 hours) would otherwise load as if it were whole."""
    with path.open("rb") as fh:
        _check_riff(fh, path, size, limits)


def _check_riff(fh: Any, path: object, size: int, limits: AudioLimits) -> None:
    """The RIFF/WAVE chunk walk of :func:`_check_wav_chunks` on an open binary file."""
    import struct

    head = fh.read(12)
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
        return  # not RIFF/WAVE: libsndfile decides what it is, and refuses junk
    pos, fmt = 12, None
    while pos + 8 <= size:
        fh.seek(pos)
        cid, clen = struct.unpack("<4sI", fh.read(8))
        if cid == b"fmt " and clen >= 16:
            fmt = struct.unpack("<HHIIHH", fh.read(16))
        if cid == b"data":
            if fmt is None or head[:4] == b"RF64" or clen in (0, 0xFFFFFFFF):
                return  # streamed or 64-bit sizes: libsndfile's count and our cap decide
            _, channels, rate, _, align, _ = fmt
            if rate and align and clen // align > limits.max_seconds * rate:
                raise InputFileError(
                    path,
                    f"is {clen / align / rate:.1f} s long by its header, over the "
                    f"{limits.max_seconds:g} s limit for one clip",
                )
            if pos + 8 + clen > size:
                raise InputFileError(
                    path,
                    f"is truncated: its data chunk claims {clen} bytes, the file holds "
                    f"{max(size - pos - 8, 0)}",
                )
            return
        pos += 8 + clen + (clen & 1)


def _check_header(path: Path, rate: int, channels: int, frames: int, lim: AudioLimits) -> None:
    if not lim.min_rate <= rate <= lim.max_rate:
        raise InputFileError(
            path, f"has a sample rate of {rate} Hz; expected {lim.min_rate}..{lim.max_rate} Hz"
        )
    if not 1 <= channels <= lim.max_channels:
        raise InputFileError(path, f"has {channels} channels; expected 1..{lim.max_channels}")
    if frames > lim.max_seconds * rate:
        raise InputFileError(
            path,
            f"is {frames / rate:.1f} s long by its header, over the {lim.max_seconds:g} s limit "
            "for one clip",
        )


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Band-limited resampling along the last axis (polyphase, Kaiser window; scipy).

    Example: ``resample(clip, 8000, 16000)`` doubles the number of samples.
    """
    if rate_in == rate_out:
        return x.astype(np.float32, copy=False)
    from scipy.signal import resample_poly

    g = math.gcd(rate_in, rate_out)
    up, down = rate_out // g, rate_in // g
    if max(up, down) > 10_000:
        raise UserError(
            f"cannot resample {rate_in} Hz to {rate_out} Hz exactly (ratio {up}/{down} is "
            "too fine); choose a rate with a simpler ratio"
        )
    return np.clip(resample_poly(x, up, down, axis=-1), -1.0, 1.0).astype(np.float32)


def fit_length(x: np.ndarray, n: int) -> np.ndarray:
    """Crop to the first ``n`` samples, or pad with silence at the end."""
    if x.shape[-1] >= n:
        return x[..., :n]
    pad = [(0, 0)] * (x.ndim - 1) + [(0, n - x.shape[-1])]
    return np.pad(x, pad)


def load_audio(
    spec: str | Path,
    *,
    sample_rate: int | None = None,
    clip_seconds: float | None = None,
    limits: AudioLimits = DEFAULT_LIMITS,
) -> object:
    """Load an audio class folder or a ``path,label`` CSV as a Dataset (modality audio).

    ``sample_rate`` (Hz): resample every clip to it (default: the first file's rate;
    files at other rates are resampled to it). ``clip_seconds``: pad or crop every clip
    to this length (default: the first file's length).
    """
    path = Path(spec)
    entries = _folder_entries(path) if path.is_dir() else _csv_entries(path)
    return _build(path, entries, sample_rate, clip_seconds, limits)


def _folder_entries(root: Path) -> list[tuple[Path, str]]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise InputFileError(root, "has no class sub-folders; expected ROOT/<class>/<audio files>")
    out = [
        (f, c)
        for c in classes
        for f in sorted((root / c).iterdir())
        if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES
    ]
    if not out:
        exts = ", ".join(sorted(AUDIO_SUFFIXES))
        raise InputFileError(root, f"class folders hold no audio files ({exts})")
    return out


def _csv_entries(path: Path) -> list[tuple[Path, str]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputFileError(path, f"not a readable CSV ({_one_line(exc)})") from None
    header = [h.strip().lower() for h in rows[0]] if rows else []
    if "path" not in header or "label" not in header:
        raise InputFileError(path, "expected a CSV with columns 'path,label' (audio file, class)")
    pi, li = header.index("path"), header.index("label")
    out = []
    for lineno, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) <= max(pi, li):
            raise InputFileError(path, f"line {lineno} has {len(row)} fields; expected path,label")
        file = Path(row[pi].strip())
        out.append((file if file.is_absolute() else path.parent / file, row[li].strip()))
    if not out:
        raise InputFileError(path, "has a header but no rows")
    return out


def _build(
    root: Path,
    entries: list[tuple[Path, str]],
    sample_rate: int | None,
    clip_seconds: float | None,
    limits: AudioLimits,
) -> object:
    from mlwarden.core.data import Dataset

    if sample_rate is not None and not limits.min_rate <= sample_rate <= limits.max_rate:
        raise UserError(
            f"--sample-rate must be {limits.min_rate}..{limits.max_rate} Hz; got {sample_rate}"
        )
    if clip_seconds is not None and not 0 < clip_seconds <= limits.max_seconds:
        raise UserError(
            f"--clip-seconds must be in (0, {limits.max_seconds:g}]; got {clip_seconds}"
        )
    base = root if root.is_dir() else root.parent
    clips: list[np.ndarray] = []
    rate = sample_rate
    length: int | None = None
    channels: int | None = None
    for file, _label in entries:
        keep = clip_seconds if length is None or rate is None else length / rate
        clip, file_rate = read_audio(file, limits=limits, seconds=keep)
        if rate is None:
            rate = file_rate
        clip = resample(clip, file_rate, rate)
        if channels is None:
            channels = clip.shape[0]
        elif clip.shape[0] != channels:
            raise InputFileError(
                file, f"has {clip.shape[0]} channels; the first clip has {channels}"
            )
        if length is None:
            length = round(clip_seconds * rate) if clip_seconds else clip.shape[-1]
            if len(entries) * length * channels > limits.max_total_samples:
                raise UserError(
                    f"{len(entries)} clips of {length} samples would exceed the "
                    f"{limits.max_total_samples}-sample limit; use --clip-seconds or fewer files"
                )
        clips.append(fit_length(clip, length))
    assert rate is not None
    names = sorted({label for _, label in entries})
    lookup = {c: i for i, c in enumerate(names)}
    x = np.stack(clips).astype(np.float32)
    return Dataset(
        x=x[:, 0] if channels == 1 else x,
        y=np.asarray([lookup[label] for _, label in entries], dtype=np.int64),
        name=root.name,
        modality="audio",
        bounds=(-1.0, 1.0),
        class_names=names,
        sample_rate=int(rate),
        sources=[_relative(f, base) for f, _ in entries],
    )


def _relative(file: Path, base: Path) -> str:
    try:
        return file.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return file.name


def write_wav(path: str | Path, clip: np.ndarray, sample_rate: int) -> Path:
    """Write ``(samples,)`` or ``(channels, samples)`` as a 32-bit float WAV (lossless: the
    perturbation survives bit for bit). Creates parent folders."""
    import soundfile as sf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.asarray(clip, dtype=np.float32)
    sf.write(str(path), data.T if data.ndim == 2 else data, int(sample_rate), subtype="FLOAT")
    return path


def snr_db(clean: np.ndarray, perturbed: np.ndarray) -> np.ndarray:
    """Per-clip signal-to-perturbation ratio in dB (L2 energy); inf when unchanged.

    Example: a perturbation with 1/10 of the clip's L2 norm gives 20 dB.
    """
    c = np.asarray(clean, np.float64).reshape(len(clean), -1)
    d = np.asarray(perturbed, np.float64).reshape(len(clean), -1) - c
    sig = np.linalg.norm(c, axis=1)
    noise = np.linalg.norm(d, axis=1)
    with np.errstate(divide="ignore"):
        return np.where(noise > 0, 20 * np.log10(np.maximum(sig, 1e-30) / noise), np.inf)


def log_band_energies(x: np.ndarray, sample_rate: int, bands: int = 32) -> np.ndarray:
    """Log10 energy per 32 ms frame (Hann window, 50% overlap) in ``bands`` log-spaced
    bands from 50 Hz to the Nyquist frequency: ``(N, samples)`` or
    ``(N, channels, samples)`` (channels averaged) -> ``(N, frames, bands)`` float64.

    Example: ``log_band_energies(ds.x, 8000).shape == (len(ds), 49, 32)`` for 0.2 s clips.
    """
    arr = np.asarray(x, np.float32)
    flat = arr.reshape(len(arr), -1, arr.shape[-1]).mean(axis=1)
    n_fft = 2 ** max(6, round(np.log2(0.032 * sample_rate)))
    if flat.shape[1] < n_fft:
        flat = np.pad(flat, ((0, 0), (0, n_fft - flat.shape[1])))
    hop = n_fft // 2
    frames = np.lib.stride_tricks.sliding_window_view(flat, n_fft, axis=1)[:, ::hop]
    power = np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=-1)) ** 2
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    edges = np.geomspace(50.0, sample_rate / 2, bands + 1)
    which = np.clip(np.searchsorted(edges, freqs, side="right") - 1, 0, bands - 1)
    energy = np.zeros((*power.shape[:2], bands))
    for b in range(bands):
        energy[..., b] = power[..., which == b].sum(-1)
    return np.log10(energy + 1e-10)


def band_features(x: np.ndarray, sample_rate: int, bands: int = 32) -> np.ndarray:
    """Clip descriptors for data checks that compare clips (label issues, outliers):
    the mean and standard deviation over frames of :func:`log_band_energies`.
    ``(N, samples)`` or ``(N, channels, samples)`` -> ``(N, 2 * bands)`` float32.

    Raw samples are no such descriptor: a tone shifted by half a period has the opposite
    sign everywhere, so neighbours in sample space are not neighbours in sound.

    Example: ``band_features(ds.x, ds.sample_rate).shape == (len(ds), 64)``.
    """
    logs = log_band_energies(x, sample_rate, bands)
    return np.concatenate([logs.mean(1), logs.std(1)], axis=1).astype(np.float32)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] if text else type(exc).__name__


def is_audio_dataset(path: Path) -> bool:
    """A class folder whose first class holds audio files, or a CSV with a ``path`` column
    naming audio files."""
    try:
        if path.is_dir():
            for sub in sorted(p for p in path.iterdir() if p.is_dir()):
                return any(f.suffix.lower() in AUDIO_SUFFIXES for f in sub.iterdir())
            return False
        if path.suffix.lower() != ".csv" or not path.is_file():
            return False
        with path.open(encoding="utf-8-sig", errors="replace") as fh:
            head = [fh.readline() for _ in range(2)]
    except OSError:
        return False
    cols = [c.strip().lower() for c in head[0].split(",")]
    if "path" not in cols or "label" not in cols:
        return False
    first = head[1].split(",")
    cell = first[cols.index("path")].strip() if len(first) > cols.index("path") else ""
    return Path(cell).suffix.lower() in AUDIO_SUFFIXES


def wav_bytes(clip: np.ndarray, sample_rate: int, subtype: str = "FLOAT") -> bytes:
    """One clip ``(samples,)`` or ``(channels, samples)`` as WAV file bytes (``FLOAT``:
    32-bit float, lossless; ``PCM_16``: what most speech services take)."""
    import io

    import soundfile as sf

    buf = io.BytesIO()
    data = np.asarray(clip, np.float32)
    sf.write(
        buf, data.T if data.ndim == 2 else data, int(sample_rate), format="WAV", subtype=subtype
    )
    return buf.getvalue()


class WavHttpTarget(HttpTarget):
    """A model behind an HTTP endpoint that takes one WAV file per request.

    Each clip of a batch is POSTed as ``audio/wav`` at ``sample_rate`` Hz (32-bit float
    by default, or ``subtype="PCM_16"``); the JSON response's ``output_field`` (default
    ``predictions``) holds that clip's scores (or its label). Other keywords as
    :class:`~mlwarden.core.target.HttpTarget` (headers, timeout, access, max_queries).

    Example: ``WavHttpTarget("http://127.0.0.1:8000/vad", sample_rate=16000)``.
    """

    def __init__(self, url: str, *, sample_rate: int, subtype: str = "FLOAT", **kw: Any) -> None:
        kw.setdefault("batch_size", 16)
        super().__init__(url, **kw)
        self.sample_rate = int(sample_rate)
        self.subtype = subtype

    def _predict(self, x: np.ndarray) -> np.ndarray:
        if x.ndim not in (2, 3):
            raise TargetError(
                f"{self.name}: expected clips (N, samples) or (N, channels, samples); "
                f"got an array of shape {tuple(x.shape)}"
            )
        rows = [self._one(clip) for clip in x]
        return np.stack(rows) if rows[0].ndim else np.asarray(rows)

    def _one(self, clip: np.ndarray) -> np.ndarray:
        body = wav_bytes(clip, self.sample_rate, self.subtype)
        resp = self.client.post(self.url, content=body, headers={"Content-Type": "audio/wav"})
        if resp.status_code >= 400:
            raise TargetError(f"{self.url} answered HTTP {resp.status_code}: {resp.text[:200]}")
        try:
            out = np.asarray(resp.json()[self.output_field])
        except (ValueError, KeyError, TypeError) as exc:
            raise TargetError(
                f"{self.url}: response has no usable {self.output_field!r} ({exc})"
            ) from None
        if out.dtype.kind not in "biuf":
            raise TargetError(f"{self.url}: {self.output_field!r} is not numbers")
        return out.reshape(-1) if out.ndim else out


def parse_wav_upload(
    body: bytes,
    *,
    sample_rate: int | None,
    samples: int | None,
    limits: AudioLimits = DEFAULT_LIMITS,
) -> np.ndarray:
    """One uploaded audio file (WAV, FLAC, Ogg, MP3 bytes) as a batch of one clip,
    ``(1, samples)`` for mono, ``(1, channels, samples)`` otherwise, float32 in [-1, 1].

    The gateway's audio parser: the header is checked before decoding (rate must equal
    ``sample_rate`` Hz when given; at most ``samples`` frames when given, else
    ``limits.max_seconds``), decoding stops at the limit, a shorter clip is padded with
    silence. Every problem is a :class:`UserError` with one line.
    """
    import io

    import soundfile as sf

    label = "upload"
    if len(body) > limits.max_file_bytes:
        raise UserError(f"{label}: {len(body)} bytes, over the {limits.max_file_bytes}-byte limit")
    _check_riff(io.BytesIO(body), label, len(body), limits)
    try:
        with sf.SoundFile(io.BytesIO(body)) as fh:
            rate, channels, frames = int(fh.samplerate), int(fh.channels), int(fh.frames)
            _check_header(Path(label), rate, channels, frames, limits)
            if sample_rate is not None and rate != sample_rate:
                raise UserError(f"{label}: sampled at {rate} Hz; this model takes {sample_rate} Hz")
            cap = min(int(limits.max_seconds * rate), samples or frames + 1)
            if frames > cap:
                raise UserError(f"{label}: {frames} frames; at most {cap} ({cap / rate:g} s)")
            data = fh.read(frames=cap + 1, dtype="float32", always_2d=True)
    except UserError:
        raise
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError, TypeError) as exc:
        raise UserError(f"{label}: not a readable audio file ({_one_line(exc)})") from None
    if len(data) > cap:
        raise UserError(f"{label}: decodes to more frames than its header claims; refused")
    if len(data) == 0 or not np.all(np.isfinite(data)):
        raise UserError(f"{label}: no audio frames, or NaN/infinite samples")
    clip = fit_length(np.clip(data.T, -1.0, 1.0), samples or len(data))
    return (clip[0] if channels == 1 else clip)[None].astype(np.float32)
