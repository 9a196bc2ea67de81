"""Membership-inference metrics as LiRA prescribes them.

"Membership Inference Attacks From First Principles" (Carlini et al., 2022,
arXiv:2112.03570) argues that an attack is judged by its true-positive rate at a
*low* false-positive rate, read off a ROC curve drawn on log-log axes, not by its
average accuracy. This module computes that curve, the AUC, TPR at fixed FPRs
(saying when an FPR cannot be resolved because there are fewer than ``1/FPR``
non-members), the best balanced accuracy, and renders the log-log ROC as a PNG.

Scores: higher means "more likely a member". Labels: 1 member, 0 non-member.

Example::

    m = roc_metrics(scores, is_member)
    m.tpr_at_fpr[0.001], m.resolvable[0.001], m.auc
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

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly summary; FPR keys as strings ("0.01", "0.001")."""
        return {
            "auc": self.auc,
            "balanced_accuracy": self.balanced_accuracy,
            "tpr_at_fpr": {_key(f): v for f, v in self.tpr_at_fpr.items()},
            "tpr_at_fpr_resolvable": {_key(f): v for f, v in self.resolvable.items()},
            "members": self.members,
            "nonmembers": self.nonmembers,
        }


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
    """Highest TPR at any threshold whose FPR does not exceed ``target``."""
    ok = fpr <= target + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def roc_metrics(
    scores: np.ndarray, labels: np.ndarray, fprs: Sequence[float] = LOW_FPRS
) -> RocMetrics:
    """AUC, TPR at each FPR in ``fprs`` (with resolvability) and best balanced accuracy."""
    fpr, tpr = roc_curve(scores, labels)
    labels = np.asarray(labels).astype(bool)
    neg = int((~labels).sum())
    auc = float(np.trapezoid(tpr, fpr))
    bal = float(np.max(1.0 + tpr - fpr) / 2.0)
    return RocMetrics(
        fpr=fpr,
        tpr=tpr,
        auc=auc,
        balanced_accuracy=bal,
        tpr_at_fpr={f: tpr_at(fpr, tpr, f) for f in fprs},
        resolvable={f: neg * f >= 1.0 for f in fprs},
        members=int(labels.sum()),
        nonmembers=neg,
    )


def pooled_metrics(
    runs: Sequence[tuple[np.ndarray, np.ndarray]], fprs: Sequence[float] = LOW_FPRS
) -> RocMetrics:
    """Metrics over the scores of several (target model, data) runs pooled together.

    LiRA evaluates over many target models so that TPR at 0.1% FPR rests on enough
    non-members; each run's scores must be on the same scale (a likelihood ratio).
    """
    scores = np.concatenate([np.asarray(s, dtype=np.float64).ravel() for s, _ in runs])
    labels = np.concatenate([np.asarray(lab).astype(bool).ravel() for _, lab in runs])
    return roc_metrics(scores, labels, fprs)


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
