"""Sign a model folder as OpenSSF model-signing does, and verify such signatures.

``verify_signature_report`` needs no registry: it reads a signature file (a Sigstore
bundle written by ``model_signing sign key|certificate`` or ``mlwarden sign``, or
the registry's bare DSSE envelope), authenticates it (trusted public keys, an
X.509 chain against a supplied CA with identity checks, or a Sigstore keyless
bundle checked offline with an identity policy), then re-hashes the folder
with the signature's own serialization settings and names every modified, missing,
extra and symlinked file (rules MLW-SIG-001..008). ``sign_model`` writes a v0.3
bundle that ``model_signing verify key`` accepts (with an EC key).

ATLAS: AML.T0010.003 (supply-chain compromise: model), AML.T0018 (Manipulate AI
Model), AML.T0058 (Publish Poisoned Models). Mitigations: AML.M0013 Code Signing,
AML.M0014 Verify AI Artifacts.

Example::

    sign_model(Path("model"), Path("k.pem"), Path("model.sig"))
    report = verify_signature_report(Path("model"), Path("model.sig"), trust=[Path("k.pem.pub")])
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlwarden.core.errors import InputFileError, UserError
from mlwarden.core.findings import Finding, Report, Severity
from mlwarden.integrity.keys import (
    VerifyingKey,
    key_hint,
    key_type,
    load_signing_key,
    load_verifying_key,
)
from mlwarden.integrity.manifest import UnsafeManifestError
from mlwarden.integrity.model_signing_interop import (
    GIT_PATHS,
    Serialization,
    SignedModel,
    StatementError,
    compare,
    make_statement,
    parse_statement,
    serialize,
)
from mlwarden.integrity.sigstore_bundle import (
    BundleError,
    SigstoreBundle,
    read_bundle,
    write_bundle,
)

CHECK = "integrity.signature"
_ATLAS = ["AML.T0010.003", "AML.T0018", "AML.T0058"]


@dataclass
class Trust:
    """What a signature may be checked against."""

    keys: list[VerifyingKey] = field(default_factory=list)
    anchors: list[Any] = field(default_factory=list)
    identity: str | None = None
    issuer: str | None = None
    trusted_root: Path | None = None


def _finding(
    rule: str,
    title: str,
    severity: Severity,
    description: str,
    recommendation: str,
    evidence: dict[str, Any],
    artifact: str,
) -> Finding:
    return Finding(
        rule=rule,
        title=title,
        severity=severity,
        atlas=_ATLAS,
        mitigations=["AML.M0013", "AML.M0014"],
        description=description,
        recommendation=recommendation,
        evidence=evidence,
        artifact=artifact,
        check=CHECK,
        owasp=["ML06"],
    )


def _names(files: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(files[:limit])
    return shown + (f" and {len(files) - limit} more" if len(files) > limit else "")


def authenticate(bundle: SigstoreBundle, trust: Trust) -> dict[str, Any]:
    """Check the signature; return who signed. Raises BundleError (bad) or UserError (cannot check)."""
    method = bundle.method
    if method == "keyless":
        from mlwarden.integrity.sigstore_keyless import verify_keyless

        payload, who = verify_keyless(
            json.dumps(bundle.raw).encode(),
            identity=trust.identity,
            issuer=trust.issuer,
            trusted_root=trust.trusted_root,
        )
        bundle.payload = payload  # the bytes the verifier checked
        return who
    if method == "certificate":
        from mlwarden.integrity.x509_chain import ChainError, verify_chain

        if not trust.anchors:
            raise UserError(
                "this signature carries a certificate chain; give the CA with --trust-chain CA.pem"
            )
        try:
            key, who = verify_chain(
                bundle.certificates, trust.anchors, identity=trust.identity, issuer=trust.issuer
            )
        except ChainError as exc:
            raise BundleError(f"certificate: {exc}") from None
        pre1 = False
        if not bundle.verify_with(key):
            pre1 = bundle.verify_pre1(key, sha256=True)
            if not pre1:
                raise BundleError(
                    "the signature does not verify with the signing certificate's key (altered payload)"
                )
        return {"method": method, "key_type": key_type(key), **who, **_pre1(pre1)}
    if trust.identity or trust.issuer:
        raise UserError(
            "this signature was made with a bare key, which names no identity or issuer; "
            "drop --identity/--issuer and trust the key with --trust KEY.pub"
        )
    if not trust.keys:
        raise UserError(
            "this signature was made with a key; give its public key with --trust KEY.pub"
        )
    keys = trust.keys
    if bundle.key_hint is not None:
        keys = [k for k in keys if key_hint(k) == bundle.key_hint]
        if not keys:
            raise BundleError(
                f"signed by another key (public-key hint {bundle.key_hint[:16]}...) than the trusted ones"
            )
    for key in keys:
        who = {"method": method, "key_type": key_type(key), "key_hint": key_hint(key)}
        if bundle.verify_with(key):
            return who
        if bundle.verify_pre1(key, sha256=False):
            return who | _pre1(True)
    raise BundleError("the signature does not verify with the trusted key(s) (forged or altered)")


def _pre1(used: bool) -> dict[str, Any]:
    return {"signature_encoding": "model-signing 0.2 (pre-1.0)"} if used else {}


def signed_statement(bundle: SigstoreBundle) -> SignedModel:
    try:
        statement = json.loads(bundle.payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise StatementError(f"the signed payload is not JSON ({exc})") from None
    return parse_statement(statement)


def verify_signature_report(
    model_path: Path,
    signature: Path,
    *,
    trust: Sequence[Path] = (),
    trust_chain: Sequence[Path] = (),
    identity: str | None = None,
    issuer: str | None = None,
    trusted_root: Path | None = None,
    workers: int | None = None,
    seed: int = 0,
) -> Report:
    """Verify ``model_path`` (file or folder) against a signature file; findings for every problem.

    A bundle that does not authenticate is one critical finding and nothing is
    hashed. Missing trust material for the bundle's method is a UserError (exit 2).
    """
    from mlwarden.integrity.x509_chain import load_anchors

    report = Report.new("verify", seed=seed)  # nothing random; recorded like every report
    report.target = {"path": str(model_path), "signature": str(signature)}
    if not model_path.exists() and not model_path.is_symlink():
        raise InputFileError(model_path, "does not exist; expected the model file or folder")
    t = Trust(
        [load_verifying_key(p) for p in trust],
        load_anchors(trust_chain),
        identity,
        issuer,
        trusted_root,
    )
    art = str(model_path)
    with report.timed(CHECK):
        try:
            bundle = read_bundle(signature)
            who = authenticate(bundle, t)
            signed = signed_statement(bundle)
        except (BundleError, StatementError) as exc:
            report.add(
                _finding(
                    "MLW-SIG-005",
                    f"{signature}: the signature is not valid: {exc}",
                    Severity.CRITICAL,
                    f"The signature file {signature} does not authenticate the model: {exc}.",
                    "Do not load the model. Get the model and its signature again from the publisher, and check that the key or CA you trust is the publisher's.",
                    {"signature": str(signature), "error": str(exc)},
                    art,
                )
            )
            return report
        except UnsafeManifestError as exc:
            report.add(
                _finding(
                    "MLW-SIG-006",
                    f"{signature}: the signed statement names a path outside the model: {exc}",
                    Severity.CRITICAL,
                    f"A resource name could reach outside the model folder ({exc}); nothing was read.",
                    "Do not use this signature or model; the signer is hostile or broken.",
                    {"signature": str(signature), "error": str(exc)},
                    art,
                )
            )
            return report
        if signed.format != "v1.0" or "signature_encoding" in who:
            report.add(_pre1_finding(signature, signed, who, art))
        report.artifacts["signature"] = {
            "format": signed.format,
            "signer": who,
            "model_name": signed.name,
            "root_digest": signed.root_digest,
            "serialization": signed.serialization.to_json(),
            "resources": len(signed.resources),
        }
        _check_files(report, model_path, signature, signed, workers)
    report.metrics["signature.resources"] = len(signed.resources)
    return report


def _pre1_finding(signature: Path, signed: SignedModel, who: dict[str, Any], art: str) -> Finding:
    """Low: a valid signature in model-signing's pre-1.0 format (accepted, as 1.x accepts it)."""
    what = []
    if signed.format != "v1.0":
        what.append(f"a {signed.format} statement (no model name, no hashing settings recorded)")
    if "signature_encoding" in who:
        what.append("signed over model-signing 0.2's non-standard DSSE encoding")
    return _finding(
        "MLW-SIG-009",
        f"{signature}: a valid model-signing pre-1.0 signature ({'; '.join(what)})",
        Severity.LOW,
        f"{signature} was made by model-signing before 1.0: {'; '.join(what)}. It verifies, "
        "as it does with model-signing 1.x, and every file was checked, but the format "
        "records less than 1.0's (no ignore_paths, no serialization settings).",
        "Ask the publisher to re-sign with model-signing 1.x (or sign it yourself with "
        "'mlwarden sign' after this check passes).",
        {"signature": str(signature), "format": signed.format, **who},
        art,
    )


def _skip(model_path: Path, signature: Path) -> list[str]:
    """The signature file itself, when it lies inside the model folder."""
    try:
        rel = signature.resolve().relative_to(model_path.resolve())
    except ValueError:
        return []
    return [rel.as_posix()] if model_path.is_dir() else []


def _check_files(
    report: Report, model_path: Path, signature: Path, signed: SignedModel, workers: int | None
) -> None:
    art = str(model_path)
    if signed.unsafe_ignores:
        report.add(
            _finding(
                "MLW-SIG-007",
                f"{signature}: ignore_paths entries not honoured: {_names(signed.unsafe_ignores)}",
                Severity.MEDIUM,
                "The signature asks to ignore paths that are absolute, empty or contain '..'; they were not ignored, so files under them are checked: "
                + ", ".join(signed.unsafe_ignores),
                "Re-sign with ignore paths relative to the model folder.",
                {"ignore_paths": signed.unsafe_ignores},
                art,
            )
        )
    if not signed.resources:
        report.add(
            _finding(
                "MLW-SIG-008",
                f"{signature}: the signature covers no file",
                Severity.HIGH,
                "The signed statement lists no resources, so it proves nothing about the model's files.",
                "Re-sign the model; check its ignore_paths.",
                {},
                art,
            )
        )
    if model_path.is_symlink():
        report.add(
            _finding(
                "MLW-SIG-004",
                f"{model_path} is a symbolic link",
                Severity.HIGH,
                "The model path itself is a symbolic link; it is not followed.",
                "Verify the real folder, not a link to it.",
                {"files": ["."]},
                art,
            )
        )
        return
    actual = serialize(model_path, signed.serialization, _skip(model_path, signature), workers)
    if model_path.is_file() and len(signed.resources) == 1 and "." in actual.resources:
        (only,) = (
            signed.resources
        )  # the registry names a single file by its name, model-signing by "."
        only_path = only.rsplit(":", 2)[0] if signed.serialization.method == "shards" else only
        actual.resources = {k.replace(".", only_path, 1): v for k, v in actual.resources.items()}
    diff = compare(signed, actual)
    report.metrics["signature.files_checked"] = (
        len({k.rsplit(":", 2)[0] for k in actual.resources})
        if signed.serialization.method == "shards"
        else len(actual.resources)
    )
    report.artifacts["signature"]["diff"] = {
        "modified": diff.modified,
        "missing": diff.missing,
        "extra": diff.extra,
        "symlinks": diff.symlinks,
    }
    rows = (
        (
            "MLW-SIG-001",
            diff.modified,
            "modified",
            Severity.CRITICAL,
            "no longer hash to the signed digests",
            "Do not load the model; get it again from the publisher and find out who changed it.",
        ),
        (
            "MLW-SIG-002",
            diff.missing,
            "missing",
            Severity.HIGH,
            "are signed but missing",
            "Restore the complete signed model before use.",
        ),
        (
            "MLW-SIG-003",
            diff.extra,
            "extra",
            Severity.HIGH,
            "are not covered by the signature (a planted file may be loaded by a framework that reads the whole folder)",
            "Remove the extra files, or ask the publisher to sign them.",
        ),
        (
            "MLW-SIG-004",
            diff.symlinks,
            "symlinked",
            Severity.MEDIUM
            if signed.serialization.allow_symlinks and not actual.outside_links
            else Severity.HIGH,
            "are symbolic links (a link can point anywhere, so what it points to is not what was signed)",
            "Replace the links with the files they point to, or remove them.",
        ),
    )
    for rule, files, label, severity, what, fix in rows:
        if files:
            report.add(
                _finding(
                    rule,
                    f"{model_path}: {len(files)} {label} file(s): {_names(files)}",
                    severity,
                    f"These files {what}: " + ", ".join(files),
                    fix,
                    {
                        "files": files,
                        "details": {f: diff.details[f] for f in files if f in diff.details},
                    },
                    art,
                )
            )


def sign_model(
    model_path: Path,
    key_path: Path,
    signature: Path,
    *,
    method: str = "files",
    hash_type: str = "sha256",
    shard_size: int = 1_000_000_000,
    ignore_paths: Sequence[str] = (),
    ignore_git: bool = True,
    workers: int | None = None,
) -> dict[str, Any]:
    """Write a model-signing v1.0 statement over ``model_path`` signed with ``key_path``.

    Returns the statement. Refuses symbolic links and special files (as model-signing
    does without ``allow_symlinks``) and an empty model.
    """
    key = load_signing_key(key_path)
    if not model_path.exists() or model_path.is_symlink():
        raise InputFileError(
            model_path, "does not exist or is a symbolic link; expected the model file or folder"
        )
    ignores = [p.strip("/") for p in ignore_paths] + (list(GIT_PATHS) if ignore_git else [])
    ignores += _skip(model_path, signature)
    ser = Serialization(method, hash_type, shard_size, False, tuple(dict.fromkeys(ignores)))
    actual = serialize(model_path, ser, workers=workers)
    if actual.symlinks or actual.special:
        bad = (actual.symlinks + actual.special)[0]
        raise InputFileError(
            model_path / bad,
            "is a symbolic link or special file; model signatures cover regular files only",
        )
    if not actual.resources:
        raise InputFileError(model_path, "has no file to sign (all ignored or empty)")
    name = model_path.resolve().name
    statement = make_statement(name, actual.resources, ser)
    write_bundle(signature, statement, key)
    return statement
