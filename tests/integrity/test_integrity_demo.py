"""The demo step and verified loading of a real TorchScript model and state dict."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mlwarden.core.data import Dataset, save_npz
from mlwarden.core.demo_context import DemoContext
from mlwarden.integrity import demo
from mlwarden.integrity.compare import diff_versions
from mlwarden.integrity.verify import load_verified

torch.set_num_threads(1)


@pytest.fixture
def artefacts(tmp_path: Path) -> tuple[Path, Path, Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    ts = tmp_path / "model.pt"
    torch.jit.script(model).save(str(ts))
    sd = tmp_path / "state.pth"
    torch.save(model.state_dict(), sd)
    ds = Dataset(x=np.random.rand(6, 4).astype(np.float32), y=np.arange(6, dtype=np.int64) % 3)
    data = tmp_path / "data.npz"
    save_npz(ds, data)
    return ts, sd, data, model


def test_demo_registers_signs_and_verifies_without_findings(artefacts, tmp_path):
    ts, sd, data, model = artefacts
    ds = Dataset(x=np.zeros((2, 4), np.float32), y=np.zeros(2, np.int64))
    ctx = DemoContext(
        out_dir=tmp_path / "out",
        seed=0,
        dataset=ds,
        train=ds,
        test=ds,
        model=model,
        torchscript_path=ts,
        state_dict_path=sd,
        sklearn_model=None,
        sklearn_path=tmp_path / "none.joblib",
        data_path=data,
    )
    report = demo.run(ctx)
    assert report.findings == [], [f.title for f in report.findings]
    again = demo.run(ctx)  # reruns into the same folder
    assert again.findings == []


def test_load_verified_returns_a_working_target(reg, artefacts, keys):
    ts, _, _, model = artefacts
    reg.add(ts, name="net", sign_key=keys[0], source="t")
    target = load_verified("net@1", registry=reg.root, trust=[keys[1]])
    x = np.random.rand(2, 4).astype(np.float32)
    expected = model(torch.from_numpy(x)).detach().numpy()
    assert np.allclose(np.asarray(target.predict(x)), expected, atol=1e-5)


def test_state_dict_diff_goes_through_safe_load(reg, artefacts, tmp_path):
    _, sd, _, model = artefacts
    reg.add(sd, name="sd")
    with torch.no_grad():
        model[1].bias[0] += 0.25
    sd2 = tmp_path / "v2" / "state.pth"
    sd2.parent.mkdir()
    torch.save(model.state_dict(), sd2)
    reg.add(sd2, name="sd")
    result = diff_versions(reg, reg.resolve("sd@1"), reg.resolve("sd@2"))
    (change,) = result["changed"]
    assert change["format"] == "torch"
    rows = {r["tensor"]: r for r in change["tensors"]}
    assert set(rows) == {"1.bias"}
    assert rows["1.bias"]["max_abs_diff"] == pytest.approx(0.25, rel=1e-5)
