"""Shared helpers for the QA / red-team tests: run the CLI in-process, check the error line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mlwarden.cli.main import main


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Exit status and stderr of ``mlwarden ARGS`` run in this process."""
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    return int(exc.value.code or 0), capsys.readouterr().err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    """Exit 2 with exactly one line on stderr that names what was wrong."""
    assert code == 2, err
    assert "Traceback" not in err and "internal error" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]


class _Linear(torch.nn.Module):
    def __init__(self, inputs: int, classes: int) -> None:
        super().__init__()
        self.flat = torch.nn.Flatten()
        self.fc = torch.nn.Linear(inputs, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flat(x))


def torchscript(path: Path, inputs: int = 64, classes: int = 10) -> Path:
    """A tiny TorchScript classifier saved at ``path`` (not trained: QA only needs it to run)."""
    torch.manual_seed(0)
    torch.jit.script(_Linear(inputs, classes)).save(str(path))
    return path


def digits_npz(path: Path, n: int = 40, size: int = 8, labels: np.ndarray | None = None) -> Path:
    """``n`` random (1, size, size) images in [0, 1] with labels 0..9 (or ``labels``)."""
    rng = np.random.default_rng(0)
    x = rng.random((n, 1, size, size), dtype=np.float32)
    y = labels if labels is not None else np.arange(n) % 10
    np.savez(path, x=x, y=y)
    return path
