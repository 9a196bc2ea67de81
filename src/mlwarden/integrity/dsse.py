"""DSSE envelopes around in-toto Statement v1, signed with Ed25519 or ECDSA (P-256/384/521).

The signature covers the DSSE pre-authentication encoding (PAE) of the payload, never
the raw payload or the JSON envelope::

    PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body

where ``LEN`` is the byte length in ASCII decimal (DSSE spec v1.0,
github.com/secure-systems-lab/dsse, "protocol.md"). The envelope is
``{"payload": b64(body), "payloadType": ..., "signatures": [{"keyid", "sig": b64}]}``.

The statement follows in-toto Attestation Framework Statement v1
(``_type = https://in-toto.io/Statement/v1``) with one subject per file (name = the
relative path, digest = ``{"sha256": hex}``) and the predicate type sigstore's
model-signing uses (``https://model_signing/signature/v1.0``), whose predicate has
``serialization`` and ``resources``; mlwarden adds its registry record under
``mlwarden``.

Example::

    env = sign_statement(make_statement(manifest, record), private_key)
    statement, keyid = verify_envelope(env, trusted_keys)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from typing import Any

from mlwarden.integrity.keys import SigningKey, VerifyingKey, key_id, sign_bytes, verify_bytes
from mlwarden.integrity.manifest import FileEntry, Manifest

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
#: Predicate of a signed alias move (``production`` -> version 3): mlwarden's own.
ALIAS_PREDICATE_TYPE = "https://mlwarden.dev/registry/alias/v1"
#: Largest envelope parsed (bytes): ~10,000-file manifests fit with room to spare.
MAX_ENVELOPE_BYTES = 256 * 1024 * 1024


class EnvelopeError(ValueError):
    """An envelope or statement that is malformed (not a signature problem)."""


class SignatureError(ValueError):
    """No signature in the envelope verifies with any of the given keys."""

    def __init__(self, message: str, keyids: list[str]) -> None:
        super().__init__(message)
        self.keyids = keyids


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding of ``payload`` (what is signed)."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def root_digest(manifest: Manifest) -> str:
    """model-signing's whole-model digest: SHA-256 over the raw file digests in path order."""
    h = hashlib.sha256()
    for entry in manifest.files.values():
        h.update(bytes.fromhex(entry.digest))
    return h.hexdigest()


def make_statement(manifest: Manifest, record: dict[str, Any]) -> dict[str, Any]:
    """An in-toto Statement v1 over every file of ``manifest``; ``record`` is the registry entry."""
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": n, "digest": {"sha256": e.digest}} for n, e in manifest.files.items()],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "serialization": {
                "method": "files",
                "hash_type": "sha256",
                "allow_symlinks": False,
                "ignore_paths": [],
            },
            "resources": [
                {"name": n, "algorithm": "sha256", "digest": e.digest, "size": e.size}
                for n, e in manifest.files.items()
            ],
            "root_digest": {"sha256": root_digest(manifest)},
            "mlwarden": record,
        },
    }


def statement_manifest(statement: dict[str, Any]) -> Manifest:
    """The manifest a statement signs, checked for unsafe paths and consistency."""
    try:
        if statement.get("_type") != STATEMENT_TYPE:
            raise EnvelopeError(f"statement _type is {statement.get('_type')!r}")
        if statement.get("predicateType") != PREDICATE_TYPE:
            raise EnvelopeError(f"predicateType is {statement.get('predicateType')!r}")
        resources = statement["predicate"]["resources"]
        subjects = statement["subject"]
        if not isinstance(resources, list) or not isinstance(subjects, list):
            raise EnvelopeError("subject and resources must be lists")
        if not resources:
            raise EnvelopeError("statement lists no files")
        files: dict[str, FileEntry] = {}
        for r in resources:
            if r.get("algorithm") != "sha256":
                raise EnvelopeError(f"resource {r.get('name')!r} is not hashed with sha256")
            size = r.get("size")
            if isinstance(size, bool) or not isinstance(size, int):
                raise EnvelopeError(f"resource {r.get('name')!r} has no integer size")
            if r["name"] in files:
                raise EnvelopeError(f"resource {r['name']!r} is listed twice")
            files[r["name"]] = FileEntry(r["digest"], size)
        subj = {s["name"]: s["digest"]["sha256"] for s in subjects}
    except (KeyError, TypeError, AttributeError) as exc:
        raise EnvelopeError(f"statement is not shaped like in-toto Statement v1 ({exc})") from None
    manifest = Manifest(files)  # validates every path and digest
    if subj != {n: e.digest for n, e in manifest.files.items()} or len(subjects) != len(subj):
        raise EnvelopeError("statement subjects disagree with its resources")
    return manifest


def sign_statement(statement: dict[str, Any], key: SigningKey) -> dict[str, Any]:
    """Sign ``statement`` into a DSSE envelope (signature over PAE; ECDSA signatures are DER)."""
    body = json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()
    sig = sign_bytes(key, pae(PAYLOAD_TYPE, body))
    return {
        "payload": base64.b64encode(body).decode(),
        "payloadType": PAYLOAD_TYPE,
        "signatures": [{"keyid": key_id(key.public_key()), "sig": base64.b64encode(sig).decode()}],
    }


def parse_envelope(envelope: object) -> tuple[bytes, list[tuple[str, bytes]]]:
    """Payload bytes and ``(keyid, signature)`` pairs of an envelope; EnvelopeError if malformed."""
    if isinstance(envelope, (str, bytes)):
        if len(envelope) > MAX_ENVELOPE_BYTES:
            raise EnvelopeError("envelope is too large")
        try:
            envelope = json.loads(envelope)
        except (ValueError, UnicodeDecodeError) as exc:
            raise EnvelopeError(f"envelope is not JSON ({exc})") from None
    if not isinstance(envelope, dict):
        raise EnvelopeError("envelope is not a JSON object")
    if envelope.get("payloadType") != PAYLOAD_TYPE:
        raise EnvelopeError(f"payloadType is {envelope.get('payloadType')!r}, not {PAYLOAD_TYPE}")
    sigs = envelope.get("signatures")
    if not isinstance(sigs, list) or not sigs:
        raise EnvelopeError("envelope has no signatures")
    try:
        payload = base64.b64decode(envelope["payload"], validate=True)
        pairs = [(str(s.get("keyid", "")), base64.b64decode(s["sig"], validate=True)) for s in sigs]
    except (KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise EnvelopeError(f"envelope payload or signature is not base64 ({exc})") from None
    return payload, pairs


def verify_envelope(
    envelope: object, trusted: Sequence[VerifyingKey], predicate_type: str = PREDICATE_TYPE
) -> tuple[dict[str, Any], str]:
    """Check a signature over PAE with the trusted keys; return the statement and signer's key id.

    Raises :class:`SignatureError` when no signature verifies with any trusted key
    (its ``keyids`` are the signers named in the envelope) and :class:`EnvelopeError`
    when the envelope or its statement is malformed.
    """
    payload, pairs = parse_envelope(envelope)
    message = pae(PAYLOAD_TYPE, payload)
    named = [k for k, _ in pairs]
    for key in trusted:
        for _, sig in pairs:
            if verify_bytes(key, sig, message):
                return _load_statement(payload, predicate_type), key_id(key)
    raise SignatureError("no signature verifies with a trusted key", named)


def unverified_statement(envelope: object, predicate_type: str = PREDICATE_TYPE) -> dict[str, Any]:
    """The statement inside an envelope, WITHOUT checking any signature (for display/diff)."""
    payload, _ = parse_envelope(envelope)
    return _load_statement(payload, predicate_type)


def _load_statement(payload: bytes, predicate_type: str = PREDICATE_TYPE) -> dict[str, Any]:
    try:
        statement = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EnvelopeError(f"signed payload is not JSON ({exc})") from None
    if not isinstance(statement, dict):
        raise EnvelopeError("signed payload is not a JSON object")
    if predicate_type == PREDICATE_TYPE:
        statement_manifest(statement)  # raises UnsafeManifestError on a hostile path
    elif (
        statement.get("_type") != STATEMENT_TYPE
        or statement.get("predicateType") != predicate_type
        or not isinstance(statement.get("predicate"), dict)
    ):
        raise EnvelopeError(f"signed statement is not a {predicate_type} statement")
    return statement


def make_alias_statement(
    name: str, alias: str, version: int, manifest_digest: str, who: str, when: str
) -> dict[str, Any]:
    """A statement that ``name@alias`` points at ``name@version`` (whose manifest digest is given)."""
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": f"{name}@{version}", "digest": {"sha256": manifest_digest}}],
        "predicateType": ALIAS_PREDICATE_TYPE,
        "predicate": {
            "name": name,
            "alias": alias,
            "version": version,
            "manifest_digest": manifest_digest,
            "who": who,
            "when": when,
        },
    }
