"""docs/findings.md documents every rule id the code can emit, and only those.

Rule ids are ``MLW-<AREA>-<NNN>`` literals in the package sources (Python modules
and the threat rules YAML). A new rule without a catalogue entry fails this test,
so the catalogue stays complete.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "mlwarden"
CATALOGUE = ROOT / "docs" / "findings.md"
RULE = re.compile(r"\bMLW-[A-Z]+-\d{3}\b")
#: Files that mention rule ids as examples or patterns, not as rules they emit.
NOT_EMITTERS = {"report/schema.json", "core/findings.py"}


def code_rules(src: Path = SRC) -> set[str]:
    """Rule ids written in the package's Python and YAML sources."""
    found: set[str] = set()
    for path in src.rglob("*"):
        if path.suffix not in {".py", ".yaml", ".yml"}:
            continue
        if path.relative_to(src).as_posix() in NOT_EMITTERS:
            continue
        found |= set(RULE.findall(path.read_text(encoding="utf-8")))
    return found


def catalogue_rows() -> set[str]:
    """Rule ids that open a table row of the catalogue (``| MLW-XXX-NNN |``)."""
    text = CATALOGUE.read_text(encoding="utf-8")
    return set(re.findall(r"^\| (MLW-[A-Z]+-\d{3}) \|", text, flags=re.MULTILINE))


def test_rule_ids_are_found_in_the_sources() -> None:
    rules = code_rules()
    areas = {r.split("-")[1] for r in rules}
    assert {"SCN", "INT", "DAT", "EVA", "PRV", "EXT", "GW", "THR", "AUD"} <= areas


def test_every_rule_the_code_emits_is_documented() -> None:
    missing = sorted(code_rules() - catalogue_rows())
    assert not missing, f"rule ids emitted by the code but missing from docs/findings.md: {missing}"


def test_catalogue_names_no_rule_the_code_lacks() -> None:
    stale = sorted(catalogue_rows() - code_rules())
    assert not stale, f"docs/findings.md documents rule ids the code no longer emits: {stale}"


def test_each_rule_has_exactly_one_row() -> None:
    text = CATALOGUE.read_text(encoding="utf-8")
    rows = re.findall(r"^\| (MLW-[A-Z]+-\d{3}) \|", text, flags=re.MULTILINE)
    duplicated = sorted({r for r in rows if rows.count(r) > 1})
    assert not duplicated, f"rule ids with more than one row in docs/findings.md: {duplicated}"


def test_a_new_rule_in_a_module_or_yaml_is_picked_up(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "new.py").write_text('Finding(rule="MLW-SCN-999")\n', encoding="utf-8")
    (tmp_path / "rules.yaml").write_text("- id: MLW-THR-998\n", encoding="utf-8")
    found = code_rules(tmp_path)
    assert found == {"MLW-SCN-999", "MLW-THR-998"}
    assert found - catalogue_rows() == found
