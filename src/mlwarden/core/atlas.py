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


@dataclass(frozen=True)
class CaseStudy:
    """A real-world attack or exercise from MITRE ATLAS (facts only: no summaries)."""

    id: str
    name: str
    date: str
    type: str  # "incident" | "exercise"
    target: str
    techniques: tuple[str, ...]
    incidents: tuple[int, ...] = ()  #: AI Incident Database incident numbers
    url: str = ""

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"id": self.id, "name": self.name, "url": self.url}
        if self.incidents:
            out["aiid"] = [f"https://incidentdatabase.ai/cite/{n}" for n in self.incidents]
        return out


@cache
def case_studies() -> tuple[CaseStudy, ...]:
    """The ATLAS 5.6.0 case studies, loaded once from the packaged
    ``atlas_case_studies.yaml`` (MITRE, Apache License 2.0; see its header)."""
    text = (
        resources.files("mlwarden.core")
        .joinpath("atlas_case_studies.yaml")
        .read_text(encoding="utf-8")
    )
    return tuple(
        CaseStudy(
            id=raw["id"],
            name=raw["name"],
            date=str(raw.get("incident_date", "")),
            type=str(raw.get("type", "")),
            target=str(raw.get("target", "")),
            techniques=tuple(raw.get("techniques") or ()),
            incidents=tuple(int(n) for n in raw.get("aiid_incidents") or ()),
            url=str(raw.get("url", "")),
        )
        for raw in yaml.safe_load(text)
    )


def _related(a: str, b: str) -> bool:
    """Same technique, or one is a sub-technique of the other (AML.T0043 / AML.T0043.003)."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def case_studies_for(ids: list[str] | tuple[str, ...], limit: int = 3) -> list[CaseStudy]:
    """The case studies that used the techniques ``ids`` (tactics and mitigations are
    ignored), most shared techniques first, then the newest; at most ``limit``.

    >>> [c.id for c in case_studies_for(["AML.T0011.000"], limit=1)]  # doctest: +SKIP
    """
    techniques = [i for i in ids if i.startswith("AML.T") and not i.startswith("AML.TA")]
    if not techniques:
        return []
    scored = []
    for cs in case_studies():
        shared = sum(any(_related(t, u) for u in cs.techniques) for t in techniques)
        exact = sum(t in cs.techniques for t in techniques)
        if shared:
            scored.append((-(shared + exact), _neg_date(cs.date), cs.id, cs))
    return [s[-1] for s in sorted(scored)[:limit]]


def _neg_date(date: str) -> str:
    # newest first in an ascending sort
    return "".join(chr(0x10FFFF - ord(c)) for c in date)
