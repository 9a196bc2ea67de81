"""The registry: versioned, aliased, signed artefacts (models, datasets) with lineage.

Layout of a registry folder (``--registry DIR``, else ``$MLWARDEN_REGISTRY``, else
``./.mlwarden``)::

    registry.db        SQLite (WAL): versions, lineage, aliases, event log
    objects/ab/cd...   content-addressed file contents (see :mod:`.store`)
    tmp/               temporary files, renamed into objects/ when complete

A version's metadata (manifest, provenance, lineage, who and when, the DSSE envelope
when signed) is written in ONE SQLite transaction after all its objects are durably
stored, so a crash or ``kill -9`` at any point leaves either the whole version or
none of it, and every committed version's objects are present.

Example::

    reg = Registry.open(Path(".mlwarden"))
    rec = reg.add(Path("model_dir"), name="digits", kind="model", sign_key=Path("k.key"))
    reg.set_alias("digits", rec.version, "production")
    reg.resolve("digits@production").manifest.files
"""

from __future__ import annotations

import getpass
import json
import os
import re
import socket
import sqlite3
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlwarden.core.errors import InputFileError, UnsafeArtifactError, UserError
from mlwarden.integrity.dsse import (
    make_alias_statement,
    make_statement,
    sign_statement,
    statement_manifest,
    unverified_statement,
)
from mlwarden.integrity.keys import load_private_key
from mlwarden.integrity.manifest import (
    Manifest,
    build_manifest,
    compare_folder,
    file_paths,
    list_files,
    symlink_component,
)
from mlwarden.integrity.scanning import Scanner, scan_files
from mlwarden.integrity.store import ObjectStore

KINDS = ("model", "dataset", "other")
DB_NAME = "registry.db"
SCHEMA_VERSION = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS versions (
    name TEXT NOT NULL,
    version INTEGER NOT NULL CHECK (version >= 1),
    kind TEXT NOT NULL,
    manifest TEXT NOT NULL,
    manifest_digest TEXT NOT NULL,
    file_count INTEGER NOT NULL,
    total_size INTEGER NOT NULL,
    record TEXT NOT NULL,
    envelope TEXT,
    signer TEXT,
    created TEXT NOT NULL,
    who TEXT NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS lineage (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    parent_name TEXT NOT NULL,
    parent_version INTEGER NOT NULL,
    parent_digest TEXT NOT NULL,
    PRIMARY KEY (name, version, parent_name, parent_version),
    FOREIGN KEY (name, version) REFERENCES versions (name, version)
);
CREATE TABLE IF NOT EXISTS aliases (
    name TEXT NOT NULL,
    alias TEXT NOT NULL,
    version INTEGER NOT NULL,
    updated TEXT NOT NULL,
    who TEXT NOT NULL,
    envelope TEXT,
    PRIMARY KEY (name, alias),
    FOREIGN KEY (name, version) REFERENCES versions (name, version)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts TEXT NOT NULL,
    who TEXT NOT NULL,
    action TEXT NOT NULL,
    name TEXT NOT NULL,
    version INTEGER,
    alias TEXT,
    detail TEXT NOT NULL DEFAULT '{}'
);
"""


def default_location(registry: Path | str | None = None) -> Path:
    """``registry`` if given, else ``$MLWARDEN_REGISTRY``, else ``./.mlwarden``."""
    if registry:
        return Path(registry)
    env = os.environ.get("MLWARDEN_REGISTRY")
    return Path(env) if env else Path(".mlwarden")


def who() -> str:
    """``user@host`` of the person running this process."""
    try:
        user = getpass.getuser()
    except Exception:  # no login name (containers): fall back to the uid
        user = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
    return f"{user}@{socket.gethostname()}"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def check_name(name: str, what: str = "name") -> str:
    if not _NAME.match(name or ""):
        raise UserError(
            f"{what} {name!r} is not valid; use letters, digits, '.', '_' and '-' "
            "(at most 128 characters, starting with a letter or digit)"
        )
    return name


def check_alias(alias: str) -> str:
    check_name(alias, "alias")
    if alias.isdigit() or alias == "latest":
        raise UserError(f"alias {alias!r} is reserved (numbers and 'latest' name versions)")
    return alias


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``NAME[@VERSION|@ALIAS]`` -> (name, version-or-alias or None)."""
    name, sep, tag = ref.partition("@")
    check_name(name)
    if sep and not tag:
        raise UserError(f"{ref!r}: nothing after '@'; expected NAME@VERSION or NAME@ALIAS")
    return name, (tag or None)


def code_revision(where: Path | None = None) -> str | None:
    """The git commit of ``where`` (default: the working directory), ``+dirty`` if modified."""
    cwd = str(where or Path.cwd())
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = rev.stdout.strip()
    return f"git:{sha}{'+dirty' if dirty.stdout.strip() else ''}"


@dataclass
class VersionRecord:
    """One registered version, as stored (the ``record`` is what a signature covers)."""

    name: str
    version: int
    kind: str
    manifest: Manifest
    manifest_digest: str
    record: dict[str, Any]
    envelope: str | None
    signer: str | None
    created: str
    who: str
    aliases: list[str] = field(default_factory=list)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def parents(self) -> list[dict[str, Any]]:
        return list(self.record.get("lineage", {}).get("parents", []))


class Registry:
    """A registry folder: SQLite metadata plus the content-addressed object store."""

    def __init__(self, root: Path, conn: sqlite3.Connection) -> None:
        self.root = root
        self.conn = conn
        self.store = ObjectStore(root)

    @classmethod
    def open(cls, root: Path | str | None = None, create: bool = True) -> Registry:
        """Open (and with ``create``, initialise) the registry at ``root``."""
        root = default_location(root)
        db = root / DB_NAME
        if not db.exists():
            if not create:
                raise UserError(
                    f"no registry at {root} (no {DB_NAME}); add something first "
                    "or pass --registry DIR / set MLWARDEN_REGISTRY"
                )
            root.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(db, timeout=30, isolation_level=None)
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA foreign_keys=ON")
            reg = cls(root, conn)
            if create:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                with reg.transaction():
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute(
                        "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                        (str(SCHEMA_VERSION),),
                    )
            else:  # opening to read (verify, load_verified) writes nothing
                conn.execute("PRAGMA synchronous=FULL")
                tables = {
                    r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
                }
                if not {"versions", "aliases", "lineage", "events"} <= tables:
                    raise InputFileError(db, "is not an mlwarden registry (tables missing)")
        except sqlite3.DatabaseError as exc:
            raise InputFileError(db, f"is not a usable SQLite registry ({exc})") from None
        if create:
            reg.store.ensure()
        return reg

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any error)."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # -- reading -----------------------------------------------------------------

    def _row_to_record(self, row: sqlite3.Row | tuple[Any, ...]) -> VersionRecord:
        (name, version, kind, manifest, mdigest, record, envelope, signer, created, who_) = row
        aliases = [
            r[0]
            for r in self.conn.execute(
                "SELECT alias FROM aliases WHERE name=? AND version=? ORDER BY alias",
                (name, version),
            )
        ]
        return VersionRecord(
            name=name,
            version=version,
            kind=kind,
            manifest=Manifest.from_json(json.loads(manifest)),
            manifest_digest=mdigest,
            record=json.loads(record),
            envelope=envelope,
            signer=signer,
            created=created,
            who=who_,
            aliases=aliases,
        )

    _COLS = "name, version, kind, manifest, manifest_digest, record, envelope, signer, created, who"

    def names(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT DISTINCT name FROM versions ORDER BY name")]

    def versions(self, name: str) -> list[VersionRecord]:
        rows = self.conn.execute(
            f"SELECT {self._COLS} FROM versions WHERE name=? ORDER BY version", (name,)
        ).fetchall()
        return [self._row_to_record(r) for r in rows]

    def get(self, name: str, version: int) -> VersionRecord:
        row = self.conn.execute(
            f"SELECT {self._COLS} FROM versions WHERE name=? AND version=?", (name, version)
        ).fetchone()
        if row is None:
            known = [
                str(v)
                for (v,) in self.conn.execute(
                    "SELECT version FROM versions WHERE name=? ORDER BY version", (name,)
                )
            ]
            if not known:
                raise UserError(f"no artefact named {name!r} in the registry at {self.root}")
            raise UserError(f"{name} has no version {version}; versions: {', '.join(known)}")
        return self._row_to_record(row)

    def resolve(self, ref: str) -> VersionRecord:
        """``NAME`` (latest), ``NAME@VERSION``, ``NAME@latest`` or ``NAME@ALIAS``."""
        name, tag = parse_ref(ref)
        if tag is None or tag == "latest":
            row = self.conn.execute(
                "SELECT MAX(version) FROM versions WHERE name=?", (name,)
            ).fetchone()
            if row[0] is None:
                raise UserError(f"no artefact named {name!r} in the registry at {self.root}")
            return self.get(name, int(row[0]))
        if tag.isdigit():
            return self.get(name, int(tag))
        row = self.conn.execute(
            "SELECT version FROM aliases WHERE name=? AND alias=?", (name, tag)
        ).fetchone()
        if row is None:
            known = [
                a
                for (a,) in self.conn.execute(
                    "SELECT alias FROM aliases WHERE name=? ORDER BY alias", (name,)
                )
            ]
            raise UserError(
                f"{name} has no alias {tag!r}"
                + (f"; aliases: {', '.join(known)}" if known else " (it has no aliases)")
            )
        return self.get(name, int(row[0]))

    def events(self, name: str) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT ts, who, action, version, alias, detail FROM events WHERE name=? ORDER BY id",
            (name,),
        ).fetchall()
        return [
            {"ts": ts, "who": w, "action": a, "version": v, "alias": al, "detail": json.loads(d)}
            for ts, w, a, v, al, d in rows
        ]

    def aliases(self, name: str) -> dict[str, int]:
        return dict(
            self.conn.execute(
                "SELECT alias, version FROM aliases WHERE name=? ORDER BY alias", (name,)
            ).fetchall()
        )

    # -- writing -----------------------------------------------------------------

    def _event(
        self,
        action: str,
        name: str,
        version: int | None = None,
        alias: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        self.conn.execute(
            "INSERT INTO events (ts, who, action, name, version, alias, detail) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (now(), who(), action, name, version, alias, json.dumps(detail or {}, sort_keys=True)),
        )

    def add(
        self,
        path: Path,
        name: str,
        kind: str = "model",
        parents: Sequence[str] = (),
        source: str | None = None,
        publisher: str | None = None,
        licence: str | None = None,
        notes: str | None = None,
        params: dict[str, Any] | None = None,
        code_rev: str | None = None,
        sign_key: Path | None = None,
        force: bool = False,
        reason: str | None = None,
        scanner: Scanner | None = None,
        workers: int | None = None,
    ) -> VersionRecord:
        """Register the file or folder ``path`` as the next version of ``name``.

        Every file is scanned first (:mod:`.scanning`); a file the scanner does not
        pass as safe is refused with :class:`UnsafeArtifactError` unless ``force`` is
        set with a ``reason``, which is recorded (and signed). ``parents`` are
        ``NAME@VERSION`` refs this version was derived from (e.g. its training data).
        """
        check_name(name)
        if kind not in KINDS:
            raise UserError(f"--kind {kind!r} is not one of: {', '.join(KINDS)}")
        if force and not (reason and reason.strip()):
            raise UserError("--force needs --reason TEXT: why an unsafe file is accepted")
        if not path.exists() and not path.is_symlink():
            raise InputFileError(path, "does not exist")
        key = load_private_key(sign_key) if sign_key is not None else None
        existing = self.conn.execute(
            "SELECT kind FROM versions WHERE name=? LIMIT 1", (name,)
        ).fetchone()
        if existing is not None and existing[0] != kind:
            raise UserError(f"{name} is registered as a {existing[0]}, not a {kind}")

        lineage = []
        for ref in parents:
            parent = self.resolve(ref)
            lineage.append(
                {
                    "name": parent.name,
                    "version": parent.version,
                    "kind": parent.kind,
                    "manifest_digest": parent.manifest_digest,
                }
            )

        names = list_files(path, skip_dirs=[self.root])  # never the registry itself
        disk = file_paths(path, names)
        manifest = build_manifest(path, workers=workers, names=names)
        outcome = scan_files(disk, scanner=scanner)
        refused = outcome.refused
        if refused and not force:
            lines = [
                f"{p}: {v}" + (f" ({outcome.details[p]})" if p in outcome.details else "")
                for p, v in list(refused.items())[:10]
            ]
            raise UnsafeArtifactError(
                f"refused to register {name}: the model-file scanner did not pass "
                f"{len(refused)} file(s): "
                + "; ".join(lines)
                + ". Fix or remove them, or pass --force --reason TEXT to record why you accept them."
            )

        rel_of = {str(p): n for p, n in zip(disk, names, strict=True)}
        self.store.put_many(
            [(p, manifest.files[n].digest) for p, n in zip(disk, names, strict=True)],
        )

        scan = {
            "verdicts": {
                v: sum(1 for x in outcome.verdicts.values() if x == v)
                for v in sorted(set(outcome.verdicts.values()))
            },
            "refused": {rel_of.get(p, p): v for p, v in refused.items()},
        }
        with self.transaction() as conn:
            row = conn.execute("SELECT MAX(version) FROM versions WHERE name=?", (name,)).fetchone()
            version = int(row[0] or 0) + 1
            record: dict[str, Any] = {
                "name": name,
                "version": version,
                "kind": kind,
                "manifest_digest": manifest.digest(),
                "file_count": len(manifest.files),
                "total_size": manifest.total_size,
                "provenance": {
                    "source": source,
                    "publisher": publisher,
                    "licence": licence,
                    "notes": notes,
                },
                "lineage": {
                    "parents": lineage,
                    "code_revision": code_rev,
                    "params": params or {},
                },
                "scan": scan,
                "forced": {"reason": reason.strip()} if (force and refused and reason) else None,
                "who": who(),
                "created": now(),
            }
            envelope = signer = None
            if key is not None:
                env = sign_statement(make_statement(manifest, record), key)
                envelope = json.dumps(env, sort_keys=True)
                signer = env["signatures"][0]["keyid"]
            conn.execute(
                "INSERT INTO versions (name, version, kind, manifest, manifest_digest, file_count,"
                " total_size, record, envelope, signer, created, who)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    name,
                    version,
                    kind,
                    json.dumps(manifest.to_json(), sort_keys=True),
                    record["manifest_digest"],
                    record["file_count"],
                    record["total_size"],
                    json.dumps(record, sort_keys=True),
                    envelope,
                    signer,
                    record["created"],
                    record["who"],
                ),
            )
            for p in lineage:
                conn.execute(
                    "INSERT INTO lineage VALUES (?, ?, ?, ?, ?)",
                    (name, version, p["name"], p["version"], p["manifest_digest"]),
                )
            self._event(
                "add",
                name,
                version,
                detail={
                    "manifest_digest": record["manifest_digest"],
                    "signed_by": signer,
                    "forced": record["forced"],
                },
            )
        return self.get(name, version)

    def set_alias(
        self,
        name: str,
        version: int,
        alias: str,
        action: str = "alias",
        sign_key: Path | None = None,
    ) -> int | None:
        """Point ``alias`` at ``name@version``; returns the version it pointed at before.

        With ``sign_key`` the move is signed (a DSSE statement naming the alias, the
        version and its manifest digest), so verifying ``NAME@ALIAS`` can tell a
        signed move from a database row someone rewrote.
        """
        check_alias(alias)
        rec = self.get(name, version)
        key = load_private_key(sign_key) if sign_key is not None else None
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT version FROM aliases WHERE name=? AND alias=?", (name, alias)
            ).fetchone()
            before = int(row[0]) if row else None
            when, by = now(), who()
            envelope = None
            if key is not None:
                statement = make_alias_statement(
                    name, alias, version, rec.manifest_digest, by, when
                )
                envelope = json.dumps(sign_statement(statement, key), sort_keys=True)
            conn.execute(
                "INSERT INTO aliases (name, alias, version, updated, who, envelope)"
                " VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (name, alias) DO UPDATE SET version=excluded.version,"
                " updated=excluded.updated, who=excluded.who, envelope=excluded.envelope",
                (name, alias, version, when, by, envelope),
            )
            self._event(action, name, version, alias, {"previous": before, "signed": bool(key)})
        return before

    def alias_envelope(self, name: str, alias: str) -> tuple[int, str | None] | None:
        """(version, signed envelope or None) of ``name@alias``; None if there is no alias."""
        row = self.conn.execute(
            "SELECT version, envelope FROM aliases WHERE name=? AND alias=?", (name, alias)
        ).fetchone()
        return (int(row[0]), row[1]) if row else None

    def rollback(
        self,
        name: str,
        alias: str,
        to: int,
        restore: Path | None = None,
        sign_key: Path | None = None,
    ) -> tuple[int | None, VersionRecord]:
        """Point ``alias`` back at version ``to``; optionally restore its exact bytes to a folder."""
        rec = self.get(name, to)
        current = self.aliases(name).get(alias)
        if current is None:
            raise UserError(f"{name} has no alias {alias!r} to roll back; use 'registry alias'")
        if restore is not None:
            self.restore(rec, restore)
        before = self.set_alias(name, to, alias, action="rollback", sign_key=sign_key)
        return before, rec

    def restore(self, rec: VersionRecord, dest: Path) -> Path:
        """Write the exact bytes of ``rec`` into the new or empty folder ``dest``; re-verified."""
        if dest.is_symlink():
            raise InputFileError(dest, "is a symbolic link; restore into a real folder")
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise InputFileError(dest, "exists and is not an empty folder")
        dest.mkdir(parents=True, exist_ok=True)
        for name, entry in rec.manifest.files.items():
            status = self.store.check(entry.digest)
            if status != "ok":
                raise UserError(f"cannot restore {rec.ref}: object for {name} is {status}")
            target = dest.joinpath(*name.split("/"))
            if symlink_component(dest, name) is not None:
                raise UserError(f"refusing to restore {name}: a folder on its path is a link")
            target.parent.mkdir(parents=True, exist_ok=True)
            self.store.export_to(entry.digest, target)
        diff = compare_folder(rec.manifest, dest)
        if not diff.clean:
            raise UserError(f"restored copy of {rec.ref} does not match its manifest: {diff}")
        return dest

    def import_version(
        self, rec_json: dict[str, Any], manifest: Manifest, envelope: str | None
    ) -> tuple[VersionRecord, bool]:
        """Insert a version whose objects are already stored; (record, False) if already present."""
        name = check_name(str(rec_json.get("name", "")))
        version = rec_json.get("version")
        kind = rec_json.get("kind")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise UserError("bundle record has no integer version >= 1")
        if kind not in KINDS:
            raise UserError(f"bundle record kind {kind!r} is not one of {', '.join(KINDS)}")
        if rec_json.get("manifest_digest") != manifest.digest():
            raise UserError("bundle record's manifest_digest does not match its manifest")
        for entry in manifest.files.values():
            if self.store.check(entry.digest) != "ok":
                raise UserError(f"bundle object {entry.digest} is missing or corrupt")
        signer = None
        if envelope is not None:
            env = json.loads(envelope)
            signer = env["signatures"][0].get("keyid")
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT manifest_digest, kind FROM versions WHERE name=? AND version=?",
                (name, version),
            ).fetchone()
            if row is not None:
                if row[0] == manifest.digest():
                    return self.get(name, version), False
                raise UserError(
                    f"{name}@{version} already exists here with different content; "
                    "refusing to overwrite it"
                )
            other = conn.execute(
                "SELECT kind FROM versions WHERE name=? LIMIT 1", (name,)
            ).fetchone()
            if other is not None and other[0] != kind:
                raise UserError(f"{name} is registered here as a {other[0]}, not a {kind}")
            conn.execute(
                "INSERT INTO versions (name, version, kind, manifest, manifest_digest, file_count,"
                " total_size, record, envelope, signer, created, who)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    name,
                    version,
                    kind,
                    json.dumps(manifest.to_json(), sort_keys=True),
                    manifest.digest(),
                    len(manifest.files),
                    manifest.total_size,
                    json.dumps(rec_json, sort_keys=True),
                    envelope,
                    signer,
                    str(rec_json.get("created", now())),
                    str(rec_json.get("who", "unknown")),
                ),
            )
            for p in rec_json.get("lineage", {}).get("parents", []):
                conn.execute(
                    "INSERT INTO lineage VALUES (?, ?, ?, ?, ?)",
                    (name, version, p["name"], p["version"], p["manifest_digest"]),
                )
            self._event("import", name, version, detail={"manifest_digest": manifest.digest()})
        return self.get(name, version), True

    # -- consistency -------------------------------------------------------------

    def fsck(self) -> list[str]:
        """Problems with the registry as a whole (empty when every version is intact).

        Checks SQLite's own integrity, that each version's stored record and
        envelope agree with its manifest, and that every object hashes to its name.
        Signatures are checked against trusted keys by :func:`.verify.verify_report`.
        """
        problems: list[str] = []
        ok = self.conn.execute("PRAGMA integrity_check").fetchone()[0]
        if ok != "ok":
            problems.append(f"sqlite integrity_check: {ok}")
        digests: dict[str, str] = {}
        for name in self.names():
            expected = 1
            for rec in self.versions(name):
                if rec.manifest.digest() != rec.manifest_digest:
                    problems.append(f"{rec.ref}: manifest digest mismatch")
                if rec.record.get("manifest_digest") != rec.manifest_digest:
                    problems.append(f"{rec.ref}: record disagrees with manifest")
                if rec.envelope is not None:
                    try:
                        st = unverified_statement(rec.envelope)
                        if statement_manifest(st).to_json() != rec.manifest.to_json():
                            problems.append(f"{rec.ref}: signed statement disagrees with manifest")
                    except (ValueError, UserError) as exc:
                        problems.append(f"{rec.ref}: envelope unreadable ({exc})")
                if rec.version != expected and "import" not in {
                    e["action"] for e in self.events(name) if e["version"] == rec.version
                }:
                    problems.append(f"{rec.ref}: version numbers are not contiguous")
                expected = rec.version + 1
                for fname, entry in rec.manifest.files.items():
                    digests.setdefault(entry.digest, f"{rec.ref}:{fname}")
        for digest, where in digests.items():
            status = self.store.check(digest)
            if status != "ok":
                problems.append(f"{where}: object {digest[:12]} is {status}")
        for name, alias, version in self.conn.execute(
            "SELECT a.name, a.alias, a.version FROM aliases a LEFT JOIN versions v"
            " ON a.name=v.name AND a.version=v.version WHERE v.name IS NULL"
        ):
            problems.append(f"{name}@{alias} points at missing version {version}")
        return problems
