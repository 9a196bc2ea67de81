"""Text evasion as a Report: metrics, findings (MLW-EVA-020, MLW-EVA-021), examples.

:func:`text_evasion_report` is what ``mlwarden evasion MODEL DATA`` runs when the model
or the data is text (see :mod:`mlwarden.core.modality`). Metrics:
``evasion.clean_accuracy``, ``evasion.robust_accuracy`` (correct and not broken by any
recipe), ``evasion.queries_median`` (median model queries per successful attack, each
sample's cheapest successful recipe), per recipe under ``evasion.recipes``. The
default recipes run as a cascade: each later one attacks only the texts the earlier
ones did not break (its ``attacked`` count; its ``robust_accuracy`` is the one after it
and the recipes before it); recipes named with ``--recipe`` each attack every text.
Findings
cite ATLAS AML.T0015 (Evade AI Model) and AML.T0043.001/.000 (Craft Adversarial Data:
black-box / white-box), with mitigations AML.M0003, AML.M0010, AML.M0015.

Example::

    report = text_evasion_report(["spam.joblib"], "messages.csv", max_change=0.2, limit=200)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mlwarden.core.data import Dataset, load_dataset
from mlwarden.core.errors import UserError
from mlwarden.core.findings import Finding, Report, Severity, change_text
from mlwarden.evasion.text.attack import RECIPES, TextAttackResult, attack_texts
from mlwarden.evasion.text.threat import ThreatModel, words

MITIGATIONS = ["AML.M0003", "AML.M0010", "AML.M0015"]
EXAMPLES = 20


def _recipes_for(target: Any, recipes: Sequence[str] | None) -> list[str]:
    if recipes:
        bad = [r for r in recipes if r not in RECIPES]
        if bad:
            raise UserError(f"unknown text attack {bad[0]!r}; choose from {', '.join(RECIPES)}")
        return list(recipes)
    white = getattr(target, "access", "") == "white" and hasattr(target, "embedding_forward")
    # cheapest first: a sample broken by the first recipe costs only its queries
    return ["hotflip", "combined"] if white else ["deepwordbug", "combined"]


def text_evasion_report(
    models: Sequence[Any],
    data: str | Dataset,
    *,
    max_change: float = 0.2,
    limit: int | None = 200,
    seed: int = 0,
    recipes: Sequence[str] | None = None,
    max_queries: int = 2000,
    text_column: str | None = None,
    label: str | None = None,
    save_adversarial: str | Path | None = None,
    normalise: bool = False,
    access: str | None = None,
) -> Report:
    """Attack text models on ``data`` under the threat model and report it (see module)."""
    from mlwarden.evasion.report import _load, _name, _subset

    if not models:
        raise UserError("give at least one MODEL to evaluate")
    tm = ThreatModel(max_change=max_change)
    ds = (
        data
        if isinstance(data, Dataset)
        else load_dataset(data, label=label, text_column=text_column)
    )
    if ds.modality != "text":
        raise UserError(f"the data is {ds.modality}; a text model needs text data")
    sub = _subset(ds, limit, seed)
    report = Report.new(command="evasion", seed=seed)
    report.data = ds.describe() | {"evaluated": len(sub)}
    report.config = {"modality": "text", "max_change": max_change, "limit": limit,
                     "max_queries_per_sample": max_queries, "threat_model": tm.describe(),
                     "normalise": normalise}  # fmt: skip
    saved: list[dict[str, Any]] = []
    for i, spec in enumerate(models):
        name = _name(spec, i)
        target = _load(spec, access)
        if not hasattr(target, "modality") or target.modality != "text":
            raise UserError(f"{name} does not take text; give a text model for text data")
        with report.timed(f"evasion.{name}"):
            results = _run(target, sub, tm, _recipes_for(target, recipes), max_queries,
                           cascade=not recipes)  # fmt: skip
        merged = _merge(results)
        _record(report, name, target, results, merged, tm, first=i == 0)
        if normalise:
            with report.timed(f"evasion.{name}.defence"):
                _defence(report, name, target, merged, sub, tm)
        saved.extend(_saved_rows(merged, sub) if i == 0 else [])
        if i == 0:
            report.target = target.describe()
    if save_adversarial is not None:
        write_jsonl(save_adversarial, saved)
    return report


def _defence(
    report: Report, name: str, target: Any, merged: TextAttackResult, sub: Dataset, tm: ThreatModel
) -> None:
    """MLW-EVA-021: the normalisation defence, non-adaptive and adaptive figures."""
    from mlwarden.defenses.text import NormalisedTextTarget, adaptive_figures

    defended = NormalisedTextTarget(target)
    fig = adaptive_figures(target, defended, merged, sub.x, sub.y, tm)
    report.metrics["evasion"]["models"][name]["defence"] = fig
    if name == next(iter(report.metrics["evasion"]["models"])):
        report.metrics["evasion"]["defence"] = fig
    adaptive, naive = fig["robust_accuracy_adaptive"], fig["robust_accuracy_non_adaptive"]
    report.add(
        Finding(
            rule="MLW-EVA-021",
            title=f"{name}: with input normalisation, robust accuracy is {adaptive:.1%} against "
            f"an attack that knows it ({naive:.1%} against replayed non-adaptive texts)",
            severity=Severity.MEDIUM if adaptive < 0.8 * fig["clean_accuracy"] else Severity.INFO,
            atlas=["AML.T0015", "AML.T0043.001"],
            mitigations=["AML.M0010"],
            description=(
                "NFKC, invisible-character stripping and homoglyph folding were put in front "
                "of the model. Adversarial texts made on the bare model were replayed "
                f"through it (non-adaptive: {naive:.1%}), then the model was attacked "
                f"through it by an attack that knows the normalisation (adaptive: {adaptive:.1%})."
            ),
            recommendation="Quote the adaptive figure; normalisation removes only the "
            "character tricks, not synonym swaps or ordinary misspellings.",
            evidence=fig,
            artifact=name,
            check="evasion.text.defence",
        )
    )


def _run(
    target: Any,
    sub: Dataset,
    tm: ThreatModel,
    recipes: list[str],
    max_queries: int,
    cascade: bool = False,
) -> dict[str, TextAttackResult]:
    """Each recipe on every text, or with ``cascade`` (the default recipes) each later
    recipe only on the texts the earlier ones did not break, as an attacker runs them."""
    out: dict[str, TextAttackResult] = {}
    texts = list(sub.x)
    for recipe in recipes:
        todo = np.arange(len(texts))
        if cascade and out:
            first = next(iter(out.values()))
            broken = np.any([r.success for r in out.values()], axis=0)
            todo = np.nonzero((first.clean_pred == first.labels) & ~broken)[0]
            if len(todo) < len(texts):
                part = attack_texts(target, [texts[k] for k in todo], sub.y[todo], recipe=recipe,
                                    threat=tm, max_queries=max_queries)  # fmt: skip
                out[recipe] = _spread(part, todo, first)
                continue
        out[recipe] = attack_texts(
            target, texts, sub.y, recipe=recipe, threat=tm, max_queries=max_queries
        )
    return out


def _spread(part: TextAttackResult, idx: np.ndarray, base: TextAttackResult) -> TextAttackResult:
    """A result on the texts ``idx`` as one over all of ``base``'s texts (the others: not
    attacked, no queries)."""
    n = len(base.labels)
    adv = list(base.original)
    changed: list[list[int]] = [[] for _ in range(n)]
    success, queries = np.zeros(n, bool), np.zeros(n, np.int64)
    pred = base.clean_pred.copy()
    for j, k in enumerate(idx):
        adv[k], changed[k] = part.adversarial[j], part.changed[j]
        success[k], queries[k], pred[k] = part.success[j], part.queries[j], part.adv_pred[j]
    return TextAttackResult(base.original, adv, base.labels, base.clean_pred, pred, success,
                            queries, changed, part.recipe, part.threat, part.rejected,
                            attacked=len(idx))  # fmt: skip


def _merge(results: dict[str, TextAttackResult]) -> TextAttackResult:
    """Per sample, the successful recipe with the fewest queries (an attacker runs the
    recipes in turn; queries of failed recipes before it are counted too)."""
    order = list(results.values())
    base = order[0]
    adv, pred, changed = list(base.adversarial), base.adv_pred.copy(), list(base.changed)
    success = np.zeros(len(base.labels), bool)
    queries = np.zeros(len(base.labels), np.int64)
    for k in range(len(base.labels)):
        spent = 0
        for res in order:
            spent += int(res.queries[k])
            if res.success[k]:
                success[k] = True
                adv[k], pred[k], changed[k] = res.adversarial[k], res.adv_pred[k], res.changed[k]
                break
        queries[k] = spent
    return TextAttackResult(base.original, adv, base.labels, base.clean_pred, pred, success,
                            queries, changed, "+".join(results), base.threat,
                            sum(r.rejected for r in order))  # fmt: skip


def _record(
    report: Report,
    name: str,
    target: Any,
    results: dict[str, TextAttackResult],
    merged: TextAttackResult,
    tm: ThreatModel,
    *,
    first: bool,
) -> None:
    recipes: dict[str, Any] = {}
    broken = np.zeros(len(merged.labels), bool)
    for r, res in results.items():
        broken |= res.success
        correct = res.clean_pred == res.labels
        # in a cascade a recipe's own successes leave out what earlier ones broke: its
        # robust accuracy is the one after it and the recipes before it
        robust = res.robust_accuracy if res.attacked is None else float(np.mean(correct & ~broken))
        recipes[r] = {"success_rate": _rate(res), "queries_median": res.queries_median,
                      "robust_accuracy": robust, "rejected_by_threat_model": res.rejected,
                      "attacked": len(res.labels) if res.attacked is None else res.attacked}  # fmt: skip
    per = {
        "clean_accuracy": merged.clean_accuracy,
        "robust_accuracy": merged.robust_accuracy,
        "queries_median": merged.queries_median,
        "recipes": recipes,
    }
    report.metrics.setdefault("evasion", {"models": {}})["models"][name] = per
    if first:
        for key in ("clean_accuracy", "robust_accuracy", "queries_median"):
            report.metrics["evasion"][key] = per[key]
        report.artifacts["text_examples"] = _examples(merged)
    report.add(_finding(name, target, merged, tm))


def _rate(res: TextAttackResult) -> float:
    correct = res.clean_pred == res.labels
    return float(res.success.sum() / correct.sum()) if correct.any() else 0.0


def _finding(name: str, target: Any, res: TextAttackResult, tm: ThreatModel) -> Finding:
    clean, robust = res.clean_accuracy, res.robust_accuracy
    ratio = robust / clean if clean > 0 else 0.0
    sev = (Severity.HIGH if ratio < 0.5 else Severity.MEDIUM if ratio < 0.8
           else Severity.LOW if ratio < 0.95 else Severity.INFO)  # fmt: skip
    white = target.access == "white"
    return Finding(
        rule="MLW-EVA-020",
        title=f"{name}: text accuracy {change_text(clean, robust)} when at most "
        f"{tm.max_change:.0%} of the words are swapped for synonyms or misspelt",
        severity=sev,
        atlas=[
            "AML.T0015",
            "AML.T0043.000" if white else "AML.T0043.001",
            "AML.T0044" if white else "AML.T0040",
        ],  # fmt: skip
        mitigations=MITIGATIONS,
        description=(
            f"An attacker with {target.access} access changed the decision on "
            f"{int(res.success.sum())} of {len(res.labels)} texts ({res.recipe}); each "
            "adversarial text keeps every word count, changes at most max(int(r*n),1) words, "
            "each a WordNet synonym or within 2 character edits (homoglyphs and invisible "
            f"characters included); median {res.queries_median:g} queries per success."
        ),
        recommendation=(
            "Normalise inputs before the model (NFKC, strip invisible characters, fold "
            "homoglyphs: mlwarden.defenses.text), train on adversarial and misspelt texts, "
            "and re-run with --normalise to see the adaptive figure."
        ),
        evidence={
            "clean_accuracy": clean,
            "robust_accuracy": robust,
            "queries_median": res.queries_median,
            "threat_model": tm.describe(),
            "rejected_by_threat_model": res.rejected,
        },  # fmt: skip
        artifact=name,
        check="evasion.text",
        owasp=["ML01"],
    )


def _examples(res: TextAttackResult) -> list[dict[str, Any]]:
    out = []
    for k in np.nonzero(res.success)[0][:EXAMPLES]:
        old, new = words(res.original[k]), words(res.adversarial[k])
        out.append({
            "index": int(k), "label": int(res.labels[k]), "prediction": int(res.adv_pred[k]),
            "original": [[w, w != n] for w, n in zip(old, new, strict=True)],
            "adversarial": [[n, w != n] for w, n in zip(old, new, strict=True)],
        })  # fmt: skip
    return out


def _saved_rows(res: TextAttackResult, sub: Dataset) -> list[dict[str, Any]]:
    return [
        {"index": int(k), "text": res.original[k], "adversarial": res.adversarial[k],
         "label": int(res.labels[k]), "prediction": int(res.adv_pred[k]),
         "queries": int(res.queries[k])}
        for k in np.nonzero(res.success)[0]
    ]  # fmt: skip


#: Characters that ``str.splitlines`` (and some JSONL readers) take for line ends; valid
#: raw inside a JSON string, so ``json.dumps(ensure_ascii=False)`` leaves them unescaped.
_BREAK_TABLE = {ord(c): f"\\u{ord(c):04x}" for c in "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"}


def write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """One JSON object per line (UTF-8, non-ASCII kept as is, except characters some
    readers split lines at, such as U+0085 in a tweet, which are escaped)."""
    path = Path(path)
    try:
        with path.open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False).translate(_BREAK_TABLE) + "\n")
    except OSError as exc:
        raise UserError(f"cannot write {path} ({exc.strerror or exc})") from None
