"""The allow-list policy: safe / unsafe / suspicious, user extensions, policy files."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlwarden.core.errors import InputFileError
from mlwarden.supplychain import Policy, Verdict


@pytest.mark.parametrize(
    "module, name",
    [
        ("torch._utils", "_rebuild_tensor_v2"),
        ("collections", "OrderedDict"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("sklearn.linear_model._logistic", "LogisticRegression"),
        ("sklearn.tree._tree", "Tree"),
        ("torch", "FloatStorage"),
        ("copy_reg", "_reconstructor"),
    ],
)
def test_names_real_files_use_are_safe(module: str, name: str) -> None:
    assert Policy().classify(module, name).verdict is Verdict.SAFE


@pytest.mark.parametrize(
    "module, name",
    [
        ("os", "system"),
        ("posix", "system"),
        ("builtins", "eval"),
        ("__builtin__", "exec"),
        ("subprocess", "Popen"),
        ("runpy", "run_path"),
        ("torch", "load"),
        ("numpy", "load"),
        ("sklearn.datasets", "fetch_openml"),
        ("sklearn.utils._testing", "SomeClass"),
        ("collections", "OrderedDict.__class__"),
    ],
)
def test_known_dangerous_names_are_unsafe(module: str, name: str) -> None:
    assert Policy().classify(module, name).verdict is Verdict.UNSAFE


def test_unknown_name_is_suspicious() -> None:
    assert Policy().classify("mypkg", "Net").verdict is Verdict.SUSPICIOUS


def test_dotted_walk_from_an_allowed_class_is_not_allowed() -> None:
    assert Policy().classify("collections", "OrderedDict.fromkeys").verdict is Verdict.SUSPICIOUS


def test_allow_extends_the_list_with_names_and_wildcards() -> None:
    pol = Policy(allow=["mypkg.Net", "other.*"])
    assert pol.classify("mypkg", "Net").verdict is Verdict.SAFE
    assert pol.classify("other.sub", "Thing").verdict is Verdict.SAFE
    assert pol.classify("mypkg", "Other").verdict is Verdict.SUSPICIOUS


def test_deny_overrides_the_allow_list() -> None:
    pol = Policy(deny=["collections.OrderedDict"])
    assert pol.classify("collections", "OrderedDict").verdict is Verdict.UNSAFE


def test_policy_file_yaml(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("allow:\n  - mypkg.Net\ndeny:\n  - numpy.ndarray\n")
    pol = Policy.from_file(path)
    assert pol.classify("mypkg", "Net").verdict is Verdict.SAFE
    assert pol.classify("numpy", "ndarray").verdict is Verdict.UNSAFE


def test_bad_policy_file_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text('{"allowed": ["x"]}')
    with pytest.raises(InputFileError, match="expected a mapping"):
        Policy.from_file(path)


def test_bad_allow_entry_is_a_user_error() -> None:
    with pytest.raises(InputFileError, match="bad entry"):
        Policy(allow=["os system"])


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40), st.text(max_size=40))
def test_classify_never_raises(module: str, name: str) -> None:
    assert Policy().classify(module, name).verdict in (
        Verdict.SAFE,
        Verdict.SUSPICIOUS,
        Verdict.UNSAFE,
    )
