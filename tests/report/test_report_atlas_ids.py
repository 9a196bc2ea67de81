"""Every ATLAS id the source code cites in ``atlas=[...]`` or ``mitigations=[...]`` is catalogued."""

from __future__ import annotations

import re
from pathlib import Path

import mlwarden
from mlwarden.core import atlas

SOURCE = Path(mlwarden.__file__).parent
ATLAS_ID = re.compile(r"AML\.(?:TA|T|M)\d{4}(?:\.\d{3})?")
#: ``atlas=[...]``, ``mitigations=[...]`` (keywords or dict keys), and tuples too.
CITATION = re.compile(
    r"""(?:\b(?:atlas|mitigations)\s*=|["'](?:atlas|mitigations)["']\s*:)\s*[\[(]([^\])]*)[\])]""",
    re.S,
)


def cited_ids(text: str) -> list[str]:
    return [i for block in CITATION.findall(text) for i in ATLAS_ID.findall(block)]


def test_the_scanner_finds_citations() -> None:
    """The regex is not vacuous: it sees both spellings and a multi-line list."""
    text = 'Finding(atlas=["AML.T0043.000",\n "AML.T9999"], mitigations=("AML.M0003",))\n{"atlas": ["AML.T0015"]}'

    assert cited_ids(text) == ["AML.T0043.000", "AML.T9999", "AML.M0003", "AML.T0015"]
    assert atlas.unknown_ids(cited_ids(text)) == ["AML.T9999"]


def test_every_cited_atlas_id_is_in_the_catalogue() -> None:
    unknown: list[str] = []
    seen = 0
    for path in sorted(SOURCE.rglob("*.py")):
        ids = cited_ids(path.read_text(encoding="utf-8"))
        seen += len(ids)
        unknown += [f"{path.relative_to(SOURCE)}: {i}" for i in atlas.unknown_ids(ids)]

    assert seen > 0
    assert unknown == [], "ATLAS ids not in core/atlas.yaml:\n" + "\n".join(unknown)


def test_every_atlas_id_in_yaml_data_files_is_in_the_catalogue() -> None:
    """Rules kept as data (YAML/JSON next to the code) cite ids too."""
    unknown: list[str] = []
    for path in sorted([*SOURCE.rglob("*.yaml"), *SOURCE.rglob("*.yml")]):
        # the catalogue itself, and MITRE's case-study facts, which cite every technique
        # of ATLAS (mlwarden matches them against the ids its findings cite)
        if path.name in ("atlas.yaml", "atlas_case_studies.yaml"):
            continue
        for ident in ATLAS_ID.findall(path.read_text(encoding="utf-8")):
            if not atlas.is_known(ident):
                unknown.append(f"{path.relative_to(SOURCE)}: {ident}")

    assert unknown == [], "ATLAS ids not in core/atlas.yaml:\n" + "\n".join(unknown)
