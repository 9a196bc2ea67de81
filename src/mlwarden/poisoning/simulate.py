"""Poisoning attacks to test a training pipeline and our detectors against.

Each attack takes a clean :class:`~mlwarden.core.data.Dataset` and returns a
:class:`Poisoned` result: the poisoned copy, the ground-truth indices of the samples
that were changed, and (for backdoors) the trigger, so that clean accuracy and attack
success rate (ASR) can be measured on a test set with :func:`evaluate`.

Attacks:

* :func:`flip_labels` — random or targeted (source -> target) label flipping.
* :func:`badnets` — a patch trigger stamped on a fraction of the inputs whose labels
  are changed, all-to-one or all-to-all (Gu et al. 2017, "BadNets", arXiv:1708.06733).
* :func:`blended` — a full-size random pattern blended in with weight ``alpha``
  (Chen et al. 2017, "Targeted Backdoor Attacks ... Data Poisoning", arXiv:1712.05526).
* :func:`clean_label` — target-class inputs are first pushed away from their class by
  an L-infinity PGD on a surrogate model, then stamped with the trigger; their labels
  stay correct (Turner et al. 2019, "Label-Consistent Backdoor Attacks", arXiv:1912.02771).

The poison ``rate`` is always the fraction of the whole training set that is poisoned.

Example::

    ds = load_dataset("digits")
    train, test = ds.split(seed=0)
    p = badnets(train, rate=0.05, target=0, seed=0)
    model = fit(SmallCNN(), p.dataset.x, p.dataset.y)
    evaluate(model, p, test)   # {"clean_accuracy": 0.97, "asr": 0.99}
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from mlwarden.core.data import Dataset
from mlwarden.core.errors import UserError

Mode = Literal["all-to-one", "all-to-all"]


@dataclass
class Trigger:
    """A backdoor trigger: ``x' = (1 - mask) * x + mask * pattern``.

    ``mask`` and ``pattern`` have the shape of one input (``(C, H, W)`` or ``(F,)``);
    mask values lie in [0, 1] (1 where the patch replaces the input, ``alpha`` for a
    blend).
    """

    mask: np.ndarray
    pattern: np.ndarray
    kind: str = "patch"

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Stamp the trigger on a batch ``(N, *input_shape)``; float32 out."""
        out = (1.0 - self.mask) * x + self.mask * self.pattern
        return out.astype(np.float32)


@dataclass
class Poisoned:
    """A poisoned training set and what an evaluator needs to know about it."""

    dataset: Dataset
    poison_index: np.ndarray  #: indices (into ``dataset``) of the changed samples, sorted
    attack: str
    rate: float
    target: int | None = None
    mode: Mode = "all-to-one"
    trigger: Trigger | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def is_poison(self) -> np.ndarray:
        """Boolean mask over the samples: True where a sample was poisoned."""
        mask = np.zeros(len(self.dataset), dtype=bool)
        mask[self.poison_index] = True
        return mask

    def backdoor_labels(self, y: np.ndarray, num_classes: int) -> np.ndarray:
        """The label the attacker wants for triggered inputs of true label ``y``."""
        if self.mode == "all-to-all":
            return (y + 1) % num_classes
        if self.target is None:
            raise UserError(f"attack {self.attack!r} has no target class")
        return np.full_like(y, self.target)


def _check_rate(rate: float) -> None:
    if not 0.0 < rate < 1.0:
        raise UserError(f"poison rate must be between 0 and 1 (a fraction); got {rate}")


def _check_target(ds: Dataset, target: int) -> None:
    if not 0 <= target < ds.num_classes:
        raise UserError(f"target class {target} is not one of 0..{ds.num_classes - 1}")


def _count(ds: Dataset, rate: float) -> int:
    _check_rate(rate)
    n = int(round(rate * len(ds)))
    if n < 1:
        raise UserError(f"poison rate {rate} of {len(ds)} samples poisons nothing")
    return n


def patch_trigger(
    input_shape: tuple[int, ...],
    size: int = 3,
    position: Literal["bottom-right", "top-left"] = "bottom-right",
    value: float = 1.0,
    checker: bool = True,
) -> Trigger:
    """A square BadNets patch (a checkerboard of ``value`` and 0 by default).

    For tabular inputs ``(F,)`` the "patch" is the last (or first) ``size`` features.
    """
    mask = np.zeros(input_shape, np.float32)
    pattern = np.zeros(input_shape, np.float32)
    if len(input_shape) == 3:
        _, h, w = input_shape
        if size > min(h, w):
            raise UserError(f"patch size {size} does not fit inputs of {h}x{w}")
        rows = slice(h - size, h) if position == "bottom-right" else slice(0, size)
        cols = slice(w - size, w) if position == "bottom-right" else slice(0, size)
        mask[:, rows, cols] = 1.0
        block = np.full((size, size), value, np.float32)
        if checker:
            block[(np.add.outer(np.arange(size), np.arange(size)) % 2) == 1] = 0.0
        pattern[:, rows, cols] = block
    elif len(input_shape) == 1:
        (f,) = input_shape
        cols = slice(f - size, f) if position == "bottom-right" else slice(0, size)
        mask[cols] = 1.0
        pattern[cols] = value
    else:
        raise UserError(f"cannot place a patch on inputs of shape {input_shape}")
    return Trigger(mask=mask, pattern=pattern, kind="patch")


def blend_trigger(
    input_shape: tuple[int, ...], alpha: float = 0.2, seed: int = 0, bounds=(0.0, 1.0)
) -> Trigger:
    """A full-size uniform-noise pattern blended with weight ``alpha`` (Chen et al. 2017)."""
    if not 0.0 < alpha < 1.0:
        raise UserError(f"blend alpha must be between 0 and 1; got {alpha}")
    rng = np.random.default_rng(seed)
    pattern = rng.uniform(bounds[0], bounds[1], size=input_shape).astype(np.float32)
    mask = np.full(input_shape, alpha, np.float32)
    return Trigger(mask=mask, pattern=pattern, kind="blend")


def flip_labels(
    ds: Dataset,
    rate: float,
    *,
    mode: Literal["random", "targeted"] = "random",
    source: int | None = None,
    target: int | None = None,
    seed: int = 0,
) -> Poisoned:
    """Flip the labels of ``rate * N`` samples.

    ``random``: each chosen sample gets a different class drawn uniformly.
    ``targeted``: samples of class ``source`` (default: any class but ``target``) get
    label ``target``.
    """
    rng = np.random.default_rng(seed)
    n = _count(ds, rate)
    y = ds.y.copy()
    k = ds.num_classes
    if mode == "random":
        idx = rng.choice(len(ds), size=n, replace=False)
        shift = rng.integers(1, k, size=n)
        y[idx] = (y[idx] + shift) % k
    elif mode == "targeted":
        if target is None:
            raise UserError("targeted label flipping needs a target class")
        _check_target(ds, target)
        pool = (
            np.flatnonzero(ds.y == source) if source is not None else np.flatnonzero(ds.y != target)
        )
        if len(pool) < n:
            raise UserError(f"only {len(pool)} samples can be flipped, {n} requested")
        idx = rng.choice(pool, size=n, replace=False)
        y[idx] = target
    else:
        raise UserError(f"label flipping mode must be 'random' or 'targeted'; got {mode!r}")
    return Poisoned(
        dataset=replace(ds, y=y),
        poison_index=np.sort(idx),
        attack=f"label-flip-{mode}",
        rate=rate,
        target=target,
        info={"source": source},
    )


def _stamp(
    ds: Dataset, rate: float, trigger: Trigger, target: int, mode: Mode, seed: int, attack: str
) -> Poisoned:
    _check_target(ds, target)
    if mode not in ("all-to-one", "all-to-all"):
        raise UserError(f"backdoor mode must be 'all-to-one' or 'all-to-all'; got {mode!r}")
    rng = np.random.default_rng(seed)
    n = _count(ds, rate)
    pool = np.flatnonzero(ds.y != target) if mode == "all-to-one" else np.arange(len(ds))
    if len(pool) < n:
        raise UserError(f"only {len(pool)} samples can carry the trigger, {n} requested")
    idx = np.sort(rng.choice(pool, size=n, replace=False))
    x = ds.x.copy()
    y = ds.y.copy()
    x[idx] = np.clip(trigger.apply(x[idx]), ds.bounds[0], ds.bounds[1])
    y[idx] = (ds.y[idx] + 1) % ds.num_classes if mode == "all-to-all" else target
    return Poisoned(
        dataset=replace(ds, x=x, y=y),
        poison_index=idx,
        attack=attack,
        rate=rate,
        target=target if mode == "all-to-one" else None,
        mode=mode,
        trigger=trigger,
    )


def badnets(
    ds: Dataset,
    rate: float,
    *,
    target: int = 0,
    mode: Mode = "all-to-one",
    patch_size: int = 3,
    seed: int = 0,
) -> Poisoned:
    """BadNets (Gu et al. 2017, arXiv:1708.06733): stamp a patch and relabel.

    ``all-to-one`` relabels to ``target`` (poisoned samples are drawn from other
    classes); ``all-to-all`` relabels class ``c`` to ``(c + 1) mod K``. ``patch_size`` is
    in pixels (features for tabular data).
    """
    trigger = patch_trigger(ds.input_shape, size=patch_size, value=ds.bounds[1])
    return _stamp(ds, rate, trigger, target, mode, seed, f"badnets-{mode}")


def blended(
    ds: Dataset,
    rate: float,
    *,
    target: int = 0,
    alpha: float = 0.2,
    mode: Mode = "all-to-one",
    seed: int = 0,
) -> Poisoned:
    """Blended backdoor (Chen et al. 2017, arXiv:1712.05526): ``(1-alpha) x + alpha * noise``."""
    trigger = blend_trigger(ds.input_shape, alpha=alpha, seed=seed + 7919, bounds=ds.bounds)
    return _stamp(ds, rate, trigger, target, mode, seed, f"blended-{mode}")


def pgd_away(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    eps: float,
    steps: int = 20,
    step_size: float | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
) -> np.ndarray:
    """Untargeted L-infinity PGD with a random start (Madry et al. 2018, arXiv:1706.06083).

    Maximises the cross-entropy of the true label ``y`` within ``eps`` (input scale);
    used by :func:`clean_label` to make target-class samples hard to learn.
    """
    gen = torch.Generator().manual_seed(seed)
    alpha = step_size if step_size is not None else 2.5 * eps / steps
    x0 = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.long)
    delta = (torch.rand(x0.shape, generator=gen) * 2 - 1) * eps
    adv = (x0 + delta).clamp(*bounds)
    model.eval()
    for _ in range(steps):
        adv.requires_grad_(True)
        loss = nn.functional.cross_entropy(model(adv), yt)
        (grad,) = torch.autograd.grad(loss, adv)
        with torch.no_grad():
            adv = adv + alpha * grad.sign()
            adv = torch.min(torch.max(adv, x0 - eps), x0 + eps).clamp(*bounds)
    return adv.detach().numpy().astype(np.float32)


def clean_label(
    ds: Dataset,
    rate: float,
    *,
    target: int = 0,
    surrogate: nn.Module | None = None,
    eps: float = 0.3,
    steps: int = 20,
    patch_size: int = 3,
    seed: int = 0,
) -> Poisoned:
    """Label-consistent backdoor (Turner et al. 2019, arXiv:1912.02771).

    ``rate * N`` samples of the ``target`` class are perturbed by PGD (L-infinity,
    ``eps`` in input scale, ``steps`` iterations) on ``surrogate`` so that their own
    features no longer explain their label, then stamped with the patch trigger.
    Labels are left unchanged, so a reviewer sees nothing mislabelled. Without a
    ``surrogate`` a :class:`~mlwarden.core.models.SmallCNN` (images) or
    :class:`~mlwarden.core.models.MLP` is trained on the clean data first.
    """
    _check_target(ds, target)
    n = _count(ds, rate)
    pool = np.flatnonzero(ds.y == target)
    if len(pool) < n:
        raise UserError(
            f"clean-label poisoning uses target-class samples only: class {target} has "
            f"{len(pool)}, {n} requested (lower the rate)"
        )
    if surrogate is None:
        surrogate = _default_model(ds, seed=seed)
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(pool, size=n, replace=False))
    trigger = patch_trigger(ds.input_shape, size=patch_size, value=ds.bounds[1])
    x = ds.x.copy()
    adv = pgd_away(surrogate, x[idx], ds.y[idx], eps=eps, steps=steps, bounds=ds.bounds, seed=seed)
    x[idx] = np.clip(trigger.apply(adv), ds.bounds[0], ds.bounds[1])
    return Poisoned(
        dataset=replace(ds, x=x),
        poison_index=idx,
        attack="clean-label",
        rate=rate,
        target=target,
        trigger=trigger,
        info={"eps": eps, "steps": steps},
    )


def _default_model(ds: Dataset, seed: int = 0, epochs: int = 15) -> nn.Module:
    from mlwarden.core.models import MLP, SmallCNN, fit

    torch.manual_seed(seed)
    model: nn.Module
    if ds.modality == "image" and len(ds.input_shape) == 3:
        c, h, _ = ds.input_shape
        model = SmallCNN(in_channels=c, num_classes=ds.num_classes, image_size=h)
    else:
        model = MLP(int(np.prod(ds.input_shape)), ds.num_classes)
    return fit(model, ds.x, ds.y, epochs=epochs, seed=seed)


def _predictor(model: Any) -> Callable[[np.ndarray], np.ndarray]:
    if isinstance(model, nn.Module):

        def run(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return model(torch.as_tensor(x, dtype=torch.float32)).argmax(1).numpy()

        return run
    if hasattr(model, "predict_labels"):
        return model.predict_labels
    if hasattr(model, "predict"):
        return lambda x: np.asarray(model.predict(x.reshape(len(x), -1)))
    raise UserError(f"cannot predict with a {type(model).__name__}")


def attack_success_rate(model: Any, poisoned: Poisoned, test: Dataset) -> float:
    """Fraction of triggered test inputs classified as the attacker wants.

    Test inputs whose true label already is the attacker's label are left out
    (the usual definition, e.g. BackdoorBench).
    """
    if poisoned.trigger is None:
        raise UserError(f"attack {poisoned.attack!r} has no trigger, so no ASR")
    want = poisoned.backdoor_labels(test.y, max(test.num_classes, poisoned.dataset.num_classes))
    keep = want != test.y
    if not np.any(keep):
        return float("nan")
    x = np.clip(poisoned.trigger.apply(test.x[keep]), test.bounds[0], test.bounds[1])
    pred = _predictor(model)(x)
    return float(np.mean(pred == want[keep]))


def clean_accuracy(model: Any, test: Dataset) -> float:
    """Accuracy on the (clean) test set."""
    return float(np.mean(_predictor(model)(test.x) == test.y))


def evaluate(model: Any, poisoned: Poisoned, test: Dataset) -> dict[str, float]:
    """Clean accuracy and, for backdoors, attack success rate (both fractions)."""
    out = {"clean_accuracy": clean_accuracy(model, test)}
    if poisoned.trigger is not None:
        out["asr"] = attack_success_rate(model, poisoned, test)
    elif poisoned.attack == "label-flip-targeted" and poisoned.info.get("source") is not None:
        src = test.y == poisoned.info["source"]
        out["asr"] = float(np.mean(_predictor(model)(test.x[src]) == poisoned.target))
    return out


@dataclass
class AudioTrigger(Trigger):
    """An additive audio trigger at a fixed SNR per clip: ``x + s_i * pattern`` with
    ``s_i`` chosen so that ``||x_i|| / ||s_i * pattern|| = 10^(snr_db / 20)`` (a quiet
    clip gets a quiet trigger; digital silence gets none). ``mask`` is unused (zeros)."""

    snr_db: float = 20.0

    def apply(self, x: np.ndarray) -> np.ndarray:
        flat = np.asarray(x, np.float64).reshape(len(x), -1)
        p = np.broadcast_to(self.pattern, x.shape[1:]).reshape(-1).astype(np.float64)
        scale = np.linalg.norm(flat, axis=1) / max(float(np.linalg.norm(p)), 1e-12)
        scale *= 10.0 ** (-self.snr_db / 20.0)
        return (flat + scale[:, None] * p).reshape(x.shape).astype(np.float32)


def audio_trigger(
    samples: int,
    sample_rate: int,
    *,
    kind: str = "chirp",
    seconds: float = 0.1,
    position: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """A trigger waveform of ``samples`` samples: a Hann-windowed burst of ``seconds`` s
    starting at ``position`` (fraction of the clip), silent elsewhere. ``kind``: ``tone``
    (1 kHz), ``chirp`` (linear 500 Hz to min(4 kHz, 0.4 x rate)) or ``noise`` (white)."""
    n = max(1, min(samples, int(round(seconds * sample_rate))))
    t = np.arange(n) / sample_rate
    if kind == "tone":
        burst = np.sin(2 * np.pi * 1000.0 * t)
    elif kind == "chirp":
        f1 = min(4000.0, 0.4 * sample_rate)
        burst = np.sin(2 * np.pi * (500.0 * t + (f1 - 500.0) * t**2 / (2 * t[-1] + 1e-12)))
    elif kind == "noise":
        burst = np.random.default_rng(seed).standard_normal(n)
    else:
        raise UserError(f"audio trigger kind must be tone, chirp or noise; got {kind!r}")
    start = int(round(position * (samples - n)))
    out = np.zeros(samples)
    out[start : start + n] = burst * np.hanning(n)
    return out.astype(np.float32)


def audio_backdoor(
    ds: Dataset,
    rate: float,
    *,
    target: int = 0,
    kind: str = "chirp",
    snr_db: float = 20.0,
    seconds: float = 0.1,
    position: float = 0.0,
    mode: Mode = "all-to-one",
    seed: int = 0,
) -> Poisoned:
    """An audio backdoor: a tone, chirp or noise burst added at ``snr_db`` dB below each
    chosen clip, which is relabelled (as BadNets, Gu et al. 2017, arXiv:1708.06733, with
    an audible trigger instead of a patch). ``ds`` must be audio with a sample rate."""
    if ds.modality != "audio" or ds.sample_rate is None:
        raise UserError("audio_backdoor needs audio data (a waveform dataset with a sample rate)")
    pattern = audio_trigger(
        ds.x.shape[-1], ds.sample_rate, kind=kind, seconds=seconds, position=position, seed=seed
    )
    trigger = AudioTrigger(np.zeros(1, np.float32), pattern, kind=f"audio-{kind}", snr_db=snr_db)
    return _stamp(ds, rate, trigger, target, mode, seed, f"audio-{kind}-{mode}")
