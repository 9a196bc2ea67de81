"""Pictures for the evasion report: adversarial gallery and accuracy-robustness scatter.

Both return ``data:image/png;base64,...`` URIs for ``report.images``, drawn off-screen
with the helpers of :mod:`mlwarden.report.plots`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mlwarden.report.plots import figure_to_data_uri, new_figure


def gallery(
    x: np.ndarray,
    x_adv: np.ndarray,
    y: np.ndarray,
    adv_pred: np.ndarray,
    *,
    class_names: Sequence[str] | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
    title: str = "",
    limit: int = 8,
) -> str:
    """Columns of (original, perturbation, adversarial) images with both labels.

    The perturbation is shown amplified to the full grey range (mid-grey = unchanged).
    ``x``/``x_adv`` are ``(N, C, H, W)`` in ``bounds``.
    """
    n = min(limit, len(x))
    if n == 0:
        raise ValueError("gallery needs at least one image")
    lo, hi = bounds
    names = list(class_names) if class_names else None

    def name(c: int) -> str:
        return names[c] if names and 0 <= c < len(names) else str(c)

    def show(img: np.ndarray) -> np.ndarray:
        return img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)

    fig = new_figure(1.3 * n + 0.6, 4.4)
    for i in range(n):
        orig = (x[i] - lo) / (hi - lo)
        adv = (x_adv[i] - lo) / (hi - lo)
        diff = x_adv[i] - x[i]
        scale = float(np.abs(diff).max()) or 1.0
        pert = 0.5 + 0.5 * diff / scale
        for row, (img, label) in enumerate(
            [
                (orig, f"true {name(int(y[i]))}"),
                (pert, f"x{1 / scale:.0f}" if scale else ""),
                (adv, f"pred {name(int(adv_pred[i]))}"),
            ]
        ):
            ax = fig.add_subplot(3, n, row * n + i + 1)
            arr = np.clip(show(img), 0, 1)
            ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(label, fontsize=8)
            if i == 0:
                ax.set_ylabel(("original", "perturbation", "adversarial")[row], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return figure_to_data_uri(fig)


def scatter(points: dict[str, tuple[float, float]], *, title: str = "") -> str:
    """Clean accuracy (x) against robust accuracy (y), one labelled point per model."""
    fig = new_figure(5.0, 4.2)
    ax = fig.add_subplot()
    for label, (clean, robust) in points.items():
        ax.scatter([clean], [robust], s=40)
        ax.annotate(label, (clean, robust), fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax.plot([0, 1], [0, 1], ls="--", color="#888888", lw=1)
    ax.set_xlim(0, 1.05)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("clean accuracy")
    ax.set_ylabel("robust accuracy")
    if title:
        ax.set_title(title, fontsize=11)
    ax.grid(True, alpha=0.3)
    return figure_to_data_uri(fig)
