"""A robustness evaluation you can trust: an attack ensemble plus checks on itself.

:func:`evaluate` follows AutoAttack (Croce & Hein 2020, "Reliable evaluation of
adversarial robustness with an ensemble of diverse parameter-free attacks",
arXiv:2003.01690), "standard" version, for white-box access:

1. APGD-CE, 100 iterations;
2. APGD-T (targeted DLR) over the top 9 other classes, 100 iterations each;
3. FAB-T (arXiv:1907.02044) over the top 9 other classes, 100 iterations each, one
   restart, alpha_max 0.1, eta 1.05, beta 0.9 — a point counts as broken when the
   smallest adversarial FAB finds lies in the eps-ball;
4. Square Attack, 5,000 queries (arXiv:1912.00049).

DeepFool (arXiv:1511.04599, 50 steps, overshoot 0.02) then gives the distribution of
minimal perturbation sizes over the correctly classified inputs.

Every stage runs only on the points that are still robust; a point counts as robust
only when every stage fails, and each claimed success is re-checked on the model (in
the eps-ball and the bounds). Score-only access runs Square; label-only access runs
HopSkipJump (arXiv:1904.02144). A :class:`~mlwarden.defenses.defended.DefendedTarget`
is attacked through BPDA/EOT automatically.

Sanity checks (each a :class:`Check` in the result, turned into findings by the report):
zero or tiny gradients, a black-box attack beating the white-box ones, randomised
outputs, probability outputs, non-convergence (doubling APGD's iterations breaks
more points), and success below 100% at a very large eps.

Example::

    result = evaluate(model, x, y, norm="linf", eps=0.3)
    result.clean_accuracy, result.robust_accuracy
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from mlwarden.core.errors import UserError
from mlwarden.core.target import QueryBudgetExceeded, is_close_to_probabilities
from mlwarden.evasion.attacks.apgd import APGD
from mlwarden.evasion.attacks.base import (
    Attack,
    Constraints,
    ModelAccess,
    ce_loss,
    flat_norm,
    to_tensor,
)
from mlwarden.evasion.attacks.deepfool import DeepFool
from mlwarden.evasion.attacks.fab import FAB
from mlwarden.evasion.attacks.hopskipjump import HopSkipJump
from mlwarden.evasion.attacks.square import Square
from mlwarden.evasion.metrics import clever, distribution


@dataclass
class Budget:
    """Iterations and queries of each stage. :meth:`standard` is AutoAttack's."""

    apgd_steps: int = 100
    target_classes: int = 9
    fab_steps: int = 100
    deepfool_steps: int = 50
    square_queries: int = 5000
    hsj_queries: int = 5000
    curve_steps: int = 50
    curve_points: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
    convergence_points: int = 100
    large_eps_points: int = 32
    clever_points: int = 10
    clever_batches: int = 50
    clever_batch_size: int = 64
    name: str = "standard"

    @classmethod
    def standard(cls) -> Budget:
        return cls()

    @classmethod
    def quick(cls) -> Budget:
        """A reduced budget for demos and smoke tests; never for a robustness claim."""
        return cls(
            apgd_steps=20,
            target_classes=3,
            fab_steps=20,
            deepfool_steps=20,
            square_queries=200,
            hsj_queries=300,
            curve_steps=10,
            curve_points=(0.5, 1.0, 2.0),
            convergence_points=20,
            large_eps_points=8,
            clever_points=2,
            clever_batches=10,
            clever_batch_size=32,
            name="quick",
        )


@dataclass
class Stage:
    """One attack of the ensemble: what it broke and what it cost."""

    name: str
    atlas: str
    attacked: int
    broken: int
    robust_accuracy_after: float
    seconds: float
    queries: int


@dataclass
class Check:
    """One sanity check on the evaluation itself; ``flagged`` means the answer is doubtful."""

    name: str
    flagged: bool
    detail: str
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvaluationResult:
    """What :func:`evaluate` found. Accuracies are fractions in [0, 1] of all inputs."""

    clean_accuracy: float
    robust_accuracy: float
    norm: str
    eps: float
    n: int
    access: str
    budget: str
    stages: list[Stage] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    curve: list[tuple[float, float]] = field(default_factory=list)
    min_perturbation: dict[str, Any] = field(default_factory=dict)
    queries_per_success: dict[str, Any] = field(default_factory=dict)
    clever: dict[str, Any] = field(default_factory=dict)
    defended: dict[str, Any] | None = None
    seconds: float = 0.0
    #: per input: correct on clean data / robust after every stage / the adversarial input
    clean_correct: np.ndarray = field(default_factory=lambda: np.zeros(0, bool), repr=False)
    robust: np.ndarray = field(default_factory=lambda: np.zeros(0, bool), repr=False)
    x_adv: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32), repr=False)
    adv_pred: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)

    def flagged(self) -> list[Check]:
        return [c for c in self.checks if c.flagged]

    def to_dict(self) -> dict[str, Any]:
        out = {
            k: v
            for k, v in asdict(self).items()
            if k not in ("clean_correct", "robust", "x_adv", "adv_pred")
        }
        out["curve"] = [{"eps": e, "robust_accuracy": r} for e, r in self.curve]
        return out


def _reason(exc: BaseException) -> str:
    """One line saying why a model refused a batch (TorchScript puts it on the last line)."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    return lines[-1] if "TorchScript interpreter" in lines[0] else lines[0]


def evaluate(
    model: Any,
    x: Any,
    y: Any,
    norm: str = "linf",
    eps: float = 0.3,
    *,
    bounds: tuple[float, float] | None = None,
    access: str | None = None,
    budget: Budget | None = None,
    constraints: Constraints | None = None,
    checks: bool = True,
    seed: int = 0,
) -> EvaluationResult:
    """Robust accuracy of ``model`` on ``(x, y)`` within the ``norm`` ball of radius ``eps``.

    ``model``: a ``torch.nn.Module`` or a Target (a DefendedTarget is attacked with
    BPDA/EOT). ``bounds``: the valid input range (default ``(0, 1)``, widened to the data
    when it lies outside). ``access`` lowers the access used (``"score"`` or ``"label"``
    to measure what an API user could do). ``budget``: :meth:`Budget.standard` (default,
    AutoAttack settings) or :meth:`Budget.quick`.
    """
    start = time.perf_counter()
    budget = budget or Budget.standard()
    xt, _ = to_tensor(x)
    yt = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).long()
    if len(xt) == 0:
        raise UserError("evaluate() needs at least one input")
    if yt.shape != (len(xt),):
        raise UserError(
            f"y must hold one label per input: shape ({len(xt)},), got {tuple(yt.shape)}"
        )
    if norm not in ("linf", "l2"):
        raise UserError(f"norm must be 'linf' or 'l2'; got {norm!r}")
    if not (eps >= 0 and math.isfinite(eps)):
        raise UserError(f"eps must be a finite number >= 0; got {eps}")
    if bounds is None:
        bounds = (min(0.0, float(xt.min())), max(1.0, float(xt.max())))
    acc = ModelAccess(model)
    level = access or acc.target.access
    rank = {"label": 0, "score": 1, "white": 2}
    if level not in rank:
        raise UserError(f"access must be white, score or label; got {level!r}")
    if rank[level] > rank[acc.target.access]:
        raise UserError(
            f"{acc.target.name} offers {acc.target.access} access; cannot evaluate with {level}"
        )
    acc.access = level
    common: dict[str, Any] = {
        "norm": norm,
        "eps": eps,
        "bounds": bounds,
        "constraints": constraints,
        "seed": seed,
    }

    classes = acc.target.num_classes
    try:
        if acc.access == "label" or acc.target.access == "label":
            pred = acc.labels(xt)
        else:
            clean_scores = acc.scores(xt)
            classes, pred = clean_scores.shape[1], clean_scores.argmax(1)
    except UserError:
        raise
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        raise UserError(
            f"{acc.target.name} cannot take inputs of shape {tuple(xt.shape[1:])}: "
            f"{_reason(exc)}; give data shaped the way the model was trained"
        ) from exc
    if classes and (int(yt.min()) < 0 or int(yt.max()) >= classes):
        raise UserError(
            f"labels run from {int(yt.min())} to {int(yt.max())} but {acc.target.name} "
            f"has {classes} classes (0..{classes - 1}); is this the model's data?"
        )
    clean = pred == yt
    robust = clean.clone()
    x_adv = xt.clone()
    adv_pred = pred.clone()
    n = len(xt)
    result = EvaluationResult(
        clean_accuracy=float(clean.float().mean()),
        robust_accuracy=float(clean.float().mean()),
        norm=norm,
        eps=float(eps),
        n=n,
        access=level,
        budget=budget.name,
    )
    defended = getattr(acc.target, "transform", None)
    if defended is not None:
        result.defended = {
            "chain": defended.describe(),
            "bpda": not defended.differentiable,
            "eot_samples": int(getattr(acc.target, "eot_samples", 1)),
        }

    def run_stage(name: str, attack: Attack, extra: dict[str, Any] | None = None) -> Attack:
        idx = robust.nonzero()[:, 0]
        t0 = time.perf_counter()
        q0 = acc.queries
        broken = 0
        if len(idx) and eps > 0:
            try:
                out = attack.generate(acc.target, xt[idx], yt[idx])
            except QueryBudgetExceeded:
                out = xt[idx]
            out = torch.as_tensor(out)
            verified = _verify(acc, xt[idx], out, yt[idx], norm, eps, bounds)
            rows = idx[verified]
            x_adv[rows] = out[verified]
            adv_pred[rows] = acc.labels(out[verified]) if len(rows) else adv_pred[rows]
            robust[rows] = False
            broken = int(verified.sum())
        result.stages.append(
            Stage(
                name=name,
                atlas=attack.atlas,
                attacked=int(len(idx)),
                broken=broken,
                robust_accuracy_after=float(robust.float().mean()),
                seconds=round(time.perf_counter() - t0, 3),
                queries=acc.queries - q0,
            )
        )
        return attack

    if level == "white":
        run_stage("apgd-ce", APGD(steps=budget.apgd_steps, loss="ce", **common))
        run_stage(
            "apgd-t",
            APGD(
                steps=budget.apgd_steps,
                loss="dlr",
                targeted=True,
                n_target_classes=budget.target_classes,
                **common,
            ),
        )
        run_stage(
            "fab-t",
            FAB(
                steps=budget.fab_steps,
                targeted=True,
                n_target_classes=budget.target_classes,
                **common,
            ),
        )
        # the distribution of minimal perturbations (not a stage: no eps involved)
        df_idx = clean.nonzero()[:, 0]
        if len(df_idx):
            df = DeepFool(
                norm=norm,
                eps=None,
                steps=budget.deepfool_steps,
                bounds=bounds,
                constraints=constraints,
                seed=seed,
            )
            df.generate(acc.target, xt[df_idx], yt[df_idx])
            min_norms = np.full(n, np.nan)
            ok = df.last.success
            min_norms[df_idx[ok].numpy()] = df.last.norms[ok].numpy()
            result.min_perturbation = {"attack": "deepfool", **distribution(min_norms)}
            result.min_perturbation["values"] = [
                round(float(v), 5) for v in min_norms[np.isfinite(min_norms)]
            ]
        white_robust = robust.clone()
        sq = run_stage("square", Square(n_queries=budget.square_queries, **common))
        _queries_summary(result, sq, "square")
        black_wins = int((white_robust & ~robust).sum())
    elif level == "score":
        sq = run_stage("square", Square(n_queries=budget.square_queries, **common))
        _queries_summary(result, sq, "square")
        black_wins = 0
    else:
        idx = clean.nonzero()[:, 0]
        hsj = HopSkipJump(
            norm=norm,
            eps=None,
            max_queries=budget.hsj_queries,
            bounds=bounds,
            constraints=constraints,
            seed=seed,
        )
        t0 = time.perf_counter()
        q0 = acc.queries
        broken = 0
        if len(idx):
            out = torch.as_tensor(hsj.generate(acc.target, xt[idx], yt[idx]))
            norms = np.full(n, np.nan)
            found = hsj.last.success
            norms[idx[found].numpy()] = hsj.last.norms[found].numpy()
            result.min_perturbation = {"attack": "hopskipjump", **distribution(norms)}
            cand = Attack(norm=norm, eps=eps, bounds=bounds, constraints=constraints)
            cand._cons = constraints.tensors(tuple(xt.shape[1:])) if constraints else {}
            proj = cand.project(out, xt[idx])
            ver = _verify(acc, xt[idx], proj, yt[idx], norm, eps, bounds) & found
            x_adv[idx[ver]] = proj[ver]
            if bool(ver.any()):
                adv_pred[idx[ver]] = acc.labels(proj[ver])
            robust[idx[ver]] = False
            broken = int(ver.sum())
            _queries_summary(result, hsj, "hopskipjump")
            # label-only curve from the minimal distances
            finite = np.where(np.isfinite(norms), norms, np.inf)
            result.curve = [
                (round(eps * m, 6), float(((finite > eps * m) & clean.numpy()).mean()))
                for m in budget.curve_points
            ]
        result.stages.append(
            Stage(
                "hopskipjump",
                hsj.atlas,
                int(len(idx)),
                broken,
                float(robust.float().mean()),
                round(time.perf_counter() - t0, 3),
                acc.queries - q0,
            )
        )
        black_wins = 0

    if checks:
        result.checks.extend(
            _sanity_checks(
                acc,
                xt,
                yt,
                clean,
                robust,
                x_adv,
                adv_pred,
                level,
                norm,
                eps,
                bounds,
                constraints,
                budget,
                seed,
                black_wins,
            )
        )
    if level == "white" and not result.curve:
        result.curve = _curve(acc, xt, yt, clean, norm, eps, bounds, constraints, budget, seed)
    if level != "label" and not result.curve:
        result.curve = _curve_square(
            acc, xt, yt, clean, norm, eps, bounds, constraints, budget, seed
        )
    # the main eps point of the curve is the ensemble's figure
    result.robust_accuracy = float(robust.float().mean())
    result.curve = [
        (e, min(r, result.robust_accuracy) if abs(e - eps) < 1e-12 else r) for e, r in result.curve
    ]
    result.curve = _monotone(result.curve)
    if level == "white" and budget.clever_points > 0:
        pts = clean.nonzero()[:, 0][: budget.clever_points]
        if len(pts):
            scores = clever(
                acc,
                xt[pts],
                yt[pts],
                norm=norm,
                radius=max(eps, 1e-6) * 2 if eps > 0 else 1.0,
                n_batches=budget.clever_batches,
                batch_size=budget.clever_batch_size,
                bounds=bounds,
                seed=seed,
            )
            result.clever = {"points": int(len(pts)), **distribution(scores)}
    result.clean_correct = clean.numpy()
    result.robust = robust.numpy()
    result.x_adv = x_adv.numpy()
    result.adv_pred = adv_pred.numpy()
    result.seconds = round(time.perf_counter() - start, 3)
    return result


def _verify(
    acc: ModelAccess,
    x: torch.Tensor,
    x_adv: torch.Tensor,
    y: torch.Tensor,
    norm: str,
    eps: float,
    bounds: tuple[float, float],
    draws: int = 1,
) -> torch.Tensor:
    """Re-check claimed successes: inside the ball and bounds, and misclassified.

    ``draws > 1`` (randomised targets): misclassified in more than half of ``draws``
    predictions."""
    if len(x) == 0:
        return torch.zeros(0, dtype=torch.bool)
    inside = flat_norm(x_adv - x, norm) <= eps * (1 + 1e-5) + 1e-6
    lo, hi = bounds
    flat = x_adv.flatten(1)
    inside &= (flat >= lo - 1e-6).all(1) & (flat <= hi + 1e-6).all(1)
    moved = flat_norm(x_adv - x, "linf") > 0
    ok = inside & moved
    if not bool(ok.any()):
        return ok
    rows = ok.nonzero()[:, 0]
    wrong = torch.zeros(len(rows))
    for _ in range(draws):
        wrong += (acc.labels(x_adv[rows]) != y[rows]).float()
    ok[rows] = wrong > draws / 2
    return ok


def _queries_summary(result: EvaluationResult, attack: Attack, name: str) -> None:
    q = attack.last.queries[attack.last.success].numpy()
    result.queries_per_success = {"attack": name, **distribution(q)}


def _curve(acc, xt, yt, clean, norm, eps, bounds, constraints, budget, seed):  # type: ignore[no-untyped-def]
    """Robust accuracy at multiples of eps: APGD-CE then APGD-DLR, ``curve_steps`` each."""
    out = []
    n = len(xt)
    for m in budget.curve_points:
        e = eps * m
        robust = clean.clone()
        if e > 0:
            for loss in ("ce", "dlr"):
                idx = robust.nonzero()[:, 0]
                if len(idx) == 0:
                    break
                a = APGD(
                    norm=norm,
                    eps=e,
                    steps=budget.curve_steps,
                    loss=loss,
                    bounds=bounds,
                    constraints=constraints,
                    seed=seed,
                )
                adv = torch.as_tensor(a.generate(acc.target, xt[idx], yt[idx]))
                robust[idx[_verify(acc, xt[idx], adv, yt[idx], norm, e, bounds)]] = False
        out.append((round(e, 6), float(robust.sum()) / n))
    return out


def _curve_square(acc, xt, yt, clean, norm, eps, bounds, constraints, budget, seed):  # type: ignore[no-untyped-def]
    """Robust accuracy at multiples of eps with Square (score-only access)."""
    out = []
    n = len(xt)
    q = max(budget.square_queries // 10, 50)
    for m in budget.curve_points:
        e = eps * m
        robust = clean.clone()
        idx = robust.nonzero()[:, 0]
        if e > 0 and len(idx):
            a = Square(
                norm=norm, eps=e, n_queries=q, bounds=bounds, constraints=constraints, seed=seed
            )
            adv = torch.as_tensor(a.generate(acc.target, xt[idx], yt[idx]))
            robust[idx[_verify(acc, xt[idx], adv, yt[idx], norm, e, bounds)]] = False
        out.append((round(e, 6), float(robust.sum()) / n))
    return out


def _monotone(curve: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """A larger eps can only break more points: carry the minimum forward."""
    out = []
    low = 1.0
    for e, r in sorted(curve):
        low = min(low, r)
        out.append((e, low))
    return out


def _sanity_checks(  # type: ignore[no-untyped-def]
    acc,
    xt,
    yt,
    clean,
    robust,
    x_adv,
    adv_pred,
    level,
    norm,
    eps,
    bounds,
    constraints,
    budget,
    seed,
    black_wins,
) -> list[Check]:
    checks: list[Check] = []
    n = len(xt)
    probe = xt[: min(16, n)]
    # randomised outputs
    if level != "label":
        a, b = acc.scores(probe), acc.scores(probe)
        diff = float((a - b).abs().max())
        checks.append(
            Check(
                "randomized_outputs",
                diff > 1e-5,
                f"the same inputs gave scores differing by up to {diff:.3g}"
                if diff > 1e-5
                else "repeated queries give identical scores",
                {"max_score_difference": diff},
            )
        )
        probs = is_close_to_probabilities(a.numpy()) or acc.target.output == "probabilities"
        checks.append(
            Check(
                "probability_outputs",
                bool(probs),
                "the model outputs probabilities, not logits: saturated softmax hides gradients "
                "from cross-entropy attacks (the DLR and margin losses used here are not affected)"
                if probs
                else "the model outputs logits",
                {"output": acc.target.output},
            )
        )
    if level == "white":
        idx = clean.nonzero()[:, 0][:64]
        if len(idx):
            _, grad, _ = acc.loss_grad(xt[idx], lambda z, t: ce_loss(z, t), yt[idx])
            gn = flat_norm(grad, "l2")
            zero = float((gn < 1e-10).float().mean())
            nan = bool(torch.isnan(gn).any())
            checks.append(
                Check(
                    "vanishing_gradients",
                    zero > 0.1 or nan,
                    f"{zero:.0%} of correctly classified inputs have a zero loss gradient"
                    + (" (NaN gradients seen)" if nan else ""),
                    {
                        "zero_gradient_fraction": zero,
                        "median_gradient_norm": float(gn.median()),
                        "nan": nan,
                    },
                )
            )
        flag = black_wins >= max(2, math.ceil(0.005 * n))
        checks.append(
            Check(
                "black_box_beats_white_box",
                flag,
                f"Square (black-box) broke {black_wins} inputs that every gradient attack missed"
                if black_wins
                else "no input was broken by the black-box attack alone",
                {"inputs_broken_only_by_black_box": black_wins},
            )
        )
        # non-convergence: double APGD's iterations on the still-robust inputs
        idx = robust.nonzero()[:, 0][: budget.convergence_points]
        newly = 0
        if len(idx) and eps > 0:
            a = APGD(
                norm=norm,
                eps=eps,
                steps=2 * budget.apgd_steps,
                loss="ce",
                bounds=bounds,
                constraints=constraints,
                seed=seed + 1,
            )
            adv = torch.as_tensor(a.generate(acc.target, xt[idx], yt[idx]))
            ok = _verify(acc, xt[idx], adv, yt[idx], norm, eps, bounds)
            newly = int(ok.sum())
            rows = idx[ok]
            x_adv[rows] = adv[ok]
            if len(rows):
                adv_pred[rows] = acc.labels(adv[ok])
            robust[rows] = False
        checks.append(
            Check(
                "non_convergence",
                newly > 0,
                f"doubling APGD's iterations ({2 * budget.apgd_steps}) broke {newly} more of "
                f"{len(idx)} inputs the ensemble left robust"
                if newly
                else f"doubling APGD's iterations broke none of {len(idx)} robust inputs",
                {"checked": int(len(idx)), "newly_broken": newly, "steps": 2 * budget.apgd_steps},
            )
        )
        # large eps must break everything
        checks.append(large_eps_check(acc, xt, yt, clean, norm, bounds, constraints, budget, seed))
    return checks


def large_eps_check(
    acc: ModelAccess,
    xt: torch.Tensor,
    yt: torch.Tensor,
    clean: torch.Tensor,
    norm: str,
    bounds: tuple[float, float],
    constraints: Constraints | None,
    budget: Budget,
    seed: int,
) -> Check:
    """APGD-CE at eps = half the value range (Linf; the same per-pixel change in L2) must
    break every input; if not, the gradients are probably masked (Carlini et al. 2019,
    "On Evaluating Adversarial Robustness", arXiv:1902.06705, section 4.2).

    A randomised target (EOT) is attacked without early stopping, since one lucky draw
    proves nothing, and success is judged by the majority of ``max(eot_samples, 9)``
    predictions, the same expectation the EOT gradients optimise; otherwise a random
    defence that the attack really defeats could be flagged by chance.
    """
    lo, hi = bounds
    big = (hi - lo) / 2 if norm == "linf" else (hi - lo) / 2 * math.sqrt(xt[0].numel())
    idx = clean.nonzero()[:, 0][: budget.large_eps_points]
    draws = max(acc.eot_samples, 9) if acc.randomized else 1
    a = APGD(
        norm=norm,
        eps=big,
        steps=budget.apgd_steps,
        loss="ce",
        bounds=bounds,
        constraints=constraints,
        early_stop=draws == 1,
        seed=seed,
    )
    rate = 1.0
    if len(idx):
        adv = torch.as_tensor(a.generate(acc.target, xt[idx], yt[idx]))
        ok = _verify(acc, xt[idx], adv, yt[idx], norm, big, bounds, draws=draws)
        rate = float(ok.float().mean())
    flag = rate < 1.0 and constraints is None
    judged = f"the majority of {draws} predictions (EOT)" if draws > 1 else "one prediction"
    return Check(
        "large_eps_success",
        flag,
        f"at eps={big:.3g} (half the value range) APGD broke only {rate:.0%} of inputs, "
        f"judged by {judged}; an unbounded attack should break all"
        if flag
        else f"at eps={big:.3g} APGD broke {rate:.0%} of inputs, judged by {judged}",
        {"eps": big, "success_rate": rate, "checked": int(len(idx)), "predictions": draws},
    )
