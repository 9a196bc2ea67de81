"""Write successful adversarial clips as WAV files and prove they still work when replayed.

Each clip an attack broke is written as a 32-bit float WAV (the perturbation survives
bit for bit) at the dataset's sample rate, under ``out_dir`` at the input's own relative
path. Every written file is then read back from disk and checked again: the clip's SNR
against the original (dB, L2 energy) and a fresh prediction of the model.

Example::

    rows = save_adversarial(target, data, result, "adv/")
    all(r["replay_fooled"] for r in rows)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mlwarden.core.audio import read_audio, snr_db, write_wav
from mlwarden.core.data import Dataset
from mlwarden.core.errors import UserError


def save_adversarial(
    target: Any, data: Dataset, result: Any, out_dir: str | Path
) -> list[dict[str, Any]]:
    """Write each broken clip of ``result`` (an EvaluationResult on ``data``) to ``out_dir``.

    Returns one row per file: relative path, true and replayed class, SNR in dB
    measured on the file read back, and ``replay_fooled`` (the model, queried afresh on
    the file's samples, no longer predicts the true class).
    """
    if data.sample_rate is None:
        raise UserError("--save-adversarial writes audio clips; the data is not audio")
    out = Path(out_dir)
    root = out.resolve()
    broken = np.nonzero(result.clean_correct & ~result.robust)[0]
    rows: list[dict[str, Any]] = []
    for i in broken:
        rel = data.sources[i] if i < len(data.sources) else f"clip{i:05d}.wav"
        path = (out / rel).with_suffix(".wav")
        if not path.resolve().is_relative_to(root):
            path = out / f"clip{i:05d}.wav"  # a source outside the dataset root
        write_wav(path, result.x_adv[i], data.sample_rate)
        rows.append({"index": int(i), "path": path.relative_to(out).as_posix()})
    if not rows:
        return rows
    replay = np.stack([_read_back(out / r["path"], data) for r in rows])
    pred = target.predict_labels(replay)
    snr = snr_db(data.x[broken], replay)
    for r, p, s in zip(rows, pred, snr, strict=True):
        y = int(data.y[r["index"]])
        r.update(
            true=data.class_names[y] if y < len(data.class_names) else y,
            replayed=data.class_names[int(p)] if int(p) < len(data.class_names) else int(p),
            snr_db=round(float(s), 3),
            replay_fooled=bool(int(p) != y),
        )
    return rows


def _read_back(path: Path, data: Dataset) -> np.ndarray:
    clip, rate = read_audio(path)
    if rate != data.sample_rate:
        raise UserError(f"{path}: written at {data.sample_rate} Hz but reads back at {rate} Hz")
    return clip[0] if data.x.ndim == 2 else clip
