"""Secrets and network indicators inside model files (MLW-SCN-027): API tokens, private
keys, credentials written into URLs, and URLs of raw executables, found in the bytes the
scanner reads (the first 64 KiB of every file, archive member and decompressed stream,
the bytes its first read holds anyway:
pickle string constants, safetensors/GGUF metadata, ONNX doc strings, configs; and the
whole of text and JSON files, up to 16 MiB, which the scanner reads whole anyway).

A token in a model file is a leak (whoever downloads the model can use it); a URL of a
``.sh``/``.exe`` is what a payload downloads. Neither runs by itself: low, unless the
file also calls code (then its other findings say so). Reports never carry the secret:
the kind, its first four characters and its length only.

Example::

    find_secrets(b'{"token": "hf_abcdefghijklmnopqrstuvwxyzABCDEFGH"}')
    # [("Hugging Face token", "hf_a… (37 chars)", 11)]
"""

from __future__ import annotations

import re

from mlwarden.core.severity import Severity
from mlwarden.supplychain.results import Sink

RULE = "MLW-SCN-027"
WINDOW = 64 << 10  #: bytes of each stream searched (what the scanner's first read holds)
TEXT_WINDOW = 16 << 20  #: bytes of a text or JSON document searched (read whole anyway)

_PATTERNS: tuple[tuple[str, bytes], ...] = (
    ("private key", rb"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY-----"),
    ("AWS access key id", rb"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    ("GitHub token", rb"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{60,255})\b"),
    ("Hugging Face token", rb"\bhf_[A-Za-z0-9]{34,40}\b"),
    ("OpenAI API key", rb"\bsk-(?:proj-|svcacct-)?[A-Za-z0-9_-]{20,}T3BlbkFJ[A-Za-z0-9_-]{20,}"),
    ("Anthropic API key", rb"\bsk-ant-(?:api|admin)\d\d-[A-Za-z0-9_-]{80,}"),
    ("Slack token", rb"\bxox[abposr]-[0-9]{8,}-[0-9A-Za-z-]{8,}"),
    ("Google API key", rb"\bAIza[0-9A-Za-z_-]{35}\b"),
    ("Stripe secret key", rb"\b[rs]k_live_[0-9A-Za-z]{24,}\b"),
    ("JSON web token", rb"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
    (
        "credentials in a URL",
        rb"\b[a-z][a-z0-9+.-]{1,15}://[A-Za-z0-9._%~!$&'()*+,;=-]{1,64}:"
        rb"[A-Za-z0-9._%~!$&'()*+,;=-]{1,128}@[A-Za-z0-9.-]+",
    ),
    (
        "URL of a raw executable or script",
        rb"\bhttps?://[A-Za-z0-9.-]+(?::\d+)?/[^\s\"'<>]*?\."
        rb"(?:exe|sh|bash|ps1|bat|cmd|dll|so|dylib|msi|scr|vbs|jar|elf|apk)(?=[\s\"'<>?#)]|$)",
    ),
)
_ANY = re.compile(b"|".join(b"(" + p + b")" for _, p in _PATTERNS))
#: a first pass that skips the full regex on the (usual) windows with no candidate at all
_CHEAP = re.compile(
    rb"PRIVATE KEY|AKIA|ASIA|gh[pousr]_|github_pat_|hf_|sk-|xox|AIza|_live_|eyJ|://"
)


def _redact(kind: str, value: bytes) -> str:
    text = value.decode("latin-1")
    if kind.startswith("URL"):
        return repr(text[:120])  # an executable's URL is no secret: it is the evidence
    if kind == "credentials in a URL":
        scheme, _, rest = text.partition("://")
        return f"{scheme}://…:…@{rest.rpartition('@')[2][:60]}"
    return f"{text[:4]}… ({len(text)} chars)"


def find_secrets(data: bytes) -> list[tuple[str, str, int]]:
    """``(kind, redacted value, offset)`` of every secret or indicator in ``data``."""
    if _CHEAP.search(data) is None:
        return []
    found = []
    for m in _ANY.finditer(data):
        kind = _PATTERNS[m.lastindex - 1][0] if m.lastindex else "secret"
        found.append((kind, _redact(kind, m.group()), m.start()))
    return found


def check_secrets(data: bytes, sink: Sink, base: int = 0, limit: int = WINDOW) -> None:
    """Report what :func:`find_secrets` finds in the first ``limit`` bytes of ``data``
    (``base``: the stream offset of ``data``)."""
    for kind, shown, offset in find_secrets(data[:limit])[:50]:
        sink.add(
            RULE,
            Severity.LOW,
            f"{kind} in the file: {shown} (anyone with the file can read it)",
            offset=base + offset,
        )
