"""Text evasion: greedy word substitution ranked by word importance, batched across samples.

An attack is TextAttack's four parts (Morris et al. 2020, arXiv:2005.05909):

* goal — untargeted misclassification of the true label (scores: the margin
  ``p_y - max_{j != y} p_j`` is driven below 0);
* constraints — :class:`~mlwarden.evasion.text.threat.ThreatModel` (WordNet synonym or
  <= 2 character edits per word, at most ``max(int(r * n), 1)`` words, no insertion or
  deletion), checked for every candidate before it is queried;
* transformation — :mod:`~mlwarden.evasion.text.transforms` (``synonyms``, ``chars``);
* search — word importance first, then for each word in that order every candidate
  word is tried (one batch per step, all samples together) and the best kept, until the
  model errs, the word budget is spent or ``max_queries`` per sample is reached.

Recipes (:data:`RECIPES`):

* ``pwws`` — WordNet synonyms, importance by deleting each word (Ren et al. ACL 2019;
  TextFooler's deletion ranking, Jin et al. arXiv:1907.11932);
* ``deepwordbug`` — character edits, homoglyphs, invisible characters (Gao et al.
  arXiv:1801.04354);
* ``hotflip`` — white-box: word importance and the candidates' first-order loss change
  from the gradient w.r.t. the input embeddings (Ebrahimi et al. arXiv:1712.06751); only
  the ``hotflip_top`` best-scored candidates are queried;
* ``combined`` — synonyms and character edits together (the default);
* ``textfooler`` — GloVe neighbours (N=50, cosine >= 0.5; Jin et al. arXiv:1907.11932),
  of which the threat model admits only synonyms and inflections; needs the
  ``text-embeddings`` extra (:mod:`~mlwarden.evasion.text.embeddings`).

A success counts only after :meth:`ThreatModel.check` passes and a fresh query (counted)
misclassifies the text.

Example::

    res = attack_texts(target, texts, labels, recipe="combined", max_change=0.2)
    res.success.mean(), np.median(res.queries[res.success])
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlwarden.core.errors import UserError
from mlwarden.core.target import probabilities
from mlwarden.evasion.text.threat import ThreatModel, words
from mlwarden.evasion.text.transforms import (
    char_candidates,
    embedding_candidates,
    synonym_candidates,
)

RECIPES: dict[str, dict[str, Any]] = {
    "pwws": {"transforms": ("synonyms",), "importance": "delete"},
    "deepwordbug": {"transforms": ("chars",), "importance": "delete"},
    "hotflip": {"transforms": ("synonyms", "chars"), "importance": "gradient"},
    "combined": {"transforms": ("synonyms", "chars"), "importance": "delete"},
    "textfooler": {"transforms": ("embedding",), "importance": "delete"},
}
#: Modalities and access levels these attacks support (the modality table reads these).
modalities = ("text",)
access_levels = ("white", "score", "label")


@dataclass
class TextAttackResult:
    """Per-sample outcome of a text attack (arrays of length N)."""

    original: list[str]
    adversarial: list[str]
    labels: np.ndarray
    clean_pred: np.ndarray
    adv_pred: np.ndarray
    success: np.ndarray
    queries: np.ndarray
    changed: list[list[int]] = field(default_factory=list)
    recipe: str = "combined"
    threat: dict[str, Any] = field(default_factory=dict)
    rejected: int = 0
    #: texts actually attacked when a recipe ran only on those earlier ones left (None: all)
    attacked: int | None = None

    @property
    def clean_accuracy(self) -> float:
        return float(np.mean(self.clean_pred == self.labels)) if len(self.labels) else 0.0

    @property
    def robust_accuracy(self) -> float:
        return (
            float(np.mean((self.clean_pred == self.labels) & ~self.success))
            if len(self.labels)
            else 0.0
        )

    @property
    def queries_median(self) -> float:
        return float(np.median(self.queries[self.success])) if self.success.any() else 0.0


@dataclass
class _State:
    words: list[str]
    label: int
    order: list[int]
    margin: float
    changed: set[int] = field(default_factory=set)
    gaps: list[str] = field(default_factory=list)
    queries: int = 0
    done: bool = False
    success: bool = False


def _gaps(text: str) -> list[str]:
    """The whitespace around the words (``len(words) + 1`` pieces), kept as it was."""
    gaps, end = [], 0
    for m in re.finditer(r"\S+", text):
        gaps.append(text[end : m.start()])
        end = m.end()
    return [*gaps, text[end:]]


def join(words_: Sequence[str], gaps: Sequence[str]) -> str:
    """Words put back with the original whitespace between them."""
    if len(gaps) != len(words_) + 1:
        return " ".join(words_)
    return gaps[0] + "".join(w + g for w, g in zip(words_, gaps[1:], strict=True))


def _probs(target: Any, texts: list[str]) -> np.ndarray:
    """Scores as probabilities for a batch of texts (one query per text)."""
    return probabilities(target, texts)  # type: ignore[arg-type]


def _margins(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    true = probs[np.arange(len(labels)), labels]
    other = probs.copy()
    other[np.arange(len(labels)), labels] = -np.inf
    return true - other.max(axis=1)  # type: ignore[no-any-return]


def _candidates(word: str, transforms: Sequence[str], char_edits: int) -> list[str]:
    out: dict[str, None] = {}
    if "chars" in transforms:
        out.update(dict.fromkeys(char_candidates(word)[:char_edits]))
    if "embedding" in transforms:  # the threat model keeps only synonyms and inflections
        out.update(dict.fromkeys(embedding_candidates(word)))
    if "synonyms" in transforms:
        out.update(dict.fromkeys(synonym_candidates(word)))
    return list(out)


def attack_texts(
    target: Any,
    texts: Sequence[str],
    labels: Sequence[int] | np.ndarray,
    *,
    recipe: str = "combined",
    max_change: float = 0.2,
    max_queries: int = 2000,
    hotflip_top: int = 8,
    char_edits: int = 3,
    threat: ThreatModel | None = None,
    knows: Callable[[str], str] | None = None,
) -> TextAttackResult:
    """Attack every text; see the module docs. ``max_queries`` is per sample (texts sent);
    ``char_edits``: how many character edits are tried per word, most effective first
    (homoglyph, invisible character, swap, deletion, substitution, insertion).

    ``knows``: the defence's input normalisation, when the attacker knows it (an
    adaptive attack): candidates it maps back onto the original word are not tried.
    """
    if recipe not in RECIPES:
        raise UserError(f"unknown text attack {recipe!r}; choose one of {', '.join(RECIPES)}")
    spec = RECIPES[recipe]
    if spec["importance"] == "gradient" and not hasattr(target, "embedding_forward"):
        raise UserError(f"{recipe} needs a white-box text model (a Hugging Face folder)")
    tm = threat or ThreatModel(max_change=max_change)
    texts = [str(t) for t in texts]
    y = np.asarray(labels, dtype=np.int64)
    probs = _probs(target, texts)
    clean_pred = probs.argmax(axis=1)
    margins = _margins(probs, y)
    states = [
        _State(words(t), int(y[i]), [], float(margins[i]), queries=1, done=bool(margins[i] < 0))
        for i, t in enumerate(texts)
    ]
    for s, t in zip(states, texts, strict=True):
        s.gaps = _gaps(t)
    active = [s for s in states if not s.done]
    if spec["importance"] == "gradient":
        scorer = _GradientScorer(target, active)
    else:
        _delete_importance(target, active)
        scorer = None
    while True:
        step = [s for s in active if not s.done]
        if not step:
            break
        _search_step(target, step, spec["transforms"], tm, max_queries, scorer, hotflip_top, knows)
    return _finish(target, texts, y, clean_pred, states, tm, recipe)


def _delete_importance(target: Any, states: list[_State]) -> None:
    """Word importance = drop of the true-class margin when the word is deleted (one
    query per word, all samples in one batch)."""
    batch: list[str] = []
    owners: list[tuple[_State, int]] = []
    for s in states:
        for i in range(len(s.words)):
            batch.append(" ".join(s.words[:i] + s.words[i + 1 :]))
            owners.append((s, i))
    if not batch:
        return
    labels = np.asarray([s.label for s, _ in owners])
    margins = _margins(_probs(target, batch), labels)
    per: dict[int, list[tuple[float, int]]] = {}
    for (s, i), m in zip(owners, margins, strict=True):
        s.queries += 1
        per.setdefault(id(s), []).append((s.margin - float(m), i))
    for s in states:
        s.order = [i for _, i in sorted(per.get(id(s), []), key=lambda t: (-t[0], t[1]))]


def _search_step(
    target: Any,
    states: list[_State],
    transforms: Sequence[str],
    tm: ThreatModel,
    max_queries: int,
    scorer: _GradientScorer | None,
    top: int,
    knows: Callable[[str], str] | None = None,
    char_edits: int = 3,
) -> None:
    """Each active sample tries every candidate for its next word; best one kept."""
    batch: list[str] = []
    owners: list[tuple[_State, int, str]] = []
    for s in states:
        if len(s.changed) >= tm.budget(len(s.words)) or not s.order:
            s.done = True
            continue
        i = s.order.pop(0)
        cands = [
            c for c in _candidates(s.words[i], transforms, char_edits) if tm.word_ok(s.words[i], c)
        ]
        if knows is not None:
            washed = knows(s.words[i])
            cands = [c for c in cands if knows(c) != washed]
        if scorer is not None:
            cands = scorer.rank(s, i, cands)[:top]
        room = max_queries - s.queries
        if room <= 0:
            s.done = True
            continue
        for c in cands[:room]:
            new = list(s.words)
            new[i] = c
            batch.append(join(new, s.gaps))
            owners.append((s, i, c))
    if not batch:
        return
    labels = np.asarray([s.label for s, _, _ in owners])
    margins = _margins(_probs(target, batch), labels)
    best: dict[int, tuple[float, int, str]] = {}
    for (s, i, c), m in zip(owners, margins, strict=True):
        s.queries += 1
        if m < best.get(id(s), (np.inf, 0, ""))[0]:
            best[id(s)] = (float(m), i, c)
    for s in states:
        pick = best.get(id(s))
        if pick is None or pick[0] >= s.margin:
            continue
        s.margin, i, c = pick
        s.words[i] = c
        s.changed.add(i)
        if s.margin < 0:
            s.done = s.success = True


class _GradientScorer:
    """HotFlip's first-order estimate: importance of word i = gradient norm on its tokens;
    a candidate's gain = (e(candidate) - e(word)) . gradient, averaged over tokens."""

    def __init__(self, target: Any, states: list[_State]) -> None:
        import torch

        self.target = target
        self.emb = target.embedding_matrix().detach()
        self.grads: dict[int, list[Any]] = {}
        for chunk in range(0, len(states), 32):
            part = states[chunk : chunk + 32]
            texts = [" ".join(s.words) for s in part]
            enc = target.encode(texts)
            ids = enc["input_ids"]
            inputs = self.emb[ids].clone().requires_grad_(True)
            logits = target.embedding_forward(inputs, enc["attention_mask"])
            loss = torch.nn.functional.cross_entropy(
                logits, torch.as_tensor([s.label for s in part]), reduction="sum"
            )
            # only the input gradient: the weights' .grad would be computed and kept for nothing
            (grad,) = torch.autograd.grad(loss, inputs)
            for k, s in enumerate(part):
                s.queries += 1
                per_word = self._word_tokens(texts[k], s.words)
                g = grad[k]
                self.grads[id(s)] = [(ids[k, toks], g[toks]) for toks in per_word]
                norms = [float(g[toks].norm()) if len(toks) else 0.0 for toks in per_word]
                s.order = sorted(range(len(s.words)), key=lambda i: (-norms[i], i))

    def _word_tokens(self, text: str, ws: list[str]) -> list[list[int]]:
        """Token positions of each whitespace word (by character offsets)."""
        enc = self.target.tokenizer(
            text, truncation=True, max_length=self.target.max_length, return_offsets_mapping=True
        )
        spans, pos = [], 0
        for w in ws:
            start = text.index(w, pos)
            spans.append((start, start + len(w)))
            pos = start + len(w)
        out: list[list[int]] = [[] for _ in ws]
        for t, (a, b) in enumerate(enc["offset_mapping"]):
            if b <= a:
                continue
            for wi, (s0, s1) in enumerate(spans):
                if a < s1 and b > s0:
                    out[wi].append(t)
                    break
        return out

    def rank(self, s: _State, i: int, cands: list[str]) -> list[str]:
        ids, g = self.grads[id(s)][i]
        if not len(ids) or not cands:
            return cands
        base = self.emb[ids].mean(0)
        gm = g.mean(0)
        toks = self.target.tokenizer(cands, add_special_tokens=False)["input_ids"]
        scores = [float((self.emb[tok or [0]].mean(0) - base) @ gm) for tok in toks]
        order = np.argsort(-np.asarray(scores), kind="stable")
        return [cands[k] for k in order]


def _finish(
    target: Any,
    texts: list[str],
    y: np.ndarray,
    clean_pred: np.ndarray,
    states: list[_State],
    tm: ThreatModel,
    recipe: str,
) -> TextAttackResult:
    """Validate every claimed success with the threat model and a fresh query."""
    adv = [join(s.words, s.gaps) if s.changed else t for s, t in zip(states, texts, strict=True)]
    claimed = [k for k, s in enumerate(states) if s.success and clean_pred[k] == y[k]]
    rejected = 0
    adv_pred = clean_pred.copy()
    success = np.zeros(len(texts), bool)
    valid = []
    for k in claimed:
        if tm.check(texts[k], adv[k]).ok:
            valid.append(k)
        else:
            rejected += 1
    if valid:
        fresh = target.predict_labels([adv[k] for k in valid])
        for k, p in zip(valid, fresh, strict=True):
            states[k].queries += 1
            adv_pred[k] = int(p)
            success[k] = int(p) != y[k]
            rejected += int(not success[k])
    return TextAttackResult(
        original=texts,
        adversarial=[adv[k] if success[k] else texts[k] for k in range(len(texts))],
        labels=y,
        clean_pred=clean_pred,
        adv_pred=adv_pred,
        success=success,
        queries=np.asarray([s.queries for s in states]),
        changed=[sorted(s.changed) if success[k] else [] for k, s in enumerate(states)],
        recipe=recipe,
        threat=tm.describe(),
        rejected=rejected,
    )
