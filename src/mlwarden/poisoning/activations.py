"""Penultimate-layer activations of a model, the representation poisoning detectors use.

Activation clustering and spectral signatures look at what the layer before the
classifier head makes of each training sample. This module gets that layer from:

* a torch module with an ``embed(x)`` method (mlwarden's ``SmallCNN``/``MLP``, or a
  TorchScript archive that kept ``embed``);
* any other torch module: the input of its last ``nn.Linear``, via a forward hook;
* a TorchScript ``Sequential`` ending in a Linear layer: every child but the last;
* a scikit-learn ``MLPClassifier``: the last hidden layer, computed from ``coefs_``
  and ``intercepts_`` with the estimator's own activation function;
* an mlwarden :class:`~mlwarden.core.target.TorchTarget` / ``SklearnTarget`` wrapping either.

Example::

    acts = penultimate(model, ds.x)        # (N, D) float32
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from mlwarden.core.errors import UserError


def penultimate(model: Any, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Penultimate-layer activations ``(N, D)`` (float32) of ``model`` on inputs ``x``."""
    inner = model
    if not isinstance(model, nn.Module):
        for attr in ("module", "estimator"):
            if getattr(model, attr, None) is not None:
                inner = getattr(model, attr)
                break
    if isinstance(inner, nn.Module):
        return _torch_penultimate(inner, x, batch_size)
    if _is_sklearn_mlp(inner):
        return sklearn_mlp_hidden(inner, x.reshape(len(x), -1))
    raise UserError(
        f"cannot read penultimate activations of a {type(inner).__name__}; activation "
        "clustering and spectral signatures need a torch module (TorchScript included) "
        "or a scikit-learn MLPClassifier"
    )


def _batches(x: np.ndarray, batch_size: int):
    for i in range(0, len(x), batch_size):
        yield torch.as_tensor(np.ascontiguousarray(x[i : i + batch_size]), dtype=torch.float32)


def _torch_penultimate(module: nn.Module, x: np.ndarray, batch_size: int) -> np.ndarray:
    module.eval()
    outs: list[np.ndarray] = []
    embed = getattr(module, "embed", None)
    if callable(embed):
        with torch.no_grad():
            for xb in _batches(x, batch_size):
                outs.append(embed(xb).reshape(len(xb), -1).float().numpy())
        return np.concatenate(outs).astype(np.float32)
    if isinstance(module, torch.jit.ScriptModule):
        return _script_sequential(module, x, batch_size)
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise UserError(
            f"{type(module).__name__} has no embed() method and no nn.Linear layer, so its "
            "penultimate layer cannot be found; add an embed(x) method returning it"
        )
    captured: list[torch.Tensor] = []

    def hook(_mod: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        captured.append(inputs[0].detach().reshape(len(inputs[0]), -1))

    handle = linears[-1].register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            for xb in _batches(x, batch_size):
                captured.clear()
                module(xb)
                if not captured:
                    raise UserError(
                        f"the last Linear layer of {type(module).__name__} was not used in "
                        "forward(); add an embed(x) method returning the penultimate layer"
                    )
                outs.append(captured[-1].float().numpy())
    finally:
        handle.remove()
    return np.concatenate(outs).astype(np.float32)


def _script_sequential(
    module: torch.jit.ScriptModule, x: np.ndarray, batch_size: int
) -> np.ndarray:
    children = list(module.children())
    is_seq = getattr(module, "original_name", "") == "Sequential"
    if not is_seq or not children or getattr(children[-1], "original_name", "") != "Linear":
        raise UserError(
            "this TorchScript module has no embed() method and is not a Sequential ending "
            "in a Linear layer; script it with an @torch.jit.export embed(x) method that "
            "returns the penultimate layer"
        )
    outs = []
    with torch.no_grad():
        for xb in _batches(x, batch_size):
            h = xb
            for child in children[:-1]:
                h = child(h)
            outs.append(h.reshape(len(h), -1).float().numpy())
    return np.concatenate(outs).astype(np.float32)


def _is_sklearn_mlp(est: Any) -> bool:
    return hasattr(est, "coefs_") and hasattr(est, "intercepts_") and hasattr(est, "activation")


def sklearn_mlp_hidden(est: Any, x: np.ndarray) -> np.ndarray:
    """Last hidden layer of a fitted scikit-learn ``MLPClassifier`` on flat inputs ``(N, F)``."""
    acts: dict[str, Any] = {
        "relu": lambda z: np.maximum(z, 0.0),
        "tanh": np.tanh,
        "logistic": lambda z: 1.0 / (1.0 + np.exp(-z)),
        "identity": lambda z: z,
    }
    if est.activation not in acts:
        raise UserError(f"unknown MLP activation {est.activation!r}")
    if len(est.coefs_) < 2:
        raise UserError("the scikit-learn MLP has no hidden layer")
    if x.shape[1] != est.coefs_[0].shape[0]:
        raise UserError(
            f"the MLP expects {est.coefs_[0].shape[0]} features; the data has {x.shape[1]}"
        )
    h = x.astype(np.float64)
    for w, b in zip(est.coefs_[:-1], est.intercepts_[:-1], strict=True):
        h = acts[est.activation](h @ w + b)
    return h.astype(np.float32)
