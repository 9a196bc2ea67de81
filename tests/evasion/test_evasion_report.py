"""evasion_report, the ``mlwarden evasion`` command and the demo step."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mlwarden.cli.evasion import parse_defence
from mlwarden.cli.main import main
from mlwarden.core.atlas import unknown_ids
from mlwarden.core.data import Dataset, save_npz
from mlwarden.core.errors import UserError
from mlwarden.evasion import evasion_report


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


@pytest.fixture()
def files(digits, tmp_path):
    model, x, y, _ = digits
    path = tmp_path / "cnn.pt"
    torch.jit.script(model).save(str(path))
    data = tmp_path / "test.npz"
    save_npz(Dataset(x=x[:12], y=y[:12], name="digits-test", modality="image"), data)
    return path, data


def test_cli_writes_json_with_clean_and_robust_accuracy(files, tmp_path, capsys) -> None:
    model, data = files
    out = tmp_path / "r.json"
    argv = ["evasion", str(model), str(data), "--eps", "0.3", "--budget", "quick"]
    code, _, _ = _run(argv + ["--json", str(out), "--fail-on", "medium", "-q"], capsys)
    assert code == 1  # accuracy collapses: medium, the most a quick (smoke-test) budget rates
    report = json.loads(out.read_text())
    assert report["metrics"]["clean_accuracy"] == 1.0
    assert report["metrics"]["robust_accuracy"] <= 0.2
    rules = {f["rule"] for f in report["findings"]}
    assert "MLW-EVA-001" in rules
    finding = next(f for f in report["findings"] if f["rule"] == "MLW-EVA-001")
    assert finding["severity"] == "medium"
    assert finding["title"].startswith("[smoke test, quick budget]")
    assert {"AML.T0015", "AML.T0043.000"} <= set(finding["atlas"])
    assert set(finding["mitigations"]) == {"AML.M0003", "AML.M0010", "AML.M0015"}
    assert report["images"]["evasion.gallery.cnn.pt"].startswith("data:image/png;base64,")


def test_several_models_give_an_accuracy_robustness_scatter(digits) -> None:
    from mlwarden.core.models import SmallCNN

    model, x, y, _ = digits
    torch.manual_seed(5)
    ds = Dataset(x=x[:6], y=y[:6], modality="image")
    report = evasion_report(
        [model, SmallCNN(1, 10, 8, width=4)],
        ds,
        eps=0.1,
        budget="quick",
        names=["trained", "random"],
    )
    assert set(report.metrics["models"]) == {"trained", "random"}
    assert "evasion.accuracy_vs_robustness" in report.images
    for f in report.findings:
        assert not unknown_ids(f.atlas + f.mitigations)


def test_score_only_access_uses_square_and_cites_black_box(files, tmp_path, capsys) -> None:
    model, data = files
    out = tmp_path / "r.json"
    code, _, _ = _run(
        [
            "evasion",
            str(model),
            str(data),
            "--access",
            "score",
            "--eps",
            "0.3",
            "--budget",
            "quick",
            "--json",
            str(out),
            "-q",
        ],
        capsys,
    )
    assert code == 0
    report = json.loads(out.read_text())
    stages = report["metrics"]["models"]["cnn.pt"]["stages"]
    assert [s["name"] for s in stages] == ["square"]
    finding = next(f for f in report["findings"] if f["rule"] == "MLW-EVA-001")
    assert "AML.T0043.001" in finding["atlas"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["only-one"], "MODEL and then DATA"),
        (["{model}", "{data}", "--norm", "l7"], "--norm"),
        (["{model}", "{data}", "--eps", "-1"], "--eps"),
        (["{model}", "{data}", "--access", "root"], "--access"),
        (["{model}", "{data}", "--defend", "blur"], "unknown transform"),
        (["{model}", "missing.npz"], "missing.npz"),
        (["nope.pt", "{data}"], "nope.pt"),
    ],
)
def test_cli_user_errors_are_one_line_and_exit_two(args, message, files, capsys) -> None:
    model, data = files
    argv = ["evasion"] + [a.format(model=model, data=data) for a in args]
    code, _, err = _run(argv, capsys)
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_parse_defence_reads_types_and_numbers() -> None:
    spec = parse_defence("jpeg:quality=60,median:size=3,random_resize_pad:max_ratio=1.2")
    assert spec == [
        {"type": "jpeg", "quality": 60},
        {"type": "median", "size": 3},
        {"type": "random_resize_pad", "max_ratio": 1.2},
    ]
    with pytest.raises(UserError):
        parse_defence("jpeg:quality")


def test_demo_step_is_labelled_quick_and_fast(digits, tmp_path) -> None:
    import time

    from mlwarden.core.data import bundled
    from mlwarden.core.demo_context import DemoContext
    from mlwarden.evasion import demo

    model, _, _, train = digits
    _, test = bundled("digits").split(test_size=0.3, seed=0)
    ctx = DemoContext(
        out_dir=tmp_path,
        seed=0,
        dataset=test,
        train=train,
        test=test,
        model=model,
        torchscript_path=tmp_path / "m.pt",
        state_dict_path=tmp_path / "s.pt",
        sklearn_model=None,
        sklearn_path=tmp_path / "m.joblib",
        data_path=tmp_path / "d.npz",
    )
    start = time.perf_counter()
    report = demo.run(ctx)
    assert time.perf_counter() - start < 30
    assert "quick demo" in report.command
    assert report.config["budget"] == "quick"
    assert 0 <= report.metrics["robust_accuracy"] <= report.metrics["clean_accuracy"] <= 1
    assert np.isfinite(report.metrics["robust_accuracy"])
