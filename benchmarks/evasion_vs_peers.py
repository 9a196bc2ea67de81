"""Evasion benchmark: mlwarden against torchattacks and IBM ART on the same model and data.

One process, one TorchScript CNN (``SmallCNN`` width 16 on scikit-learn's 8x8 digits,
in [0, 1]; 70/30 split), CPU, one thread. Linf eps = 0.15 throughout. The adversarially
trained model: Madry PGD-10 (step eps/4) adversarial training, 10 epochs of which 1 clean
warm-up (``--quick``: PGD-5, 2 epochs) — the ``ADV_*`` constants below, which
``tests/docs`` checks against this docstring and ``docs/benchmarks/evasion.md``.

(a) speed: PGD-40 (Linf, random start) wall time on one batch against the floor — a
    bare loop of 40 forward+backward passes on the same batch — and against
    torchattacks' and ART's PGD-40 (medians over repeats). Target: <= 1.10x the floor
    and no slower than the fastest peer.
(b) strength, like against like, on a standard and on the adversarially trained model:
    ensembles — ``evaluate()`` (standard budget) against torchattacks'
    ``AutoAttack(version="standard")`` and ART's ``AutoAttack`` (its default attack list,
    Square with 1 restart instead of 5 for time)
    and against the per-sample union of every peer attack (a point is robust only if
    every peer attack, single or ensemble, failed on it); single attacks — our APGD-CE
    100, PGD-40 and Square 5000 against the peers' same attacks. Every robust accuracy
    has its exact 95% interval (Clopper-Pearson); ours against each ensemble is a paired
    comparison on the same points (discordant points and an exact McNemar test). A peer's
    output counts as a success only inside the eps-ball and bounds.
(c) Square: median queries to success over the points both succeed on, ours against
    ART's SquareAttack at the same budget (ART run one input at a time, its model calls
    counted).
(d) FAB: minimal Linf / L2 perturbation sizes of our FAB against torchattacks' FAB
    (a port of the authors' code) and our DeepFool, same points, same settings.

Run::

    timeout 2400 .venv/bin/python benchmarks/evasion_vs_peers.py [--quick] [--points N]
        [--speed-only | --strength-only [--ensembles-only] [--no-art-square] [--model M] | --fab-only]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
import warnings

import numpy as np
import torch
from torch import nn

torch.set_num_threads(1)
warnings.filterwarnings("ignore")


def train_models(quick: bool) -> tuple[torch.jit.ScriptModule, torch.jit.ScriptModule, object]:
    from mlwarden.core.data import load_dataset
    from mlwarden.core.models import SmallCNN, accuracy, fit
    from mlwarden.defenses.adversarial_training import adversarial_training

    ds = load_dataset(DATA)
    train, test = ds.split(test_size=0.3, seed=0)
    side = ds.x.shape[-1]
    torch.manual_seed(0)
    std = SmallCNN(1, 10, side, width=16)
    fit(std, train.x, train.y, epochs=10 if quick else 20, seed=0)
    torch.manual_seed(1)
    rob = SmallCNN(1, 10, side, width=16)
    t0 = time.perf_counter()
    adversarial_training(
        rob,
        train.x,
        train.y,
        eps=EPS,
        steps=5 if quick else ADV_STEPS,
        step_size=EPS / ADV_STEP_DIVISOR,
        epochs=2 if quick else ADV_EPOCHS,
        warmup=ADV_WARMUP,
        seed=1,
    )
    print(f"adversarial training: {time.perf_counter() - t0:.0f} s")
    print(
        f"clean accuracy: standard {accuracy(std, test.x, test.y):.3f}, "
        f"adv-trained {accuracy(rob, test.x, test.y):.3f}"
    )
    return _script(std), _script(rob), test


def _script(model: nn.Module) -> torch.jit.ScriptModule:
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(model.eval()), buf)
    buf.seek(0)
    return torch.jit.load(buf)


EPS = 0.15
DATA = "digits"
#: the adversarial-training recipe (full run): PGD steps, step = EPS / divisor, epochs,
#: clean warm-up epochs among them
ADV_STEPS = 10
ADV_STEP_DIVISOR = 4
ADV_EPOCHS = 10
ADV_WARMUP = 1


def bench_speed(
    model: torch.jit.ScriptModule, x: torch.Tensor, y: torch.Tensor, repeats: int
) -> dict[str, float]:
    import torchattacks
    from art.attacks.evasion import ProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    from mlwarden.evasion import PGD

    step = EPS / 4

    def floor() -> None:
        xa = x.clone()
        for _ in range(40):
            xa.requires_grad_(True)
            loss = nn.functional.cross_entropy(model(xa), y)
            (g,) = torch.autograd.grad(loss, xa)
            xa = xa.detach()

    ours = PGD(norm="linf", eps=EPS, steps=40, step_size=step, random_start=True, early_stop=False)
    ours_es = PGD(
        norm="linf", eps=EPS, steps=40, step_size=step, random_start=True, early_stop=True
    )
    ta = torchattacks.PGD(model, eps=EPS, alpha=step, steps=40, random_start=True)
    clf = PyTorchClassifier(
        model,
        nn.CrossEntropyLoss(),
        input_shape=tuple(x.shape[1:]),
        nb_classes=10,
        clip_values=(0.0, 1.0),
    )
    art_pgd = ProjectedGradientDescent(
        clf,
        norm=np.inf,
        eps=EPS,
        eps_step=step,
        max_iter=40,
        num_random_init=1,
        batch_size=len(x),
        verbose=False,
    )
    xn, yn = x.numpy(), y.numpy()
    runs = {
        "floor (40 fwd+bwd)": floor,
        "mlwarden PGD-40": lambda: ours.generate(model, x, y),
        "mlwarden PGD-40 early-stop": lambda: ours_es.generate(model, x, y),
        "torchattacks PGD-40": lambda: ta(x, y),
        "ART PGD-40": lambda: art_pgd.generate(xn, yn),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    out = {k: statistics.median(v) for k, v in times.items()}
    out.update({f"{k} [cpu]": statistics.median(v) for k, v in cpu.items()})
    return out


def _robust(model: nn.Module, x: torch.Tensor, y: torch.Tensor, xa: object) -> np.ndarray:
    """Per point: still correct, or the attack's output left the eps-ball or the bounds
    (then it is no success, whatever the model says)."""
    xa = torch.as_tensor(np.asarray(xa) if not isinstance(xa, torch.Tensor) else xa).float()
    d = (xa - x).flatten(1).abs().amax(1)
    valid = (d <= EPS * (1 + 1e-5) + 1e-6) & (xa.flatten(1).min(1).values >= -1e-6)
    valid &= xa.flatten(1).max(1).values <= 1 + 1e-6
    with torch.no_grad():
        wrong = model(xa).argmax(1) != y
    return (~(wrong & valid)).numpy()


def _art_classifier(model: nn.Module, x: torch.Tensor) -> object:
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(
        model,
        nn.CrossEntropyLoss(),
        input_shape=tuple(x.shape[1:]),
        nb_classes=10,
        clip_values=(0.0, 1.0),
    )


def peer_singles(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, art_square: bool = True
) -> dict[str, np.ndarray]:
    """Per-point robustness under each single peer attack at its usual strong settings
    (``art_square=False`` leaves out ART's Square, which ART's AutoAttack also runs)."""
    import torchattacks
    from art.attacks.evasion import (
        AutoProjectedGradientDescent,
        ProjectedGradientDescent,
        SquareAttack,
    )

    out: dict[str, np.ndarray] = {}
    torch.manual_seed(0)
    ta = {
        "PGD-40": torchattacks.PGD(model, eps=EPS, alpha=EPS / 4, steps=40),
        "APGD-CE 100": torchattacks.APGD(model, eps=EPS, steps=100, loss="ce"),
        "Square 5000": torchattacks.Square(model, eps=EPS, n_queries=5000),
    }
    for name, atk in ta.items():
        out[f"torchattacks {name}"] = _robust(model, x, y, atk(x, y))
    clf = _art_classifier(model, x)
    art = {
        "PGD-40": ProjectedGradientDescent(
            clf,
            eps=EPS,
            eps_step=EPS / 4,
            max_iter=40,
            num_random_init=1,
            batch_size=256,
            verbose=False,
        ),
        "APGD-CE 100": AutoProjectedGradientDescent(
            clf,
            eps=EPS,
            eps_step=2 * EPS,
            max_iter=100,
            nb_random_init=1,
            batch_size=256,
            loss_type="cross_entropy",
            verbose=False,
        ),
    }
    if art_square:  # ~7 iterations/s on the shared box: 12 min per model
        art["Square 5000"] = SquareAttack(
            clf, eps=EPS, max_iter=5000, p_init=0.8, nb_restarts=1, batch_size=256, verbose=False
        )
    xn, yn = x.numpy(), y.numpy()
    for name, atk in art.items():
        out[f"ART {name}"] = _robust(model, x, y, atk.generate(xn, yn))
    return out


def peer_ensembles(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-point robustness under torchattacks' AutoAttack standard and ART's AutoAttack."""
    import torchattacks
    from art.attacks.evasion import (
        AutoAttack,
        AutoProjectedGradientDescent,
        DeepFool,
        SquareAttack,
    )

    out: dict[str, np.ndarray] = {}
    t0 = time.perf_counter()
    aa = torchattacks.AutoAttack(
        model, norm="Linf", eps=EPS, version="standard", n_classes=10, seed=0
    )
    out["torchattacks AutoAttack standard"] = _robust(model, x, y, aa(x, y))
    print(f"  [torchattacks AutoAttack standard: {time.perf_counter() - t0:.0f} s]")
    t0 = time.perf_counter()
    clf = _art_classifier(model, x)
    # ART's default list, built as ART builds it (AutoAttack.__init__ with attacks=None)
    # but quiet, and Square with 1 restart (AutoAttack standard's setting) instead of 5:
    # ART's Square runs ~7 iterations/s here, 5 x 5,000 would take an hour per model
    common = {"norm": np.inf, "eps": EPS, "eps_step": EPS / 4, "max_iter": 100, "nb_random_init": 5,
              "batch_size": 256, "verbose": False}  # fmt: skip
    attacks = [
        AutoProjectedGradientDescent(clf, loss_type="cross_entropy", **common),
        AutoProjectedGradientDescent(clf, loss_type="difference_logits_ratio", **common),
        DeepFool(clf, max_iter=100, epsilon=1e-3, nb_grads=10, batch_size=256, verbose=False),
        SquareAttack(clf, norm=np.inf, max_iter=5000, eps=EPS, p_init=0.8, nb_restarts=1,
                     verbose=False),
    ]  # fmt: skip
    art = AutoAttack(clf, norm=np.inf, eps=EPS, eps_step=EPS / 4, attacks=attacks, batch_size=256)
    out["ART AutoAttack (default list, Square 1 restart)"] = _robust(
        model, x, y, art.generate(x.numpy(), y.numpy())
    )
    print(f"  [ART AutoAttack: {time.perf_counter() - t0:.0f} s]")
    return out


def our_singles(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, np.ndarray]:
    """Our single attacks at the peers' settings (PGD-40 with a random start like theirs)."""
    from mlwarden.evasion import APGD, PGD, Square

    attacks = {
        "PGD-40": PGD(norm="linf", eps=EPS, steps=40, step_size=EPS / 4, random_start=True),
        "APGD-CE 100": APGD(norm="linf", eps=EPS, steps=100, loss="ce"),
        "Square 5000": Square(norm="linf", eps=EPS, n_queries=5000),
    }
    return {
        f"mlwarden {k}": _robust(model, x, y, a.generate(model, x, y)) for k, a in attacks.items()
    }


def _row(name: str, robust: np.ndarray) -> str:
    from mlwarden.core.intervals import proportion_ci

    k, n = int(robust.sum()), len(robust)
    lo, hi = proportion_ci(k, n)
    return f"  {name:36s} {k / n:.3f}  [{lo:.3f}, {hi:.3f}]"


def _paired(ours: np.ndarray, other: np.ndarray, name: str) -> str:
    """Discordant points and the exact McNemar p-value (binomial test on them)."""
    from scipy.stats import binomtest

    only_ours = int((~ours & other).sum())  # we broke, the other did not
    only_other = int((ours & ~other).sum())
    disc = only_ours + only_other
    p = binomtest(only_ours, disc).pvalue if disc else 1.0
    return (
        f"  vs {name:33s} we alone broke {only_ours}, it alone broke {only_other} "
        f"(exact McNemar p={p:.3f})"
    )


class Counting(nn.Module):
    """Counts the inputs the wrapped model sees (ART's queries)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += len(x)
        return self.model(x)


def square_queries(
    model: torch.jit.ScriptModule, x: torch.Tensor, y: torch.Tensor, budget: int
) -> dict[str, float]:
    from art.attacks.evasion import SquareAttack
    from art.estimators.classification import PyTorchClassifier

    from mlwarden.evasion import Square

    ours = Square(norm="linf", eps=EPS, n_queries=budget, seed=0)
    ours.generate(model, x, y)
    q_ours = ours.last.queries.numpy()
    s_ours = ours.last.success.numpy()
    counter = Counting(model)
    clf = PyTorchClassifier(
        counter,
        nn.CrossEntropyLoss(),
        input_shape=tuple(x.shape[1:]),
        nb_classes=10,
        clip_values=(0.0, 1.0),
    )
    q_art, s_art = [], []
    for i in range(len(x)):
        art = SquareAttack(
            clf,
            eps=EPS,
            max_iter=budget - 1,
            p_init=0.8,
            nb_restarts=1,
            batch_size=1,
            verbose=False,
        )
        xi = x[i : i + 1].numpy()
        counter.seen = 0
        adv = art.generate(xi, y[i : i + 1].numpy())
        used = counter.seen
        with torch.no_grad():
            ok = bool(model(torch.as_tensor(adv)).argmax(1)[0] != y[i])
        # ART checks success with an extra prediction per iteration and at the end; count
        # only the loss evaluations it needs (one per iteration + the initial one).
        q_art.append(used)
        s_art.append(ok)
    q_art_a, s_art_a = np.asarray(q_art), np.asarray(s_art)
    both = s_ours & s_art_a
    return {
        "points": len(x),
        "success_ours": float(s_ours.mean()),
        "success_art": float(s_art_a.mean()),
        "median_queries_ours_all_successes": float(np.median(q_ours[s_ours]))
        if s_ours.any()
        else float("nan"),
        "median_queries_art_all_successes": float(np.median(q_art_a[s_art_a]))
        if s_art_a.any()
        else float("nan"),
        "median_queries_ours_common": float(np.median(q_ours[both]))
        if both.any()
        else float("nan"),
        "median_queries_art_common (model calls)": float(np.median(q_art_a[both]))
        if both.any()
        else float("nan"),
    }


def fab_minimal(
    model: torch.jit.ScriptModule, x: torch.Tensor, y: torch.Tensor, label: str
) -> None:
    """(d) FAB minimal perturbations: ours against torchattacks' FAB and our DeepFool.

    Same points (the correctly classified ones), untargeted, 100 iterations, 1 restart,
    alpha_max 0.1, eta 1.05, beta 0.9. Prints the median size, the share of points where
    ours is no larger (within 0.1%) than the other, and wall time.
    """
    import torchattacks

    from mlwarden.evasion import FAB, DeepFool

    with torch.no_grad():
        keep = model(x).argmax(1) == y
    x, y = x[keep], y[keep]
    for norm, ta_norm in (("linf", "Linf"), ("l2", "L2")):
        t0 = time.perf_counter()
        ours = FAB(norm=norm, eps=None, steps=100)
        ours.generate(model, x, y)
        t_ours = time.perf_counter() - t0
        n_ours = ours.last.norms
        t0 = time.perf_counter()
        ta = torchattacks.FAB(
            model, norm=ta_norm, eps=1e3, steps=100, n_restarts=1, n_classes=10, seed=0
        )
        adv = ta(x, y)
        t_ta = time.perf_counter() - t0
        with torch.no_grad():
            ta_ok = model(adv).argmax(1) != y
        d = (adv - x).flatten(1)
        n_ta = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
        t0 = time.perf_counter()
        df = DeepFool(norm=norm, eps=None)
        df.generate(model, x, y)
        t_df = time.perf_counter() - t0
        print(f"\n(d) minimal {norm} perturbations, {label} model, {len(x)} points, 100 iterations")
        for name, other, ok, secs in (
            ("torchattacks FAB", n_ta, ta_ok, t_ta),
            ("mlwarden DeepFool", df.last.norms, df.last.success, t_df),
        ):
            both = ok & ours.last.success
            share = float((n_ours[both] <= other[both] * 1.001 + 1e-7).float().mean())
            print(
                f"  {name:20s} success {float(ok.float().mean()):.2f}  median "
                f"{float(other[ok].median()):.4f}  {secs:6.1f} s;  mlwarden FAB no larger on "
                f"{share:.0%} of common points"
            )
        print(
            f"  {'mlwarden FAB':20s} success {float(ours.last.success.float().mean()):.2f}  "
            f"median {float(n_ours[ours.last.success].median()):.4f}  {t_ours:6.1f} s"
        )


def strength(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    label: str,
    quick: bool,
    ensembles_only: bool,
    art_square: bool = True,
) -> None:
    """(b): robust accuracy with intervals; ensembles vs ensembles, singles vs singles."""
    from mlwarden.evasion import Budget, evaluate

    print(f"\n(b) robust accuracy [95% CI], {label} model, Linf eps={EPS}, {len(x)} test points")
    t0 = time.perf_counter()
    res = evaluate(
        model, x, y, norm="linf", eps=EPS, budget=Budget.quick() if quick else Budget.standard()
    )
    print(f"  [mlwarden evaluate(): {time.perf_counter() - t0:.0f} s incl. checks, curve, CLEVER]")
    ours = res.robust
    ens = peer_ensembles(model, x, y)
    singles = {} if ensembles_only else peer_singles(model, x, y, art_square)
    mine = {} if ensembles_only else our_singles(model, x, y)
    with torch.no_grad():
        print(f"  clean accuracy {float((model(x).argmax(1) == y).float().mean()):.3f}")
    print("  -- ensembles")
    print(_row("mlwarden evaluate()", ours))
    for k, v in ens.items():
        print(_row(k, v))
    union = np.logical_and.reduce([*ens.values(), *singles.values()])
    print(_row("per-sample union of every peer attack", union))
    for k, v in [*ens.items(), ("per-sample union", union)]:
        print(_paired(ours, v, k))
    if singles:
        print("  -- single attacks")
        for k, v in [*mine.items(), *singles.items()]:
            print(_row(k, v))
    print("  stages: " + ", ".join(f"{s.name} broke {s.broken}" for s in res.stages))
    print(f"  flagged checks: {[c.name for c in res.flagged()]}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller models and samples")
    parser.add_argument("--speed-only", action="store_true", help="only part (a)")
    parser.add_argument("--strength-only", action="store_true", help="only part (b)")
    parser.add_argument("--fab-only", action="store_true", help="only part (d)")
    parser.add_argument("--points", type=int, default=100, help="test points in (b)")
    parser.add_argument(
        "--ensembles-only", action="store_true", help="(b) without the single attacks"
    )
    parser.add_argument(
        "--model",
        choices=("both", "standard", "adv-trained"),
        default="both",
        help="(b) on which model",
    )
    parser.add_argument(
        "--no-art-square",
        action="store_true",
        help="(b) without ART's single Square (slow; ART's AutoAttack still runs it)",
    )
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]

    std, rob, test = train_models(args.quick)
    x = torch.as_tensor(test.x[:256])
    y = torch.as_tensor(test.y[:256])

    if args.fab_only:
        fab_minimal(std, x[:100], y[:100], "standard")
        fab_minimal(rob, x[:100], y[:100], "adv-trained")
        return
    if not args.strength_only:
        print(
            f"\n(a) PGD-40 wall time, batch of {len(x)}, {tuple(x.shape[1:])}, "
            "median of repeats (s)"
        )
        speed = bench_speed(std, x, y, repeats=3 if args.quick else 7)
        for suffix, label in (("", "wall"), (" [cpu]", "process CPU")):
            print(f"  -- {label} time")
            fl = speed["floor (40 fwd+bwd)" + suffix]
            names = [k for k in speed if not k.endswith(" [cpu]")]
            peers = min(speed[k + suffix] for k in names if k.startswith(("torchattacks", "ART")))
            for k in names:
                v = speed[k + suffix]
                print(
                    f"  {k:32s} {v:7.3f} s   {v / fl:5.2f}x floor   {v / peers:5.2f}x fastest peer"
                )
    if args.speed_only:
        return

    n = 40 if args.quick else args.points
    xs, ys = x[:n], y[:n]
    for label, model in (("standard", std), ("adv-trained", rob)):
        if args.model not in ("both", label):
            continue
        strength(
            model,
            xs,
            ys,
            label,
            quick=args.quick,
            ensembles_only=args.ensembles_only,
            art_square=not args.no_art_square,
        )

    if args.strength_only:
        return
    budget = 300 if args.quick else 1000
    m = 30 if args.quick else 60
    with torch.no_grad():
        correct = (std(x).argmax(1) == y).nonzero()[:, 0][:m]
    print(
        f"\n(c) Square Linf eps={EPS}, budget {budget} queries, {len(correct)} correctly classified points"
    )
    for k, v in square_queries(std, x[correct], y[correct], budget).items():
        print(f"  {k:44s} {v}")
    fab_minimal(std, x[:100], y[:100], "standard")
    fab_minimal(rob, x[:100], y[:100], "adv-trained")


if __name__ == "__main__":
    main()
