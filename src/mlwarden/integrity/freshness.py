"""Freshness and completeness: a signed head over the registry, and the verifier's memory.

A signature proves who made a statement, not that it is still current: someone who
can write the registry folder can put back an old signed alias move, delete the
newest signed version (so ``NAME`` resolves to an older one) or copy back a whole
older database, and every remaining signature still verifies. Following TUF's
snapshot and timestamp roles (Samuel et al., "Survivable Key Compromise in Software
Update Systems", CCS 2010), every signed registry operation also signs a **head**:

* a registry-wide ``serial`` that grows by one with every signed operation; the
  version statement (record field ``serial``) and the alias-move statement
  (predicate field ``serial``) signed in that operation carry the same number;
* for every name, the signed versions (``signed``, ``latest``) and each alias's
  signed state (version, manifest digest, serial of its move).

A verifier then detects, with the signer's public key alone: a signed version the
head lists but the database lacks (deleted newest version, a downgrade), an alias
whose signed move is not the one the head records (a replayed move), and a head
older than a statement in the database (a head put back). A rollback of the WHOLE
database to an older, self-consistent signed state needs memory: the verifier
keeps the highest serial it has seen per registry (:class:`RememberedState`, in
``$MLWARDEN_STATE_DIR``, else ``$XDG_CONFIG_HOME/mlwarden/registry-state``, else
``~/.config/mlwarden/registry-state``) and reports a head older than that.

Example::

    head = Head.from_statement(unverified_statement(envelope, HEAD_PREDICATE_TYPE))
    head.names["digits"]["latest"]
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlwarden.integrity.dsse import STATEMENT_TYPE, EnvelopeError
from mlwarden.integrity.safeio import create_temp, open_dir

#: Predicate of the signed registry head (mlwarden's own).
HEAD_PREDICATE_TYPE = "https://mlwarden.dev/registry/head/v1"


def _int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise EnvelopeError(f"registry head: {what} is not a non-negative integer")
    return value


@dataclass
class Head:
    """The signed state of a registry: serial, and per name its signed versions and aliases."""

    registry_id: str
    serial: int = 0
    names: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_statement(cls, statement: dict[str, Any]) -> Head:
        """Parse a head statement (signature already checked, or explicitly not)."""
        if statement.get("predicateType") != HEAD_PREDICATE_TYPE:
            raise EnvelopeError(f"not a registry head ({statement.get('predicateType')!r})")
        p = statement.get("predicate")
        if not isinstance(p, dict) or not isinstance(p.get("names"), dict):
            raise EnvelopeError("registry head has no names")
        names: dict[str, dict[str, Any]] = {}
        for name, entry in p["names"].items():
            if not isinstance(entry, dict) or not isinstance(entry.get("aliases"), dict):
                raise EnvelopeError(f"registry head entry for {name!r} is malformed")
            signed = entry.get("signed")
            if not isinstance(signed, list):
                raise EnvelopeError(f"registry head entry for {name!r} has no version list")
            aliases = {}
            for alias, a in entry["aliases"].items():
                if not isinstance(a, dict):
                    raise EnvelopeError(f"registry head alias {name}@{alias} is malformed")
                aliases[str(alias)] = {
                    "version": _int(a.get("version"), f"{name}@{alias} version"),
                    "manifest_digest": str(a.get("manifest_digest")),
                    "serial": _int(a.get("serial"), f"{name}@{alias} serial"),
                }
            names[str(name)] = {
                "latest": _int(entry.get("latest"), f"{name} latest"),
                "signed": sorted(_int(v, f"{name} version") for v in signed),
                "aliases": aliases,
            }
        return cls(str(p.get("registry_id", "")), _int(p.get("serial"), "serial"), names)

    def statement(self, who: str, when: str) -> dict[str, Any]:
        """The in-toto statement to sign for this head."""
        names = json.dumps(self.names, sort_keys=True, separators=(",", ":")).encode()
        return {
            "_type": STATEMENT_TYPE,
            "subject": [
                {
                    "name": f"registry:{self.registry_id}",
                    "digest": {"sha256": hashlib.sha256(names).hexdigest()},
                }
            ],
            "predicateType": HEAD_PREDICATE_TYPE,
            "predicate": {
                "registry_id": self.registry_id,
                "serial": self.serial,
                "names": self.names,
                "who": who,
                "when": when,
            },
        }

    def _entry(self, name: str) -> dict[str, Any]:
        return self.names.setdefault(name, {"latest": 0, "signed": [], "aliases": {}})

    def add_version(self, name: str, version: int) -> None:
        entry = self._entry(name)
        entry["signed"] = sorted(set(entry["signed"]) | {version})
        entry["latest"] = max(entry["latest"], version)

    def move_alias(self, name: str, alias: str, version: int, digest: str, serial: int) -> None:
        self._entry(name)["aliases"][alias] = {
            "version": version,
            "manifest_digest": digest,
            "serial": serial,
        }


def statement_serial(statement: dict[str, Any]) -> tuple[str | None, int | None]:
    """(registry id, serial) a version or alias statement was signed under (None if older)."""
    p = statement.get("predicate")
    if not isinstance(p, dict):
        return None, None
    holder = p["mlwarden"] if isinstance(p.get("mlwarden"), dict) else p
    serial = holder.get("serial")
    if isinstance(serial, bool) or not isinstance(serial, int):
        return None, None
    return str(holder.get("registry")), serial


def state_dir() -> Path:
    """Where verifiers remember the registry heads they have seen (outside any registry)."""
    env = os.environ.get("MLWARDEN_STATE_DIR")
    if env:
        return Path(env)
    config = os.environ.get("XDG_CONFIG_HOME")
    if not config:
        try:
            config = str(Path.home() / ".config")
        except (RuntimeError, KeyError):  # no home folder (some containers): the working folder
            config = ".mlwarden-state"
    return Path(config) / "mlwarden" / "registry-state"


class RememberedState:
    """The highest signed head serial this user has verified, per registry folder."""

    def __init__(self, registry_root: Path, folder: Path | None = None) -> None:
        self.folder = folder or state_dir()
        where = os.path.realpath(registry_root)
        self.name = hashlib.sha256(where.encode()).hexdigest()[:32] + ".json"
        self.path = self.folder / self.name
        self.where = where

    def load(self) -> dict[str, Any] | None:
        """The remembered ``{"registry_id", "serial"}``, None when never seen.

        An unreadable file raises ``ValueError``: losing the memory must not look
        like a first visit.
        """
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ValueError(f"{self.path} cannot be read ({exc.strerror})") from None
        try:
            doc = json.loads(text)
            _int(doc["serial"], "remembered serial")
            return {"registry_id": str(doc["registry_id"]), "serial": doc["serial"]}
        except (ValueError, KeyError, TypeError, EnvelopeError):
            raise ValueError(f"{self.path} is not a remembered registry state") from None

    def save(self, registry_id: str, serial: int) -> None:
        """Remember ``serial`` (written link-safely: temporary file, then rename)."""
        doc = {"registry": self.where, "registry_id": registry_id, "serial": serial}
        folder = open_dir(self.folder, create=True)
        try:
            fd, tmp = create_temp(folder, ".state-")
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump(doc, f, sort_keys=True)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.name, src_dir_fd=folder, dst_dir_fd=folder)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=folder)
                raise
        finally:
            os.close(folder)
