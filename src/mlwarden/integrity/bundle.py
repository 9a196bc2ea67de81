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
import io
import json
import re
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from mlwarden.core.errors import InputFileError, UserError
from mlwarden.core.findings import Report
from mlwarden.integrity.dsse import (
    EnvelopeError,
    SignatureError,
    statement_manifest,
    unverified_statement,
    verify_envelope,
)
from mlwarden.integrity.keys import load_public_key
from mlwarden.integrity.manifest import Manifest, UnsafeManifestError
from mlwarden.integrity.registry import Registry, VersionRecord
from mlwarden.integrity.verify import verify_report

FORMAT = "mlwarden-bundle/v1"
PREFIX = "mlwarden-bundle"
RECORD = f"{PREFIX}/record.json"
_OBJECT = re.compile(rf"^{PREFIX}/objects/([0-9a-f]{{64}})$")
#: Largest record.json accepted (bytes).
MAX_RECORD = 256 * 1024 * 1024


def export_bundle(reg: Registry, rec: VersionRecord, bundle: Path) -> Path:
    """Write ``rec`` (record, manifest, envelope, objects) to the tar file ``bundle``."""
    for entry in rec.manifest.files.values():
        status = reg.store.check(entry.digest)
        if status != "ok":
            raise UserError(f"cannot export {rec.ref}: object {entry.digest[:12]} is {status}")
    doc = {
        "format": FORMAT,
        "record": rec.record,
        "manifest": rec.manifest.to_json(),
        "envelope": json.loads(rec.envelope) if rec.envelope else None,
    }
    data = json.dumps(doc, sort_keys=True).encode()
    mode = "w:gz" if bundle.name.endswith((".tgz", ".tar.gz")) else "w"
    if bundle.is_dir():
        raise InputFileError(bundle, "is a folder; expected a bundle file to write (.tar, .tgz)")
    tmp = bundle.with_name(bundle.name + ".partial")
    try:
        _write_bundle(reg, rec, data, tmp, mode)
        tmp.replace(bundle)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise InputFileError(bundle, f"cannot be written ({exc.strerror or exc})") from None
    return bundle


def _write_bundle(reg: Registry, rec: VersionRecord, data: bytes, tmp: Path, mode: str) -> None:
    with tarfile.open(tmp, mode) as tar:  # type: ignore[call-overload]
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
            with open(reg.store.path(entry.digest), "rb") as f:
                tar.addfile(info, f)


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
    trust: Sequence[Path | Ed25519PublicKey] = (),
    seed: int = 0,
) -> Report:
    """Import a bundle into ``registry`` and return the verification report of the version."""
    keys = [t if isinstance(t, Ed25519PublicKey) else load_public_key(Path(t)) for t in trust]
    if not bundle.is_file():
        raise InputFileError(bundle, "does not exist or is not a file")
    reg = Registry.open(registry)
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
            wanted = {e.digest: e.size for e in manifest.files.values()}
            seen: set[str] = set()
            try:
                for member in members:
                    match = _OBJECT.match(member.name)
                    if not member.isreg() or match is None:
                        raise InputFileError(
                            bundle,
                            f"unexpected member {member.name!r} (only regular files "
                            f"{PREFIX}/objects/<sha256> may follow record.json)",
                        )
                    digest = match.group(1)
                    if digest in seen or digest not in wanted:
                        raise InputFileError(
                            bundle, f"object {digest[:12]} is duplicated or unlisted"
                        )
                    if member.size != wanted[digest]:
                        raise InputFileError(
                            bundle,
                            f"object {digest[:12]} is {member.size} bytes; the manifest says "
                            f"{wanted[digest]}",
                        )
                    seen.add(digest)
                    f = tar.extractfile(member)
                    if f is None:
                        raise InputFileError(bundle, f"object {digest[:12]} cannot be read")
                    reg.store.put_stream(f, digest, label=f"{bundle}:{member.name}", sync_dir=False)
            except tarfile.TarError as exc:
                raise InputFileError(bundle, f"is corrupt ({exc})") from None
        reg.store.sync_dirs(seen)
        missing = [d for d in wanted if not reg.store.has(d)]
        if missing:
            raise InputFileError(bundle, f"lacks {len(missing)} object(s) its manifest lists")
        envelope = doc.get("envelope")
        env_text = json.dumps(envelope, sort_keys=True) if envelope is not None else None
        if envelope is not None:
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
        elif keys:
            raise UserError(f"{bundle}: bundle is unsigned but --trust requires a signature")
        rec, new = reg.import_version(doc["record"], manifest, env_text)
    finally:
        reg.close()
    report = verify_report(rec.ref, registry=reg.root, trust=keys, seed=seed)
    report.command = f"registry import {bundle}"
    report.metrics["imported"] = new
    report.metrics["objects"] = len(wanted)
    return report
