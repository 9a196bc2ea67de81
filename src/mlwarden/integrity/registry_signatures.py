"""Model-signing bundles for registry versions, and third-party signatures as provenance.

``registry add --sign KEY`` also writes a Sigstore bundle in OpenSSF model-signing's
format next to the version (``<registry>/signatures/NAME@VERSION.sig``), and
``registry export ... --sign KEY`` writes one next to the tar (``BUNDLE.sig``): the
resources are the version's manifest (SHA-256 per file, nothing re-hashed), so
``model_signing verify key`` (EC keys) or ``mlwarden verify`` checks a restored copy.
``registry add --signature FILE --trust KEY.pub`` verifies a publisher's signature
over the folder first, refuses to register on any finding, and records who signed.

Example::

    check = third_party_check(Path("model"), Path("model.sig"), [Path("pub.pem")])
    reg.add(Path("model"), name="m", signature=check)
    write_version_signature(reg.store.root, rec, Path("release-ec.key"))
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mlwarden.core.errors import InputFileError, UserError
from mlwarden.integrity.keys import load_signing_key, load_verifying_key
from mlwarden.integrity.manifest import Manifest, UnsafeManifestError, check_relpath
from mlwarden.integrity.model_signing_interop import Serialization, StatementError, make_statement
from mlwarden.integrity.sigstore_bundle import BundleError, read_bundle, write_bundle

SIGNATURES = "signatures"


def manifest_statement(
    manifest: Manifest, model_name: str, single_file: bool = False
) -> dict[str, Any]:
    """model-signing v1.0 statement over a registry manifest (files, SHA-256, no re-hash).

    ``single_file``: the version was registered from one file, which model-signing
    names ``"."`` (so ``model_signing verify key FILE`` accepts it); otherwise each
    resource is the file's path in the folder.
    """
    resources = {name: entry.digest for name, entry in manifest.files.items()}
    if single_file and len(resources) == 1:
        resources = {".": next(iter(resources.values()))}
    return make_statement(model_name, resources, Serialization(ignore_paths=("model.sig",)))


def version_signature_path(root: Path, name: str, version: int) -> Path:
    """``<registry>/signatures/NAME@VERSION.sig``."""
    check_relpath(name)
    return root / SIGNATURES / f"{name.replace('/', '_')}@{version}.sig"


def _folder(path: Path) -> Path:
    folder = path.parent
    if folder.is_symlink():
        raise InputFileError(folder, "is a symbolic link; refusing to write a signature through it")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_version_signature(root: Path, rec: Any, key_path: Path, dest: Path | None = None) -> Path:
    """Sign ``rec`` (a :class:`~.registry.VersionRecord`) in model-signing's format.

    Written to ``dest`` or, by default, next to the version in the registry folder.
    With an ECDSA key ``model_signing verify key`` accepts it over the registered
    folder (or file) and over a restored copy; Ed25519 only ``mlwarden verify``.
    """
    key = load_signing_key(key_path)
    path = dest or version_signature_path(root, rec.name, rec.version)
    _folder(path)
    single = rec.record.get("layout") == "file"
    return write_bundle(path, manifest_statement(rec.manifest, rec.name, single), key)


def store_third_party(root: Path, name: str, version: int, signature: Path) -> Path:
    """Keep a verified third-party signature file next to the version."""
    path = version_signature_path(root, name, version)
    _folder(path)
    tmp = path.with_name(path.name + f".{os.getpid()}.partial")
    shutil.copyfile(signature, tmp, follow_symlinks=False)
    os.replace(tmp, path)
    return path


def third_party_check(
    path: Path, signature: Path, trust: Sequence[Path]
) -> Callable[[Manifest], dict[str, Any]]:
    """Authenticate a publisher's signature now; return the check of the manifest the add hashes.

    The returned callable compares the registry's own manifest (the bytes that are
    stored) with the signed digests, so a file swapped between the check and the
    copy cannot be registered under the signature; it returns the provenance
    record. Any difference (changed, missing, unsigned file) or a bad or untrusted
    signature raises UserError: nothing is registered.
    """
    from mlwarden.integrity.signature_check import Trust, authenticate, signed_statement

    if not trust:
        raise UserError("--signature needs the publisher's public key: --trust KEY.pub")
    try:
        bundle = read_bundle(signature)
        who = authenticate(bundle, Trust([load_verifying_key(t) for t in trust]))
        signed = signed_statement(bundle)
    except (BundleError, StatementError, UnsafeManifestError) as exc:
        raise UserError(
            f"{signature}: the signature is not valid ({exc}); not registered"
        ) from None
    digest = hashlib.sha256(signature.read_bytes()).hexdigest()

    def check(manifest: Manifest) -> dict[str, Any]:
        ser = signed.serialization
        if ser.method == "files" and ser.hash_type == "sha256":
            _same_files(manifest, signed.resources, _inside(path, signature), signature)
        else:  # other serializations: re-hash the folder their way
            _reverify(path, signature, trust)
        return {
            "signature_sha256": digest,
            "signer": who,
            "model_name": signed.name,
            "root_digest": signed.root_digest,
            "serialization": ser.to_json(),
        }

    return check


def _inside(path: Path, signature: Path) -> str | None:
    """The signature file's name relative to the model folder, when it lies inside it."""
    try:
        return signature.resolve().relative_to(path.resolve()).as_posix()
    except ValueError:
        return None


def _same_files(
    manifest: Manifest, resources: dict[str, str], itself: str | None, signature: Path
) -> None:
    # the signature file itself is registered with the folder but cannot sign itself
    have = {n: e.digest for n, e in manifest.files.items() if n != itself}
    if list(resources) == ["."] and len(have) == 1:  # model-signing names a single file "."
        resources = {next(iter(have)): resources["."]}
    unsigned = [n for n in have if n not in resources]
    changed = [n for n in have if n in resources and resources[n] != have[n]]
    missing = [n for n in resources if n not in have]
    if unsigned or changed or missing:
        parts = [
            f"{label}: {', '.join(names[:5])}"
            for label, names in (
                ("modified", changed),
                ("missing", missing),
                ("not signed", unsigned),
            )
            if names
        ]
        raise UserError(
            f"{signature} does not cover the files registered ({'; '.join(parts)}); not registered"
        )


def _reverify(path: Path, signature: Path, trust: Sequence[Path]) -> None:
    from mlwarden.integrity.signature_check import verify_signature_report

    report = verify_signature_report(path, signature, trust=trust)
    if report.findings:
        first = report.findings[0]
        raise UserError(
            f"{signature} does not verify {path} ({first.rule}: {first.title}); not registered"
        )
