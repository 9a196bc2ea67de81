"""Tabular realism: a budget relative to each feature's spread, and what may change.

A raw ``eps`` treats a feature measured in thousands like one measured in fractions.
``eps_relative`` instead allows each feature to move by ``r`` times its spread on the
data (standard deviation, or the interquartile range with ``spread="iqr"``): attacks
run on features divided by their spread (``z = x / s``), where the budget is a plain
``r``-ball, through :class:`ScaledTarget`, and every result is mapped back.

:func:`build_space` also derives the :class:`~mlwarden.evasion.attacks.base.Constraints`
every attack projects onto and every reported success is re-checked against: immutable
columns, integer columns (``"auto"``: those whose values in the data are all whole
numbers), each column's range in the data, and one-hot groups.

:func:`model_family` and :func:`robustness_advice` give recommendations that fit the
model: no adversarial-training or "expose logits" advice for a tree ensemble.

Example::

    space = build_space(ds, ds.x[:100], eps_relative=0.1, spec={"immutable": ["age"]})
    target = ScaledTarget(load_target("model.skops"), space.scale)
    evaluate(target, space.x, y, eps=space.eps, bounds=space.bounds,
             constraints=space.constraints)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mlwarden.core.data import Dataset
from mlwarden.core.errors import UserError
from mlwarden.core.target import BaseTarget, _as_numpy
from mlwarden.evasion.attacks.base import Constraints

SPREADS = ("std", "iqr")


@dataclass
class TabularSpace:
    """The space attacks run in: inputs, budget, bounds and constraints in attack units
    (``x / scale``), with what the report says about them."""

    x: np.ndarray
    scale: np.ndarray
    eps: float
    bounds: tuple[float, float]
    constraints: Constraints | None
    describe: dict[str, Any] = field(default_factory=dict)

    def to_data(self, z: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Attack-unit inputs ``z`` (adversarial versions of ``self.x``) back in the data's
        own units, as the clean inputs ``x`` plus the change: an unchanged feature keeps
        its exact value (no round trip through the scaling)."""
        delta = (np.asarray(z, np.float64) - self.x.astype(np.float64)) * self.scale
        return (x.astype(np.float64) + delta).astype(np.float32)


def feature_spread(x: np.ndarray, kind: str = "std") -> np.ndarray:
    """Per-feature spread of ``x`` ``(N, F)``: standard deviation or interquartile range
    (in the data's units; 0 for a constant feature)."""
    if kind not in SPREADS:
        raise UserError(f"spread must be std or iqr; got {kind!r}")
    flat = np.asarray(x, np.float64).reshape(len(x), -1)
    if kind == "std":
        return flat.std(axis=0)
    q1, q3 = np.percentile(flat, [25, 75], axis=0)
    return q3 - q1


def _columns(ds: Dataset, names: Any, what: str) -> list[int]:
    """Column names or indices to indices, with one line naming an unknown column."""
    if names is None:
        return []
    items = names.split(",") if isinstance(names, str) else list(names)
    n = int(np.prod(ds.x.shape[1:]))
    out = []
    for item in (str(i).strip() for i in items):
        if not item:
            continue
        if item in ds.feature_names:
            out.append(ds.feature_names.index(item))
        elif item.lstrip("-").isdigit() and -n <= int(item) < n:
            out.append(int(item) % n)
        else:
            known = ", ".join(ds.feature_names[:8]) or f"indices 0..{n - 1}"
            raise UserError(f"{what}: no column {item!r}; columns are {known}")
    return out


def build_space(
    ds: Dataset,
    x: np.ndarray,
    *,
    eps: float,
    eps_relative: float | None = None,
    spread: str = "std",
    spec: dict[str, Any] | None = None,
) -> TabularSpace:
    """Budget and constraints for tabular ``x`` (a subset of ``ds``).

    ``eps_relative``: each feature may move by this times its spread on ``ds`` (else
    ``eps`` in the data's units). ``spec`` keys: ``immutable`` (columns), ``integer``
    (columns, or ``"auto"``, the default: whole-number columns), ``ranges`` (``"data"``,
    the default: each column stays within its range in ``ds``; ``"global"``: the
    dataset's global bounds only), ``one_hot`` (a list of column groups).
    """
    spec = dict(spec or {})
    unknown = set(spec) - {"immutable", "integer", "ranges", "one_hot"}
    if unknown:
        raise UserError(
            f"constraints: unknown key(s) {', '.join(sorted(unknown))}; "
            "expected immutable, integer, ranges, one_hot"
        )
    shape = tuple(ds.x.shape[1:])
    n = int(np.prod(shape))
    flat_all = ds.x.reshape(len(ds.x), -1).astype(np.float64)
    immutable = np.zeros(n, bool)
    immutable[_columns(ds, spec.get("immutable"), "immutable")] = True
    scale = np.ones(n)
    info: dict[str, Any] = {}
    if eps_relative is not None:
        if not eps_relative > 0:
            raise UserError(f"eps_relative must be a positive number; got {eps_relative}")
        s = feature_spread(flat_all, spread)
        constant = s <= 1e-12
        immutable |= constant  # r times a zero spread: the feature cannot move
        scale = np.where(constant, 1.0, s)
        info.update(
            eps_relative=eps_relative,
            spread=spread,
            eps_per_feature=_named(ds, eps_relative * np.where(constant, 0.0, s)),
        )
    integer_spec = spec.get("integer", "auto")
    if integer_spec == "auto":
        whole = np.all(np.abs(flat_all - np.round(flat_all)) < 1e-6, axis=0)
        integer = whole & ~immutable
    else:
        integer = np.zeros(n, bool)
        integer[_columns(ds, integer_spec, "integer")] = True
    ranges = spec.get("ranges", "data")
    if ranges not in ("data", "global"):
        raise UserError(f"constraints: ranges must be data or global; got {ranges!r}")
    lo, hi = ds.bounds
    lower, upper = np.full(n, lo, np.float64), np.full(n, hi, np.float64)
    if ranges == "data":
        lower, upper = flat_all.min(axis=0), flat_all.max(axis=0)
    groups = [_columns(ds, g, "one_hot") for g in spec.get("one_hot") or []]
    cons = Constraints(
        immutable=torch.as_tensor(immutable.reshape(shape)),
        integer=torch.as_tensor(integer.reshape(shape)) if integer.any() else None,
        lower=torch.as_tensor((lower / scale).reshape(shape), dtype=torch.float32),
        upper=torch.as_tensor((upper / scale).reshape(shape), dtype=torch.float32),
        one_hot=groups or None,
        scale=torch.as_tensor(scale.reshape(shape), dtype=torch.float32),
    )
    z = (x.reshape(len(x), -1) / scale).reshape(x.shape).astype(np.float32)
    zflat = z.reshape(len(z), -1)
    # global bounds only need to hold every per-feature range and every clean input
    zlo = min(float((lower / scale).min()), float(zflat.min(initial=np.inf)))
    zhi = max(float((upper / scale).max()), float(zflat.max(initial=-np.inf)))
    info.update(
        immutable=_names(ds, immutable),
        integer=_names(ds, integer),
        ranges=ranges,
        one_hot=[[_label(ds, i) for i in g] for g in groups],
    )
    return TabularSpace(
        x=z,
        scale=scale.reshape(shape).astype(np.float32),
        eps=float(eps_relative if eps_relative is not None else eps),
        bounds=(zlo, zhi),
        constraints=cons,
        describe=info,
    )


def _label(ds: Dataset, i: int) -> str:
    return ds.feature_names[i] if i < len(ds.feature_names) else str(i)


def _names(ds: Dataset, mask: np.ndarray) -> list[str]:
    return [_label(ds, int(i)) for i in np.nonzero(mask)[0]]


def _named(ds: Dataset, values: np.ndarray) -> dict[str, float]:
    return {_label(ds, i): float(f"{v:.4g}") for i, v in enumerate(values)}


class ScaledTarget(BaseTarget):
    """``inner`` seen on rescaled features: ``predict(z)`` is ``inner.predict(z * scale)``.

    Queries, budget and access are the inner target's; gradients (white access) flow
    through the scaling.
    """

    def __init__(self, inner: Any, scale: np.ndarray) -> None:  # no BaseTarget state
        self.inner = inner
        self.scale_np = np.asarray(scale, np.float32)
        self.scale = torch.from_numpy(self.scale_np)
        self.name = inner.name

    access = property(lambda self: self.inner.access)  # type: ignore[assignment]
    output = property(lambda self: self.inner.output)  # type: ignore[assignment]
    num_classes = property(lambda self: self.inner.num_classes)  # type: ignore[assignment]
    max_queries = property(lambda self: self.inner.max_queries)  # type: ignore[assignment]
    batch_size = property(lambda self: self.inner.batch_size)  # type: ignore[assignment]
    input_shape = property(lambda self: self.inner.input_shape)  # type: ignore[assignment]

    @property  # type: ignore[override]
    def queries(self) -> int:
        return int(self.inner.queries)

    @queries.setter
    def queries(self, value: int) -> None:
        self.inner.queries = value

    def __getattr__(self, name: str) -> Any:
        # what attacks look up on a target (randomized, eot_samples, transform...)
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def predict(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        z = _as_numpy(x)
        return self.inner.predict(z * self.scale_np)  # type: ignore[no-any-return]

    def predict_labels(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        z = _as_numpy(x)
        return self.inner.predict_labels(z * self.scale_np)  # type: ignore[no-any-return]

    def torch_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.torch_forward(x * self.scale)  # type: ignore[no-any-return]

    def describe(self) -> dict[str, Any]:
        return self.inner.describe() | {"features_rescaled": True}  # type: ignore[no-any-return]


def model_family(target: Any) -> str:
    """``"tree"``, ``"linear"``, ``"neural"`` or ``"unknown"``: what the model is, for advice."""
    inner = getattr(target, "inner", None) or getattr(target, "target", None)
    if inner is not None and inner is not target:
        return model_family(inner)
    est = getattr(target, "estimator", None)
    if est is not None:
        steps = getattr(est, "steps", None)
        final = steps[-1][1] if steps else est
        name = type(final).__name__.lower()
        if any(k in name for k in ("forest", "tree", "boost", "xgb", "lgbm", "catboost")):
            return "tree"
        if any(k in name for k in ("logistic", "linear", "ridge", "sgd", "svc", "perceptron")):
            return "linear" if "mlp" not in name else "neural"
        return "neural" if "mlp" in name else "unknown"
    if getattr(target, "onnx", None) is not None or type(target).__name__ == "OnnxTarget":
        ops = _onnx_ops(getattr(target, "path", None))
        if any(o.startswith("TreeEnsemble") for o in ops):
            return "tree"
        if "LinearClassifier" in ops or "LinearRegressor" in ops:
            return "linear"
        return "neural"
    if isinstance(getattr(target, "module", None), torch.nn.Module):
        return "neural"
    return "unknown"


def _onnx_ops(path: Any) -> set[str]:
    if path is None:
        return set()
    try:
        import onnx

        return {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}
    except Exception:  # the file was scanned and loaded already; advice is best effort
        return set()


def robustness_advice(family: str, tabular: bool) -> str:
    """The MLW-EVA-001 recommendation for this kind of model."""
    if family == "tree":
        return (
            "Tree ensembles have no gradients to train against, so adversarial training "
            "does not apply as for networks. Train robust trees (Chen et al. 2019, Robust "
            "Decision Trees Against Adversarial Examples, arXiv:1902.10660; GROOT, Vos & "
            "Verwer 2021, arXiv:2012.10438); impose monotonic constraints where the domain "
            "gives them (monotonic_cst in scikit-learn, monotone_constraints in XGBoost/"
            "LightGBM); round or bucket inputs to the precision the data really has "
            "(feature squeezing); reject inputs outside each feature's training range at "
            "serving time; ensemble diverse models. Re-run this evaluation after each change."
        )
    if family == "linear":
        return (
            "For a linear model, bound the weights (stronger L2/L1 regularisation) or train "
            "on adversarial examples at this budget (for linear models that is exact, a "
            "margin of eps times the dual norm of the weights); validate input ranges at "
            "serving time; then re-run this evaluation."
        )
    ranges = (
        " Validate each feature's range and type at serving time (the per-feature ranges "
        "seen in training)."
        if tabular
        else ""
    )
    return (
        "Harden the model with adversarial training (mlwarden.defenses."
        "adversarial_training) at the eps you need, then re-run this evaluation; "
        "input restoration and detection alone are usually bypassed by adaptive attacks." + ranges
    )
