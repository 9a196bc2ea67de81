"""Model extraction through the query interface (ATLAS AML.T0024.002, AML.T0005).

* :func:`equation_solving` — "Stealing Machine Learning Models via Prediction APIs"
  (Tramèr et al., 2016, arXiv:1609.02943): a linear softmax (logistic) model's
  scores satisfy ``log(p_i / p_0) = (w_i - w_0)·x + (b_i - b_0)``, so ``d + 1``
  queries with scores give a linear system whose solution *is* the model (up to the
  softmax's shift invariance).
* :func:`knockoff` — retraining a surrogate on the victim's answers, as in
  "Knockoff Nets: Stealing Functionality of Black-Box Models" (Orekondy et al., 2019,
  arXiv:1812.02766) and Copycat CNN (Correia-Silva et al., 2018, arXiv:1806.05476),
  with three query-selection strategies: ``random`` (uniform inputs within each
  feature's range measured on the data), ``pool`` (natural data the attacker holds, then
  mixup of pool pairs, or spliced texts, once it is used up) and ``adaptive`` (active learning: the pool records the current
  surrogate is least certain about, picked round by round). The surrogate learns
  from soft scores (``score`` access) or from labels only.
* :func:`jacobian_augmentation` — Papernot et al.'s Jacobian-based dataset augmentation
  ("Practical Black-Box Attacks against Machine Learning", 2017, arXiv:1602.02697): the
  synthetic queries PRADA (arXiv:1805.02628) was built to detect; the gateway's
  detection benchmarks and tests replay it.

Fidelity is agreement of the surrogate's top-1 label with the victim's, measured on
held-out natural data and on uniform random inputs (drawn within each feature's range
measured on the data, so a tabular feature in [0, 1000] and one in [0, 1] are each
covered; white noise at the pool's loudness for audio; random bags of pool words for
text); accuracy is against true labels. Text and audio victims work like arrays: the
modality's hooks (:mod:`mlwarden.privacy.modalities`) give the queries, the encoder
and the substitute (TF-IDF + MLP for text, a 1-D conv net for audio).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from mlwarden.core.errors import UserError
from mlwarden.core.target import QueryBudgetExceeded, Target, softmax
from mlwarden.privacy.modalities import PrivacyHooks, Ranges, hooks_for

STRATEGIES = ("random", "pool", "adaptive")


@dataclass
class LinearSoftmax:
    """A stolen linear softmax model: ``scores = softmax(x @ W.T + b)``."""

    weight: np.ndarray  #: (C, d); row 0 is zero (the reference class)
    bias: np.ndarray  #: (C,)

    def logits(self, x: np.ndarray) -> np.ndarray:
        return x.reshape(len(x), -1).astype(np.float64) @ self.weight.T + self.bias

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return softmax(self.logits(x))

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.logits(x).argmax(axis=1)


def _scores_as_log_probs(target: Target, x: np.ndarray) -> np.ndarray:
    s = np.asarray(target.predict(x), dtype=np.float64)
    if s.ndim != 2:
        raise UserError(f"{target.name} returns labels only; equation solving needs scores")
    if target.output == "probabilities":
        return np.log(np.clip(s, 1e-300, 1.0))
    return (
        s
        - np.log(np.exp(s - s.max(1, keepdims=True)).sum(1, keepdims=True))
        - s.max(1, keepdims=True)
    )


def equation_solving(
    target: Target,
    input_shape: Sequence[int],
    bounds: tuple[Any, Any],
    *,
    extra: int = 0,
    center: np.ndarray | None = None,
    seed: int = 0,
) -> tuple[LinearSoftmax, int]:
    """Solve for a linear softmax model from ``d + 1 + extra`` score queries.

    Queries are drawn uniformly within ``bounds`` (two floats, or per-feature arrays of
    the flattened input's length) (or within a small box around
    ``center`` when given, which keeps probabilities away from float underflow).
    Returns the stolen model and the number of queries spent.
    """
    rng = np.random.default_rng(seed)
    d = int(np.prod(input_shape))
    n = d + 1 + extra
    lo, hi = bounds
    if center is None:
        q = rng.uniform(lo, hi, size=(n, d))
    else:
        span = 0.25 * (hi - lo)
        q = np.clip(center.reshape(1, d) + rng.uniform(-span, span, size=(n, d)), lo, hi)
    q = q.astype(np.float32)
    logp = _scores_as_log_probs(target, q.reshape(n, *input_shape))
    if not np.all(np.isfinite(logp)) or logp.min() < -600:
        raise UserError(
            "the target's scores underflow on these queries; equation solving needs finite log-scores"
        )
    rhs = logp - logp[:, :1]  # log(p_i / p_0), (n, C)
    design = np.c_[q.astype(np.float64), np.ones(n)]
    sol, *_ = np.linalg.lstsq(design, rhs, rcond=None)  # (d+1, C)
    return LinearSoftmax(weight=sol[:d].T.copy(), bias=sol[d].copy()), n


# -- knockoff-style retraining -----------------------------------------------------------


@dataclass
class BudgetPoint:
    """Surrogate quality after ``budget`` victim queries."""

    budget: int
    fidelity: float  #: agreement with the victim on held-out natural data
    fidelity_uniform: float  #: agreement on uniform random inputs
    accuracy: float  #: surrogate accuracy against true labels (nan if none)
    queries: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "fidelity": self.fidelity,
            "fidelity_uniform": self.fidelity_uniform,
            "accuracy": self.accuracy,
            "queries": self.queries,
        }


@dataclass
class ExtractionCurve:
    strategy: str
    soft: bool
    points: list[BudgetPoint] = field(default_factory=list)


def default_surrogate(input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """A fully connected surrogate (the attacker does not know the architecture)."""
    from mlwarden.privacy.modalities import mlp_surrogate

    return mlp_surrogate(input_shape, num_classes)


def train_surrogate(
    model: nn.Module,
    x: np.ndarray,
    targets: np.ndarray,
    *,
    soft: bool,
    steps: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
) -> nn.Module:
    """Fit on victim answers: cross-entropy to soft probabilities, or to hard labels."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    xt = torch.as_tensor(x, dtype=torch.float32)
    tt = torch.as_tensor(targets, dtype=torch.float32 if soft else torch.long)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    n = len(xt)
    for _ in range(steps):
        idx = torch.randint(0, n, (min(batch_size, n),), generator=gen)
        out = model(xt[idx])
        if soft:
            loss = -(tt[idx] * torch.log_softmax(out, 1)).sum(1).mean()
        else:
            loss = nn.functional.cross_entropy(out, tt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _predict(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(x, dtype=torch.float32)).numpy()


def _global_ranges(bounds: tuple[float, float], shape: Sequence[int]) -> Ranges:
    d = int(np.prod(shape))
    return np.full(d, float(bounds[0])), np.full(d, float(bounds[1]))


def query_sequence(
    pool: np.ndarray,
    n: int,
    strategy: str,
    bounds: tuple[float, float] | Ranges,
    rng: np.random.Generator,
    hooks: PrivacyHooks | None = None,
) -> np.ndarray:
    """The first ``n`` queries of a non-adaptive strategy (prefixes are smaller budgets).

    ``random``: the modality's random inputs (uniform within ``bounds``, one global box,
    or per-feature ranges, for numeric data); ``pool``: the pool in random order, then the
    modality's ``extend`` (mixup, text splicing) once it is used up.
    """
    hooks = hooks or hooks_for(pool)
    if strategy == "random":
        ranges = bounds
        if bounds is not None and np.ndim(bounds[0]) == 0:
            ranges = _global_ranges(bounds, pool.shape[1:])  # type: ignore[arg-type]
        return hooks.random_inputs(pool, n, ranges, rng)  # type: ignore[arg-type]
    first = pool[rng.permutation(len(pool))[:n]]
    if n <= len(pool):
        return first
    return np.concatenate([first, hooks.extend(pool, n - len(pool), rng)])


def knockoff(
    target: Target,
    pool: np.ndarray,
    budgets: Sequence[int],
    *,
    eval_x: np.ndarray,
    eval_y: np.ndarray | None = None,
    bounds: tuple[float, float] | None = None,
    ranges: Ranges = None,
    strategy: str = "pool",
    soft: bool | None = None,
    num_classes: int | None = None,
    surrogate: Callable[[Sequence[int], int], nn.Module] | None = None,
    modality: str | None = None,
    uniform_samples: int = 1000,
    seed: int = 0,
    on_budget: Callable[[int], None] | None = None,
) -> ExtractionCurve:
    """Steal ``target`` at each budget; fidelity/accuracy of the surrogate per budget.

    ``soft`` defaults to the target's access (scores unless it is label-only: then the
    substitute learns from hard labels). The attacker never spends more than the largest
    budget: the target itself refuses a query past it. Inputs of any modality (arrays,
    texts, waveforms) go through :mod:`mlwarden.privacy.modalities`: random queries and
    the uniform-fidelity inputs are drawn within ``ranges`` (default: each feature's range
    measured on ``pool`` and ``eval_x``; ``bounds`` gives one global box instead), and
    the substitute is the modality's (``modality``: a row name of
    :mod:`mlwarden.core.modality`; default: text for strings, else tabular). Evaluation queries (on ``eval_x`` and the random
    inputs) are not charged to the attacker. ``on_budget(b)`` is called when budget
    ``b``'s point is measured (progress).

    Example::

        curve = knockoff(target, pool_x, [100, 1000], eval_x=test_x, eval_y=test_y)
        curve.points[-1].fidelity
    """
    if strategy not in STRATEGIES:
        raise UserError(
            f"unknown query strategy {strategy!r}; choose one of: {', '.join(STRATEGIES)}"
        )
    budgets = sorted({int(b) for b in budgets})
    if not budgets or budgets[0] < 1:
        raise UserError(f"budgets must be positive query counts; got {list(budgets)}")
    if soft is None:
        soft = target.access != "label"
    hooks = hooks_for(modality or pool)
    if ranges is None and hooks.numeric:
        ranges = (
            _global_ranges(bounds, pool.shape[1:])
            if bounds is not None
            else hooks.ranges(pool, eval_x)
        )
    rng = np.random.default_rng(seed)
    uniform = hooks.random_inputs(pool, uniform_samples, ranges, rng)
    ref_eval = _victim_labels(target, eval_x)
    ref_uniform = _victim_labels(target, uniform)
    if num_classes is None:
        num_classes = int(
            getattr(target, "num_classes", None) or max(ref_eval.max(), ref_uniform.max()) + 1
        )
    encode = hooks.encoder(pool)
    feat_eval, feat_uniform = encode(eval_x), encode(uniform)
    shape = feat_eval.shape[1:]
    make = surrogate or hooks.surrogate
    curve = ExtractionCurve(strategy=strategy, soft=bool(soft))
    q_x = pool[:0]
    q_t: np.ndarray = np.zeros((0, num_classes) if soft else (0,), np.float32 if soft else np.int64)
    fixed = (
        None
        if strategy == "adaptive"
        else query_sequence(pool, budgets[-1], strategy, ranges, rng, hooks)
    )
    used = np.zeros(len(pool), bool)
    model: nn.Module | None = None
    cap, start = target.max_queries, target.queries
    limit = start + budgets[-1]
    target.max_queries = limit if cap is None else min(cap, limit)
    try:
        for b in budgets:
            while len(q_x) < b:
                if fixed is not None:
                    new = fixed[len(q_x) : b]
                else:
                    n = min(b - len(q_x), max(b // 4, 50))
                    new = _adaptive_batch(model, pool, encode, used, n, rng, hooks)
                answers = _victim_answers(target, new, soft, num_classes)
                q_x = np.concatenate([q_x, new])
                q_t = np.concatenate([q_t, answers])
                if fixed is None and len(q_x) < b:
                    model = _fit(make, shape, num_classes, encode(q_x), q_t, soft, seed)
            model = _fit(make, shape, num_classes, encode(q_x), q_t, soft, seed)
            pred_eval = _predict(model, feat_eval).argmax(1)
            pred_uniform = _predict(model, feat_uniform).argmax(1)
            acc = float((pred_eval == eval_y).mean()) if eval_y is not None else float("nan")
            curve.points.append(
                BudgetPoint(
                    budget=b,
                    fidelity=float((pred_eval == ref_eval).mean()),
                    fidelity_uniform=float((pred_uniform == ref_uniform).mean()),
                    accuracy=acc,
                    queries=target.queries - start,
                )
            )
            if on_budget is not None:
                on_budget(b)
    finally:
        target.max_queries = cap
    return curve


def jacobian_augmentation(
    oracle: Callable[[np.ndarray], np.ndarray],
    seeds: np.ndarray,
    classes: int,
    *,
    rounds: int = 6,
    lam: float = 0.1,
    epochs: int = 10,
    bounds: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, nn.Module]:
    """Papernot et al.'s Jacobian-based dataset augmentation (arXiv:1602.02697).

    ``oracle`` maps a batch to the victim's labels (N,). A substitute MLP (one hidden
    layer of 64) is trained for ``epochs`` full-batch Adam steps on everything asked so
    far; each of ``rounds`` rounds then asks the oracle about ``x + lam *
    sign(dF_y/dx)`` for every input so far (``y`` the oracle's label), clipped to
    ``bounds``: the set doubles each round (``len(seeds) * 2**rounds`` queries). The
    paper's settings: lambda 0.1, 6 substitute epochs (rounds). Exceptions of the
    oracle (a query budget, a gateway block) propagate.

    Returns every queried input (in the order asked), the oracle's labels and the
    substitute. Example::

        xs, ys, sub = jacobian_augmentation(lambda x: clf.predict(x), x_seed, 10, rounds=3)
    """
    torch.manual_seed(seed)
    xs = np.asarray(seeds, dtype=np.float32)
    d = int(np.prod(xs.shape[1:]))
    sub = nn.Sequential(nn.Flatten(), nn.Linear(d, 64), nn.ReLU(), nn.Linear(64, classes))
    opt = torch.optim.Adam(sub.parameters(), 1e-2)
    labels = np.asarray(oracle(xs), dtype=np.int64)
    for _ in range(rounds):
        xt, yt = torch.from_numpy(xs), torch.from_numpy(labels)
        for _ in range(epochs):
            opt.zero_grad()
            nn.functional.cross_entropy(sub(xt), yt).backward()
            opt.step()
        xg = xt.clone().requires_grad_(True)
        sub(xg).gather(1, yt[:, None]).sum().backward()
        assert xg.grad is not None
        step = xs + lam * np.sign(xg.grad.numpy())
        new = np.clip(step, *bounds).astype(np.float32)
        labels = np.concatenate([labels, np.asarray(oracle(new), dtype=np.int64)])
        xs = np.concatenate([xs, new])
    return xs, labels, sub


def _fit(surrogate, shape, num_classes, q_x, q_t, soft, seed) -> nn.Module:  # type: ignore[no-untyped-def]
    steps = int(np.clip(30 * np.ceil(len(q_x) / 64), 300, 2500))
    return train_surrogate(
        surrogate(shape, num_classes), q_x, q_t, soft=soft, steps=steps, seed=seed
    )


def _victim_labels(target: Target, x: np.ndarray) -> np.ndarray:
    """Victim's labels for evaluation, not charged to the attacker's budget."""
    before, cap = target.queries, target.max_queries
    target.max_queries = None
    try:
        return target.predict_labels(x)
    finally:
        target.queries, target.max_queries = before, cap


def _victim_answers(target: Target, x: np.ndarray, soft: bool, num_classes: int) -> np.ndarray:
    try:
        out = target.predict(x)
    except QueryBudgetExceeded as exc:
        raise UserError(f"the victim refused queries: {exc}") from None
    if not soft:
        return (out if out.ndim == 1 else out.argmax(1)).astype(np.int64)
    if out.ndim == 1:
        raise UserError(f"{target.name} returns labels only; use label-only extraction")
    probs = out.astype(np.float64) if target.output == "probabilities" else softmax(out)
    probs = np.clip(probs, 0.0, None)
    probs /= np.maximum(probs.sum(1, keepdims=True), 1e-12)
    return probs.astype(np.float32)


def _adaptive_batch(
    model: nn.Module | None,
    pool: np.ndarray,
    encode: Callable[[np.ndarray], np.ndarray],
    used: np.ndarray,
    n: int,
    rng: np.random.Generator,
    hooks: PrivacyHooks,
) -> np.ndarray:
    """Active learning: the unused pool records with the highest surrogate entropy."""
    free = np.nonzero(~used)[0]
    if len(free) == 0:
        return hooks.extend(pool, n, rng)
    if model is None:
        pick = rng.choice(free, size=min(n, len(free)), replace=False)
    else:
        p = softmax(_predict(model, encode(pool[free])))
        entropy = -(p * np.log(np.clip(p, 1e-12, 1))).sum(1)
        pick = free[np.argsort(-entropy, kind="stable")[:n]]
    used[pick] = True
    out = pool[pick]
    if len(out) < n:
        out = np.concatenate([out, hooks.extend(pool, n - len(out), rng)])
    return out
