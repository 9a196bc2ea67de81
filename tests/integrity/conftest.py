"""Fixtures for the integrity tests: a registry folder, a key pair, small artefacts."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from mlwarden.integrity.keys import generate_keypair
from mlwarden.integrity.registry import Registry
from mlwarden.integrity.scanning import Scanner


def real_scanner_available() -> bool:
    try:
        return hasattr(importlib.import_module("mlwarden.supplychain"), "scan_paths")
    except ImportError:
        return False


def _pass_all(paths: Sequence[Path]) -> dict[str, tuple[str, str]]:
    return {str(p): ("safe", "") for p in paths}


@pytest.fixture
def scanner() -> Scanner | None:
    """The real model-file scanner when it is installed (None selects it).

    The scanner is not what these tests check; until ``mlwarden.supplychain`` ships
    ``scan_paths`` they register plain, non-model bytes with a pass-all scanner.
    """
    return None if real_scanner_available() else _pass_all


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return generate_keypair(tmp_path / "keys" / "release.key")


@pytest.fixture
def other_keys(tmp_path: Path) -> tuple[Path, Path]:
    return generate_keypair(tmp_path / "keys" / "stranger.key")


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    r = Registry.open(tmp_path / "reg")
    yield r
    r.close()


@pytest.fixture
def make_folder(tmp_path: Path) -> Callable[..., Path]:
    """Write ``{relative path: bytes}`` into a new folder and return it."""
    counter = iter(range(10_000))

    def make(files: dict[str, bytes]) -> Path:
        root = tmp_path / f"art{next(counter)}"
        for name, data in files.items():
            p = root / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        return root

    return make
