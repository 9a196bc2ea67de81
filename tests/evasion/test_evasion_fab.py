"""FAB (arXiv:1907.02044): the hyperplane-box projection, minimality, FAB-T, evaluate()."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mlwarden.evasion import FAB, DeepFool
from mlwarden.evasion.attacks.fab import project_hyperplane_box


@given(
    seed=st.integers(0, 2**16),
    norm=st.sampled_from(["linf", "l2"]),
    dim=st.integers(2, 12),
)
@settings(max_examples=60, deadline=None)
def test_projection_meets_the_hyperplane_inside_the_box_when_it_can(
    seed: int, norm: str, dim: int
) -> None:
    gen = torch.Generator().manual_seed(seed)
    p = torch.rand(4, dim, generator=gen)
    w = torch.randn(4, dim, generator=gen)
    c = torch.randn(4, generator=gen)
    lower, upper = torch.zeros_like(p), torch.ones_like(p)
    d = project_hyperplane_box(p, w, c, lower, upper, norm)
    q = p + d
    assert bool((q >= -1e-6).all() and (q <= 1 + 1e-6).all())
    # the largest reachable w.d towards c inside the box
    corner = torch.where((w * c.sign()[:, None]) > 0, upper - p, lower - p)
    reach = (w * corner).sum(1) * c.sign()
    feasible = reach >= c.abs()
    got = (w * d).sum(1)
    assert torch.allclose(got[feasible], c[feasible], atol=1e-4)
    assert torch.allclose(got[~feasible], (w * corner).sum(1)[~feasible], atol=1e-4)


@given(seed=st.integers(0, 2**16), norm=st.sampled_from(["linf", "l2"]))
@settings(max_examples=30, deadline=None)
def test_projection_is_no_larger_than_any_random_feasible_point(seed: int, norm: str) -> None:
    """Minimality: random box points on the hyperplane are never smaller than the projection."""
    gen = torch.Generator().manual_seed(seed)
    dim = 6
    p = torch.rand(1, dim, generator=gen)
    w = torch.randn(1, dim, generator=gen)
    # a hyperplane through a random box point, so the problem is feasible
    anchor = torch.rand(1, dim, generator=gen)
    c = (w * (anchor - p)).sum(1)
    d = project_hyperplane_box(p, w, c, torch.zeros_like(p), torch.ones_like(p), norm)
    size = float(d.abs().max() if norm == "linf" else d.norm())
    # random feasible points: move along the hyperplane from the anchor, keep those in the box
    dirs = torch.randn(400, dim, generator=gen)
    dirs -= (dirs @ w.T) / (w @ w.T) * w
    pts = anchor + 0.3 * dirs * torch.rand(400, 1, generator=gen)
    inside = ((pts >= 0) & (pts <= 1)).all(1)
    delta = pts[inside] - p
    sizes = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert bool((sizes >= size - 1e-4).all())


def test_fab_perturbations_are_no_larger_than_deepfool_on_most_points(digits) -> None:
    model, x, y, _ = digits
    for norm in ("linf", "l2"):
        fab = FAB(norm=norm, eps=None, steps=30)
        adv = torch.as_tensor(fab.generate(model, x[:20], y[:20]))
        df = DeepFool(norm=norm, eps=None)
        df.generate(model, x[:20], y[:20])
        assert bool(fab.last.success.all())
        with torch.no_grad():
            assert bool((model(adv).argmax(1).numpy() != y[:20]).all())
        ratio = (fab.last.norms / df.last.norms).numpy()
        # within DeepFool's own 2% overshoot or better on at least 80% of points
        assert float(np.mean(ratio <= 1.01)) >= 0.8, (norm, ratio)
        assert float(np.median(ratio)) <= 1.005, (norm, ratio)


def test_more_fab_iterations_never_give_larger_perturbations(digits) -> None:
    model, x, y, _ = digits
    sizes, found = [], []
    for steps in (1, 25):
        fab = FAB(norm="l2", eps=None, steps=steps)
        fab.generate(model, x[:10], y[:10])
        sizes.append(fab.last.norms)
        found.append(fab.last.success)
    assert bool(found[1].all()) and bool(found[0].any())
    both = found[0]
    assert bool((sizes[1][both] <= sizes[0][both] + 1e-6).all())
    assert float(sizes[1][both].sum()) < float(sizes[0][both].sum())


def test_fab_t_without_targets_tries_the_top_classes(digits) -> None:
    model, x, y, _ = digits
    one = FAB(norm="linf", eps=0.12, steps=20, targeted=True, n_target_classes=1)
    adv1 = torch.as_tensor(one.generate(model, x[:20], y[:20]))
    nine = FAB(norm="linf", eps=0.12, steps=20, targeted=True, n_target_classes=9)
    adv9 = torch.as_tensor(nine.generate(model, x[:20], y[:20]))
    with torch.no_grad():
        pred1 = model(adv1).argmax(1).numpy()
        pred9 = model(adv9).argmax(1).numpy()
    assert np.array_equal(one.last.success.numpy(), pred1 != y[:20])
    assert np.array_equal(nine.last.success.numpy(), pred9 != y[:20])
    assert int(nine.last.success.sum()) >= int(one.last.success.sum())
    assert np.abs(adv9.numpy() - x[:20]).max() <= 0.12 + 1e-6
