"""The user's training recipe: how shadow, reference and retrained models are made.

A recipe is a fitted or unfitted scikit-learn estimator (trained again through
``sklearn.base.clone``), a ``train(x, y) -> model`` callable, or the name of one as
``package.module:function`` (``--trainer`` on the command line).

Example::

    fit = resolve_trainer("mytrain:train")
    model = fit(x, y)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import numpy as np

from mlwarden.core.errors import UserError

Trainer = Callable[[np.ndarray, np.ndarray], Any]


def import_function(spec: str, option: str = "--trainer") -> Trainer:
    """Import ``package.module:function``; a one-line error when it is malformed or missing."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UserError(
            f"{option} must look like package.module:function (a train(x, y) -> model "
            f"function); got {spec!r}"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"{option} {spec}: cannot import {module_name!r} ({exc})") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise UserError(f"{option} {spec}: {module_name} has no function {attr!r}")
    return fn  # type: ignore[no-any-return]


def resolve_trainer(recipe: Any) -> Trainer:
    """A ``train(x, y) -> model`` function from an estimator, a callable or ``module:function``."""
    if isinstance(recipe, str):
        return import_function(recipe)
    if hasattr(recipe, "fit") and hasattr(recipe, "get_params"):
        from sklearn.base import clone

        def fit_clone(x: np.ndarray, y: np.ndarray) -> Any:
            return clone(recipe).fit(x.reshape(len(x), -1), y)

        return fit_clone
    if callable(recipe):
        return recipe  # type: ignore[no-any-return]
    raise UserError(
        f"cannot train with a {type(recipe).__name__}; expected a scikit-learn estimator, "
        "a train(x, y) function or 'module:function'"
    )
