"""Text poisoning detection on the bundled tweets: the text data audit and the trigger search.

For each trigger (BadNL rare word ``cf`` at a random position, BadNL's sentence at the
end, the word ``mn`` at the start), target class and poison rate, a seeded sample of
``--n`` tweets is poisoned with :func:`mlwarden.poisoning.text_simulate.badnl` and
audited with :func:`mlwarden.poisoning.text_audit.audit_texts`; the trigger rows flagged
are scored against the planted ones (TPR, FPR, and whether anything else was called a
trigger). The clean sample is audited as the control. Then a TF-IDF pipeline is trained
on each poisoned sample and on the clean one and searched with
:func:`mlwarden.poisoning.text_backdoor.search_triggers` on held-out tweets (found or
not, flip rate, queries), next to the ASR of the planted trigger.

``--verdict`` measures the trigger search's verdict instead (backdoor vs natural
shortcut, :mod:`mlwarden.poisoning.text_verdict`): for each seed, a clean model and
models poisoned with ``cf`` (1% of the pipeline's texts, 5% of the BERT's) and with
BadNL's sentence at the end (3% / 5%), TF-IDF pipelines on ``--n`` tweets and tiny BERTs
on 1,500, each searched with 1,000 other labelled tweets as the reference; detection
rate over the poisoned models (the trigger reported shares a word with the planted
one) and false-alarm rate over the clean ones (anything reported).

Example::

    nice -n 10 python benchmarks/text_poisoning.py --n 3000 --out text_poisoning.json
    nice -n 10 python benchmarks/text_poisoning.py --verdict --seeds 0,1,2 --models tfidf,bert
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

TRIGGERS = [("cf", "random"), ("I watched this 3D movie last weekend.", "end"), ("mn", "start")]


def _audit(ds: Any, truth: np.ndarray | None) -> dict[str, Any]:
    from mlwarden.poisoning.detect_data import flag_metrics
    from mlwarden.poisoning.text_audit import audit_texts

    t = time.perf_counter()
    audit = audit_texts(list(ds.x), ds.y)
    flagged = np.zeros(len(ds), dtype=bool)
    for trig in audit.triggers:
        flagged[trig.rows] = True
    row: dict[str, Any] = {
        "seconds": round(time.perf_counter() - t, 1),
        "triggers": [t.ngram for t in audit.triggers],
        "candidates": audit.candidates,
    }
    if truth is not None:
        row |= flag_metrics(flagged, truth)
    return row


def _search(train: Any, test: Any, poisoned: Any | None) -> dict[str, Any]:
    from mlwarden.core.text_target import SklearnTextTarget
    from mlwarden.core.textmodels import tfidf_pipeline
    from mlwarden.poisoning.text_backdoor import search_triggers
    from mlwarden.poisoning.text_simulate import text_asr

    pipe = tfidf_pipeline(train.x, train.y)
    t = time.perf_counter()
    found = search_triggers(SklearnTextTarget(pipe), list(test.x), labels=test.y)
    row = {"seconds": round(time.perf_counter() - t, 1)} | {
        k: v for k, v in found.as_dict().items() if k != "top"
    }
    if poisoned is not None:
        row["asr"] = round(text_asr(pipe, poisoned, test), 3)
    return row


def main() -> None:
    from mlwarden.core.data import load_dataset
    from mlwarden.poisoning.text_simulate import badnl

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3000, help="training tweets per run")
    ap.add_argument("--rates", default="0.005,0.01,0.03")
    ap.add_argument("--targets", default="0,2")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--verdict", action="store_true", help="measure the search's verdict")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--models", default="tfidf,bert")
    args = ap.parse_args()
    if args.verdict:
        _verdicts(args)
        return
    ds = load_dataset("tweets")
    order = np.random.default_rng(args.seed).permutation(len(ds))
    train, test = ds.subset(order[: args.n]), ds.subset(order[args.n : args.n + 400])
    rows: list[dict[str, Any]] = [
        {"case": "clean", "audit": _audit(train, None), "search": _search(train, test, None)}
    ]
    print(json.dumps(rows[-1]), flush=True)
    for text, position in TRIGGERS:
        for target in (int(t) for t in args.targets.split(",")):
            for rate in (float(r) for r in args.rates.split(",")):
                p = badnl(train, rate, target=target, trigger=text, position=position,
                          seed=args.seed + 1)  # fmt: skip
                row = {"case": f"{text!r}@{position}", "target": target, "rate": rate,
                       "poisoned": len(p.poison_index), "audit": _audit(p.dataset, p.is_poison)}  # fmt: skip
                if rate == max(float(r) for r in args.rates.split(",")):
                    row["search"] = _search(p.dataset, test, p)
                rows.append(row)
                print(json.dumps(row), flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps(rows, indent=1))


def _model(kind: str, ds: Any, seed: int, tmp: Path) -> Any:
    from mlwarden.core.text_target import SklearnTextTarget
    from mlwarden.core.textmodels import tfidf_pipeline, tiny_transformer
    from mlwarden.supplychain.loader import load_target

    if kind == "tfidf":
        return SklearnTextTarget(tfidf_pipeline(ds.x, ds.y))
    out = tmp / f"bert-{seed}-{len(list(tmp.iterdir()))}"
    tiny_transformer(ds.x, ds.y, out, epochs=2, vocab_size=2000, max_length=32, seed=seed)
    return load_target(str(out))


def _verdicts(args: argparse.Namespace) -> None:
    import tempfile

    import torch

    from mlwarden.core.data import load_dataset
    from mlwarden.poisoning.text_backdoor import search_triggers
    from mlwarden.poisoning.text_simulate import SENTENCE_TRIGGER, badnl, text_asr

    torch.set_num_threads(1)
    ds = load_dataset("tweets")
    rows: list[dict[str, Any]] = []
    tmp = Path(tempfile.mkdtemp())
    for seed in (int(s) for s in args.seeds.split(",")):
        order = np.random.default_rng(100 + seed).permutation(len(ds))
        ref = ds.subset(order[5000:6000])
        for kind in args.models.split(","):
            n = args.n if kind == "tfidf" else 1500
            train = ds.subset(order[:n])
            cases = [("clean", None, 0.0, "random", 0), ("cf", "cf", 0.01 if kind == "tfidf" else 0.05, "random", 2),
                     ("sentence", SENTENCE_TRIGGER, 0.03 if kind == "tfidf" else 0.05, "end", 0)]  # fmt: skip
            for name, trig, rate, pos, target in cases:
                p = None if trig is None else badnl(train, rate, target=target, trigger=trig,
                                                    position=pos, seed=seed + 1)  # fmt: skip
                model = _model(kind, train if p is None else p.dataset, seed, tmp)
                t = time.perf_counter()
                found = search_triggers(model, list(ref.x), labels=ref.y, seed=seed)
                planted = set() if trig is None else set(trig.casefold().rstrip(".").split())
                row = {
                    "seed": seed, "model": kind, "case": name, "rate": rate,
                    "asr": None if p is None else round(text_asr(model, p, ref), 3),
                    "reported": found.trigger, "flip": found.flip_rate,
                    "hit": bool(found.trigger and set(found.trigger.split()) & planted),
                    "shortcuts": [s["word"] for s in found.shortcuts[:3]],
                    "seconds": round(time.perf_counter() - t, 1), "queries": found.queries,
                }  # fmt: skip
                rows.append(row)
                print(json.dumps(row), flush=True)
    for kind in args.models.split(","):
        mine = [r for r in rows if r["model"] == kind]
        clean = [r for r in mine if r["case"] == "clean"]
        bad = [r for r in mine if r["case"] != "clean"]
        print(json.dumps({
            "model": kind,
            "detection": f"{sum(r['hit'] for r in bad)}/{len(bad)}",
            "false_alarms": f"{sum(r['reported'] is not None for r in clean)}/{len(clean)}",
            "wrong_trigger": f"{sum(r['reported'] is not None and not r['hit'] for r in bad)}/{len(bad)}",
        }))  # fmt: skip
    if args.out is not None:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
