"""The privacy package's public entry points: :func:`privacy_report` and :func:`extract_report`.

Both accept file specs (what the CLI passes: a MODEL spec loaded through
:func:`mlwarden.supplychain.load_target`, which scans model files before loading them,
and dataset specs for :func:`mlwarden.core.data.load_dataset`) or in-memory objects
(a Target, estimator or module; a :class:`Dataset`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from mlwarden.core.console import Stages, info, progress_bar
from mlwarden.core.data import Dataset, load_dataset
from mlwarden.core.errors import UserError
from mlwarden.core.findings import Finding, Report, Severity
from mlwarden.core.target import BaseTarget, as_target
from mlwarden.privacy.audit import (
    accuracy_of,
    audit_membership,
    exposed_records,
    membership_findings,
    metrics_dict,
    recipe_for,
    split_off,
)
from mlwarden.privacy.extraction import ExtractionCurve, LinearSoftmax, equation_solving, knockoff
from mlwarden.privacy.metrics import roc_png
from mlwarden.privacy.modalities import Ranges, hooks_for

#: What the "uniform" fidelity's random inputs are, per modality (for the report).
RANDOM_TEXT = {
    "tabular": "uniform within each feature's range measured on the pool and evaluation data",
    "image": "uniform within the pixel value range measured on the data",
    "audio": "white noise at the loudness (RMS) of randomly drawn pool clips",
    "text": "random bags of words from the pool's vocabulary, pool-like lengths",
}


def load_model(model: Any, access: str | None = None) -> BaseTarget:
    """A MODEL spec string through the scanning loader, or an in-memory model as a Target."""
    if not isinstance(model, str):
        return as_target(model) if access is None else as_target(model, access=access)
    try:
        from mlwarden.supplychain import load_target
    except ImportError:
        raise UserError(
            "loading a model file needs mlwarden.supplychain.load_target, which this build lacks"
        ) from None
    return load_target(model, access=access)


def _dataset(spec: Any, what: str) -> Dataset:
    if isinstance(spec, Dataset):
        return spec
    ds = load_dataset(spec)
    if len(ds) < 2:
        raise UserError(f"{what} {spec}: needs at least 2 records; got {len(ds)}")
    return ds


def _check_shapes(target: BaseTarget, *sets: Dataset) -> None:
    shapes = {tuple(s.x.shape[1:]) for s in sets}
    if len(shapes) > 1:
        raise UserError(f"the data sets disagree on the input shape: {sorted(shapes)}")
    want = getattr(target, "input_shape", None)
    have = next(iter(shapes))
    if want and int(np.prod(want)) != int(np.prod(have)):
        raise UserError(
            f"{target.name} expects inputs of shape {list(want)}; the data has {list(have)}"
        )


#: What each access level lets an attacker see, as the reports say it.
ACCESS_TEXT = {
    "white": "white-box access (weights and gradients)",
    "score": "score access (a score for every class)",
    "label": "label-only access (the predicted class only)",
}


ACCESS_SHORT = {"white": "white-box", "score": "score", "label": "label-only"}


def choose_attack(requested: str, access: str) -> tuple[str, str | None]:
    """The membership attack to run at this access level, and a note when it differs.

    ``auto`` is LiRA (Carlini et al., arXiv:2112.03570) when the model returns scores and
    the label-only attack (Choquette-Choo et al., arXiv:2007.14321) when it returns
    labels only; a score-based attack asked of a label-only model becomes the label-only
    attack, with a note saying so (the scores it needs do not exist).
    """
    if access == "label" and requested != "label-only":
        note = (
            None
            if requested == "auto"
            else f"--attack {requested} needs scores; the model returns labels only, so the "
            "label-only attack ran instead"
        )
        return "label-only", note
    return ("lira" if requested == "auto" else requested), None


def privacy_report(
    model: Any,
    train: Any,
    holdout: Any,
    attack: str = "auto",
    shadows: int = 16,
    trainer: str | None = None,
    *,
    access: str | None = None,
    executor: str = "local",
    views: int = 1,
    online: bool = True,
    global_variance: bool | None = None,
    defend: bool = False,
    dp_epsilon: float = 8.0,
    seed: int = 0,
) -> Report:
    """Membership-inference audit of ``model``: can an attacker tell TRAIN records from HOLDOUT?

    ``access`` lowers what the attacker sees (``score`` or ``label``; a target file's
    ``output: labels`` already means label); ``attack="auto"`` picks by access (see
    :func:`choose_attack`). ``metrics.access`` and every finding state the access level.
    Text and audio targets work as arrays do (:mod:`mlwarden.privacy.modalities`).

    Metrics: ``auc``, ``tpr_at_fpr`` ({"0.01", "0.001"}), their resolvability,
    ``balanced_accuracy``, ``pooled`` (over shadow models as targets), train/holdout
    accuracy. Findings MLW-PRV-001..005; the log-log ROC goes to ``images``.

    Example::

        report = privacy_report("model.joblib", "train.npz", "holdout.npz", attack="lira")
        report.metrics["tpr_at_fpr"]["0.001"]
    """
    from mlwarden.core.executor import parse_spec

    parse_spec(executor)  # a bad spec is an error even for attacks that train nothing
    if defend and not (math.isfinite(dp_epsilon) and dp_epsilon > 0):
        raise UserError(f"--dp-epsilon must be a positive number; got {dp_epsilon}")
    report = Report.new(command="privacy", seed=seed)
    target = load_model(model, access=access)
    train_ds, holdout_ds = _dataset(train, "--train"), _dataset(holdout, "--holdout")
    _check_shapes(target, train_ds, holdout_ds)
    requested = attack
    attack, note = choose_attack(attack, target.access)
    # What the figures assume: the label-only attack uses labels alone, the others the
    # scores (none of them uses gradients, even where the model would give them).
    assumed = "label" if attack == "label-only" else "score"
    if attack in ("lira", "rmia", "shadow") and shadows < 2:
        raise UserError(f"--shadows must be at least 2 for --attack {attack}; got {shadows}")
    recipe = recipe_for(target, trainer)
    report.target = target.describe()
    report.data = {"train": train_ds.describe(), "holdout": holdout_ds.describe()}
    report.config = {
        "access": assumed,
        "target_access": target.access,
        "attack_requested": requested,
        "attack": attack,
        "shadows": shadows,
        "trainer": trainer,
        "executor": executor,
        "views": views,
        "online": online,
        "recipe": recipe.describe() if recipe else None,
    }
    with report.timed("privacy.membership"):
        result = audit_membership(
            target,
            train_ds,
            holdout_ds,
            attack=attack,
            recipe=recipe,
            shadows=shadows,
            executor=executor,
            views=views,
            online=online,
            global_variance=global_variance,
            seed=seed,
        )
    report.metrics.update(metrics_dict(result))
    report.metrics["access"] = assumed
    if note:
        report.config["note"] = note
        info(f"privacy: {note}")
    q = target.queries
    report.metrics["train_accuracy"] = accuracy_of(target, train_ds)
    report.metrics["holdout_accuracy"] = accuracy_of(target, holdout_ds)
    target.queries = q
    curves = {f"{attack} (target)": result.metrics}
    if result.pooled is not None:
        curves[f"{attack} (pooled over {result.config.get('pooled_targets')} models)"] = (
            result.pooled
        )
    report.images["privacy_roc"] = roc_png(curves)
    report.artifacts["exposed_records"] = exposed_records(result, top=20)
    artifact = model if isinstance(model, str) else target.name
    report.add(*membership_findings(result, artifact=artifact, access=assumed))
    if defend:
        from mlwarden.privacy.defend import compare_defences

        with report.timed("privacy.defend"):
            rows, findings = compare_defences(
                target,
                train_ds,
                holdout_ds,
                recipe=recipe,
                attack=attack,
                shadows=min(shadows, 8),
                executor=executor,
                dp_epsilon=dp_epsilon,
                seed=seed,
            )
        report.metrics["defences"] = rows
        report.add(*findings)
    return report


def extract_report(
    model: Any,
    pool: Any,
    budgets: Sequence[int] = (100, 1000, 5000),
    *,
    strategies: Sequence[str] = ("pool",),
    labels_only: bool = False,
    access: str | None = None,
    test: Any = None,
    defend: bool = False,
    seed: int = 0,
) -> Report:
    """Model-extraction audit: how close does a copy get within each query budget?

    Equation solving (exact for linear/logistic models) is tried first when scores
    are returned; then a knockoff surrogate is trained per strategy and budget, from
    scores, or from labels only for a label-only target (``access="label"`` or
    ``labels_only``; a target file's ``output: labels``); the target refuses any query
    past the largest budget. Text and audio targets work as arrays do, with a text or
    audio pool (:mod:`mlwarden.privacy.modalities`).

    Metrics (the names the other commands use for the same things): ``access``,
    ``clean_accuracy`` (the victim's accuracy on the evaluation data; ``victim_accuracy``
    is kept as an alias), ``fidelity`` / ``fidelity_uniform`` / ``accuracy`` mapping each
    budget to the first strategy's figures on held-out data (``test``, or 30% of
    ``pool`` kept aside) and on random inputs drawn within each feature's measured range,
    ``queries`` (victim queries the attacker spent per budget), ``curves``.

    Example::

        report = extract_report("model.onnx", "pool.npz", budgets=(100, 1000))
        report.metrics["fidelity"]["1000"]
    """
    report = Report.new(command="extract", seed=seed)
    if labels_only and access not in (None, "label"):
        raise UserError(f"--labels-only contradicts --access {access}")
    target = load_model(model, access="label" if labels_only else access)
    pool_ds = _dataset(pool, "--pool")
    if test is None:
        if len(pool_ds) < 10:
            raise UserError(
                f"--pool has {len(pool_ds)} records; give at least 10 (30% are kept aside to "
                "measure fidelity) or a separate --test set"
            )
        attacker, evalset = split_off(pool_ds, 0.3, seed)
    else:
        attacker, evalset = pool_ds, _dataset(test, "--test")
    _check_shapes(target, attacker, evalset)
    hooks = hooks_for(attacker)
    # Random queries and the uniform-fidelity inputs stay within each feature's range
    # measured on the data (one global box would put most tabular draws off the data).
    ranges = hooks.ranges(attacker.x, evalset.x)
    budgets = sorted({int(b) for b in budgets})
    report.target = target.describe()
    report.data = {"pool": attacker.describe(), "eval": evalset.describe()}
    # The copy learns from scores (or labels alone); gradients are never used.
    assumed = "label" if target.access == "label" else "score"
    report.config = {
        "access": assumed,
        "target_access": target.access,
        "budgets": budgets,
        "strategies": list(strategies),
        "labels_only": target.access == "label",
        "modality": hooks.name,
        "random_inputs": RANDOM_TEXT.get(hooks.name, RANDOM_TEXT["tabular"]),
    }
    artifact = model if isinstance(model, str) else target.name
    q0 = target.queries
    clean = accuracy_of(target, evalset)
    target.queries = q0
    report.metrics["access"] = assumed
    report.metrics["clean_accuracy"] = clean
    report.metrics["victim_accuracy"] = clean  # the old name, kept for readers of it
    width = int(np.prod(attacker.input_shape))
    if target.access != "label" and ranges is not None and width > EQUATION_MAX_FEATURES:
        # d + 1 queries and a dense (d + 1)-square solve: minutes per call on 1 s of audio
        report.metrics["equation_solving"] = {
            "queries": 0, "fidelity": 0.0, "fidelity_uniform": 0.0, "access": assumed,
            "skipped": f"{width} input values: over {EQUATION_MAX_FEATURES}, the exact "
            "solve for a linear model is not tried",
        }  # fmt: skip
    elif target.access != "label" and ranges is not None:
        with report.timed("extract.equation_solving"):
            eq = _try_equation_solving(target, attacker, evalset, ranges, seed)
        eq["access"] = assumed
        report.metrics["equation_solving"] = eq
        finding = _equation_solving_finding(eq, artifact)
        if finding is not None:
            report.add(finding)
    curves: list[ExtractionCurve] = []
    # progress: each (strategy, budget) point costs about its queries plus a fit on them
    phase = "{} @ {} queries".format
    weights = {phase(s, b): float(b) for s in strategies for b in budgets}
    with report.timed("extract.knockoff"), progress_bar("extract", None, counts=False) as bar:
        stages = Stages(bar, weights, prefix=artifact)
        for strategy in strategies:
            stages.start(phase(strategy, budgets[0]))

            def step(b: int, strategy: str = strategy) -> None:
                stages.done(phase(strategy, b))
                later = next((x for x in budgets if x > b), None)  # budgets are sorted
                if later is not None:
                    stages.start(phase(strategy, later))

            curves.append(
                knockoff(
                    target,
                    attacker.x,
                    budgets,
                    eval_x=evalset.x,
                    eval_y=evalset.y,
                    ranges=ranges,
                    strategy=strategy,
                    modality=hooks.name,
                    seed=seed,
                    on_budget=step,
                )
            )
    first = curves[0]
    report.metrics["fidelity"] = {str(p.budget): p.fidelity for p in first.points}
    report.metrics["fidelity_uniform"] = {str(p.budget): p.fidelity_uniform for p in first.points}
    report.metrics["accuracy"] = {str(p.budget): p.accuracy for p in first.points}
    report.metrics["queries"] = {str(p.budget): p.queries for p in first.points}
    report.metrics["curves"] = {
        c.strategy: {"soft": c.soft, "points": [p.as_dict() for p in c.points]} for c in curves
    }
    report.images["extraction_curve"] = _curve_png(curves, clean)
    report.add(_knockoff_finding(curves, clean, artifact, assumed))
    if defend:
        with report.timed("extract.defend"):
            report.metrics["defences"] = _extraction_defences(
                target, attacker, evalset, ranges, budgets, seed
            )
    return report


#: "Exact" extraction: the stolen model's probabilities match the victim's within this
#: (absolute, per class) on every one of at least EXACT_PROBES probe inputs.
EXACT_TOLERANCE = 1e-4
EXACT_PROBES = 2000
#: widest input (values per record) on which equation solving is tried
EQUATION_MAX_FEATURES = 4096


def _try_equation_solving(
    target: BaseTarget, attacker: Dataset, evalset: Dataset, ranges: Ranges, seed: int
) -> dict[str, Any]:
    """Solve, then measure the copy: label agreement on held-out and uniform inputs, and
    the largest probability difference over a probe set of at least :data:`EXACT_PROBES`
    inputs (uniform in each feature's range, near the data, and the held-out set)."""
    from mlwarden.privacy.extraction import _scores_as_log_probs, _victim_labels

    assert ranges is not None
    center = attacker.x.reshape(len(attacker), -1).mean(0)
    try:
        stolen, n = equation_solving(target, attacker.input_shape, ranges, center=center, seed=seed)
    except UserError as exc:
        return {"queries": 0, "fidelity": 0.0, "fidelity_uniform": 0.0, "error": str(exc)}
    rng = np.random.default_rng(seed + 1)
    shape = attacker.input_shape
    lo, hi = ranges
    uniform = hooks_for(attacker).random_inputs(attacker.x, 1000, ranges, rng)
    span = 0.25 * (hi - lo)
    near = np.clip(center + rng.uniform(-span, span, (1000, center.size)), lo, hi)
    probes = np.concatenate([uniform, near.reshape((1000,) + shape).astype(np.float32), evalset.x])
    victim_p = np.exp(_scores_as_log_probs(target, probes))
    gap = float(np.abs(stolen.predict_proba(probes) - victim_p).max())
    return {
        "queries": n,
        "fidelity": _agree(stolen, evalset.x, _victim_labels(target, evalset.x)),
        "fidelity_uniform": _agree(stolen, uniform, _victim_labels(target, uniform)),
        "probes": int(len(probes)),
        "max_probability_difference": gap,
        "exact": bool(gap <= EXACT_TOLERANCE and len(probes) >= EXACT_PROBES),
    }


def _equation_solving_finding(eq: dict[str, Any], artifact: str) -> Finding | None:
    """MLW-EXT-001: critical and "exactly" only when the copy reproduces the victim's
    probabilities to numerical precision on the probe set; high when it only agrees on
    >= 99% of labels; nothing below that."""
    exact = bool(eq.get("exact"))
    if not exact and not (eq["fidelity"] >= 0.99 and eq["fidelity_uniform"] >= 0.99):
        return None
    measured = (
        f"It reproduces the model's probabilities within {EXACT_TOLERANCE:g} on all "
        f"{eq['probes']} probe inputs (largest difference {eq['max_probability_difference']:.2g})"
        if exact
        else f"It agrees on {eq['fidelity']:.1%} of held-out and {eq['fidelity_uniform']:.1%} of "
        f"random inputs' labels, but its probabilities differ by up to "
        f"{eq['max_probability_difference']:.2g} on {eq.get('probes', 0)} probes: the model is "
        "close to linear softmax, not exactly one"
    )
    return Finding(
        rule="MLW-EXT-001",
        title=f"Model stolen exactly by equation solving with {eq['queries']} queries"
        if exact
        else f"Model closely approximated by equation solving with {eq['queries']} queries",
        severity=Severity.CRITICAL if exact else Severity.HIGH,
        atlas=["AML.T0024.002", "AML.T0005"],
        mitigations=["AML.M0004", "AML.M0002"],
        description=(
            "The model returns scores and behaves as a linear softmax (logistic) model, so "
            f"{eq['queries']} queries (inputs + 1) gave a linear system whose solution is a "
            f"copy (Tramèr et al., 2016, arXiv:1609.02943). {measured}."
        ),
        recommendation="Return labels only (or coarse, rounded scores) and cap queries per caller well below the number of input features + 1.",
        evidence=eq,
        artifact=artifact,
        check="extract.equation_solving",
    )


def _agree(model: LinearSoftmax, x: np.ndarray, ref: np.ndarray) -> float:
    return float((model.predict(x) == ref).mean())


def _knockoff_finding(
    curves: list[ExtractionCurve], victim_acc: float, artifact: str, access: str = "score"
) -> Finding:
    """MLW-EXT-002: the cheapest copy agreeing on >= 90% of held-out inputs, else the best."""
    seen = ACCESS_TEXT.get(access, access)
    best = None
    for c in curves:
        for p in c.points:
            if p.fidelity >= 0.9 and (best is None or p.budget < best[1].budget):
                best = (c, p)
    if best is not None:
        c, p = best
        sev = Severity.HIGH if p.budget <= 1000 else Severity.MEDIUM
        title = (
            f"A copy agreeing with the model on {p.fidelity:.1%} of held-out inputs was trained "
            f"from {p.queries} queries ({c.strategy} queries, {ACCESS_SHORT[access]} access)"
        )
    else:
        top = max((p for c in curves for p in c.points), key=lambda p: p.fidelity)
        sev = Severity.LOW if top.fidelity >= 0.7 else Severity.INFO
        title = (
            f"Knockoff extraction reached {top.fidelity:.1%} agreement at {top.queries} queries "
            f"({ACCESS_SHORT[access]} access)"
        )
    return Finding(
        rule="MLW-EXT-002",
        title=title,
        severity=sev,
        atlas=["AML.T0024.002", "AML.T0005"],
        mitigations=["AML.M0004", "AML.M0002"],
        description=(
            "A surrogate network was trained on the model's answers to natural, random or actively chosen queries "
            f"(Knockoff Nets / Copycat CNN), by an attacker with {seen}: it learnt from "
            f"{'the scores' if access != 'label' else 'the predicted labels alone'}. "
            f"The victim's own accuracy is {victim_acc:.1%}; the stolen copy can be used "
            "offline to craft evasion attacks (AML.T0005) or to replace the paid service."
        ),
        recommendation="Limit queries per caller and per time window (AML.M0004), return labels or rounded top-k scores (AML.M0002), and monitor for query patterns typical of extraction.",
        evidence={
            "access": access,
            "curves": {cv.strategy: [pt.as_dict() for pt in cv.points] for cv in curves},
            "victim_accuracy": victim_acc,
        },
        artifact=artifact,
        check="extract.knockoff",
    )


def _extraction_defences(
    target: BaseTarget,
    attacker: Dataset,
    evalset: Dataset,
    ranges: Ranges,
    budgets: list[int],
    seed: int,
) -> list[dict[str, Any]]:
    from mlwarden.privacy.defend import HARDENING, hardened_target

    rows = []
    for label, mode, kw in (("none", "none", {}), *HARDENING):
        tgt = target if mode == "none" else hardened_target(target, mode, **kw)
        curve = knockoff(
            tgt,
            attacker.x,
            budgets,
            eval_x=evalset.x,
            eval_y=evalset.y,
            ranges=ranges,
            strategy="pool",
            modality=hooks_for(attacker).name,
            seed=seed,
        )
        rows.append(
            {
                "defence": f"output {label}",
                "accuracy": accuracy_of(tgt, evalset),
                "fidelity": {str(p.budget): p.fidelity for p in curve.points},
            }
        )
    return rows


def _curve_png(curves: list[ExtractionCurve], victim_acc: float) -> str:
    import base64
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 3.6), dpi=100)
    for c in curves:
        b = [p.budget for p in c.points]
        ax.plot(b, [p.fidelity for p in c.points], "o-", label=f"{c.strategy}: fidelity (test)")
        ax.plot(
            b,
            [p.fidelity_uniform for p in c.points],
            "s--",
            label=f"{c.strategy}: fidelity (uniform)",
        )
        if not np.isnan(c.points[0].accuracy):
            ax.plot(b, [p.accuracy for p in c.points], "^:", label=f"{c.strategy}: accuracy")
    ax.axhline(victim_acc, color="k", lw=0.8, ls="--", label="victim accuracy")
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("victim queries")
    ax.set_ylabel("agreement / accuracy")
    ax.legend(fontsize=6)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
