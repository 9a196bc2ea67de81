"""Gateway stream detectors on text: defaults against ``gateway calibrate`` (issue 19b).

Data: the bundled labelled tweets (``tweets``, 38,158; negative / neutral / positive).
Model: TF-IDF (words and bigrams) + logistic regression on 10,000 tweets. Calibration:
``mlwarden.serve.calibrate.calibrate`` with ``input.modality: text`` on 2,000 other
tweets (with their labels). Measured on 2,000 held-out tweets, one key per stream,
exactly as the gateway feeds its detectors (``text_features`` with the config's
``near``, the model's predicted classes for PRADA):

* **benign**: 1,000 queries each of distinct tweets, tweets drawn with replacement, and
  drawn with replacement with one typo each (a character swap, deletion, insertion or
  substitution); reported: flagged queries per 1,000;
* **word search**: a random word-substitution search on one tweet (at most a quarter of
  its words changed; a step is kept when the model's score for the true class drops)
  with a fresh typo on every query (the text counterpart of per-query noise), 300
  queries on each of 5 tweets; reported: the query at which the key is first flagged;
* **our text attack**: the query stream of ``attack_texts`` (recipe ``combined``:
  WordNet synonyms and character edits, at most 20% of the words, 300 queries a tweet)
  on each of 5 tweets, replayed through the monitor; reported: the first flag and the
  queries the attack needed to succeed (``-``: it did not within 300).

Run (a few minutes on the loaded 2-core box)::

    OMP_NUM_THREADS=1 timeout 1200 nice -n 10 .venv/bin/python benchmarks/gateway_detection_text.py
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from mlwarden.serve.config import Detection, GatewayConfig
from mlwarden.serve.monitor import Monitor
from mlwarden.serve.text import text_features, typo, word_step

SEED = 0


def _feats(det: Detection, texts: list[str]) -> np.ndarray:
    arr = np.empty(len(texts), dtype=object)
    arr[:] = texts
    sim = det.similarity
    return text_features(arr, sim.max_dims, sim.radius, sim.near)


def _first(det: Detection, model: Any, queries: list[str]) -> str | None:
    mon = Monitor(det, scale=1.0, modality="text")
    feats, labels = _feats(det, queries), model.predict(queries)
    for i in range(len(queries)):
        found = mon.inspect("atk", feats[i : i + 1], labels[i : i + 1])
        if found:
            return f"{i + 1} {'+'.join(sorted(found))}"
    return None


def model_search(model: Any, text: str, label: int, vocab: list[str], queries: int,
                 seed: int) -> list[str]:  # fmt: skip
    """Random word substitution kept when the true class's score drops; a fresh typo a query."""
    rng = np.random.default_rng(seed)
    original = text.split(" ")
    limit = max(1, len(original) // 4)
    current, best, out = list(original), np.inf, []
    for _ in range(queries):
        cand = word_step(current, original, limit, vocab, rng)
        query = typo(" ".join(cand), rng)
        out.append(query)
        score = float(model.predict_proba([query])[0, label])
        if score < best:
            best, current = score, cand
    return out


def attack_stream(model: Any, text: str, label: int, budget: int) -> tuple[list[str], int | None]:
    """The texts ``attack_texts`` sends for one tweet, and the queries it needed (None: failed)."""
    from mlwarden.core.text_target import CallableTextTarget
    from mlwarden.evasion.text.attack import attack_texts

    sent: list[str] = []

    def fn(texts: list[str]) -> np.ndarray:
        sent.extend(texts)
        return np.asarray(model.predict_proba(texts))

    res = attack_texts(CallableTextTarget(fn, output="probabilities"), [text], [label],
                       recipe="combined", max_queries=budget)  # fmt: skip
    return sent, int(res.queries[0]) if bool(res.success[0]) else None


def evaluate(det: Detection, model: Any, held: list[str], y_held: np.ndarray, n_benign: int,
             budget: int, n_attacks: int) -> dict[str, Any]:  # fmt: skip
    rng = np.random.default_rng(SEED + 1)
    draws = rng.integers(0, len(held), n_benign)
    streams = {"distinct": held[:n_benign], "replacement": [held[i] for i in draws],
               "typos": [typo(held[i], rng) for i in draws]}  # fmt: skip
    out: dict[str, Any] = {}
    for name, texts in streams.items():
        mon = Monitor(det, scale=1.0, modality="text")
        feats, labels = _feats(det, texts), model.predict(texts)
        counts = {"any": 0, "blacklight": 0, "similarity": 0, "prada": 0}
        for i in range(len(texts)):
            found = mon.inspect(name, feats[i : i + 1], labels[i : i + 1])
            counts["any"] += bool(found)
            for kind in found:
                counts[kind] += 1
        out[f"benign_{name}"] = {"queries": len(texts), **counts}
    vocab = sorted({w for t in held for w in t.split() if w.isalpha()})
    seeds = [i for i, t in enumerate(held) if len(t.split()) >= 8][:n_attacks]
    out["word_search"] = [
        _first(det, model, model_search(model, held[i], int(y_held[i]), vocab, budget, seed=k))
        for k, i in enumerate(seeds)
    ]
    runs = [attack_stream(model, held[i], int(y_held[i]), budget) for i in seeds]
    out["text_attack"] = [
        {"first_flag": _first(det, model, qs), "queries": len(qs), "succeeded_at": at}
        for qs, at in runs
    ]
    return out


def main() -> None:
    from mlwarden.core.data import load_dataset
    from mlwarden.serve.calibrate import calibrate

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--benign", type=int, default=1000)
    ap.add_argument("--attack-budget", type=int, default=300)
    ap.add_argument("--attacks", type=int, default=5)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    ds = load_dataset("tweets")
    idx = np.random.default_rng(SEED).permutation(len(ds.x))
    texts, y = [str(t) for t in ds.x[idx]], np.asarray(ds.y)[idx]
    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), min_df=2),
                          LogisticRegression(max_iter=1000)).fit(texts[:10000], y[:10000])  # fmt: skip
    fit, held = slice(10000, 12000), slice(12000, 14000)
    cfg = GatewayConfig.model_validate({"input": {"modality": "text"}})
    result = calibrate(cfg, np.asarray(texts[fit], dtype=object), y[fit], benign=args.benign)
    summary = result.summary()
    summary.pop("tried")
    out = {"calibration": summary}
    for name, det in (("default", Detection()), ("calibrated", result.detection)):
        out[name] = evaluate(det, model, texts[held], y[held], args.benign, args.attack_budget,
                             args.attacks)  # fmt: skip
        print(f"{name}: {json.dumps(out[name])}", flush=True)
    print(f"calibration: {json.dumps(summary)}")
    if args.out:
        args.out.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
