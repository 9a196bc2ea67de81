"""The data audit on poisoned audio: the calibrated ``suspicious`` list with and without
the band-energy detectors (``poisoning/audio_features.py``).

For every (trigger, SNR, rate, seed): 600 synthetic harmonic sounds of 6 classes, 0.2 s
at 8 kHz (:func:`mlwarden.core.audio_samples.harmonic_sounds`), a 0.1 s tone, chirp or
noise burst added ``--snr`` dB below the chosen clips, which are relabelled to class
``seed % 6`` (all-to-one), a log-mel classifier
(:class:`~mlwarden.evasion.audio.models.MelClassifier`, 20 epochs of Adam) trained on
them, then ``data_report(..., model=...)`` twice: as shipped, and with the band-energy
detectors switched off (the model's penultimate layer alone, as before). ``clean``
audits the unpoisoned set (every listed clip is a false alarm). Prints one JSON line per
case: list size, precision, recall and F1 against the true poison for both runs.

Run (about 15 minutes per seed on a loaded 2-core box)::

    timeout 3600 nice -n 10 .venv/bin/python benchmarks/audio_data_audit.py \\
        --triggers tone,chirp,noise,clean --snr 10,20 --rates 0.05,0.10,0.25 --seeds 0,1
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings

import numpy as np
import torch

import audio_matrix
from mlwarden.core.audio_samples import harmonic_sounds
from mlwarden.core.data import Dataset
from mlwarden.poisoning import assess
from mlwarden.poisoning import detect_data as dd
from mlwarden.poisoning.simulate import audio_backdoor

RATE, SAMPLES, CLASSES, CLIPS = 8000, 1600, 6, 600


def _listed(ds: Dataset, model: torch.nn.Module, truth: np.ndarray, nc: int, seed: int):
    report = assess.data_report(ds, model=model, neural_cleanse_epochs=nc, seed=seed)
    flags = np.zeros(len(truth), dtype=bool)
    flags[[r["index"] for r in report.suspicious]] = True
    m = dd.flag_metrics(flags, truth)
    return {k: m[k] for k in ("flagged", "precision", "tpr", "f1")}


def case(trigger: str, snr: float, rate: float, seed: int, nc: int) -> dict:
    """One poisoned (or clean) set, its model, and the audit with and without bands."""
    x, y = harmonic_sounds(CLIPS, CLASSES, seed=seed, sample_rate=RATE, samples=SAMPLES)
    ds = Dataset(x=x, y=y, modality="audio", bounds=(-1.0, 1.0), sample_rate=RATE)
    truth = np.zeros(len(y), dtype=bool)
    if trigger != "clean":
        p = audio_backdoor(ds, rate, target=seed % CLASSES, kind=trigger, snr_db=snr, seed=seed)
        ds, truth = p.dataset, p.is_poison
    audio_matrix.CLASSES = CLASSES
    model = audio_matrix.model(ds.x, ds.y, seed)
    t0 = time.perf_counter()
    ours = _listed(ds, model, truth, nc, seed)
    shipped = assess._band_detectors
    cross_input = assess._cross_class_input
    assess._band_detectors = lambda *a: (None, None)  # the model's layer alone
    assess._cross_class_input = lambda report, ds: ds.x  # cross-class on the samples
    try:
        alone = _listed(ds, model, truth, nc, seed)
    finally:
        assess._band_detectors = shipped
        assess._cross_class_input = cross_input
    return {
        "trigger": trigger,
        "snr_db": snr,
        "rate": rate,
        "seed": seed,
        "poison": int(truth.sum()),
        "with_bands": ours,
        "penultimate_only": alone,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--triggers", default="tone,chirp,noise,clean")
    ap.add_argument("--snr", default="10,20")
    ap.add_argument("--rates", default="0.05,0.10,0.25")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--nc-epochs", type=int, default=0, help="Neural Cleanse (0 skips it)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    for seed in (int(s) for s in args.seeds.split(",")):
        for trigger in args.triggers.split(","):
            snrs = [0.0] if trigger == "clean" else [float(s) for s in args.snr.split(",")]
            rates = [0.0] if trigger == "clean" else [float(r) for r in args.rates.split(",")]
            for snr in snrs:
                for rate in rates:
                    print(json.dumps(case(trigger, snr, rate, seed, args.nc_epochs)), flush=True)


if __name__ == "__main__":
    main()
