"""Plots for the HTML report, rendered off-screen to inline PNG ``data:`` URIs.

Checks put curves into ``report.images`` (name -> data URI) with these helpers; the
HTML report shows them inline, so the file needs nothing beyond itself. Nothing here
touches ``matplotlib.pyplot``: figures are built on the Agg canvas directly, so the
helpers work on a headless machine, in threads and in worker processes.

Example::

    from mlwarden.report.plots import line_plot
    report.images["evasion.robust_accuracy"] = line_plot(
        {"PGD": (eps_values, robust_acc)},
        title="Robust accuracy vs epsilon", xlabel="epsilon (L-inf, input scale)",
        ylabel="accuracy",
    )
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

#: Image formats the HTML report accepts in ``report.images``.
DATA_URI_PREFIXES = (
    "data:image/png;base64,",
    "data:image/jpeg;base64,",
    "data:image/gif;base64,",
    "data:image/webp;base64,",
)
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf")


def new_figure(width: float = 6.0, height: float = 3.6) -> Figure:
    """A figure (inches) attached to an off-screen Agg canvas."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_to_data_uri(fig: Any, *, dpi: int = 100) -> str:
    """Render a matplotlib figure to ``data:image/png;base64,...``.

    Accepts a :class:`matplotlib.figure.Figure` from :func:`new_figure` or from
    ``pyplot``; a pyplot figure is closed afterwards so it does not leak.
    """
    if not hasattr(fig, "savefig"):
        raise TypeError(f"expected a matplotlib Figure, got {type(fig).__name__}")
    if fig.canvas is None or type(fig.canvas).__name__ == "FigureCanvasBase":
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    _close_if_pyplot(fig)
    return png_to_data_uri(buf.getvalue())


def png_to_data_uri(png: bytes) -> str:
    """Wrap PNG bytes as a ``data:`` URI; refuses bytes that are not a PNG."""
    if not png.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError("not PNG data (missing the PNG signature)")
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def is_data_uri(value: object) -> bool:
    """True for an inline image URI the HTML report can show."""
    return isinstance(value, str) and value.startswith(DATA_URI_PREFIXES)


def line_plot(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    logx: bool = False,
    ylim: tuple[float, float] | None = None,
) -> str:
    """Curves ``{label: (x, y)}`` on one axis, e.g. robust accuracy against epsilon."""
    fig = new_figure()
    ax = fig.add_subplot()
    for i, (label, (xs, ys)) in enumerate(series.items()):
        ax.plot(
            np.asarray(xs, float),
            np.asarray(ys, float),
            marker="o",
            ms=3,
            label=label,
            color=PALETTE[i % len(PALETTE)],
        )
    if logx:
        ax.set_xscale("log")
    if ylim is not None:
        ax.set_ylim(*ylim)
    _decorate(ax, title, xlabel, ylabel, legend=len(series) > 1)
    return figure_to_data_uri(fig)


def roc_plot(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    title: str = "ROC curve",
    log: bool = True,
) -> str:
    """ROC curves ``{label: (fpr, tpr)}``; log axes by default, as membership-inference
    papers plot them (Carlini et al., "Membership Inference Attacks From First
    Principles", arXiv:2112.03570), so the low-FPR region is visible."""
    fig = new_figure(4.8, 4.2)
    ax = fig.add_subplot()
    floor = 1e-5
    for i, (label, (fpr, tpr)) in enumerate(curves.items()):
        f = np.clip(np.asarray(fpr, float), floor, 1.0)
        t = np.clip(np.asarray(tpr, float), floor, 1.0)
        ax.plot(f, t, label=label, color=PALETTE[i % len(PALETTE)])
    diag = np.logspace(-5, 0, 50) if log else np.linspace(0, 1, 50)
    ax.plot(diag, diag, ls="--", color="#888888", lw=1, label="chance")
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(floor, 1)
        ax.set_ylim(floor, 1)
    _decorate(ax, title, "false positive rate", "true positive rate", legend=True)
    return figure_to_data_uri(fig)


def bar_plot(
    values: Mapping[str, float],
    *,
    title: str = "",
    ylabel: str = "",
    horizontal: bool = False,
) -> str:
    """One bar per named value, e.g. accuracy per defence."""
    fig = new_figure()
    ax = fig.add_subplot()
    names = list(values)
    heights = [float(values[n]) for n in names]
    colors = [PALETTE[i % len(PALETTE)] for i in range(len(names))]
    if horizontal:
        ax.barh(names, heights, color=colors)
        _decorate(ax, title, ylabel, "", legend=False)
    else:
        ax.bar(names, heights, color=colors)
        ax.tick_params(axis="x", labelrotation=30)
        _decorate(ax, title, "", ylabel, legend=False)
    return figure_to_data_uri(fig)


def histogram_plot(
    samples: Mapping[str, Sequence[float]],
    *,
    bins: int = 40,
    title: str = "",
    xlabel: str = "",
) -> str:
    """Overlaid histograms ``{label: values}``, e.g. member vs non-member scores."""
    fig = new_figure()
    ax = fig.add_subplot()
    for i, (label, vals) in enumerate(samples.items()):
        ax.hist(
            np.asarray(vals, float),
            bins=bins,
            alpha=0.55,
            label=label,
            color=PALETTE[i % len(PALETTE)],
        )
    _decorate(ax, title, xlabel, "count", legend=len(samples) > 1)
    return figure_to_data_uri(fig)


def image_grid(
    images: np.ndarray,
    *,
    titles: Sequence[str] | None = None,
    columns: int = 8,
    title: str = "",
) -> str:
    """A grid of images ``(N, C, H, W)`` or ``(N, H, W)`` in [0, 1], e.g. adversarial examples."""
    arr = np.asarray(images, dtype=float)
    if arr.ndim == 4:
        arr = arr[:, 0] if arr.shape[1] == 1 else arr.transpose(0, 2, 3, 1)
    if arr.ndim not in (3, 4) or len(arr) == 0:
        raise ValueError(f"expected a batch of images (N, C, H, W); got shape {images.shape}")
    n = len(arr)
    cols = max(1, min(columns, n))
    rows = -(-n // cols)
    fig = new_figure(1.2 * cols, 1.3 * rows + (0.3 if title else 0.0))
    for i in range(n):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(np.clip(arr[i], 0.0, 1.0), cmap="gray" if arr.ndim == 3 else None)
        ax.set_xticks([])
        ax.set_yticks([])
        if titles is not None and i < len(titles):
            ax.set_title(str(titles[i]), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return figure_to_data_uri(fig)


def _decorate(ax: Any, title: str, xlabel: str, ylabel: str, *, legend: bool) -> None:
    if title:
        ax.set_title(title, fontsize=11)
    if xlabel:
        ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if legend:
        ax.legend(fontsize=8)


def _close_if_pyplot(fig: Any) -> None:
    import sys

    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:
        plt.close(fig)  # a no-op for figures pyplot does not manage
