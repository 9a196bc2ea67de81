"""Neural Cleanse on audio: detection and false alarms over class counts, triggers,
seeds and two model families.

For every (classes, trigger, seed, model): a synthetic harmonic-sound set
(:func:`mlwarden.core.audio_samples.harmonic_sounds`, 500 training clips of 0.2 s at
8 kHz), poisoned with a tone, chirp or noise-burst trigger at 10 dB SNR on 10% of the
clips (all-to-one, target ``seed % classes``) or left clean, a model trained on it
(``mel``: :class:`~mlwarden.evasion.audio.models.MelClassifier`, log-mel + conv; ``wave``: strided 1-D convs on the raw waveform),
then :func:`mlwarden.poisoning.detect_model.neural_cleanse` over the waveform samples
of 150 clean held-out clips and the verdict of
:func:`mlwarden.poisoning.detect_model.norm_verdict` (reversed triggers re-checked on
150 further held-out clips). Each run appends one JSON line to ``--out`` (runs already
there are skipped, so an interrupted run resumes), then the table is printed.

Run (about 40 minutes on a loaded 2-core box)::

    timeout 3600 nice -n 10 .venv/bin/python benchmarks/audio_backdoor.py \
        --classes 6 8 10 --triggers tone chirp noise clean --seeds 0 1 2 --models mel
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlwarden.core.audio_samples import harmonic_sounds
from mlwarden.core.data import Dataset
from mlwarden.evasion.audio.models import MelClassifier
from mlwarden.poisoning import detect_model as dm
from mlwarden.poisoning.simulate import audio_backdoor

RATE, SAMPLES = 8000, 1600


class WaveNet(torch.nn.Module):
    """Waveform ``(B, T)`` -> logits through strided 1-D convolutions (no front-end)."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv1d(1, 16, 64, stride=8), torch.nn.ReLU(),
            torch.nn.Conv1d(16, 32, 8, stride=4), torch.nn.ReLU(),
        )  # fmt: skip
        self.head = torch.nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x[:, None]).amax(2))


def train(kind: str, classes: int, x: np.ndarray, y: np.ndarray, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model: torch.nn.Module = MelClassifier(classes) if kind == "mel" else WaveNet(classes)
    opt = torch.optim.Adam(model.parameters(), 1e-2 if kind == "mel" else 3e-3)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    for _ in range(20 if kind == "mel" else 30):
        for b in torch.randperm(len(xt)).split(64):
            loss = torch.nn.functional.cross_entropy(model(xt[b]), yt[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def one(classes: int, trigger: str, seed: int, kind: str, epochs: int) -> dict[str, Any]:
    x, y = harmonic_sounds(500, classes, seed=seed, sample_rate=RATE, samples=SAMPLES)
    ds = Dataset(x=x, y=y, modality="audio", bounds=(-1.0, 1.0), sample_rate=RATE)
    target = seed % classes
    poisoned = None
    if trigger != "clean":
        poisoned = audio_backdoor(ds, 0.1, target=target, kind=trigger, snr_db=10, seed=seed)
        ds = poisoned.dataset
    t0 = time.perf_counter()
    model = train(kind, classes, ds.x, ds.y, seed)
    tx, ty = harmonic_sounds(300, classes, seed=seed + 100, sample_rate=RATE, samples=SAMPLES)
    with torch.no_grad():
        acc = float((model(torch.as_tensor(tx)).argmax(1).numpy() == ty).mean())
        asr = None
        if poisoned is not None:
            others = tx[ty != target]
            stamped = torch.as_tensor(poisoned.trigger.apply(others))
            asr = float((model(stamped).argmax(1) == target).float().mean())
    t1 = time.perf_counter()
    nc = dm.neural_cleanse(
        model, tx[:150], num_classes=classes, bounds=(-1.0, 1.0), epochs=epochs, seed=seed
    )
    verdict = dm.norm_verdict(model, nc, tx[150:])
    return {
        "classes": classes, "trigger": trigger, "seed": seed, "model": kind,
        "target": target if poisoned is not None else None, "acc": acc, "asr": asr,
        "l1": nc.l1.round(3).tolist(), "success": nc.success.round(3).tolist(),
        "mad_index": nc.anomaly_index.round(3).tolist(), "verdict": verdict.as_dict(),
        "train_s": round(t1 - t0, 1), "nc_s": round(time.perf_counter() - t1, 1),
    }  # fmt: skip


def table(rows: list[dict[str, Any]]) -> None:
    """One line per run, the verdict recomputed from the stored norms (so the rule can be
    re-read on old runs), then detection and false-alarm counts."""
    print(f"{'model':<5} {'K':>3} {'trigger':<6} {'seed':>4} {'acc':>5} {'asr':>5} {'MAD':>5} "
          f"{'gap':>6} {'ratio':>6} {'logidx':>6} {'flip':>5} {'MAD>2':>5} {'ours':>5}")  # fmt: skip
    tally: dict[tuple[str, str], list[int]] = {}
    for r in rows:
        c, gap, ratio, logidx = dm.norm_statistics(np.array(r["l1"]), np.array(r["success"]))
        flip = r["verdict"]["flip_rate"]
        ours = (
            gap < dm.GAP_THRESHOLD and ratio < dm.RATIO_THRESHOLD and not flip < dm.FLIP_THRESHOLD
        )
        mad = int(np.argmax(r["mad_index"]))
        old = r["mad_index"][mad] > 2
        calls = []
        for flag, cls in ((old, mad), (ours, c)):
            if r["target"] is None:
                calls.append("FA" if flag else "ok")
            else:
                calls.append(("hit" if cls == r["target"] else "wrong") if flag else "miss")
        asr = float("nan") if r["asr"] is None else r["asr"]
        print(
            f"{r['model']:<5} {r['classes']:>3} {r['trigger']:<6} {r['seed']:>4} {r['acc']:>5.2f} "
            f"{asr:>5.2f} {r['mad_index'][mad]:>5.1f} {gap:>6.3f} {ratio:>6.3f} {logidx:>6.1f} "
            f"{flip:>5.2f} {calls[0]:>5} {calls[1]:>5}"
        )
        strong = r["target"] is None or r["asr"] >= 0.8
        key = (r["model"], "clean" if r["target"] is None else "asr>=0.8" if strong else "asr<0.8")
        t = tally.setdefault(key, [0, 0, 0])
        t[0] += 1
        t[1] += calls[0] in ("hit", "FA")
        t[2] += calls[1] in ("hit", "FA")
    print(f"\n{'model':<5} {'models':<9} {'n':>3} {'MAD>2 flags':>11} {'ours flags':>10}")
    for (model, kind), (n, old_n, new_n) in sorted(tally.items()):
        print(f"{model:<5} {kind:<9} {n:>3} {old_n:>11} {new_n:>10}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--classes", type=int, nargs="+", default=[6, 8, 10])
    ap.add_argument("--triggers", nargs="+", default=["tone", "chirp", "noise", "clean"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--models", nargs="+", default=["mel"])
    ap.add_argument("--epochs", type=int, default=20, help="Neural Cleanse epochs")
    ap.add_argument("--out", type=Path, default=Path("audio_backdoor.jsonl"))
    ap.add_argument("--table-only", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    done = [json.loads(s) for s in args.out.read_text().splitlines()] if args.out.exists() else []
    keys = {(r["classes"], r["trigger"], r["seed"], r["model"]) for r in done}
    for kind in [] if args.table_only else args.models:
        for k in args.classes:
            for trig in args.triggers:
                for seed in args.seeds:
                    if (k, trig, seed, kind) in keys:
                        continue
                    row = one(k, trig, seed, kind, args.epochs)
                    print(json.dumps(row), flush=True)
                    with args.out.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    done.append(row)
    table(done)


if __name__ == "__main__":
    main()
