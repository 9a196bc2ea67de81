"""Gateway stream detectors on long benign streams: 10,000 queries from one key.

The detection benchmarks feed 1,000-query benign streams; a key of a real deployment
sends far more. Counts over a key's remembered queries grow with the stream (more
earlier inputs a new one can resemble), so since session 4 the similarity count that
meets ``min_neighbours`` is taken over the last ``similarity.window`` queries and
Blacklight seeks matches among its last ``history`` (both 1,000: the length of
``gateway calibrate``'s benign streams), while ``long_neighbours`` (set by calibrate,
extrapolated from pairwise counts) bars the whole 10,000-query history.

Fed in-process to ``Monitor`` (as ``mlwarden serve`` runs it after parsing a request),
one key per stream, at the default ``detection:`` config and after ``gateway calibrate``
on inputs the streams do not contain (digits: 1,000 plain digits, which the shifted
stream does contain; only 1,797 exist). Input kinds:

* **digits+shifts**: the 1,797 scikit-learn digits and their four one-pixel shifts
  (8,985 distinct inputs, shuffled), then mixtures ``w a + (1 - w) b``;
* **images**: the 5,000 bundled MNIST digits padded to 3x32x32 and tinted
  (``gateway_detection_modalities.images``), then mixtures;
* **tabular**: synthetic rows of 20 features (``make_classification``, min-max);
* **audio**: 1 s clips of the Asterisk English prompts (``input.modality: audio``): a
  random recording, offset and gain each (:func:`_speech`); drawn with replacement from
  the whole-second windows; calibrated on 1,000 other clips drawn as the stream is (the
  user's own traffic; ``MLW_AUDIO_CALIB=windows``: on 400 whole-second windows, as
  until session 5);
* **text**: the bundled tweets (``input.modality: text``, MinHash features).

Benign streams of 10,000 queries: distinct inputs; inputs drawn with replacement from
the kind's data (exact repeats reach no detector); drawn with replacement plus
N(0, 0.01 of the range) (text: one typo each); ``few``: 100 inputs drawn with
replacement plus fresh N(0, 0.01) noise (a typo), each resent ~100 times. Reported: flagged queries per 1,000 over
all 10,000 and in the last 1,000 (a key with a full history).

Attacks, each after 2,000 benign queries of the same key: the noisy random search of
issue 19 (``gateway_detection_modalities.attack``: Square's search with fresh N(0,
sigma) noise a query, sigma 0 / 0.01 / 0.05 of the range; text: a random word search
with a fresh typo a query, ``gateway_detection_text.model_search``) on 5 held-out
inputs, 300 queries each; and the sigma-0.05 search interleaved with distinct benign
queries of the same key, 1:1 and 1:4 (the literature's adaptive attacker who mixes in
benign traffic; pacing in time changes nothing, the detectors count queries) and
diluted 1:50 (below ``min_neighbours`` per window: only ``long_neighbours`` can see
it). Reported: the attack's own query at which the key is first flagged (None: not
within 300).

Run (about 15 minutes on the loaded 2-core box)::

    OMP_NUM_THREADS=1 timeout 2400 nice -n 10 .venv/bin/python \\
        benchmarks/gateway_detection_long.py --out long.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).parent))
from gateway_detection_modalities import attack, audio, images  # noqa: E402
from gateway_load import _distinct_inputs, _load_inputs  # noqa: E402
from mlwarden.core.data import load_dataset  # noqa: E402
from mlwarden.serve.calibrate import calibrate  # noqa: E402
from mlwarden.serve.config import Detection, GatewayConfig  # noqa: E402
from mlwarden.serve.monitor import Monitor  # noqa: E402

SEED = 0
N = 10_000
WARM = 2_000
BUDGET = 300
CALIB_AUDIO = 1000  # clips the audio calibration sees (as many as its benign stream)
POOL = WARM + 1000 + 50 * BUDGET + 100  # the diluted search's benign queries too


@dataclass
class Kind:
    """One input kind: its stream pool, data, calibration inputs, model and attack seeds."""

    pool: Any  # distinct inputs, in stream order (texts: a list)
    data: Any  # natural inputs, drawn with replacement
    calib: tuple[Any, np.ndarray]
    model: Any
    seeds: list[tuple[Any, int]]
    bounds: tuple[float, float] = (0.0, 1.0)
    modality: str = "tensor"
    natural: int = 0  # how many of the pool are not mixtures

    def config(self) -> GatewayConfig:
        if self.modality == "text":
            return GatewayConfig.model_validate({"input": {"modality": "text"}})
        inp = {"modality": self.modality, "shape": list(self.pool.shape[1:]),
               "range": list(self.bounds)}  # fmt: skip
        return GatewayConfig.model_validate({"input": inp})

    def monitor(self, det: Detection) -> Monitor:
        if self.modality == "text":
            return Monitor(det, scale=1.0, modality="text")
        span = self.bounds[1] - self.bounds[0]
        return Monitor(det, shape=list(self.pool.shape[1:]), scale=span, modality=self.modality)

    def feats(self, det: Detection, xs: Any) -> np.ndarray:
        """What the gateway hands its detectors (texts: MinHash features at ``det``'s near)."""
        if self.modality != "text":
            return np.asarray(xs, dtype=np.float32)
        from mlwarden.serve.text import text_features

        arr = np.empty(len(xs), dtype=object)
        arr[:] = list(xs)
        s = det.similarity
        return text_features(arr, s.max_dims, s.radius, s.near)

    def answers(self, det: Detection, xs: Any) -> np.ndarray | None:
        """The model's scores for ``xs`` (N, classes) when ``det`` reads them
        (``answers.spread``, serve/answers.py; the gateway passes every request's), else None."""
        if not det.answers.spread:
            return None
        inp = list(xs) if self.modality == "text" else np.asarray(xs).reshape(len(xs), -1)
        model = self.model
        return np.asarray(model.predict_proba(inp) if hasattr(model, "predict_proba")
                          else model.proba(np.asarray(inp, dtype=np.float32)))  # fmt: skip

    def labels(self, xs: Any) -> np.ndarray:
        if self.modality == "text":
            return np.asarray(self.model.predict(list(xs)))
        xs = np.asarray(xs)
        return np.asarray(self.model.predict(xs.reshape(len(xs), -1)))


def _split(x: np.ndarray, y: np.ndarray, calib: int) -> tuple[np.ndarray, ...]:
    """Shuffled train (a third) / calibration (``calib``) / rest indices."""
    idx = np.random.default_rng(SEED).permutation(len(x))
    t = len(x) // 3
    return idx[:t], idx[t : t + calib], idx[t + calib :]


def _tensor_kind(x: np.ndarray, y: np.ndarray, bounds: tuple[float, float], modality: str,
                 calib: int, pool: np.ndarray | None = None) -> Kind:  # fmt: skip
    tr, ca, rest = _split(x, y, calib)
    model = LogisticRegression(max_iter=500).fit(x[tr].reshape(len(tr), -1), y[tr])
    base = x[rest] if pool is None else pool
    return Kind(_load_inputs(base, POOL), x, (x[ca], y[ca]), model,
                [(x[i], int(y[i])) for i in rest[-5:]], bounds, modality, min(len(base), POOL))  # fmt: skip


def kinds(only: set[str] | None) -> dict[str, Kind]:
    out: dict[str, Kind] = {}
    want = lambda name: only is None or name in only  # noqa: E731
    if want("digits+shifts"):
        ds = load_dataset("digits")
        x = ds.x.astype(np.float32)
        shifted = _distinct_inputs(x)
        shifted = shifted[np.random.default_rng(SEED).permutation(len(shifted))]
        out["digits+shifts"] = _tensor_kind(x, ds.y, (0.0, 1.0), "tensor", 1000, shifted)
    if want("images"):
        im, yim, bounds = images()
        out["images"] = _tensor_kind(im, yim, bounds, "tensor", 2000)
    if want("tabular"):
        xt, yt = make_classification(POOL + 5000, 20, n_informative=6, n_redundant=6,
                                     random_state=SEED)  # fmt: skip
        xt = ((xt - xt.min(axis=0)) / (xt.max(axis=0) - xt.min(axis=0))).astype(np.float32)
        out["tabular"] = _tensor_kind(xt, yt, (0.0, 1.0), "tensor", 2000)
    if want("audio"):
        au = audio()
        if au is not None:
            kind = _tensor_kind(au[0], au[1], au[2], "audio", 400, _speech(POOL))
            # calibrate on the user's kind of traffic: clips drawn as the stream is (other
            # draws), labelled by the model. Whole-second windows at fixed offsets (until
            # session 5) never overlapped, so calibration never saw two calls share speech.
            if os.environ.get("MLW_AUDIO_CALIB") != "windows":  # the old way, to compare
                calib = _speech(CALIB_AUDIO, SEED + 6)
                kind.calib = (calib, kind.labels(calib))
            out["audio"] = kind
        else:
            print("audio: skipped (the Asterisk prompts are not in the cache)")
    if want("text"):
        out["text"] = _text_kind()
    return out


def _speech(n: int, seed: int = SEED + 5) -> np.ndarray:
    """``n`` distinct 1 s clips of the Asterisk prompts: a random file (of 1 s or more),
    a random offset (any sample), a random gain (0.25-1: callers' levels, -12 to 0 dB).

    568 recordings, 1,529 s: 10,000 windows overlap others of the same file, but no two
    start within a few milliseconds at one gain, as distinct calls of the same prompts.
    (Until session 5 the pool held the ~410 whole-second windows and then mixtures of
    two, which shared syllables: not benign traffic anyone sends.)
    """
    from gateway_detection_modalities import _wav
    from mlwarden.core.audio_samples import cache_dir

    files = sorted(cache_dir().glob("asterisk-core-sounds-en-wav/**/*.wav"))
    clips = [c for c in (_wav(f) for f in files) if len(c) >= 8000]
    rng = np.random.default_rng(seed)
    which = rng.integers(0, len(clips), n)
    out = np.empty((n, 1, 8000), dtype=np.float32)
    for i, c in enumerate(which.tolist()):
        start = int(rng.integers(0, len(clips[c]) - 7999))
        out[i, 0] = clips[c][start : start + 8000] * rng.uniform(0.25, 1.0)
    return out


def _text_kind() -> Kind:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline

    ds = load_dataset("tweets")
    idx = np.random.default_rng(SEED).permutation(len(ds.x))
    texts, y = [str(t) for t in ds.x[idx]], np.asarray(ds.y)[idx]
    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), min_df=2),
                          LogisticRegression(max_iter=1000)).fit(texts[:10000], y[:10000])  # fmt: skip
    pool = list(dict.fromkeys(t for t in texts[12000:] if t.strip()))  # distinct texts
    seeds = [(t, int(c)) for t, c in zip(texts[-2000:], y[-2000:], strict=True)
             if len(t.split()) >= 8][:5]  # fmt: skip
    calib = (np.asarray(texts[10000:12000], dtype=object), y[10000:12000])
    return Kind(pool[:POOL], pool, calib, model, seeds, (0.0, 1.0), "text", min(len(pool), POOL))


FEW = 100  # inputs of the "few" stream: each resent ~100 times in 10,000 queries


def benign_streams(kind: Kind, n: int) -> dict[str, Any]:
    """Distinct, drawn with replacement, with replacement plus small noise (text: a
    typo), and ``few``: ``FEW`` inputs drawn with replacement, each time with fresh
    noise (a client resending a few inputs many times: test-time augmentation, retries
    of a noisy sensor)."""
    rng = np.random.default_rng(SEED + 3)
    draws = rng.integers(0, len(kind.data), n)
    if kind.modality == "text":
        from mlwarden.serve.text import typo

        rep = [kind.data[i] for i in draws]
        out = {"distinct": kind.pool[:n], "replacement": rep,
               "noise": [typo(t, rng) for t in rep]}  # fmt: skip
        few = rng.choice(len(kind.data), FEW, replace=False)[rng.integers(0, FEW, n)]
        return out | {"few": [typo(kind.data[i], rng) for i in few]}
    lo, hi = kind.bounds
    out = {"distinct": kind.pool[:n], "replacement": kind.data[draws].astype(np.float32)}
    # the noise stream first: its draws as before the few stream was added
    for name in ("noise", "few"):
        if name == "few":
            draws = rng.choice(len(kind.data), FEW, replace=False)[rng.integers(0, FEW, n)]
        rep = kind.data[draws].astype(np.float32)
        noisy = np.clip(rep + rng.normal(0, 0.01 * (hi - lo), rep.shape), lo, hi)
        out[name] = noisy.astype(np.float32)
    return out


def flagged(kind: Kind, det: Detection, xs: Any) -> dict[str, Any]:
    """Flagged queries per 1,000 (any detector and per detector), overall and in the last 1,000."""
    mon = kind.monitor(det)
    feats, labels, probs = kind.feats(det, xs), kind.labels(xs), kind.answers(det, xs)
    names = ("any", "blacklight", "similarity", "prada", "dilution", "residual")
    hits = {k: np.zeros(len(feats), dtype=bool) for k in names}
    for i in range(len(feats)):
        found = mon.inspect("benign", feats[i : i + 1], labels[i : i + 1], row(probs, i))
        hits["any"][i] = bool(found)
        for k in found:
            hits[k][i] = True
    per = 1000 / len(feats)
    return {k: {"per_1000": round(float(v.sum()) * per, 1), "last_1000": int(v[-1000:].sum())}
            for k, v in hits.items() if k == "any" or v.any()}  # fmt: skip


def row(probs: np.ndarray | None, i: int) -> np.ndarray | None:
    """Row ``i`` of ``probs`` as a batch of one (None stays None)."""
    return None if probs is None else probs[i : i + 1]


class _Recorder:
    """A monitor stand-in that flags nothing and keeps what the attack sent."""

    def __init__(self) -> None:
        self.sent: list[np.ndarray] = []

    def inspect(self, key: str, x: np.ndarray, labels: np.ndarray,
                probs: np.ndarray | None = None) -> dict[str, list[int]]:  # fmt: skip
        self.sent.append(x[0])
        return {}


def search(kind: Kind, x0: Any, y0: int, sigma: float, seed: int) -> Any:
    """The 300 queries of one adaptive search (it keeps a step when the true class's score drops)."""
    if kind.modality == "text":
        from gateway_detection_text import model_search

        vocab = sorted({w for t in kind.data[:5000] for w in t.split() if w.isalpha()})
        return model_search(kind.model, x0, y0, vocab, BUDGET, seed)
    rec = _Recorder()
    attack(rec, "k", kind.model, x0, y0, kind.bounds, sigma, BUDGET, seed)  # type: ignore[arg-type]
    return np.stack(rec.sent)


def first_flag(kind: Kind, det: Detection, queries: Any, benign: tuple[np.ndarray, np.ndarray],
               every: int) -> int | None:  # fmt: skip
    """After ``WARM`` benign queries, the attack's own query at which the key is first
    flagged, with ``every`` distinct benign queries (features, labels) before each."""
    mon = kind.monitor(det)
    bf, bl = benign
    af, al = kind.feats(det, queries), kind.labels(queries)
    # the answers to the benign rows (features are the rows themselves but on text)
    bp, ap = kind.answers(det, bf), kind.answers(det, queries)
    for j in range(WARM):
        mon.inspect("k", bf[j : j + 1], bl[j : j + 1], row(bp, j))
    b = WARM
    for i in range(len(af)):
        for _ in range(every):
            mon.inspect("k", bf[b : b + 1], bl[b : b + 1], row(bp, b))
            b += 1
        if mon.inspect("k", af[i : i + 1], al[i : i + 1], row(ap, i)):
            return i + 1
    return None


def attack_benign(kind: Kind, det: Detection) -> tuple[Any, Any]:
    """The benign queries an attack is mixed with (features, labels): the pool's first
    ``WARM``, then those after the first ``WARM + 1,000`` (held out for calibration)."""
    pool = kind.pool
    stream = (
        pool[:WARM] + pool[WARM + 1000 :]
        if kind.modality == "text"
        else np.concatenate([pool[:WARM], pool[WARM + 1000 :]])
    )
    return kind.feats(det, stream), kind.labels(stream)


def attacks(kind: Kind, det: Detection, plans: dict[str, tuple[float, int, int]],
            cache: dict[tuple[float, int], Any]) -> dict[str, list[int | None]]:  # fmt: skip
    """First flags per plan name -> (sigma, every, runs). The benign queries: the pool's
    first ``WARM``, then (interleaved) those after the first ``WARM + 1,000``."""
    benign = attack_benign(kind, det)
    out: dict[str, list[int | None]] = {}
    for name, (sigma, every, runs) in plans.items():
        flags = []
        for i in range(runs):
            if (sigma, i) not in cache:
                x0, y0 = kind.seeds[i]
                cache[sigma, i] = search(kind, x0, y0, sigma, seed=i)
            flags.append(first_flag(kind, det, cache[sigma, i], benign, every))
        out[name] = flags
    return out


PLANS = {
    "sigma0": (0.0, 0, 5),
    "sigma0.01": (0.01, 0, 5),
    "sigma0.05": (0.05, 0, 5),
    "sigma0.05 1:1": (0.05, 1, 5),
    "sigma0.05 1:4": (0.05, 4, 5),
    "sigma0.05 1:50": (0.05, 50, 3),
}


def _calibrated(kind: Kind, stationary: bool | None = None) -> tuple[Detection, dict[str, Any]]:
    """``gateway calibrate`` on the kind's calibration inputs (``stationary``: the
    ``similarity.stationary`` it calibrates under; None: the modality's default)."""
    x, y = kind.calib
    config = kind.config()
    config.detection.similarity.stationary = stationary
    result = calibrate(config, x, y, seed=SEED)
    summary = result.summary()
    summary.pop("tried")
    return result.detection, summary


def run_kind(name: str, kind: Kind, configs: tuple[str, ...] = ("default", "calibrated"),
             plans: dict[str, tuple[float, int, int]] = PLANS) -> dict[str, Any]:  # fmt: skip
    t0 = time.time()
    det_cal, summary = _calibrated(kind)
    row: dict[str, Any] = {"natural_inputs_in_pool": kind.natural, "calibration": summary}
    streams = benign_streams(kind, N)
    if kind.modality == "text":  # one search (word edits with a typo) stands for the sigmas
        plans = {k.replace("sigma0.05", "word search"): v for k, v in plans.items()
                 if k.startswith("sigma0.05")}  # fmt: skip
    cache: dict[tuple[float, int], Any] = {}  # the searches do not depend on the detectors
    for label, det in (("default", Detection()), ("calibrated", det_cal)):
        if label not in configs:
            continue
        row[label] = {
            "benign": {s: flagged(kind, det, xs) for s, xs in streams.items()},
            "attacks": attacks(kind, det, plans, cache),
        }
        print(f"{name} {label}: {json.dumps(row[label])}", flush=True)
    row["seconds"] = round(time.time() - t0)
    print(f"{name} calibration: {json.dumps(summary)}", flush=True)
    return row


def table(results: dict[str, Any]) -> None:
    """The markdown rows of ``docs/benchmarks/gateway.md``."""
    print("\n| input | config | benign flagged per 1,000 (distinct / replacement / noise / few; "
          "last 1,000 of distinct) | search first flagged (sigma 0 / 0.01 / 0.05) | "
          "interleaved 1:1 / 1:4 / 1:50 |")  # fmt: skip
    print("|---|---|---|---|---|")
    for name, r in results.items():
        for label in ("default", "calibrated"):
            if label not in r:
                continue
            b, a = r[label]["benign"], r[label]["attacks"]
            ben = " / ".join(f"{b[s]['any']['per_1000']:g}" for s in ("distinct", "replacement",
                                                                      "noise", "few") if s in b)  # fmt: skip
            ben += f"; {b['distinct']['any']['last_1000']}"
            keys = list(a)
            first = [k for k in keys if ":" not in k]
            mixed = [k for k in keys if ":" in k]
            print(f"| {name} | {label} | {ben} | {' / '.join(str(a[k]) for k in first)} | "
                  f"{' / '.join(str(a[k]) for k in mixed)} |")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--only", help="comma-separated kinds (digits+shifts,images,tabular,audio,text)"
    )
    ap.add_argument("--out", type=Path)
    ap.add_argument(
        "--configs",
        default="default,calibrated",
        help="comma-separated: default, calibrated (a subset while iterating)",
    )
    ap.add_argument("--plans", help=f"comma-separated attack plans of {list(PLANS)}")
    args = ap.parse_args()
    only = set(args.only.split(",")) if args.only else None
    configs = tuple(args.configs.split(","))
    plans = {k: PLANS[k] for k in args.plans.split(",")} if args.plans else PLANS
    results = {name: run_kind(name, kind, configs, plans) for name, kind in kinds(only).items()}
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    table(results)


if __name__ == "__main__":
    main()
