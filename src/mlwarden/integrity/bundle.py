"""Move a signed version between machines: ``registry export`` / ``registry import``.

A bundle is a tar file (optionally gzip-compressed)::

    mlwarden-bundle/record.json          first member: record, manifest, DSSE envelope
    mlwarden-bundle/objects/<sha256>     one member per distinct file content

Import never extracts the archive: it reads members one at a time, accepts only
regular files with exactly these names (no links, devices, ``..`` or absolute paths,
no duplicates, no object the manifest does not list), streams each object into the
store while re-hashing it against its name, and inserts the version only when every
object is present, the manifest matches its digest and the signed statement matches
the record (with ``trust``, the signature must verify with a trusted key).

Example::

    export_bundle(reg, reg.resolve("digits@3"), Path("digits-3.tar"))
    report = import_bundle(Path("digits-3.tar"), registry=Path("other"), trust=[pub])
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import sys
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from mlwarden.core.errors import InputFileError, UserError
from mlwarden.core.findings import Report
from mlwarden.integrity.dsse import (
    EnvelopeError,
    SignatureError,
    statement_manifest,
    unverified_statement,
    verify_envelope,
)
from mlwarden.integrity.gc import add_lease, referenced_digests
from mlwarden.integrity.keys import VerifyingKey, trusted_keys
from mlwarden.integrity.manifest import Manifest, UnsafeManifestError
from mlwarden.integrity.registry import Registry, VersionRecord
from mlwarden.integrity.safeio import create_temp, open_dir, why
from mlwarden.integrity.store import sync_filesystem
from mlwarden.integrity.verify import verify_report

FORMAT = "mlwarden-bundle/v1"
PREFIX = "mlwarden-bundle"
RECORD = f"{PREFIX}/record.json"
_OBJECT = re.compile(rf"^{PREFIX}/objects/([0-9a-f]{{64}})$")
#: Largest record.json accepted (bytes).
MAX_RECORD = 256 * 1024 * 1024


def export_bundle(reg: Registry, rec: VersionRecord, bundle: Path) -> Path:
    """Write ``rec`` (record, manifest, envelope, objects) to the tar file ``bundle``.

    Link-safe: the bundle is written to a new, randomly named file created with
    ``O_EXCL | O_NOFOLLOW`` in ``bundle``'s folder (opened once), then renamed over
    ``bundle``, so a link planted at ``bundle`` or at any temporary name is replaced
    or refused, never written through. Each object is read once and hashed as it is
    written; a stored object that no longer matches its digest aborts the export.
    """
    if bundle.is_dir():
        raise InputFileError(bundle, "is a folder; expected a bundle file to write (.tar, .tgz)")
    doc = {
        "format": FORMAT,
        "record": rec.record,
        "manifest": rec.manifest.to_json(),
        "envelope": json.loads(rec.envelope) if rec.envelope else None,
    }
    data = json.dumps(doc, sort_keys=True).encode()
    mode = "w:gz" if bundle.name.endswith((".tgz", ".tar.gz")) else "w"
    try:
        parent = open_dir(bundle.parent)
    except InputFileError as exc:
        raise InputFileError(bundle, f"cannot be written ({exc.path} {exc.problem})") from None
    try:
        try:
            fd, tmp = create_temp(parent, f".{bundle.name[:200]}.partial-", 0o644)
        except OSError as exc:
            raise InputFileError(bundle, f"cannot be written ({exc.strerror or exc})") from None
        try:
            with os.fdopen(fd, "wb") as raw:
                _write_bundle(reg, rec, data, raw, mode)
                raw.flush()
                os.fsync(raw.fileno())
            os.replace(tmp, bundle.name, src_dir_fd=parent, dst_dir_fd=parent)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=parent)
            if isinstance(exc, OSError):
                raise InputFileError(bundle, f"cannot be written ({exc.strerror or exc})") from None
            raise
    finally:
        os.close(parent)
    return bundle


class _HashingReader:
    """A file-like view of a descriptor that hashes what is read through it."""

    def __init__(self, fd: int) -> None:
        self.file = os.fdopen(fd, "rb", closefd=False)
        self.sha = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.file.read(n)
        self.sha.update(data)
        return data


def _write_bundle(
    reg: Registry, rec: VersionRecord, data: bytes, raw: IO[bytes], mode: str
) -> None:
    with tarfile.open(fileobj=raw, mode=mode) as tar:  # type: ignore[call-overload]
        info = tarfile.TarInfo(RECORD)
        info.size = len(data)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(data))
        done: set[str] = set()
        for entry in rec.manifest.files.values():
            if entry.digest in done:
                continue
            done.add(entry.digest)
            info = tarfile.TarInfo(f"{PREFIX}/objects/{entry.digest}")
            info.size = entry.size
            info.mode = 0o444
            try:
                fd, st = reg.store.open_object(entry.digest)
            except OSError as exc:
                raise UserError(
                    f"cannot export {rec.ref}: object {entry.digest[:12]} {why(exc)}"
                ) from None
            try:
                reader = _HashingReader(fd)
                tar.addfile(info, reader)  # type: ignore[arg-type]
                rest = reader.file.read(1)
            finally:
                os.close(fd)
            if reader.sha.hexdigest() != entry.digest or rest or st.st_nlink > 1:
                raise UserError(
                    f"cannot export {rec.ref}: object {entry.digest[:12]} is modified or linked"
                )


def _read_record(tar: tarfile.TarFile, member: tarfile.TarInfo, bundle: Path) -> dict[str, Any]:
    if member.name != RECORD or not member.isreg():
        raise InputFileError(bundle, f"first member is {member.name!r}; expected {RECORD}")
    if member.size > MAX_RECORD:
        raise InputFileError(bundle, "record.json is too large")
    f = tar.extractfile(member)
    if f is None:
        raise InputFileError(bundle, "record.json cannot be read")
    try:
        doc = json.loads(f.read())
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputFileError(bundle, f"record.json is not JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise InputFileError(bundle, f"is not an {FORMAT} bundle")
    if not isinstance(doc.get("record"), dict):
        raise InputFileError(bundle, "record.json has no record")
    return doc


def import_bundle(
    bundle: Path,
    registry: Path | None = None,
    trust: Sequence[Path | VerifyingKey] = (),
    seed: int = 0,
) -> Report:
    """Import a bundle into ``registry`` and return the verification report of the version.

    The signed statement is checked (with ``trust``: its signature must verify)
    BEFORE any object is read: a bundle that will be refused writes nothing into
    the store. Objects are then staged in ``tmp/`` and moved into the store only
    when every one of them is present and hashes to its name.
    """
    keys = trusted_keys(trust)
    if not bundle.is_file():
        raise InputFileError(bundle, "does not exist or is not a file")
    reg = Registry.open(registry)
    # an import adds objects: it holds the add lease, so gc never takes them mid-import
    lease = contextlib.ExitStack()
    lease.enter_context(add_lease(reg.store.root, lambda: referenced_digests(reg)))
    try:
        try:
            tar = tarfile.open(bundle, "r:*")  # noqa: SIM115 (closed by the with below)
        except (tarfile.TarError, OSError) as exc:
            reason = (
                "not a tar, tar.gz, tar.bz2 or tar.xz file"
                if isinstance(exc, tarfile.ReadError)
                else exc
            )
            raise InputFileError(bundle, f"is not a readable tar bundle ({reason})") from None
        with tar:
            members = iter(tar)
            try:
                first = next(members)
            except (StopIteration, tarfile.TarError) as exc:
                raise InputFileError(bundle, f"is empty or corrupt ({exc})") from None
            doc = _read_record(tar, first, bundle)
            try:
                manifest = Manifest.from_json(doc.get("manifest"))
            except UnsafeManifestError as exc:
                raise InputFileError(bundle, f"manifest rejected: {exc}") from None
            env_text = _check_envelope(bundle, doc, manifest, keys)
            wanted = {e.digest: e.size for e in manifest.files.values()}
            _store_objects(reg, tar, members, wanted, bundle)
        rec, new = reg.import_version(doc["record"], manifest, env_text)
    finally:
        lease.__exit__(*sys.exc_info())  # a failed import removes the objects it stored
        reg.close()
    report = verify_report(rec.ref, registry=reg.root, trust=keys, seed=seed)
    report.command = f"registry import {bundle}"
    report.metrics["imported"] = new
    report.metrics["objects"] = len(wanted)
    return report


def _check_envelope(
    bundle: Path, doc: dict[str, Any], manifest: Manifest, keys: list[VerifyingKey]
) -> str | None:
    """The envelope text, once its statement matches the record and manifest (and verifies)."""
    envelope = doc.get("envelope")
    if envelope is None:
        if keys:
            raise UserError(f"{bundle}: bundle is unsigned but --trust requires a signature")
        return None
    try:
        if keys:
            statement, _ = verify_envelope(envelope, keys)
        else:
            statement = unverified_statement(envelope)
        if statement_manifest(statement).to_json() != manifest.to_json():
            raise UserError("signed statement lists other files than the bundle manifest")
        if statement["predicate"].get("mlwarden") != doc["record"]:
            raise UserError("signed statement's record differs from the bundle record")
    except SignatureError:
        raise UserError(
            f"{bundle}: signature does not verify with any trusted key; not imported"
        ) from None
    except (EnvelopeError, UnsafeManifestError) as exc:
        raise InputFileError(bundle, f"envelope rejected: {exc}") from None
    return json.dumps(envelope, sort_keys=True)


def _store_objects(
    reg: Registry,
    tar: tarfile.TarFile,
    members: Iterator[tarfile.TarInfo],
    wanted: dict[str, int],
    bundle: Path,
) -> None:
    """Stage every object member (checked, hashed), then install all or none."""
    staged: dict[str, str] = {}
    reg.store.ensure()
    try:
        for member in members:
            digest = _object_member(member, wanted, set(staged), bundle)
            f = tar.extractfile(member)
            if f is None:
                raise InputFileError(bundle, f"object {digest[:12]} cannot be read")
            label = f"{bundle}:{member.name}"
            staged[digest] = reg.store.stage(f, digest, label, fsync=False)
        missing = [d for d in wanted if d not in staged and not reg.store.has(d)]
        if missing:
            raise InputFileError(bundle, f"lacks {len(missing)} object(s) its manifest lists")
        sync_filesystem(reg.store.tmp)
        for digest in list(staged):
            name = staged.pop(digest)
            if reg.store.has(digest):
                reg.store.discard([name])
            else:
                reg.store.install(name, digest)
        sync_filesystem(reg.store.objects)
    except tarfile.TarError as exc:
        raise InputFileError(bundle, f"is corrupt ({exc})") from None
    finally:
        if staged:
            reg.store.discard(staged.values())


def _object_member(
    member: tarfile.TarInfo, wanted: dict[str, int], seen: set[str], bundle: Path
) -> str:
    match = _OBJECT.match(member.name)
    if not member.isreg() or match is None:
        raise InputFileError(
            bundle,
            f"unexpected member {member.name!r} (only regular files "
            f"{PREFIX}/objects/<sha256> may follow record.json)",
        )
    digest = match.group(1)
    if digest in seen or digest not in wanted:
        raise InputFileError(bundle, f"object {digest[:12]} is duplicated or unlisted")
    if member.size != wanted[digest]:
        raise InputFileError(
            bundle,
            f"object {digest[:12]} is {member.size} bytes; the manifest says {wanted[digest]}",
        )
    return digest
