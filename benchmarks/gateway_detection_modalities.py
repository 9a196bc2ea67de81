"""Gateway stream detectors beyond 8x8 digits: images 3x32x32, tabular rows, audio clips.

The detectors (Blacklight, similarity, PRADA; ``mlwarden.serve.monitor.Monitor`` at the
default ``detection:`` config, exactly as ``mlwarden serve`` runs them after parsing a
request) are fed, per modality, in-process (no HTTP: the detection does not depend on
the transport, and the gateway benchmark covers that):

* **attack**: the adaptive attack of issue 19, a random search with fresh Gaussian
  noise on every query (Square's search, Andriushchenko et al. 2020, arXiv:1912.00049,
  plus the per-query noise of Feng et al., CCS 2023, arXiv:2303.06280): each step sets
  a random block of the perturbation to +-``eps`` (0.1 of the input range) and keeps it
  when a real model's score for the true class drops; every query adds N(0, sigma) with
  sigma 0.05 of the range (also 0.01 and 0.10: bounds). 300 queries on each of 5 inputs,
  one key each; reported: the query at which the key is first flagged.
* **benign**: 1,000 queries of one key each, distinct inputs, inputs drawn with
  replacement, and drawn with replacement plus N(0, 0.02 of the range); reported:
  flagged queries per 1,000.
* **resend with noise**: one input sent 60 times with fresh N(0, 0.02) noise (a
  test-time-augmentation client), without and with a ``near_duplicates: 1000``
  allowance.

Data and models (all local, nothing downloaded at run time):

* image 3x32x32: the 5,000 bundled MNIST digits padded to 32x32 and tinted with a
  per-image random colour (3 channels), logistic regression on the pixels;
* tabular: scikit-learn's breast-cancer rows (30 features) min-max scaled to [0, 1],
  logistic regression; a second table: 1,000 synthetic rows of 20 features
  (``make_classification``: 6 informative, 6 redundant), min-max scaled;
* audio: 1 s windows (8,000 samples at 8 kHz) of the Asterisk English prompts
  (recorded speech; ``mlwarden.core.audio_samples``, fetched by ``make test-data``),
  range [-1, 1], logistic regression on loud vs quiet windows (median RMS split). The
  audio part is skipped when the prompts are not in the cache.

Since issue 19b each input kind is also calibrated with ``gateway calibrate`` on one
half of the pool and evaluated on the other half (``calibrated`` in the output); audio
runs with ``input.modality: audio`` (the log-energy envelope summary). When the
calibration measures similarity along principal axes (tables), the held-out half is
also attacked by an adaptive search that puts the same noise energy (sigma 0.05 per
value) on those axes only (``attack_subspace_sigma0.05``).

Run (a few minutes on the loaded 2-core box)::

    timeout 1200 nice -n 10 .venv/bin/python benchmarks/gateway_detection_modalities.py
"""

from __future__ import annotations

import argparse
import json
import math
import wave
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

from mlwarden.serve.config import Detection
from mlwarden.serve.monitor import Monitor

SEED = 0


def images() -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    from mlwarden.core.data import load_dataset

    ds = load_dataset("mnist5k")
    x = ds.x.reshape(len(ds.x), 28, 28)
    rng = np.random.default_rng(SEED)
    padded = np.zeros((len(x), 32, 32), dtype=np.float32)
    padded[:, 2:30, 2:30] = x
    tint = rng.uniform(0.3, 1.0, (len(x), 3, 1, 1)).astype(np.float32)
    return padded[:, None] * tint, ds.y, (0.0, 1.0)


def tabular() -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    lo, hi = d.data.min(axis=0), d.data.max(axis=0)
    return ((d.data - lo) / (hi - lo)).astype(np.float32), d.target, (0.0, 1.0)


def synthetic() -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """A second table: 1,000 rows of 20 features (6 informative, 6 redundant), min-max."""
    from sklearn.datasets import make_classification

    x, y = make_classification(1000, 20, n_informative=6, n_redundant=6, random_state=SEED)
    lo, hi = x.min(axis=0), x.max(axis=0)
    return ((x - lo) / (hi - lo)).astype(np.float32), y, (0.0, 1.0)


def _wav(path: Path) -> np.ndarray:
    """A 16-bit PCM WAV file as float32 in [-1, 1] (the stdlib reader: these are plain PCM)."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2 or w.getframerate() != 8000:
            return np.zeros(0, dtype=np.float32)
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return pcm.reshape(-1, w.getnchannels())[:, 0].astype(np.float32) / 32768.0


def audio() -> tuple[np.ndarray, np.ndarray, tuple[float, float]] | None:
    from mlwarden.core.audio_samples import cache_dir

    files = sorted(cache_dir().glob("asterisk-core-sounds-en-wav/**/*.wav"))
    if len(files) < 100:
        return None
    windows = []
    for f in files:
        clip = _wav(f)
        windows += [clip[s : s + 8000] for s in range(0, len(clip) - 7999, 8000)]
    x = np.stack(windows)[:, None, :]
    rms = np.sqrt((x**2).mean(axis=(1, 2)))
    return x, (rms > np.median(rms)).astype(np.int64), (-1.0, 1.0)


def _block(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[slice, ...]:
    """A random block to perturb: 4x4 across channels, one feature, or 80 samples."""
    if len(shape) == 3 and shape[1] > 1:
        r, c = rng.integers(0, shape[1] - 4), rng.integers(0, shape[2] - 4)
        return (slice(None), slice(r, r + 4), slice(c, c + 4))
    if len(shape) == 1:
        i = int(rng.integers(0, shape[0]))
        return (slice(i, i + 1),)
    s = int(rng.integers(0, shape[-1] - 80))
    return (*([slice(None)] * (len(shape) - 1)), slice(s, s + 80))


def _noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float,
           axes: np.ndarray | None) -> np.ndarray:  # fmt: skip
    """N(0, sigma) per value, or (``axes``: k x d, orthonormal) the same total energy put
    on those k axes only: the adaptive attacker who knows the calibrated projection."""
    if axes is None:
        return rng.normal(0, sigma, shape)
    k, d = axes.shape
    z = rng.normal(0, sigma * np.sqrt(d / k), k)
    return (z @ axes).reshape(shape)


def attack(mon: Monitor, key: str, model: Any, x0: np.ndarray, y0: int, bounds: tuple[float, float],
           sigma: float, queries: int, seed: int, axes: np.ndarray | None = None,
           flips: list[int | None] | None = None) -> str | None:  # fmt: skip
    """Noisy random search; the attack query at which ``key`` was first flagged.

    ``flips``: also run on after the flag and append the first query the model
    misclassified (``None``: none within ``queries``).
    """
    lo, hi = bounds
    span = hi - lo
    rng = np.random.default_rng(seed)
    delta, best = np.zeros_like(x0), np.inf
    flag: str | None = None
    flip: int | None = None
    for i in range(queries):
        cand = delta.copy()
        cand[_block(rng, x0.shape)] = rng.choice([-0.1, 0.1]) * span
        noise = _noise(rng, x0.shape, sigma * span, axes)
        q = np.clip(x0 + cand + noise, lo, hi).astype(np.float32)
        probs = model.predict_proba(q.reshape(1, -1))[0]
        label = int(model.classes_[probs.argmax()])
        if flip is None and label != y0:
            flip = i + 1
        found = mon.inspect(key, q[None], np.array([label])) if flag is None else {}
        if found:
            flag = f"{i + 1} {'+'.join(sorted(found))}"
        if flag is not None and (flips is None or flip is not None):
            break
        if probs[y0] < best:
            best, delta = probs[y0], cand
    if flips is not None:
        flips.append(flip)
    return flag


def flagged(mon: Monitor, key: str, model: Any, xs: np.ndarray) -> dict[str, int]:
    """How many of ``xs`` raised an alert, in all and per detector."""
    labels = model.predict(xs.reshape(len(xs), -1))
    out = {"any": 0, "blacklight": 0, "similarity": 0, "prada": 0}
    for i in range(len(xs)):
        found = mon.inspect(key, xs[i : i + 1], labels[i : i + 1])
        out["any"] += bool(found)
        for kind in found:
            out[kind] = out.get(kind, 0) + 1  # crosskey, dilution, residual too
    return out


def evaluate(det: Detection, modality: str, model: Any, x: np.ndarray, y: np.ndarray,
             pool: np.ndarray, bounds: tuple[float, float], n_benign: int, budget: int,
             n_attacks: int) -> dict[str, Any]:  # fmt: skip
    """Attack first flags (sigma 0.01/0.05/0.10) and benign false alarms for ``det``."""
    rng = np.random.default_rng(SEED + 1)
    lo, hi = bounds
    span = hi - lo
    shape = list(x.shape[1:])
    mon = Monitor(det, shape=shape, scale=span, modality=modality)
    out: dict[str, Any] = {}
    for sigma in (0.01, 0.05, 0.10):
        out[f"attack_sigma{sigma:.2f}"] = [
            attack(
                mon,
                f"atk{sigma}-{i}",
                model,
                x[pool[i]],
                int(y[pool[i]]),
                bounds,
                sigma,
                budget,
                seed=i,
            )  # fmt: skip
            for i in range(n_attacks)
        ]
    proj = det.similarity.projection
    if proj is not None and math.prod(shape) <= det.similarity.max_dims:
        axes = np.asarray(proj.components)
        for kind, ax in (("subspace", axes), ("isotropic", None)):
            flips: list[int | None] = []
            out[f"attack_{kind}_sigma0.05"] = [
                attack(
                    mon,
                    f"{kind}-{i}",
                    model,
                    x[pool[i]],
                    int(y[pool[i]]),
                    bounds,
                    0.05,
                    budget,
                    seed=i,
                    axes=ax,
                    flips=flips,
                )  # fmt: skip
                for i in range(n_attacks)
            ]
            out[f"attack_{kind}_sigma0.05_flipped_at"] = flips
    px = x[pool]
    noisy = px[rng.integers(0, len(px), n_benign)] + rng.normal(0, 0.02 * span, (n_benign, *shape))
    streams = {
        "distinct": px[rng.permutation(len(px))[:n_benign]],
        "replacement": px[rng.integers(0, len(px), n_benign)],
        "noise02": np.clip(noisy, lo, hi),
    }
    for kind, xs in streams.items():
        out[f"benign_{kind}"] = {"queries": len(xs),
                                 **flagged(mon, f"benign-{kind}", model, xs.astype(np.float32))}  # fmt: skip
    return out


def calibrated(x: np.ndarray, y: np.ndarray, pool: np.ndarray, bounds: tuple[float, float],
               modality: str, model: Any, n_benign: int, budget: int,
               n_attacks: int) -> dict[str, Any]:  # fmt: skip
    """``gateway calibrate`` on one half of the pool, evaluated on the other half."""
    from mlwarden.serve.calibrate import calibrate
    from mlwarden.serve.config import GatewayConfig

    half = len(pool) // 2
    cfg = GatewayConfig.model_validate(
        {"input": {"modality": modality, "shape": list(x.shape[1:]), "range": list(bounds)}}
    )
    result = calibrate(cfg, x[pool[:half]], y[pool[:half]], benign=n_benign, seed=SEED)
    summary = result.summary()
    summary.pop("tried")
    held = evaluate(result.detection, modality, model, x, y, pool[half:], bounds, n_benign,
                    budget, n_attacks)  # fmt: skip
    return {"calibration": summary, "held_out": held}


def run(name: str, x: np.ndarray, y: np.ndarray, bounds: tuple[float, float],
        n_benign: int, budget: int, n_attacks: int, modality: str = "tensor") -> dict[str, Any]:  # fmt: skip
    rng = np.random.default_rng(SEED)
    idx = rng.permutation(len(x))
    train, pool = idx[: len(x) // 2], idx[len(x) // 2 :]
    model = LogisticRegression(max_iter=500).fit(x[train].reshape(len(train), -1), y[train])
    lo, hi = bounds
    span = hi - lo
    shape = list(x.shape[1:])
    out: dict[str, Any] = {"inputs": shape, "pool": len(pool)}
    out.update(evaluate(Detection(), modality, model, x, y, pool, bounds, n_benign, budget,
                        n_attacks))  # fmt: skip
    mon = Monitor(Detection(), shape=shape, scale=span, modality=modality)
    px = x[pool]
    copies = np.clip(px[0] + rng.normal(0, 0.02 * span, (60, *shape)), lo, hi).astype(np.float32)
    mon.allowances["tta-allowed"] = 1000
    for key in ("tta", "tta-allowed"):
        labels = model.predict(copies.reshape(60, -1))
        flags = [bool(mon.inspect(key, copies[i : i + 1], labels[i : i + 1])) for i in range(60)]
        out[f"resend_noise02_{key}"] = {"flagged": sum(flags),
                                        "first": flags.index(True) + 1 if any(flags) else None}  # fmt: skip
    out["calibrated"] = calibrated(x, y, pool, bounds, modality, model, n_benign, budget, n_attacks)
    print(f"{name}: {json.dumps(out)}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--benign", type=int, default=1000)
    ap.add_argument("--attack-budget", type=int, default=300)
    ap.add_argument("--attacks", type=int, default=5)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--only", help="run one input kind (image, tabular, synthetic, audio)")
    args = ap.parse_args()
    results = {}
    loaders = (("image 3x32x32", images, "tensor"), ("tabular 30", tabular, "tensor"),
               ("tabular synthetic 20", synthetic, "tensor"), ("audio 8000", audio, "audio"))  # fmt: skip
    for name, loader, modality in loaders:
        if args.only and args.only not in name:
            continue
        data = loader()
        if data is None:
            print(f"{name}: skipped (no data in the cache)")
            continue
        results[name] = run(name, *data, args.benign, args.attack_budget, args.attacks, modality)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    print("\n| input | noisy search flagged at query (sigma 0.01 / 0.05 / 0.10) | benign "
          "flagged per 1,000 (distinct / replacement / noise 0.02) | one input resent with "
          "noise: first flag (no allowance / near_duplicates 1000) |")  # fmt: skip
    print("|---|---|---|---|")
    for name, r in results.items():
        att = " / ".join(str(r[f"attack_sigma{s:.2f}"]) for s in (0.01, 0.05, 0.10))
        ben = " / ".join(
            f"{1000 * r[f'benign_{k}']['any'] / r[f'benign_{k}']['queries']:.1f}"
            for k in ("distinct", "replacement", "noise02")
        )
        tta = f"{r['resend_noise02_tta']['first']} / {r['resend_noise02_tta-allowed']['first']}"
        print(f"| {name} | {att} | {ben} | {tta} |")
    print("\ncalibrated (gateway calibrate on half the pool; held-out half):")
    for name, r in results.items():
        c, h = r["calibrated"]["calibration"], r["calibrated"]["held_out"]
        att = " / ".join(str(h[f"attack_sigma{s:.2f}"]) for s in (0.01, 0.05, 0.10))
        ben = " / ".join(
            f"{1000 * h[f'benign_{k}']['any'] / h[f'benign_{k}']['queries']:.1f}"
            for k in ("distinct", "replacement", "noise02")
        )
        sub = h.get("attack_subspace_sigma0.05", "-")
        print(f"| {name} | meets {c['meets']} radius {c['similarity_radius']} axes "
              f"{c['similarity_axes']} bl {c['blacklight']} delta {c['prada_delta']} | {att} | "
              f"{ben} | subspace noise 0.05: {sub} |")  # fmt: skip


if __name__ == "__main__":
    main()
