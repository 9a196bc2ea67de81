"""Certificate-method signatures: check a bundle's X.509 chain against a supplied CA.

A bundle signed with ``model_signing sign certificate`` carries the signing
certificate and its intermediates (DER). The chain is built and checked with
``cryptography``'s RFC 5280 path validation against the trust anchors the user
gives (``--trust-chain CA.pem``; nothing from the system store), at the current
time. The signing certificate must allow signing (KeyUsage digitalSignature or
ExtendedKeyUsage codeSigning, model-signing's rule). ``identity`` must equal one of
its subject alternative names (email, URI, DNS) or its subject common name;
``issuer`` must equal the issuing CA's common name or RFC 4514 name, or the OIDC
issuer a Sigstore certificate records (OID 1.3.6.1.4.1.57264.1.8 / .1.1).

Example::

    key, who = verify_chain(bundle.certificates, [Path("ca.pem")], identity="ml@corp.example")
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509 import verification as xv
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mlwarden.core.errors import InputFileError
from mlwarden.integrity.keys import MAX_KEY_BYTES, VerifyingKey, key_type

#: Fulcio's OIDC-issuer extensions (v2 DER string, v1 raw bytes).
_OIDC_ISSUER = ("1.3.6.1.4.1.57264.1.8", "1.3.6.1.4.1.57264.1.1")


class ChainError(ValueError):
    """The certificate chain, its use or its identity does not check out."""


def load_anchors(paths: Sequence[Path]) -> list[x509.Certificate]:
    """Trust anchors from PEM files (each may hold several certificates)."""
    anchors: list[x509.Certificate] = []
    for path in paths:
        try:
            data = path.read_bytes()[: MAX_KEY_BYTES * 16]
            anchors.extend(x509.load_pem_x509_certificates(data))
        except OSError as exc:
            raise InputFileError(path, f"cannot be read ({exc.strerror or exc})") from None
        except ValueError as exc:
            raise InputFileError(
                path, f"is not PEM certificates ({exc}); expected the CA's certificate"
            ) from None
    return anchors


def _names(cert: x509.Certificate) -> list[str]:
    out = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return out
    for kind in (x509.RFC822Name, x509.UniformResourceIdentifier, x509.DNSName):
        out.extend(str(v) for v in san.get_values_for_type(kind))
    return out


def _issuers(leaf: x509.Certificate) -> list[str]:
    out = [leaf.issuer.rfc4514_string()]
    out += [str(a.value) for a in leaf.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)]
    for oid in _OIDC_ISSUER:
        try:
            ext = leaf.extensions.get_extension_for_oid(x509.ObjectIdentifier(oid)).value
        except x509.ExtensionNotFound:
            continue
        raw = ext.value if isinstance(ext, x509.UnrecognizedExtension) else b""
        if raw[:1] == b"\x0c" and len(raw) > 2:  # DER UTF8String (short form length)
            raw = raw[2:]
        out.append(raw.decode("utf-8", "replace"))
    return out


def _can_sign(leaf: x509.Certificate) -> bool:
    try:
        if leaf.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature:
            return True
    except x509.ExtensionNotFound:
        pass
    try:
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return ExtendedKeyUsageOID.CODE_SIGNING in eku


def verify_chain(
    chain_der: Sequence[bytes],
    anchors: Sequence[x509.Certificate],
    *,
    identity: str | None = None,
    issuer: str | None = None,
    at: dt.datetime | None = None,
) -> tuple[VerifyingKey, dict[str, Any]]:
    """Check the chain (signing certificate first) and return its public key and who signed.

    ``at`` is the validation time (default: now, UTC). Raises :class:`ChainError`.
    """
    if not anchors:
        raise ChainError("no trust anchors given")
    try:
        certs = [x509.load_der_x509_certificate(c) for c in chain_der]
    except ValueError as exc:
        raise ChainError(f"a certificate in the bundle is not DER X.509 ({exc})") from None
    leaf, rest = certs[0], certs[1:]
    policy = (
        xv.PolicyBuilder()
        .store(xv.Store(list(anchors)))
        .time(at or dt.datetime.now(dt.UTC))
        .extension_policies(
            ca_policy=xv.ExtensionPolicy.webpki_defaults_ca(),
            ee_policy=xv.ExtensionPolicy.permit_all(),
        )
    )
    try:
        policy.build_client_verifier().verify(leaf, rest)
    except xv.VerificationError as exc:
        raise ChainError(f"the certificate chain does not lead to a trusted CA ({exc})") from None
    if not _can_sign(leaf):
        raise ChainError("the signing certificate does not allow signing (KeyUsage / codeSigning)")
    names, issuers = _names(leaf), _issuers(leaf)
    if identity is not None and identity not in names:
        raise ChainError(f"signed by {', '.join(names) or 'an unnamed subject'}, not {identity!r}")
    if issuer is not None and issuer not in issuers:
        raise ChainError(f"certificate issued by {issuers[0]!r}, not {issuer!r}")
    key = leaf.public_key()
    try:
        key_type(key)
    except Exception as exc:
        raise ChainError(f"the signing certificate's key: {exc}") from None
    who = {"subject": leaf.subject.rfc4514_string(), "names": names, "issuer": issuers[0]}
    return key, who  # type: ignore[return-value]
