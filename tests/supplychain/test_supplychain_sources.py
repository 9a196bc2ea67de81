"""Scan sources beyond local paths: MLflow ``models:/`` and ``runs:/`` URIs resolved
through a real MLflow store (sqlite tracking and registry, file artifact root) that
MLflow itself writes; MLflow's ``MLmodel`` file; and a Hugging Face cache folder given
as a path. Nothing is loaded: the canary pickle would only run ``echo``."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mlwarden.supplychain import Verdict, scan_bytes

CANARY = "echo CANARY"


class _Evil:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (CANARY,))


EVIL = pickle.dumps(_Evil())

#: writes the store in a child process (MLflow's global state stays out of the tests)
_WRITER = r"""
import sys, pathlib, warnings, logging
warnings.simplefilter("ignore")
logging.disable(logging.WARNING)
import mlflow, numpy as np
from sklearn.linear_model import LogisticRegression
root = pathlib.Path(sys.argv[1])
mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
exp = mlflow.create_experiment("e", artifact_location=(root / "artifacts").as_uri())

class Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input):
        return model_input

clf = LogisticRegression().fit(np.random.default_rng(0).random((20, 3)), np.arange(20) % 2)
(root / "helpers").mkdir()
(root / "helpers" / "util.py").write_text("SCALE = 2\n")
(root / "evil.pkl").write_bytes(bytes.fromhex(sys.argv[2]))
with mlflow.start_run(experiment_id=exp) as run:
    mlflow.sklearn.log_model(clf, name="sk", pip_requirements=[], registered_model_name="clf")
    mlflow.pyfunc.log_model(name="echo", python_model=Echo(), pip_requirements=[],
                            code_paths=[str(root / "helpers")], registered_model_name="echo")
    mlflow.log_artifact(str(root / "evil.pkl"), artifact_path="extra")
client = mlflow.MlflowClient()
client.set_registered_model_alias("clf", "champion", 1)
# a version registered straight from a folder outside the store's artifact locations
(root / "outside").mkdir()
(root / "outside" / "notes.txt").write_text("not for the scanner")
client.create_registered_model("stray")
client.create_model_version("stray", (root / "outside").as_uri())
print(run.info.run_id)
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(folder of an MLflow store written by MLflow, id of its run)."""
    pytest.importorskip("mlflow")
    pytest.importorskip("sqlalchemy")
    pytest.importorskip("alembic")
    root = tmp_path_factory.mktemp("mlflow")
    out = subprocess.run(
        [sys.executable, "-c", _WRITER, str(root), EVIL.hex()],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return root, out.stdout.split()[-1]


def _scan(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> tuple[int, dict[str, Any] | None, str]:
    from mlwarden.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["scan", *args])
    out, err = capsys.readouterr()
    code = exc.value.code if isinstance(exc.value.code, int) else 2
    return code, (json.loads(out) if out.startswith("{") else None), err


def _verdicts(doc: dict[str, Any] | None) -> dict[str, str]:
    assert doc is not None
    return {Path(f["path"]).name: f["verdict"] for f in doc["files"]}


def test_registered_versions_and_aliases_resolve_to_the_artifacts_in_place(
    store: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = store
    uri = f"sqlite:///{root / 'mlflow.db'}"
    seen = []
    for spec in ("models:/clf/1", "models:/clf@champion", "models:/clf/latest"):
        code, doc, err = _scan([spec, "--tracking-uri", uri, "--format", "json"], capsys)
        assert code == 0, err
        assert _verdicts(doc)["MLmodel"] == "safe"
        assert "model.skops" in _verdicts(doc)
        assert all(v == "safe" for v in _verdicts(doc).values())
        # scanned where the store keeps them, not a copy
        assert doc is not None and all(str(root / "artifacts") in f["path"] for f in doc["files"])
        seen.append(sorted(f["path"] for f in doc["files"]))
    assert seen[0] == seen[1] == seen[2]


def test_a_custom_python_model_and_a_planted_pickle_are_flagged(
    store: tuple[Path, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, run_id = store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    code, doc, _ = _scan(["models:/echo/1", "--format", "json"], capsys)
    assert code == 1
    assert doc is not None
    files = {Path(f["path"]).name: f for f in doc["files"]}
    assert files["MLmodel"]["verdict"] == "suspicious"
    messages = " ".join(i["message"] for i in files["MLmodel"]["findings"])
    assert "code_paths" in messages and "python_model.pkl" in messages
    assert files["python_model.pkl"]["verdict"] == "unsafe"  # cloudpickled class by value
    code, doc, _ = _scan([f"runs:/{run_id}/extra/evil.pkl", "--format", "json"], capsys)
    assert code == 1 and _verdicts(doc) == {"evil.pkl": "unsafe"}
    # MLflow 3: runs:/RUN/NAME is the model logged under NAME by that run
    code, doc, _ = _scan([f"runs:/{run_id}/sk", "--format", "json"], capsys)
    assert code == 0 and "model.skops" in _verdicts(doc)


def test_a_link_out_of_the_artifact_folder_is_refused(
    store: tuple[Path, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    root, run_id = store
    uri = f"sqlite:///{root / 'mlflow.db'}"
    secret = tmp_path / "id_rsa"
    secret.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nnot for the scanner\n")
    run_dir = next((root / "artifacts").glob(f"{run_id}/artifacts"))
    link = run_dir / "extra" / "weights.bin"
    link.symlink_to(secret)
    try:
        code, doc, err = _scan([f"runs:/{run_id}/extra", "--tracking-uri", uri], capsys)
        assert code == 2 and doc is None
        assert "leads outside the model's artifact folder" in err and "nothing was scanned" in err
        # a traversal in the run path is refused before any lookup
        code, _, err = _scan([f"runs:/{run_id}/../../..", "--tracking-uri", uri], capsys)
        assert code == 2 and "'..'" in err
    finally:
        link.unlink()


def test_a_version_registered_from_outside_the_store_is_refused(
    store: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = store
    uri = f"sqlite:///{root / 'mlflow.db'}"
    code, doc, err = _scan(["models:/stray/1", "--tracking-uri", uri], capsys)
    assert code == 2 and doc is None
    assert "outside every experiment's artifact location" in err and "outside" in err


@pytest.mark.parametrize(
    ("spec", "env", "expected"),
    [
        ("models:/nosuch/1", True, "cannot resolve it"),
        ("models:/clf/7", True, "cannot resolve it"),
        ("models:/clf@nosuch", True, "cannot resolve it"),
        ("runs:/0123456789abcdef/model", True, "cannot resolve it"),
        ("models:/a'b/1", True, "not an MLflow model URI"),
        ("models:/clf/1", False, "MLFLOW_TRACKING_URI"),
    ],
)
def test_what_the_store_cannot_resolve_is_one_line(
    store: tuple[Path, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    spec: str,
    env: bool,
    expected: str,
) -> None:
    root, _ = store
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    args = [spec, "--tracking-uri", f"sqlite:///{root / 'mlflow.db'}"] if env else [spec]
    code, doc, err = _scan(args, capsys)
    assert code == 2 and doc is None
    assert expected in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_a_missing_store_is_refused_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "nothere.db"
    code, _, err = _scan(["models:/clf/1", "--tracking-uri", f"sqlite:///{db}"], capsys)
    assert code == 2 and "no MLflow database" in err
    assert not db.exists()


def test_without_mlflow_one_line_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "m.db"
    db.write_bytes(b"")
    monkeypatch.setitem(sys.modules, "mlflow", None)
    code, _, err = _scan(["models:/clf/1", "--tracking-uri", f"sqlite:///{db}"], capsys)
    assert code == 2 and "pip install mlflow" in err


@pytest.mark.parametrize("spec", ["models:/clf/1", "runs:/abc/model"])
def test_the_fast_entry_leaves_mlflow_uris_to_the_full_cli(spec: str) -> None:
    from mlwarden.cli.entry import fast_scan

    assert fast_scan(["scan", spec]) is None


# --- the MLmodel file, as MLflow writes it ------------------------------------------------

_SKOPS = b"""artifact_path: file:///x/artifacts
flavors:
  python_function:
    env:
      conda: conda.yaml
      virtualenv: python_env.yaml
    loader_module: mlflow.sklearn
    model_path: model.skops
    predict_fn: predict
    python_version: 3.11.7
  sklearn:
    code: null
    pickled_model: model.skops
    serialization_format: skops
    sklearn_version: 1.9.1
mlflow_version: 3.18.0
model_id: m-29bc172802b049ab8e52091a848543ad
"""


def _mlmodel(data: bytes) -> tuple[str, Verdict, list[str]]:
    res = scan_bytes(data, name="MLmodel")
    return res.format, res.verdict, [i.message for i in res.findings if i.rule == "MLW-SCN-028"]


def test_a_plain_mlflow_flavour_is_clean() -> None:
    fmt, verdict, found = _mlmodel(_SKOPS)
    assert (fmt, verdict, found) == ("mlflow-mlmodel", Verdict.SAFE, [])


@pytest.mark.parametrize(
    ("old", "new", "verdict", "words"),
    [
        (
            b"loader_module: mlflow.sklearn",
            b"loader_module: attacker_pkg.loader",
            Verdict.SUSPICIOUS,
            "'attacker_pkg.loader'",
        ),
        (b"    code: null", b"    code: code", Verdict.SUSPICIOUS, "sys.path"),
        (
            b"serialization_format: skops",
            b"serialization_format: cloudpickle",
            Verdict.SAFE,
            "with cloudpickle",
        ),
        (
            b"    model_path: model.skops",
            b"    model_code_path: /home/u/agent.py",
            Verdict.SUSPICIOUS,
            "'agent.py'",
        ),
        (
            b"    model_path: model.skops",
            b"    python_model: python_model.pkl",
            Verdict.SUSPICIOUS,
            "cloudpickle",
        ),
        (
            b"    sklearn_version: 1.9.1",
            b"    pickle_module_name: evil_pickle",
            Verdict.SUSPICIOUS,
            "'evil_pickle'",
        ),
    ],
)
def test_mlmodel_code_paths_are_reported_with_the_reason(
    old: bytes, new: bytes, verdict: Verdict, words: str
) -> None:
    assert old in _SKOPS
    fmt, got, found = _mlmodel(_SKOPS.replace(old, new))
    assert fmt == "mlflow-mlmodel" and got is verdict
    assert len(found) == 1 and words in found[0], found


# --- a Hugging Face cache folder given as a path ------------------------------------------


def _cache(root: Path) -> Path:
    import hashlib

    repo = root / "hub" / "models--acme--tiny"
    rev = "b" * 40
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(rev)
    snap = repo / "snapshots" / rev
    snap.mkdir(parents=True)
    data = b'{"model_type": "bert"}'
    blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
    blob.write_bytes(data)
    (snap / "config.json").symlink_to(os.path.relpath(blob, snap))
    return snap


@pytest.mark.parametrize("level", ["cache", "repo", "snapshot", "file"])
def test_a_cache_folder_given_as_a_path_is_link_checked_as_hf_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], level: str
) -> None:
    from mlwarden.cli.entry import fast_scan

    snap = _cache(tmp_path)
    target = {
        "cache": tmp_path / "hub",
        "repo": snap.parent.parent,
        "snapshot": snap,
        "file": snap / "config.json",
    }[level]
    code, doc, _ = _scan([str(target), "--format", "json"], capsys)
    # a repository or cache folder also lists the blobs and refs: all data
    assert code == 0 and _verdicts(doc)["config.json"] == "safe"
    assert set(_verdicts(doc).values()) == {"safe"}
    secret = tmp_path / "id_rsa"
    secret.write_text("not for the scanner")
    planted = snap / ("config.json" if level == "file" else "tokenizer.json")
    if level == "file":
        planted.unlink()
    planted.symlink_to(secret)
    code, doc, err = _scan([str(target)], capsys)
    assert code == 2 and doc is None and "outside the repository's cache folder" in err
    assert fast_scan(["scan", str(target)]) is None  # the full CLI says it
