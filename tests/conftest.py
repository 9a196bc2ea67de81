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
