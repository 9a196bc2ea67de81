"""OpenSSF model-signing's statement: parse it, serialize a folder its way, compare.

model-signing 1.x (github.com/sigstore/model-transparency) signs an in-toto Statement
v1 with predicate type ``https://model_signing/signature/v1.0``: one subject (the
model's folder name, digest = SHA-256 over the raw resource digests in listed order)
and a predicate with ``serialization`` (``method`` files | shards, ``hash_type``
sha256 | blake2b | blake3, ``shard_size``, ``allow_symlinks``, ``ignore_paths``) and
``resources`` (``name``, ``algorithm``, ``digest``). Sharded resources are named
``path:start:end`` (bytes, end excluded) with algorithm ``<hash>-sharded-<size>``;
empty files have no shard. A single-file model has one resource named ``.``.
Statements of model-signing 0.2 (predicate ``https://model_signing/Digests/v0.1``, one
subject per file) are read as model-signing 1.x reads them (:func:`parse_statement`).

Every name is checked before it touches the file system (no absolute paths, ``..``,
backslashes, NUL), and folders are walked without following links.

Example::

    signed = parse_statement(statement)
    actual = serialize(Path("model"), signed.serialization, skip={"model.sig"})
    diff = compare(signed, actual)
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlwarden.integrity.dsse import PREDICATE_TYPE, STATEMENT_TYPE
from mlwarden.integrity.hashing import CHUNK, default_workers
from mlwarden.integrity.manifest import UnsafeManifestError, check_relpath, scan_tree

HASH_TYPES = ("sha256", "blake2b", "blake3")
#: What model-signing's CLI ignores unless told otherwise.
GIT_PATHS = (".git", ".gitattributes", ".github", ".gitignore")
#: Smallest shard size accepted (bytes); smaller would make a payload of millions of shards.
MIN_SHARD = 4096
#: Predicate of model-signing 0.2 (before 1.0): one subject per file, nothing else.
PREDICATE_TYPE_V01 = "https://model_signing/Digests/v0.1"
#: The only hashing 0.2 statements are read with (as model-signing 1.x reads them).
_V01_HASH = "file-sha256"


class StatementError(ValueError):
    """A signed statement that is not a well-formed model-signing v1.0 statement."""


@dataclass(frozen=True)
class Serialization:
    """How a model was turned into resources (model-signing's ``serialization``)."""

    method: str = "files"
    hash_type: str = "sha256"
    shard_size: int = 1_000_000_000
    allow_symlinks: bool = False
    ignore_paths: tuple[str, ...] = ()

    def algorithm(self) -> str:
        """The ``algorithm`` each resource must carry."""
        if self.method == "shards":
            return f"{self.hash_type}-sharded-{self.shard_size}"
        return self.hash_type

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "method": self.method,
            "hash_type": self.hash_type,
            "allow_symlinks": self.allow_symlinks,
        }
        if self.method == "shards":
            out["shard_size"] = self.shard_size
        if self.ignore_paths:
            out["ignore_paths"] = list(self.ignore_paths)
        return out


@dataclass
class SignedModel:
    """What a statement signs: model name, root digest, serialization, name -> hex digest."""

    name: str
    root_digest: str
    serialization: Serialization
    resources: dict[str, str]
    #: ``ignore_paths`` entries that could name something outside the folder (not honoured).
    unsafe_ignores: list[str] = field(default_factory=list)
    #: ``v1.0``, or ``v0.2`` for model-signing's pre-1.0 statement (no name, no settings).
    format: str = "v1.0"


def _int(value: object, what: str) -> int:
    # protobuf's JSON Struct turns integers into floats (1024 -> 1024.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise StatementError(f"{what} is {value!r}; expected an integer")
    return int(value)


def parse_serialization(data: object) -> tuple[Serialization, list[str]]:
    """Serialization settings of a statement and the ``ignore_paths`` entries not honoured."""
    if not isinstance(data, dict):
        raise StatementError("predicate.serialization is not an object")
    method, hash_type = data.get("method"), data.get("hash_type")
    if method not in ("files", "shards"):
        raise StatementError(
            f"serialization method {method!r} is unknown; expected files or shards"
        )
    if hash_type not in HASH_TYPES:
        raise StatementError(
            f"hash_type {hash_type!r} is unknown; expected {', '.join(HASH_TYPES)}"
        )
    shard = _int(data.get("shard_size"), "shard_size") if method == "shards" else 1_000_000_000
    if shard < MIN_SHARD:
        raise StatementError(f"shard_size {shard} is below {MIN_SHARD} bytes")
    allow = data.get("allow_symlinks", False)
    if allow in ("true", "false"):  # model-signing's pre-1.0 compatibility form
        allow = allow == "true"
    if not isinstance(allow, bool):
        raise StatementError(f"allow_symlinks is {allow!r}; expected true or false")
    raw = data.get("ignore_paths", [])
    if not isinstance(raw, list) or not all(isinstance(p, str) for p in raw):
        raise StatementError("ignore_paths is not a list of strings")
    kept, unsafe = [], []
    for entry in raw:
        cleaned = entry.rstrip("/")
        try:
            kept.append(check_relpath(cleaned))
        except UnsafeManifestError:
            unsafe.append(entry)
    return Serialization(method, hash_type, shard, allow, tuple(kept)), unsafe


def _resource_path(name: str, method: str) -> tuple[str, int, int]:
    """(file path, start, end) of a resource name; ``end`` is -1 for a whole file."""
    if method == "files":
        return name, 0, -1
    parts = name.rsplit(":", 2)
    if len(parts) != 3 or not (parts[1].isdigit() and parts[2].isdigit()):
        raise StatementError(f"shard name {name!r} is not PATH:START:END")
    if int(parts[1]) >= int(parts[2]):
        raise StatementError(f"shard name {name!r} ends before it starts")
    return parts[0], int(parts[1]), int(parts[2])


def parse_statement(statement: object) -> SignedModel:
    """Check a model-signing v1.0 statement and return what it signs.

    Raises :class:`StatementError` for a malformed statement (wrong types, root digest
    that does not match its resources, duplicate names) and
    :class:`~mlwarden.integrity.manifest.UnsafeManifestError` for a resource name that
    could escape the model folder.
    """
    if not isinstance(statement, dict):
        raise StatementError("the signed payload is not a JSON object")
    if statement.get("_type") != STATEMENT_TYPE:
        raise StatementError(f"_type is {statement.get('_type')!r}; expected {STATEMENT_TYPE}")
    if statement.get("predicateType") == PREDICATE_TYPE_V01:
        return _parse_v01(statement.get("subject"))
    if statement.get("predicateType") != PREDICATE_TYPE:
        raise StatementError(
            f"predicateType is {statement.get('predicateType')!r}; expected {PREDICATE_TYPE}"
        )
    subjects, predicate = statement.get("subject"), statement.get("predicate")
    if not isinstance(subjects, list) or not isinstance(predicate, dict):
        raise StatementError("subject is not a list or predicate is not an object")
    ser, unsafe = parse_serialization(predicate.get("serialization"))
    resources = predicate.get("resources")
    if not isinstance(resources, list):
        raise StatementError("predicate.resources is not a list")
    algorithm, out, root = ser.algorithm(), {}, hashlib.sha256()
    for r in resources:
        if not isinstance(r, dict) or not all(
            isinstance(r.get(k), str) for k in ("name", "algorithm", "digest")
        ):
            raise StatementError("a resource is not {name, algorithm, digest} strings")
        name, digest = r["name"], r["digest"].lower()
        if r["algorithm"] != algorithm:
            raise StatementError(
                f"resource {name!r} has algorithm {r['algorithm']!r}; the serialization says {algorithm!r}"
            )
        try:
            raw = bytes.fromhex(digest)
        except ValueError:
            raise StatementError(f"resource {name!r} has a digest that is not hex") from None
        if len(raw) != _digest_size(ser.hash_type):
            raise StatementError(
                f"resource {name!r} has a {len(raw)}-byte digest; {ser.hash_type} has {_digest_size(ser.hash_type)}"
            )
        if name in out:
            raise StatementError(f"resource {name!r} is listed twice")
        out[name] = digest
        root.update(raw)
    paths = {_resource_path(name, ser.method)[0] for name in out}
    if paths != {"."}:  # "." is model-signing's name for a single-file model
        for path in paths:
            check_relpath(path)
    return SignedModel(
        _subject(statement, subjects, root.hexdigest()), root.hexdigest(), ser, out, unsafe
    )


def _parse_v01(subjects: object) -> SignedModel:
    """model-signing 0.2's statement, read as model-signing 1.x reads it.

    Each subject is a file (``name``, ``digest.sha256``); there is no model name, no
    root digest and no serialization record, so the files are hashed whole with
    SHA-256, links refused, nothing ignored but the signature file and git's own.
    A subject hashed another way (its ``actual_hash_algorithm`` annotation), a
    duplicate name or a name that escapes the folder is refused.
    """
    if not isinstance(subjects, list) or not subjects:
        raise StatementError("the pre-1.0 (v0.2) statement lists no file as a subject")
    out: dict[str, str] = {}
    for s in subjects:
        digest = s.get("digest") if isinstance(s, dict) else None
        if not isinstance(digest, dict) or not isinstance(s.get("name"), str):
            raise StatementError("a pre-1.0 (v0.2) subject is not {name, digest}")
        name, hexdigest = s["name"], digest.get("sha256")
        notes = s.get("annotations")
        how = (
            notes.get("actual_hash_algorithm", _V01_HASH) if isinstance(notes, dict) else _V01_HASH
        )
        if how != _V01_HASH:
            raise StatementError(
                f"pre-1.0 (v0.2) subject {name!r} was hashed as {how!r}; neither mlwarden nor "
                "model-signing 1.x can check that: ask the publisher to re-sign with model-signing 1.x"
            )
        if not isinstance(hexdigest, str) or len(hexdigest) != 64:
            raise StatementError(f"pre-1.0 (v0.2) subject {name!r} has no SHA-256 digest")
        try:
            bytes.fromhex(hexdigest)
        except ValueError:
            raise StatementError(f"subject {name!r} has a digest that is not hex") from None
        if name in out:
            raise StatementError(f"subject {name!r} is listed twice")
        out[name] = hexdigest.lower()
    if set(out) != {"."}:
        for name in out:
            check_relpath(name)
    root = hashlib.sha256(b"".join(bytes.fromhex(out[n]) for n in sorted(out))).hexdigest()
    return SignedModel("", root, Serialization(), out, [], "v0.2")


def _subject(statement: dict[str, Any], subjects: list[Any], root: str) -> str:
    """The model name; the subject's digest must be the root digest of the resources."""
    if len(subjects) != 1 or not isinstance(subjects[0], dict):
        # mlwarden's registry statements list one subject per file and carry the root digest
        pred = statement["predicate"]
        if "mlwarden" in pred and pred.get("root_digest", {}).get("sha256") == root:
            return (
                str(pred["mlwarden"].get("name", "")) if isinstance(pred["mlwarden"], dict) else ""
            )
        raise StatementError(f"expected one subject (the model); the statement has {len(subjects)}")
    digest = subjects[0].get("digest")
    if not isinstance(digest, dict) or digest.get("sha256") != root:
        raise StatementError(
            "the subject's digest is not the root digest of the resources (inconsistent statement)"
        )
    name = subjects[0].get("name")
    return name if isinstance(name, str) else ""


def _digest_size(hash_type: str) -> int:
    return 64 if hash_type == "blake2b" else 32


def _new_hasher(hash_type: str) -> Any:
    if hash_type == "sha256":
        return hashlib.sha256()
    if hash_type == "blake2b":
        return hashlib.blake2b()
    try:
        import blake3
    except ImportError:
        from mlwarden.core.errors import UserError

        raise UserError(
            "this signature uses BLAKE3; install the 'blake3' package to verify it"
        ) from None
    return blake3.blake3()


def hash_range(path: str, hash_type: str, start: int = 0, end: int = -1) -> str:
    """Hex digest of bytes ``[start, end)`` of ``path`` (``end=-1``: to the end), read with pread."""
    h = _new_hasher(hash_type)
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        pos = start
        while end < 0 or pos < end:
            want = CHUNK if end < 0 else min(CHUNK, end - pos)
            n = os.preadv(fd, [view[:want]], pos)
            if not n:
                break
            h.update(view[:n])
            pos += n
    finally:
        os.close(fd)
    return str(h.hexdigest())


def _ignored(rel: str, ignores: Iterable[str]) -> bool:
    return any(rel == p or rel.startswith(p + "/") for p in ignores)


@dataclass
class Serialized:
    """A folder serialized for comparison: resource name -> digest, plus what was not hashed."""

    resources: dict[str, str] = field(default_factory=dict)
    symlinks: list[str] = field(default_factory=list)
    special: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)
    #: Links whose target is outside the folder (never read, even when links are allowed).
    outside_links: list[str] = field(default_factory=list)


def _units(
    root: Path, ser: Serialization, files: dict[str, str]
) -> list[tuple[str, str, int, int]]:
    """(resource name, path on disk, start, end) for every file (every shard)."""
    units = []
    for rel, disk in sorted(files.items()):
        if ser.method == "files":
            units.append((rel, disk, 0, -1))
            continue
        size = os.stat(disk).st_size
        for start in range(0, size, ser.shard_size):
            end = min(start + ser.shard_size, size)
            units.append((f"{rel}:{start}:{end}", disk, start, end))
    return units


def serialize(
    root: Path,
    ser: Serialization,
    skip: Iterable[str] = (),
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Serialized:
    """Hash ``root`` (file or folder) the way model-signing does with ``ser``.

    Paths in ``ser.ignore_paths`` and ``skip`` (and everything under them) are left
    out. Symbolic links are never followed unless ``ser.allow_symlinks``; then links
    to files inside ``root`` are hashed as the file they point to (model-signing's
    behaviour), and every link is still listed in ``symlinks``.
    """
    from concurrent.futures import ThreadPoolExecutor

    out = Serialized()
    ignores = tuple(ser.ignore_paths) + tuple(skip)
    if root.is_file() and not root.is_symlink():
        files = {".": str(root)}
    else:
        found, links, special = scan_tree(root)
        files = {r: p for r, p in found.items() if not _ignored(r, ignores)}
        out.symlinks = [r for r in links if not _ignored(r, ignores)]
        out.special = [r for r in special if not _ignored(r, ignores)]
        if ser.allow_symlinks:
            real_root = root.resolve()
            for rel in out.symlinks:
                target = (root / rel).resolve()
                if not target.is_relative_to(real_root):
                    out.outside_links.append(rel)
                elif target.is_file():
                    files[rel] = str(target)
    if ser.method == "shards":
        out.empty = sorted(r for r, p in files.items() if os.stat(p).st_size == 0)
    units = _units(root, ser, files)
    with ThreadPoolExecutor(
        max_workers=min(workers or default_workers(), max(1, len(units)))
    ) as pool:
        digests = list(pool.map(lambda u: hash_range(u[1], ser.hash_type, u[2], u[3]), units))
    out.resources = {u[0]: d for u, d in zip(units, digests, strict=True)}
    return out


@dataclass
class SignatureDiff:
    """How a folder differs from what a statement signs (file paths, not shard names)."""

    modified: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    symlinks: list[str] = field(default_factory=list)
    details: dict[str, list[str]] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not (self.modified or self.missing or self.extra or self.symlinks)


def compare(signed: SignedModel, actual: Serialized) -> SignatureDiff:
    """Name every modified, missing, extra and symlinked file (shards folded into files)."""
    method = signed.serialization.method

    def by_file(res: dict[str, str]) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for name, digest in res.items():
            out.setdefault(_resource_path(name, method)[0], {})[name] = digest
        return out

    want, have = by_file(signed.resources), by_file(actual.resources)
    diff = SignatureDiff(symlinks=sorted(actual.symlinks))
    linked = set(actual.symlinks)
    for path, parts in want.items():
        if path not in have:
            if path not in linked and not any(path.startswith(s + "/") for s in linked):
                diff.missing.append(path)
        elif have[path] != parts:
            diff.modified.append(path)
            diff.details[path] = sorted(
                n for n in set(parts) | set(have[path]) if parts.get(n) != have[path].get(n)
            )
    diff.extra = sorted((set(have) - set(want) - linked) | set(actual.special))
    if (
        method == "shards"
    ):  # an empty file has no shard, so an empty extra file cannot be told apart
        diff.extra = [p for p in diff.extra if p not in actual.empty or p in actual.special]
    diff.modified.sort()
    diff.missing.sort()
    return diff


def make_statement(name: str, resources: dict[str, str], ser: Serialization) -> dict[str, Any]:
    """A model-signing v1.0 statement over ``resources`` (sorted as model-signing sorts them)."""

    def order(item: tuple[str, str]) -> tuple[tuple[str, ...], int, int]:
        path, start, end = _resource_path(item[0], ser.method)
        return tuple(path.split("/")), start, end

    items = sorted(resources.items(), key=order)
    root = hashlib.sha256()
    for _, digest in items:
        root.update(bytes.fromhex(digest))
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": root.hexdigest()}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "serialization": ser.to_json(),
            "resources": [{"name": n, "algorithm": ser.algorithm(), "digest": d} for n, d in items],
        },
    }
