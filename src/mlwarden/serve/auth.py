"""API keys: creation, hashing and constant-time lookup.

A key is 32 random bytes from the OS CSPRNG (``secrets``), shown once as
``mlw_<base64url>``. Only ``sha256:<hex>`` of it is stored: with 256 bits of entropy
a fast hash is enough (no dictionary to attack; a slow KDF would only add latency to
every request). Lookup compares the presented key's hash with every stored hash
using :func:`hmac.compare_digest`, so timing reveals neither which key matched nor
how much of it did. Keys are never logged; the audit log holds the key's *name*.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping

KEY_PREFIX = "mlw_"
KEY_BYTES = 32


def new_key() -> str:
    """A fresh API key: ``mlw_`` + 32 random bytes in URL-safe base64 (43 characters)."""
    return KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)


def hash_key(key: str) -> str:
    """The stored form of a key: ``sha256:<64 hex digits>``."""
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


class KeyStore:
    """Maps a presented key to the name it was registered under.

    Args:
        hashes: key name -> stored hash (``sha256:<hex>``).
    """

    def __init__(self, hashes: Mapping[str, str]) -> None:
        self._entries = [(name, h.encode("ascii")) for name, h in hashes.items()]

    def identify(self, key: str) -> str | None:
        """The key's name, or ``None`` for an unknown key. Constant time in the match."""
        if not key or len(key) > 256:
            return None
        presented = hash_key(key).encode("ascii")
        found: str | None = None
        for name, stored in self._entries:
            if hmac.compare_digest(presented, stored):
                found = name
        return found


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else ``None``."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
