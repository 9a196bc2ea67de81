"""An ONNX model's scores are read as the graph declares them: scikit-learn classifiers
exported by skl2onnx (label, then probabilities, with or without ZipMap) and torch
exports ending in a Softmax give probabilities, which must not be softmaxed again."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier

from mlwarden.core.data import bundled
from mlwarden.core.target import OnnxTarget, probabilities

skl2onnx = pytest.importorskip("skl2onnx")


@pytest.fixture(scope="module")
def cancer():
    ds = bundled("breast-cancer")
    return ds.x.astype(np.float32), ds.y


def _export_sklearn(tmp_path, est, x, zipmap):
    opts = None if zipmap else {id(est): {"zipmap": False}}
    onx = skl2onnx.to_onnx(est, x[:1], options=opts)
    path = tmp_path / f"sk_{type(est).__name__}_{zipmap}.onnx"
    path.write_bytes(onx.SerializeToString())
    return path


@pytest.mark.parametrize("zipmap", [True, False])
@pytest.mark.parametrize("make", [lambda: LogisticRegression(max_iter=500),
                                  lambda: MLPClassifier((16,), max_iter=300, random_state=0)])  # fmt: skip
def test_sklearn_probabilities_are_not_softmaxed_again(tmp_path, cancer, make, zipmap):
    x, y = cancer
    est = make().fit(x, y)
    target = OnnxTarget(_export_sklearn(tmp_path, est, x, zipmap))
    assert target.output == "probabilities"
    got = probabilities(target, x[:60])
    want = est.predict_proba(x[:60])
    # softmax of probabilities would squeeze every two-class row towards 0.27-0.73
    assert np.abs(got - want).max() < 1e-4
    assert got.max() > 0.9


def _export_torch(tmp_path, softmax: bool):
    torch.manual_seed(0)
    layers = [torch.nn.Linear(30, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)]
    model = torch.nn.Sequential(*layers, *([torch.nn.Softmax(dim=1)] if softmax else []))
    model.eval()
    path = tmp_path / f"torch_{softmax}.onnx"
    torch.onnx.export(model, (torch.zeros(1, 30),), str(path), dynamo=False,
                      input_names=["x"], dynamic_axes={"x": {0: "n"}})  # fmt: skip
    return model, path


@pytest.mark.parametrize("softmax", [True, False])
def test_torch_exports_read_as_their_last_layer_says(tmp_path, cancer, softmax):
    x, _ = cancer
    model, path = _export_torch(tmp_path, softmax)
    target = OnnxTarget(path)
    assert target.output == ("probabilities" if softmax else "logits")
    with torch.no_grad():
        out = model(torch.from_numpy(x[:40] / 1000.0)).numpy()
    want = out if softmax else torch.softmax(torch.from_numpy(out), 1).numpy()
    assert np.abs(probabilities(target, x[:40] / 1000.0) - want).max() < 1e-5


def test_an_explicit_output_overrides_the_graph(tmp_path, cancer):
    x, y = cancer
    est = LogisticRegression(max_iter=500).fit(x, y)
    path = _export_sklearn(tmp_path, est, x, zipmap=False)
    assert OnnxTarget(path, output="logits").output == "logits"
