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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from mlwarden.core.errors import UserError
from mlwarden.core.intervals import proportion_ci
from mlwarden.core.target import QueryBudgetExceeded, is_close_to_probabilities
from mlwarden.evasion.attacks.apgd import APGD
from mlwarden.evasion.attacks.base import (
    DEFAULT_EOT,
    Attack,
    Constraints,
    ModelAccess,
    ce_loss,
    flat_norm,
    mark_randomized,
    snr_radius,
    to_tensor,
    verify_draws,
    vote_counts,
    vote_labels,
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
    def fast(cls) -> Budget:
        """The command line's default: APGD-CE (100 steps) and APGD-T on the 3 most
        likely other classes, then Square (1,000 queries) for gradient masking; FAB-T and
        CLEVER are left out, DeepFool, the curve and the checks are shortened. Croce &
        Hein (arXiv:2003.01690, table 2) found APGD-CE + APGD-T within a few tenths of
        a percent of the full ensemble on most models; still, a lower bound on attack
        strength: the robust accuracy it reports can only fall under ``standard``."""
        return cls(
            apgd_steps=100,
            target_classes=3,
            fab_steps=0,
            deepfool_steps=20,
            square_queries=1000,
            hsj_queries=1000,
            curve_steps=20,
            curve_points=(0.5, 1.0, 2.0),
            convergence_points=25,
            large_eps_points=16,
            clever_points=0,
            name="fast",
        )

    @classmethod
    def named(cls, name: str) -> Budget:
        """``"fast"``, ``"standard"`` or ``"quick"``, with one line for anything else."""
        makers = {"fast": cls.fast, "standard": cls.standard, "quick": cls.quick}
        if name not in makers:
            raise UserError(f"budget must be fast, standard or quick; got {name!r}")
        return makers[name]()

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
    #: why the stage did not run on its points ("" when it did)
    skipped: str = ""


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
    #: audio: the SNR budget in dB; ``eps`` is then the relative L2 radius 10^(-snr_db/20)
    snr_db: float | None = None
    seconds: float = 0.0
    #: predictions per verdict on a randomised target (plurality vote), else 1
    verification_draws: int = 1
    #: inputs counted robust only because the query budget stopped the attacks on them
    budget_exhausted: int = 0
    robust_accuracy_is_upper_bound: bool = False
    #: robust accuracy counting only inputs every stage attacked to the end
    verified_robust_lower_bound: float = 0.0
    #: exact (Clopper-Pearson) 95% intervals; the robust one spans the verified floor
    #: to the upper bound when inputs were left unresolved
    clean_accuracy_ci: tuple[float, float] = (0.0, 1.0)
    robust_accuracy_ci: tuple[float, float] = (0.0, 1.0)
    gradient_calls: dict[str, int] = field(default_factory=dict)
    #: ONNX models: whether the graph converted to torch and answered like onnxruntime
    onnx_white_box: dict[str, Any] | None = None
    #: tabular data: the relative budget and the constraints (evasion.tabular.build_space)
    tabular: dict[str, Any] | None = None
    #: per input: correct on clean data / robust after every stage / the adversarial input
    clean_correct: np.ndarray = field(default_factory=lambda: np.zeros(0, bool), repr=False)
    robust: np.ndarray = field(default_factory=lambda: np.zeros(0, bool), repr=False)
    unresolved: np.ndarray = field(default_factory=lambda: np.zeros(0, bool), repr=False)
    x_adv: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32), repr=False)
    adv_pred: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)

    def flagged(self) -> list[Check]:
        return [c for c in self.checks if c.flagged]

    def to_dict(self) -> dict[str, Any]:
        out = {
            k: v
            for k, v in asdict(self).items()
            if k not in ("clean_correct", "robust", "unresolved", "x_adv", "adv_pred")
        }
        out["curve"] = [{"eps": e, "robust_accuracy": r} for e, r in self.curve]
        return out


def _reason(exc: BaseException) -> str:
    """One line saying why a model refused a batch (TorchScript puts it on the last line)."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    return lines[-1] if "TorchScript interpreter" in lines[0] else lines[0]


#: Calls on the same inputs that decide whether a target is randomised.
PROBE_CALLS = 4


@dataclass
class _Run:
    """The state one :func:`evaluate` call shares between its stages."""

    acc: ModelAccess
    xt: torch.Tensor
    yt: torch.Tensor
    norm: str
    eps: float
    bounds: tuple[float, float]
    draws: int
    robust: torch.Tensor
    x_adv: torch.Tensor
    adv_pred: torch.Tensor
    #: still counted robust, but an attack stopped on the query budget before it was done
    unresolved: torch.Tensor
    spent: bool = False
    grad_calls: int = 0
    gradless_calls: int = 0
    #: tabular constraints every claimed success is re-checked against
    constraints: Constraints | None = None
    #: the terminal's progress display (core.console.Stages), or None
    progress: Any = None

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Show ``name`` as the running phase; count its weight when it ends."""
        if self.progress is not None:
            self.progress.start(name)
        try:
            yield
        finally:
            if self.progress is not None:
                self.progress.done(name)

    def note(self, attack: Attack) -> None:
        self.grad_calls += attack.last.grad_calls
        self.gradless_calls += attack.last.gradless_calls
        self.spent |= attack.last.budget_exhausted

    def attack(self, attack: Attack, idx: torch.Tensor) -> int:
        """Run ``attack`` on the inputs ``idx``, keep the verified successes; how many."""
        if self.spent:  # the budget is gone: these points were never attacked by this stage
            self.unresolved[idx] = True
            return 0
        x, y = self.xt[idx], self.yt[idx]
        out = torch.as_tensor(attack.generate(self.acc.target, x, y))
        self.note(attack)
        ok = self.verify(x, out, y, attack)
        self.unresolved[idx[~ok & attack.last.exhausted]] = True
        return self.keep(idx, out, ok)

    def verify(
        self, x: torch.Tensor, out: torch.Tensor, y: torch.Tensor, attack: Attack | None = None
    ) -> torch.Tensor:
        """:func:`_verify` with this run's draws; when the budget runs out during the
        re-check, a deterministic target's success as the attack itself observed it on
        the model is kept, a randomised target's is not (one draw proves nothing)."""
        try:
            return _verify(
                self.acc, x, out, y, self.norm, self.eps, self.bounds, self.draws,
                constraints=self.constraints,
            )  # fmt: skip
        except QueryBudgetExceeded:
            self.spent = True
            seen = attack.last.success.clone() if attack is not None else torch.zeros(len(x))
            if self.draws > 1 or len(seen) != len(x):
                seen = torch.zeros(len(x), dtype=torch.bool)
            inside = _inside(x, out, self.norm, self.eps, self.bounds, self.constraints)
            return inside & seen.bool()

    def keep(self, idx: torch.Tensor, out: torch.Tensor, ok: torch.Tensor) -> int:
        rows = idx[ok]
        self.x_adv[rows] = out[ok]
        if len(rows):
            try:
                self.adv_pred[rows] = vote_labels(self.acc, out[ok], self.draws)
            except QueryBudgetExceeded:
                self.spent = True
                self.adv_pred[rows] = -1  # broken, but the budget left no query to name the class
        self.robust[rows] = False
        self.unresolved[rows] = False
        return int(ok.sum())


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
    snr_db: float | None = None,
    progress: Any = None,
) -> EvaluationResult:
    """Robust accuracy of ``model`` on ``(x, y)`` within the ``norm`` ball of radius ``eps``.

    ``model``: a ``torch.nn.Module`` or a Target (a DefendedTarget is attacked with
    BPDA/EOT). ``bounds``: the valid input range (default ``(0, 1)``, widened to the data
    when it lies outside). ``access`` lowers the access used (``"score"`` or ``"label"``
    to measure what an API user could do). ``budget``: :meth:`Budget.standard` (default,
    AutoAttack settings) or :meth:`Budget.quick`. ``snr_db`` (audio) replaces ``eps``:
    each clip keeps a signal-to-perturbation ratio of at least ``snr_db`` dB (an L2
    ball of radius ``||x|| / 10^(snr_db/20)`` per clip); ``eps`` in the result is then
    that relative radius ``10^(-snr_db/20)``. ``progress``: a factory
    ``weights -> core.console.Stages`` showing the phases on a terminal (see
    :func:`phase_weights`).

    A target that answers the same input differently is treated as randomised: attacks
    use EOT and every prediction (clean and adversarial) is the plurality vote of
    ``verification_draws`` draws. When the target's ``max_queries`` stops an attack,
    the points it had not broken are counted in ``budget_exhausted`` and the robust
    accuracy is only an upper bound.
    """
    start = time.perf_counter()
    budget = budget or Budget.standard()
    xt, yt, bounds = _check_args(x, y, norm, eps, bounds)
    if snr_db is not None:
        if not math.isfinite(snr_db):
            raise UserError(f"snr_db must be a finite number of dB; got {snr_db}")
        # inside the suite the SNR ball is the pseudo-norm "snr": L2, radius eps * ||x||
        norm, eps = "snr", 10.0 ** (-snr_db / 20.0)
    acc = ModelAccess(model)
    level = _access_level(acc, access)
    common: dict[str, Any] = {
        **_ball(norm, eps),
        "bounds": bounds,
        "constraints": constraints,
        "seed": seed,
    }
    randomness = _probe_randomness(acc, xt, level)
    draws = verify_draws(acc)
    common["early_stop"] = draws == 1
    pred = _clean_predictions(acc, xt, yt, draws)
    clean = pred == yt
    n = len(xt)
    run = _Run(
        acc, xt, yt, norm, float(eps), bounds, draws, clean.clone(), xt.clone(), pred.clone(),
        torch.zeros(n, dtype=torch.bool), constraints=constraints,
        progress=progress(phase_weights(budget, level, n)) if progress else None,
    )  # fmt: skip
    result = EvaluationResult(
        clean_accuracy=float(clean.float().mean()),
        robust_accuracy=float(clean.float().mean()),
        norm="l2" if norm == "snr" else norm,
        eps=float(eps),
        snr_db=snr_db,
        n=n,
        access=level,
        budget=budget.name,
        verification_draws=draws,
    )
    defended = getattr(acc.target, "transform", None)
    if defended is not None:
        result.defended = {
            "chain": defended.describe(),
            "bpda": not defended.differentiable,
            "eot_samples": int(getattr(acc.target, "eot_samples", 1)),
        }

    def run_stage(name: str, attack: Attack) -> Attack:
        idx = run.robust.nonzero()[:, 0]
        t0, q0 = time.perf_counter(), acc.queries
        skipped = run.spent
        with run.phase(name):
            broken = run.attack(attack, idx) if len(idx) and eps > 0 else 0
        result.stages.append(
            Stage(
                name=name,
                atlas=attack.atlas,
                attacked=0 if skipped else int(len(idx)),
                broken=broken,
                robust_accuracy_after=float(run.robust.float().mean()),
                seconds=round(time.perf_counter() - t0, 3),
                queries=acc.queries - q0,
                skipped="query budget spent" if skipped and len(idx) else "",
            )
        )
        return attack

    if level == "white":
        black_wins = _white_box_stages(run, run_stage, result, budget, common, clean)
    elif level == "score":
        sq = run_stage("square", Square(n_queries=budget.square_queries, **common))
        _queries_summary(result, sq, "square")
        black_wins = 0
    else:
        _label_stage(run, result, budget, common, clean)
        black_wins = 0

    if checks:
        result.checks.append(randomness)
        with run.phase("sanity checks"):
            result.checks.extend(
                _sanity_checks(run, clean, level, constraints, budget, seed, black_wins)
            )
    with run.phase("curve"):
        _finish(run, result, clean, level, constraints, budget, seed)
    result.seconds = round(time.perf_counter() - start, 3)
    return result


def phase_weights(budget: Budget, level: str, n: int) -> dict[str, float]:
    """Expected cost of each phase of :func:`evaluate`, in model calls per input (a
    gradient step counts 3, a forward pass 1), for the time-left estimate only."""
    if level == "label":
        return {"hopskipjump": float(budget.hsj_queries)}
    curve = len(budget.curve_points) * budget.curve_steps * (6 if level == "white" else 0.3)
    checks = 2 * budget.apgd_steps * 3 * min(budget.convergence_points, n) / max(n, 1)
    checks += budget.apgd_steps * 3 * min(budget.large_eps_points, n) / max(n, 1)
    square = budget.square_queries / 4.0  # most inputs fall to earlier stages or early
    if level == "score":
        return {"square": square * 4, "sanity checks": 1.0, "curve": curve}
    return {
        "apgd-ce": 3.0 * budget.apgd_steps,
        "apgd-t": 3.0 * budget.apgd_steps * budget.target_classes / 2,
        "fab-t": 4.0 * budget.fab_steps * budget.target_classes / 2,
        "deepfool": 3.0 * budget.deepfool_steps,
        "square": square,
        "sanity checks": checks,
        "curve": curve,
    }


def _check_args(
    x: Any, y: Any, norm: str, eps: float, bounds: tuple[float, float] | None
) -> tuple[torch.Tensor, torch.Tensor, tuple[float, float]]:
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
    return xt, yt, bounds


def _access_level(acc: ModelAccess, access: str | None) -> str:
    level = access or acc.target.access
    rank = {"label": 0, "score": 1, "white": 2}
    if level not in rank:
        raise UserError(f"access must be white, score or label; got {level!r}")
    if rank[level] > rank[acc.target.access]:
        raise UserError(
            f"{acc.target.name} offers {acc.target.access} access; cannot evaluate with {level}"
        )
    acc.access = level
    return level


def _probe_randomness(acc: ModelAccess, xt: torch.Tensor, level: str) -> Check:
    """Ask the same inputs :data:`PROBE_CALLS` times: differing answers make the target
    randomised for the rest of the evaluation (EOT attacks, majority-vote verification).

    Several calls, not two: a model that is random on a fifth of its calls answers two
    calls alike 68% of the time, four calls alike 41% of the time."""
    probe = xt[: min(16, len(xt))]
    ask = (lambda: acc.labels(probe).float()) if level == "label" else (lambda: acc.scores(probe))
    try:
        answers = [ask() for _ in range(PROBE_CALLS)]
    except UserError:
        raise
    except QueryBudgetExceeded:
        return Check("randomized_outputs", False, "not probed: the query budget is spent")
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        raise UserError(
            f"{acc.target.name} cannot take inputs of shape {tuple(xt.shape[1:])}: "
            f"{_reason(exc)}; give data shaped the way the model was trained"
        ) from exc
    a = answers[0]
    diff = max(float((a - b).abs().max()) if a.shape == b.shape else math.inf for b in answers[1:])
    random = diff > 1e-5
    if random and not acc.randomized:
        mark_randomized(acc.target)
        acc.randomized, acc.eot_samples = True, max(acc.eot_samples, DEFAULT_EOT)
    draws = verify_draws(acc)
    return Check(
        "randomized_outputs",
        random,
        f"the same inputs gave {'labels' if level == 'label' else 'scores'} differing by up to "
        f"{diff:.3g}: attacks used EOT ({acc.eot_samples} draws per gradient) and every "
        f"prediction counted is the majority of {draws} draws"
        if random
        else "repeated queries give identical answers",
        {"max_score_difference": diff, "verification_draws": draws, "eot_samples": acc.eot_samples},
    )


def _clean_predictions(
    acc: ModelAccess, xt: torch.Tensor, yt: torch.Tensor, draws: int
) -> torch.Tensor:
    try:
        pred = vote_labels(acc, xt, draws)
    except UserError:
        raise
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        raise UserError(
            f"{acc.target.name} cannot take inputs of shape {tuple(xt.shape[1:])}: "
            f"{_reason(exc)}; give data shaped the way the model was trained"
        ) from exc
    classes = acc.target.num_classes
    if classes and (int(yt.min()) < 0 or int(yt.max()) >= classes):
        raise UserError(
            f"labels run from {int(yt.min())} to {int(yt.max())} but {acc.target.name} "
            f"has {classes} classes (0..{classes - 1}); is this the model's data?"
        )
    return pred


def _white_box_stages(  # type: ignore[no-untyped-def]
    run: _Run, run_stage, result: EvaluationResult, budget: Budget, common, clean
) -> int:
    """AutoAttack's four stages plus DeepFool's minimal perturbations; Square's extra wins."""
    run_stage("apgd-ce", APGD(steps=budget.apgd_steps, loss="ce", **common))
    targeted: dict[str, Any] = {"targeted": True, "n_target_classes": budget.target_classes}
    run_stage("apgd-t", APGD(steps=budget.apgd_steps, loss="dlr", **targeted, **common))
    # under an SNR ball FAB searches the minimal perturbation; _verify keeps what lies
    # inside each clip's ball
    fab_kw = common | {"eps": None, "snr_db": None} if run.norm == "snr" else common
    if budget.fab_steps > 0:
        run_stage("fab-t", FAB(steps=budget.fab_steps, **targeted, **fab_kw))
    else:
        result.stages.append(
            Stage("fab-t", FAB.atlas, 0, 0, float(run.robust.float().mean()), 0.0, 0,
                  skipped=f"not in the {budget.name} budget")
        )  # fmt: skip
    # the distribution of minimal perturbations (not a stage: no eps involved)
    df_idx = clean.nonzero()[:, 0]
    with run.phase("deepfool"):
        _deepfool(run, result, budget, common, df_idx)
    white_robust = run.robust.clone()
    sq = run_stage("square", Square(n_queries=budget.square_queries, **common))
    _queries_summary(result, sq, "square")
    return int((white_robust & ~run.robust).sum())


def _deepfool(  # type: ignore[no-untyped-def]
    run: _Run, result: EvaluationResult, budget: Budget, common, df_idx: torch.Tensor
) -> None:
    """DeepFool's minimal perturbations on the correctly classified inputs."""
    if len(df_idx) and not run.spent:
        df = DeepFool(
            norm=_plain(run.norm),
            eps=None,
            steps=budget.deepfool_steps,
            bounds=run.bounds,
            constraints=common["constraints"],
            seed=common["seed"],
        )
        df.generate(run.acc.target, run.xt[df_idx], run.yt[df_idx])
        run.note(df)
        min_norms = np.full(len(run.xt), np.nan)
        ok = df.last.success & ~df.last.exhausted
        sizes = _relative(df.last.norms, run.xt[df_idx], run.norm)
        min_norms[df_idx[ok].numpy()] = sizes[ok].numpy()
        result.min_perturbation = {"attack": "deepfool", **distribution(min_norms)}
        result.min_perturbation["values"] = [
            round(float(v), 5) for v in min_norms[np.isfinite(min_norms)]
        ]


def _label_stage(  # type: ignore[no-untyped-def]
    run: _Run, result: EvaluationResult, budget: Budget, common, clean
) -> None:
    """HopSkipJump's minimal perturbations, projected onto the eps-ball and verified."""
    xt, yt, acc, n = run.xt, run.yt, run.acc, len(run.xt)
    idx = clean.nonzero()[:, 0]
    hsj = HopSkipJump(
        norm=_plain(run.norm),
        eps=None,
        max_queries=budget.hsj_queries,
        bounds=run.bounds,
        constraints=common["constraints"],
        seed=common["seed"],
    )
    t0, q0 = time.perf_counter(), acc.queries
    broken = 0
    if len(idx):
        with run.phase("hopskipjump"):
            out = torch.as_tensor(hsj.generate(acc.target, xt[idx], yt[idx]))
        run.note(hsj)
        norms = np.full(n, np.nan)
        found = hsj.last.success
        norms[idx[found].numpy()] = _relative(hsj.last.norms, xt[idx], run.norm)[found].numpy()
        result.min_perturbation = {"attack": "hopskipjump", **distribution(norms)}
        cons = common["constraints"]
        cand = Attack(**_ball(run.norm, run.eps), bounds=run.bounds, constraints=cons)
        cand._cons = cons.tensors(tuple(xt.shape[1:])) if cons else {}
        proj = cand.project(out, xt[idx])
        ver = run.verify(xt[idx], proj, yt[idx], hsj) & found
        run.unresolved[idx[~ver & hsj.last.exhausted]] = True
        broken = run.keep(idx, proj, ver)
        _queries_summary(result, hsj, "hopskipjump")
        # label-only curve from the minimal distances (none when the budget cut the search)
        if not run.spent:
            finite = np.where(np.isfinite(norms), norms, np.inf)
            result.curve = [
                (round(run.eps * m, 6), float(((finite > run.eps * m) & clean.numpy()).mean()))
                for m in budget.curve_points
            ]
    result.stages.append(
        Stage(
            "hopskipjump",
            hsj.atlas,
            int(len(idx)),
            broken,
            float(run.robust.float().mean()),
            round(time.perf_counter() - t0, 3),
            acc.queries - q0,
        )
    )


def _finish(  # type: ignore[no-untyped-def]
    run: _Run, result: EvaluationResult, clean, level, constraints, budget: Budget, seed: int
) -> None:
    """Curve, CLEVER, the budget and gradient bookkeeping, intervals, per-input arrays."""
    acc, xt, yt, norm, eps, bounds = run.acc, run.xt, run.yt, run.norm, run.eps, run.bounds
    try:
        if not run.spent and level == "white" and not result.curve:
            result.curve = _curve(acc, xt, yt, clean, norm, eps, bounds, constraints, budget, seed)
        if not run.spent and level != "label" and not result.curve:
            result.curve = _curve_square(
                acc, xt, yt, clean, norm, eps, bounds, constraints, budget, seed
            )
    except QueryBudgetExceeded:
        run.spent, result.curve = True, []
    run.unresolved &= run.robust
    robust = run.robust
    n = len(xt)
    # the main eps point of the curve is the ensemble's figure
    result.robust_accuracy = float(robust.float().mean())
    result.curve = [
        (e, min(r, result.robust_accuracy) if abs(e - eps) < 1e-12 else r) for e, r in result.curve
    ]
    result.curve = _monotone(result.curve)
    if not run.spent and level == "white" and budget.clever_points > 0:
        pts = clean.nonzero()[:, 0][: budget.clever_points]
        if len(pts):
            try:
                scores = clever(
                    acc,
                    xt[pts],
                    yt[pts],
                    norm=_plain(norm),
                    radius=_clever_radius(xt[pts], norm, eps),
                    n_batches=budget.clever_batches,
                    batch_size=budget.clever_batch_size,
                    bounds=bounds,
                    seed=seed,
                )
                result.clever = {"points": int(len(pts)), **distribution(scores)}
            except QueryBudgetExceeded:
                run.spent = True
    unresolved = int(run.unresolved.sum())
    result.budget_exhausted = unresolved
    result.robust_accuracy_is_upper_bound = unresolved > 0
    result.verified_robust_lower_bound = float((robust & ~run.unresolved).float().mean())
    k_clean, k_robust = int(clean.sum()), int(robust.sum())
    result.clean_accuracy_ci = proportion_ci(k_clean, n)
    # with unresolved points the interval spans the verified floor to the upper bound
    lo, _ = proportion_ci(k_robust - unresolved, n)
    _, hi = proportion_ci(k_robust, n)
    result.robust_accuracy_ci = (lo, hi)
    result.gradient_calls = {
        "total": run.grad_calls + acc.grad_calls,
        "without_gradient": run.gradless_calls + acc.gradless_calls,
    }
    result.checks.extend(_budget_checks(run, result))
    result.clean_correct = clean.numpy()
    result.robust = robust.numpy()
    result.unresolved = run.unresolved.numpy()
    result.x_adv = run.x_adv.numpy()
    result.adv_pred = run.adv_pred.numpy()


def _budget_checks(run: _Run, result: EvaluationResult) -> list[Check]:
    """The query budget and gradient-free calls, as checks the report turns into findings."""
    out = []
    k = result.budget_exhausted
    limit = run.acc.target.max_queries
    out.append(
        Check(
            "budget_exhausted",
            k > 0,
            f"the query budget ({limit} queries) ran out before {k} of {result.n} inputs were "
            f"fully attacked: robust accuracy {result.robust_accuracy:.1%} is an upper bound; "
            f"verified robust at least {result.verified_robust_lower_bound:.1%}"
            if k
            else "no attack was stopped by a query budget",
            {
                "inputs_not_fully_attacked": k,
                "max_queries": limit,
                "queries_used": run.acc.queries,
                "robust_accuracy_upper_bound": result.robust_accuracy,
                "robust_accuracy_lower_bound": result.verified_robust_lower_bound,
            },
        )
    )
    g, total = run.gradless_calls + run.acc.gradless_calls, run.grad_calls + run.acc.grad_calls
    out.append(
        Check(
            "gradient_free_outputs",
            g > 0,
            f"{g} of {total} gradient calls returned outputs without a gradient path to the "
            "input (counted as zero gradients): the model's forward pass is partly "
            "non-differentiable or randomised, so gradient attacks are weakened there"
            if g
            else "every gradient call had a gradient path",
            {"gradient_calls": total, "without_gradient": g},
        )
    )
    return out


def _inside(
    x: torch.Tensor,
    x_adv: torch.Tensor,
    norm: str,
    eps: float,
    bounds: tuple[float, float],
    constraints: Constraints | None = None,
) -> torch.Tensor:
    """Moved, inside the eps-ball (with float slack), inside the bounds, and keeping the
    tabular constraints."""
    if len(x) == 0:
        return torch.zeros(0, dtype=torch.bool)
    if norm == "snr":
        inside = flat_norm(x_adv - x, "l2") <= flat_norm(x, "l2") * eps * (1 + 1e-5) + 1e-7
    else:
        inside = flat_norm(x_adv - x, norm) <= eps * (1 + 1e-5) + 1e-6
    lo, hi = bounds
    flat = x_adv.flatten(1)
    inside &= (flat >= lo - 1e-6).all(1) & (flat <= hi + 1e-6).all(1)
    if constraints is not None:
        inside &= constraints.satisfied(x, x_adv)
    return inside & (flat_norm(x_adv - x, "linf") > 0)


def _verify(
    acc: ModelAccess,
    x: torch.Tensor,
    x_adv: torch.Tensor,
    y: torch.Tensor,
    norm: str,
    eps: float,
    bounds: tuple[float, float],
    draws: int = 1,
    *,
    constraints: Constraints | None = None,
) -> torch.Tensor:
    """Re-check claimed successes: inside the ball, bounds and constraints, and misclassified.

    ``draws > 1`` (randomised targets): the true class must lose the vote of ``draws``
    predictions — another class predicted strictly more often than it (a tie is not a
    success: one lucky draw proves nothing)."""
    ok = _inside(x, x_adv, norm, eps, bounds, constraints)
    if not bool(ok.any()):
        return ok
    rows = ok.nonzero()[:, 0]
    if draws <= 1:
        ok[rows] = acc.labels(x_adv[rows]) != y[rows]
        return ok
    counts = vote_counts(acc, x_adv[rows], draws)
    yr = y[rows]
    if int(yr.max()) >= counts.shape[1]:
        counts = torch.cat([counts, torch.zeros(len(rows), int(yr.max()) + 1 - counts.shape[1])], 1)
    true = counts.gather(1, yr[:, None])[:, 0]
    other = counts.scatter(1, yr[:, None], -1.0)
    ok[rows] = other.max(1).values > true
    return ok


def _ball(norm: str, eps: float) -> dict[str, Any]:
    """Attack keywords for the suite's norm; ``"snr"`` is an L2 ball of relative radius
    ``eps`` per clip, i.e. an SNR of ``-20 log10(eps)`` dB."""
    if norm == "snr":
        return {"norm": "l2", "eps": eps, "snr_db": -20.0 * math.log10(max(eps, 1e-12))}
    return {"norm": norm, "eps": eps}


def _plain(norm: str) -> str:
    """The attack norm behind the suite's norm (the SNR ball is an L2 ball)."""
    return "l2" if norm == "snr" else norm


def _relative(norms: torch.Tensor, x: torch.Tensor, norm: str) -> torch.Tensor:
    """Perturbation sizes in the suite's units (relative to each clip's norm for SNR)."""
    return norms / flat_norm(x, "l2").clamp_min(1e-12) if norm == "snr" else norms


def _clever_radius(x: torch.Tensor, norm: str, eps: float) -> float:
    if norm == "snr":
        return max(float(snr_radius(x, -20 * math.log10(max(eps, 1e-12))).median()) * 2, 1e-6)
    return max(eps, 1e-6) * 2 if eps > 0 else 1.0


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
                    **_ball(norm, e),
                    steps=budget.curve_steps,
                    loss=loss,
                    bounds=bounds,
                    constraints=constraints,
                    seed=seed,
                )
                adv = torch.as_tensor(a.generate(acc.target, xt[idx], yt[idx]))
                robust[
                    idx[
                        _verify(
                            acc,
                            xt[idx],
                            adv,
                            yt[idx],
                            norm,
                            e,
                            bounds,
                            verify_draws(acc),
                            constraints=constraints,
                        )
                    ]  # fmt: skip
                ] = False
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
                **_ball(norm, e),
                n_queries=q,
                bounds=bounds,
                constraints=constraints,
                seed=seed,
            )
            adv = torch.as_tensor(a.generate(acc.target, xt[idx], yt[idx]))
            ok = _verify(
                acc, xt[idx], adv, yt[idx], norm, e, bounds, verify_draws(acc),
                constraints=constraints,
            )  # fmt: skip
            robust[idx[ok]] = False
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
    run: _Run, clean, level, constraints, budget: Budget, seed: int, black_wins: int
) -> list[Check]:
    """The checks on the evaluation itself; those a spent query budget prevents are
    reported as not run (the ``budget_exhausted`` check says why)."""
    checks: list[Check] = []
    large = lambda: large_eps_check(  # noqa: E731
        run.acc, run.xt, run.yt, clean, run.norm, run.bounds, constraints, budget, seed
    )
    for fn in (
        lambda: _probability_check(run) if level != "label" else None,
        lambda: _gradient_check(run, clean) if level == "white" else None,
        lambda: _black_box_check(run, black_wins, level),
        lambda: _convergence_check(run, constraints, budget, seed, level),
        lambda: large() if level == "white" else None,
    ):
        if run.spent:
            continue
        try:
            check = fn()
        except QueryBudgetExceeded:
            run.spent = True
            continue
        if check is not None:
            checks.append(check)
    return checks


def _probability_check(run: _Run) -> Check:
    a = run.acc.scores(run.xt[: min(16, len(run.xt))])
    probs = is_close_to_probabilities(a.numpy()) or run.acc.target.output == "probabilities"
    return Check(
        "probability_outputs",
        bool(probs),
        "the model outputs probabilities, not logits: saturated softmax hides gradients "
        "from cross-entropy attacks (the DLR and margin losses used here are not affected)"
        if probs
        else "the model outputs logits",
        {"output": run.acc.target.output},
    )


def _gradient_check(run: _Run, clean: torch.Tensor) -> Check | None:
    idx = clean.nonzero()[:, 0][:64]
    if not len(idx):
        return None
    _, grad, _ = run.acc.loss_grad(run.xt[idx], lambda z, t: ce_loss(z, t), run.yt[idx])
    gn = flat_norm(grad, "l2")
    zero = float((gn < 1e-10).float().mean())
    nan = bool(torch.isnan(gn).any())
    return Check(
        "vanishing_gradients",
        zero > 0.1 or nan,
        f"{zero:.0%} of correctly classified inputs have a zero loss gradient"
        + (" (NaN gradients seen)" if nan else ""),
        {"zero_gradient_fraction": zero, "median_gradient_norm": float(gn.median()), "nan": nan},
    )


def _black_box_check(run: _Run, black_wins: int, level: str) -> Check | None:
    if level != "white":
        return None
    flag = black_wins >= max(2, math.ceil(0.005 * len(run.xt)))
    return Check(
        "black_box_beats_white_box",
        flag,
        f"Square (black-box) broke {black_wins} inputs that every gradient attack missed"
        if black_wins
        else "no input was broken by the black-box attack alone",
        {"inputs_broken_only_by_black_box": black_wins},
    )


def _convergence_check(  # type: ignore[no-untyped-def]
    run: _Run, constraints, budget: Budget, seed: int, level: str
) -> Check | None:
    """Double APGD's iterations on the still-robust inputs; new successes count."""
    if level != "white":
        return None
    idx = run.robust.nonzero()[:, 0][: budget.convergence_points]
    newly = 0
    if len(idx) and run.eps > 0:
        a = APGD(
            **_ball(run.norm, run.eps),
            steps=2 * budget.apgd_steps,
            loss="ce",
            bounds=run.bounds,
            constraints=constraints,
            early_stop=run.draws == 1,
            seed=seed + 1,
        )
        newly = run.attack(a, idx)
    steps = 2 * budget.apgd_steps
    return Check(
        "non_convergence",
        newly > 0,
        f"doubling APGD's iterations ({steps}) broke {newly} more of "
        f"{len(idx)} inputs the ensemble left robust"
        if newly
        else f"doubling APGD's iterations broke none of {len(idx)} robust inputs",
        {"checked": int(len(idx)), "newly_broken": newly, "steps": steps},
    )


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
    norm = _plain(norm)  # an absolute ball: silent clips must break too
    big = (hi - lo) / 2 if norm == "linf" else (hi - lo) / 2 * math.sqrt(xt[0].numel())
    idx = clean.nonzero()[:, 0][: budget.large_eps_points]
    draws = verify_draws(acc)
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
        ok = _verify(
            acc, xt[idx], adv, yt[idx], norm, big, bounds, draws=draws, constraints=constraints
        )
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
