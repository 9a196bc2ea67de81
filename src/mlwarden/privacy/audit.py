"""Run a membership-inference audit on a model and turn the result into findings.

:func:`audit_membership` is the in-memory API (a Target, its training set and a
holdout set); :func:`mlwarden.privacy.privacy_report` wraps it for files and the CLI.

The population is ``train ∪ holdout`` with membership known. Shadow/reference models
are trained with the user's recipe on random halves of that population (each record
in each with probability 1/2, as in LiRA), so the attack learns what "in" and "out" look
like per record without being told the target's membership. Besides the target's own
ROC, each shadow model in turn is attacked with the others as references and the scores
are pooled: that is how LiRA resolves TPR at 0.1% FPR on small data sets, and it
measures the *training recipe*, which is what a user changes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlwarden.core.data import Dataset
from mlwarden.core.errors import UserError
from mlwarden.core.findings import Finding, Severity
from mlwarden.core.target import BaseTarget, SklearnTarget, Target, softmax
from mlwarden.core.text_target import SklearnTextTarget
from mlwarden.privacy import membership as mia
from mlwarden.privacy.metrics import RocMetrics, pooled_metrics, roc_metrics
from mlwarden.privacy.modalities import hooks_for
from mlwarden.privacy.shadows import (
    Recipe,
    ShadowSet,
    SklearnRecipe,
    TrainerRecipe,
    augment_views,
    train_shadows,
)

NEEDS_SHADOWS = ("lira", "rmia", "shadow")
#: What the label-only attack's noisy copies are, per modality (for the report).
NOISE_TEXT = {
    "tabular": "Gaussian noise, std noise_sigma x each feature's range",
    "image": "Gaussian noise, std noise_sigma x the data's value range",
    "audio": "Gaussian noise, std noise_sigma x each clip's RMS level",
    "text": "a fraction noise_sigma of the words dropped or replaced by another word",
}
#: Attacked in turn as targets when pooling scores over shadow models.
MAX_POOLED_TARGETS = 8


@dataclass
class MembershipResult:
    """Scores and metrics of one membership attack on one model."""

    attack: str
    scores: np.ndarray  #: (N,) over train then holdout
    is_member: np.ndarray  #: (N,) bool
    metrics: RocMetrics
    pooled: RocMetrics | None
    queries: int
    seconds: float
    config: dict[str, Any] = field(default_factory=dict)


def target_log_probs(target: Target, views: list[np.ndarray]) -> np.ndarray:
    """The target's log-probabilities ``(views, N, C)``; refuses label-only targets."""
    if target.access == "label":
        raise UserError(
            f"{target.name} returns labels only; score-based attacks need scores: use --attack label-only"
        )
    outs = []
    for v in views:
        s = np.asarray(target.predict(v), dtype=np.float64)
        if target.output == "probabilities":
            outs.append(np.log(np.clip(s, 1e-30, 1.0)))
        else:
            outs.append(np.log(np.clip(softmax(s), 1e-300, 1.0)))
    return np.stack(outs)


def recipe_for(target: Target, trainer: str | None) -> Recipe | None:
    """The user's recipe: ``--trainer`` if given, else a clone of a scikit-learn target."""
    if trainer:
        return TrainerRecipe(trainer)
    if isinstance(target, SklearnTarget | SklearnTextTarget):
        return SklearnRecipe(target.estimator)
    return None


def audit_membership(
    target: Target,
    train: Dataset,
    holdout: Dataset,
    *,
    attack: str = "lira",
    recipe: Recipe | None = None,
    shadows: int = 16,
    executor: str = "local",
    views: int = 1,
    online: bool = True,
    global_variance: bool | None = None,
    gamma: float = 2.0,
    offline_a: float = 0.3,
    noise_sigma: float = 0.1,
    noise_samples: int = 24,
    pool: bool = True,
    shadow_set: ShadowSet | None = None,
    seed: int = 0,
) -> MembershipResult:
    """Attack ``target`` and measure how well it tells ``train`` from ``holdout`` records."""
    if attack not in mia.ATTACKS:
        raise UserError(f"unknown attack {attack!r}; choose one of: {', '.join(mia.ATTACKS)}")
    x = np.concatenate([train.x, holdout.x])
    hooks = hooks_for(train)
    if hooks.numeric:
        x = x.astype(np.float32)
    y = np.concatenate([train.y, holdout.y]).astype(np.int64)
    is_member = np.r_[np.ones(len(train), bool), np.zeros(len(holdout), bool)]
    num_classes = max(train.num_classes, holdout.num_classes, int(y.max()) + 1)
    if global_variance is None:
        global_variance = shadows < 64
    config: dict[str, Any] = {"attack": attack, "seed": seed}
    start = time.perf_counter()
    q0 = target.queries
    if attack == "label-only":
        scores = mia.label_only_attack(
            target, x, y, sigma=noise_sigma, n_noise=noise_samples, hooks=hooks, seed=seed
        )
        config |= {
            "noise_sigma": noise_sigma,
            "noise_samples": noise_samples,
            "noise": NOISE_TEXT.get(hooks.name, NOISE_TEXT["tabular"]),
        }
        return MembershipResult(
            attack,
            scores,
            is_member,
            roc_metrics(scores, is_member),
            None,
            target.queries - q0,
            time.perf_counter() - start,
            config,
        )
    t_logp = target_log_probs(target, augment_views(x, views))
    if int(y.max()) >= t_logp.shape[-1]:
        raise UserError(
            f"the data has labels up to {int(y.max())} but {target.name} scores only "
            f"{t_logp.shape[-1]} classes; expected labels 0..{t_logp.shape[-1] - 1}"
        )
    if attack == "loss":
        scores = mia.loss_attack(t_logp, y)
        return MembershipResult(
            attack,
            scores,
            is_member,
            roc_metrics(scores, is_member),
            None,
            target.queries - q0,
            time.perf_counter() - start,
            config,
        )
    if shadow_set is None:
        if recipe is None:
            example = (
                "; for texts e.g. mlwarden.core.textmodels:tfidf_pipeline"
                if hooks.name == "text"
                else ""
            )
            raise UserError(
                f"--attack {attack} trains shadow models the way the target was trained: "
                f"give --trainer module:function (a train(x, y) -> model function{example}), "
                "use a scikit-learn model (cloned automatically), or choose --attack loss or "
                "label-only"
            )
        if shadows < 2:
            raise UserError(f"--shadows must be at least 2 for {attack}; got {shadows}")
        shadow_set = train_shadows(
            recipe,
            x,
            y,
            n_models=shadows,
            views=views,
            num_classes=num_classes,
            executor=executor,
            seed=seed,
        )
    config |= {
        "shadows": int(shadow_set.keep.shape[0]),
        "recipe": shadow_set.recipe,
        "views": views,
    }

    def score(t: np.ndarray, s: np.ndarray, k: np.ndarray) -> np.ndarray:
        if attack == "lira":
            return mia.lira(t, s, k, y, online=online, global_variance=global_variance)
        if attack == "rmia":
            return mia.rmia(t, s, k, y, online=online, gamma=gamma, a=offline_a)
        return mia.shadow_attack(t, s, k, y, seed=seed)

    if attack == "lira":
        config |= {"online": online, "global_variance": global_variance}
    elif attack == "rmia":
        config |= {"online": online, "gamma": gamma, "offline_a": offline_a}
    scores = score(t_logp, shadow_set.logp, shadow_set.keep)
    metrics = roc_metrics(scores, is_member)
    pooled = None
    m = shadow_set.keep.shape[0]
    if pool and attack != "shadow" and m >= 3:
        runs = [(scores, is_member)]
        for k in range(min(m, MAX_POOLED_TARGETS)):
            others = np.arange(m) != k
            runs.append(
                (
                    score(shadow_set.logp[k], shadow_set.logp[others], shadow_set.keep[others]),
                    shadow_set.keep[k],
                )
            )
        # every run scores the same population: record i is one record, not len(runs)
        pooled = pooled_metrics(runs, records=[np.arange(len(y))] * len(runs), seed=seed)
        config["pooled_targets"] = len(runs)
    return MembershipResult(
        attack,
        scores,
        is_member,
        metrics,
        pooled,
        target.queries - q0,
        time.perf_counter() - start,
        config,
    )


def membership_severity(m: RocMetrics) -> Severity:
    """Severity from TPR at low FPR; an unresolvable 0.1% FPR point is not trusted alone.

    CRITICAL: TPR >= 10% at 0.1% FPR; HIGH: >= 2% at 0.1% or >= 10% at 1%; MEDIUM:
    >= 0.5% at 0.1% or >= 3% at 1%; LOW: >= 2% at 1%, or only average-case leakage
    (AUC >= 0.6); INFO otherwise.
    """
    t1 = m.tpr_at_fpr.get(0.01, 0.0)
    t01 = m.tpr_at_fpr.get(0.001, 0.0) if m.resolvable.get(0.001, False) else 0.0
    if t01 >= 0.10:
        return Severity.CRITICAL
    if t01 >= 0.02 or t1 >= 0.10:
        return Severity.HIGH
    if t01 >= 0.005 or t1 >= 0.03:
        return Severity.MEDIUM
    if t1 >= 0.02 and m.resolvable.get(0.01, False):
        return Severity.LOW
    if m.auc >= 0.6:  # average-case leakage without confident individual hits
        return Severity.LOW
    return Severity.INFO


ACCESS_WORDS = {"white": "white-box", "score": "score", "label": "label-only"}


def membership_findings(
    result: MembershipResult, artifact: str | None = None, top: int = 10, access: str = "score"
) -> list[Finding]:
    """MLW-PRV-001 (leakage), MLW-PRV-002 (most exposed records), MLW-PRV-003 (resolution).

    The title and the body quote the same figures: those of the model they are judged on
    (the target, or the pooled shadow models when those are worse), named in both;
    ``access`` (what the attacker sees) is stated in the title, body and evidence.
    """
    m = result.metrics
    worst = m
    basis = "the target model"
    pooled = False
    if result.pooled is not None and membership_severity(result.pooled) > membership_severity(m):
        worst, basis = result.pooled, "models trained with the same recipe (pooled)"
        pooled = True
    sev = membership_severity(worst)
    seen = ACCESS_WORDS.get(access, access)
    on = (
        f", pooled over {result.config.get('pooled_targets')} models trained like it"
        if pooled
        else ""
    )
    cross = worst.crossfit.get(0.01)
    crossfit_text = (
        f" With thresholds chosen on the other models the attack reaches TPR {cross['tpr']:.2%}"
        f" at a real FPR of {cross['fpr']:.2%} (nominal 1%)."
        if cross
        else ""
    )
    findings = [
        Finding(
            rule="MLW-PRV-001",
            title=(
                f"Training-set membership leaks ({seen} access{on}): {result.attack} attack "
                f"finds {_tpr_short(worst, 0.01)} of members at 1% false positives "
                f"({_tpr_short(worst, 0.001)} at 0.1%)"
                if sev > Severity.INFO
                else f"No measurable membership leakage with the {result.attack} attack "
                f"({seen} access, AUC {m.auc:.3f})"
            ),
            severity=sev,
            atlas=["AML.T0024.000"],
            mitigations=["AML.M0002", "AML.M0012"],
            description=(
                f"A {result.attack} membership-inference attack with {seen} access scored "
                f"{m.members} training records against {m.nonmembers} held-out records. Judged "
                f"on {basis}: AUC "
                f"{worst.auc:.3f}{_ci(worst, 'auc', '.3f')}, TPR {worst.tpr_text(0.01)} at 1% "
                f"FPR and {worst.tpr_text(0.001)} at 0.1% FPR (95% intervals from resampling "
                f"records; {worst.nonmember_records} distinct non-member records).{crossfit_text} "
                "A TPR well above the FPR means an attacker can confidently name some "
                "individuals as having been in the training data."
            ),
            recommendation=(
                "Train with differential privacy (DP-SGD, e.g. mlwarden.defenses.dp.train_dp; "
                "report the epsilon), regularise harder or stop earlier to shrink the train/test "
                "gap, and review the most exposed records listed in the report. Returning only "
                "labels or rounded scores (AML.M0002) helps only if a label-only attack is also "
                "defeated; keep training data encrypted at rest (AML.M0012)."
            ),
            evidence={
                "attack": result.attack,
                "access": access,
                "pooled": pooled,
                "auc": worst.auc,
                "tpr_at_fpr": {f"{k:g}": v for k, v in worst.tpr_at_fpr.items()},
                "resolvable": {f"{k:g}": v for k, v in worst.resolvable.items()},
                "tpr_at_fpr_upper_bound": {f"{k:g}": v for k, v in worst.upper_bound.items()},
                "ci": {k: list(v) for k, v in worst.ci.items()},
                "nonmember_records": worst.nonmember_records,
                "crossfit": {f"{k:g}": v for k, v in worst.crossfit.items()},
                "basis": basis,
                "config": result.config,
            },
            artifact=artifact,
            check="privacy.membership",
            owasp=["ML04"],
        )
    ]
    if sev > Severity.INFO:
        exposed = exposed_records(result, top)
        findings.append(
            Finding(
                rule="MLW-PRV-002",
                title=f"{len(exposed)} training records are the most exposed to membership inference",
                severity=Severity.LOW if sev < Severity.HIGH else Severity.MEDIUM,
                atlas=["AML.T0024.000"],
                mitigations=["AML.M0002"],
                description=(
                    "These training records get the highest membership scores: outliers, rare "
                    "classes or mislabelled points that the model memorised."
                ),
                recommendation=(
                    "Inspect these records: remove duplicates and mislabelled points, collect "
                    "more data like them, or train with DP-SGD, which bounds every record's influence."
                ),
                evidence={"records": exposed},
                artifact=artifact,
                check="privacy.membership",
            )
        )
    if not m.resolvable[0.001]:
        findings.append(
            Finding(
                rule="MLW-PRV-003",
                title="TPR at 0.1% FPR cannot be resolved on the target alone",
                severity=Severity.INFO,
                atlas=["AML.T0024.000"],
                description=(
                    f"Only {m.nonmember_records} non-member records were scored; resolving a 0.1% "
                    f"FPR needs at least 1,000, so TPR there is reported as at most "
                    f"{m.upper_bound.get(0.001, m.tpr_at_fpr[0.001]):.2%}. "
                    + (
                        f"The pooled figure over {result.config.get('pooled_targets')} models is "
                        f"{result.pooled.tpr_text(0.001)}."
                        if result.pooled is not None and result.pooled.resolvable[0.001]
                        else "Use more holdout records or a shadow-based attack, whose scores are pooled."
                    )
                ),
                recommendation="Give a larger --holdout set to measure the low-FPR regime directly.",
                evidence={"nonmembers": m.nonmembers},
                artifact=artifact,
                check="privacy.membership",
            )
        )
    return findings


def _tpr_short(m: RocMetrics, fpr: float) -> str:
    """The TPR at ``fpr`` as the body's :meth:`RocMetrics.tpr_text` starts it: the same
    figure, to the same digits, and "at most" where it is only an upper bound."""
    if not m.resolvable.get(fpr, True):
        return f"at most {m.upper_bound.get(fpr, m.tpr_at_fpr[fpr]):.2%}"
    return f"{m.tpr_at_fpr[fpr]:.2%}"


def _ci(m: RocMetrics, key: str, spec: str) -> str:
    lo_hi = m.ci.get(key)
    return f" [{lo_hi[0]:{spec}}, {lo_hi[1]:{spec}}]" if lo_hi else ""


def exposed_records(result: MembershipResult, top: int = 10) -> list[dict[str, Any]]:
    """The training records with the highest membership scores (indices into TRAIN)."""
    member_idx = np.nonzero(result.is_member)[0]
    order = member_idx[np.argsort(-result.scores[member_idx], kind="stable")][:top]
    nonmember_scores = result.scores[~result.is_member]
    out = []
    for rank, i in enumerate(order, start=1):
        fpr = float((nonmember_scores >= result.scores[i]).mean())
        out.append(
            {
                "rank": rank,
                "train_index": int(i),
                "score": float(result.scores[i]),
                "holdout_fraction_scoring_higher": fpr,
            }
        )
    return out


def metrics_dict(result: MembershipResult) -> dict[str, Any]:
    """The report's ``metrics`` for one attack (``auc``, ``tpr_at_fpr`` and the rest)."""
    out: dict[str, Any] = {"attack": result.attack, **result.metrics.as_dict()}
    out["queries"] = result.queries
    out["seconds"] = round(result.seconds, 3)
    if result.pooled is not None:
        out["pooled"] = result.pooled.as_dict()
    return out


def split_off(ds: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Stratified split when the classes allow it, else a plain random one."""
    try:
        return ds.split(test_size=fraction, seed=seed)
    except ValueError:
        idx = np.random.default_rng(seed).permutation(len(ds))
        cut = max(1, int(round(len(ds) * fraction)))
        return ds.subset(np.sort(idx[cut:])), ds.subset(np.sort(idx[:cut]))


def accuracy_of(target: BaseTarget | Target, ds: Dataset) -> float:
    """Top-1 accuracy of a target on a dataset (counts queries)."""
    return float((target.predict_labels(ds.x) == ds.y).mean()) if len(ds) else float("nan")
