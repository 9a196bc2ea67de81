"""Plot helpers render to inline PNG data URIs the HTML report can show."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from mlwarden.report import plots


def _decode(uri: str) -> Image.Image:
    assert uri.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


def test_figure_to_data_uri_gives_a_png_of_the_figure_size() -> None:
    fig = plots.new_figure(4.0, 3.0)
    fig.add_subplot().plot([0, 1], [1, 0])

    img = _decode(plots.figure_to_data_uri(fig, dpi=50))
    assert img.format == "PNG" and img.size == (200, 150)


def test_pyplot_figures_are_accepted_and_closed() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure()
    plt.plot([1, 2, 3])
    uri = plots.figure_to_data_uri(fig)

    assert _decode(uri).size[0] > 0
    assert fig.number not in plt.get_fignums()


@pytest.mark.parametrize(
    "make",
    [
        lambda: plots.line_plot({"a": ([0, 1, 2], [1.0, 0.5, 0.1]), "b": ([0, 1], [0, 1])}),
        lambda: plots.roc_plot({"LiRA": ([0.0, 0.001, 0.1, 1.0], [0.0, 0.05, 0.4, 1.0])}),
        lambda: plots.bar_plot({"none": 0.1, "jpeg": 0.3}),
        lambda: plots.histogram_plot({"members": np.arange(50.0), "others": np.arange(50.0) + 5}),
        lambda: plots.image_grid(
            np.random.default_rng(0).random((5, 3, 8, 8)), titles=list("abcde")
        ),
    ],
)
def test_helpers_return_decodable_pngs(make) -> None:  # type: ignore[no-untyped-def]
    img = _decode(make())
    assert img.size[0] > 50 and img.size[1] > 50


def test_png_to_data_uri_refuses_other_bytes() -> None:
    with pytest.raises(ValueError, match="not PNG"):
        plots.png_to_data_uri(b"GIF89a....")


def test_image_grid_rejects_a_non_batch() -> None:
    with pytest.raises(ValueError, match="batch of images"):
        plots.image_grid(np.zeros(5))
