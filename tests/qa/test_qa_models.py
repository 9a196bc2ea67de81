"""QA: model specs and data the model cannot take give one-line errors (evasion, privacy, serve)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
import pytest

from tests.qa.conftest import assert_one_line_error, digits_npz, run_cli, torchscript


def _module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> str:
    name = f"qa_factory_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_module_factory_spec_by_module_name_loads(tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    name = _module(
        tmp_path,
        monkeypatch,
        "import torch\n"
        "def build():\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).eval()\n",
    )
    data = digits_npz(tmp_path / "d.npz", n=6)
    code, err = run_cli(
        capsys, "evasion", f"{name}:build", str(data), "--budget", "quick", "-q", "--limit", "4"
    )
    assert code in (0, 1), err


def test_missing_module_in_factory_spec_is_one_line_error(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    data = digits_npz(tmp_path / "d.npz", n=6)
    code, err = run_cli(capsys, "evasion", "qa_no_such_module:build", str(data), "-q")
    assert_one_line_error(code, err, "cannot import module")


def test_factory_that_raises_is_one_line_error(tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    name = _module(tmp_path, monkeypatch, "def build():\n    raise RuntimeError('exploded')\n")
    data = digits_npz(tmp_path / "d.npz", n=6)
    code, err = run_cli(capsys, "evasion", f"{name}:build", str(data), "-q")
    assert_one_line_error(code, err, "exploded")


def test_evasion_on_data_of_the_wrong_shape_names_the_shape(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    model = torchscript(tmp_path / "m.pt", inputs=64)
    data = digits_npz(tmp_path / "d28.npz", n=6, size=28)
    code, err = run_cli(capsys, "evasion", str(model), str(data), "--budget", "quick", "-q")
    assert_one_line_error(code, err, "(1, 28, 28)", "shapes cannot be multiplied")


@pytest.mark.parametrize(("classes", "labels"), [(2, None), (10, np.full(12, 42))])
def test_evasion_labels_beyond_the_models_classes(tmp_path: Path, capsys, classes, labels) -> None:  # type: ignore[no-untyped-def]
    model = torchscript(tmp_path / "m.pt", classes=classes)
    data = digits_npz(tmp_path / "d.npz", n=12, labels=labels)
    code, err = run_cli(capsys, "evasion", str(model), str(data), "--budget", "quick", "-q")
    assert_one_line_error(code, err, f"has {classes} classes")


def _privacy(tmp_path: Path, *extra: str) -> list[str]:
    model = torchscript(tmp_path / "m.pt")
    train = digits_npz(tmp_path / "train.npz", n=20)
    holdout = digits_npz(tmp_path / "holdout.npz", n=20)
    return ["privacy", str(model), "--train", str(train), "--holdout", str(holdout), "-q", *extra]


def test_privacy_trainer_that_raises_is_one_line_error(tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    name = _module(tmp_path, monkeypatch, "def train():\n    return None\n")
    args = _privacy(tmp_path, "--attack", "lira", "--shadows", "2", "--trainer", f"{name}:train")
    code, err = run_cli(capsys, *args)
    assert_one_line_error(code, err, f"--trainer {name}:train failed")


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (("--attack", "loss", "--executor", "bogus"), "unknown executor"),
        (("--attack", "loss", "--defend", "--dp-epsilon", "-1"), "--dp-epsilon"),
    ],
)
def test_privacy_bad_options_are_refused_up_front(tmp_path: Path, capsys, extra, needle) -> None:  # type: ignore[no-untyped-def]
    code, err = run_cli(capsys, *_privacy(tmp_path, *extra))
    assert_one_line_error(code, err, needle)


def test_torchscript_shape_error_names_the_reason(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    model = torchscript(tmp_path / "m.pt", inputs=3 * 32 * 32)
    train = digits_npz(tmp_path / "train.npz", n=20)
    code, err = run_cli(
        capsys, "privacy", str(model), "--train", str(train), "--holdout", str(train), "-q",
        "--attack", "loss",
    )  # fmt: skip
    assert_one_line_error(code, err, "shapes cannot be multiplied")


@pytest.mark.parametrize(("option", "value"), [("--rate", "nan"), ("--window", "inf")])
def test_gateway_add_key_refuses_non_finite_limits(tmp_path: Path, capsys, option, value) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "gateway.yaml"
    code, err = run_cli(
        capsys, "gateway", "add-key", "alice", "--config", str(config), option, value
    )
    assert_one_line_error(code, err, option)
    assert not config.exists()


@pytest.mark.parametrize("port", ["99999", "-1"])
def test_serve_refuses_a_port_out_of_range(tmp_path: Path, capsys, port: str) -> None:  # type: ignore[no-untyped-def]
    model = torchscript(tmp_path / "m.pt")
    code, err = run_cli(capsys, "serve", str(model), "--port", port)
    assert_one_line_error(code, err, "--port")


def _non_utf8(tmp_path: Path, suffix: str) -> Path:
    return tmp_path / os.fsdecode(b"model-\xff" + suffix.encode())


def test_torchscript_with_a_non_utf8_file_name_is_evaluated(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    model = torchscript(tmp_path / "m.pt").rename(_non_utf8(tmp_path, ".pt"))
    data = digits_npz(tmp_path / "d.npz", n=6)
    out = tmp_path / "r.json"
    code, err = run_cli(
        capsys, "evasion", str(model), str(data), "--budget", "quick", "--limit", "4", "-q",
        "--json", str(out),
    )  # fmt: skip
    assert code in (0, 1), err
    assert out.exists()


def test_onnx_with_a_non_utf8_file_name_loads(tmp_path: Path) -> None:
    import torch

    from mlwarden.core.target import OnnxTarget

    path = _non_utf8(tmp_path, ".onnx")
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    torch.onnx.export(net, (torch.zeros(1, 1, 8, 8),), str(tmp_path / "m.onnx"), dynamo=False)
    path.write_bytes((tmp_path / "m.onnx").read_bytes())
    scores = OnnxTarget(path).predict(np.zeros((1, 1, 8, 8), np.float32))
    assert scores.shape == (1, 10)
