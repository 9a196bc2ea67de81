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

from mlwarden.core.console import Stages, progress_bar
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
    eps_relative: float | None = None,
    spread: str = "std",
    constraints: dict[str, Any] | None = None,
) -> Report:
    """Evaluate each model's robustness on ``data`` and report it.

    ``models``: MODEL specs (TorchScript, ``.pt2``, ONNX, scikit-learn file — scanned
    first —, http(s) URL or ``module:factory``) or in-memory models/Targets.
    ``data``: a dataset spec (``.npz`` with ``x``/``y``, CSV, image folder, bundled name)
    or a :class:`Dataset`. ``limit``: evaluate a seeded random subset of at most this
    many inputs (``None``: all). ``budget``: ``"standard"`` (AutoAttack settings),
    ``"fast"`` (APGD-CE + APGD-T + Square: the command line's default, a lower bound on
    attack strength) or ``"quick"`` (a smoke test). ``transforms``: an
    input-restoration chain spec to put in front of every model (attacked adaptively
    with BPDA/EOT).

    Tabular data: ``eps_relative`` lets each feature move by that many times its spread
    on the data (``spread``: ``"std"`` or ``"iqr"``) instead of ``eps`` in raw units;
    ``constraints`` (``immutable``, ``integer`` — default ``"auto"`` —, ``ranges`` —
    default ``"data"`` —, ``one_hot``) are enforced inside every attack and re-checked
    on every success (see :mod:`mlwarden.evasion.tabular`).

    Audio: ``snr_db`` replaces ``eps`` by a minimum signal-to-perturbation ratio per clip
    (dB, L2 energy); ``sample_rate`` (Hz) and ``clip_seconds`` shape the clips on load;
    ``save_adversarial`` writes the first model's successful clips as float WAVs there,
    at the inputs' relative paths, and replays each file to the model.

    The top-level ``metrics.clean_accuracy`` / ``metrics.robust_accuracy`` are the first
    model's; every model's figures are under ``metrics.models``.
    """
    if not models:
        raise UserError("give at least one MODEL to evaluate")
    report = Report.new(command="evasion", seed=seed)
    ds = (
        data
        if isinstance(data, Dataset)
        else load_dataset(data, label=label, sample_rate=sample_rate, clip_seconds=clip_seconds)
    )
    if snr_db is not None and ds.modality != "audio":
        raise UserError("--snr-db is a budget for audio clips; use --eps for this data")
    sub = _subset(ds, limit, seed)
    space = None
    if ds.modality == "tabular":
        from mlwarden.evasion.tabular import build_space

        space = build_space(
            ds, sub.x, eps=eps, eps_relative=eps_relative, spread=spread, spec=constraints
        )
    elif eps_relative is not None or constraints:
        raise UserError("--eps-relative and column constraints apply to tabular data only")
    report.data = ds.describe() | {"evaluated": len(sub)}
    plan = Budget.named(budget)
    report.config = {
        "norm": "l2" if snr_db is not None else norm,
        "eps": eps if snr_db is None else None,
        "snr_db": snr_db,
        "access": access,
        "budget": plan.name,
        "limit": limit,
        "transforms": transforms,
        "eps_relative": eps_relative,
        "tabular": space.describe if space is not None else None,
    }
    results: dict[str, EvaluationResult] = {}
    for i, spec in enumerate(models):
        label = names[i] if names and i < len(names) else _name(spec, i)
        bare = target = _load(spec, access)
        target, onnx_check = _onnx_white_box(target, sub.x, access)
        bare = target
        family = _family(target)
        if transforms:
            from mlwarden.defenses.audio import with_sample_rate
            from mlwarden.defenses.defended import DefendedTarget

            if ds.sample_rate is not None:
                transforms = with_sample_rate(transforms, ds.sample_rate)
            target = DefendedTarget(target, transforms, bounds=ds.bounds)
        if space is not None and eps_relative is not None:
            from mlwarden.evasion.tabular import ScaledTarget

            # outermost: a defence restores inputs in the data's own units
            target = ScaledTarget(target, space.scale)
        with report.timed(f"evaluate.{label}"), progress_bar(label, None, counts=False) as bar:
            res = evaluate(
                target,
                sub.x if space is None else space.x,
                sub.y,
                norm=norm,
                eps=eps if space is None else space.eps,
                bounds=ds.bounds if space is None else space.bounds,
                access=access,
                budget=plan,
                seed=seed,
                snr_db=snr_db,
                constraints=None if space is None else space.constraints,
                progress=(lambda w, bar=bar, lab=label: Stages(bar, w, prefix=lab))
                if bar is not None
                else None,
            )
        if space is not None:
            res.x_adv = space.to_data(res.x_adv, sub.x)
            res.tabular = space.describe
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
        found = findings_for(res, label, family=family)
        if onnx_check is not None:
            found.extend(onnx_findings(found[0], onnx_check, label))
            res.onnx_white_box = onnx_check
        report.add(*found)
        if i == 0:
            report.target = target.describe() if hasattr(target, "describe") else {"name": label}
    add_results(report, results, sub)
    if save_adversarial is not None and ds.modality != "audio":
        save_npz(save_adversarial, next(iter(results.values())), sub)
    return report


def _onnx_white_box(target: Any, x: np.ndarray, access: str | None) -> tuple[Any, dict | None]:
    """An ONNX target converted to torch for gradients when the conversion answers like
    onnxruntime on ``x`` (see :mod:`mlwarden.core.onnx_torch`); else the onnxruntime
    target at score access, with what was checked."""
    from mlwarden.core.target import OnnxTarget

    if not isinstance(target, OnnxTarget) or access in ("score", "label"):
        return target, None
    from mlwarden.core.onnx_torch import white_box_onnx

    target.access = "score"  # onnxruntime gives no gradients, whatever was asked
    white, info = white_box_onnx(target, x)
    if white is None and access == "white":
        raise UserError(
            f"--access white: {target.name} did not convert to a differentiable graph "
            f"({info['reason']}); use --access score for the black-box figure"
        )
    return (white if white is not None else target), info


def onnx_findings(main: Finding, info: dict[str, Any], name: str) -> list[Finding]:
    """Say how an ONNX model was attacked: through the verified torch conversion (noted on
    MLW-EVA-001), or black-box only, MLW-EVA-011 (the figure is an upper bound)."""
    main.evidence = {**main.evidence, "onnx_white_box": info}
    if info["converted"]:
        main.description += (
            f" Gradients came from the ONNX graph converted to torch, checked against "
            f"onnxruntime on {info['inputs']} inputs (largest probability difference "
            f"{info['max_abs_diff']:.1g}, same class on {info['argmax_agreement']:.1%}); "
            "every success was re-checked with onnxruntime."
        )
        return []
    main.description += (
        " Black-box only (the ONNX graph did not convert to torch): robust accuracy is an "
        "upper bound."
    )
    return [
        Finding(
            rule="MLW-EVA-011",
            title=f"{name}: ONNX model attacked black-box only; robust accuracy is an upper bound",
            severity=Severity.LOW,
            atlas=main.atlas,
            mitigations=MITIGATIONS,
            description=(
                f"White-box attacks need the graph as torch operations; {info['reason']}. "
                "Score-based attacks (Square) ran instead, which usually find fewer "
                "adversarial inputs than gradient attacks, so the true robust accuracy may "
                "be lower than reported."
            ),
            recommendation=(
                "Evaluate the model in a differentiable form too (the training framework's "
                "TorchScript or torch.export .pt2 file, or an ONNX export without the "
                "unsupported op) and treat this figure as an upper bound until then."
            ),
            evidence=info,
            artifact=name,
            check="evasion.onnx_white_box",
            owasp=["ML01"],
        )
    ]


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
            xlabel=f"eps ({first.norm}, {_eps_unit(first)})",
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


def _eps_unit(res: EvaluationResult) -> str:
    tab = res.tabular or {}
    if tab.get("eps_relative") is not None:
        return f"x each feature's {tab['spread']}"
    return "input units"


def _metrics(res: EvaluationResult) -> dict[str, Any]:
    out = res.to_dict()
    out["min_perturbation"] = {k: v for k, v in res.min_perturbation.items() if k != "values"}
    return out


def findings_for(res: EvaluationResult, name: str, family: str = "unknown") -> list[Finding]:
    """The findings one evaluation supports; ``family`` (``tree``, ``linear``, ``neural``,
    ``unknown``: :func:`mlwarden.evasion.tabular.model_family`) picks advice that fits."""
    from mlwarden.evasion.tabular import robustness_advice

    out = [_robust_accuracy_finding(res, name)]
    out[0].recommendation = robustness_advice(family, res.tabular is not None)
    # "expose logits" means nothing for a tree ensemble or a scikit-learn linear model
    out.extend(
        f
        for f in _check_findings(res, name)
        if not (f.rule == "MLW-EVA-005" and family in ("tree", "linear"))
    )
    if res.budget == "fast":
        main = out[0]
        main.description += (
            " Fast budget (the default): APGD-CE and APGD-T on the 3 likeliest other "
            "classes, then Square with 1,000 queries; FAB-T and CLEVER left out. This is "
            "a lower bound on attack strength: robust accuracy can only fall with "
            "--budget standard (the full AutoAttack ensemble)."
        )
        main.evidence = {**main.evidence, "budget": "fast", "attack_strength": "lower bound"}
    elif res.budget != "standard":
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
    size, kept = _size_text(res), _kept_text(res)
    return Finding(
        rule="MLW-EVA-001",
        title=f"{name}: accuracy {change_text(clean, robust, prefix=bound)} "
        f"({fmt_ci(lo, hi)}) under {size}",
        severity=sev,
        atlas=atlas,
        mitigations=MITIGATIONS,
        description=(
            f"An attacker with {res.access}-box access changed the decision on "
            f"{clean - robust:.1%} of {res.n} inputs by {size}{kept} "
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


def _size_text(res: EvaluationResult) -> str:
    """The budget in words: eps-ball, relative to each feature's spread, or SNR."""
    if res.snr_db is not None:
        return f"perturbations at least {res.snr_db:g} dB below each clip (SNR)"
    tab = res.tabular or {}
    if tab.get("eps_relative") is not None:
        text = f"{res.norm} perturbations of {res.eps:g} x each feature's {tab['spread']}"
    else:
        text = f"{res.norm} perturbations of size {res.eps:g}"
    return text


def _kept_text(res: EvaluationResult) -> str:
    """Tabular constraints in words, for the description."""
    tab = res.tabular or {}
    kept = [
        f"{k} {', '.join(tab[k][:6])}{'...' if len(tab[k]) > 6 else ''}"
        for k in ("immutable", "integer")
        if tab.get(k)
    ]
    if tab.get("one_hot"):
        kept.append(f"{len(tab['one_hot'])} one-hot group(s)")
    if tab.get("ranges") == "data":
        kept.append("each feature within its range in the data")
    return f" ({'; '.join(kept)})" if kept else ""


def _family(target: Any) -> str:
    from mlwarden.evasion.tabular import model_family

    return model_family(target)


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
        adaptive_attacks=row.attacks,
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
