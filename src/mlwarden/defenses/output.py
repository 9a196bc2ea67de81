"""Output hardening: return less of a model's scores than it computes.

A prediction API that returns full-precision probabilities hands an attacker the
most information per query: model-extraction attacks (Tramèr et al., "Stealing
Machine Learning Models via Prediction APIs", arXiv:1609.02943) and score-based
evasion attacks use every digit. The same paper's counter-measures, and ATLAS
mitigation AML.M0002 (Passive AI Output Obfuscation), are implemented here:

* ``"none"`` — the scores unchanged (as float32);
* ``"top-k"`` — keep the ``k`` highest scores of each row, zero the rest and
  renormalise the kept ones to sum to 1;
* ``"round"`` — round every score to ``decimals`` decimal places;
* ``"label-only"`` — only the predicted class, an int64 array ``(N,)``.

These reduce what leaks per query; they do not stop label-only attacks
(HopSkipJump, arXiv:1904.02144), which is why the gateway also limits and monitors
queries.

Example::

    >>> import numpy as np
    >>> p = np.array([[0.1, 0.6, 0.3]])
    >>> harden_output(p, "top-k", k=1).tolist()
    [[0.0, 1.0, 0.0]]
    >>> harden_output(p, "label-only").tolist()
    [1]
"""

from __future__ import annotations

import numpy as np

#: The hardening modes :func:`harden_output` accepts.
MODES: tuple[str, ...] = ("none", "top-k", "round", "label-only")


def harden_output(scores: np.ndarray, mode: str, k: int = 1, decimals: int = 2) -> np.ndarray:
    """Harden a batch of per-class scores for release to a caller.

    Args:
        scores: ``(N, C)`` scores (or one row ``(C,)``). For ``"top-k"`` they should be
            probabilities; rows with a negative entry are taken as logits and turned
            into probabilities with a softmax first, so the result is always a
            distribution over the kept classes.
        mode: one of :data:`MODES`.
        k: classes kept by ``"top-k"`` (at least 1; more than ``C`` keeps all).
        decimals: decimal places kept by ``"round"`` (at least 0).

    Returns:
        float32 ``(N, C)`` for ``"none"``, ``"top-k"`` and ``"round"``; int64 ``(N,)``
        labels for ``"label-only"``. A single row in gives a single row (or a 0-d label)
        out. The input is never modified.

    Raises:
        ValueError: unknown mode, ``k < 1``, ``decimals < 0``, non-finite scores, or
            scores that are not 1-D or 2-D.
    """
    if mode not in MODES:
        raise ValueError(f"unknown output mode {mode!r}; expected one of: {', '.join(MODES)}")
    if k < 1:
        raise ValueError(f"top-k needs k >= 1; got {k}")
    if decimals < 0:
        raise ValueError(f"round needs decimals >= 0; got {decimals}")
    arr = np.asarray(scores, dtype=np.float64)
    single = arr.ndim == 1
    if single:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise ValueError(f"scores must have shape (N, C) or (C,) with C >= 1; got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("scores contain NaN or infinity")

    if mode == "label-only":
        labels = arr.argmax(axis=1).astype(np.int64)
        return labels[0] if single else labels
    if mode == "none":
        out = arr.astype(np.float32)
    elif mode == "round":
        out = round_scores(arr, decimals)
    else:
        out = _top_k(arr, k).astype(np.float32)
    return out[0] if single else out


def round_scores(arr: np.ndarray, decimals: int) -> np.ndarray:
    """``"round"``'s output: scores rounded to ``decimals`` in float64, as float32
    (unchecked: :func:`harden_output` checks first; the gateway has checked already)."""
    return np.round(np.asarray(arr, dtype=np.float64), decimals).astype(np.float32)  # type: ignore[no-any-return]


def _top_k(arr: np.ndarray, k: int) -> np.ndarray:
    """Keep the k largest entries per row (ties to the lower index), renormalised."""
    probs = arr.copy()
    logits_rows = (probs < 0).any(axis=1)
    if logits_rows.any():
        z = probs[logits_rows]
        z = np.exp(z - z.max(axis=1, keepdims=True))
        probs[logits_rows] = z / z.sum(axis=1, keepdims=True)
    k = min(k, probs.shape[1])
    # Stable sort of the negated scores: among equal scores the lower class index wins.
    keep = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    out = np.zeros_like(probs)
    rows = np.arange(len(probs))[:, None]
    out[rows, keep] = probs[rows, keep]
    total = out.sum(axis=1, keepdims=True)
    # A row whose kept scores are all zero keeps its top class with probability 1.
    zero = total[:, 0] <= 0
    if zero.any():
        out[zero, keep[zero, 0]] = 1.0
        total[zero] = 1.0
    return out / total
