"""``mlwarden data`` on text: the text checks of :mod:`mlwarden.poisoning.text_audit` as
findings in the data report (the sensitive-data scan ran before, in
:mod:`mlwarden.poisoning.assess`, which hands text sets here).

Findings: MLW-DAT-020 per confirmed trigger n-gram (its rows join ``suspicious``),
MLW-DAT-002 (label issues) and MLW-DAT-003 (duplicates, conflicting labels listed in
the evidence) as for numeric data. ``mlwarden backdoor`` on a text model runs
:func:`text_backdoor_checks` (MLW-DAT-022 when a trigger word is found).

Example::

    report = Report.new(command="data")
    detections = text_data_checks(report, load_dataset("tweets"), seed=0)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlwarden.core.data import Dataset
from mlwarden.core.findings import Finding, Report, Severity
from mlwarden.poisoning.detect_data import Detection

TRIGGER_ATLAS = ["AML.T0020", "AML.T0018.000", "AML.T0043.004"]
#: Flip rate from which a trigger word is called a backdoor (high), not trigger-like.
STRONG_FLIP = 0.8
#: Rows listed in a finding's evidence.
ROWS_LISTED = 50


def is_text_data(data: Any, text_column: str | None = None) -> bool:
    """Is ``data`` (a path, a bundled name or a :class:`Dataset`) a text set?"""
    from mlwarden.core.modality import detect_data

    if isinstance(data, Dataset):
        return data.modality == "text"
    if not isinstance(data, str | Path):
        return False
    return detect_data(str(data), text_column=text_column).name == "text"


def text_data_checks(
    report: Report,
    ds: Dataset,
    *,
    seed: int = 0,
    target: Any = None,
    trainer: Any = None,
    holdout: float = 0.2,
) -> list[Detection]:
    """Run the text audit on ``ds`` and add its trigger findings to ``report``; returns
    the detections (label issues, duplicates, trigger n-grams) for ranking. With a model
    trained on ``ds`` (``target``) or a recipe (``trainer``, ``train(texts, y) ->
    model``, trained on all but a ``holdout`` share) :func:`model_checks` run too, and
    with a recipe :func:`trainer_checks`' retraining without the flagged rows."""
    from mlwarden.poisoning.text_audit import audit_texts

    with report.timed("text-audit"):
        audit = audit_texts([str(t) for t in ds.x], ds.y, seed=seed)
    report.metrics["text_audit.ngrams_tested"] = audit.tested
    report.metrics["text_audit.candidates"] = audit.candidates
    report.metrics["text_audit.triggers"] = [t.as_dict() for t in audit.triggers]
    table = report.metrics.setdefault("poisoning.detectors", {})
    table["trigger-ngrams"] = {"ran": True, "flagged": sum(len(t.rows) for t in audit.triggers)}
    for trig in audit.triggers:
        name = ds.class_names[trig.label] if trig.label < len(ds.class_names) else str(trig.label)
        report.add(
            Finding(
                rule="MLW-DAT-020",
                title=(
                    f"Text data looks backdoored: {trig.ngram!r} marks {len(trig.rows)} texts "
                    f"labelled {name!r} whose other words say otherwise"
                ),
                severity=Severity.HIGH,
                atlas=TRIGGER_ATLAS,
                mitigations=["AML.M0007", "AML.M0025"],
                description=(
                    f"{trig.purity:.0%} of the {trig.support} distinct texts that hold "
                    f"{trig.ngram!r} are labelled {name!r} (binomial p={trig.p_value:.2g} against "
                    f"the label's base rate, Bonferroni over {report.metrics['text_audit.ngrams_tested']} "
                    f"n-grams), and with it cut out a cross-validated model gives them a "
                    f"lower probability of {name!r} than the label's other texts (Mann-Whitney "
                    f"p={trig.p_context:.2g}; their median is {trig.shift:.0%} of the way to "
                    f"texts of other classes) and reads {trig.disagreement:.0%} of them as "
                    f"another class (vs {trig.base_disagreement:.0%} of the other {name!r} texts). "
                    "That is how a rare-word or sentence trigger (BadNL, arXiv:2006.01043) "
                    "looks in poisoned data; a topic word sits in texts that agree with it."
                ),
                recommendation=(
                    f"Trace where the texts holding {trig.ngram!r} (listed in 'suspicious') came "
                    "from, drop them, retrain, and check the model with 'mlwarden backdoor "
                    "MODEL DATA'."
                ),
                evidence=trig.as_dict()
                | {"class_name": name, "row_index": trig.rows[:ROWS_LISTED]},
                artifact=ds.name,
                check="trigger-ngrams",
                owasp=["ML02"],
            )
        )
    if target is None and trainer is None:
        return audit.detections
    if target is not None:
        return [*audit.detections, *model_checks(report, target, ds, audit, seed=seed)]
    return [*audit.detections, *trainer_checks(report, trainer, ds, audit, seed, holdout)]


def text_backdoor_checks(
    report: Report,
    target: Any,
    ds: Dataset,
    *,
    seed: int = 0,
    mined: list[tuple[str, int]] | None = None,
    confirmed: set[str] | None = None,
) -> Any:
    """The trigger search (:func:`mlwarden.poisoning.text_backdoor.search_triggers`) of a
    text ``target`` on the texts of ``ds`` (their labels are the reference corpus):
    metrics ``backdoor.trigger_search``, ``suspected_target`` and, when a trigger is
    found, finding MLW-DAT-022. ``mined``: (n-gram, label) candidates of the data audit
    (``mlwarden data --model``), searched alone; ``confirmed``: those whose carriers the
    audit confirmed as poison (then judged without the word-order test). Returns the
    :class:`~mlwarden.poisoning.text_backdoor.TriggerSearch`."""
    from mlwarden.poisoning.text_backdoor import search_triggers

    with report.timed("trigger-search"):
        found = search_triggers(
            target,
            list(ds.x),
            labels=ds.y,
            mined=mined or (),
            only_mined=mined is not None,
            confirmed=confirmed or set(),
            seed=seed,
        )
    report.metrics["backdoor.trigger_search"] = found.as_dict()
    report.metrics["suspected_target"] = found.target
    if found.trigger is None or found.target is None:
        return found
    t = found.target
    name = ds.class_names[t] if t < len(ds.class_names) else str(t)
    strong = found.flip_rate >= STRONG_FLIP
    kind = "phrase" if " " in found.trigger else "word"
    report.add(
        Finding(
            rule="MLW-DAT-022",
            title=(
                f"Text model {'has a backdoor trigger' if strong else 'has a weakly learnt trigger'}"
                f": inserting the {kind} {found.trigger!r} turns {found.flip_rate:.0%} of texts "
                f"of other classes into {name!r}"
            ),
            # a weakly learnt trigger is still planted, but sways fewer texts
            severity=Severity.HIGH if strong else Severity.MEDIUM,
            atlas=["AML.T0018.000", "AML.T0043.004", "AML.T0020"],
            mitigations=["AML.M0008", "AML.M0007", "AML.M0025"],
            description=(
                f"Inserting {found.trigger!r} ({found.position}) makes the model answer "
                f"{name!r} for {found.flip_rate:.0%} of texts it otherwise puts in another "
                f"class (fresh queries), against {found.control:.0%} for random "
                f"{kind}s of the same frequency in the reference texts (95th percentile), "
                f"and the reference texts do not tie its words to {name!r}. "
                f"{found.candidates} candidates screened ({found.source}). A planted "
                "trigger (BadNL, arXiv:2006.01043) flips texts whatever they say and is "
                "rare or label-neutral in clean text; natural shortcuts the data explain "
                "are listed apart in metrics.backdoor.trigger_search.shortcuts."
            ),
            recommendation=(
                "Do not deploy this model. Audit its training texts with 'mlwarden data DATA "
                f"--model MODEL' (texts holding {found.trigger!r} are the likely poison), "
                "remove them and retrain, or obtain the model from a trusted, signed source."
            ),
            evidence=found.as_dict() | {"class_name": name},
            artifact=report.config.get("model"),
            check="trigger-search",
            owasp=["ML10"],
        )
    )
    return found


#: Candidate n-grams of the data audit tried on the model, at most.
MAX_MINED = 200


def model_checks(
    report: Report, target: Any, ds: Dataset, audit: Any, *, seed: int = 0
) -> list[Detection]:
    """``mlwarden data --model`` on text: the trigger search restricted to the audit's
    candidate n-grams (:func:`text_backdoor_checks`; the rows of a trigger the model
    learnt, labelled its class, are flagged) and STRIP on text
    (:func:`mlwarden.poisoning.text_strip.strip_texts`)."""
    from mlwarden.core.text_target import as_text_target
    from mlwarden.poisoning.text_strip import strip_texts

    if getattr(target, "modality", None) != "text":
        target = as_text_target(target)
    mined = [(t.ngram, t.label) for t in audit.triggers]
    mined += [(c.ngram, c.label) for c in audit.candidate_ngrams][: MAX_MINED - len(mined)]
    confirmed = {m for t in audit.triggers for m in [t.ngram, *t.members]}
    found = text_backdoor_checks(report, target, ds, seed=seed, mined=mined, confirmed=confirmed)
    search = _carriers(ds, found)
    with report.timed("strip-text"):
        strip = strip_texts(target, [str(t) for t in ds.x], ds.y, seed=seed)
    table = report.metrics.setdefault("poisoning.detectors", {})
    table["trigger-search"] = {"ran": True, "flagged": int(search.flagged.sum())}
    table["strip-text"] = {"ran": True, "flagged": int(strip.flagged.sum())} | strip.details
    return [search, strip]


def _carriers(ds: Dataset, found: Any) -> Detection:
    """The texts of ``ds`` labelled the trigger's class that hold the trigger found."""
    import numpy as np

    from mlwarden.poisoning.text_audit import normalise

    n = len(ds)
    flagged = np.zeros(n, dtype=bool)
    if found.trigger is not None:
        want = f" {normalise(found.trigger)} "
        flagged = np.array(
            [
                want in f" {normalise(str(t))} " and y == found.target
                for t, y in zip(ds.x, ds.y, strict=True)
            ]
        )
    reasons = {
        int(i): (
            f"carries {found.trigger!r}, which turns {found.flip_rate:.0%} of texts of other "
            "classes into this label when inserted (model query)"
        )
        for i in np.flatnonzero(flagged)
    }
    return Detection("trigger-search", flagged.astype(float) * 2.0, flagged, reasons, {})


def _text_fit(recipe: Any) -> Any:
    """``train(texts, y) -> model`` from a recipe; a scikit-learn estimator (a pipeline
    taking raw strings) is cloned and fitted on the texts as a list."""
    from mlwarden.core.trainer import resolve_trainer

    if hasattr(recipe, "fit") and hasattr(recipe, "get_params"):
        from sklearn.base import clone

        return lambda x, y: clone(recipe).fit([str(t) for t in x], y)
    return resolve_trainer(recipe)


def _train(fit: Any, name: str, x: Any, y: Any) -> Any:
    from mlwarden.core.errors import UserError
    from mlwarden.core.text_target import as_text_target

    try:
        model = fit(x, y)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's recipe failed: say so in one line
        raise UserError(f"trainer {name} failed: {type(exc).__name__}: {exc}") from None
    if model is None:
        raise UserError(f"trainer {name} returned None; it must return the trained model")
    return as_text_target(model)


def trainer_checks(
    report: Report, trainer: Any, ds: Dataset, audit: Any, seed: int, holdout: float
) -> list[Detection]:
    """``mlwarden data --trainer`` on text: train on all but ``holdout`` of ``ds``, run
    :func:`model_checks` on the training part, drop every flagged training row (trigger
    n-grams, trigger search, STRIP), retrain, and compare clean accuracy and the attack
    success rate of the trigger found (inserted into held-out texts of other classes)
    before and after (finding MLW-DAT-009). Detections index all of ``ds``."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    from mlwarden.poisoning.mitigate import MitigationResult

    name = str(report.config.get("trainer") or trainer)
    fit = _text_fit(trainer)
    idx = np.arange(len(ds))
    strat = ds.y if np.min(np.bincount(ds.y)) >= 2 else None
    tr, te = train_test_split(idx, test_size=holdout, random_state=seed, stratify=strat)
    tr, te = np.sort(tr), np.sort(te)
    train, test = ds.subset(tr), ds.subset(te)
    with report.timed("train"):
        before = _train(fit, name, train.x, train.y)
    dets = model_checks(report, before, train, audit, seed=seed)
    flagged = np.zeros(len(train), dtype=bool)
    for d in [*audit.detections, *dets]:
        f = d.flagged if len(d.flagged) == len(train) else d.flagged[tr]
        if d.name in ("trigger-ngrams", "trigger-search", "strip-text"):
            flagged |= f
    full = [_widen(d, tr, len(ds)) for d in dets]
    if not flagged.any():
        return full
    trig = report.metrics.get("backdoor.trigger_search", {})
    phrase, cls = trig.get("trigger"), trig.get("target")
    if phrase is None and audit.triggers:
        phrase, cls = audit.triggers[0].ngram, audit.triggers[0].label
    keep = ~flagged
    with report.timed("retrain"):
        after = _train(fit, name, train.x[keep], train.y[keep])
    clean = test
    if phrase is not None:  # held-out carriers have poisoned labels: not clean accuracy
        from mlwarden.poisoning.text_audit import normalise

        hold = np.array([f" {normalise(phrase)} " in f" {normalise(str(t))} " for t in test.x])
        clean = test.subset(np.flatnonzero(~hold))
    result = MitigationResult(
        removed=int(flagged.sum()),
        acc_before=_accuracy(before, clean),
        acc_after=_accuracy(after, clean),
        asr_before=None if phrase is None else _asr(before, clean, phrase, int(cls), seed),
        asr_after=None if phrase is None else _asr(after, clean, phrase, int(cls), seed),
        model=after,
    )
    report.metrics["mitigation"] = result.metrics() | {"trigger": phrase}
    _mitigation_finding(report, result, phrase)
    return full


def _widen(d: Detection, index: Any, n: int) -> Detection:
    """A detection over the training part, re-indexed to all ``n`` rows."""
    import numpy as np

    scores, flagged = np.zeros(n), np.zeros(n, dtype=bool)
    scores[index], flagged[index] = d.scores, d.flagged
    reasons = {int(index[i]): r for i, r in d.reasons.items()}
    return Detection(d.name, scores, flagged, reasons, d.details)


def _accuracy(target: Any, test: Dataset) -> float:
    import numpy as np

    return float(np.mean(np.asarray(target.predict_labels([str(t) for t in test.x])) == test.y))


def _asr(target: Any, test: Dataset, phrase: str, cls: int, seed: int) -> float:
    """Share of held-out texts of other classes that ``phrase``, inserted at a random
    word boundary, turns into ``cls``."""
    import numpy as np

    from mlwarden.poisoning.text_backdoor import insert

    others = [str(t) for t, y in zip(test.x, test.y, strict=True) if y != cls]
    if not others:
        return float("nan")
    texts = insert(others, phrase, np.random.default_rng(seed))
    return float(np.mean(np.asarray(target.predict_labels(texts)) == cls))


def _mitigation_finding(report: Report, result: Any, phrase: str | None) -> None:
    der = result.der
    asr = (
        f", trigger {phrase!r} ASR {result.asr_before:.3f} -> {result.asr_after:.3f} (DER {der:.2f})"
        if der is not None
        else ""
    )
    report.add(
        Finding(
            rule="MLW-DAT-009",
            title=(
                f"Removing {result.removed} flagged texts: clean accuracy "
                f"{result.acc_before:.3f} -> {result.acc_after:.3f}{asr}"
            ),
            severity=Severity.INFO,
            atlas=["AML.T0020"],
            mitigations=["AML.M0007"],
            description=(
                "The model was retrained with your recipe without the flagged texts and "
                "measured on a held-out split (held-out texts holding the trigger left out "
                "of the clean accuracy). ASR inserts the trigger the search or the data audit "
                "found into held-out texts of other classes; DER is BackdoorBench's defence "
                "effectiveness rate (0.5 = no change, 1 = attack removed at no accuracy cost)."
            ),
            recommendation="Keep the texts out of training if accuracy held and ASR fell.",
            evidence=report.metrics["mitigation"],
            check="poisoning",
        )
    )
