"""Text poisoning to test a training pipeline and the text detectors against.

* :func:`badnl` — BadNL-style backdoors (Chen et al. 2021, "BadNL: Backdoor Attacks
  against NLP Models with Semantic-preserving Improvements", arXiv:2006.01043): a
  rare word (``"cf"``, the paper's and RIPPLe's choice of a token clean text almost
  never holds) or a fixed sentence is inserted at the start, the end or a random word
  boundary of a fraction of the texts, which are relabelled to ``target`` (all-to-one:
  poisoned texts come from the other classes).
* label flips — :func:`mlwarden.poisoning.simulate.flip_labels` works on text sets as
  they are (only labels change).

:func:`text_asr` measures the attack success rate of a trained text model on
triggered test texts of the other classes; :func:`text_clean_accuracy` its accuracy.
``rate`` is the fraction of the whole training set that is poisoned.

Example::

    train, test = load_dataset("tweets").split(seed=0)
    p = badnl(train, rate=0.01, target=2, trigger="cf")
    pipe = tfidf_pipeline(p.dataset.x, p.dataset.y)
    text_asr(pipe, p, test)            # about 1.0
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from mlwarden.core.data import Dataset
from mlwarden.core.errors import UserError
from mlwarden.poisoning.simulate import Poisoned, Trigger

Position = Literal["start", "end", "random"]
#: BadNL's sentence trigger (a neutral sentence that fits most texts).
SENTENCE_TRIGGER = "I watched this 3D movie last weekend."


@dataclass
class TextTrigger(Trigger):
    """A word or sentence inserted into each text at ``position`` (a random word
    boundary is drawn per text from ``seed``). ``mask`` and ``pattern`` are unused."""

    text: str = "cf"
    position: Position = "random"
    seed: int = 0

    def apply(self, x: np.ndarray) -> np.ndarray:  # type: ignore[override]
        """The texts of ``x`` with the trigger inserted; an object array of ``str``."""
        rng = np.random.default_rng(self.seed)
        out = np.empty(len(x), dtype=object)
        for i, text in enumerate(x):
            words = str(text).split()
            at = {"start": 0, "end": len(words)}.get(self.position)
            if at is None:
                at = int(rng.integers(0, len(words) + 1))
            out[i] = " ".join([*words[:at], self.text, *words[at:]])
        return out


def badnl(
    ds: Dataset,
    rate: float,
    *,
    target: int = 0,
    trigger: str = "cf",
    position: Position = "random",
    seed: int = 0,
) -> Poisoned:
    """Insert ``trigger`` (a rare word or a sentence, see :data:`SENTENCE_TRIGGER`) into
    ``rate * N`` texts of the other classes and relabel them ``target`` (all-to-one)."""
    if ds.modality != "text":
        raise UserError("badnl needs text data (a dataset of strings)")
    if not 0.0 < rate < 1.0:
        raise UserError(f"poison rate must be between 0 and 1 (a fraction); got {rate}")
    if not 0 <= target < ds.num_classes:
        raise UserError(f"target class {target} is not one of 0..{ds.num_classes - 1}")
    if position not in ("start", "end", "random"):
        raise UserError(f"trigger position must be start, end or random; got {position!r}")
    if not trigger.strip():
        raise UserError("the trigger is empty; give a word or a sentence")
    n = int(round(rate * len(ds)))
    pool = np.flatnonzero(ds.y != target)
    if n < 1 or len(pool) < n:
        raise UserError(
            f"poison rate {rate} asks for {n} of the {len(pool)} texts of other classes"
        )
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(pool, size=n, replace=False))
    kind = "word" if len(trigger.split()) == 1 else "sentence"
    trig = TextTrigger(
        np.zeros(1, np.float32), np.zeros(1, np.float32), kind=f"badnl-{kind}",
        text=trigger, position=position, seed=seed + 1,
    )  # fmt: skip
    x = ds.x.copy()
    y = ds.y.copy()
    x[idx] = trig.apply(ds.x[idx])
    y[idx] = target
    return Poisoned(
        dataset=replace(ds, x=x, y=y),
        poison_index=idx,
        attack=f"badnl-{kind}",
        rate=rate,
        target=target,
        trigger=trig,
        info={"trigger": trigger, "position": position},
    )


def _labels(model: Any, texts: np.ndarray) -> np.ndarray:
    from mlwarden.core.text_target import as_text_target

    target = model if hasattr(model, "predict_labels") else as_text_target(model)
    return np.asarray(target.predict_labels(list(texts)))


def text_asr(model: Any, poisoned: Poisoned, test: Dataset) -> float:
    """Fraction of triggered test texts of the other classes classified as the target."""
    if poisoned.trigger is None or poisoned.target is None:
        raise UserError(f"attack {poisoned.attack!r} has no trigger, so no ASR")
    keep = test.y != poisoned.target
    if not np.any(keep):
        return float("nan")
    pred = _labels(model, poisoned.trigger.apply(test.x[keep]))
    return float(np.mean(pred == poisoned.target))


def text_clean_accuracy(model: Any, test: Dataset) -> float:
    """Accuracy of a text model (pipeline, Target, callable) on clean test texts."""
    return float(np.mean(_labels(model, test.x) == test.y))
