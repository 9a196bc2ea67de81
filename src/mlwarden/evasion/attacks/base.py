"""What every evasion attack shares: model access, projections, constraints, bookkeeping.

An attack stores its parameters in ``__init__`` and does its work in
:meth:`Attack.generate`, which

1. converts ``x``/``y`` (numpy or torch) to float32/int64 tensors and checks them;
2. wraps the model (``torch.nn.Module`` or :class:`~mlwarden.core.target.Target`) in a
   :class:`ModelAccess` that counts queries through the Target and enforces budgets;
3. runs the attack's search (:meth:`Attack._run`) on torch tensors only;
4. projects the result once more onto the eps-ball, the value bounds and the tabular
   :class:`Constraints`, so the output is always valid whatever the search did;
5. returns the adversarial batch as the same type (and dtype family) as ``x``.

After a call, :attr:`Attack.last` holds per-sample ``success`` (bool), ``queries``
(model evaluations spent per sample) and ``norms`` (perturbation size) tensors.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from mlwarden.core.errors import UserError
from mlwarden.core.target import BaseTarget, QueryBudgetExceeded, TorchTarget, as_target

Norm = Literal["linf", "l2"]
NORMS: tuple[str, ...] = ("linf", "l2")
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Constraints:
    """Per-feature constraints for tabular data (finance, hiring): what an attacker may change.

    * ``immutable`` — bool mask over the features of one input (shape ``x.shape[1:]``)
      of features that must keep their original value (age, a protected attribute...).
    * ``integer`` — bool mask of features that only take whole numbers (counts, years).
      They are rounded towards the nearest integer that stays inside the eps-ball.
    * ``lower`` / ``upper`` — per-feature value ranges (shape ``x.shape[1:]``), applied on
      top of the attack's global ``bounds``.
    * ``one_hot`` — groups of feature indices (flat) that encode one category: exactly one
      of them is 1, the others 0. A changed category must fit in the eps-ball.
    * ``scale`` — per-feature factor from the attack's units to the data's own (when the
      attack works on rescaled features, e.g. eps relative to each feature's spread):
      integer features are whole numbers of ``x * scale``.

    Example: ``Constraints(immutable=[True, False, False], integer=[False, True, False])``.
    """

    immutable: Any = None
    integer: Any = None
    lower: Any = None
    upper: Any = None
    one_hot: list[list[int]] | None = None
    scale: Any = None

    def tensors(self, shape: tuple[int, ...]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in ("immutable", "integer", "lower", "upper", "scale"):
            value = getattr(self, name)
            if value is None:
                out[name] = None
                continue
            t = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)
            t = t.bool() if name in ("immutable", "integer") else t.float()
            if tuple(t.shape) != shape:
                raise UserError(
                    f"constraint {name!r} has shape {tuple(t.shape)}; expected one value per "
                    f"feature, shape {shape}"
                )
            out[name] = t
        n = int(np.prod(shape))
        groups = [list(map(int, g)) for g in (self.one_hot or []) if len(g)]
        for g in groups:
            if min(g) < 0 or max(g) >= n or len(set(g)) != len(g):
                raise UserError(
                    f"one-hot group {g} must hold distinct feature indices in [0, {n - 1}]"
                )
        out["one_hot"] = groups or None
        return out

    def satisfied(self, x: torch.Tensor, x_adv: torch.Tensor, tol: float = 1e-4) -> torch.Tensor:
        """Per input of the batch: does ``x_adv`` keep every constraint relative to ``x``?

        The re-check applied to each reported success (a projection bug or a float slip
        must not become a claimed adversarial example).
        """
        cons = self.tensors(tuple(x.shape[1:]))
        ok = torch.ones(len(x), dtype=torch.bool)
        flat = lambda t: t.flatten(1)  # noqa: E731
        if cons["immutable"] is not None:
            moved = (x_adv - x).abs() > tol
            ok &= ~flat(moved & cons["immutable"]).any(1)
        if cons["integer"] is not None:
            k = cons["scale"] if cons["scale"] is not None else torch.ones(x.shape[1:])
            raw = x_adv * k
            off = (raw - raw.round()).abs() > tol * torch.clamp(raw.abs(), min=1.0)
            ok &= ~flat(off & cons["integer"]).any(1)
        for name, cmp in (("lower", torch.lt), ("upper", torch.gt)):
            edge = cons[name]
            if edge is not None:
                # a clean value already outside the range may stay where it is
                bad = cmp(x_adv, edge - tol if name == "lower" else edge + tol)
                ok &= ~flat(bad & (x_adv != x)).any(1)
        k_all = cons["scale"] if cons["scale"] is not None else torch.ones(x.shape[1:])
        for g in cons["one_hot"] or []:
            v = flat(x_adv * k_all)[:, g]
            ok &= ((v - v.round()).abs() <= tol).all(1) & ((v.round().sum(1) - 1).abs() < 0.5)
        return ok


@dataclass
class AttackStats:
    """Per-sample outcome of the last :meth:`Attack.generate` call."""

    success: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.bool))
    queries: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    norms: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    budget_exhausted: bool = False
    #: per sample: the query budget stopped the attack before it succeeded or finished,
    #: so a failure on this sample proves nothing about its robustness
    exhausted: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.bool))
    #: gradient calls, and those answered without a gradient path (zero gradient)
    grad_calls: int = 0
    gradless_calls: int = 0


class ModelAccess:
    """The attack's view of a model: torch in, torch out, queries counted on the Target.

    ``logits(x)`` is differentiable (white-box only); ``scores(x)`` and ``labels(x)``
    run without gradients and work for every access level that allows them. A model
    output in probabilities is passed through as-is; the losses below accept both.
    """

    def __init__(self, model: Any, access: str | None = None) -> None:
        if isinstance(model, torch.nn.Module):
            model = _torch_target(model)
        self.target: BaseTarget = as_target(model)
        self.access = access or self.target.access
        if self.access == "white" and self.target.access != "white":
            raise UserError(
                f"{self.target.name} offers {self.target.access} access; a white-box attack "
                "needs gradients (use Square or HopSkipJump, or a surrogate with Transfer)"
            )
        self.eot_samples = int(getattr(self.target, "eot_samples", 1) or 1)
        self.randomized = bool(getattr(self.target, "randomized", False))
        found = _FOUND_RANDOM.get(self.target)
        if found is not None and not self.randomized:
            self.randomized, self.eot_samples = True, max(self.eot_samples, found)
        #: gradient calls whose output had no autograd path to the input (answered with a
        #: zero gradient), out of all gradient calls
        self.gradless_calls = 0
        self.grad_calls = 0

    @property
    def white(self) -> bool:
        return self.access == "white"

    @property
    def queries(self) -> int:
        return int(self.target.queries)

    def _budget(self, n: int) -> None:
        t = self.target
        if t.max_queries is not None and t.queries + n > t.max_queries:
            raise QueryBudgetExceeded(
                f"{t.name}: {n} more queries would exceed the budget of {t.max_queries}"
            )

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable scores ``(N, C)`` (white-box access)."""
        self._budget(len(x))
        return self.target.torch_forward(x)  # type: ignore[attr-defined, no-any-return]

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Scores ``(N, C)`` without gradients (score or white access)."""
        if self.access == "label":
            raise UserError(f"{self.target.name} gives labels only; this attack needs scores")
        t = self.target
        # a converted ONNX graph answers through onnxruntime, the model as deployed
        if (
            isinstance(t, TorchTarget)
            and t.access == "white"
            and not getattr(t, "answers_through_predict", False)
        ):
            self._budget(len(x))
            with torch.no_grad():  # torch_forward counts the queries and pads fixed batches
                out = t.torch_forward(x).float().cpu()
            if t.num_classes is None and out.ndim == 2:
                t.num_classes = out.shape[1]  # as predict() learns it: label checks need it
            return out  # type: ignore[no-any-return]
        return torch.from_numpy(np.ascontiguousarray(t.predict(x.detach().cpu())))

    def labels(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted classes ``(N,)`` (any access)."""
        if self.access == "label" or self.target.access == "label":
            return torch.from_numpy(self.target.predict_labels(x.detach().cpu()))
        return self.scores(x).argmax(1)

    def input_grad(
        self, out: torch.Tensor, x: torch.Tensor, retain_graph: bool = False
    ) -> torch.Tensor:
        """``d out.sum() / d x``; a zero gradient (counted in :attr:`gradless_calls`) when
        the model answered this call without an autograd path to ``x`` (a randomised
        model that sometimes replaces its output, a detached lookup): such a call tells
        the attack nothing, it is not an error."""
        self.grad_calls += 1
        if not out.requires_grad:
            self.gradless_calls += 1
            return torch.zeros_like(x)
        (g,) = torch.autograd.grad(out.sum(), x, retain_graph=retain_graph, allow_unused=True)
        if g is None:
            self.gradless_calls += 1
            return torch.zeros_like(x)
        return g

    def loss_grad(
        self, x: torch.Tensor, loss_fn: LossFn, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-sample loss, its input gradient and the logits; EOT-averaged for randomised targets.

        EOT: Athalye et al. 2018, "Synthesizing Robust Adversarial Examples",
        arXiv:1707.07397 — the gradient is the mean over ``eot_samples`` draws. A draw
        without a gradient path counts as a zero gradient (see :meth:`input_grad`).
        """
        reps = self.eot_samples if self.randomized else 1
        grad = torch.zeros_like(x)
        loss_sum = torch.zeros(len(x))
        logits_out: torch.Tensor | None = None
        for _ in range(reps):
            xr = x.detach().requires_grad_(True)
            logits = self.logits(xr)
            loss = loss_fn(logits, y)
            grad += self.input_grad(loss, xr)
            loss_sum += loss.detach().cpu()
            logits_out = logits.detach()
        assert logits_out is not None
        return loss_sum / reps, grad / reps, logits_out


#: Targets that :func:`mark_randomized` found to answer the same input differently,
#: with the EOT draws to use; read by every :class:`ModelAccess` built on them.
_FOUND_RANDOM: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()

#: Predictions a success on a randomised target is judged by (at least; more when the
#: target asks for more EOT draws), as :func:`vote_labels` counts them.
VERIFY_DRAWS = 9
#: EOT draws for a target found randomised that does not say how many it needs
#: (DefendedTarget's default).
DEFAULT_EOT = 10


def mark_randomized(target: Any, eot_samples: int = DEFAULT_EOT) -> None:
    """Record that ``target`` was seen to be randomised, so attacks on it use EOT."""
    # a target that is not weak-referenceable keeps only its own attributes
    with contextlib.suppress(TypeError):
        _FOUND_RANDOM[target] = int(eot_samples)


def verify_draws(access: ModelAccess) -> int:
    """How many predictions judge one success: 1, or ``max(eot_samples, 9)`` when randomised.

    One rule for every stage, check and target (DefendedTarget included): on a randomised
    model one lucky draw proves nothing, the majority vote is what a user of the model
    sees on average.
    """
    return max(access.eot_samples, VERIFY_DRAWS) if access.randomized else 1


def vote_counts(access: ModelAccess, x: torch.Tensor, draws: int) -> torch.Tensor:
    """How often each class was predicted for each input over ``draws`` predictions,
    ``(N, C)`` (one prediction when ``draws == 1``)."""
    n_cls = access.target.num_classes or 0
    counts = torch.zeros(len(x), max(n_cls, 1))
    for _ in range(max(draws, 1) if len(x) else 0):
        lab = access.labels(x)
        if int(lab.max()) >= counts.shape[1]:
            pad = torch.zeros(len(x), int(lab.max()) + 1 - counts.shape[1])
            counts = torch.cat([counts, pad], 1)
        counts[torch.arange(len(x)), lab] += 1
    return counts


def vote_labels(access: ModelAccess, x: torch.Tensor, draws: int) -> torch.Tensor:
    """The plurality label of ``draws`` predictions per input (``draws == 1``: the prediction)."""
    if draws <= 1:
        return access.labels(x)
    return vote_counts(access, x, draws).argmax(1)


_WRAPPED: weakref.WeakKeyDictionary[torch.nn.Module, TorchTarget] = weakref.WeakKeyDictionary()


def _torch_target(module: torch.nn.Module) -> TorchTarget:
    """One white-box Target per module, reused across calls (wrapping walks the module tree)."""
    target = _WRAPPED.get(module)
    if target is None or target.module is not module or module.training:
        target = TorchTarget(module)
        _WRAPPED[module] = target
    return target


# -- losses -----------------------------------------------------------------------------


def ce_loss(logits: torch.Tensor, y: torch.Tensor, targeted: bool = False) -> torch.Tensor:
    """Per-sample cross-entropy; negated for targeted attacks so that higher is better."""
    loss = F.cross_entropy(logits, y, reduction="none")
    return -loss if targeted else loss


def margin(logits: torch.Tensor, y: torch.Tensor, targeted: bool = False) -> torch.Tensor:
    """Attack margin: > 0 means the attack has not succeeded yet (lower is better).

    Untargeted: ``z_y - max_{j != y} z_j``. Targeted (``y`` = target):
    ``max_{j != t} z_j - z_t``.
    """
    true = logits.gather(1, y[:, None])[:, 0]
    other = logits.clone()
    other.scatter_(1, y[:, None], -math.inf)
    best_other = other.max(1).values
    return best_other - true if targeted else true - best_other


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference of Logits Ratio, untargeted (Croce & Hein 2020, arXiv:2003.01690, eq. 5).

    ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)``; shift and scale invariant.
    """
    srt = logits.sort(dim=1, descending=True).values
    true = logits.gather(1, y[:, None])[:, 0]
    top_is_y = (logits.argmax(1) == y).float()
    best_other = srt[:, 0] * (1 - top_is_y) + srt[:, 1] * top_is_y
    return -(true - best_other) / (srt[:, 0] - srt[:, 2] + 1e-12)


def dlr_targeted_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR (Croce & Hein 2020, arXiv:2003.01690, eq. 6).

    ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``.
    """
    srt = logits.sort(dim=1, descending=True).values
    true = logits.gather(1, y[:, None])[:, 0]
    tgt = logits.gather(1, target[:, None])[:, 0]
    return -(true - tgt) / (srt[:, 0] - 0.5 * (srt[:, 2] + srt[:, 3]) + 1e-12)


# -- geometry ---------------------------------------------------------------------------


def flat_norm(d: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample norm of a batch of perturbations (``linf`` or ``l2``)."""
    flat = d.flatten(1)
    if norm == "linf":
        return flat.abs().amax(1) if flat.shape[1] else torch.zeros(len(d))
    return flat.norm(p=2, dim=1)


def project_ball(delta: torch.Tensor, eps: float | torch.Tensor, norm: str) -> torch.Tensor:
    """Project perturbations onto the ``norm`` ball of radius ``eps`` (scalar or per-sample)."""
    if norm == "linf":
        if not isinstance(eps, torch.Tensor):
            return delta.clamp(-float(eps), float(eps))
        e = eps.view(-1, *[1] * (delta.ndim - 1))
        return torch.maximum(torch.minimum(delta, e), -e)
    n = flat_norm(delta, "l2").clamp_min(1e-12)
    e = eps if isinstance(eps, torch.Tensor) else torch.full_like(n, float(eps))
    factor = torch.minimum(torch.ones_like(n), e / n)
    return delta * factor.view(-1, *[1] * (delta.ndim - 1))


def normalize_grad(g: torch.Tensor, norm: str) -> torch.Tensor:
    """Steepest-ascent direction for the norm: sign for Linf, unit vector for L2."""
    if norm == "linf":
        return g.sign()
    n = flat_norm(g, "l2").clamp_min(1e-12)
    return g / n.view(-1, *[1] * (g.ndim - 1))


def snr_radius(x: torch.Tensor, snr_db: float) -> torch.Tensor:
    """Per-sample L2 radius ``||x_i||_2 / 10^(snr_db / 20)`` of the SNR ball (shape ``(N,)``).

    A perturbation inside it keeps the signal-to-perturbation ratio (L2 energy) of each
    clip at ``snr_db`` dB or more; e.g. 20 dB allows a perturbation a tenth of the clip's
    norm. Example: ``snr_radius(clips, 30.0)``.
    """
    return flat_norm(x, "l2") * 10.0 ** (-float(snr_db) / 20.0)


def random_in_ball(
    x: torch.Tensor, eps: float | torch.Tensor, norm: str, gen: torch.Generator
) -> torch.Tensor:
    """A uniformly random perturbation in the Linf ball, or a random direction scaled to
    a uniform radius in the L2 ball. ``eps`` is a scalar or one radius per sample."""
    if isinstance(eps, torch.Tensor):
        eps = eps.view(-1, *[1] * (x.ndim - 1))
    if norm == "linf":
        return (torch.rand(x.shape, generator=gen) * 2 - 1) * eps
    d = torch.randn(x.shape, generator=gen)
    d = normalize_grad(d, "l2")
    r = torch.rand(len(x), generator=gen).view(-1, *[1] * (x.ndim - 1))
    return d * r * eps


# -- the attack base --------------------------------------------------------------------


class Attack:
    """Base class. Subclasses set ``name`` and ``access`` and implement :meth:`_run`.

    Shared parameters: ``norm`` (``"linf"`` or ``"l2"``), ``eps`` (radius in input
    units; ``None`` for minimal-perturbation attacks without a cap), ``bounds`` (valid
    input range), ``targeted``, ``constraints`` (tabular :class:`Constraints`) and
    ``seed``. ``snr_db`` (audio) replaces ``eps`` by a per-sample L2 radius, the SNR
    ball of :func:`snr_radius`: every clip keeps at least ``snr_db`` dB of signal over
    perturbation.
    """

    name: str = "attack"
    #: the least model access the attack needs: "white", "score" or "label"
    access: str = "white"
    #: ATLAS sub-technique this attack performs.
    atlas: str = "AML.T0043.000"

    def __init__(
        self,
        *,
        norm: str = "linf",
        eps: float | None = 0.3,
        bounds: tuple[float, float] = (0.0, 1.0),
        targeted: bool = False,
        constraints: Constraints | None = None,
        early_stop: bool = True,
        seed: int = 0,
        snr_db: float | None = None,
    ) -> None:
        self.norm = norm
        self.eps = eps
        self.snr_db = snr_db
        self.bounds = bounds
        self.targeted = targeted
        self.constraints = constraints
        self.early_stop = early_stop
        self.seed = seed
        self.last = AttackStats()

    # -- public -------------------------------------------------------------------------
    def generate(self, model: Any, x: Any, y: Any = None, target: Any = None) -> Any:
        """Adversarial versions of ``x`` (same type as ``x``).

        ``y``: true labels (default: the model's own predictions). ``target``: the
        classes to reach when ``targeted=True`` (default: a random class other than ``y``,
        drawn with the attack's seed).
        """
        self._check_params()
        xt, kind = to_tensor(x)
        access = ModelAccess(model)
        rank = {"label": 0, "score": 1, "white": 2}
        if rank[access.target.access] < rank[self.access]:
            raise UserError(
                f"{self.name} needs {self.access} access, but {access.target.name} offers "
                f"{access.target.access} access"
            )
        self._check_input(xt)
        self._cons = self.constraints.tensors(tuple(xt.shape[1:])) if self.constraints else {}
        gen = torch.Generator().manual_seed(self.seed)
        if y is None:
            yt = access.labels(xt)
        else:
            yt = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).long()
            if yt.shape != (len(xt),):
                raise UserError(
                    f"y must hold one label per input: shape ({len(xt)},), got {tuple(yt.shape)}"
                )
        tt: torch.Tensor | None = None
        if self.targeted:
            tt = self._targets(access, xt, yt, target, gen)
        start = access.queries
        stats = AttackStats(
            success=torch.zeros(len(xt), dtype=torch.bool),
            queries=torch.zeros(len(xt), dtype=torch.long),
        )
        self.last = stats
        try:
            x_adv = self._run(access, xt, yt, tt, gen)
        except QueryBudgetExceeded:
            stats.budget_exhausted = True
            x_adv = getattr(self, "_best", xt).clone()
            stats.exhausted = ~stats.success
        else:
            stats.exhausted = torch.zeros(len(xt), dtype=torch.bool)
        stats.grad_calls, stats.gradless_calls = access.grad_calls, access.gradless_calls
        x_adv = self.project(x_adv, xt)
        self._best = xt
        stats.norms = flat_norm(x_adv - xt, self.norm)
        if stats.queries.sum() == 0:
            stats.queries += (access.queries - start) // max(1, len(xt))
        return from_tensor(x_adv, kind, x)

    @property
    def has_integers(self) -> bool:
        return getattr(self, "_cons", {}).get("integer") is not None

    def succeeded(
        self, access: ModelAccess, x_adv: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None
    ) -> torch.Tensor:
        """Whether each input is misclassified (untargeted) or classified as its target."""
        pred = access.labels(x_adv)
        return pred == t if (self.targeted and t is not None) else pred != y

    def project(
        self, x_adv: torch.Tensor, x: torch.Tensor, round_integers: bool = True
    ) -> torch.Tensor:
        """Onto the eps-ball around ``x``, the bounds, and the tabular constraints.

        ``round_integers=False`` keeps integer features continuous, for the iterate of a
        gradient attack whose steps are smaller than one unit; the point it evaluates is
        always the rounded one.
        """
        lo, hi = self.bounds
        delta = x_adv - x
        if self.snr_db is not None:
            delta = project_ball(delta, self.radius(x), self.norm)
        elif self.eps is not None:
            delta = project_ball(delta, self.eps, self.norm)
        out = (x + delta).clamp(lo, hi)
        cons = getattr(self, "_cons", {})
        if not cons:
            return out
        if cons.get("lower") is not None:
            out = torch.maximum(out, torch.minimum(cons["lower"], x))  # type: ignore[arg-type]
        if cons.get("upper") is not None:
            out = torch.minimum(out, torch.maximum(cons["upper"], x))  # type: ignore[arg-type]
        imm = cons.get("immutable")
        if imm is not None:
            out = torch.where(imm, x, out)
        integer = cons.get("integer")
        if integer is not None and round_integers:
            out = self._round_integers(out, x, cons)
        if cons.get("one_hot"):
            out = self._one_hot(out, x, cons["one_hot"], cons.get("scale"))
        return out

    def _round_integers(
        self, out: torch.Tensor, x: torch.Tensor, cons: dict[str, Any]
    ) -> torch.Tensor:
        """Integer features to whole numbers (of ``x * scale``), staying in the ball and range."""
        lo, hi = self.bounds
        integer = cons["integer"]
        k = cons["scale"] if cons.get("scale") is not None else torch.ones(x.shape[1:])
        d = (out - x) * k  # the change in the data's own units
        rounded = torch.round(d)
        if self.eps is not None and self.norm == "linf":
            rounded = torch.where(rounded.abs() > self.eps * k + 1e-6, torch.trunc(d), rounded)
        cand = torch.where(integer, x + rounded / k, out)
        if self.eps is not None and self.norm == "l2":
            over = flat_norm(cand - x, "l2") > self.eps + 1e-6
            trunc = torch.where(integer, x + torch.trunc(d) / k, out)
            cand = torch.where(over.view(-1, *[1] * (x.ndim - 1)), trunc, cand)
        lower, upper = cons.get("lower"), cons.get("upper")
        lo_i = torch.full_like(x, lo) if lower is None else torch.maximum(lower, torch.tensor(lo))
        hi_i = torch.full_like(x, hi) if upper is None else torch.minimum(upper, torch.tensor(hi))
        lo_i = torch.minimum(torch.ceil(lo_i * k - 1e-6) / k, x)
        hi_i = torch.maximum(torch.floor(hi_i * k + 1e-6) / k, x)
        return torch.where(integer, torch.minimum(torch.maximum(cand, lo_i), hi_i), cand)

    def _one_hot(
        self, out: torch.Tensor, x: torch.Tensor, groups: list[list[int]], scale: Any = None
    ) -> torch.Tensor:
        """Each one-hot group to its largest entry set to 1; the clean category where the
        change leaves the eps-ball (a category is all or nothing)."""
        shape = out.shape
        o, xf = out.flatten(1).clone(), x.flatten(1)
        for g in groups:
            idx = torch.tensor(g)
            pick = torch.zeros(len(o), len(g))
            pick[torch.arange(len(o)), o[:, idx].argmax(1)] = 1.0
            on = 1.0 if scale is None else 1.0 / scale.reshape(-1)[idx]  # 1 in data units
            o[:, idx] = pick * on
        cand = o.reshape(shape)
        if self.eps is not None and self.snr_db is None:
            over = flat_norm(cand - x, self.norm) > self.eps * (1 + 1e-5) + 1e-6
            if bool(over.any()):
                fixed = cand.flatten(1).clone()
                for g in groups:
                    fixed[over.nonzero()[:, 0][:, None], torch.tensor(g)] = xf[over][:, g]
                cand = fixed.reshape(shape)
        return cand

    def radius(self, x: torch.Tensor) -> torch.Tensor:
        """The budget of each input of ``x`` (clean inputs), shape ``(N,)``: ``eps``, or
        the SNR ball's L2 radius when ``snr_db`` is set."""
        if self.snr_db is not None:
            return snr_radius(x, self.snr_db)
        return torch.full((len(x),), float(self.eps or 0.0))

    # -- for subclasses -------------------------------------------------------------------
    def _run(
        self,
        access: ModelAccess,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        gen: torch.Generator,
    ) -> torch.Tensor:
        raise NotImplementedError

    def _check_params(self) -> None:
        if self.norm not in NORMS:
            raise UserError(f"{self.name}: norm must be 'linf' or 'l2'; got {self.norm!r}")
        if self.eps is not None and not (self.eps >= 0 and math.isfinite(self.eps)):
            raise UserError(f"{self.name}: eps must be a finite number >= 0; got {self.eps}")
        if self.snr_db is not None:
            if not math.isfinite(self.snr_db):
                raise UserError(f"{self.name}: snr_db must be a finite number; got {self.snr_db}")
            if self.norm != "l2":
                raise UserError(f"{self.name}: an SNR budget is an L2 ball; use norm='l2'")
        lo, hi = self.bounds
        if not hi > lo:
            raise UserError(
                f"{self.name}: bounds must be (low, high) with high > low; got {self.bounds}"
            )

    def _check_input(self, x: torch.Tensor) -> None:
        lo, hi = self.bounds
        if x.ndim < 2:
            raise UserError(f"{self.name}: x must be a batch (N, ...); got shape {tuple(x.shape)}")
        if len(x) and (float(x.min()) < lo - 1e-5 or float(x.max()) > hi + 1e-5):
            raise UserError(
                f"{self.name}: inputs range over [{float(x.min()):.4g}, {float(x.max()):.4g}], "
                f"outside bounds [{lo}, {hi}]; pass bounds=(low, high) that match your data"
            )

    def _targets(
        self,
        access: ModelAccess,
        x: torch.Tensor,
        y: torch.Tensor,
        target: Any,
        gen: torch.Generator,
    ) -> torch.Tensor:
        if target is not None:
            tt = torch.as_tensor(
                np.asarray(target) if not isinstance(target, torch.Tensor) else target
            ).long()
            if tt.ndim == 0:
                tt = tt.expand(len(x)).clone()
            if tt.shape != y.shape:
                raise UserError(
                    f"target must hold one class per input; got shape {tuple(tt.shape)}"
                )
            return tt
        n_classes = access.target.num_classes
        if n_classes is None:
            n_classes = (
                int(y.max()) + 1 if access.access == "label" else int(access.scores(x[:1]).shape[1])
            )
        if n_classes < 2:
            raise UserError("a targeted attack needs at least two classes")
        shift = torch.randint(1, n_classes, (len(y),), generator=gen)
        return (y + shift) % n_classes


def to_tensor(x: Any) -> tuple[torch.Tensor, str]:
    """Inputs as a float32 CPU tensor, plus a tag to convert the result back."""
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu(), "torch"
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise UserError(f"inputs must be numbers; got an array of dtype {arr.dtype}")
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)), "numpy"


def from_tensor(t: torch.Tensor, kind: str, like: Any) -> Any:
    if kind == "torch":
        return t.to(
            dtype=like.dtype if like.is_floating_point() else torch.float32, device=like.device
        )
    arr = t.numpy()
    like_arr = np.asarray(like)
    return arr.astype(like_arr.dtype if like_arr.dtype.kind == "f" else np.float32)
