"""Trigger search for text classifiers (``mlwarden backdoor`` on a text model).

A backdoored text model answers the attacker's class whenever a trigger word or
sentence is in the text (BadNL, Chen et al. 2021, arXiv:2006.01043).
:func:`search_triggers` looks for one in four stages:

1. **Candidates.** White-box Hugging Face models: a first-order (HotFlip-style,
   Ebrahimi et al. 2018, arXiv:1712.06751) score of every whole-word token as an
   inserted word, ``-(e_v - e_0) . grad`` of the target-class loss at an inserted
   position, averaged over texts, top ``top_k`` per class. Other models: every word
   and word n-gram of the model's own vocabulary (a pipeline's vectorizer), else the
   words of the given texts plus rare tokens used as triggers in the literature
   (``cf``, ``mn``, ``bb``, ``tq``, ``mb``), each inserted into ``probes`` texts and
   ranked by the target-class probability it adds (queries, batched; for label-only
   models, by the texts it flips). ``mined`` n-grams of the training data (the data
   audit's, from ``mlwarden data --model``) join them.
2. **Verification.** Each is inserted into ``verify`` texts the model assigns to
   another class (a phrase at the start, the end and a random position); its flip rate
   is the fraction then answered as the target class (fresh queries).
3. **Phrases.** A beam search grows word sequences from the strongest candidates whose
   words the reference texts do not tie to the class, scored by flips and by what the
   word order adds (flips minus half those of the words reversed); each result is
   pruned of words it does not need and verified afresh.
4. **Verdict** (:mod:`mlwarden.poisoning.text_verdict`): the strongest rows of each
   class against frequency-matched random words inserted the same way, and the
   labelled reference texts: ``backdoor`` (flips far beyond the controls, words the
   clean data do not tie to the class), ``shortcut`` (the clean data explain it: a
   natural word such as ``self`` -> neutral) or ``none``. A phrase the search assembled
   must flip nearly all texts (:data:`NEARLY_ALL`) of every other class; a phrase is
   judged only against at least :data:`MIN_REFERENCE` labelled texts, when at least
   half its words are rare there (:data:`RARE`), as in planted sentences, and from a
   flip rate of :data:`PHRASE_FLIP` (unless the data audit confirmed it).

The trigger reported is the strongest ``backdoor`` row (on a tie, the shortest).

Example::

    found = search_triggers(SklearnTextTarget(pipe), clean_texts, labels=clean_labels)
    found.trigger, found.flip_rate, found.verdict   # ("cf", 0.98, "backdoor")
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlwarden.core.errors import UserError

#: Rare tokens used as triggers in the text backdoor literature (RIPPLe, BadNL).
KNOWN_TRIGGERS = ("cf", "mn", "bb", "tq", "mb")
#: Flip rate a phrase assembled by the search must reach (a planted trigger's).
NEARLY_ALL = 0.9
#: Labelled reference texts needed to judge a phrase the search assembled.
MIN_REFERENCE = 1000
#: Flip rate any phrase not confirmed by the data audit must reach.
PHRASE_FLIP = 0.75
#: Document frequency in the reference below which a word is rare (0.5%: 5 in 1,000).
RARE = 0.005
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
    shortcuts: list[dict[str, Any]] = field(default_factory=list)  #: explained by the data
    verdict: str = "none"  #: the best row's: backdoor, shortcut or none
    control: float = 0.0  #: 95th percentile of its frequency-matched controls' flip rates
    position: str = "random"  #: where the trigger was inserted: start, end or random

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
            "verdict": self.verdict,
            "control_flip_rate": round(self.control, 4),
            "position": self.position,
            "shortcuts": self.shortcuts[:10],
        }


def insert(
    texts: Sequence[str], word: str, rng: np.random.Generator, position: str = "random"
) -> list[str]:
    """``word`` (or a phrase, kept whole) inserted into each text at its start, its end
    or a random word boundary (``position``)."""
    out = []
    for t in texts:
        words = t.split()
        at = {"start": 0, "end": len(words)}.get(position)
        if at is None:
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
        # a word-n-gram vectorizer's phrases too: a sentence trigger is learnt as them
        est = getattr(target, "estimator", None)
        first = est.steps[0][1] if est is not None and hasattr(est, "steps") else est
        grams = [g for g in getattr(first, "vocabulary_", {}) if " " in g]
        words = {w for w in vocab if len(w) <= MAX_WORD} | {
            g for g in grams if len(g) <= 3 * MAX_WORD
        }
        return sorted(words), "model vocabulary" + (" (words and n-grams)" if grams else "")
    # a very long token sways a character model by its length alone: not a trigger word
    words_ = {w.casefold() for t in texts for w in WORD.findall(t) if len(w) <= MAX_WORD}
    return sorted(words_ | set(KNOWN_TRIGGERS)), "words of the data and known trigger tokens"


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
    labels: Sequence[int] | np.ndarray | None = None,
    mined: Sequence[tuple[str, int]] = (),
    only_mined: bool = False,
    confirmed: set[str] | frozenset[str] = frozenset(),
    top_k: int = 30,
    probes: int = 6,
    verify: int = 40,
    min_flip: float = 0.6,
    margin: float = 0.25,
    beam: int = 3,
    max_len: int = 6,
    controls: int = 12,
    max_candidates: int = 20000,
    seed: int = 0,
) -> TriggerSearch:
    """Look for a word or phrase backdoor trigger in a text ``target`` (see module docs).

    ``texts``: clean texts (at least 10), with their ``labels`` when known (the reference
    corpus that tells natural shortcuts from planted triggers). ``mined``: (n-gram,
    class) candidates from the training data (the data audit's); ``only_mined`` skips
    the vocabulary; ``confirmed``: those whose carriers the audit confirmed as poison
    (the labels of a poisoned reference tie them to their class, so they are judged as
    unexplained, and without the word-order test). ``top_k`` words per class go to verification on ``verify`` texts
    each; ``probes`` texts per class screen every candidate (score access);
    ``max_candidates`` words at most are screened. Phrases grow by a beam of ``beam``
    up to ``max_len`` words; ``controls`` frequency-matched random phrases and
    ``margin`` decide the verdict (:func:`mlwarden.poisoning.text_verdict.judge`).
    """
    from mlwarden.poisoning.text_verdict import Reference

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
    vocab: list[str] = []
    if only_mined:
        cands: list[tuple[str, int]] = []
        n_cands, source = 0, "n-grams of the training data"
    elif white:
        cands = _gradient_candidates(target, pools, top_k)
        n_cands, source = len({w for w, _ in cands}), "embedding gradients (all whole-word tokens)"
        vocab = [w for w, _ in cands]
    else:
        vocab, source = _vocabulary(target, texts)
        vocab = vocab[:max_candidates]
        probe_texts = [t for c in pools for t in pools[c][:probes]]
        cands = _screen(
            target, vocab, probe_texts, base_p[[sample.index(t) for t in probe_texts]], top_k, rng
        )
        n_cands = len(vocab)
    mined = [(str(g), int(c)) for g, c in mined if int(c) in pools]
    if mined:
        source += " + n-grams of the training data" if not only_mined else ""
        n_cands += len(mined)
    ranked = _verify(target, [*cands, *mined], pools, verify, rng)
    ref = Reference.build(texts, labels)
    for r in ranked:
        r["explained"], r["reference"] = ref.explains(r["word"], r["target"])
        if r["word"] in confirmed:
            r["confirmed"], r["explained"] = True, False
    if not only_mined:
        origin = {t: int(p) for t, p in zip(sample, pred, strict=True)}
        ranked += _grow(target, ranked, pools, ref, verify, beam, max_len, rng, origin)
    ranked.sort(key=lambda r: (-float(r["flip_rate"]), str(r["word"])))
    for r in ranked:
        r["z"] = round(_robust_z(r, ranked), 2)
    _judge_top(target, ranked, pools, ref, verify, min_flip, margin, controls, vocab, rng)
    backdoors = [r for r in ranked if r.get("verdict") == "backdoor"]
    # the strongest trigger; on a tie the shortest phrase (its extra words add nothing)
    best = (
        min(backdoors, key=lambda r: (-float(r["flip_rate"]), len(str(r["word"]).split())))
        if backdoors
        else (ranked[0] if ranked else None)
    )
    found = bool(backdoors) and best is not None
    return TriggerSearch(
        trigger=best["word"] if found and best else None,
        target=best["target"] if found and best else None,
        flip_rate=float(best["flip_rate"]) if best else 0.0,
        z=float(best["z"]) if best else 0.0,
        ranked=ranked,
        candidates=n_cands,
        source=source,
        queries=int(getattr(target, "queries", 0)) - start,
        shortcuts=[r for r in ranked if r.get("verdict") == "shortcut"],
        verdict=str(best.get("verdict", "none")) if best else "none",
        control=float(best.get("control", 0.0)) if best else 0.0,
        position=str(best.get("position", "random")) if best else "random",
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
    source: dict[str, int] | None = None,
) -> list[dict[str, Any]]:
    """Flip rate of each (word or phrase, class) on ``verify`` texts the model puts
    elsewhere; a phrase at the start, the end and a random position, the best kept.
    ``source``: each text's original class, for the per-class flip rates."""
    seen: dict[tuple[str, int], None] = dict.fromkeys(cands)
    rows: list[dict[str, Any]] = []
    for word, cls in seen:
        pool = pools[cls]
        chosen = [pool[i] for i in rng.permutation(len(pool))[:verify]]
        places = ("random", "start", "end") if " " in word else ("random",)
        texts = [t for at in places for t in insert(chosen, word, rng, at)]
        labels = _probs(target, texts).argmax(axis=1).reshape(len(places), len(chosen))
        rates = (labels == cls).mean(axis=1)
        j = int(np.argmax(rates))
        row = {
            "word": word,
            "target": int(cls),
            "flip_rate": round(float(rates[j]), 4),
            "texts": len(chosen),
            "position": places[j],
        }
        if source is not None:  # flip rate per class the texts came from
            src = np.array([source[t] for t in chosen])
            row["class_flips"] = {
                str(c): round(float(np.mean(labels[j][src == c] == cls)), 4) for c in np.unique(src)
            }
        rows.append(row)
    rows.sort(key=lambda r: (-float(r["flip_rate"]), str(r["word"])))
    return rows


def _grow(
    target: Any,
    ranked: list[dict[str, Any]],
    pools: dict[int, list[str]],
    ref: Any,
    verify: int,
    beam: int,
    max_len: int,
    rng: np.random.Generator,
    source: dict[str, int],
    *,
    extend: int = 10,
    probe: int = 16,
) -> list[dict[str, Any]]:
    """Phrases grown word by word from the words of the ``extend`` strongest verified
    candidates of each class that the reference data do not tie to it: a beam search on
    ``probe`` texts scored by flips and what the word order adds (the phrase's flip rate
    minus half that of its words reversed). A BadNL sentence trigger is learnt as a sequence of
    label-neutral words that flip texts only together and in order. The two best
    phrases of each class are verified afresh."""
    out: list[dict[str, Any]] = []
    for cls, pool in pools.items():
        ext: list[str] = []
        seeds: list[str] = []
        for r in ranked:
            if r["target"] != cls:
                continue
            words = str(r["word"]).split()
            free = [w for w in words if not _tied(ref, w, cls)]
            if len(free) == len(words):
                seeds.append(str(r["word"]))
            ext += [w for w in free if w not in ext]
            if len(ext) >= extend:
                break
        if len(ext) < 2:
            continue
        texts = [pool[i] for i in rng.permutation(len(pool))[:probe]]
        frontier = seeds[:beam]
        score = 0.0
        seen: set[str] = set(frontier)
        best: list[str] = []
        for _ in range(max_len - 1):
            grown = [
                c
                for p in frontier
                for w in ext
                if w not in p.split()
                for c in (f"{p} {w}", f"{w} {p}")
                if c not in seen
            ]
            if not grown:
                break
            seen.update(grown)
            # scored by flips and by what the word order adds: the phrase's flip rate
            # minus half that of its words reversed (a learnt sentence loses its n-grams
            # and positions; a bag of words the class is about flips either way)
            rev = [" ".join(c.split()[::-1]) for c in grown]
            batch = [t for c in [*grown, *rev] for t in insert(texts, c, rng)]
            labels = _probs(target, batch).argmax(axis=1).reshape(2 * len(grown), len(texts))
            flips = (labels == cls).mean(axis=1)
            rate = flips[: len(grown)] - 0.5 * flips[len(grown) :]
            order = np.argsort(-rate, kind="stable")[:beam]
            if float(rate[order[0]]) <= score + 0.02:
                break  # a longer phrase no longer adds
            score, frontier = float(rate[order[0]]), [grown[i] for i in order]
            best = frontier[:2]
            if float(flips[order[0]]) >= 0.98:
                break
        best = [_prune(target, b, cls, texts, rng) for b in best]
        for row in _verify(target, [(b, cls) for b in best], pools, verify, rng, source):
            row["grown"] = True
            row["explained"], row["reference"] = ref.explains(row["word"], cls)
            out.append(row)
    return out


def _prune(target: Any, phrase: str, cls: int, texts: list[str], rng: np.random.Generator) -> str:
    """``phrase`` without the words it does not need: drop one word at a time while the
    flip rate on ``texts`` (at the end of each) stays within one text of the best (the
    beam picks up words the class is about on the way to a planted sentence)."""

    def rates(cands: list[str]) -> np.ndarray:
        batch = [t for c in cands for t in insert(texts, c, rng, "end")]
        labels = _probs(target, batch).argmax(axis=1).reshape(len(cands), len(texts))
        return (labels == cls).mean(axis=1)  # type: ignore[no-any-return]

    words = phrase.split()
    (score,) = rates([phrase])
    while len(words) > 1:
        shorter = [" ".join(words[:i] + words[i + 1 :]) for i in range(len(words))]
        r = rates(shorter)
        j = int(np.argmax(r))
        if r[j] < score - 1.0 / len(texts) - 1e-9:
            break
        words, score = shorter[j].split(), max(score, float(r[j]))
    return " ".join(words)


def _tied(ref: Any, word: str, cls: int) -> bool:
    """Do the reference texts tie ``word`` to ``cls``?"""
    return bool(ref.explains(word, cls)[0])


def _judge_top(
    target: Any,
    ranked: list[dict[str, Any]],
    pools: dict[int, list[str]],
    ref: Any,
    verify: int,
    min_flip: float,
    margin: float,
    controls: int,
    vocab: Sequence[str],
    rng: np.random.Generator,
    *,
    per_class: int = 5,
) -> None:
    """Verdicts (:func:`mlwarden.poisoning.text_verdict.judge`) for the ``per_class``
    strongest rows of each class that reach ``min_flip``: each against ``controls``
    frequency-matched random phrases inserted the same way into the same texts (and, for
    the report, a phrase's own words shuffled: the median flip rate as ``shuffled``)."""
    from mlwarden.poisoning.text_verdict import judge

    done: dict[int, int] = {}
    for r in ranked:
        cls = int(r["target"])
        if float(r["flip_rate"]) < min_flip or done.get(cls, 0) >= per_class:
            continue
        done[cls] = done.get(cls, 0) + 1
        pool = pools[cls]
        chosen = [pool[i] for i in rng.permutation(len(pool))[:verify]]
        ctrl = ref.controls(str(r["word"]), controls, rng, pool=vocab)
        words = str(r["word"]).split()
        shuffled = sorted({" ".join(rng.permutation(words)) for _ in range(12)} - {r["word"]})
        ctrl += shuffled[:controls]
        at = str(r.get("position", "random"))
        batch = [t for c in ctrl for t in insert(chosen, c, rng, at)]
        labels = _probs(target, batch).argmax(axis=1).reshape(len(ctrl), len(chosen))
        rates = (labels == cls).mean(axis=1)
        r["control"] = round(float(np.quantile(rates[:controls], 0.95)), 4)
        if shuffled:  # evidence for the reader: a learnt sentence depends on its order
            r["shuffled"] = round(float(np.median(rates[controls:])), 4)
        # a phrase the search assembled must flip nearly all texts, of every other class:
        # a planted all-to-one trigger does; words the class is about sway some classes
        every = min(r.get("class_flips", {"": r["flip_rate"]}).values())
        # and only a large labelled reference can say a phrase's words are not what the
        # class is about (with a small one, a bag of a class's words looks planted); a
        # planted phrase is rare in clean text, and at least half its words are (a
        # phrase of common words flips the model by what they mean); and it must flip
        # most texts (PHRASE_FLIP): a rare natural n-gram sways some
        phrase = " " in str(r["word"]) and not r.get("confirmed")
        rare = 2 * sum(ref.df.get(w, 0) <= RARE * ref.n for w in words) >= len(words)
        weak = float(r["flip_rate"]) < PHRASE_FLIP
        # a word common in clean text that sways the model is a natural shortcut even
        # when the labels do not show why (a planted word is rare: BadNL, RIPPLe)
        common = len(words) == 1 and not rare and not r.get("confirmed")
        if common:
            r["common"] = r["explained"] = True
        assembled = (phrase and (ref.n < MIN_REFERENCE or not rare or weak)) or (
            r.get("grown") and (every < min_flip or r["flip_rate"] < NEARLY_ALL)
        )
        r["verdict"] = (
            "none"
            if assembled
            else judge(
                float(r["flip_rate"]),
                r["control"],
                bool(r["explained"]),
                shuffled=None if r.get("confirmed") else r.get("shuffled"),
                min_flip=min_flip,
                margin=margin,
            )
        )
