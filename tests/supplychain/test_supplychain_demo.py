"""The demo step scans the demo's model and data files and finds them safe."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import joblib
import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from mlwarden.core.data import Dataset, save_npz
from mlwarden.core.models import SmallCNN
from mlwarden.supplychain.demo import run


def test_demo_files_come_out_safe(tmp_path: Path) -> None:
    model = SmallCNN(in_channels=1, num_classes=10, image_size=8)
    ts, sd, sk, data = (tmp_path / n for n in ("m.pt", "sd.pth", "clf.joblib", "d.npz"))
    torch.jit.script(model).save(str(ts))
    torch.save(model.state_dict(), sd)
    x = np.random.default_rng(0).normal(size=(40, 64)).astype(np.float32)
    y = np.arange(40) % 10
    joblib.dump(LogisticRegression(max_iter=50).fit(x, y), sk)
    save_npz(Dataset(x=x.reshape(-1, 1, 8, 8), y=y.astype(np.int64)), data)
    ctx = SimpleNamespace(
        torchscript_path=ts, state_dict_path=sd, sklearn_path=sk, data_path=data, seed=0
    )
    report = run(ctx)  # type: ignore[arg-type]
    assert report.findings == []
    assert report.metrics["all_safe"] is True
    assert report.metrics["files_safe"] == 4
