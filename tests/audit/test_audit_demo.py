"""The demo's audit files: system.yaml and plan.yaml that resolve against the demo folder."""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from mlwarden.audit.demo_plan import write_demo_files
from mlwarden.audit.jobs import build_jobs
from mlwarden.audit.plan import load_plan
from mlwarden.audit.runner import run_plan
from mlwarden.core.data import bundled
from mlwarden.core.demo_context import DemoContext
from mlwarden.core.models import SmallCNN
from mlwarden.threats import load_system


def tiny_ctx(out: Path) -> DemoContext:
    """The demo's artefacts without the training: untrained small models, real files."""
    art = out / "artifacts"
    art.mkdir(parents=True)
    ds = bundled("digits").subset(np.arange(200))
    train, test = ds.split(test_size=0.5, seed=0)
    model = SmallCNN(in_channels=1, num_classes=10, image_size=8)
    torch.jit.script(model).save(str(art / "digits_cnn.pt"))
    clf = LogisticRegression(max_iter=50).fit(train.x.reshape(len(train), -1), train.y)
    joblib.dump(clf, art / "digits_logreg.joblib")
    return DemoContext(
        out_dir=out, seed=0, dataset=ds, train=train, test=test, model=model,
        torchscript_path=art / "digits_cnn.pt", state_dict_path=art / "none.pth",
        sklearn_model=clf, sklearn_path=art / "digits_logreg.joblib",
        data_path=art / "digits.npz",
    )  # fmt: skip


def test_demo_leaves_system_and_plan_with_relative_paths(tmp_path: Path, monkeypatch) -> None:
    ctx = tiny_ctx(tmp_path / "demo")
    system_path, plan_path = write_demo_files(ctx)
    assert system_path == tmp_path / "demo" / "system.yaml"
    assert plan_path == tmp_path / "demo" / "plan.yaml"
    assert load_system(system_path).name == "digits-demo"
    text = plan_path.read_text()
    assert str(tmp_path) not in text.split("checks:")[1]  # artefacts by relative path
    moved = tmp_path / "moved"
    (tmp_path / "demo").rename(moved)  # the folder can move: paths are plan-relative
    monkeypatch.chdir(tmp_path)
    jobs = build_jobs(load_plan(moved / "plan.yaml"))
    assert [j.kind for j in jobs] == ["threats", "scan", "gateway-config", "evasion", "extract"]
    assert jobs[1].kwargs["paths"][0] == str((moved / "artifacts" / "digits_cnn.pt").resolve())


def test_demo_plan_threats_job_runs(tmp_path: Path) -> None:
    ctx = tiny_ctx(tmp_path / "demo")
    _, plan_path = write_demo_files(ctx)
    plan = load_plan(plan_path)
    plan.checks = plan.checks[:1]
    report = run_plan(plan, use_cache=False)
    rules = {f.rule for f in report.findings}
    assert {"MLW-THR-008", "MLW-THR-012", "MLW-THR-014"} <= rules
