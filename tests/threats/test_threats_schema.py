"""System descriptions: bad files get one-line errors that name the field."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from mlwarden.core.errors import InputFileError
from mlwarden.threats import load_system, parse_system


def example_raw() -> dict:
    return yaml.safe_load(resources.files("mlwarden.threats").joinpath("example.yaml").read_text())


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "system.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_example_loads() -> None:
    path = resources.files("mlwarden.threats").joinpath("example.yaml")
    system = load_system(Path(str(path)))
    assert system.deployment.exposure.value == "public-api"
    assert system.data.sensitive.value == "yes"


def test_unquoted_yes_no_are_answers(tmp_path: Path) -> None:
    raw = example_raw()
    raw["data"]["sensitive"] = True
    raw["deployment"]["rate_limited"] = False
    system = load_system(write(tmp_path, raw))
    assert (system.data.sensitive.value, system.deployment.rate_limited.value) == ("yes", "no")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r["model"].pop("origin"), "field model.origin: missing"),
        (
            lambda r: r["model"].update(origin="github"),
            "field model.origin: 'github' is not allowed",
        ),
        (lambda r: r["access"].update(who="me"), "field access.who: unknown field"),
        (lambda r: r["data"].update(sources=[]), "field data.sources"),
        (lambda r: r["data"].update(sources=["stolen"]), "field data.sources.0"),
        (
            lambda r: r["deployment"].update(retraining_on_user_feedback="often"),
            "field deployment.retraining_on_user_feedback",
        ),
    ],
)
def test_wrong_fields_are_named(tmp_path: Path, edit, message: str) -> None:
    raw = example_raw()
    edit(raw)
    with pytest.raises(InputFileError) as info:
        load_system(write(tmp_path, raw))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: [unclosed", "malformed YAML at line"),
        ("", "got an empty file"),
        ("- a\n- b\n", "expected a mapping"),
    ],
)
def test_malformed_files_get_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InputFileError, match=message):
        load_system(write(tmp_path, text))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="no such file"):
        load_system(tmp_path / "nope.yaml")


def _mutate(data: st.DataObject) -> dict:
    """The example with one field (at any depth) replaced by a random value."""
    raw = example_raw()
    node = raw
    while True:
        key = data.draw(st.sampled_from(sorted(node)))
        if isinstance(node[key], dict) and data.draw(st.booleans()):
            node = node[key]
            continue
        node[key] = data.draw(values)
        return raw


leaf = st.none() | st.booleans() | st.integers() | st.text(max_size=12)
values = st.recursive(
    leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=15,
)


@settings(max_examples=150, deadline=None)
@given(st.one_of(values, st.builds(_mutate, st.data())))
def test_any_yaml_value_is_a_system_or_a_one_line_error(raw: object) -> None:
    try:
        parse_system(raw, "system.yaml")
    except InputFileError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("system.yaml: ")
