"""Evasion benchmark: mlwarden against torchattacks and IBM ART on the same model and data.

One process, one TorchScript CNN (``SmallCNN`` width 16 on scikit-learn's 8x8 digits,
in [0, 1]; 70/30 split), CPU, one thread. Linf eps = 0.15 throughout. The adversarially
trained model: PGD-5 (step eps/3) adversarial training, 20 epochs, 2 clean warm-up.

(a) speed: PGD-40 (Linf, random start) wall time on one batch against the floor — a
    bare loop of 40 forward+backward passes on the same batch — and against
    torchattacks' and ART's PGD-40 (medians over repeats). Target: <= 1.10x the floor
    and no slower than the fastest peer.
(b) strength: ``evaluate()`` robust accuracy (standard AutoAttack-style budget) against
    the lowest robust accuracy any peer attack reaches (torchattacks PGD-40, APGD-CE 100,
    Square 5000; ART PGD-40, APGD-CE 100, Square 5000), on a standard and on a PGD
    adversarially trained model. Target: ours <= lowest peer.
(c) Square: median queries to success over the points both succeed on, ours against
    ART's SquareAttack at the same budget (ART run one input at a time, its model calls
    counted).
(d) FAB: minimal Linf / L2 perturbation sizes of our FAB against torchattacks' FAB
    (a port of the authors' code) and our DeepFool, same points, same settings.

Run::

    timeout 2400 .venv/bin/python benchmarks/evasion_vs_peers.py [--quick] [--speed-only | --strength-only | --fab-only]
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
        steps=5 if quick else 10,
        step_size=EPS / 4,
        epochs=2 if quick else 10,
        warmup=1,
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


def peer_strength(
    model: torch.jit.ScriptModule, x: torch.Tensor, y: torch.Tensor
) -> dict[str, float]:
    import torchattacks
    from art.attacks.evasion import (
        AutoProjectedGradientDescent,
        ProjectedGradientDescent,
        SquareAttack,
    )
    from art.estimators.classification import PyTorchClassifier

    def acc(xa: torch.Tensor | np.ndarray) -> float:
        with torch.no_grad():
            return float((model(torch.as_tensor(xa)).argmax(1) == y).float().mean())

    out: dict[str, float] = {}
    torch.manual_seed(0)
    out["torchattacks PGD-40"] = acc(
        torchattacks.PGD(model, eps=EPS, alpha=EPS / 4, steps=40)(x, y)
    )
    out["torchattacks APGD-CE 100"] = acc(
        torchattacks.APGD(model, eps=EPS, steps=100, loss="ce")(x, y)
    )
    out["torchattacks Square 5000"] = acc(torchattacks.Square(model, eps=EPS, n_queries=5000)(x, y))
    clf = PyTorchClassifier(
        model,
        nn.CrossEntropyLoss(),
        input_shape=tuple(x.shape[1:]),
        nb_classes=10,
        clip_values=(0.0, 1.0),
    )
    xn, yn = x.numpy(), y.numpy()
    out["ART PGD-40"] = acc(
        ProjectedGradientDescent(
            clf,
            eps=EPS,
            eps_step=EPS / 4,
            max_iter=40,
            num_random_init=1,
            batch_size=256,
            verbose=False,
        ).generate(xn, yn)
    )
    out["ART APGD-CE 100"] = acc(
        AutoProjectedGradientDescent(
            clf,
            eps=EPS,
            eps_step=2 * EPS,
            max_iter=100,
            nb_random_init=1,
            batch_size=256,
            loss_type="cross_entropy",
            verbose=False,
        ).generate(xn, yn)
    )
    out["ART Square 5000"] = acc(
        SquareAttack(
            clf, eps=EPS, max_iter=5000, p_init=0.8, nb_restarts=1, batch_size=256, verbose=False
        ).generate(xn, yn)
    )
    return out


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller models and samples")
    parser.add_argument("--speed-only", action="store_true", help="only part (a)")
    parser.add_argument("--strength-only", action="store_true", help="only part (b)")
    parser.add_argument("--fab-only", action="store_true", help="only part (d)")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    from mlwarden.evasion import Budget, evaluate

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

    n = 40 if args.quick else 100
    xs, ys = x[:n], y[:n]
    for label, model in (("standard", std), ("adv-trained", rob)):
        print(f"\n(b) robust accuracy, {label} model, Linf eps={EPS}, {n} test points")
        t0 = time.perf_counter()
        peer = peer_strength(model, xs, ys)
        t_peer = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = evaluate(
            model,
            xs,
            ys,
            norm="linf",
            eps=EPS,
            budget=Budget.quick() if args.quick else Budget.standard(),
        )
        t_ours = time.perf_counter() - t0
        for k, v in peer.items():
            print(f"  {k:32s} {v:.3f}")
        low = min(peer.values())
        print(
            f"  {'mlwarden evaluate()':32s} {res.robust_accuracy:.3f}  (clean {res.clean_accuracy:.3f}; "
            f"lowest peer {low:.3f}; target met: {res.robust_accuracy <= low + 1e-9})"
        )
        print("  stages: " + ", ".join(f"{s.name} broke {s.broken}" for s in res.stages))
        print(f"  flagged checks: {[c.name for c in res.flagged()]}")
        print(
            f"  time: peers {t_peer:.0f} s, evaluate() {t_ours:.0f} s (incl. sanity checks, curve, CLEVER)"
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
