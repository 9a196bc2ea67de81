"""Smoke tests: real library files come out safe; an os.system pickle does not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mlwarden.core.errors import UnsafeArtifactError
from mlwarden.supplychain import safe_load, scan_file


def test_torch_state_dict_is_safe_and_loads(tmp_path: Path) -> None:
    path = tmp_path / "sd.pt"
    torch.save(torch.nn.Linear(3, 2).state_dict(), path)
    assert scan_file(path).verdict.value == "safe"
    assert set(safe_load(path)) == {"weight", "bias"}


def test_os_system_pickle_is_unsafe_and_refused(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    path = tmp_path / "evil.bin"
    path.write_bytes(f"cos\nsystem\n(S'touch {canary}'\ntR.".encode())
    result = scan_file(path)
    assert result.verdict.value == "unsafe"
    assert result.findings[0].global_ == "os.system"
    with pytest.raises(UnsafeArtifactError):
        safe_load(path)
    assert not canary.exists()


def test_plain_npy_is_safe(tmp_path: Path) -> None:
    path = tmp_path / "a.npy"
    np.save(path, np.arange(10.0))
    assert scan_file(path).format == "npy"
    assert scan_file(path).verdict.value == "safe"
