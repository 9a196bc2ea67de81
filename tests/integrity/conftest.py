"""Fixtures for the integrity tests: a registry folder, a key pair, small artefacts."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from mlwarden.integrity.keys import generate_keypair
from mlwarden.integrity.registry import Registry
from mlwarden.integrity.scanning import Scanner


def pass_all(paths: Sequence[Path]) -> dict[str, tuple[str, str]]:
    return {str(p): ("safe", "") for p in paths}


@pytest.fixture
def scanner() -> Scanner:
    """A scanner that passes every file, for tests of everything but scanning.

    These tests register short byte strings that are not model files; the real
    model-file scanner's verdicts on them are not what they check. The scanner
    integration has its own tests (test_integrity_scanning.py) with real model files.
    """
    return pass_all


@pytest.fixture
def key_type() -> str:
    """The registry's signing key type; modules of attacker tests run with every type."""
    return "ed25519"


@pytest.fixture
def keys(tmp_path: Path, key_type: str) -> tuple[Path, Path]:
    return generate_keypair(tmp_path / "keys" / "release.key", key_type)


@pytest.fixture
def other_keys(tmp_path: Path, key_type: str) -> tuple[Path, Path]:
    """A stranger's key pair of the same type (a wrong key, not merely another algorithm)."""
    return generate_keypair(tmp_path / "keys" / "stranger.key", key_type)


@pytest.fixture
def reg(tmp_path: Path) -> Iterator[Registry]:
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


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """Run ``mlwarden ARGS`` in this process: (exit status, stdout, stderr)."""
    from mlwarden.cli.main import main

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_:
            main(list(args))
        out = capsys.readouterr()
        return int(exit_.value.code or 0), out.out, out.err

    return run
