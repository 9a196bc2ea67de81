"""Threat rules: the example system's threats and ATLAS ids, the rule file checks, matching."""

from __future__ import annotations

from importlib import resources

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from mlwarden.core import atlas
from mlwarden.core.errors import InputFileError
from mlwarden.threats import assess, parse_system, threats_report
from mlwarden.threats.rules import builtin_rules, matches, parse_rules


def example():
    text = resources.files("mlwarden.threats").joinpath("example.yaml").read_text()
    return parse_system(yaml.safe_load(text), "example.yaml")


def test_example_system_gets_the_expected_threats_and_atlas_ids() -> None:
    threats = {t.id: t for t in assess(example())}
    # public hub + fine-tuned on user-provided personal data + public score API
    assert set(threats) == {
        "MLW-THR-001", "MLW-THR-002", "MLW-THR-003", "MLW-THR-004", "MLW-THR-005",
        "MLW-THR-006", "MLW-THR-008", "MLW-THR-009", "MLW-THR-010", "MLW-THR-011",
        "MLW-THR-012", "MLW-THR-014", "MLW-THR-015",
    }  # fmt: skip
    assert threats["MLW-THR-001"].rule.techniques == [
        "AML.T0010.003",
        "AML.T0011.000",
        "AML.T0018.002",
    ]
    assert threats["MLW-THR-010"].rule.techniques == ["AML.T0024.000"]
    assert threats["MLW-THR-010"].tactics == ["AML.TA0010"]
    assert "AML.T0024.002" in threats["MLW-THR-012"].rule.techniques
    assert "AML.T0020" in threats["MLW-THR-004"].rule.techniques
    assert threats["MLW-THR-009"].rule.techniques == ["AML.T0002.001", "AML.T0005", "AML.T0043.002"]


def test_white_box_threat_only_when_weights_are_reachable() -> None:
    system = example()
    assert "MLW-THR-007" not in {t.id for t in assess(system)}
    raw = system.model_dump(mode="json")
    raw["deployment"]["exposure"] = "on-device"
    system = parse_system(raw, "edited")
    assert "MLW-THR-007" in {t.id for t in assess(system)}


def test_likelihood_reasons_name_what_raised_it() -> None:
    (t,) = [t for t in assess(example()) if t.id == "MLW-THR-001"]
    assert t.likelihood == "high" and t.impact == "high"
    assert t.severity.value == "critical"
    assert any("public hub" in r for r in t.likelihood_reasons)
    assert any("not verified" in r for r in t.likelihood_reasons)


def test_labels_only_api_lowers_membership_inference_likelihood() -> None:
    raw = example().model_dump(mode="json")
    scores = {t.id: t for t in assess(parse_system(raw, "x"))}["MLW-THR-010"]
    raw["deployment"]["outputs"] = "labels"
    labels = {t.id: t for t in assess(parse_system(raw, "x"))}["MLW-THR-010"]
    assert (scores.likelihood, labels.likelihood) == ("high", "low")
    assert "MLW-THR-011" not in {t.id for t in assess(parse_system(raw, "x"))}


def test_threat_findings_carry_catalogued_techniques_tactics_and_mitigations() -> None:
    report = threats_report(example())
    assert report.findings
    for f in report.findings:
        assert f.rule.startswith("MLW-THR-")
        kinds = {atlas.get(i).kind for i in f.atlas}
        assert kinds == {"technique", "tactic"}
        assert all(atlas.get(m).kind == "mitigation" for m in f.mitigations)
        assert f.evidence["likelihood"] in ("low", "medium", "high")


def test_every_builtin_rule_cites_only_catalogued_ids() -> None:
    for rule in builtin_rules().rules:
        assert not atlas.unknown_ids(rule.techniques + rule.mitigations + rule.tactics)


def _rules(**changes: object) -> dict:
    rule = {
        "id": "MLW-THR-900",
        "title": "t",
        "techniques": ["AML.T0015"],
        "when": {"model.origin": "public-hub"},
        "likelihood": {"base": "low", "reason": "r"},
        "impact": {"base": "high", "reason": "r"},
        "checks": ["evasion"],
        "mitigations": ["AML.M0003"],
        "recommendation": "do",
    }
    rule.update(changes)
    return {"version": 1, "rules": [rule]}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"techniques": ["AML.T9999"]}, "AML.T9999"),
        ({"when": {"model.orign": "public-hub"}}, "'model.orign' is not a field"),
        ({"when": {"model.origin": "github"}}, "'github' is not one of"),
        ({"checks": ["fuzz"]}, "unknown checks"),
        ({"colour": "red"}, "rules.0.colour: unknown field"),
        ({"id": "THR-1"}, "rules.0.id"),
    ],
)
def test_bad_rule_files_are_refused_naming_the_problem(change: dict, message: str) -> None:
    with pytest.raises(InputFileError, match=message.replace("(", r"\(").replace(".", r"\.")):
        parse_rules(_rules(**change), "custom.yaml")


def test_yaml_yes_no_in_rules_means_the_answer() -> None:
    ruleset = parse_rules(_rules(when={"data.sensitive": True}), "r.yaml")
    assert ruleset.rules[0].when == {"data.sensitive": ["yes"]}


facts = st.fixed_dictionaries(
    {"a": st.sampled_from(["x", "y", "z"]), "b": st.lists(st.sampled_from(["p", "q"]))}
)


@given(facts)
def test_condition_combinators_follow_boolean_logic(f: dict) -> None:
    is_x = {"a": ["x"]}
    has_p = {"b": ["p"]}
    assert matches(is_x, f) == (f["a"] == "x")
    assert matches(has_p, f) == ("p" in f["b"])
    assert matches({"not": is_x}, f) == (not matches(is_x, f))
    assert matches({"all": [is_x, has_p]}, f) == (matches(is_x, f) and matches(has_p, f))
    assert matches({"any": [is_x, has_p]}, f) == (matches(is_x, f) or matches(has_p, f))
    assert matches({"a": ["x", "y"]}, f) == (f["a"] in ("x", "y"))
    assert matches({"b": {"nonempty": True}}, f) == bool(f["b"])


def test_docs_list_every_builtin_threat_with_its_techniques() -> None:
    from pathlib import Path

    docs = (Path(__file__).parents[2] / "docs" / "threats.md").read_text()
    for rule in builtin_rules().rules:
        row = next((line for line in docs.splitlines() if line.startswith(f"| {rule.id} |")), "")
        assert row, f"{rule.id} missing from docs/threats.md"
        assert all(t in row for t in rule.techniques)
