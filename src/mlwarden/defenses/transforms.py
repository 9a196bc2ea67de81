"""Input restoration: transforms that try to wash an adversarial perturbation out of an input.

Each transform is a callable on a torch batch ``(N, C, H, W)`` with values in
``bounds`` (default ``[0, 1]``) that returns a batch of the same shape and range. Two
attributes tell an attack how to get through it:

* ``differentiable`` — gradients flow through the transform itself. When ``False``
  an adaptive attack uses BPDA (Athalye, Carlini & Wagner 2018, "Obfuscated Gradients
  Give a False Sense of Security", arXiv:1802.00420): the forward pass runs the
  transform, the backward pass treats it as the identity.
* ``randomized`` — two calls on the same input give different outputs. An adaptive
  attack then uses EOT (Athalye et al. 2018, "Synthesizing Robust Adversarial
  Examples", arXiv:1707.07397): it averages gradients over several draws.

:class:`mlwarden.defenses.defended.DefendedTarget` applies both automatically.

Transforms (the paper each one comes from):

* :class:`DownUpscale` — shrink then enlarge (Guo et al. 2018, "Countering Adversarial
  Images using Input Transformations", arXiv:1711.00117); differentiable.
* :class:`JpegCompression` — JPEG re-encode with Pillow (Dziugaite et al. 2016,
  arXiv:1608.00853; Guo et al. 2018); not differentiable.
* :class:`BitDepthReduction` — keep ``bits`` bits per value (Xu, Evans & Qi 2018,
  "Feature Squeezing", arXiv:1704.01155); not differentiable.
* :class:`MedianFilter` — ``size x size`` median smoothing (Xu et al. 2018); gradients
  pass to the selected pixel, so it counts as differentiable.
* :class:`RandomResizePad` — random resize and random zero-pad, then back to the input
  size (Xie et al. 2018, "Mitigating Adversarial Effects Through Randomization",
  arXiv:1711.01991); differentiable and randomised.

Example::

    chain = build_chain([{"type": "bit_depth", "bits": 4}, {"type": "median", "size": 3}])
    x_clean = chain(x)                  # same shape, same range
    chain.differentiable, chain.randomized   # (False, False)
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mlwarden.core.errors import UserError

Bounds = tuple[float, float]


class Transform:
    """Base class: a named batch transform with ``differentiable`` and ``randomized`` flags."""

    name: str = "transform"
    differentiable: bool = True
    randomized: bool = False

    def __init__(self, bounds: Bounds = (0.0, 1.0)) -> None:
        lo, hi = float(bounds[0]), float(bounds[1])
        if not hi > lo:
            raise UserError(
                f"{self.name}: bounds must be (low, high) with high > low; got {bounds}"
            )
        self.bounds: Bounds = (lo, hi)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _check_batch(x, self.name)
        return self.forward(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    #: whether :meth:`surrogate` draws at random (an adaptive attack then needs EOT)
    surrogate_randomized: bool = False

    def surrogate(self, x: torch.Tensor) -> torch.Tensor:
        """A differentiable stand-in for this step, for adaptive attacks (BPDA with an
        approximation, Athalye et al. 2018, arXiv:1802.00420, section 4.1). Default: the
        step itself when differentiable, else its output with the identity's gradient
        (straight-through). Steps with a better model of themselves override it."""
        if self.differentiable:
            return self(x)
        return x + (self(x.detach()) - x).detach()

    def describe(self) -> dict[str, Any]:
        """The spec that rebuilds this transform with :func:`build_chain`."""
        return {"type": self.name}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if k != "type")
        return f"{type(self).__name__}({args})"


class DownUpscale(Transform):
    """Downscale by ``factor`` (area averaging) and upscale back (bilinear).

    Guo et al. 2018, arXiv:1711.00117 (image rescaling). ``factor`` >= 1, default 2.
    """

    name = "downscale"
    differentiable = True
    randomized = False

    def __init__(self, factor: float = 2.0, bounds: Bounds = (0.0, 1.0)) -> None:
        super().__init__(bounds)
        if not factor >= 1.0:
            raise UserError(f"downscale: factor must be >= 1; got {factor}")
        self.factor = float(factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        small = (max(1, round(h / self.factor)), max(1, round(w / self.factor)))
        down = F.interpolate(x, size=small, mode="area")
        up = F.interpolate(down, size=(h, w), mode="bilinear", align_corners=False)
        return up.clamp(*self.bounds)

    def describe(self) -> dict[str, Any]:
        return {"type": self.name, "factor": self.factor}


class JpegCompression(Transform):
    """Re-encode every image as JPEG at ``quality`` (1-95, default 75) with Pillow.

    Dziugaite et al. 2016, arXiv:1608.00853; Guo et al. 2018, arXiv:1711.00117. One
    channel is encoded as greyscale, three as RGB; any other channel count is encoded
    channel by channel. Not differentiable (use BPDA).
    """

    name = "jpeg"
    differentiable = False
    randomized = False

    def __init__(self, quality: int = 75, bounds: Bounds = (0.0, 1.0)) -> None:
        super().__init__(bounds)
        if not 1 <= int(quality) <= 95:
            raise UserError(f"jpeg: quality must be in 1..95; got {quality}")
        self.quality = int(quality)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from PIL import Image

        lo, hi = self.bounds
        arr = ((x.detach().cpu().float() - lo) / (hi - lo)).clamp(0, 1).mul(255).round()
        u8 = arr.to(torch.uint8).numpy()
        out = np.empty_like(u8)
        n, c = u8.shape[:2]
        for i in range(n):
            if c == 3:
                out[i] = _jpeg(Image.fromarray(u8[i].transpose(1, 2, 0), "RGB"), self.quality)
            else:
                for ch in range(c):
                    out[i, ch] = _jpeg(Image.fromarray(u8[i, ch], "L"), self.quality)
        res = torch.from_numpy(out).to(x.dtype).div(255.0) * (hi - lo) + lo
        return res.to(x.device)

    def describe(self) -> dict[str, Any]:
        return {"type": self.name, "quality": self.quality}


def _jpeg(img: Any, quality: int) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as decoded:
        arr = np.asarray(decoded.convert(img.mode))
    return arr.transpose(2, 0, 1) if arr.ndim == 3 else arr


class BitDepthReduction(Transform):
    """Quantise each value to ``bits`` bits (1-8, default 4) over ``bounds``.

    Xu, Evans & Qi 2018, "Feature Squeezing", arXiv:1704.01155. Not differentiable
    (its gradient is zero almost everywhere; use BPDA).
    """

    name = "bit_depth"
    differentiable = False
    randomized = False

    def __init__(self, bits: int = 4, bounds: Bounds = (0.0, 1.0)) -> None:
        super().__init__(bounds)
        if not 1 <= int(bits) <= 8:
            raise UserError(f"bit_depth: bits must be in 1..8; got {bits}")
        self.bits = int(bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = self.bounds
        levels = 2**self.bits - 1
        unit = ((x - lo) / (hi - lo)).clamp(0, 1)
        return torch.round(unit * levels) / levels * (hi - lo) + lo

    def describe(self) -> dict[str, Any]:
        return {"type": self.name, "bits": self.bits}


class MedianFilter(Transform):
    """``size x size`` median filter per channel with reflect padding (odd ``size``, default 3).

    Xu, Evans & Qi 2018, arXiv:1704.01155 (spatial smoothing).
    """

    name = "median"
    differentiable = True
    randomized = False

    def __init__(self, size: int = 3, bounds: Bounds = (0.0, 1.0)) -> None:
        super().__init__(bounds)
        if int(size) < 1 or int(size) % 2 == 0:
            raise UserError(f"median: size must be an odd number >= 1; got {size}")
        self.size = int(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.size == 1:
            return x
        n, c, h, w = x.shape
        p = self.size // 2
        mode = "reflect" if h > p and w > p else "replicate"
        padded = F.pad(x, (p, p, p, p), mode=mode)
        patches = F.unfold(padded.reshape(n * c, 1, h + 2 * p, w + 2 * p), self.size)
        med = patches.median(dim=1).values
        return med.reshape(n, c, h, w)

    def describe(self) -> dict[str, Any]:
        return {"type": self.name, "size": self.size}


class RandomResizePad(Transform):
    """Resize to a random size in ``[H, H * max_ratio]``, zero-pad randomly, resize back.

    Xie et al. 2018, "Mitigating Adversarial Effects Through Randomization",
    arXiv:1711.01991 (their 299 -> [299, 331) resize and pad to 331, i.e. a ratio of
    about 1.107, the default here). Each image in a batch gets its own draw; the
    padding value is the lower bound. Differentiable and randomised (use EOT).
    """

    name = "random_resize_pad"
    differentiable = True
    randomized = True

    def __init__(
        self, max_ratio: float = 1.107, bounds: Bounds = (0.0, 1.0), seed: int | None = None
    ) -> None:
        super().__init__(bounds)
        if not max_ratio > 1.0:
            raise UserError(f"random_resize_pad: max_ratio must be > 1; got {max_ratio}")
        self.max_ratio = float(max_ratio)
        self.generator = torch.Generator()
        self.generator.manual_seed(seed if seed is not None else int(torch.seed() % 2**63))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        out_h = max(h + 1, int(round(h * self.max_ratio)))
        out_w = max(w + 1, int(round(w * self.max_ratio)))
        rows = []
        for i in range(n):
            g = self.generator
            rh = int(torch.randint(h, out_h, (1,), generator=g))
            rw = int(torch.randint(w, out_w, (1,), generator=g))
            resized = F.interpolate(x[i : i + 1], size=(rh, rw), mode="nearest")
            top = int(torch.randint(0, out_h - rh + 1, (1,), generator=g))
            left = int(torch.randint(0, out_w - rw + 1, (1,), generator=g))
            pad = (left, out_w - rw - left, top, out_h - rh - top)
            padded = F.pad(resized, pad, value=self.bounds[0])
            rows.append(F.interpolate(padded, size=(h, w), mode="bilinear", align_corners=False))
        return torch.cat(rows).clamp(*self.bounds)

    def describe(self) -> dict[str, Any]:
        return {"type": self.name, "max_ratio": self.max_ratio}


class Chain(Transform):
    """Transforms applied in order; differentiable only if all are, randomised if any is."""

    name = "chain"

    def __init__(self, transforms: Sequence[Transform], bounds: Bounds = (0.0, 1.0)) -> None:
        super().__init__(bounds)
        self.transforms = list(transforms)
        self.differentiable = all(t.differentiable for t in self.transforms)
        self.randomized = any(t.randomized for t in self.transforms)
        self.surrogate_randomized = any(
            t.randomized or t.surrogate_randomized for t in self.transforms
        )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)  # each step checks the batch shape it needs (image or audio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for t in self.transforms:
            x = t(x)
        return x

    def surrogate(self, x: torch.Tensor) -> torch.Tensor:
        """Each step's stand-in in order (:meth:`Transform.surrogate`)."""
        for t in self.transforms:
            x = t.surrogate(x)
        return x

    def describe(self) -> dict[str, Any]:
        return {"type": self.name, "transforms": [t.describe() for t in self.transforms]}

    def __len__(self) -> int:
        return len(self.transforms)


#: Spec ``type`` names accepted by :func:`build_chain`.
REGISTRY: dict[str, Callable[..., Transform]] = {
    "downscale": DownUpscale,
    "jpeg": JpegCompression,
    "bit_depth": BitDepthReduction,
    "median": MedianFilter,
    "random_resize_pad": RandomResizePad,
}


def _audio_step(kind: str) -> Callable[..., Transform]:
    """Audio steps live in :mod:`mlwarden.defenses.audio` (which builds on this module)."""

    def build(**params: Any) -> Transform:
        from mlwarden.defenses.audio import STEPS

        return STEPS[kind](**params)

    return build


#: Audio steps (``mlwarden.defenses.audio``), by spec ``type``; REGISTRY holds the image ones.
AUDIO_STEPS: dict[str, Callable[..., Transform]] = {
    k: _audio_step(k)
    for k in ("resample", "lowpass", "quantize", "mp3", "opus", "noise", "random_chain")
}


def build_chain(spec: Sequence[dict[str, Any]], bounds: Bounds = (0.0, 1.0)) -> Chain:
    """Build a :class:`Chain` from a list of ``{"type": name, **parameters}`` dicts.

    ``bounds`` is the input range, passed to every transform unless a spec sets its own.
    Example: ``build_chain([{"type": "jpeg", "quality": 60}])``.
    """
    if isinstance(spec, dict) or not isinstance(spec, Sequence):
        raise UserError(
            f"a transform chain must be a list of {{'type': ...}} entries; got {type(spec).__name__}"
        )
    transforms: list[Transform] = []
    for i, entry in enumerate(spec):
        if not isinstance(entry, dict) or "type" not in entry:
            raise UserError(
                f"transform #{i + 1} must be a mapping with a 'type' key; got {entry!r}"
            )
        params = {k: v for k, v in entry.items() if k != "type"}
        kind = entry["type"]
        factory = REGISTRY.get(kind) or AUDIO_STEPS.get(kind)
        if factory is None:
            names = ", ".join(sorted(REGISTRY)) + "; audio: " + ", ".join(AUDIO_STEPS)
            raise UserError(f"unknown transform type {kind!r}; expected one of: {names}")
        params.setdefault("bounds", bounds)
        if "bounds" in params and not isinstance(params["bounds"], tuple):
            params["bounds"] = tuple(params["bounds"])
        try:
            transforms.append(factory(**params))
        except TypeError as exc:
            raise UserError(f"transform {kind!r}: bad parameters {params}: {exc}") from None
    return Chain(transforms, bounds=bounds)


def _check_batch(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise UserError(
            f"{name}: expected a torch tensor batch (N, C, H, W); got {type(x).__name__}"
        )
    if x.ndim != 4:
        raise UserError(
            f"{name}: expected a batch of images (N, C, H, W); got shape {tuple(x.shape)}"
        )
