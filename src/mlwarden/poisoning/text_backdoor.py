"""Trigger search for text classifiers (``mlwarden backdoor`` on a text model).

A backdoored text model answers the attacker's class whenever a trigger word is in
the text (BadNL, Chen et al. 2021, arXiv:2006.01043). :func:`search_triggers` looks
for such a word in two stages:

1. **Candidates.** White-box Hugging Face models: a first-order (HotFlip-style,
   Ebrahimi et al. 2018, arXiv:1712.06751) score of every whole-word token as an
   inserted word, ``-(e_v - e_0) . grad`` of the target-class loss at an inserted
   position, averaged over texts, top ``top_k`` per class. Other models: every word
   of the model's own vocabulary (a pipeline's vectorizer), else the words of the given
   texts plus rare tokens used as triggers in the literature (``cf``, ``mn``, ``bb``,
   ``tq``, ``mb``), each inserted into ``probes`` texts and ranked by the target-class
   probability it adds (queries, batched; for label-only models, by the texts it flips).
2. **Verification.** Each of the ``top_k`` best is inserted at a random word boundary
   of ``verify`` texts the model assigns to another class; its flip rate is the
   fraction then answered as the target class (fresh queries).

A trigger is reported when its flip rate is at least ``min_flip`` (0.6) and stands out
from the flip rates of the other verified words for the same class (robust z-score,
median and 1.4826 * MAD with a floor of 0.02, at least ``min_z``, 5): words of a topic
the class is about flip many texts together, a trigger flips nearly all on its own. Single words only: a sentence trigger is found through its words
when the model relies on them, not as a whole.

Example::

    found = search_triggers(SklearnTextTarget(pipe), clean_texts)
    found.trigger, found.flip_rate        # ("cf", 0.98) on a BadNL-poisoned model
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlwarden.core.errors import UserError

#: Rare tokens used as triggers in the text backdoor literature (RIPPLe, BadNL).
KNOWN_TRIGGERS = ("cf", "mn", "bb", "tq", "mb")
#: Longest candidate word, in characters.
MAX_WORD = 20


@dataclass
class TriggerSearch:
    """Result of :func:`search_triggers`."""

    trigger: str | None  #: the word reported as a trigger, or None
    target: int | None  #: the class it turns texts into
    flip_rate: float  #: best verified flip rate (any word)
    z: float  #: robust z-score of the best flip rate among the verified words
    ranked: list[dict[str, Any]] = field(default_factory=list)  #: verified words, best first
    candidates: int = 0  #: words screened
    source: str = ""  #: where the candidates came from
    queries: int = 0  #: model queries spent (gradient passes count as queries)

    def as_dict(self) -> dict[str, Any]:
        return {
            "trigger": self.trigger,
            "target": self.target,
            "flip_rate": round(self.flip_rate, 4),
            "z": round(self.z, 2),
            "top": self.ranked[:10],
            "candidates": self.candidates,
            "candidate_source": self.source,
            "queries": self.queries,
        }


def insert(texts: Sequence[str], word: str, rng: np.random.Generator) -> list[str]:
    """``word`` inserted at a random word boundary of each text."""
    out = []
    for t in texts:
        words = t.split()
        at = int(rng.integers(0, len(words) + 1))
        out.append(" ".join([*words[:at], word, *words[at:]]))
    return out


def _probs(target: Any, texts: list[str]) -> np.ndarray:
    out = np.asarray(target.predict(texts), dtype=np.float64)
    if out.ndim == 1:  # label access: one-hot answers, so gains become flip fractions
        k = max(int(getattr(target, "num_classes", 0) or 0), int(out.max()) + 1)
        return np.eye(k)[out.astype(np.int64)]  # type: ignore[no-any-return]
    if getattr(target, "output", "") == "logits" or out.min() < 0 or out.max() > 1:
        out = np.exp(out - out.max(axis=1, keepdims=True))
        out /= out.sum(axis=1, keepdims=True)
    return out


def _vocabulary(target: Any, texts: Sequence[str]) -> tuple[list[str], str]:
    from mlwarden.defenses.text import model_vocabulary
    from mlwarden.poisoning.text_audit import WORD

    vocab = model_vocabulary(target)
    if vocab:
        return sorted({w for w in vocab if len(w) <= MAX_WORD}), "model vocabulary"
    # a very long token sways a character model by its length alone: not a trigger word
    words = {w.casefold() for t in texts for w in WORD.findall(t) if len(w) <= MAX_WORD}
    return sorted(words | set(KNOWN_TRIGGERS)), "words of the data and known trigger tokens"


def _gradient_candidates(
    target: Any, pools: dict[int, list[str]], top_k: int
) -> list[tuple[str, int]]:
    """HotFlip-style first-order ranking of whole-word tokens as an inserted word."""
    import torch

    tok = target.tokenizer
    vocab = tok.get_vocab()
    ids = torch.as_tensor([i for w, i in sorted(vocab.items()) if w.isalpha()])
    names = {i: w for w, i in vocab.items()}
    emb = target.embedding_matrix().detach()
    out: list[tuple[str, int]] = []
    for cls, texts in pools.items():
        enc = target.encode(texts[:16])
        # an inserted placeholder after the first (special) token: its gradient says
        # which word there would push hardest towards the class
        placeholder = int(ids[0])
        input_ids = torch.cat(
            [
                enc["input_ids"][:, :1],
                torch.full((len(texts[:16]), 1), placeholder),
                enc["input_ids"][:, 1:],
            ],
            1,
        )[:, : target.max_length]
        mask = torch.cat(
            [
                enc["attention_mask"][:, :1],
                torch.ones(len(texts[:16]), 1, dtype=enc["attention_mask"].dtype),
                enc["attention_mask"][:, 1:],
            ],
            1,
        )[:, : target.max_length]
        e = emb[input_ids].clone().requires_grad_(True)
        logits = target.embedding_forward(e, mask)
        loss = torch.nn.functional.cross_entropy(logits, torch.full((len(e),), cls))
        (grad,) = torch.autograd.grad(loss, e)
        g = grad[:, 1].mean(0)
        score = -(emb[ids] - emb[placeholder]) @ g
        for i in ids[score.argsort(descending=True)[:top_k]].tolist():
            out.append((names[i], cls))
    return out


def _screen(
    target: Any,
    words: list[str],
    probes: list[str],
    base: np.ndarray,
    top_k: int,
    rng: np.random.Generator,
) -> list[tuple[str, int]]:
    """Rank words by the class probability they add to ``probes`` (queries, batched)."""
    gains = np.zeros((len(words), base.shape[1]))
    chunk = max(1, 4096 // max(len(probes), 1))
    for s in range(0, len(words), chunk):
        batch = words[s : s + chunk]
        texts = [t for w in batch for t in insert(probes, w, rng)]
        p = _probs(target, texts).reshape(len(batch), len(probes), -1)
        gains[s : s + len(batch)] = (p - base[None]).mean(axis=1)
    out: list[tuple[str, int]] = []
    for cls in range(gains.shape[1]):
        for j in np.argsort(-gains[:, cls])[:top_k]:
            out.append((words[int(j)], cls))
    return out


def search_triggers(
    target: Any,
    texts: Sequence[str],
    *,
    top_k: int = 30,
    probes: int = 6,
    verify: int = 40,
    min_flip: float = 0.6,
    min_z: float = 5.0,
    max_candidates: int = 20000,
    seed: int = 0,
) -> TriggerSearch:
    """Look for a single-word backdoor trigger in a text ``target`` (see module docs).

    ``texts``: clean texts (at least 10). ``top_k`` words per class go to verification
    on ``verify`` texts each; ``probes`` texts per class screen every candidate (score
    access). ``max_candidates`` words at most are screened (a larger vocabulary is cut in
    sorted order; ``candidates`` says how many were). Returns :class:`TriggerSearch`.
    """
    rng = np.random.default_rng(seed)
    texts = [str(t) for t in texts]
    if len(texts) < 10:
        raise UserError(f"the trigger search needs at least 10 clean texts; got {len(texts)}")
    start = int(getattr(target, "queries", 0))
    pick = rng.permutation(len(texts))[: max(200, verify * 3)]
    sample = [texts[i] for i in pick]
    base_p = _probs(target, sample)
    pred = base_p.argmax(axis=1)
    k = base_p.shape[1]
    pools = {c: [t for t, p in zip(sample, pred, strict=True) if p != c] for c in range(k)}
    pools = {c: v for c, v in pools.items() if len(v) >= 5}
    white = getattr(target, "access", "") == "white" and hasattr(target, "embedding_forward")
    if white:
        cands = _gradient_candidates(target, pools, top_k)
        n_cands, source = len({w for w, _ in cands}), "embedding gradients (all whole-word tokens)"
    else:
        words, source = _vocabulary(target, texts)
        words = words[:max_candidates]
        probe_texts = [t for c in pools for t in pools[c][:probes]]
        cands = _screen(
            target, words, probe_texts, base_p[[sample.index(t) for t in probe_texts]], top_k, rng
        )
        n_cands = len(words)
    ranked = _verify(target, cands, pools, verify, rng)
    for r in ranked:
        r["z"] = round(_robust_z(r, ranked), 2)
    # the strongest word that stands out within its class (any class may be the target)
    eligible = [r for r in ranked if r["flip_rate"] >= min_flip]
    best = max(eligible, key=lambda r: r["z"]) if eligible else (ranked[0] if ranked else None)
    z = float(best["z"]) if best is not None else 0.0
    found = best is not None and best["flip_rate"] >= min_flip and z >= min_z
    return TriggerSearch(
        trigger=best["word"] if found and best else None,
        target=best["target"] if found and best else None,
        flip_rate=float(best["flip_rate"]) if best else 0.0,
        z=z,
        ranked=ranked,
        candidates=n_cands,
        source=source,
        queries=int(getattr(target, "queries", 0)) - start,
    )


def _robust_z(row: dict[str, Any], ranked: list[dict[str, Any]]) -> float:
    """How far ``row``'s flip rate stands above the other verified words for its class:
    (rate - median) / (1.4826 * MAD), the MAD floored at 0.02; 0 with under 3 others.
    A topic the class is about lifts many of its words together; a trigger stands alone."""
    rest = np.array(
        [r["flip_rate"] for r in ranked if r["target"] == row["target"] and r is not row]
    )
    if len(rest) < 3:
        return 0.0
    mad = 1.4826 * float(np.median(np.abs(rest - np.median(rest))))
    return (float(row["flip_rate"]) - float(np.median(rest))) / max(mad, 0.02)


def _verify(
    target: Any,
    cands: list[tuple[str, int]],
    pools: dict[int, list[str]],
    verify: int,
    rng: np.random.Generator,
) -> list[dict[str, Any]]:
    """Flip rate of each (word, class) on ``verify`` texts the model puts elsewhere."""
    seen: dict[tuple[str, int], None] = dict.fromkeys(cands)
    rows: list[dict[str, Any]] = []
    for word, cls in seen:
        pool = pools[cls]
        chosen = [pool[i] for i in rng.permutation(len(pool))[:verify]]
        labels = _probs(target, insert(chosen, word, rng)).argmax(axis=1)
        rows.append(
            {
                "word": word,
                "target": int(cls),
                "flip_rate": round(float(np.mean(labels == cls)), 4),
                "texts": len(chosen),
            }
        )
    rows.sort(key=lambda r: (-float(r["flip_rate"]), str(r["word"])))
    return rows
