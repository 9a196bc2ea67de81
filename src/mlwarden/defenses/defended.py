"""A model behind an input-restoration chain, attackable with BPDA and EOT.

``DefendedTarget(model, transforms)`` answers ``predict`` like the deployed defence
(transforms, then the model). For white-box attacks its :meth:`torch_forward` is the
adaptive version of the defence, as an honest evaluation requires (Athalye, Carlini &
Wagner 2018, "Obfuscated Gradients Give a False Sense of Security", arXiv:1802.00420):

* BPDA — a transform that is not differentiable (JPEG, bit-depth reduction) runs
  forwards as is, and backwards as the identity (straight-through estimator).
* EOT — when any transform is randomised, :attr:`eot_samples` tells attacks to average
  the gradient over that many draws (Athalye et al. 2018, "Synthesizing Robust
  Adversarial Examples", arXiv:1707.07397). Default 10 for randomised chains, else 1.
* Surrogate — with ``surrogate=True`` gradient calls run each step's differentiable
  stand-in (:meth:`~mlwarden.defenses.transforms.Transform.surrogate`; for a lossy
  codec, its own band gains plus its own quantisation noise) and the attack uses EOT
  over the stand-in's draws; ``predict`` still runs the real steps, so every success
  is judged by the deployed defence.

The attacks in :mod:`mlwarden.evasion` read ``randomized``/``eot_samples`` through
``ModelAccess.loss_grad``, so every white-box attack is adaptive against it.

Example::

    defended = DefendedTarget(model, [{"type": "jpeg", "quality": 75}])
    evaluate(defended, x, y, eps=0.1)      # APGD etc. through BPDA
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from mlwarden.core.errors import UserError
from mlwarden.core.target import BaseTarget, TorchTarget
from mlwarden.defenses.transforms import Chain, Transform, build_chain


class BPDAPreprocess(nn.Module):
    """``model(transform(x))`` whose backward pass skips non-differentiable transforms;
    with ``surrogate=True`` gradient calls see each step's differentiable stand-in
    (:meth:`Transform.surrogate`) instead, forwards and backwards."""

    def __init__(self, transform: Transform, model: nn.Module, surrogate: bool = False) -> None:
        super().__init__()
        self.transform = transform
        self.model = model
        self.surrogate = surrogate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grad_call = torch.is_grad_enabled() and x.requires_grad
        if self.surrogate and grad_call:
            restored = self.transform.surrogate(x)
        elif self.transform.differentiable or not grad_call:
            restored = self.transform(x)
        else:
            # straight-through: forward value transform(x), gradient of the identity
            restored = x + (self.transform(x.detach()) - x).detach()
        return self.model(restored)  # type: ignore[no-any-return]


def as_chain(transforms: Any, bounds: tuple[float, float] = (0.0, 1.0)) -> Chain:
    """A :class:`Chain` from a transform, a list of transforms, or a list of spec dicts."""
    if isinstance(transforms, Chain):
        return transforms
    if isinstance(transforms, Transform):
        return Chain([transforms], bounds=bounds)
    if isinstance(transforms, Sequence) and not isinstance(transforms, str | bytes):
        items = list(transforms)
        if all(isinstance(t, Transform) for t in items):
            return Chain(items, bounds=bounds)
        if all(isinstance(t, dict) for t in items):
            return build_chain(items, bounds=bounds)
    raise UserError(
        "transforms must be a Transform, a list of Transforms, or a list of "
        "{'type': ...} specs (see mlwarden.defenses.transforms)"
    )


class DefendedTarget(TorchTarget):
    """A model (``nn.Module`` or Target) behind an input-restoration chain.

    With a torch model it keeps white-box access (BPDA/EOT gradients); with any other
    Target it has that target's access and only changes the inputs sent.
    """

    def __init__(
        self,
        model: Any,
        transforms: Any,
        *,
        eot_samples: int | None = None,
        bounds: tuple[float, float] = (0.0, 1.0),
        surrogate: bool = False,
        **kw: Any,
    ) -> None:
        self.transform = as_chain(transforms, bounds=bounds)
        self.surrogate = surrogate
        self.randomized = self.transform.randomized or (
            surrogate and self.transform.surrogate_randomized
        )
        self.eot_samples = int(eot_samples or (10 if self.randomized else 1))
        if self.eot_samples < 1:
            raise UserError(f"eot_samples must be >= 1; got {eot_samples}")
        self.inner: BaseTarget | None = None
        if isinstance(model, TorchTarget) and model.access == "white":
            module = model.module
            kw.setdefault("name", f"{model.name}+defence")
        elif isinstance(model, nn.Module):
            module = model
        elif isinstance(model, BaseTarget):
            self.inner = model
            module = nn.Identity()
            kw.setdefault("access", model.access)
            kw.setdefault("output", model.output)
            kw.setdefault("name", f"{model.name}+defence")
            kw.setdefault("num_classes", model.num_classes)
        else:
            raise UserError(
                f"cannot defend a {type(model).__name__}; expected a torch module or a Target"
            )
        kw.setdefault("name", f"{type(module).__name__}+defence")
        super().__init__(BPDAPreprocess(self.transform, module, surrogate), **kw)

    def _predict(self, x: np.ndarray) -> np.ndarray:
        if self.inner is None:
            return super()._predict(x)
        restored = self.transform(torch.from_numpy(np.ascontiguousarray(x)))
        return self.inner.predict(restored)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(
            defence=self.transform.describe(),
            bpda=not self.transform.differentiable,
            surrogate=self.surrogate,
            eot_samples=self.eot_samples,
        )
        return info
