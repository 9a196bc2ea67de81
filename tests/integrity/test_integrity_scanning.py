"""`registry add` with the real model-file scanner: malicious pickles refused, real files pass."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from mlwarden.cli.main import main
from mlwarden.core.errors import UnsafeArtifactError
from mlwarden.integrity.registry import Registry
from mlwarden.integrity.verify import verify_report


class _Canary:
    """Unpickling this would create the canary file (it must never happen)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


@pytest.fixture
def malicious(tmp_path: Path) -> tuple[Path, Path]:
    canary = tmp_path / "CANARY"
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.pkl").write_bytes(pickle.dumps(_Canary(canary)))
    save_file({"w": np.ones((2, 2), np.float32)}, str(folder / "ok.safetensors"))
    return folder, canary


def test_real_scanner_refuses_malicious_pickle(reg, malicious):
    folder, canary = malicious
    with pytest.raises(UnsafeArtifactError, match="model.pkl"):
        reg.add(folder, name="m")
    assert reg.names() == [] and not canary.exists()


def test_forced_add_is_recorded_and_flagged(reg, malicious):
    folder, canary = malicious
    rec = reg.add(folder, name="m", force=True, reason="research copy, sandbox only")
    assert rec.record["scan"]["refused"] == {"model.pkl": "unsafe"}
    report = verify_report("m@1", registry=reg.root)
    assert "MLW-INT-009" in {f.rule for f in report.findings}
    assert not canary.exists()


def test_real_model_and_data_files_pass(reg, tmp_path):
    folder = tmp_path / "good"
    folder.mkdir()
    save_file({"w": np.ones((3, 3), np.float32)}, str(folder / "model.safetensors"))
    np.savez(folder / "data.npz", x=np.zeros((4, 2), np.float32), y=np.arange(4))
    rec = reg.add(folder, name="good")
    assert rec.record["scan"]["refused"] == {}


def test_cli_add_exit_codes_with_real_scanner(malicious, tmp_path):
    folder, canary = malicious
    reg_dir = str(tmp_path / "r")

    def run(*args: str) -> int:
        with pytest.raises(SystemExit) as exc:
            main(list(args))
        return int(exc.value.code or 0)

    assert run("registry", "add", str(folder), "--name", "m", "--registry", reg_dir, "-q") == 2
    assert (
        run(
            "registry",
            "add",
            str(folder),
            "--name",
            "m",
            "--registry",
            reg_dir,
            "--force",
            "--reason",
            "sandbox",
            "-q",
        )
        == 0
    )
    with Registry.open(tmp_path / "r") as r:
        assert r.resolve("m@1").record["forced"] == {"reason": "sandbox"}
    assert not canary.exists()
