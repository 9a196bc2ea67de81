"""Session fixtures: the malicious and benign corpora, built once per test run."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from corpus import Case, build_benign, build_malicious  # noqa: E402


@pytest.fixture(scope="session")
def canary(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A file that only a payload creates; it must never exist, during or after the tests."""
    path = tmp_path_factory.mktemp("canary") / "CANARY"
    yield path
    assert not path.exists(), "a malicious payload ran: the canary file was created"


@pytest.fixture(scope="session")
def malicious(tmp_path_factory: pytest.TempPathFactory, canary: Path) -> list[Case]:
    return build_malicious(tmp_path_factory.mktemp("malicious"), canary)


@pytest.fixture(scope="session")
def benign(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    torch.set_num_threads(1)
    return build_benign(tmp_path_factory.mktemp("benign"))
