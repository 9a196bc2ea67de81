"""Audio loading: class folders and CSVs, resampling, one clip length, bounded decoding."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mlwarden.core.audio import AudioLimits, read_audio, snr_db, write_wav
from mlwarden.core.data import load_dataset
from mlwarden.core.errors import InputFileError, UserError


def _tone(seconds: float, rate: int, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    sf.write(tmp_path / "a" / "one.wav", _tone(0.5, 16000), 16000, subtype="PCM_16")
    sf.write(tmp_path / "a" / "two.flac", _tone(1.0, 8000), 8000)
    sf.write(tmp_path / "b" / "three.ogg", _tone(0.3, 16000, 880), 16000, format="OGG")
    return tmp_path


def test_a_class_folder_of_wav_flac_ogg_loads_at_one_rate_and_length(folder: Path) -> None:
    ds = load_dataset(folder)
    assert ds.modality == "audio" and ds.sample_rate == 16000
    assert ds.x.shape == (3, 8000)  # the first file's length, 0.5 s at 16 kHz
    assert ds.class_names == ["a", "b"] and list(ds.y) == [0, 0, 1]
    assert ds.sources == ["a/one.wav", "a/two.flac", "b/three.ogg"]
    assert np.all(ds.x[2, 4800:] == 0)  # the 0.3 s clip is padded with silence


def test_sample_rate_and_clip_seconds_resample_and_crop(folder: Path) -> None:
    ds = load_dataset(folder, sample_rate=8000, clip_seconds=0.25)
    assert ds.sample_rate == 8000 and ds.x.shape == (3, 2000)
    spectrum = np.abs(np.fft.rfft(ds.x[0]))
    assert np.argmax(spectrum) * 8000 / 2000 == pytest.approx(440, abs=4)


def test_a_path_label_csv_loads_relative_paths(folder: Path) -> None:
    csv = folder / "list.csv"
    csv.write_text("path,label\na/one.wav,yes\nb/three.ogg,no\n")
    ds = load_dataset(csv, clip_seconds=0.1)
    assert ds.class_names == ["no", "yes"] and list(ds.y) == [1, 0]
    assert ds.x.shape == (2, 1600)


def test_stereo_files_keep_their_channels(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    sf.write(tmp_path / "c" / "s.wav", np.stack([_tone(0.1, 8000)] * 2, 1), 8000)
    assert load_dataset(tmp_path).x.shape == (1, 2, 800)


def _wav_bytes(tmp_path: Path) -> bytes:
    sf.write(tmp_path / "ok.wav", _tone(1.0, 16000), 16000, subtype="PCM_16")
    return (tmp_path / "ok.wav").read_bytes()


def test_a_truncated_wav_is_one_clear_error(tmp_path: Path) -> None:
    data = _wav_bytes(tmp_path)
    (tmp_path / "cut.wav").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputFileError, match="truncated: its data chunk claims 32000 bytes"):
        read_audio(tmp_path / "cut.wav")


def test_a_corrupt_file_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "bad.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk")
    with pytest.raises(InputFileError, match="not a readable audio file"):
        read_audio(tmp_path / "bad.wav")


def test_a_ten_hour_header_is_refused_before_decoding(tmp_path: Path) -> None:
    data = bytearray(_wav_bytes(tmp_path))
    claimed = 10 * 3600 * 16000 * 2
    data[40:44] = struct.pack("<I", min(claimed, 2**32 - 2))
    (tmp_path / "long.wav").write_bytes(bytes(data))
    with pytest.raises(InputFileError, match=r"s long by its header, over the 600 s limit"):
        read_audio(tmp_path / "long.wav")


def test_a_compressed_file_longer_than_the_limit_is_refused(tmp_path: Path) -> None:
    # FLAC of silence: ~1000x compression, the shape of a decompression bomb
    sf.write(tmp_path / "bomb.flac", np.zeros(16000 * 30, np.float32), 16000)
    assert (tmp_path / "bomb.flac").stat().st_size < 20_000
    with pytest.raises(InputFileError, match="over the 5 s limit"):
        read_audio(tmp_path / "bomb.flac", limits=AudioLimits(max_seconds=5))


def test_a_long_file_is_refused_even_when_only_its_start_is_needed(tmp_path: Path) -> None:
    sf.write(tmp_path / "long.flac", np.zeros(16000 * 3, np.float32), 16000)
    with pytest.raises(InputFileError, match="over the 2 s limit"):
        read_audio(tmp_path / "long.flac", limits=AudioLimits(max_seconds=2), seconds=0.5)


def test_a_bad_file_inside_a_folder_names_the_file(folder: Path) -> None:
    (folder / "b" / "zz.wav").write_bytes(b"not audio")
    with pytest.raises(InputFileError, match=r"zz\.wav: not a readable audio file"):
        load_dataset(folder)


def test_audio_options_on_non_audio_data_are_refused() -> None:
    with pytest.raises(UserError, match="apply to audio data only"):
        load_dataset("digits", sample_rate=16000)


def test_float_wav_round_trip_is_bit_exact_and_snr_is_measured(tmp_path: Path) -> None:
    clip = _tone(0.2, 16000)
    noisy = clip + np.float32(0.01) * np.random.default_rng(0).standard_normal(len(clip)).astype(
        np.float32
    )
    write_wav(tmp_path / "x" / "n.wav", noisy, 16000)
    back, rate = read_audio(tmp_path / "x" / "n.wav")
    assert rate == 16000 and np.array_equal(back[0], np.clip(noisy, -1, 1))
    expected = 20 * np.log10(np.linalg.norm(clip) / np.linalg.norm(noisy - clip))
    assert snr_db(clip[None], back) == pytest.approx([expected], rel=1e-6)
