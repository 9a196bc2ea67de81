"""Sigstore keyless signatures (Fulcio certificate + Rekor entry), checked offline.

``model_signing sign sigstore`` (the default method) signs with a short-lived Fulcio
certificate bound to an OIDC identity and logs the signature in Rekor. This module
hands the bundle to the ``sigstore`` library's verifier with a trusted root given
by the user (``--trusted-root trusted_root.json``) or, by default, the production
root embedded in the installed ``sigstore`` package, loaded offline: no network.
The verifier checks the certificate chain to Fulcio, its embedded SCT, the Rekor
entry's inclusion proof / signed entry timestamp and checkpoint, the signature, and
the identity policy (``--identity`` = a SAN, ``--issuer`` = the OIDC issuer).

Sigstore client spec: github.com/sigstore/architecture-docs (client-spec.md).

Example::

    payload, who = verify_keyless(bundle_json, identity="me@example.com",
                                  issuer="https://accounts.google.com")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlwarden.core.errors import InputFileError, UserError
from mlwarden.integrity.dsse import PAYLOAD_TYPE
from mlwarden.integrity.sigstore_bundle import BundleError


def verify_keyless(
    bundle_json: bytes,
    *,
    identity: str | None,
    issuer: str | None,
    trusted_root: Path | None = None,
) -> tuple[bytes, dict[str, Any]]:
    """Check a keyless bundle; return the signed payload and who signed.

    Raises BundleError when the bundle does not verify (chain, log entry, signature
    or identity) and UserError when it cannot be checked here (no ``sigstore``
    library, no identity policy, unreadable trusted root).
    """
    if not identity or not issuer:
        raise UserError(
            "this is a Sigstore keyless signature; give who must have signed it: "
            "--identity EMAIL_OR_URI --issuer OIDC_ISSUER_URL"
        )
    try:
        from sigstore.errors import Error as SigstoreError
        from sigstore.models import Bundle, ClientTrustConfig, TrustedRoot
        from sigstore.verify import Verifier, policy
    except ImportError:
        raise UserError(
            "checking Sigstore keyless signatures needs the 'sigstore' package "
            "(pip install sigstore); nothing was verified"
        ) from None
    try:
        if trusted_root is not None:
            root = TrustedRoot.from_file(str(trusted_root))
        else:  # the root shipped inside the sigstore package; offline: no TUF refresh
            root = ClientTrustConfig.production(offline=True).trusted_root
    except (OSError, ValueError, SigstoreError) as exc:
        where = trusted_root or "sigstore's embedded production trusted root"
        raise InputFileError(where, f"is not a usable Sigstore trusted root ({exc})") from None
    try:
        bundle = Bundle.from_json(bundle_json)
        payload_type, payload = Verifier(trusted_root=root).verify_dsse(
            bundle, policy.Identity(identity=identity, issuer=issuer)
        )
    except Exception as exc:  # any failure inside the verifier means "not verified": fail closed
        raise BundleError(f"keyless: {exc}") from None
    if payload_type != PAYLOAD_TYPE:
        raise BundleError(f"keyless: payloadType is {payload_type!r}")
    cert = bundle.signing_certificate
    who = {
        "method": "keyless",
        "identity": identity,
        "issuer": issuer,
        "certificate_serial": format(cert.serial_number, "x"),
        "trusted_root": str(trusted_root) if trusted_root else "sigstore production (embedded)",
    }
    return payload, who
