"""safe_load and load_target: scan first, refuse unless safe, restricted loading."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
from corpus import Reducer, call2
from sklearn.linear_model import LogisticRegression

from mlwarden.core.errors import InputFileError, UnsafeArtifactError, UserError
from mlwarden.core.target import (
    HttpTarget,
    OnnxTarget,
    SklearnTarget,
    TorchScriptTarget,
    TorchTarget,
)
from mlwarden.supplychain import Policy, RestrictedUnpickler, load_target, safe_load
from mlwarden.supplychain.loader import _load_joblib


@pytest.fixture(scope="module")
def clf() -> LogisticRegression:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4))
    return LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))


def test_restricted_unpickler_refuses_what_the_policy_refuses(canary: Path) -> None:
    data = call2("os", "system", f"touch {canary}")
    with pytest.raises(UnsafeArtifactError, match="os.system"):
        RestrictedUnpickler(io.BytesIO(data)).load()
    assert not canary.exists()


def test_joblib_loader_enforces_the_allow_list_on_its_own(tmp_path: Path, canary: Path) -> None:
    # second line of defence: even if the scan were skipped, joblib's unpickler refuses
    path = tmp_path / "evil.joblib"
    joblib.dump({"a": np.arange(3.0), "x": Reducer(os.system, (f"touch {canary}",))}, path)
    with pytest.raises(UnsafeArtifactError, match="posix.system"):
        _load_joblib(path, None)
    assert not canary.exists()


def test_joblib_object_arrays_go_through_the_restriction(tmp_path: Path, canary: Path) -> None:
    path = tmp_path / "evil_obj.joblib"
    arr = np.array([1, Reducer(os.system, (f"touch {canary}",))], dtype=object)
    joblib.dump({"objs": arr}, path)
    with pytest.raises(UnsafeArtifactError):
        _load_joblib(path, None)
    assert not canary.exists()


def test_safe_load_uses_the_users_allow_list(tmp_path: Path) -> None:
    path = tmp_path / "counter.pkl"
    path.write_bytes(call2("collections", "ChainMap"))
    with pytest.raises(UnsafeArtifactError):
        safe_load(path)
    assert safe_load(path, Policy(allow=["collections.ChainMap"])) is not None


def test_safe_load_of_a_missing_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(InputFileError):
        safe_load(tmp_path / "nope.pt")


def test_load_target_sklearn_joblib(tmp_path: Path, clf: LogisticRegression) -> None:
    path = tmp_path / "clf.joblib"
    joblib.dump(clf, path, compress=3)
    target = load_target(str(path), access="score")
    assert isinstance(target, SklearnTarget)
    assert target.predict(np.zeros((2, 4), np.float32)).shape == (2, 2)


def test_load_target_torchscript(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    torch.jit.script(torch.nn.Linear(4, 3)).save(str(path))
    target = load_target(str(path))
    assert isinstance(target, TorchScriptTarget)
    assert target.predict(np.zeros((2, 4), np.float32)).shape == (2, 3)


def test_load_target_onnx(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    torch.onnx.export(torch.nn.Linear(4, 3), (torch.zeros(1, 4),), str(path), dynamo=False)
    assert isinstance(load_target(str(path), access="label"), OnnxTarget)


def test_load_target_refuses_a_malicious_file(tmp_path: Path, canary: Path) -> None:
    path = tmp_path / "model.joblib"
    joblib.dump(Reducer(os.system, (f"touch {canary}",)), path)
    with pytest.raises(UnsafeArtifactError):
        load_target(str(path))
    assert not canary.exists()


def test_load_target_state_dict_explains_what_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "sd.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), path)
    with pytest.raises(InputFileError, match="module:factory"):
        load_target(str(path))


def test_load_target_module_factory(tmp_path: Path) -> None:
    mod = tmp_path / "my_factory.py"
    mod.write_text("import torch\n\ndef build():\n    return torch.nn.Linear(4, 2)\n")
    target = load_target(f"{mod}:build")
    assert isinstance(target, TorchTarget)
    assert target.access == "white"


def test_load_target_url() -> None:
    target = load_target("http://127.0.0.1:9/predict", access="label")
    assert isinstance(target, HttpTarget)


def test_load_target_unknown_spec_is_a_user_error() -> None:
    with pytest.raises(UserError, match="not found"):
        load_target("no/such/model.pt")


def test_restricted_unpickler_resolves_getattr_like_the_scanner(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    series = pd.Series(pd.date_range("2020", periods=3, tz="Europe/Paris"))
    path = tmp_path / "tz.pkl"
    path.write_bytes(pickle.dumps(series, protocol=2))
    assert str(safe_load(path).dt.tz) == "Europe/Paris"
    # the second line of defence on its own: getattr of a name the policy does not allow
    evil = b"\x80\x02cbuiltins\ngetattr\nczoneinfo\nZoneInfo\nX\x09\x00\x00\x00from_file\x86R."
    with pytest.raises(UnsafeArtifactError, match="getattr of zoneinfo.ZoneInfo.from_file"):
        RestrictedUnpickler(io.BytesIO(evil)).load()
    on_value = b"\x80\x02cbuiltins\ngetattr\nX\x02\x00\x00\x00osX\x06\x00\x00\x00system\x86R."
    with pytest.raises(UnsafeArtifactError, match="not an allowed import"):
        RestrictedUnpickler(io.BytesIO(on_value)).load()
