"""Auto-PGD (APGD): step-size-free PGD with momentum and checkpoints, CE or DLR loss.

Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks", arXiv:2003.01690 (ICML 2020), Algorithm 1.

* Step size starts at ``2 * eps`` and is halved at checkpoints ``w_j = ceil(p_j * N)``,
  ``p_0 = 0``, ``p_1 = 0.22``, ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``, when
  (1) fewer than ``rho = 0.75`` of the steps since the last checkpoint increased the
  loss, or (2) the step size was not reduced at the last checkpoint and the best loss
  has not improved since; the iterate then restarts from the best point found.
* Momentum ``alpha = 0.75`` (the first step has none).
* Losses: ``"ce"`` (cross-entropy), ``"dlr"`` (Difference of Logits Ratio, untargeted);
  with ``targeted=True`` the targeted DLR loss. ``APGD(targeted=True, n_target_classes=9)``
  is APGD-T of AutoAttack: for each input it attacks, in turn, the classes ranked 2nd to
  10th by the clean logits, stopping at the first success.
* Defaults (AutoAttack "standard"): ``steps=100``, ``restarts=1``, random start.

Example::

    x_adv = APGD(norm="linf", eps=8 / 255, loss="dlr").generate(model, x, y)
"""

from __future__ import annotations

import math

import torch

from mlwarden.core.errors import UserError
from mlwarden.evasion.attacks.base import (
    Attack,
    ModelAccess,
    ce_loss,
    dlr_loss,
    dlr_targeted_loss,
    normalize_grad,
    random_in_ball,
)

RHO = 0.75
MOMENTUM = 0.75


def checkpoints(steps: int) -> list[int]:
    """The checkpoint iterations ``w_j`` of APGD (Croce & Hein 2020, section 3.2)."""
    p = [0.0, 0.22]
    while p[-1] < 1.0:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    ws = sorted({math.ceil(round(q * steps, 6)) for q in p[1:] if q <= 1.0})
    return [w for w in ws if 0 < w <= steps]


class APGD(Attack):
    """APGD-CE / APGD-DLR / APGD-T (Croce & Hein 2020, arXiv:2003.01690)."""

    name = "apgd"
    access = "white"

    def __init__(
        self,
        norm: str = "linf",
        eps: float = 0.3,
        steps: int = 100,
        restarts: int = 1,
        loss: str = "ce",
        n_target_classes: int = 9,
        **kw: object,
    ) -> None:
        super().__init__(norm=norm, eps=eps, **kw)  # type: ignore[arg-type]
        self.steps = steps
        self.restarts = restarts
        self.loss = loss
        self.n_target_classes = n_target_classes

    def _check_params(self) -> None:
        super()._check_params()
        if self.steps < 1 or self.restarts < 1:
            raise UserError(
                f"apgd: steps and restarts must be >= 1; got {self.steps}, {self.restarts}"
            )
        if self.loss not in ("ce", "dlr"):
            raise UserError(f"apgd: loss must be 'ce' or 'dlr'; got {self.loss!r}")
        if self.n_target_classes < 1:
            raise UserError(f"apgd: n_target_classes must be >= 1; got {self.n_target_classes}")

    def _run(
        self,
        access: ModelAccess,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        gen: torch.Generator,
    ) -> torch.Tensor:
        best = x.clone()
        self._best = best
        done = self.last.success
        if not self.targeted:
            for _ in range(self.restarts):
                idx = (~done).nonzero()[:, 0]
                if len(idx) == 0:
                    break
                self._attack(access, x, y, None, idx, best, done, gen)
            return best
        if target is not None and getattr(self, "_explicit_target", False):
            for _ in range(self.restarts):
                idx = (~done).nonzero()[:, 0]
                if len(idx):
                    self._attack(access, x, y, target, idx, best, done, gen)
            return best
        # APGD-T: the top-k classes other than the true one, by the clean logits
        with torch.no_grad():
            ranks = access.scores(x).argsort(dim=1, descending=True)
        k = min(self.n_target_classes, ranks.shape[1] - 1)
        for j in range(k):
            for _ in range(self.restarts):
                idx = (~done).nonzero()[:, 0]
                if len(idx) == 0:
                    return best
                r = ranks[idx]
                not_y = r != y[idx, None]
                # the (j+1)-th ranked class that is not y
                order = torch.cumsum(not_y.long(), dim=1)
                pick = ((order == j + 1) & not_y).float().argmax(1)
                tgt = r.gather(1, pick[:, None])[:, 0]
                self._attack(access, x, y, tgt, idx, best, done, gen, sub_target=True)
        return best

    def generate(self, model, x, y=None, target=None):  # type: ignore[no-untyped-def]
        """As :meth:`Attack.generate`; with ``targeted=True`` and no ``target`` this is APGD-T
        over the top ``n_target_classes`` classes, with a ``target`` it attacks that class."""
        self._explicit_target = target is not None
        return super().generate(model, x, y, target)

    def _targets(self, access, x, y, target, gen):  # type: ignore[no-untyped-def]
        if target is None:
            return y.clone()  # placeholder: APGD-T picks its own target classes
        return super()._targets(access, x, y, target, gen)

    def _attack(
        self,
        access: ModelAccess,
        x_all: torch.Tensor,
        y_all: torch.Tensor,
        t_all: torch.Tensor | None,
        idx: torch.Tensor,
        best: torch.Tensor,
        done: torch.Tensor,
        gen: torch.Generator,
        sub_target: bool = False,
    ) -> None:
        """One APGD run on the samples ``idx``; writes successes into ``best``/``done``."""
        x = x_all[idx]
        y = y_all[idx]
        tgt = None if t_all is None else (t_all if sub_target else t_all[idx])
        eps = self.radius(x)
        n_iter = self.steps

        def loss_fn(z: torch.Tensor, lab: torch.Tensor) -> torch.Tensor:
            # DLR needs 3 classes (4 targeted) to be defined; with fewer, CE as AutoAttack does
            dlr = self.loss == "dlr" and z.shape[1] >= (3 if tgt is None else 4)
            if tgt is None:
                return dlr_loss(z, lab) if dlr else ce_loss(z, lab)
            if not dlr:
                return ce_loss(z, tgt_cur, targeted=True)
            return dlr_targeted_loss(z, lab, tgt_cur)

        tgt_cur = tgt if tgt is not None else y
        pos = torch.arange(len(idx))

        def hit_of(z: torch.Tensor) -> torch.Tensor:
            pred = z.argmax(1)
            return pred == tgt_cur if tgt is not None else pred != y_cur

        y_cur = y
        x_adv = self.project(x + random_in_ball(x, eps, self.norm, gen), x, round_integers=False)
        shape = [-1] + [1] * (x.ndim - 1)
        step = 2.0 * eps
        loss, grad, logits = access.loss_grad(self._eval_point(x_adv, x), loss_fn, y)
        hit = hit_of(logits)
        self._record(idx[pos[hit]], self._eval_point(x_adv, x)[hit], best, done)
        loss_best = loss.clone()
        x_best = x_adv.clone()
        grad_best = grad.clone()
        x_prev = x_adv.clone()
        ckpts = checkpoints(n_iter)
        last_ck = 0
        increases = torch.zeros(len(x))
        loss_prev = loss.clone()
        loss_best_last_ck = loss_best.clone()
        reduced_last_ck = torch.ones(len(x), dtype=torch.bool)
        active = torch.ones(len(x), dtype=torch.bool)
        if self.early_stop:
            active &= ~hit

        for i in range(n_iter):
            a = 1.0 if i == 0 else MOMENTUM
            sel = active.nonzero()[:, 0]
            if len(sel) == 0:
                break
            xs, xa, xp = x[sel], x_adv[sel], x_prev[sel]
            z = self.project(
                xa + step[sel].view(shape) * normalize_grad(grad[sel], self.norm),
                xs,
                round_integers=False,
            )
            new = self.project(xa + a * (z - xa) + (1 - a) * (xa - xp), xs, round_integers=False)
            x_prev[sel] = xa
            x_adv[sel] = new
            y_cur = y[sel]
            tgt_cur = tgt[sel] if tgt is not None else y_cur
            point = self._eval_point(new, xs)
            l_new, g_new, z_new = access.loss_grad(point, loss_fn, y_cur)
            grad[sel] = g_new
            h = hit_of(z_new)
            self._record(idx[sel[h]], point[h], best, done)
            increases[sel] += (l_new > loss_prev[sel]).float()
            loss_prev[sel] = l_new
            improved = l_new > loss_best[sel]
            up = sel[improved]
            loss_best[up] = l_new[improved]
            x_best[up] = new[improved]
            grad_best[up] = g_new[improved]
            if self.early_stop:
                active[sel[h]] = False
            it = i + 1
            if it in ckpts:
                span = it - last_ck
                cond1 = increases < RHO * span
                cond2 = (~reduced_last_ck) & (loss_best_last_ck >= loss_best)
                reduce = cond1 | cond2
                step[reduce] /= 2.0
                x_adv[reduce] = x_best[reduce]
                grad[reduce] = grad_best[reduce]
                reduced_last_ck = reduce
                loss_best_last_ck = loss_best.clone()
                increases.zero_()
                last_ck = it
        left = ~done[idx]
        if access.randomized and not self.early_stop:
            # EOT: one random prediction proves little; answer with the point of highest
            # expected loss (the loss is averaged over eot_samples draws)
            left = torch.ones_like(left)
        best[idx[left]] = self._eval_point(x_best[left], x[left])

    def _eval_point(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.project(x_adv, x) if self.has_integers else x_adv

    @staticmethod
    def _record(
        rows: torch.Tensor, points: torch.Tensor, best: torch.Tensor, done: torch.Tensor
    ) -> None:
        fresh = ~done[rows]
        best[rows[fresh]] = points[fresh]
        done[rows[fresh]] = True
