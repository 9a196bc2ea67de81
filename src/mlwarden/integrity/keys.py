"""Ed25519 signing keys: generate, load, and name them by key id.

``generate_keypair(path)`` writes the private key to ``path`` (PKCS#8 PEM, mode 0600,
created exclusively so an existing key is never overwritten) and the public key to
``path.pub`` (SubjectPublicKeyInfo PEM). A key id is the SHA-256 (hex) of the raw
32-byte public key, so the same key has the same id everywhere.

Ed25519: "High-speed high-security signatures", Bernstein et al. 2011 (RFC 8032).

Example::

    priv_path, pub_path = generate_keypair(Path("release.key"))
    key = load_private_key(priv_path)
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from mlwarden.core.errors import InputFileError, UserError

#: Largest key file read (bytes); a PEM Ed25519 key is about 120 bytes.
MAX_KEY_BYTES = 64 * 1024


def key_id(public_key: Ed25519PublicKey) -> str:
    """SHA-256 (hex) of the raw 32-byte public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def public_pem(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def generate_keypair(path: Path) -> tuple[Path, Path]:
    """Write a new Ed25519 private key to ``path`` (0600) and its public key to ``path.pub``."""
    pub_path = path.with_name(path.name + ".pub")
    for p in (path, pub_path):
        if p.exists() or p.is_symlink():
            raise UserError(f"{p} already exists; refusing to overwrite a key (remove it first)")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        why = "a parent folder is a file" if isinstance(exc, FileExistsError) else exc.strerror
        raise InputFileError(path, f"cannot be created ({why or exc})") from None
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(path, 0o600)
    fd = os.open(pub_path, flags, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(public_pem(key.public_key()))
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
