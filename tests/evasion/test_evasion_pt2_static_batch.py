"""A ``.pt2`` exported with a fixed batch size is evaluated in padded chunks, as ONNX is,
never an internal error (issue 16)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlwarden.core.data import bundled
from mlwarden.core.models import MLP, fit
from mlwarden.evasion import evasion_report


@pytest.fixture(scope="module")
def static_pt2(tmp_path_factory):
    ds = bundled("breast-cancer")
    torch.manual_seed(0)
    model = MLP(30, 2, hidden=(16,))
    fit(model, ds.x, ds.y, epochs=10, lr=1e-2, seed=0)
    model.eval()
    path = tmp_path_factory.mktemp("pt2") / "static.pt2"
    torch.export.save(torch.export.export(model, (torch.zeros(8, 30),)), str(path))
    return model, path, ds.subset(np.arange(0, len(ds), 19))  # 30 inputs: not a multiple of 8


def test_evasion_of_a_fixed_batch_pt2_matches_the_module(static_pt2):
    model, path, sub = static_pt2
    report = evasion_report([str(path)], sub, eps=0.1, budget="quick", limit=None)
    direct = evasion_report([model], sub, eps=0.1, budget="quick", limit=None)
    assert report.metrics["models"]["static.pt2"]["access"] == "white"
    assert report.metrics["clean_accuracy"] == direct.metrics["clean_accuracy"]
    assert abs(report.metrics["robust_accuracy"] - direct.metrics["robust_accuracy"]) <= 2 / len(
        sub
    )


def test_cli_evasion_of_a_fixed_batch_pt2(static_pt2, tmp_path):
    import json

    from typer.testing import CliRunner

    from mlwarden.cli.main import app

    _, path, _ = static_pt2
    out = tmp_path / "r.json"
    res = CliRunner().invoke(
        app,
        ["evasion", str(path), "breast-cancer", "--limit", "21", "--budget", "quick",
         "--eps", "0.05", "--json", str(out)],
    )  # fmt: skip
    assert res.exit_code in (0, 1), res.output
    assert "Traceback" not in res.output and "internal error" not in res.output.lower()
    assert json.loads(out.read_text())["data"]["evaluated"] == 21
