"""Turn robustness evaluations into a Report: metrics, findings (MLW-EVA-*), pictures.

:func:`evasion_report` is what ``mlwarden evasion`` and ``mlwarden audit`` call.
:func:`findings_for` maps one :class:`~mlwarden.evasion.suite.EvaluationResult` to
findings that cite ATLAS AML.T0015 (Evade AI Model) and the AML.T0043 sub-technique the
attacks used, with mitigations AML.M0003 (Model Hardening), AML.M0010 (Input
Restoration) and AML.M0015 (Adversarial Input Detection).

Rules:

* MLW-EVA-001 — robust accuracy at eps (severity from how much accuracy is lost)
* MLW-EVA-002 — vanishing or NaN gradients (gradient masking)
* MLW-EVA-003 — a black-box attack beat the white-box attacks (gradient masking)
* MLW-EVA-004 — randomised outputs
* MLW-EVA-005 — the model outputs probabilities, not logits
* MLW-EVA-006 — the attack had not converged (doubling iterations broke more inputs)
* MLW-EVA-007 — a very large eps did not break every input (gradient masking)
* MLW-EVA-008 — a defended model was evaluated with adaptive (BPDA/EOT) attacks
* MLW-EVA-009 — the query budget ran out before every input was attacked: robust
  accuracy is an upper bound
* MLW-EVA-010 — some forward passes had no gradient path (zero gradients used)

Every accuracy carries its exact 95% interval (Clopper-Pearson). A ``quick`` budget is
a smoke test: its findings say so in the title and never rate above medium.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mlwarden.core.data import Dataset, load_dataset
from mlwarden.core.errors import UserError
from mlwarden.core.findings import Finding, Report, Severity, change_text
from mlwarden.core.intervals import fmt_ci
from mlwarden.evasion.suite import Budget, EvaluationResult, evaluate

MITIGATIONS = ["AML.M0003", "AML.M0010", "AML.M0015"]
SUBTECHNIQUE = {"white": "AML.T0043.000", "score": "AML.T0043.001", "label": "AML.T0043.001"}
ACCESS_TECHNIQUE = {"white": "AML.T0044", "score": "AML.T0040", "label": "AML.T0040"}


def evasion_report(
    models: Sequence[Any],
    data: str | Dataset,
    norm: str = "linf",
    eps: float = 0.3,
    access: str | None = None,
    seed: int = 0,
    *,
    limit: int | None = 500,
    budget: str = "standard",
    transforms: list[dict[str, Any]] | None = None,
    names: Sequence[str] | None = None,
    snr_db: float | None = None,
    sample_rate: int | None = None,
    clip_seconds: float | None = None,
    save_adversarial: str | Path | None = None,
    label: str | None = None,
) -> Report:
    """Evaluate each model's robustness on ``data`` and report it.

    ``models``: MODEL specs (TorchScript, ``.pt2``, ONNX, scikit-learn file — scanned
    first —, http(s) URL or ``module:factory``) or in-memory models/Targets.
    ``data``: a dataset spec (``.npz`` with ``x``/``y``, CSV, image folder, bundled name)
    or a :class:`Dataset`. ``limit``: evaluate a seeded random subset of at most this
    many inputs (``None``: all). ``budget``: ``"standard"`` (AutoAttack settings) or
    ``"quick"``. ``transforms``: an input-restoration chain spec to put in front of every
    model (attacked adaptively with BPDA/EOT).

    Audio: ``snr_db`` replaces ``eps`` by a minimum signal-to-perturbation ratio per clip
    (dB, L2 energy); ``sample_rate`` (Hz) and ``clip_seconds`` shape the clips on load;
    ``save_adversarial`` writes the first model's successful clips as float WAVs there,
    at the inputs' relative paths, and replays each file to the model.

    The top-level ``metrics.clean_accuracy`` / ``metrics.robust_accuracy`` are the first
    model's; every model's figures are under ``metrics.models``.
    """
    if not models:
        raise UserError("give at least one MODEL to evaluate")
    if budget not in ("standard", "quick"):
        raise UserError(f"budget must be 'standard' or 'quick'; got {budget!r}")
    report = Report.new(command="evasion", seed=seed)
    ds = (
        data
        if isinstance(data, Dataset)
        else load_dataset(data, label=label, sample_rate=sample_rate, clip_seconds=clip_seconds)
    )
    if snr_db is not None and ds.modality != "audio":
        raise UserError("--snr-db is a budget for audio clips; use --eps for this data")
    sub = _subset(ds, limit, seed)
    report.data = ds.describe() | {"evaluated": len(sub)}
    plan = Budget.standard() if budget == "standard" else Budget.quick()
    report.config = {
        "norm": "l2" if snr_db is not None else norm,
        "eps": eps if snr_db is None else None,
        "snr_db": snr_db,
        "access": access,
        "budget": plan.name,
        "limit": limit,
        "transforms": transforms,
    }
    results: dict[str, EvaluationResult] = {}
    for i, spec in enumerate(models):
        label = names[i] if names and i < len(names) else _name(spec, i)
        bare = target = _load(spec, access)
        if transforms:
            from mlwarden.defenses.audio import with_sample_rate
            from mlwarden.defenses.defended import DefendedTarget

            if ds.sample_rate is not None:
                transforms = with_sample_rate(transforms, ds.sample_rate)
            target = DefendedTarget(target, transforms, bounds=ds.bounds)
        with report.timed(f"evaluate.{label}"):
            res = evaluate(
                target,
                sub.x,
                sub.y,
                norm=norm,
                eps=eps,
                bounds=ds.bounds,
                access=access,
                budget=plan,
                seed=seed,
                snr_db=snr_db,
            )
        results[label] = res
        if transforms and snr_db is not None and res.defended is not None:
            _non_adaptive(res, bare, transforms, sub, snr_db, plan, seed)
        if i == 0 and save_adversarial is not None and ds.modality == "audio":
            from mlwarden.evasion.audio.save import save_adversarial as save

            rows = save(target, sub, res, save_adversarial)
            report.metrics["saved_adversarial"] = {
                "folder": str(save_adversarial),
                "files": rows,
                "replay_fooled": sum(r["replay_fooled"] for r in rows),
                "min_snr_db": min((r["snr_db"] for r in rows), default=None),
            }
        report.add(*findings_for(res, label))
        if i == 0:
            report.target = target.describe() if hasattr(target, "describe") else {"name": label}
    add_results(report, results, sub)
    if save_adversarial is not None and ds.modality != "audio":
        save_npz(save_adversarial, next(iter(results.values())), sub)
    return report


def save_npz(path: str | Path, res: EvaluationResult, data: Dataset) -> None:
    """The inputs an attack broke as ``.npz``: ``x_adv``, ``y``, ``prediction``, ``index``."""
    rows = np.nonzero(res.clean_correct & ~res.robust)[0]
    try:
        with Path(path).open("wb") as fh:
            np.savez(
                fh,
                x_adv=np.asarray(res.x_adv)[rows].astype(np.float32),
                y=data.y[rows],
                prediction=np.asarray(res.adv_pred)[rows].astype(np.int64),
                index=rows.astype(np.int64),
            )
    except OSError as exc:
        raise UserError(f"cannot write {path} ({exc.strerror or exc})") from None


def add_results(report: Report, results: dict[str, EvaluationResult], data: Dataset) -> None:
    """Metrics and pictures of one or more evaluations, into ``report``."""
    from mlwarden.evasion.gallery import gallery, scatter
    from mlwarden.report.plots import histogram_plot, line_plot

    first = next(iter(results.values()))
    report.metrics["clean_accuracy"] = first.clean_accuracy
    report.metrics["robust_accuracy"] = first.robust_accuracy
    report.metrics["clean_accuracy_ci"] = list(first.clean_accuracy_ci)
    if first.defended is not None:
        report.metrics["defence"] = first.defended
    report.metrics["robust_accuracy_ci"] = list(first.robust_accuracy_ci)
    report.metrics["robust_accuracy_is_upper_bound"] = first.robust_accuracy_is_upper_bound
    report.metrics["budget_exhausted"] = first.budget_exhausted
    report.metrics["verification_draws"] = first.verification_draws
    report.metrics["norm"] = first.norm
    report.metrics["eps"] = first.eps
    report.metrics["models"] = {name: _metrics(res) for name, res in results.items()}
    series = {
        name: ([e for e, _ in r.curve], [a for _, a in r.curve])
        for name, r in results.items()
        if r.curve
    }
    if series:
        report.images["evasion.robust_accuracy_curve"] = line_plot(
            series,
            title="Robust accuracy against perturbation size",
            xlabel=f"eps ({first.norm}, input units)",
            ylabel="robust accuracy",
            ylim=(0, 1.02),
        )
    sizes = {n: r.min_perturbation.get("values", []) for n, r in results.items()}
    if any(len(v) > 1 for v in sizes.values()):
        report.images["evasion.min_perturbation"] = histogram_plot(
            {n: v for n, v in sizes.items() if len(v) > 1},
            title="Smallest adversarial perturbation per input (DeepFool)",
            xlabel=f"{first.norm} norm (input units)",
        )
    if len(results) > 1:
        report.images["evasion.accuracy_vs_robustness"] = scatter(
            {n: (r.clean_accuracy, r.robust_accuracy) for n, r in results.items()},
            title=f"Clean vs robust accuracy ({first.norm}, eps={first.eps:g})",
        )
    if data.modality == "audio":
        from mlwarden.evasion.audio.gallery import audio_examples

        for name, res in results.items():
            images, players = audio_examples(data, res, name)
            report.images.update(images)
            report.artifacts.setdefault("audio_examples", []).extend(players)
    if data.modality == "image" and data.x.ndim == 4:
        for name, res in results.items():
            broken = np.nonzero(res.clean_correct & ~res.robust)[0]
            if len(broken):
                rows = broken[:8]
                report.images[f"evasion.gallery.{name}"] = gallery(
                    data.x[rows],
                    res.x_adv[rows],
                    data.y[rows],
                    res.adv_pred[rows],
                    class_names=data.class_names,
                    bounds=data.bounds,
                    title=f"{name}: adversarial examples at {res.norm} eps={res.eps:g}",
                )


def _metrics(res: EvaluationResult) -> dict[str, Any]:
    out = res.to_dict()
    out["min_perturbation"] = {k: v for k, v in res.min_perturbation.items() if k != "values"}
    return out


def findings_for(res: EvaluationResult, name: str) -> list[Finding]:
    """The findings one evaluation supports."""
    out = [_robust_accuracy_finding(res, name)]
    out.extend(_check_findings(res, name))
    if res.budget != "standard":
        # a reduced budget can show that attacks work, never how robust a model is
        for f in out:
            f.title = f"[smoke test, {res.budget} budget] {f.title}"
            f.severity = min(f.severity, Severity.MEDIUM)
            f.evidence = {**f.evidence, "budget": res.budget, "smoke_test": True}
    return out


def _robust_accuracy_finding(res: EvaluationResult, name: str) -> Finding:
    """MLW-EVA-001: the ensemble's robust accuracy with its interval (or its bounds)."""
    sub = SUBTECHNIQUE[res.access]
    atlas = ["AML.T0015", sub, ACCESS_TECHNIQUE[res.access]]
    clean, robust = res.clean_accuracy, res.robust_accuracy
    ratio = robust / clean if clean > 0 else 0.0
    if ratio < 0.5:
        sev = Severity.HIGH
    elif ratio < 0.8:
        sev = Severity.MEDIUM
    elif ratio < 0.95:
        sev = Severity.LOW
    else:
        sev = Severity.INFO
    stages = ", ".join(
        f"{s.name} {'skipped (' + s.skipped + ')' if s.skipped else f'broke {s.broken}'}"
        for s in res.stages
    )
    lo, hi = res.robust_accuracy_ci
    bound = "at most " if res.robust_accuracy_is_upper_bound else ""
    draws = res.verification_draws
    vote = (
        f" Each verdict is the majority of {draws} predictions (randomised model)."
        if draws > 1
        else ""
    )
    upper = (
        f" The query budget stopped the attacks before {res.budget_exhausted} inputs were "
        f"fully attacked, so {robust:.1%} is an upper bound; at least "
        f"{res.verified_robust_lower_bound:.1%} withstood every attack to the end."
        if res.robust_accuracy_is_upper_bound
        else ""
    )
    size = (
        f"{res.norm} perturbations of size {res.eps:g}"
        if res.snr_db is None
        else f"perturbations at least {res.snr_db:g} dB below each clip (SNR)"
    )
    return Finding(
        rule="MLW-EVA-001",
        title=f"{name}: accuracy {change_text(clean, robust, prefix=bound)} "
        f"({fmt_ci(lo, hi)}) under {size}",
        severity=sev,
        atlas=atlas,
        mitigations=MITIGATIONS,
        description=(
            f"An attacker with {res.access}-box access changed the decision on "
            f"{clean - robust:.1%} of {res.n} inputs by {size} "
            f"({res.budget} budget: {stages}). Robust accuracy "
            f"{robust:.1%}, {fmt_ci(lo, hi)} over the {res.n} inputs evaluated.{upper}{vote}"
        ),
        recommendation=(
            "Harden the model with adversarial training (mlwarden.defenses."
            "adversarial_training) at the eps you need, then re-run this evaluation; "
            "input restoration and detection alone are usually bypassed by adaptive attacks."
        ),
        evidence={
            "clean_accuracy": clean,
            "clean_accuracy_ci": list(res.clean_accuracy_ci),
            "robust_accuracy": robust,
            "robust_accuracy_ci": [lo, hi],
            "robust_accuracy_is_upper_bound": res.robust_accuracy_is_upper_bound,
            "budget_exhausted": res.budget_exhausted,
            "verification_draws": draws,
            "norm": res.norm,
            "eps": res.eps,
            "snr_db": res.snr_db,
            "curve": [{"eps": e, "robust_accuracy": r} for e, r in res.curve],
            "stages": [s.__dict__ for s in res.stages],
        },
        artifact=name,
        check="evasion.evaluate",
        owasp=["ML01"],
    )


def _check_findings(res: EvaluationResult, name: str) -> list[Finding]:
    """One finding per flagged sanity check, plus MLW-EVA-008 for a defended model."""
    atlas = ["AML.T0015", SUBTECHNIQUE[res.access], ACCESS_TECHNIQUE[res.access]]
    robust = res.robust_accuracy
    out: list[Finding] = []
    rules = {
        "vanishing_gradients": (
            "MLW-EVA-002",
            Severity.HIGH,
            "gradients vanish (gradient masking)",
            "Robust accuracy from gradient attacks is not trustworthy. Evaluate "
            "with BPDA through non-differentiable parts (DefendedTarget) and trust "
            "the black-box figures.",
        ),
        "black_box_beats_white_box": (
            "MLW-EVA-003",
            Severity.HIGH,
            "a black-box attack beat every gradient attack (gradient masking)",
            "Gradients mislead the attacks: the true robustness is lower than "
            "gradient attacks show. Remove the obfuscation or attack it adaptively.",
        ),
        "randomized_outputs": (
            "MLW-EVA-004",
            Severity.MEDIUM,
            "outputs are randomised",
            "Evaluate with EOT (DefendedTarget averages gradients over draws) and "
            "report robustness over repeated predictions.",
        ),
        "probability_outputs": (
            "MLW-EVA-005",
            Severity.LOW,
            "the model returns probabilities, not logits",
            "Expose logits to the evaluation; saturated probabilities hide "
            "cross-entropy gradients (mlwarden also uses scale-free DLR/margin losses).",
        ),
        "non_convergence": (
            "MLW-EVA-006",
            Severity.MEDIUM,
            "the attack had not converged",
            "Robust accuracy was corrected with the longer run; evaluate with more "
            "iterations before trusting the figure.",
        ),
        "large_eps_success": (
            "MLW-EVA-007",
            Severity.HIGH,
            "attacks fail even at a very large eps (gradient masking)",
            "An unbounded attack must always succeed; find what blocks the gradient "
            "(non-differentiable or saturating layers) and attack it adaptively.",
        ),
        "budget_exhausted": (
            "MLW-EVA-009",
            Severity.MEDIUM,
            "the query budget ran out: robust accuracy is only an upper bound",
            "Raise the target's query budget (max_queries) or evaluate fewer inputs "
            "(--limit) so every attack runs to the end; until then do not quote the "
            "robust accuracy as a measurement.",
        ),
        "gradient_free_outputs": (
            "MLW-EVA-010",
            Severity.MEDIUM,
            "some forward passes returned outputs without a gradient path",
            "Gradient attacks saw zero gradients on those calls: expose a differentiable "
            "forward pass (or wrap the random or non-differentiable step in a "
            "DefendedTarget for BPDA/EOT) and trust the black-box figures meanwhile.",
        ),
    }
    for check in res.checks:
        if not check.flagged or check.name not in rules:
            continue
        rule, sev, what, rec = rules[check.name]
        out.append(
            Finding(
                rule=rule,
                title=f"{name}: {what}",
                severity=sev,
                atlas=atlas,
                mitigations=MITIGATIONS,
                description=check.detail,
                recommendation=rec,
                evidence=check.evidence,
                artifact=name,
                check=f"evasion.{check.name}",
                owasp=["ML01"],
            )
        )
    if res.defended is not None:
        out.append(
            Finding(
                rule="MLW-EVA-008",
                title=f"{name}: input-restoration defence evaluated with adaptive attacks",
                severity=Severity.INFO,
                atlas=atlas,
                mitigations=["AML.M0010"],
                description=(
                    "The preprocessing defence was attacked through BPDA (non-differentiable "
                    f"steps: {res.defended['bpda']}) and EOT ({res.defended['eot_samples']} "
                    f"draws per gradient); robust accuracy {robust:.1%}."
                    + _side_by_side(res.defended)
                ),
                recommendation="Report this adaptive figure, not the accuracy against non-adaptive attacks.",
                evidence=res.defended,
                artifact=name,
                check="evasion.defence",
            )
        )
    return out


def _non_adaptive(
    res: EvaluationResult, bare: Any, chain: list[dict[str, Any]], data: Dataset,
    snr_db: float, plan: Budget, seed: int,
) -> None:  # fmt: skip
    """Add the non-adaptive figure (clips crafted on the bare model, replayed through
    the defence) beside the adaptive one; the rating uses the adaptive figure only."""
    if getattr(bare, "access", None) != "white" or data.sample_rate is None:
        return
    from mlwarden.evasion.audio.defences import compare_defence

    row = compare_defence(
        bare, chain, data.x, data.y, snr_db=snr_db, sample_rate=data.sample_rate,
        steps=plan.apgd_steps, bounds=data.bounds, seed=seed,
    )  # fmt: skip
    adaptive = min(row.adaptive_robust_accuracy, res.robust_accuracy)
    kept = adaptive / row.clean_accuracy if row.clean_accuracy > 0 else 0.0
    assert res.defended is not None
    rating = "holds" if kept >= 0.8 else "partial" if kept >= 0.5 else "broken"
    res.defended.update(
        non_adaptive_robust_accuracy=row.non_adaptive_robust_accuracy,
        adaptive_robust_accuracy=adaptive,
        rating=rating,
        rated_on="adaptive",
        caveat=row.caveat if rating != "broken" else "",
    )


def _side_by_side(defended: dict[str, Any]) -> str:
    if "non_adaptive_robust_accuracy" not in defended:
        return ""
    na, a = defended["non_adaptive_robust_accuracy"], defended["adaptive_robust_accuracy"]
    return (
        f" Non-adaptive (clips crafted on the bare model): {na:.1%}; adaptive: {a:.1%}. "
        f"Rated on the adaptive figure: {defended['rating']}."
        + (f" Caveat: {defended['caveat']}." if defended.get("caveat") else "")
    )


def _subset(ds: Dataset, limit: int | None, seed: int) -> Dataset:
    if limit is None or len(ds) <= limit:
        return ds
    if limit < 1:
        raise UserError(f"limit must be >= 1; got {limit}")
    rng = np.random.default_rng(seed)
    return ds.subset(np.sort(rng.choice(len(ds), size=limit, replace=False)))


def _name(spec: Any, i: int) -> str:
    if isinstance(spec, str):
        printable = spec.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        return printable.rstrip("/").split("/")[-1] or f"model{i + 1}"
    return getattr(spec, "name", None) or type(spec).__name__


def _load(spec: Any, access: str | None) -> Any:
    if not isinstance(spec, str):
        from mlwarden.core.target import as_target

        return as_target(spec)
    try:
        from mlwarden.supplychain import load_target
    except ImportError:
        raise UserError(
            "loading MODEL files needs mlwarden.supplychain.load_target, which this install lacks"
        ) from None
    return load_target(spec, access=access) if access else load_target(spec)
