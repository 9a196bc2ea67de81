"""Find a backdoor in a trained model.

* :func:`neural_cleanse` — Wang et al. 2019, "Neural Cleanse: Identifying and
  Mitigating Backdoor Attacks in Neural Networks" (IEEE S&P 2019). For every class
  ``t`` it searches the smallest trigger (a mask ``m`` in [0, 1] and a pattern ``p``)
  such that ``(1 - m) * x + m * p`` is classified ``t``; a class whose trigger is far
  smaller than the others' (MAD anomaly index > 2 on the small side) is the likely
  backdoor target. The search uses the published settings: Adam (lr 0.1, betas
  0.5/0.9), initial cost 1e-3, cost multiplied by 1.5 after ``patience`` epochs above
  a 99% attack success rate and divided by 1.5**1.5 after ``patience`` epochs below,
  early stop after ``5 * patience`` epochs without a 1% improvement. All classes are
  optimised together in one batched computation.
* :func:`trigger_occlusion` — mlwarden's training-data filter built on the reversed
  trigger: samples of the suspected target class whose prediction changes once the
  trigger region is blanked out carry the trigger.
* :func:`strip` — Gao et al. 2019, "STRIP: A Defence Against Trojan Attacks on Deep
  Neural Networks", arXiv:1902.06531. Each input is superimposed on ``n`` clean
  inputs; a trojaned input keeps its (target) prediction, so the mean Shannon entropy
  of the predictions is low. The threshold is the ``frr`` quantile of a normal fitted
  to clean inputs' entropies (false rejection rate ``frr``).

Example::

    nc = neural_cleanse(model, clean_x, num_classes=10, bounds=(0, 1))
    nc.suspected_target, nc.anomaly_index
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from mlwarden.core.errors import UserError
from mlwarden.poisoning.detect_data import Detection

#: audio verdict thresholds (see :func:`norm_verdict`)
GAP_THRESHOLD, RATIO_THRESHOLD, FLIP_THRESHOLD = 0.2, 0.1, 0.8


@dataclass
class NeuralCleanseResult:
    """Reversed triggers and the anomaly analysis over them."""

    masks: np.ndarray  #: (K, 1, H, W) or (K, F) in [0, 1]
    patterns: np.ndarray  #: (K, C, H, W) or (K, F) in input scale
    l1: np.ndarray  #: (K,) L1 norm of each class's mask
    success: np.ndarray  #: (K,) attack success rate of each reversed trigger on the clean data
    anomaly_index: np.ndarray  #: (K,) MAD anomaly index, signed: positive = smaller than median
    suspected_target: int | None
    flagged: list[int] = field(default_factory=list)
    epochs: int = 0
    #: the audio verdict (:func:`mlwarden.poisoning.audio_trigger.audio_cleanse`)
    verdict: NormVerdict | None = None
    #: the trigger parametrisation when not the paper's mask over inputs (``masks`` and
    #: ``patterns`` are then in its terms, e.g. time-frequency cells)
    space: Any = None
    #: per search domain, its verdict (:func:`mlwarden.poisoning.audio_trigger.audio_cleanse`)
    domain_verdicts: dict[str, NormVerdict] = field(default_factory=dict)

    @property
    def domain(self) -> str:
        """Where the masks lie: ``input`` (the paper's) or the space's domain."""
        return "input" if self.space is None else str(self.space.domain)

    def trigger_for(self, cls: int) -> tuple[np.ndarray, np.ndarray]:
        return self.masks[cls], self.patterns[cls]

    def apply(self, cls: int, x: np.ndarray) -> np.ndarray:
        """Stamp class ``cls``'s reversed trigger on a batch."""
        m, p = self.trigger_for(cls)
        if self.space is not None:
            with torch.no_grad():
                mt, pt = torch.as_tensor(m[None]), torch.as_tensor(p[None])
                out = self.space.stamp(mt, pt, torch.as_tensor(np.asarray(x, np.float32)))
            return out[0].numpy().astype(np.float32)
        return ((1.0 - m) * x + m * p).astype(np.float32)


def _as_module(model: Any) -> nn.Module:
    if isinstance(model, nn.Module):
        return model
    module = getattr(model, "module", None)
    if isinstance(module, nn.Module):
        return module
    raise UserError(
        f"Neural Cleanse needs gradients: give a torch module or TorchScript file, not a "
        f"{type(model).__name__}"
    )


def anomaly_index(l1: np.ndarray) -> np.ndarray:
    """MAD anomaly index of the mask norms, positive for norms below the median.

    ``(median - l1) / (1.4826 * MAD)``; Neural Cleanse flags a class above 2.
    """
    med = float(np.median(l1))
    mad = 1.4826 * float(np.median(np.abs(l1 - med)))
    return (med - l1) / max(mad, 1e-12)


def neural_cleanse(
    model: Any,
    x: np.ndarray,
    *,
    num_classes: int | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
    feature_bounds: np.ndarray | None = None,
    epochs: int = 100,
    steps_per_epoch: int = 4,
    batch_size: int = 64,
    init_cost: float = 1e-3,
    lr: float = 0.1,
    success_threshold: float = 0.99,
    patience: int = 5,
    cost_multiplier: float = 1.5,
    threshold: float = 2.0,
    seed: int = 0,
    space: Callable[[torch.Tensor, int, torch.Generator], TriggerSpace] | None = None,
) -> NeuralCleanseResult:
    """Reverse-engineer one trigger per class and find the outlier (Wang et al. 2019).

    ``x``: clean inputs of any shape: ``(N, C, H, W)`` images get one mask over pixels
    shared by the channels, any other shape (``(N, F)`` features, ``(N, C, T)`` audio)
    a mask over every input value; values lie in ``bounds``, or per feature in
    ``feature_bounds`` (shape ``(2, *x.shape[1:])``, tabular data). ``epochs`` of
    ``steps_per_epoch`` mini-batches of ``batch_size``. The paper runs until early
    stopping; ``epochs`` caps it. ``space(x, k, generator)`` builds another trigger
    parametrisation (default :class:`InputTrigger`, the paper's; audio also has
    :class:`mlwarden.poisoning.audio_trigger.SpectralTrigger`): the search and the
    anomaly analysis stay the paper's, only what a mask covers changes. Returns masks,
    patterns, L1 norms, the anomaly index per class and the suspected target class
    (``None`` when no class exceeds ``threshold``).
    """
    module = _as_module(model).eval()
    for prm in module.parameters():
        prm.requires_grad_(False)
    xt = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    if len(xt) < 2:
        raise UserError("Neural Cleanse needs clean inputs; got fewer than 2")
    with torch.no_grad():
        k = int(num_classes or module(xt[:2]).shape[1])
    gen = torch.Generator().manual_seed(seed)
    if space is None:
        lo, hi = _value_bounds(xt, bounds, feature_bounds)
        trig: TriggerSpace = InputTrigger(xt, k, gen, lo, hi)
    else:
        trig = space(xt, k, gen)
    best = _cleanse_search(
        module, xt, k, trig, gen, epochs=epochs, steps_per_epoch=steps_per_epoch,
        batch_size=batch_size, init_cost=init_cost, lr=lr,
        success_threshold=success_threshold, patience=patience,
        cost_multiplier=cost_multiplier,
    )  # fmt: skip
    best_mask, best_pattern, best_l1, best_success, epochs_run = best
    l1_np = best_l1.numpy().astype(np.float64)
    ai = anomaly_index(l1_np)
    flagged = [int(c) for c in np.flatnonzero(ai > threshold)]
    suspect = int(np.argmax(ai)) if flagged else None
    return NeuralCleanseResult(
        masks=best_mask.numpy(),
        patterns=best_pattern.numpy(),
        l1=l1_np,
        success=best_success.numpy(),
        anomaly_index=ai,
        suspected_target=suspect,
        flagged=flagged,
        epochs=epochs_run,
        space=None if space is None else trig,
    )


def _value_bounds(
    xt: torch.Tensor, bounds: tuple[float, float], feature_bounds: np.ndarray | None
) -> tuple[float | torch.Tensor, float | torch.Tensor]:
    if feature_bounds is None:
        return bounds[0], bounds[1]
    fb = torch.as_tensor(np.asarray(feature_bounds), dtype=torch.float32)
    if fb.shape != (2, *xt.shape[1:]):
        raise UserError(
            f"feature bounds have shape {tuple(fb.shape)}; expected {(2, *xt.shape[1:])}"
        )
    return fb[0], fb[1]


class TriggerSpace(Protocol):
    """What a Neural Cleanse trigger is made of: the tensors Adam optimises
    (``params``), their decoding into a mask in [0, 1] (whose L1 is the trigger's size)
    and a pattern, and how a mask and pattern per class stamp a batch."""

    domain: str

    def params(self) -> list[torch.Tensor]: ...

    def decode(self) -> tuple[torch.Tensor, torch.Tensor]: ...

    def stamp(self, mask: torch.Tensor, pattern: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
        """``(k, B, *xb.shape[1:])``: every class's trigger on every input of ``xb``."""
        ...


class InputTrigger:
    """The paper's trigger: ``(1 - m) * x + m * p`` with a mask over input positions
    (shared by an image's channels) and a pattern in input scale (``lo``..``hi``)."""

    domain = "input"

    def __init__(
        self,
        xt: torch.Tensor,
        k: int,
        gen: torch.Generator,
        lo: float | torch.Tensor,
        hi: float | torch.Tensor,
    ) -> None:
        mask_shape = (k, 1, *xt.shape[2:]) if xt.ndim == 4 else (k, *xt.shape[1:])
        self.mask_t = torch.zeros(mask_shape).requires_grad_(True)
        self.pattern_t = (torch.rand((k, *xt.shape[1:]), generator=gen) * 2 - 1).requires_grad_(
            True
        )
        self.lo, self.hi = lo, hi

    def params(self) -> list[torch.Tensor]:
        return [self.mask_t, self.pattern_t]

    def decode(self) -> tuple[torch.Tensor, torch.Tensor]:
        mask = torch.tanh(self.mask_t) / 2 + 0.5
        return mask, (torch.tanh(self.pattern_t) / 2 + 0.5) * (self.hi - self.lo) + self.lo

    def stamp(self, mask: torch.Tensor, pattern: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
        return (1 - mask[:, None]) * xb[None] + (mask * pattern)[:, None]


def _cleanse_search(
    module: nn.Module,
    xt: torch.Tensor,
    k: int,
    trig: TriggerSpace,
    gen: torch.Generator,
    *,
    epochs: int,
    steps_per_epoch: int,
    batch_size: int,
    init_cost: float,
    lr: float,
    success_threshold: float,
    patience: int,
    cost_multiplier: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Neural Cleanse's optimisation (see :func:`neural_cleanse`) of every class's trigger
    at once: ``(best masks, best patterns, their L1, their success, epochs run)``."""
    opt = torch.optim.Adam(trig.params(), lr=lr, betas=(0.5, 0.9))
    targets = torch.arange(k)
    cost = torch.full((k,), init_cost)
    up = torch.zeros(k, dtype=torch.long)
    down = torch.zeros(k, dtype=torch.long)
    best_l1 = torch.full((k,), float("inf"))
    with torch.no_grad():
        mask0, pattern0 = trig.decode()
    best_mask, best_pattern = torch.zeros_like(mask0), torch.zeros_like(pattern0)
    early_best = torch.full((k,), float("inf"))
    early_count = torch.zeros(k, dtype=torch.long)
    done = torch.zeros(k, dtype=torch.bool)
    best_success = torch.zeros(k)
    epochs_run = 0
    for epoch in range(1, epochs + 1):
        epochs_run = epoch
        hits = torch.zeros(k)
        seen = 0
        for _ in range(steps_per_epoch):
            idx = torch.randint(0, len(xt), (batch_size,), generator=gen)
            xb = xt[idx]
            mask, pattern = trig.decode()
            stamped = trig.stamp(mask, pattern, xb)
            logits = module(stamped.reshape(k * batch_size, *xb.shape[1:]))
            ce = nn.functional.cross_entropy(
                logits, targets.repeat_interleave(batch_size), reduction="none"
            ).reshape(k, batch_size)
            l1 = mask.reshape(k, -1).sum(dim=1)
            loss = (ce.mean(dim=1) + cost * l1)[~done].sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                hits += (logits.argmax(1).reshape(k, batch_size) == targets[:, None]).float().sum(1)
                seen += batch_size
        with torch.no_grad():
            success = hits / seen
            mask, pattern = trig.decode()
            l1 = mask.reshape(k, -1).sum(dim=1)
            better = (success >= success_threshold) & (l1 < best_l1) & ~done
            best_l1 = torch.where(better, l1, best_l1)
            best_success = torch.where(better, success, best_success)
            best_mask[better] = mask[better]
            best_pattern[better] = pattern[better]
            # early stop: no 1% improvement of the best norm for 5 * patience epochs
            found = torch.isfinite(best_l1)
            stalled = found & (best_l1 >= 0.99 * early_best)
            early_count = torch.where(stalled, early_count + 1, torch.zeros_like(early_count))
            early_best = torch.minimum(early_best, best_l1)
            done |= early_count >= 5 * patience
            ok = success >= success_threshold
            up = torch.where(ok, up + 1, torch.zeros_like(up))
            down = torch.where(ok, torch.zeros_like(down), down + 1)
            raise_cost = up >= patience
            lower_cost = down >= patience
            cost = torch.where(raise_cost, cost * cost_multiplier, cost)
            cost = torch.where(lower_cost, cost / cost_multiplier**1.5, cost)
            up[raise_cost] = 0
            down[lower_cost] = 0
        if bool(done.all()):
            break
    with torch.no_grad():
        # classes never reaching the success threshold keep their last trigger
        missing = ~torch.isfinite(best_l1)
        mask, pattern = trig.decode()
        best_mask[missing] = mask[missing]
        best_pattern[missing] = pattern[missing]
        best_l1 = torch.where(missing, mask.reshape(k, -1).sum(1), best_l1)
    return best_mask, best_pattern, best_l1, best_success, epochs_run


@dataclass
class NormVerdict:
    """Neural Cleanse's verdict on trigger norms spanning orders of magnitude (audio).

    ``candidate``: the class with the smallest reversed trigger among those whose
    trigger reached the success threshold; ``gap``: its L1 over the next smallest
    class's; ``ratio``: its L1 over the median class's (a class whose search never
    reached the threshold counts as larger than every found trigger); ``log_index``:
    its MAD anomaly index among the log L1 norms of the other classes (reported, not
    used: clean classes spread too widely on waveforms); ``flip_rate``: the share of
    held-out inputs of other classes its trigger turns into it (NaN without any).
    """

    candidate: int
    gap: float
    ratio: float
    log_index: float
    flip_rate: float
    flagged: bool
    gap_threshold: float
    ratio_threshold: float
    flip_threshold: float

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in vars(self).items()}


def norm_verdict(
    model: Any,
    nc: NeuralCleanseResult,
    held_out: np.ndarray,
    *,
    gap_threshold: float = GAP_THRESHOLD,
    ratio_threshold: float = RATIO_THRESHOLD,
    flip_threshold: float = FLIP_THRESHOLD,
    success_threshold: float = 0.99,
) -> NormVerdict:
    """Flag the smallest reversed trigger only when it is a small fraction of the next
    class's (``gap``) and of the median class's (``ratio``), and verified on held-out
    inputs (``flip_rate``).

    Why not the paper's MAD index on raw norms: on waveforms the norms of the clean
    classes spread over orders of magnitude (a low-pitched class needs 1,000 samples,
    a high-pitched one 30), which inflates the MAD so a planted class at 5 scores only
    1-3, and a clean model with a few easy classes passes 2. The gap to the next class
    is what a single planted shortcut changes. Thresholds from
    ``benchmarks/audio_backdoor.py`` (see ``docs/benchmarks/audio.md``).

    Example::

        nc = neural_cleanse(model, clips[:150], bounds=(-1, 1))
        norm_verdict(model, nc, clips[150:]).flagged
    """
    module = _as_module(model).eval()
    c, gap, ratio, log_index = norm_statistics(nc.l1, nc.success, success_threshold)
    found = nc.success[c] >= success_threshold
    flip = _flip_rate(module, nc, c, held_out)
    flagged = bool(
        found
        and gap < gap_threshold
        and ratio < ratio_threshold
        and not flip < flip_threshold  # NaN (no held-out inputs) does not veto
    )
    return NormVerdict(
        candidate=c, gap=gap, ratio=ratio, log_index=float(log_index), flip_rate=flip,
        flagged=flagged, gap_threshold=gap_threshold, ratio_threshold=ratio_threshold,
        flip_threshold=flip_threshold,
    )  # fmt: skip


def norm_statistics(
    l1: np.ndarray, success: np.ndarray, success_threshold: float = 0.99
) -> tuple[int, float, float, float]:
    """``(candidate, gap, ratio, log_index)`` of :class:`NormVerdict` from the L1 norms
    and success rates of the reversed triggers.

    Example::

        norm_statistics(np.array([5.0, 300, 400]), np.ones(3))  # (0, 0.0167, 0.0167, ...)
    """
    l1 = np.asarray(l1, dtype=np.float64)
    found = np.asarray(success) >= success_threshold
    c = int(np.argsort(np.where(found, l1, np.inf), kind="stable")[0])
    ranked = np.where(found, l1, 2 * max(float(l1.max()), 1e-9))  # not found: above all found
    rest = np.sort(np.delete(ranked, c))
    gap = float(l1[c] / max(rest[0], 1e-9)) if len(rest) else 1.0
    ratio = float(l1[c] / max(float(np.median(ranked)), 1e-9))
    others = np.log(np.maximum(np.delete(l1, c), 1e-9))
    med = float(np.median(others)) if len(others) else 0.0
    mad = 1.4826 * float(np.median(np.abs(others - med))) if len(others) else 0.0
    log_index = (med - float(np.log(max(l1[c], 1e-9)))) / max(mad, 1e-3)
    return c, gap, ratio, float(log_index)


def _flip_rate(module: nn.Module, nc: NeuralCleanseResult, c: int, held_out: np.ndarray) -> float:
    """Share of held-out inputs not already predicted ``c`` that ``c``'s trigger flips."""
    xt = torch.as_tensor(np.asarray(held_out), dtype=torch.float32)
    if not len(xt):
        return float("nan")
    with torch.no_grad():
        keep = module(xt).argmax(1).numpy() != c
        if not keep.any():
            return float("nan")
        stamped = torch.as_tensor(nc.apply(c, xt[keep].numpy()))
        return float((module(stamped).argmax(1).numpy() == c).mean())


def verdict_text(nc: NeuralCleanseResult) -> str:
    """One sentence: why Neural Cleanse named ``nc.suspected_target``."""
    v = nc.verdict
    if v is None:
        return "A MAD anomaly index above 2 marks a backdoor target."
    where = {
        "energy": " Found by the energy search: trigger sizes are the energy a sound adds "
        "to each clip (an SNR).",
        "spectral": " Found in the time-frequency plane (a mask over STFT cells).",
        "input": " Found as a mask over the input's samples.",
    }
    return (
        f"Its trigger is {v.gap:.1%} of the next smallest class's (flagged below "
        f"{v.gap_threshold:.0%}) and {v.ratio:.1%} of the median class's (below "
        f"{v.ratio_threshold:.0%}), and it turns {v.flip_rate:.0%} of held-out inputs of "
        "other classes into this class." + (where.get(nc.domain, "") if nc.domain_verdicts else "")
    )


def trigger_core(
    model: Any, result: NeuralCleanseResult, cls: int, x_other: np.ndarray, min_success: float = 0.5
) -> np.ndarray:
    """The part of a reversed image trigger that does the work.

    A reversed mask often mixes the planted patch with strokes typical of the target
    class. The mask is binarised at half its maximum and split into 8-connected blobs;
    each blob alone is stamped on inputs of other classes (``x_other``) and the blob
    with the highest success is kept when it reaches ``min_success``. Otherwise (and for
    non-image inputs) the binarised mask is returned.
    """
    from scipy import ndimage

    from mlwarden.core.target import as_target

    mask = result.masks[cls]
    binary = (mask >= 0.5 * float(mask.max())).astype(np.float32)
    if binary.ndim != 3 or len(x_other) == 0:
        return binary
    labels, count = ndimage.label(binary[0] > 0, structure=np.ones((3, 3)))
    if count <= 1:
        return binary
    tgt = as_target(model) if not hasattr(model, "predict_labels") else model
    sample = x_other[:200]
    best, best_rate = binary, -1.0
    for blob in range(1, count + 1):
        part = (labels == blob)[None].astype(np.float32)
        stamped = ((1.0 - part) * sample + part * result.patterns[cls]).astype(np.float32)
        rate = float(np.mean(tgt.predict_labels(stamped) == cls))
        if rate > best_rate:
            best, best_rate = part, rate
    return best if best_rate >= min_success else binary


def trigger_occlusion(
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    result: NeuralCleanseResult,
    *,
    fill: np.ndarray | None = None,
    target: int | None = None,
) -> Detection:
    """Flag samples of the suspected target class that need the reversed trigger.

    mlwarden's data filter built on Neural Cleanse: the core of the reversed trigger
    (:func:`trigger_core`) is blanked out in every sample labelled with the target
    class, i.e. replaced by ``fill`` (default: the per-feature median of ``x``, the
    usual background). A poisoned sample loses its trigger and the model stops
    predicting the target; a genuine member of the class keeps its prediction.
    Score: the drop in the target-class probability.
    """
    from mlwarden.core.target import as_target, probabilities

    cls = result.suspected_target if target is None else target
    n = len(y)
    scores = np.zeros(n)
    flagged = np.zeros(n, dtype=bool)
    if cls is None:
        return Detection("trigger-occlusion", scores, flagged)
    idx = np.flatnonzero(y == cls)
    if len(idx) == 0:
        return Detection("trigger-occlusion", scores, flagged)
    tgt = as_target(model) if not hasattr(model, "predict_labels") else model
    if result.space is not None:
        # an audio trigger space: silence where the reversed trigger sits, in its terms
        mask = result.masks[cls] >= 0.5 * float(result.masks[cls].max())
        occluded = result.space.occlude(result, cls, x[idx])
    else:
        mask = trigger_core(tgt, result, cls, x[y != cls])
        background = np.median(x, axis=0) if fill is None else fill
        occluded = ((1.0 - mask) * x[idx] + mask * background).astype(np.float32)
    before = probabilities(tgt, x[idx].astype(np.float32))
    after = probabilities(tgt, occluded)
    scores[idx] = before[:, cls] - after[:, cls]
    moved = after.argmax(axis=1) != cls
    flagged[idx[moved]] = True
    reasons = {
        int(i): (
            f"trigger occlusion: labelled {cls} (the suspected backdoor target) but "
            f"predicted {int(after[j].argmax())} once the reversed trigger region is blanked"
        )
        for j, i in enumerate(idx)
        if moved[j]
    }
    details = {"target": int(cls), "core_pixels": int(mask.sum()), "domain": result.domain}
    return Detection("trigger-occlusion", scores, flagged, reasons, details)


def strip_entropy(
    model: Any,
    x: np.ndarray,
    clean: np.ndarray,
    *,
    n: int = 100,
    alpha: float = 0.5,
    batch_size: int = 64,
    add_within: tuple[Any, Any] | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Mean prediction entropy (bits) of each input superimposed on ``n`` clean inputs.

    The superimposition is ``alpha * x + (1 - alpha) * clean_j`` (Gao et al. 2019,
    arXiv:1902.06531 blend images linearly). Works with any model that returns scores;
    for a model that answers labels only (``access == "label"``) the entropy is that
    of the labels voted over the ``n`` overlays (0 when every overlay keeps one label,
    as a trojaned input does), since each single answer has entropy 0.

    ``add_within=(lo, hi)``: superimpose as the STRIP authors' code does instead, adding
    the two inputs at full weight and clipping to the bounds (scalars or per-feature
    arrays), so a patch trigger keeps its full strength; the linear blend halves it.
    """
    from mlwarden.core.target import as_target, probabilities

    if len(clean) == 0:
        raise UserError("STRIP needs clean inputs to superimpose")
    target = as_target(model) if not hasattr(model, "predict_labels") else model
    rng = np.random.default_rng(seed)
    out = np.empty(len(x))
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size]
        j = rng.integers(0, len(clean), size=(len(xb), n))
        if add_within is None:
            mix = alpha * xb[:, None] + (1 - alpha) * clean[j]
        else:
            mix = np.clip(xb[:, None] + clean[j], add_within[0], add_within[1])
        probs = probabilities(target, mix.reshape(len(xb) * n, *xb.shape[1:]).astype(np.float32))
        probs = probs.reshape(len(xb), n, -1)
        if getattr(target, "access", None) == "label":
            probs = probs.mean(axis=1, keepdims=True)  # the vote share of each label
        ent = -(probs * np.log2(np.clip(probs, 1e-12, 1.0))).sum(axis=2)
        out[i : i + len(xb)] = ent.mean(axis=1)
    return out


def strip_in_data(
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    *,
    n: int = 20,
    frr: float = 0.01,
    max_samples: int = 5000,
    min_share: float = 0.1,
    lead: float = 2.5,
    bounds: tuple[Any, Any] = (0.0, 1.0),
    seed: int = 0,
) -> Detection:
    """STRIP over a training set, without held-out clean data (black-box: queries only).

    Each sample is superimposed on ``n`` other samples of the same data (Gao et al.
    2019, arXiv:1902.06531), added at full weight and clipped to ``bounds`` (scalars,
    or per-feature arrays for tables) as in the authors' code. With no clean reference the normal the paper fits to clean
    entropies is fitted robustly to the data's own (median and 1.4826 * MAD), which a
    poison of a few percent of the data does not move; samples below its ``frr``
    quantile are low-entropy. They are flagged only in a class where far more of the
    samples are than anywhere else: at least ``min_share`` of the class, 5 samples, and
    ``lead`` times the share of the next class. A backdoor's poison shares one label;
    natural low-entropy samples (confident classes) also gather in some classes, up to
    7% of a class on clean digits with an MLP, hence the margins. At most
    ``max_samples`` samples are screened (a random subset beyond).
    """
    screened, pool = strip_screen(len(x), max_samples, np.random.default_rng(seed))
    h = np.full(len(x), np.nan)
    h[screened] = strip_entropy(model, x[screened], x[pool], n=n, add_within=bounds, seed=seed)
    return strip_detection(
        "strip", h, y, screened, frr=frr, min_share=min_share, lead=lead,
        reason=lambda e, thr: (
            f"STRIP: keeps its prediction when superimposed on other samples (entropy "
            f"{e:.2f} bits, below the {frr:.0%} threshold {thr:.2f}), as inputs carrying "
            "a trigger do"
        ),
    )  # fmt: skip


def strip_screen(
    n_all: int, max_samples: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """STRIP over a training set: the indices screened (at most ``max_samples``, a random
    subset beyond, sorted) and those of the overlay pool (at most 1,000), in that order."""
    screened = np.sort(rng.choice(n_all, size=min(max_samples, n_all), replace=False))
    return screened, rng.choice(n_all, size=min(1000, n_all), replace=False)


def strip_detection(
    name: str,
    h: np.ndarray,
    y: np.ndarray,
    screened: np.ndarray,
    *,
    frr: float,
    reason: Callable[[float, float], str],
    min_share: float = 0.1,
    lead: float = 2.5,
    **details: Any,
) -> Detection:
    """STRIP's flags (:func:`low_entropy_flags`) over the entropies ``h`` (NaN where not
    screened) as a :class:`Detection`: a sample's score is how far its entropy sits below
    the median; ``reason(entropy, threshold)`` words each flagged sample; ``details`` are
    added to the threshold, screened count, low-entropy fraction and per-class table."""
    flagged, low, thr, mu, classes = low_entropy_flags(
        h, y, screened, frr=frr, min_share=min_share, lead=lead
    )
    scores = np.where(np.isnan(h), 0.0, np.maximum(mu - np.nan_to_num(h, nan=mu), 0.0))
    reasons = {int(i): reason(float(h[i]), thr) for i in np.flatnonzero(flagged)}
    summary = {
        "threshold": round(thr, 4),
        "screened": len(screened),
        "low_entropy_fraction": round(float(low[screened].mean()), 4),
        "classes": classes,
    }
    return Detection(name, scores, flagged, reasons, {**summary, **details})


def low_entropy_flags(
    h: np.ndarray,
    y: np.ndarray,
    screened: np.ndarray,
    *,
    frr: float = 0.01,
    min_share: float = 0.1,
    lead: float = 2.5,
    depth: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, float, float, dict[str, Any]]:
    """STRIP's flags without clean data (see :func:`strip_in_data`): a normal fitted
    robustly (median, 1.4826 * MAD) to the entropies ``h`` of the ``screened`` samples;
    those below its ``frr`` quantile are low-entropy, flagged only in the one class
    holding far more of them than any other, and only when they sit far below the
    threshold (median under ``depth`` x threshold). A trigger keeps its prediction under
    almost every overlay, so its rows' entropy is near 0 (STRIP's premise: median 0.01-0.08
    bits against thresholds of 0.11-0.30 on poisoned flat digits); a naturally confident
    class has only a tail just under the threshold (0.54-0.60 against 0.65-0.74 on a
    clean 40-feature table, which the share test alone flagged). Returns (flagged, low,
    threshold, median, per-class table), the masks over all samples."""
    from scipy.stats import norm

    n_all = len(h)
    hs = h[screened]
    mu = float(np.median(hs))
    sd = 1.4826 * float(np.median(np.abs(hs - mu)))
    thr = float(norm.ppf(frr, loc=mu, scale=max(sd, 1e-12)))
    low = np.zeros(n_all, dtype=bool)
    low[screened] = hs < thr
    flagged = np.zeros(n_all, dtype=bool)
    labels = np.unique(y[screened])
    shares = np.array([low[screened[y[screened] == c]].mean() for c in labels])
    second = np.sort(shares)[-2] if len(shares) > 1 else 0.0
    classes: dict[str, Any] = {}
    for c, share in zip(labels, shares, strict=True):
        in_c = screened[y[screened] == c]
        deep = bool(low[in_c].any()) and float(np.median(h[in_c[low[in_c]]])) <= depth * thr
        hot = bool(
            share >= min_share
            and low[in_c].sum() >= 5
            and share == shares.max()
            and share >= lead * second
            and deep
        )
        classes[str(int(c))] = {"low_entropy": round(float(share), 4), "flagged": hot}
        if share >= min_share and not deep:
            classes[str(int(c))]["not_flagged"] = "low-entropy rows only just under the threshold"
        if hot:
            flagged[in_c[low[in_c]]] = True
    return flagged, low, thr, mu, classes


def strip_threshold(clean_entropy: np.ndarray, frr: float = 0.01) -> float:
    """The ``frr`` quantile of a normal fitted to clean inputs' entropies."""
    from scipy.stats import norm

    if not 0.0 < frr < 0.5:
        raise UserError(f"false rejection rate must be in (0, 0.5); got {frr}")
    mu, sd = float(np.mean(clean_entropy)), float(np.std(clean_entropy))
    return float(norm.ppf(frr, loc=mu, scale=max(sd, 1e-12)))


def strip(
    model: Any,
    x: np.ndarray,
    clean: np.ndarray,
    *,
    n: int = 100,
    frr: float = 0.01,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, float]:
    """STRIP (Gao et al. 2019, arXiv:1902.06531): (entropies, flagged mask, threshold).

    ``clean`` (held-out clean inputs) supplies both the images to superimpose and the
    entropy distribution the threshold is fitted to.
    """
    rng = np.random.default_rng(seed)
    half = len(clean) // 2
    perm = rng.permutation(len(clean))
    overlay, calib = clean[perm[:half]], clean[perm[half:]]
    if half < 2:
        raise UserError("STRIP needs at least 4 clean inputs")
    h_clean = strip_entropy(model, calib, overlay, n=n, seed=seed)
    thr = strip_threshold(h_clean, frr)
    h = strip_entropy(model, x, overlay, n=n, seed=seed + 1)
    return h, h < thr, thr


def trigger_image(result: NeuralCleanseResult, classes: list[int] | None = None) -> str:
    """The reversed triggers (``mask * pattern``) of ``classes`` as a PNG data URI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = list(range(len(result.l1))) if classes is None else classes
    cols = min(len(classes), 10)
    rows = (len(classes) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, c in zip(axes.flat, classes, strict=False):
        m, p = result.trigger_for(c)
        img = m * p
        if img.ndim == 3:
            img = img.transpose(1, 2, 0)
            img = img[..., 0] if img.shape[2] == 1 else img
        else:
            side = int(np.ceil(np.sqrt(img.size)))
            img = np.pad(img.reshape(-1), (0, side * side - img.size)).reshape(side, side)
        lo, hi = float(np.min(img)), float(np.max(img))
        ax.imshow((img - lo) / (hi - lo) if hi > lo else img, cmap="gray", vmin=0, vmax=1)
        tag = " *" if c == result.suspected_target else ""
        ax.set_title(f"{c}{tag}\nL1 {result.l1[c]:.1f}", fontsize=8)
    fig.suptitle("Neural Cleanse reversed triggers (* = suspected target)", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
