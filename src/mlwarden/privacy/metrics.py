"""Membership-inference metrics as LiRA prescribes them.

"Membership Inference Attacks From First Principles" (Carlini et al., 2022,
arXiv:2112.03570) argues that an attack is judged by its true-positive rate at a
*low* false-positive rate, read off a ROC curve drawn on log-log axes, not by its
average accuracy. This module computes that curve, the AUC, TPR at fixed FPRs, the
best balanced accuracy, and renders the log-log ROC as a PNG.

Honest reading (issue 22):

* Ties are broken at random: inside a block of equal scores the ROC is the straight
  line the expected random tie-break follows, so TPR at an FPR inside the block is
  interpolated, never the whole block at once nor none of it (RMIA's scores take few
  distinct values).
* Rows are not records: pooled over several target models the same record is scored
  once per model. Intervals come from a record-level bootstrap (resample records, keep
  all their rows), and an FPR is *resolvable* only with at least ``1/FPR`` distinct
  non-member records; otherwise the TPR there is reported as an upper bound (the TPR at
  FPR ``1/records``), not a value.
* :func:`crossfit` chooses each threshold on other target models than those it is
  scored on and reports the false-positive rate it really reaches.

Scores: higher means "more likely a member". Labels: 1 member, 0 non-member.

Example::

    m = roc_metrics(scores, is_member)
    m.tpr_at_fpr[0.001], m.resolvable[0.001], m.ci["tpr@0.001"], m.auc
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

#: The false-positive rates reported everywhere (fractions, not percent).
LOW_FPRS: tuple[float, ...] = (0.01, 0.001)


@dataclass
class RocMetrics:
    """ROC curve and the summary numbers derived from it."""

    fpr: np.ndarray
    tpr: np.ndarray
    auc: float
    balanced_accuracy: float
    tpr_at_fpr: dict[float, float]
    #: False when fewer than ``1/FPR`` non-members were scored: the TPR at that FPR
    #: is then read off a step the data cannot resolve and is only an indication.
    resolvable: dict[float, bool]
    members: int
    nonmembers: int
    extra: dict[str, float] = field(default_factory=dict)
    #: distinct non-member records (rows of the same record pooled over models count once)
    nonmember_records: int = 0
    #: 95% record-level bootstrap intervals: "auc", "tpr@0.01", "tpr@0.001"
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: for each unresolvable FPR: the TPR it cannot exceed (TPR at FPR 1/records)
    upper_bound: dict[float, float] = field(default_factory=dict)
    #: thresholds chosen on other models (:func:`crossfit`): {fpr: {"tpr", "fpr"}}
    crossfit: dict[float, dict[str, float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly summary; FPR keys as strings ("0.01", "0.001")."""
        out: dict[str, object] = {
            "auc": self.auc,
            "balanced_accuracy": self.balanced_accuracy,
            "tpr_at_fpr": {_key(f): v for f, v in self.tpr_at_fpr.items()},
            "tpr_at_fpr_resolvable": {_key(f): v for f, v in self.resolvable.items()},
            "tpr_at_fpr_upper_bound": {_key(f): v for f, v in self.upper_bound.items()},
            "ci": {k: list(v) for k, v in self.ci.items()},
            "members": self.members,
            "nonmembers": self.nonmembers,
            "nonmember_records": self.nonmember_records,
        }
        if self.crossfit:
            out["crossfit"] = {_key(f): v for f, v in self.crossfit.items()}
        return out

    def tpr_text(self, fpr: float) -> str:
        """``"2.49% [1.40%, 4.30%]"``, or ``"<= 3.10% (not resolvable)"``."""
        if not self.resolvable.get(fpr, True):
            bound = self.upper_bound.get(fpr, self.tpr_at_fpr[fpr])
            return f"<= {bound:.2%} (not resolvable: {self.nonmember_records} non-member records)"
        lo_hi = self.ci.get(f"tpr@{_key(fpr)}")
        ci = f" [{lo_hi[0]:.2%}, {lo_hi[1]:.2%}]" if lo_hi else ""
        return f"{self.tpr_at_fpr[fpr]:.2%}{ci}"


def _key(fpr: float) -> str:
    return f"{fpr:g}"


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact ROC curve: (fpr, tpr) at every distinct threshold, from (0, 0) to (1, 1).

    Ties in score move both rates at once (no optimistic tie-breaking).
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).astype(bool).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"{len(scores)} scores but {len(labels)} labels")
    if not np.all(np.isfinite(scores)):
        scores = np.nan_to_num(scores, nan=-np.inf)
    pos, neg = int(labels.sum()), int((~labels).sum())
    if pos == 0 or neg == 0:
        raise ValueError("ROC needs both members and non-members")
    order = np.argsort(-scores, kind="mergesort")
    s, lab = scores[order], labels[order]
    tp = np.cumsum(lab)
    fp = np.cumsum(~lab)
    last_of_tie = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tpr = np.r_[0.0, tp[last_of_tie] / pos]
    fpr = np.r_[0.0, fp[last_of_tie] / neg]
    return fpr, tpr


def tpr_at(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """TPR at FPR ``target`` with ties broken at random (the expected TPR).

    The highest TPR of a threshold whose FPR does not exceed ``target``, plus, when the
    next step is a block of tied scores (a diagonal segment), the share of that block a
    random tie-break lets through at ``target``.
    """
    i = int(np.searchsorted(fpr, target + 1e-12, side="right")) - 1
    if i < 0:
        return 0.0
    i = int(np.nonzero(fpr == fpr[i])[0][-1])
    t = float(tpr[i])
    if i + 1 < len(fpr) and fpr[i + 1] > fpr[i]:
        frac = (target - fpr[i]) / (fpr[i + 1] - fpr[i])
        t += max(0.0, min(1.0, frac)) * float(tpr[i + 1] - tpr[i])
    return t


def roc_metrics(
    scores: np.ndarray,
    labels: np.ndarray,
    fprs: Sequence[float] = LOW_FPRS,
    records: np.ndarray | None = None,
    *,
    n_boot: int = 200,
    seed: int = 0,
) -> RocMetrics:
    """AUC, TPR at each FPR in ``fprs`` with record-level bootstrap intervals, and best
    balanced accuracy.

    ``records``: the record id of each row (default: every row its own record). An FPR
    is resolvable with at least ``1/FPR`` distinct non-member records.
    """
    fpr, tpr = roc_curve(scores, labels)
    labels = np.asarray(labels).astype(bool).ravel()
    rec = np.arange(len(labels)) if records is None else np.asarray(records).ravel()
    if rec.shape != labels.shape:
        raise ValueError(f"{len(rec)} record ids but {len(labels)} labels")
    neg = int((~labels).sum())
    neg_records = len(np.unique(rec[~labels]))
    resolvable = {f: neg_records * f >= 1.0 for f in fprs}
    m = RocMetrics(
        fpr=fpr,
        tpr=tpr,
        auc=float(np.trapezoid(tpr, fpr)),
        balanced_accuracy=float(np.max(1.0 + tpr - fpr) / 2.0),
        tpr_at_fpr={f: tpr_at(fpr, tpr, f) for f in fprs},
        resolvable=resolvable,
        members=int(labels.sum()),
        nonmembers=neg,
        nonmember_records=neg_records,
        upper_bound={f: tpr_at(fpr, tpr, 1.0 / neg_records) for f in fprs if not resolvable[f]},
    )
    if n_boot > 0:
        m.ci = bootstrap_ci(scores, labels, rec, fprs, n_boot=n_boot, seed=seed)
    return m


def bootstrap_ci(
    scores: np.ndarray,
    labels: np.ndarray,
    records: np.ndarray,
    fprs: Sequence[float] = LOW_FPRS,
    *,
    n_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """Percentile intervals of AUC and TPR at each FPR, resampling *records*.

    Each replicate draws records with replacement and keeps every row of a drawn record
    as many times as it was drawn, so a record scored by several target models moves
    all its rows together (Efron & Tibshirani 1993, the cluster bootstrap).
    """
    s = np.nan_to_num(np.asarray(scores, np.float64).ravel(), nan=-np.inf)
    lab = np.asarray(labels).astype(bool).ravel()
    uniq, inv = np.unique(np.asarray(records).ravel(), return_inverse=True)
    order = np.argsort(-s, kind="mergesort")
    s, lab, inv = s[order], lab[order], inv[order]
    last_of_tie = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    rng = np.random.default_rng(seed)
    rows: dict[str, list[float]] = {"auc": [], **{f"tpr@{_key(f)}": [] for f in fprs}}
    for _ in range(n_boot):
        w = np.bincount(rng.integers(0, len(uniq), len(uniq)), minlength=len(uniq))[inv]
        tp, fp = np.cumsum(w * lab)[last_of_tie], np.cumsum(w * ~lab)[last_of_tie]
        if tp[-1] == 0 or fp[-1] == 0:
            continue
        fpr, tpr = np.r_[0.0, fp / fp[-1]], np.r_[0.0, tp / tp[-1]]
        rows["auc"].append(float(np.trapezoid(tpr, fpr)))
        for f in fprs:
            rows[f"tpr@{_key(f)}"].append(tpr_at(fpr, tpr, f))
    a = (1 - level) / 2
    return {
        k: (float(np.quantile(v, a)), float(np.quantile(v, 1 - a))) for k, v in rows.items() if v
    }


def pooled_metrics(
    runs: Sequence[tuple[np.ndarray, np.ndarray]],
    fprs: Sequence[float] = LOW_FPRS,
    records: Sequence[np.ndarray] | None = None,
    *,
    n_boot: int = 200,
    seed: int = 0,
) -> RocMetrics:
    """Metrics over the scores of several (target model, data) runs pooled together.

    LiRA evaluates over many target models so that TPR at 0.1% FPR rests on enough
    non-members; each run's scores must be on the same scale (a likelihood ratio).
    ``records``: per run, the record id of each row — the same record scored by several
    models is one record for resolvability and for the bootstrap (default: every row
    of every run a record of its own, which overstates the sample). With two runs or
    more the thresholds are also cross-fitted (:func:`crossfit`).
    """
    scores = np.concatenate([np.asarray(s, dtype=np.float64).ravel() for s, _ in runs])
    labels = np.concatenate([np.asarray(lab).astype(bool).ravel() for _, lab in runs])
    rec = None if records is None else np.concatenate([np.asarray(r).ravel() for r in records])
    m = roc_metrics(scores, labels, fprs, rec, n_boot=n_boot, seed=seed)
    if len(runs) >= 2:
        m.crossfit = crossfit(runs, fprs)
    return m


def crossfit(
    runs: Sequence[tuple[np.ndarray, np.ndarray]], fprs: Sequence[float] = LOW_FPRS
) -> dict[float, dict[str, float]]:
    """TPR and the FPR really reached when each run's threshold is chosen on the others.

    For run ``k`` and a nominal FPR ``f``, the threshold is the score above which a
    fraction ``f`` of the *other* runs' non-members lie; it is then applied to run
    ``k``. Counts are summed over runs. A reached FPR far above ``f`` means scores are
    not on one scale across models, and a threshold an attacker fits on reference
    models would not hold on the target.
    """
    out: dict[float, dict[str, float]] = {}
    for f in fprs:
        tp = fp = pos = neg = 0
        for k, (s_k, lab_k) in enumerate(runs):
            other = np.concatenate(
                [np.asarray(s, np.float64)[~np.asarray(lab).astype(bool)]
                 for j, (s, lab) in enumerate(runs) if j != k]
            )  # fmt: skip
            if len(other) == 0:
                continue
            thr = float(np.quantile(other, 1 - f, method="higher"))
            s_k = np.asarray(s_k, np.float64)
            lab_k = np.asarray(lab_k).astype(bool)
            tp += int((s_k[lab_k] > thr).sum())
            fp += int((s_k[~lab_k] > thr).sum())
            pos += int(lab_k.sum())
            neg += int((~lab_k).sum())
        out[f] = {"tpr": tp / max(pos, 1), "fpr": fp / max(neg, 1)}
    return out


def roc_png(curves: dict[str, RocMetrics], title: str = "Membership inference ROC") -> str:
    """Log-log ROC curves (one per attack) as a ``data:image/png;base64,...`` URI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 4.2), dpi=100)
    floor = 1e-5
    for name, m in curves.items():
        f = np.clip(m.fpr, floor, 1.0)
        t = np.clip(m.tpr, floor, 1.0)
        ax.step(f, t, where="post", label=f"{name} (AUC {m.auc:.3f})")
    ax.plot([floor, 1], [floor, 1], "k--", lw=0.8, label="random guess")
    ax.set_xscale("log")
    ax.set_yscale("log")
    lo = min(1e-3, 1.0 / max(max((m.nonmembers for m in curves.values()), default=10), 10))
    ax.set_xlim(lo, 1)
    ax.set_ylim(lo, 1)
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
