"""Signing keys: generate, load, and name them by key id.

``generate_keypair(path, key_type)`` writes the private key to ``path`` (PKCS#8 PEM,
mode 0600, created exclusively so an existing key is never overwritten) and the
public key to ``path.pub`` (SubjectPublicKeyInfo PEM). Types: ``ed25519`` (default;
the registry signs with it) and ``ecdsa-p256`` / ``ecdsa-p384`` / ``ecdsa-p521``
(what OpenSSF model-signing's key method accepts; it rejects Ed25519).

A registry key id is the SHA-256 (hex) of the raw 32-byte Ed25519 public key, or of
the DER SubjectPublicKeyInfo of an EC key (the registry signs with either). The
*hint* of any key is model-signing's: SHA-256 (hex) of its SubjectPublicKeyInfo PEM.

Ed25519: "High-speed high-security signatures", Bernstein et al. 2011 (RFC 8032).
ECDSA: FIPS 186-5, with SHA-256 / SHA-384 / SHA-512 for P-256 / P-384 / P-521 (the
pairing model-signing and Sigstore's protobuf specs use).

Example::

    priv_path, pub_path = generate_keypair(Path("release.key"), "ecdsa-p256")
    key = load_signing_key(priv_path)
    sig = sign_bytes(key, b"data"); verify_bytes(key.public_key(), sig, b"data")
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from mlwarden.core.errors import InputFileError, UserError

#: Largest key file read (bytes); a PEM Ed25519 key is about 120 bytes.
MAX_KEY_BYTES = 64 * 1024

#: Key types ``generate_keypair`` writes: name -> EC curve (None: Ed25519).
KEY_TYPES: dict[str, type[ec.EllipticCurve] | None] = {
    "ed25519": None,
    "ecdsa-p256": ec.SECP256R1,
    "ecdsa-p384": ec.SECP384R1,
    "ecdsa-p521": ec.SECP521R1,
}
#: EC curve name -> (key type, the hash ECDSA uses with it).
_CURVES: dict[str, tuple[str, type[hashes.HashAlgorithm]]] = {
    "secp256r1": ("ecdsa-p256", hashes.SHA256),
    "secp384r1": ("ecdsa-p384", hashes.SHA384),
    "secp521r1": ("ecdsa-p521", hashes.SHA512),
}

SigningKey = Ed25519PrivateKey | ec.EllipticCurvePrivateKey
VerifyingKey = Ed25519PublicKey | ec.EllipticCurvePublicKey


def key_id(public_key: VerifyingKey) -> str:
    """The registry's key id: SHA-256 (hex) of the raw 32-byte Ed25519 key or an EC key's DER SPKI.

    Ed25519 ids are unchanged from registries signed before EC keys were allowed.
    """
    if isinstance(public_key, Ed25519PublicKey):
        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    else:
        raw = public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    return hashlib.sha256(raw).hexdigest()


def public_pem(public_key: VerifyingKey) -> bytes:
    """SubjectPublicKeyInfo PEM of a public key."""
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_hint(public_key: VerifyingKey) -> str:
    """model-signing's public-key hint: SHA-256 (hex) of the SubjectPublicKeyInfo PEM."""
    return hashlib.sha256(public_pem(public_key)).hexdigest()


def key_type(public_key: object) -> str:
    """``ed25519`` / ``ecdsa-p256`` / ...; UserError for a key type no signer here uses."""
    if isinstance(public_key, Ed25519PublicKey):
        return "ed25519"
    if isinstance(public_key, ec.EllipticCurvePublicKey) and public_key.curve.name in _CURVES:
        return _CURVES[public_key.curve.name][0]
    what = getattr(getattr(public_key, "curve", None), "name", type(public_key).__name__)
    raise UserError(f"unsupported key type {what}; expected Ed25519 or ECDSA P-256, P-384 or P-521")


def sign_bytes(key: SigningKey, data: bytes) -> bytes:
    """Sign ``data``: Ed25519, or ECDSA (DER signature) with the curve's paired hash."""
    if isinstance(key, Ed25519PrivateKey):
        return key.sign(data)
    return key.sign(data, ec.ECDSA(_CURVES[key.curve.name][1]()))


def verify_bytes(
    public_key: VerifyingKey,
    signature: bytes,
    data: bytes,
    ec_hash: type[hashes.HashAlgorithm] | None = None,
) -> bool:
    """Whether ``signature`` over ``data`` verifies with ``public_key`` (never raises on a bad one).

    ``ec_hash`` overrides the curve's paired hash (model-signing 0.2 certificates
    signed with SHA-256 whatever the curve).
    """
    try:
        if isinstance(public_key, Ed25519PublicKey):
            public_key.verify(signature, data)
        else:
            algorithm = ec_hash or _CURVES[public_key.curve.name][1]
            public_key.verify(signature, data, ec.ECDSA(algorithm()))
    except (InvalidSignature, ValueError, KeyError):
        return False
    return True


def generate_keypair(path: Path, key_type: str = "ed25519") -> tuple[Path, Path]:
    """Write a new private key to ``path`` (0600) and its public key to ``path.pub``.

    ``key_type`` is one of :data:`KEY_TYPES`: ``ed25519`` (default) or
    ``ecdsa-p256`` / ``ecdsa-p384`` / ``ecdsa-p521`` (use EC to hand signatures to
    OpenSSF model-signing, whose key method rejects Ed25519).
    """
    if key_type not in KEY_TYPES:
        raise UserError(f"key type {key_type!r} is unknown; expected one of {', '.join(KEY_TYPES)}")
    pub_path = path.with_name(path.name + ".pub")
    for p in (path, pub_path):
        if p.exists() or p.is_symlink():
            raise UserError(f"{p} already exists; refusing to overwrite a key (remove it first)")
    curve = KEY_TYPES[key_type]
    key: SigningKey = (
        Ed25519PrivateKey.generate() if curve is None else ec.generate_private_key(curve())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # both files are created through one folder descriptor, and the mode is set on
        # the open file: a folder or name swapped for a link afterwards redirects nothing
        folder = os.open(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError as exc:
        why = "a parent folder is a file" if isinstance(exc, FileExistsError) else exc.strerror
        raise InputFileError(path, f"cannot be created ({why or exc})") from None
    try:
        for target, data, mode in (
            (path, pem, 0o600),
            (pub_path, public_pem(key.public_key()), 0o644),
        ):
            try:
                fd = os.open(target.name, flags, mode, dir_fd=folder)
            except OSError as exc:
                raise InputFileError(target, f"cannot be created ({exc.strerror or exc})") from None
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), mode)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
    finally:
        os.close(folder)
    return path, pub_path


def _read_key_file(path: Path) -> bytes:
    try:
        if path.stat().st_size > MAX_KEY_BYTES:
            raise InputFileError(path, f"is larger than {MAX_KEY_BYTES} bytes; not a key file")
        return path.read_bytes()
    except OSError as exc:
        raise InputFileError(path, f"cannot be read ({exc.strerror})") from None


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Load an Ed25519 private key (PEM, unencrypted) written by :func:`generate_keypair`."""
    data = _read_key_file(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise InputFileError(
            path,
            f"is not an unencrypted PEM private key ({exc}); expected 'mlwarden keys generate'",
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InputFileError(path, f"holds a {type(key).__name__}; expected an Ed25519 key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Load an Ed25519 public key (PEM SubjectPublicKeyInfo, e.g. ``KEYFILE.pub``)."""
    data = _read_key_file(path)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise InputFileError(
            path, f"is not a PEM public key ({exc}); expected the KEYFILE.pub of a key pair"
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise InputFileError(path, f"holds a {type(key).__name__}; expected an Ed25519 key")
    return key


def load_signing_key(path: Path) -> SigningKey:
    """Load an Ed25519 or ECDSA P-256/P-384/P-521 private key (PEM, unencrypted)."""
    data = _read_key_file(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise InputFileError(
            path,
            f"is not an unencrypted PEM private key ({exc}); expected 'mlwarden keys generate'",
        ) from None
    if not isinstance(key, (Ed25519PrivateKey, ec.EllipticCurvePrivateKey)):
        raise InputFileError(
            path, f"holds a {type(key).__name__}; expected an Ed25519 or ECDSA key"
        )
    try:
        key_type(key.public_key())
    except UserError as exc:
        raise InputFileError(path, str(exc)) from None
    return key


def parse_verifying_key(data: bytes, where: object) -> VerifyingKey:
    """An Ed25519 or ECDSA P-256/P-384/P-521 public key from PEM bytes (``where`` names them)."""
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise InputFileError(
            where, f"is not a PEM public key ({exc}); expected the KEYFILE.pub of a key pair"
        ) from None
    if not isinstance(key, (Ed25519PublicKey, ec.EllipticCurvePublicKey)):
        raise InputFileError(
            where, f"holds a {type(key).__name__}; expected an Ed25519 or ECDSA public key"
        )
    try:
        key_type(key)
    except UserError as exc:
        raise InputFileError(where, str(exc)) from None
    return key


def load_verifying_key(path: Path) -> VerifyingKey:
    """Load an Ed25519 or ECDSA P-256/P-384/P-521 public key (PEM SubjectPublicKeyInfo)."""
    return parse_verifying_key(_read_key_file(path), path)


def trusted_keys(trust: Iterable[Path | str | VerifyingKey]) -> list[VerifyingKey]:
    """Public keys from key files (PEM) or key objects, e.g. a command's ``--trust`` list."""
    return [load_verifying_key(Path(t)) if isinstance(t, (Path, str)) else t for t in trust]
