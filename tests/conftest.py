"""Test-suite settings shared by every area."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

# CI runs the same examples every time (a red build must be reproducible); locally,
# hypothesis keeps exploring new ones.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(autouse=True)
def _registry_state(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Registry verifiers remember heads in a per-test folder, never in ~/.config."""
    monkeypatch.setenv("MLWARDEN_STATE_DIR", str(tmp_path_factory.mktemp("registry-state")))


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> None:
    """Small models train in one thread: on a shared, loaded machine two spinning OpenMP
    threads made a 300-step MLP fit 6x slower (41 s against 6 s), and CI machines are
    shared. Areas with heavier models set their own count in their conftest."""
    import torch

    torch.set_num_threads(1)
