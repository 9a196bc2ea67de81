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
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlwarden.core.errors import InputFileError, UnsafeArtifactError, UserError
from mlwarden.integrity.dsse import (
    ALIAS_PREDICATE_TYPE,
    PAYLOAD_TYPE,
    PREDICATE_TYPE,
    EnvelopeError,
    SignatureError,
    make_alias_statement,
    make_statement,
    pae,
    parse_envelope,
    sign_statement,
    statement_manifest,
    unverified_statement,
    verify_envelope,
)
from mlwarden.integrity.freshness import HEAD_PREDICATE_TYPE, Head, statement_serial
from mlwarden.integrity.gc import fsck_problems, holds_add_lease, referenced_digests
from mlwarden.integrity.keys import (
    SigningKey,
    VerifyingKey,
    load_signing_key,
    trusted_keys,
    verify_bytes,
)
from mlwarden.integrity.manifest import (
    FileEntry,
    Manifest,
    file_paths,
    list_files,
)
from mlwarden.integrity.safeio import open_dir, sub_dir
from mlwarden.integrity.scanning import Scanner, scan_files
from mlwarden.integrity.store import ObjectStore
from mlwarden.integrity.store_ingest import discard, install_staged, stage_files

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


def _signed_payload(envelope: str, keys: Sequence[VerifyingKey]) -> dict[str, Any] | None:
    """The JSON payload of ``envelope`` if a signature verifies with ``keys`` (any, if none)."""
    try:
        payload, pairs = parse_envelope(envelope)
        if keys:
            message = pae(PAYLOAD_TYPE, payload)
            if not any(verify_bytes(k, sig, message) for k in keys for _, sig in pairs):
                return None
        statement = json.loads(payload)
    except (EnvelopeError, ValueError):
        return None
    return statement if isinstance(statement, dict) else None


def signed_content(
    rec: VersionRecord, keys: Sequence[VerifyingKey]
) -> tuple[Manifest, dict[str, Any]]:
    """The manifest and record of ``rec``'s signed statement, verified with ``keys``.

    The only source of truth for what a signed version contains: raises
    :class:`UserError` when ``rec`` is unsigned, not signed by one of ``keys``, its
    envelope is malformed, or the statement was signed for another name or version.
    """
    if rec.envelope is None:
        raise UserError(f"{rec.ref} is not signed, so nothing vouches for its content")
    try:
        statement, _ = verify_envelope(rec.envelope, list(keys))
    except SignatureError as exc:
        raise UserError(
            f"{rec.ref} is not signed by a trusted key (signed by "
            + ", ".join(k[:16] for k in exc.keyids)
            + "); pass --trust with the publisher's public key"
        ) from None
    except EnvelopeError as exc:
        raise UserError(f"{rec.ref}: its signature envelope is malformed ({exc})") from None
    record = statement["predicate"].get("mlwarden")
    if not isinstance(record, dict):
        raise UserError(f"{rec.ref}: its signed statement has no registry record")
    if record.get("name") != rec.name or record.get("version") != rec.version:
        raise UserError(
            f"{rec.ref}: its signature was made for {record.get('name')}@"
            f"{record.get('version')} (a copied signature)"
        )
    return statement_manifest(statement), record


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
        for name in (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm"):
            # SQLite opens through links; a planted one would receive our writes
            if (root / name).is_symlink():
                raise InputFileError(
                    root / name, "is a symbolic link; refusing to open the registry through it"
                )
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
                    conn.execute(
                        "INSERT OR IGNORE INTO meta (key, value) VALUES ('registry_id', ?)",
                        (uuid.uuid4().hex,),
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

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: every read inside sees the same database state."""
        self.conn.execute("BEGIN")
        try:
            yield self.conn
        finally:
            self.conn.execute("COMMIT")

    # -- reading -----------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def registry_id(self) -> str:
        """This registry's random id (signed into its head); empty for very old registries."""
        return self.meta("registry_id") or ""

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

    @holds_add_lease
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
        trust: Sequence[Path | VerifyingKey] = (),
        signature: Callable[[Manifest], dict[str, Any]] | None = None,
    ) -> VersionRecord:
        """Register the file or folder ``path`` as the next version of ``name``.

        Every file is scanned first (:mod:`.scanning`); a file the scanner does not
        pass as safe is refused with :class:`UnsafeArtifactError` unless ``force`` is
        set with a ``reason``, which is recorded (and signed). ``parents`` are
        ``NAME@VERSION`` refs this version was derived from (e.g. its training data).
        With ``sign_key`` the registry head is signed too (:mod:`.freshness`); the
        current head must verify with that key or one of ``trust``. ``signature``
        checks a publisher's signature against the manifest hashed here (the bytes
        stored) and returns its provenance (:mod:`.registry_signatures`).
        """
        check_name(name)
        if kind not in KINDS:
            raise UserError(f"--kind {kind!r} is not one of: {', '.join(KINDS)}")
        if force and not (reason and reason.strip()):
            raise UserError("--force needs --reason TEXT: why an unsafe file is accepted")
        if not path.exists() and not path.is_symlink():
            raise InputFileError(path, "does not exist")
        key = load_signing_key(sign_key) if sign_key is not None else None
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
        # one read per file: copied into the store's tmp/ and hashed together (store_ingest)
        staged = stage_files(self.store, disk, workers)
        manifest = Manifest(
            {n: FileEntry(d, size) for n, (_, d, size) in zip(names, staged, strict=True)}
        )
        try:
            signed_by = signature(manifest) if signature is not None else None
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
            install_staged(self.store, staged)
        except BaseException:
            discard(self.store, [staged_name for staged_name, _, _ in staged])
            raise
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
                # a single file is signed as model-signing signs one: its resource is "."
                "layout": "file" if path.is_file() else "folder",
                "provenance": {
                    "source": source,
                    "publisher": publisher,
                    "licence": licence,
                    "notes": notes,
                    # a publisher's signature, verified before the add (registry_signatures)
                    **({"signature": signed_by} if signed_by else {}),
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
                head = self._head_for_signing(key, trust)
                head.serial += 1
                record.update(registry=head.registry_id, serial=head.serial)
                env = sign_statement(make_statement(manifest, record), key)
                envelope = json.dumps(env, sort_keys=True)
                signer = env["signatures"][0]["keyid"]
                head.add_version(name, version)
                self._write_head(head, key)
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
        trust: Sequence[Path | VerifyingKey] = (),
    ) -> int | None:
        """Point ``alias`` at ``name@version``; returns the version it pointed at before.

        With ``sign_key`` the move is signed (a DSSE statement naming the alias, the
        version, its manifest digest and the head serial) and the registry head is
        re-signed, so verifying ``NAME@ALIAS`` can tell a current signed move from a
        rewritten or replayed row. A signed version must verify with the signing
        key or one of ``trust`` first: a move is never signed onto a version whose
        signature does not hold (the digest signed is the one its statement signs).
        """
        check_alias(alias)
        key = load_signing_key(sign_key) if sign_key is not None else None
        with self.transaction() as conn:
            rec = self.get(name, version)
            row = conn.execute(
                "SELECT version FROM aliases WHERE name=? AND alias=?", (name, alias)
            ).fetchone()
            before = int(row[0]) if row else None
            when, by = now(), who()
            envelope = None
            if key is not None:
                digest = self._digest_to_sign(rec, self._keys(key, trust))
                head = self._head_for_signing(key, trust)
                head.serial += 1
                statement = make_alias_statement(name, alias, version, digest, by, when)
                statement["predicate"].update(registry=head.registry_id, serial=head.serial)
                envelope = json.dumps(sign_statement(statement, key), sort_keys=True)
                head.move_alias(name, alias, version, digest, head.serial)
                self._write_head(head, key)
            conn.execute(
                "INSERT INTO aliases (name, alias, version, updated, who, envelope)"
                " VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (name, alias) DO UPDATE SET version=excluded.version,"
                " updated=excluded.updated, who=excluded.who, envelope=excluded.envelope",
                (name, alias, version, when, by, envelope),
            )
            self._event(action, name, version, alias, {"previous": before, "signed": bool(key)})
        return before

    def _digest_to_sign(self, rec: VersionRecord, keys: list[VerifyingKey]) -> str:
        if rec.envelope is None:
            if rec.manifest.digest() != rec.manifest_digest:
                raise UserError(f"{rec.ref}: its stored manifest does not match its digest")
            return rec.manifest_digest
        manifest, _ = signed_content(rec, keys)
        return manifest.digest()

    # -- the signed head (freshness) -------------------------------------------------

    @staticmethod
    def _keys(key: SigningKey | None, trust: Sequence[Path | VerifyingKey]) -> list[VerifyingKey]:
        keys = [key.public_key()] if key is not None else []
        return keys + trusted_keys(trust)

    def read_head(self, keys: Sequence[VerifyingKey]) -> tuple[Head | None, str | None]:
        """(head, signer key id): verified with ``keys``, or unverified when none are given.

        None when the registry has no head. Raises :class:`SignatureError` or
        :class:`EnvelopeError` for a head that does not verify or parse.
        """
        envelope = self.meta("head")
        if envelope is None:
            return None, None
        if keys:
            statement, signer = verify_envelope(envelope, list(keys), HEAD_PREDICATE_TYPE)
        else:
            statement, signer = unverified_statement(envelope, HEAD_PREDICATE_TYPE), None
        return Head.from_statement(statement), signer

    def _head_for_signing(self, key: SigningKey, trust: Sequence[Path | VerifyingKey]) -> Head:
        """The current head, verified with the signer's own key or ``trust`` (never blessed blind)."""
        try:
            head, _ = self.read_head(self._keys(key, trust))
        except SignatureError as exc:
            raise UserError(
                "the registry head is not signed by this key or a --trust key (signed by "
                + (", ".join(k[:16] for k in exc.keyids) or "nobody")
                + "); pass --trust with the public key of whoever signed last, or run "
                "'mlwarden registry fsck' if that key is unknown to you"
            ) from None
        except EnvelopeError as exc:
            raise UserError(
                f"the registry head is unreadable ({exc}); run 'mlwarden registry fsck'"
            ) from None
        if head is None:
            return self._bootstrap_head()
        if head.registry_id != self.registry_id():
            raise UserError(
                f"the registry head belongs to registry {head.registry_id[:12]}, not to this "
                f"one ({self.registry_id()[:12]}): it was copied in; run 'mlwarden registry fsck'"
            )
        return head

    def _bootstrap_head(self) -> Head:
        """A first head for a registry signed before heads existed (or never signed)."""
        head = Head(self.registry_id())
        rows = self.conn.execute(
            "SELECT name, version, envelope FROM versions WHERE envelope IS NOT NULL"
        ).fetchall()
        for name, version, envelope in rows:
            if self.local_serial(envelope) is not None:
                raise UserError(
                    f"{name}@{version} was signed under a registry head, but the head is "
                    "missing (deleted?); run 'mlwarden registry fsck' before signing again"
                )
            head.add_version(name, int(version))
        for name, alias, version, envelope in self.conn.execute(
            "SELECT name, alias, version, envelope FROM aliases WHERE envelope IS NOT NULL"
        ).fetchall():
            if self.local_serial(envelope, ALIAS_PREDICATE_TYPE) is not None:
                raise UserError(
                    f"{name}@{alias} was moved under a registry head, but the head is missing"
                    " (deleted?); run 'mlwarden registry fsck' before signing again"
                )
            digest = unverified_statement(envelope, ALIAS_PREDICATE_TYPE)["predicate"].get(
                "manifest_digest"
            )
            head.move_alias(name, alias, int(version), str(digest), 0)
        return head

    def _write_head(self, head: Head, key: SigningKey) -> None:
        envelope = json.dumps(sign_statement(head.statement(who(), now()), key), sort_keys=True)
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES ('head', ?)"
            " ON CONFLICT (key) DO UPDATE SET value=excluded.value",
            (envelope,),
        )

    def local_serial(
        self,
        envelope: str,
        predicate_type: str = PREDICATE_TYPE,
        keys: Sequence[VerifyingKey] = (),
    ) -> int | None:
        """The head serial a statement of THIS registry was signed under (None: older or foreign).

        With ``keys`` only a statement whose signature verifies counts. Reads only the
        serial: the statement's manifest is not parsed (verification does that once).
        """
        statement = _signed_payload(envelope, keys)
        if statement is None or statement.get("predicateType") != predicate_type:
            return None
        registry, serial = statement_serial(statement)
        return serial if registry == self.registry_id() else None

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
        trust: Sequence[Path | VerifyingKey] = (),
    ) -> tuple[int | None, VersionRecord]:
        """Point ``alias`` back at version ``to``; optionally restore its exact bytes to a folder.

        With ``trust`` or ``sign_key`` (whose public key is then trusted) the version
        must be signed by a trusted key, and the restore writes the files and digests
        of its SIGNED statement, never the database's copy of the manifest. Without
        keys an unsigned version is restored from the database manifest (nothing
        better exists), and a signed one only if its statement agrees with it.
        """
        rec = self.get(name, to)
        current = self.aliases(name).get(alias)
        if current is None:
            raise UserError(f"{name} has no alias {alias!r} to roll back; use 'registry alias'")
        key = load_signing_key(sign_key) if sign_key is not None else None
        keys = self._keys(key, trust)
        if restore is not None:
            if keys:
                manifest, _ = signed_content(rec, keys)
            else:
                manifest = rec.manifest
                if rec.envelope is not None:
                    try:
                        st_manifest = statement_manifest(unverified_statement(rec.envelope))
                    except EnvelopeError as exc:
                        raise UserError(
                            f"{rec.ref}: signature envelope is malformed ({exc})"
                        ) from None
                    if st_manifest.to_json() != manifest.to_json():
                        raise UserError(
                            f"{rec.ref}: the database manifest disagrees with its signed "
                            "statement (tampered?); not restored"
                        )
            self.restore(manifest, restore, rec.ref)
        before = self.set_alias(name, to, alias, action="rollback", sign_key=sign_key, trust=trust)
        return before, rec

    def restore(self, manifest: Manifest, dest: Path, ref: str = "version") -> Path:
        """Write the files of ``manifest`` from the store into the new or empty folder ``dest``.

        Link-safe (:mod:`.safeio`): ``dest`` is opened once and every folder and file
        below it is created through descriptors with ``O_EXCL | O_NOFOLLOW``, so
        swapping ``dest`` or a sub-folder for a link afterwards redirects nothing.
        Each object is read once, hashed while it is written, and a file whose bytes
        do not hash to the manifest's digest is removed and refused.
        """
        if dest.is_symlink():
            raise InputFileError(dest, "is a symbolic link; restore into a real folder")
        top = open_dir(dest, create=True)
        folders: dict[str, int] = {"": top}
        try:
            if os.listdir(top):
                raise InputFileError(dest, "exists and is not an empty folder")
            for name, entry in manifest.files.items():
                parent, _, base = name.rpartition("/")
                fd = self._restore_folder(folders, parent, dest)
                try:
                    self.store.copy_out(entry.digest, fd, base, label=str(dest / name))
                except InputFileError as exc:
                    raise UserError(f"cannot restore {ref}: {name}: {exc.problem}") from None
            for fd in folders.values():
                os.fsync(fd)
        finally:
            for fd in folders.values():
                os.close(fd)
        return dest

    @staticmethod
    def _restore_folder(folders: dict[str, int], rel: str, dest: Path) -> int:
        """Descriptor of ``dest/rel``, each component made and opened without following links."""
        if rel in folders:
            return folders[rel]
        parent, _, base = rel.rpartition("/")
        fd = sub_dir(
            Registry._restore_folder(folders, parent, dest),
            base,
            create=True,
            label=str(dest / rel),
        )
        folders[rel] = fd
        return fd

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

    def fsck(
        self,
        trust: Sequence[Path | VerifyingKey] = (),
        remembered: dict[str, Any] | None = None,
    ) -> list[str]:
        """Problems with the registry as a whole (empty when every version is intact).

        Checks SQLite's own integrity, that each version's columns, lineage rows and
        envelope agree with its record and manifest, that every object is a regular,
        singly-linked file hashing to its name, and the signed head
        (:meth:`stale`): deleted signed versions, replayed alias moves, a head put
        back. With ``trust`` the head's and statements' signatures must verify;
        ``remembered`` (:class:`.freshness.RememberedState`) catches a whole
        database rolled back to an older signed state.
        """
        problems: list[str] = []
        ok = self.conn.execute("PRAGMA integrity_check").fetchone()[0]
        if ok != "ok":
            problems.append(f"sqlite integrity_check: {ok}")
        digests: dict[str, str] = {}
        for name in self.names():
            problems += self._fsck_name(name, digests)
        for digest, where in digests.items():
            status = self.store.check(digest)
            if status != "ok":
                problems.append(f"{where}: object {digest[:12]} is {status}")
        for name, alias, version in self.conn.execute(
            "SELECT a.name, a.alias, a.version FROM aliases a LEFT JOIN versions v"
            " ON a.name=v.name AND a.version=v.version WHERE v.name IS NULL"
        ):
            problems.append(f"{name}@{alias} points at missing version {version}")
        keys = self._keys(None, trust)
        problems += [message for _, _, message in self.stale(keys, None, remembered)]
        problems += fsck_problems(self.store.root, referenced_digests(self))
        return problems

    def _fsck_name(self, name: str, digests: dict[str, str]) -> list[str]:
        problems = []
        imported = {e["version"] for e in self.events(name) if e["action"] == "import"}
        expected = 1
        for rec in self.versions(name):
            problems += [f"{rec.ref}: {p}" for p in record_problems(rec)]
            lineage = sorted(
                (str(n), int(v), str(d))
                for n, v, d in self.conn.execute(
                    "SELECT parent_name, parent_version, parent_digest FROM lineage"
                    " WHERE name=? AND version=?",
                    (rec.name, rec.version),
                )
            )
            recorded = sorted(
                (str(p.get("name")), int(p.get("version", 0)), str(p.get("manifest_digest")))
                for p in rec.parents
            )
            if lineage != recorded:
                problems.append(f"{rec.ref}: lineage rows disagree with its record")
            if rec.version != expected and rec.version not in imported:
                problems.append(f"{rec.ref}: version numbers are not contiguous")
            expected = rec.version + 1
            for fname, entry in rec.manifest.files.items():
                digests.setdefault(entry.digest, f"{rec.ref}:{fname}")
        return problems

    def stale(
        self,
        keys: Sequence[VerifyingKey],
        names: Sequence[str] | None = None,
        remembered: dict[str, Any] | None = None,
    ) -> list[tuple[str, str, str]]:
        """Freshness problems as (kind, name or '', message), checked against the signed head.

        ``kind`` is one of ``head`` (missing, unreadable, untrusted or foreign head),
        ``head-old`` (a statement in the database is newer than the head: the head
        was put back), ``rolled-back`` / ``replaced`` (the head is older than, or
        another registry than, what this verifier saw before), ``deleted`` (a
        signed version the head lists is gone) and ``alias`` (an alias is not at
        its last signed move). ``names`` limits the per-name checks.
        """
        try:
            head, _ = self.read_head(keys)
        except SignatureError as exc:
            signers = ", ".join(k[:16] for k in exc.keyids)
            return [("head", "", f"the registry head is not signed by a trusted key ({signers})")]
        except (EnvelopeError, UserError) as exc:
            return [("head", "", f"the registry head is unreadable ({exc})")]
        serials = self._serials(keys, names)
        if head is None:
            if serials or remembered:
                newest = max(serials.values(), default=(remembered or {}).get("serial", 0))
                return [
                    (
                        "head",
                        "",
                        "the signed registry head is missing, but statements signed under a "
                        f"head exist (serial {newest}): it was deleted",
                    )
                ]
            return []
        out = self._stale_head(head, serials, remembered)
        for name in names if names is not None else sorted(head.names):
            out += self._stale_name(head, name, keys)
        return out

    def _serials(self, keys: Sequence[VerifyingKey], names: Sequence[str] | None) -> dict[str, int]:
        """``ref -> serial`` of this registry's statements signed under a head."""
        where = "" if names is None else f" WHERE name IN ({','.join('?' * len(names))})"
        args = tuple(names or ())
        out: dict[str, int] = {}
        for name, version, env in self.conn.execute(
            f"SELECT name, version, envelope FROM versions{where}", args
        ).fetchall():
            serial = self.local_serial(env, PREDICATE_TYPE, keys) if env else None
            if serial is not None:
                out[f"{name}@{version}"] = serial
        for name, alias, env in self.conn.execute(
            f"SELECT name, alias, envelope FROM aliases{where}", args
        ).fetchall():
            serial = self.local_serial(env, ALIAS_PREDICATE_TYPE, keys) if env else None
            if serial is not None:
                out[f"{name}@{alias} (alias move)"] = serial
        return out

    def _stale_head(
        self, head: Head, serials: dict[str, int], remembered: dict[str, Any] | None
    ) -> list[tuple[str, str, str]]:
        out = []
        if head.registry_id != self.registry_id():
            out.append(
                (
                    "head",
                    "",
                    f"the registry head belongs to registry {head.registry_id[:12]}, not "
                    f"this one ({self.registry_id()[:12]}): copied in from elsewhere",
                )
            )
        newer = sorted((s, ref) for ref, s in serials.items() if s > head.serial)
        if newer:
            s, ref = newer[-1]
            out.append(
                (
                    "head-old",
                    "",
                    f"the signed registry head (serial {head.serial}) is older than {ref} "
                    f"(serial {s}): an old head was put back",
                )
            )
        if remembered is not None:
            if remembered["registry_id"] != head.registry_id:
                out.append(
                    (
                        "replaced",
                        "",
                        f"this folder held registry {remembered['registry_id'][:12]} when it "
                        f"was last verified; now it holds {head.registry_id[:12]}",
                    )
                )
            elif remembered["serial"] > head.serial:
                out.append(
                    (
                        "rolled-back",
                        "",
                        f"the registry was rolled back: its signed head has serial "
                        f"{head.serial}, but serial {remembered['serial']} was verified before",
                    )
                )
        return out

    def _stale_name(
        self, head: Head, name: str, keys: Sequence[VerifyingKey]
    ) -> list[tuple[str, str, str]]:
        entry = head.names.get(name)
        if entry is None:
            return []
        out = []
        present = {
            int(v)
            for (v,) in self.conn.execute(
                "SELECT version FROM versions WHERE name=? AND envelope IS NOT NULL", (name,)
            )
        }
        missing = [v for v in entry["signed"] if v not in present]
        if missing:
            refs = ", ".join(f"{name}@{v}" for v in missing)
            newest = " (including the newest)" if entry["latest"] in missing else ""
            out.append(
                (
                    "deleted",
                    name,
                    f"signed version(s) {refs} listed by the signed registry head are missing "
                    f"or lost their signature{newest}: deleted, so an older version is served",
                )
            )
        for alias, want in sorted(entry["aliases"].items()):
            found = self.alias_envelope(name, alias)
            got = None
            if found is not None and found[1] is not None:
                serial = self.local_serial(found[1], ALIAS_PREDICATE_TYPE, keys)
                got = (found[0], serial)
            if got != (want["version"], want["serial"]):
                now_at = "missing" if found is None else f"at version {found[0]}"
                out.append(
                    (
                        "alias",
                        f"{name}@{alias}",
                        f"{name}@{alias} is {now_at}, but its last signed move (registry head)"
                        f" put it at version {want['version']} (serial {want['serial']}): "
                        "a replayed, reverted or unsigned alias move",
                    )
                )
        return out


def record_problems(rec: VersionRecord, envelope: bool = True) -> list[str]:
    """How ``rec``'s columns, record and (with ``envelope``, unverified) statement disagree."""
    problems = []
    if rec.manifest.digest() != rec.manifest_digest:
        problems.append("manifest digest mismatch")
    columns: dict[str, Any] = {"kind": rec.kind, "manifest_digest": rec.manifest_digest}
    columns.update(file_count=len(rec.manifest.files), total_size=rec.manifest.total_size)
    columns.update(created=rec.created, who=rec.who)
    required = ("kind", "manifest_digest")  # the rest only where the record has them
    changed = [
        k
        for k, v in columns.items()
        if (k in required or k in rec.record) and rec.record.get(k) != v
    ]
    if changed:
        problems.append("record disagrees with its columns: " + ", ".join(changed))
    if envelope and rec.envelope is not None:
        try:
            st = unverified_statement(rec.envelope)
            if statement_manifest(st).to_json() != rec.manifest.to_json():
                problems.append("signed statement disagrees with manifest")
            if st["predicate"].get("mlwarden") != rec.record:
                problems.append("signed statement disagrees with the record")
        except (ValueError, UserError) as exc:
            problems.append(f"envelope unreadable ({exc})")
    return problems
