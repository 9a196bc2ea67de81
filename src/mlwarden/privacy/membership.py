"""Membership-inference attacks: was this record in the training set? (ATLAS AML.T0024.000)

Every attack turns a model's answers on a set of records into one score per record,
higher meaning "more likely a member". The scores go to :mod:`mlwarden.privacy.metrics`.

* :func:`loss_attack` — threshold on the loss of the true label, "Privacy Risk in
  Machine Learning: Analyzing the Connection to Overfitting" (Yeom et al., 2018,
  arXiv:1709.01604). No shadow models.
* :func:`shadow_attack` — per-class attack classifiers trained on shadow models'
  outputs, "Membership Inference Attacks against Machine Learning Models" (Shokri
  et al., 2017, arXiv:1610.05820).
* :func:`lira` — the Likelihood Ratio Attack, "Membership Inference Attacks From
  First Principles" (Carlini et al., 2022, arXiv:2112.03570): Gaussians fitted to the
  logit-scaled confidence ``phi = log(p_y / (1 - p_y))`` of shadow models that did
  (in) and did not (out) train on each record; online (in and out) or offline (out
  only, one-sided), per-record or global variance, over augmented views.
* :func:`rmia` — "Low-Cost High-Power Membership Inference Attacks" (Zarifzadeh et
  al., 2024, arXiv:2312.03262): the likelihood ratio ``p(x|target) / p(x)`` of a record
  compared pairwise with population records ``z``; score = fraction of ``z`` it beats
  by a factor ``gamma``. Offline, ``p(x)`` from out-models is rescaled with ``a``.
* :func:`label_only_attack` — for APIs returning labels only: robustness of the
  predicted label to random Gaussian noise, "Label-Only Membership Inference Attacks"
  (Choquette-Choo et al., 2021, arXiv:2007.14321).

Shapes: ``logp`` target log-probabilities ``(views, N, C)``; shadow log-probabilities
``(M, views, N, C)``; ``keep`` ``(M, N)`` bool.
"""

from __future__ import annotations

import numpy as np
from scipy import stats
from scipy.special import logsumexp

from mlwarden.core.target import Target
from mlwarden.privacy.modalities import PrivacyHooks

ATTACKS = ("lira", "rmia", "loss", "shadow", "label-only")


def true_class_log_prob(logp: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``log p_y`` for each record; ``logp`` is ``(..., N, C)``, result ``(..., N)``."""
    idx = np.broadcast_to(y.reshape((1,) * (logp.ndim - 2) + (-1, 1)), logp.shape[:-1] + (1,))
    return np.take_along_axis(logp, idx, axis=-1)[..., 0]


def logit_confidence(logp: np.ndarray, y: np.ndarray) -> np.ndarray:
    """LiRA's ``phi = log p_y - log(1 - p_y)``, computed stably from log-probabilities."""
    logp = np.asarray(logp, dtype=np.float64)
    lp_y = true_class_log_prob(logp, y)
    mask = np.zeros(logp.shape[-2:], dtype=bool)
    mask[np.arange(len(y)), y] = True
    others = np.where(mask, -np.inf, logp)
    return lp_y - logsumexp(others, axis=-1)


def loss_attack(logp: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Yeom et al.: score = minus the cross-entropy loss = ``log p_y`` (first view)."""
    return true_class_log_prob(np.asarray(logp, dtype=np.float64)[0], y)


def lira(
    target_logp: np.ndarray,
    shadow_logp: np.ndarray,
    keep: np.ndarray,
    y: np.ndarray,
    *,
    online: bool = True,
    global_variance: bool = True,
) -> np.ndarray:
    """LiRA scores ``(N,)``: a log likelihood ratio (online) or a one-sided log p-value (offline).

    ``global_variance`` pools one variance for all records (the paper's choice with
    few shadow models); otherwise each record gets its own. Records with no in (or
    out) shadow fall back to the global statistics.
    """
    phi_t = logit_confidence(target_logp, y)  # (V, N)
    phi_s = logit_confidence(shadow_logp, y)  # (M, V, N)
    keep3 = keep[:, None, :]
    out_mean, out_std = _masked_gaussian(phi_s, ~keep3, global_variance)
    if not online:
        z = (phi_t - out_mean) / out_std
        return stats.norm.logcdf(z).mean(axis=0)
    in_mean, in_std = _masked_gaussian(phi_s, keep3, global_variance)
    ll_in = stats.norm.logpdf(phi_t, in_mean, in_std)
    ll_out = stats.norm.logpdf(phi_t, out_mean, out_std)
    return (ll_in - ll_out).mean(axis=0)


def _masked_gaussian(
    phi: np.ndarray, mask: np.ndarray, global_variance: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Per-record mean and std of ``phi`` (M, V, N) over the models where ``mask`` holds."""
    mask = np.broadcast_to(mask, phi.shape)
    count = mask.sum(axis=0)
    total = np.where(mask, phi, 0.0).sum(axis=0)
    grand = phi[mask].mean() if mask.any() else 0.0
    mean = np.where(count > 0, total / np.maximum(count, 1), grand)
    resid = np.where(mask, phi - mean[None], 0.0)
    pooled = float(np.sqrt((resid**2).sum() / max(int(mask.sum()) - 1, 1)))
    pooled = max(pooled, 1e-6)
    if global_variance:
        return mean, np.full_like(mean, pooled)
    var = (resid**2).sum(axis=0) / np.maximum(count - 1, 1)
    std = np.where(count > 1, np.sqrt(var), pooled)
    return mean, np.maximum(std, 1e-6)


def rmia(
    target_logp: np.ndarray,
    shadow_logp: np.ndarray,
    keep: np.ndarray,
    y: np.ndarray,
    *,
    online: bool = True,
    gamma: float = 2.0,
    a: float = 0.3,
    z_index: np.ndarray | None = None,
) -> np.ndarray:
    """RMIA scores ``(N,)`` in [0, 1]: fraction of population records ``z`` dominated by ``gamma``.

    ``p(x)`` is the mean true-class probability over reference models (all of them
    online; out-models only offline, then ``p(x) = ((1 + a) p_out(x) + (1 - a)) / 2``).
    ``z_index`` picks the population records used as ``z`` (default: all); they need
    no membership labels.
    """
    p_t = np.exp(true_class_log_prob(np.asarray(target_logp, np.float64), y)).mean(axis=0)
    p_s = np.exp(true_class_log_prob(np.asarray(shadow_logp, np.float64), y)).mean(axis=1)
    if online:
        p_x = p_s.mean(axis=0)
    else:
        out = ~keep
        p_out = np.where(out, p_s, 0.0).sum(axis=0) / np.maximum(out.sum(axis=0), 1)
        p_x = 0.5 * ((1.0 + a) * p_out + (1.0 - a))
    ratio = p_t / np.maximum(p_x, 1e-30)
    z = ratio if z_index is None else ratio[z_index]
    sorted_z = np.sort(z)
    # ratio_x / ratio_z >= gamma  <=>  ratio_z <= ratio_x / gamma
    return np.searchsorted(sorted_z, ratio / gamma, side="right") / len(sorted_z)


def shadow_attack(
    target_logp: np.ndarray,
    shadow_logp: np.ndarray,
    keep: np.ndarray,
    y: np.ndarray,
    *,
    seed: int = 0,
) -> np.ndarray:
    """Shokri et al.: one attack classifier per class on shadow prediction vectors.

    Features are the prediction vector sorted in decreasing order plus the true
    class's log-probability; each attack model is a small MLP, as in the paper.
    """
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    def features(logp: np.ndarray) -> np.ndarray:
        p = np.exp(logp)
        top = -np.sort(-p, axis=-1)
        return np.concatenate([top, true_class_log_prob(logp, y)[..., None]], axis=-1)

    f_shadow = features(np.asarray(shadow_logp[:, 0], np.float64))  # (M, N, F)
    f_target = features(np.asarray(target_logp[0], np.float64))  # (N, F)
    scores = np.zeros(len(y))
    for c in np.unique(y):
        cols = y == c
        xs = f_shadow[:, cols].reshape(-1, f_shadow.shape[-1])
        ys = keep[:, cols].reshape(-1)
        if ys.all() or not ys.any():
            scores[cols] = 0.5
            continue
        scaler = StandardScaler().fit(xs)
        clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=300, random_state=seed)
        clf.fit(scaler.transform(xs), ys)
        scores[cols] = clf.predict_proba(scaler.transform(f_target[cols]))[:, 1]
    return scores


def label_only_attack(
    target: Target,
    x: np.ndarray,
    y: np.ndarray,
    *,
    sigma: float = 0.1,
    n_noise: int = 24,
    bounds: tuple[float, float] | None = None,
    hooks: PrivacyHooks | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Choquette-Choo et al.: fraction of noisy copies still labelled correctly (0 if wrong).

    The noisy copies come from the modality's ``perturb`` hook
    (:mod:`mlwarden.privacy.modalities`): Gaussian noise of std ``sigma`` times each
    feature's range (``bounds`` when given, else measured on ``x``), ``sigma`` times each
    clip's RMS for audio, or a fraction ``sigma`` of the words dropped or swapped for
    text. The attack spends ``N * (n_noise + 1)`` label queries. Members sit farther from
    the decision boundary, so their labels survive more noise.
    """
    from mlwarden.privacy.modalities import hooks_for

    hooks = hooks or hooks_for(x)
    rng = np.random.default_rng(seed)
    ranges = hooks.ranges(x)
    if bounds is not None and ranges is not None:
        ranges = (np.full_like(ranges[0], bounds[0]), np.full_like(ranges[1], bounds[1]))
    correct = target.predict_labels(x) == y
    robust = np.zeros(len(x))
    for _ in range(n_noise):
        robust += target.predict_labels(hooks.perturb(x, sigma, ranges, rng)) == y
    # Break ties among fully robust records by nothing else than the count: label-only.
    return correct * (1.0 + robust) / (n_noise + 1.0)
