"""Shadow and reference models trained with the user's own recipe.

Membership attacks that calibrate per record (LiRA, RMIA) or learn what members
look like (Shokri et al.) need models trained *the way the target was trained* on
data that does or does not hold each record. A :class:`Recipe` is that training
procedure:

* :class:`SklearnRecipe` — an unfitted copy of the user's estimator
  (``sklearn.base.clone``), refitted per shadow with its own ``random_state``;
* :class:`TrainerRecipe` — a user function ``train(x, y) -> model`` named as
  ``"package.module:function"``; the model it returns is a ``torch.nn.Module``
  returning logits, or anything with ``predict_proba``.

:func:`train_shadows` trains ``M`` models on random halves of a population so that
each record is *in* each of them with probability 1/2 (as in LiRA), in parallel through
:func:`mlwarden.core.executor.get_executor`, and returns each model's log-probabilities
on every record (and on augmented views of it): the models themselves never travel
back, so the same job runs in-process, on a process pool or on Ray.

Example::

    recipe = SklearnRecipe(LogisticRegression(max_iter=500))
    shadows = train_shadows(recipe, x, y, n_models=16, executor="process=2")
    shadows.logp.shape   # (16, views, N, classes)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlwarden.core.errors import UserError
from mlwarden.core.trainer import resolve_trainer
from mlwarden.privacy.modalities import model_input


class Recipe:
    """How to train one model on ``(x, y)``; subclasses must be picklable."""

    name = "recipe"

    def fit(self, x: np.ndarray, y: np.ndarray, seed: int) -> Any:
        raise NotImplementedError

    def describe(self) -> str:
        return self.name


@dataclass
class SklearnRecipe(Recipe):
    """Refit a clone of an unfitted (or fitted) scikit-learn estimator on flattened inputs
    (on the raw strings for a text pipeline)."""

    estimator: Any

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"sklearn.clone({type(self.estimator).__name__})"

    def fit(self, x: np.ndarray, y: np.ndarray, seed: int) -> Any:
        from sklearn.base import clone

        model = clone(self.estimator)
        if "random_state" in model.get_params():
            model.set_params(random_state=seed)
        model.fit(model_input(x), y)
        return model


@dataclass
class TrainerRecipe(Recipe):
    """Call a user training function ``train(x, y) -> model`` named ``module:function``.

    The function is imported by name in each worker; torch and numpy are seeded with
    the shadow's seed before the call.
    """

    spec: str

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.spec

    def fit(self, x: np.ndarray, y: np.ndarray, seed: int) -> Any:
        import torch

        fn = resolve_trainer(self.spec)
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        try:
            return fn(x, y)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            raise UserError(f"--trainer {self.spec} failed: {type(exc).__name__}: {first}") from exc


@dataclass
class CallableRecipe(Recipe):
    """A module-level function ``fn(x, y, seed) -> model`` (for code, not the CLI)."""

    fn: Callable[[np.ndarray, np.ndarray, int], Any]

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"{self.fn.__module__}:{self.fn.__qualname__}"

    def fit(self, x: np.ndarray, y: np.ndarray, seed: int) -> Any:
        return self.fn(x, y, seed)


def model_log_probs(model: Any, x: np.ndarray, num_classes: int) -> np.ndarray:
    """Log-probabilities ``(N, num_classes)`` float64 of a trained model on ``x``.

    A torch module is taken to return logits; an estimator's ``predict_proba``
    columns are placed by its ``classes_`` (a class missing from a shadow's training
    half gets probability ~0).
    """
    import torch

    if isinstance(model, torch.nn.Module):
        model.eval()
        with torch.no_grad():
            out = model(torch.as_tensor(x, dtype=torch.float32))
        return torch.log_softmax(out.double(), dim=1).numpy()
    if hasattr(model, "predict_proba"):
        proba = np.asarray(model.predict_proba(model_input(x)), dtype=np.float64)
        classes = np.asarray(getattr(model, "classes_", np.arange(proba.shape[1]))).astype(int)
        full = np.full((len(x), num_classes), 1e-30)
        full[:, classes] = proba
        return np.log(np.clip(full, 1e-30, 1.0))
    raise UserError(
        f"the trainer returned a {type(model).__name__}; expected a torch.nn.Module (logits) "
        "or an estimator with predict_proba"
    )


def augment_views(x: np.ndarray, views: int) -> list[np.ndarray]:
    """The record itself and, for images, up to 8 one-pixel shifts (LiRA's query augmentations).

    Tabular inputs have no label-preserving augmentation here: only the record itself.
    """
    out = [x]
    if views <= 1 or x.ndim != 4:
        return out
    shifts = [(0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (-1, -1), (1, -1), (-1, 1)]
    for dy, dx in shifts[: views - 1]:
        shifted = np.zeros_like(x)
        h, w = x.shape[2], x.shape[3]
        ys = slice(max(dy, 0), h + min(dy, 0))
        yd = slice(max(-dy, 0), h + min(-dy, 0))
        xs = slice(max(dx, 0), w + min(dx, 0))
        xd = slice(max(-dx, 0), w + min(-dx, 0))
        shifted[:, :, ys, xs] = x[:, :, yd, xd]
        out.append(shifted)
    return out


@dataclass
class ShadowJob:
    """One shadow model to train: everything a worker needs, picklable."""

    recipe: Recipe
    x: np.ndarray
    y: np.ndarray
    train_index: np.ndarray
    views: int
    num_classes: int
    seed: int


def train_shadow(job: ShadowJob) -> np.ndarray:
    """Train one shadow on ``x[train_index]``; log-probs ``(views, N, C)`` float32 on all of ``x``."""
    import torch

    torch.manual_seed(job.seed)
    np.random.seed(job.seed % 2**32)
    model = job.recipe.fit(job.x[job.train_index], job.y[job.train_index], job.seed)
    return np.stack(
        [model_log_probs(model, v, job.num_classes) for v in augment_views(job.x, job.views)]
    ).astype(np.float32)


@dataclass
class ShadowSet:
    """Outputs of ``M`` shadow models on a population of ``N`` records."""

    logp: np.ndarray  #: (M, views, N, C) log-probabilities
    keep: np.ndarray  #: (M, N) bool, True where the record was in that model's training half
    recipe: str


def half_splits(n_models: int, n_records: int, seed: int) -> np.ndarray:
    """``(M, N)`` membership matrix: each record joins each model independently with p = 1/2.

    Independent draws (rather than "exactly half the models" per record) matter when
    shadows are attacked in turn with the others as references: with an exact split
    the references' in/out counts would reveal the left-out model's membership.
    """
    if n_models < 1:
        raise UserError(f"need at least one shadow model; got {n_models}")
    rng = np.random.default_rng(seed)
    return rng.random((n_models, n_records)) < 0.5


def train_shadows(
    recipe: Recipe,
    x: np.ndarray,
    y: np.ndarray,
    *,
    n_models: int = 16,
    views: int = 1,
    num_classes: int | None = None,
    executor: str = "local",
    seed: int = 0,
    keep: np.ndarray | None = None,
) -> ShadowSet:
    """Train ``n_models`` shadows on random halves of ``(x, y)`` through the executor."""
    from mlwarden.core.executor import get_executor

    n = len(x)
    c = int(num_classes or (int(y.max()) + 1))
    if keep is None:
        keep = half_splits(n_models, n, seed)
    jobs = [
        ShadowJob(recipe, x, y, np.nonzero(keep[m])[0], views, c, seed * 1000 + m + 1)
        for m in range(len(keep))
    ]
    from mlwarden.core.console import progress_bar

    with get_executor(executor) as ex, progress_bar("shadow models", len(jobs)) as bar:
        tick = (lambda _i: bar.advance(bar.task_ids[0])) if bar is not None else None
        outs = ex.map(train_shadow, jobs, on_done=tick)
    return ShadowSet(logp=np.stack(outs), keep=keep, recipe=recipe.describe())
