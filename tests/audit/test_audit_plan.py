"""Plan files: schema errors name the field; names and paths resolve against the plan folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from mlwarden.audit.jobs import build_jobs
from mlwarden.audit.plan import load_plan, parse_plan
from mlwarden.core.errors import InputFileError, UserError


def write(folder: Path, data: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "plan.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        ({"checks": [{"check": "fuzz"}]}, "field checks.0"),
        ({"checks": [{"check": "evasion", "data": "d"}]}, "field checks.0.evasion.models: missing"),
        (
            {"checks": [{"check": "evasion", "models": ["m"], "data": "d", "eps": -1}]},
            "checks.0.evasion.eps",
        ),
        ({"checks": [{"check": "scan", "pathz": []}]}, "checks.0.scan.pathz: unknown field"),
        ({"checks": []}, "field checks"),
        ({"version": 2, "checks": [{"check": "scan"}]}, "field version"),
        (
            {
                "checks": [
                    {"check": "data", "data": "a", "name": "x"},
                    {"check": "data", "data": "b", "name": "x"},
                ]
            },
            "repeated: x",
        ),
        (
            {"checks": [{"check": "custom", "function": "not a function"}]},
            "checks.0.custom.function",
        ),
        ("checks: [unclosed", "malformed YAML"),
        ("- just\n- a list\n", "expected a plan mapping"),
    ],
)
def test_schema_errors_name_the_field(tmp_path: Path, plan: object, message: str) -> None:
    with pytest.raises(InputFileError) as info:
        load_plan(write(tmp_path, plan))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_relative_paths_resolve_against_the_plan_folder(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "project"
    (folder / "models").mkdir(parents=True)
    (folder / "models" / "m.onnx").write_bytes(b"x")
    (folder / "gw.yaml").write_text("x: 1")
    plan_path = write(
        folder,
        {
            "artifacts": {
                "models": {"m": "models/m.onnx"},
                "datasets": {"d": "digits"},
                "gateway": "gw.yaml",
            },
            "checks": [
                {"check": "evasion", "models": ["m"], "data": "d"},
                {"check": "scan"},
                {"check": "gateway-config"},
                {"check": "evasion", "models": ["m"], "data": "d", "eps": 0.1},
            ],
        },
    )
    monkeypatch.chdir(tmp_path)  # somewhere else than the plan's folder
    jobs = build_jobs(load_plan(plan_path))
    model = str((folder / "models" / "m.onnx").resolve())
    assert [j.name for j in jobs] == ["evasion", "scan", "gateway-config", "evasion-2"]
    assert jobs[0].kwargs["models"] == [model]
    assert jobs[0].kwargs["data"] == "digits"  # bundled name kept as is
    assert jobs[1].kwargs["paths"] == [model]
    assert jobs[2].kwargs["config"] == (folder / "gw.yaml").resolve()
    assert model in jobs[0].inputs


def test_missing_artefact_file_names_the_field(tmp_path: Path) -> None:
    plan = write(
        tmp_path,
        {
            "artifacts": {"models": {"m": "gone.pt"}},
            "checks": [{"check": "backdoor", "model": "m", "data": "digits"}],
        },
    )
    with pytest.raises(UserError, match=r"artifacts\.models\.m: file not found"):
        build_jobs(load_plan(plan))


def test_gateway_check_without_config_is_explained(tmp_path: Path) -> None:
    plan = write(tmp_path, {"checks": [{"check": "gateway-config"}]})
    with pytest.raises(UserError, match="no artifacts.gateway"):
        build_jobs(load_plan(plan))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
plan_keys = st.sampled_from(
    ["version", "name", "seed", "artifacts", "checks", "baseline", "cache", "x"]
)
check_dicts = st.fixed_dictionaries(
    {"check": st.sampled_from(["scan", "evasion", "privacy", "custom", "nope"])},
    optional={k: json_values for k in ("models", "data", "eps", "function", "name", "options")},
)


@settings(max_examples=150, deadline=None)
@given(
    st.one_of(
        json_values,
        st.dictionaries(plan_keys, json_values, max_size=5),
        st.builds(lambda cs: {"checks": cs}, st.lists(check_dicts, max_size=3)),
    )
)
def test_any_yaml_value_loads_as_a_plan_or_gives_a_one_line_error(raw: object) -> None:
    try:
        parse_plan(raw, "plan.yaml", Path("."))
    except InputFileError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("plan.yaml: ")
