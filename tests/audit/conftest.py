"""Fixtures for audit tests: a plan folder with an importable module of small real jobs."""

from __future__ import annotations

import io
import textwrap
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

JOBS = '''
from pathlib import Path

import numpy as np

from mlwarden.core.findings import Finding, Report, Severity


def fit_score(data, seed=0, counter=None, threshold=0.9):
    """A small real job: least-squares fit on a dataset file; counts its runs in `counter`."""
    if counter:
        with open(counter, "a", encoding="utf-8") as fh:
            fh.write("run\\n")
    arrays = np.load(data)
    x, y = arrays["x"].reshape(len(arrays["x"]), -1), arrays["y"]
    rng = np.random.default_rng(seed)
    w = np.linalg.lstsq(np.c_[x, np.ones(len(x))], np.eye(int(y.max()) + 1)[y], rcond=None)[0]
    acc = float((np.c_[x, np.ones(len(x))] @ w).argmax(1).__eq__(y).mean())
    report = Report.new("custom", seed)
    report.metrics["robust_accuracy"] = acc
    report.metrics["noise"] = float(rng.random())
    if acc < threshold:
        report.add(Finding(rule="MLW-TST-001", title="accuracy below threshold",
                           severity=Severity.HIGH, atlas=["AML.T0015"], artifact=str(data)))
    return report


def broken(seed=0):
    raise ValueError("this check is broken on purpose")


def not_a_report(seed=0):
    return {"metrics": {}}
'''


@pytest.fixture
def job_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Name of a freshly written module with jobs ``fit_score``, ``broken``, ``not_a_report``."""
    name = f"mlw_test_jobs_{uuid.uuid4().hex[:8]}"
    mod_dir = tmp_path / "mods"
    mod_dir.mkdir()
    (mod_dir / f"{name}.py").write_text(textwrap.dedent(JOBS), encoding="utf-8")
    monkeypatch.syspath_prepend(str(mod_dir))
    return name


@pytest.fixture
def dataset_file(tmp_path: Path) -> Path:
    """A small real dataset (.npz, x and y) in the plan folder."""
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    path = tmp_path / "plan" / "data" / "digits.npz"
    path.parent.mkdir(parents=True)
    np.savez(path, x=digits.data[:300].astype("float32") / 16, y=digits.target[:300])
    return path


NESTED = '''
from mlwarden.core import console
from mlwarden.core.findings import Report


def with_progress(seed=0):
    """A check that shows its own progress bar, as the real checks do."""
    total = sum(console.track(range(5), "inner"))
    report = Report.new("custom", seed)
    report.metrics["total"] = total
    report.metrics["inner_bar_shown"] = console.progress_enabled()
    return report
'''


@pytest.fixture
def nested_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"mlw_test_nested_{uuid.uuid4().hex[:8]}"
    mod_dir = tmp_path / "nested"
    mod_dir.mkdir()
    (mod_dir / f"{name}.py").write_text(NESTED, encoding="utf-8")
    monkeypatch.syspath_prepend(str(mod_dir))
    return name


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Result]:
    from mlwarden.cli.main import main

    def run(*args: str, cwd: Path, input: str | None = None) -> Result:
        monkeypatch.chdir(cwd)
        if input is not None:
            monkeypatch.setattr("sys.stdin", io.StringIO(input))
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            main(list(args))
        out = capsys.readouterr()
        code = exit_info.value.code
        return Result(
            code if isinstance(code, int) else (0 if code is None else 1), out.out, out.err
        )

    return run
