"""The cross-class detector (MLW-DAT-017) alone on poisoned and clean sound sets: on the
clips' waveform samples and on their band energies (``poisoning/audio_features.py``).

Sets: ``harmonic_sounds`` (``--classes``, 100 clips a class, 0.2 s at 8 kHz); a 0.1 s
tone, noise burst or chirp added 10 dB below the chosen clips, relabelled to class
``seed % classes`` (all-to-one) at 10%, 25% and 50% of the set; and the clean set.
Prints one JSON line per set: the flagged classes, rows flagged, F1 against the true
poison and seconds, for each representation. No model is trained.

Run (about 10 minutes on a loaded 2-core box)::

    timeout 1200 nice -n 10 .venv/bin/python -W ignore benchmarks/audio_cross_class.py \\
        --classes 6 --seed 0
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from mlwarden.core.audio_samples import harmonic_sounds
from mlwarden.core.data import Dataset
from mlwarden.poisoning import detect_data as dd
from mlwarden.poisoning.audio_features import band_embedding
from mlwarden.poisoning.cross_class import cross_class_modes
from mlwarden.poisoning.simulate import audio_backdoor

RATE, SAMPLES = 8000, 1600


def run(classes: int, seed: int, trigger: str, rate: float) -> dict:
    """One set, the detector on both representations."""
    x, y = harmonic_sounds(100 * classes, classes, seed=seed, sample_rate=RATE, samples=SAMPLES)
    ds = Dataset(x=x, y=y, modality="audio", bounds=(-1.0, 1.0), sample_rate=RATE)
    truth = np.zeros(len(y), bool)
    if trigger != "clean":
        p = audio_backdoor(ds, rate, target=seed % classes, kind=trigger, snr_db=10.0, seed=seed)
        ds, truth = p.dataset, p.is_poison
    out: dict = {"classes": classes, "seed": seed, "trigger": trigger, "rate": rate}
    for rep in ("raw", "bands"):
        t = time.perf_counter()
        xx = ds.x if rep == "raw" else band_embedding(ds.x, RATE)
        det = cross_class_modes(xx, ds.y, seed=seed)
        m = dd.flag_metrics(det.flagged, truth)
        out[rep] = {
            "classes": [c for c, s in det.details["classes"].items() if s["flagged"]],
            "flagged": int(m["flagged"]),
            "f1": None if trigger == "clean" else round(float(m["f1"]), 2),
            "seconds": round(time.perf_counter() - t, 1),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--triggers", default="tone,noise,chirp")
    ap.add_argument("--rates", default="0.25,0.5,0.10")
    a = ap.parse_args()
    print(json.dumps(run(a.classes, a.seed, "clean", 0.0)), flush=True)
    for rate in map(float, a.rates.split(",")):
        for trigger in a.triggers.split(","):
            print(json.dumps(run(a.classes, a.seed, trigger, rate)), flush=True)


if __name__ == "__main__":
    main()
