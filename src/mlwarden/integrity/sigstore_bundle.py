"""Sigstore bundles (v0.1-v0.3 JSON) holding a DSSE envelope: read, check, write.

This is the signature file OpenSSF model-signing (``model_signing sign ...``) writes::

    {"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
     "verificationMaterial": {"publicKey": {"hint": ...}            key method
                              | "x509CertificateChain": {...}        certificate method
                              | "certificate": {"rawBytes": ...},    Sigstore keyless (v0.3)
                              "tlogEntries": [...]},
     "dsseEnvelope": {"payload": b64, "payloadType": "application/vnd.in-toto+json",
                      "signatures": [{"sig": b64, "keyid": ""}]}}

The signature covers the DSSE pre-authentication encoding of the payload (see
:func:`mlwarden.integrity.dsse.pae`). A bare DSSE envelope (what the registry
stores) is read too, as a bundle without verification material.

Sigstore bundle format: github.com/sigstore/protobuf-specs (``sigstore_bundle.proto``).

Example::

    write_bundle(Path("model.sig"), statement, load_signing_key(Path("k.pem")))
    bundle = read_bundle(Path("model.sig"))
    ok = bundle.verify_with(load_verifying_key(Path("k.pem.pub")))
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from mlwarden.core.errors import InputFileError
from mlwarden.integrity.dsse import PAYLOAD_TYPE, pae
from mlwarden.integrity.keys import SigningKey, VerifyingKey, key_hint, sign_bytes, verify_bytes

MEDIA_TYPE_V03 = "application/vnd.dev.sigstore.bundle.v0.3+json"
#: Bundle media types read (v0.1 and v0.2 used a parameter, v0.3 a suffix).
MEDIA_TYPES = (
    MEDIA_TYPE_V03,
    "application/vnd.dev.sigstore.bundle+json;version=0.1",
    "application/vnd.dev.sigstore.bundle+json;version=0.2",
    "application/vnd.dev.sigstore.bundle+json;version=0.3",
)
#: Largest signature file read (bytes): a 100,000-file manifest is about 20 MB.
MAX_BUNDLE_BYTES = 256 * 1024 * 1024


class BundleError(ValueError):
    """A signature file that is not a well-formed Sigstore bundle or DSSE envelope."""


@dataclass
class SigstoreBundle:
    """The parts of a bundle a verifier needs (bytes already base64-decoded)."""

    media_type: str
    payload: bytes
    signatures: list[bytes]
    key_hint: str | None = None
    #: DER certificates, signing certificate first (certificate or keyless method).
    certificates: list[bytes] = field(default_factory=list)
    tlog_entries: list[dict[str, Any]] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def method(self) -> str:
        """``key``, ``certificate`` (a chain), ``keyless`` (a Fulcio certificate + log entry) or ``envelope``."""
        if self.media_type == "dsse-envelope":
            return "envelope"
        if self.certificates:
            return "keyless" if self.tlog_entries else "certificate"
        return "key"

    def verify_with(self, public_key: VerifyingKey) -> bool:
        """Whether some signature verifies over PAE(payload) with ``public_key``."""
        message = pae(PAYLOAD_TYPE, self.payload)
        return any(verify_bytes(public_key, sig, message) for sig in self.signatures)

    def verify_pre1(self, public_key: VerifyingKey, sha256: bool) -> bool:
        """Whether a signature verifies as model-signing before 1.0 (0.2) made it.

        That release signed :func:`pae_v02` instead of the DSSE PAE, and its
        certificate signer used SHA-256 whatever the curve (``sha256=True``); its key
        signer used the curve's hash. model-signing 1.x accepts both as a fallback,
        and so does this. 0.2 never signed with Ed25519.
        """
        if isinstance(public_key, Ed25519PublicKey):
            return False
        message = pae_v02(PAYLOAD_TYPE, self.payload)
        ec_hash = hashes.SHA256 if sha256 else None
        return any(verify_bytes(public_key, sig, message, ec_hash) for sig in self.signatures)


def pae_v02(payload_type: str, payload: bytes) -> bytes:
    """The pre-authentication encoding model-signing 0.2 signed by mistake.

    It formatted the payload *bytes* into a text string, so what was signed is
    ``DSSEV1 <len type> <type> <len payload> b'<payload with Python escapes>'``
    (capital V; the length is the raw payload's). Never used to sign; only to check
    signatures made by that release, as model-signing 1.x does.
    """
    return f"DSSEV1 {len(payload_type)} {payload_type} {len(payload)} {payload!r}".encode()


def _b64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise BundleError(f"{what} is not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        try:  # protobuf JSON allows the URL-safe alphabet too
            return base64.urlsafe_b64decode(value)
        except (binascii.Error, ValueError) as exc:
            raise BundleError(f"{what} is not base64 ({exc})") from None


def _envelope(env: object) -> tuple[bytes, list[bytes]]:
    if not isinstance(env, dict):
        raise BundleError("dsseEnvelope is not a JSON object")
    if env.get("payloadType") != PAYLOAD_TYPE:
        raise BundleError(f"payloadType is {env.get('payloadType')!r}; expected {PAYLOAD_TYPE}")
    sigs = env.get("signatures")
    if not isinstance(sigs, list) or not sigs or not all(isinstance(s, dict) for s in sigs):
        raise BundleError("the envelope has no signatures")
    payload = _b64(env.get("payload"), "the envelope payload")
    return payload, [_b64(s.get("sig"), "a signature") for s in sigs]


def _material(vm: object) -> tuple[str | None, list[bytes], list[dict[str, Any]]]:
    if not isinstance(vm, dict):
        raise BundleError("verificationMaterial is not a JSON object")
    hint: str | None = None
    certs: list[bytes] = []
    if "publicKey" in vm:
        pk = vm["publicKey"]
        raw_hint = pk.get("hint") if isinstance(pk, dict) else None
        hint = raw_hint if isinstance(raw_hint, str) and raw_hint else None
    elif "x509CertificateChain" in vm:
        chain = vm["x509CertificateChain"]
        items = chain.get("certificates") if isinstance(chain, dict) else None
        if not isinstance(items, list) or not items:
            raise BundleError("x509CertificateChain has no certificates")
        certs = [
            _b64(c.get("rawBytes") if isinstance(c, dict) else None, "a certificate") for c in items
        ]
    elif "certificate" in vm:
        cert = vm["certificate"]
        certs = [_b64(cert.get("rawBytes") if isinstance(cert, dict) else None, "the certificate")]
    else:
        raise BundleError(
            "verificationMaterial has no publicKey, certificate or x509CertificateChain"
        )
    tlog = vm.get("tlogEntries") or []
    if not isinstance(tlog, list) or not all(isinstance(e, dict) for e in tlog):
        raise BundleError("tlogEntries is not a list of objects")
    return hint, certs, tlog


def parse_bundle(data: bytes) -> SigstoreBundle:
    """Parse a Sigstore bundle (or a bare DSSE envelope); BundleError names what is wrong."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"not JSON ({exc}); expected a Sigstore bundle") from None
    if not isinstance(doc, dict):
        raise BundleError("not a JSON object; expected a Sigstore bundle")
    if "mediaType" not in doc and "payload" in doc:  # the registry's bare DSSE envelope
        payload, sigs = _envelope(doc)
        return SigstoreBundle("dsse-envelope", payload, sigs, raw=doc)
    media = doc.get("mediaType")
    if media not in MEDIA_TYPES:
        raise BundleError(f"mediaType is {media!r}; expected {MEDIA_TYPE_V03}")
    if "dsseEnvelope" not in doc:
        raise BundleError(
            "the bundle holds no dsseEnvelope (a messageSignature is not a model signature)"
        )
    payload, sigs = _envelope(doc["dsseEnvelope"])
    hint, certs, tlog = _material(doc.get("verificationMaterial"))
    return SigstoreBundle(str(media), payload, sigs, hint, certs, tlog, doc)


def read_bundle(path: Path) -> SigstoreBundle:
    """Read and parse a signature file; InputFileError when it cannot be read, BundleError when malformed.

    Besides Sigstore bundles and DSSE envelopes, a ``registry export`` tar is read:
    its first member's envelope is the signature.
    """
    try:
        if not path.is_file():
            raise InputFileError(path, "does not exist or is not a file; expected a signature")
        if path.stat().st_size > MAX_BUNDLE_BYTES and not tarfile.is_tarfile(path):
            raise InputFileError(path, f"is larger than {MAX_BUNDLE_BYTES} bytes; not a signature")
        if tarfile.is_tarfile(path):
            return _from_export(path)
        data = path.read_bytes()
    except OSError as exc:
        raise InputFileError(path, f"cannot be read ({exc.strerror or exc})") from None
    return parse_bundle(data)


def _from_export(path: Path) -> SigstoreBundle:
    """The DSSE envelope inside a ``registry export`` tar (first member, record.json)."""
    from mlwarden.integrity.bundle import MAX_RECORD, RECORD

    try:
        with tarfile.open(path, "r:*") as tar:
            first = tar.next()
            if (
                first is None
                or first.name != RECORD
                or not first.isreg()
                or first.size > MAX_RECORD
            ):
                raise BundleError(f"is a tar file but not a registry export (no {RECORD} first)")
            f = tar.extractfile(first)
            doc = json.loads(f.read()) if f is not None else None
    except (tarfile.TarError, ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"registry export cannot be read ({exc})") from None
    envelope = doc.get("envelope") if isinstance(doc, dict) else None
    if envelope is None:
        raise BundleError("the registry export is unsigned")
    return parse_bundle(json.dumps(envelope).encode())


def make_bundle(statement: dict[str, Any], key: SigningKey) -> dict[str, Any]:
    """A v0.3 bundle: ``statement`` in a DSSE envelope signed with ``key``, public-key hint."""
    payload = json.dumps(statement, indent=2).encode()
    sig = sign_bytes(key, pae(PAYLOAD_TYPE, payload))
    return {
        "mediaType": MEDIA_TYPE_V03,
        "verificationMaterial": {
            "publicKey": {"hint": key_hint(key.public_key())},
            "tlogEntries": [],
        },
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode(),
            "payloadType": PAYLOAD_TYPE,
            "signatures": [{"sig": base64.b64encode(sig).decode(), "keyid": ""}],
        },
    }


def write_bundle(path: Path, statement: dict[str, Any], key: SigningKey) -> Path:
    """Sign ``statement`` and write the bundle to ``path`` (temp file + rename: never half-written)."""
    data = json.dumps(make_bundle(statement, key), indent=2).encode() + b"\n"
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputFileError(path, "cannot be written: its folder does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=folder)
    try:
        # No fsync: a signature lost in a crash is made again, and a torn one fails closed;
        # waiting for the disk would double the time to sign a small model.
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
