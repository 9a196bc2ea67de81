"""ONNX models get white-box attacks when their graph converts to torch and the
conversion answers like onnxruntime; otherwise black-box, reported as an upper bound."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlwarden.core import onnx_torch
from mlwarden.core.data import bundled
from mlwarden.core.errors import UserError
from mlwarden.core.models import MLP, fit
from mlwarden.core.onnx_torch import OnnxTorchTarget, white_box_onnx
from mlwarden.core.target import OnnxTarget
from mlwarden.evasion import evasion_report
from mlwarden.evasion.attacks.base import ModelAccess
from mlwarden.evasion.suite import Budget, evaluate

skl2onnx = pytest.importorskip("skl2onnx")


@pytest.fixture(scope="module")
def cancer():
    ds = bundled("breast-cancer")
    return ds, ds.subset(np.arange(0, len(ds), 14))  # 41 inputs


@pytest.fixture(scope="module")
def torch_mlp_onnx(tmp_path_factory, cancer):
    ds, _ = cancer
    torch.manual_seed(0)
    model = MLP(30, 2, hidden=(32,))
    fit(model, ds.x, ds.y, epochs=15, lr=1e-2, seed=0)
    model.eval()
    path = tmp_path_factory.mktemp("onnx") / "mlp.onnx"
    torch.onnx.export(
        model, (torch.zeros(1, 30),), str(path), dynamo=False,
        input_names=["x"], dynamic_axes={"x": {0: "n"}},
    )  # fmt: skip
    return model, path


def _sk_onnx(tmp_path, estimator, ds, name):
    estimator.fit(ds.x, ds.y)
    path = tmp_path / name
    path.write_bytes(skl2onnx.to_onnx(estimator, ds.x[:1].astype(np.float32)).SerializeToString())
    return path


def test_torch_export_converts_and_matches_the_torch_model(torch_mlp_onnx, cancer):
    model, path = torch_mlp_onnx
    _, sub = cancer
    white, info = white_box_onnx(OnnxTarget(path), sub.x)
    assert info["converted"] and info["argmax_agreement"] == 1.0
    assert info["max_abs_diff"] <= 1e-4
    assert white is not None and white.access == "white"
    ours = evaluate(white, sub.x, sub.y, eps=0.1, budget=Budget.quick(), checks=False)
    direct = evaluate(model, sub.x, sub.y, eps=0.1, budget=Budget.quick(), checks=False)
    assert ours.access == "white" and ours.stages[0].name.startswith("apgd")
    assert abs(ours.robust_accuracy - direct.robust_accuracy) <= 1 / len(sub)


def test_answers_come_from_onnxruntime_not_the_conversion(torch_mlp_onnx, cancer):
    """Each success is re-checked on the model as deployed: scores go through the session."""
    _, path = torch_mlp_onnx
    _, sub = cancer
    white, _ = white_box_onnx(OnnxTarget(path), sub.x)
    assert isinstance(white, OnnxTorchTarget)
    white.module.nodes = []  # break the conversion after the check
    white.module.output_name = white.module.input_name
    scores = ModelAccess(white).scores(torch.as_tensor(sub.x[:5]))
    assert scores.shape == (5, 2)  # onnxruntime still answers with 2 classes


def test_evasion_report_uses_gradients_for_a_sklearn_mlp_onnx(tmp_path, cancer):
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    ds, sub = cancer
    est = make_pipeline(StandardScaler(), MLPClassifier((16,), max_iter=400, random_state=0))
    path = _sk_onnx(tmp_path, est, ds, "sk_mlp.onnx")
    report = evasion_report([str(path)], sub, eps=0.05, budget="quick", limit=None)
    main = next(f for f in report.findings if f.rule == "MLW-EVA-001")
    assert main.evidence["onnx_white_box"]["converted"] is True
    assert report.metrics["models"]["sk_mlp.onnx"]["access"] == "white"
    assert "re-checked with onnxruntime" in main.description
    assert not [f for f in report.findings if f.rule == "MLW-EVA-011"]


def test_random_forest_onnx_falls_back_to_black_box_and_says_so(tmp_path, cancer):
    from sklearn.ensemble import RandomForestClassifier

    ds, sub = cancer
    path = _sk_onnx(tmp_path, RandomForestClassifier(10, random_state=0), ds, "rf.onnx")
    report = evasion_report([str(path)], sub, eps=0.05, budget="quick", limit=None)
    assert report.metrics["models"]["rf.onnx"]["access"] == "score"
    (note,) = [f for f in report.findings if f.rule == "MLW-EVA-011"]
    assert "TreeEnsembleClassifier" in note.description and "upper bound" in note.title
    with pytest.raises(UserError, match="did not convert"):
        evasion_report([str(path)], sub, eps=0.05, budget="quick", access="white", limit=None)


def test_a_conversion_that_disagrees_with_onnxruntime_is_refused(
    torch_mlp_onnx, cancer, monkeypatch
):
    _, path = torch_mlp_onnx
    _, sub = cancer
    monkeypatch.setitem(onnx_torch.OPS, "Relu", lambda a, at: a[0])  # a wrong translation
    white, info = white_box_onnx(OnnxTarget(path), sub.x)
    assert white is None and not info["converted"]
    assert "disagrees with onnxruntime" in info["reason"]


def test_static_batch_cnn_converts(tmp_path):
    torch.manual_seed(0)
    cnn = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(64, 10), torch.nn.Softmax(1),
    ).eval()  # fmt: skip
    path = tmp_path / "cnn.onnx"
    torch.onnx.export(cnn, (torch.zeros(4, 1, 8, 8),), str(path), dynamo=False)
    x = np.random.default_rng(0).random((7, 1, 8, 8), dtype=np.float32)
    white, info = white_box_onnx(OnnxTarget(path), x)
    assert info["converted"] and white is not None
    assert info["gradients_through"].startswith("logits")
    xt = torch.as_tensor(x).requires_grad_(True)
    white.torch_forward(xt).sum().backward()
    assert xt.grad is not None and float(xt.grad.abs().sum()) > 0


@pytest.mark.parametrize("opset", [13, 17])
@pytest.mark.parametrize("arch", ["avgpool_gelu", "layernorm_logsoftmax"])
def test_common_layers_convert_exactly(tmp_path, arch, opset):
    torch.manual_seed(0)
    nn = torch.nn
    net = {
        "avgpool_gelu": nn.Sequential(
            nn.Conv2d(1, 4, 3, stride=2), nn.GELU(),
            nn.AvgPool2d(2, padding=1, count_include_pad=False), nn.AdaptiveAvgPool2d(1),
            nn.Flatten(), nn.Linear(4, 3),
        ),
        "layernorm_logsoftmax": nn.Sequential(
            nn.Flatten(), nn.Linear(64, 16), nn.LayerNorm(16), nn.Tanh(), nn.Dropout(0.1),
            nn.Linear(16, 3), nn.LogSoftmax(1),
        ),
    }[arch].eval()  # fmt: skip
    path = tmp_path / "m.onnx"
    torch.onnx.export(
        net, (torch.zeros(1, 1, 8, 8),), str(path), dynamo=False, opset_version=opset,
        input_names=["x"], dynamic_axes={"x": {0: "n"}},
    )  # fmt: skip
    x = np.random.default_rng(1).random((20, 1, 8, 8), dtype=np.float32)
    white, info = white_box_onnx(OnnxTarget(path), x)
    assert info["converted"], info.get("reason")
    assert white is not None
    with torch.no_grad():
        want = net(torch.as_tensor(x)).numpy()
    got = white.module(torch.as_tensor(x)).detach().numpy()
    assert np.abs(want - got).max() < 1e-5
