"""The MITRE ATLAS catalogue mlwarden cites (tactics, techniques, mitigations).

Look-up by id::

    >>> from mlwarden.core import atlas
    >>> atlas.get("AML.T0043.000").name
    'White-Box Optimization'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from importlib import resources

import yaml


@dataclass(frozen=True)
class AtlasEntry:
    id: str
    kind: str  # "tactic" | "technique" | "mitigation"
    name: str
    description: str
    tactics: tuple[str, ...] = field(default_factory=tuple)

    @property
    def url(self) -> str:
        base = {"tactic": "tactics", "technique": "techniques", "mitigation": "mitigations"}[
            self.kind
        ]
        return f"https://atlas.mitre.org/{base}/{self.id}"

    @property
    def full_name(self) -> str:
        """Sub-techniques carry their parent's name: 'Craft Adversarial Data: White-Box ...'."""
        if self.kind == "technique" and "." in self.id[len("AML.T") :]:
            parent = catalogue().get(self.id.rsplit(".", 1)[0])
            if parent is not None:
                return f"{parent.name}: {self.name}"
        return self.name


@cache
def catalogue() -> dict[str, AtlasEntry]:
    """All entries by id, loaded once from the packaged ``atlas.yaml``."""
    text = resources.files("mlwarden.core").joinpath("atlas.yaml").read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    entries: dict[str, AtlasEntry] = {}
    for section, kind in (
        ("tactics", "tactic"),
        ("techniques", "technique"),
        ("mitigations", "mitigation"),
    ):
        for ident, body in raw[section].items():
            unexpected = set(body) - {"name", "description", "tactics"}
            if unexpected:  # an unquoted comma in a flow mapping splits the text into keys
                raise ValueError(
                    f"atlas.yaml: {ident} has unexpected fields {sorted(unexpected)}; "
                    "quote descriptions that contain commas"
                )
            entries[ident] = AtlasEntry(
                id=ident,
                kind=kind,
                name=body["name"],
                description=body["description"],
                tactics=tuple(body.get("tactics", ())),
            )
    return entries


def get(ident: str) -> AtlasEntry:
    """Return the entry for ``ident``; ``KeyError`` naming the id if it is not catalogued."""
    try:
        return catalogue()[ident]
    except KeyError:
        raise KeyError(f"{ident!r} is not in mlwarden's ATLAS catalogue") from None


def is_known(ident: str) -> bool:
    return ident in catalogue()


def unknown_ids(ids: list[str] | tuple[str, ...]) -> list[str]:
    """The ids in ``ids`` that are not catalogued (used by tests and by Report validation)."""
    known = catalogue()
    return [i for i in ids if i not in known]
