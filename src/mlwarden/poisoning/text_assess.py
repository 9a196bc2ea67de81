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


def text_data_checks(report: Report, ds: Dataset, *, seed: int = 0) -> list[Detection]:
    """Run the text audit on ``ds`` and add its trigger findings to ``report``; returns
    the detections (label issues, duplicates, trigger n-grams) for ranking."""
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
    return audit.detections


def text_backdoor_checks(report: Report, target: Any, ds: Dataset, *, seed: int = 0) -> None:
    """The trigger search (:func:`mlwarden.poisoning.text_backdoor.search_triggers`) of a
    text ``target`` on the clean texts of ``ds``: metrics ``backdoor.trigger_search``,
    ``suspected_target`` and, when a trigger is found, finding MLW-DAT-022."""
    from mlwarden.poisoning.text_backdoor import search_triggers

    with report.timed("trigger-search"):
        found = search_triggers(target, list(ds.x), seed=seed)
    report.metrics["backdoor.trigger_search"] = found.as_dict()
    report.metrics["suspected_target"] = found.target
    if found.trigger is None or found.target is None:
        return
    t = found.target
    name = ds.class_names[t] if t < len(ds.class_names) else str(t)
    top = found.ranked[1]["flip_rate"] if len(found.ranked) > 1 else 0.0
    strong = found.flip_rate >= STRONG_FLIP
    report.add(
        Finding(
            rule="MLW-DAT-022",
            title=(
                f"Text model {'has a backdoor trigger' if strong else 'has a trigger-like word'}: "
                f"inserting {found.trigger!r} turns {found.flip_rate:.0%} of texts of other "
                f"classes into {name!r}"
            ),
            # a word that sways most but not nearly all texts may be a weakly learnt
            # trigger or a natural universal word: an evasion lever either way
            severity=Severity.HIGH if strong else Severity.MEDIUM,
            atlas=["AML.T0018.000", "AML.T0043.004", "AML.T0020"],
            mitigations=["AML.M0008", "AML.M0007", "AML.M0025"],
            description=(
                f"One inserted word, {found.trigger!r}, makes the model answer {name!r} for "
                f"{found.flip_rate:.0%} of texts it otherwise puts in another class (fresh "
                f"queries), while the next-strongest of the {found.candidates} words screened "
                f"({found.source}) reaches {top:.0%} (robust z {found.z:.1f}). Natural words "
                "sway some texts; a backdoor trigger (BadNL, arXiv:2006.01043) sways nearly all."
            ),
            recommendation=(
                "Do not deploy this model. Audit its training texts with 'mlwarden data DATA' "
                f"(texts holding {found.trigger!r} are the likely poison), remove them and retrain, "
                "or obtain the model from a trusted, signed source."
            ),
            evidence=found.as_dict() | {"class_name": name},
            artifact=report.config.get("model"),
            check="trigger-search",
            owasp=["ML10"],
        )
    )
