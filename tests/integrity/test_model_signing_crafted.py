"""Crafted model-signing 1.0 bundles: ``mlwarden verify`` against model_signing's own verifier.

Each bundle is validly signed with the trusted EC key but its statement is hostile or
malformed. Whatever the reference verifier refuses, we refuse with a high or critical
finding (exit 1); where we are stricter, the case says why.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import model_signing
import pytest

from mlwarden.core.severity import Severity
from mlwarden.integrity.dsse import PAYLOAD_TYPE, pae
from mlwarden.integrity.keys import generate_keypair, key_hint, load_signing_key, sign_bytes
from mlwarden.integrity.model_signing_interop import Serialization, make_statement
from mlwarden.integrity.signature_check import verify_signature_report

Statement = dict[str, Any]


def _resources(st: Statement) -> list[dict[str, str]]:
    return st["predicate"]["resources"]  # type: ignore[no-any-return]


def _reroot(st: Statement) -> Statement:
    """Recompute the subject digest so only the mutation itself is wrong."""
    raw = b"".join(bytes.fromhex(r["digest"]) for r in _resources(st))
    st["subject"][0]["digest"]["sha256"] = hashlib.sha256(raw).hexdigest()
    return st


def _rename(old: str, new: str) -> Callable[[Statement], Statement]:
    def mutate(st: Statement) -> Statement:
        for r in _resources(st):
            if r["name"] == old:
                r["name"] = new
        return _reroot(st)

    return mutate


def _duplicate(st: Statement) -> Statement:
    _resources(st).append(dict(_resources(st)[0]))
    return _reroot(st)


def _two_subjects(st: Statement) -> Statement:
    st["subject"].append({"name": "other", "digest": {"sha256": "00" * 32}})
    return st


def _wrong_root(st: Statement) -> Statement:
    st["subject"][0]["digest"]["sha256"] = "11" * 32
    return st


def _algorithm(st: Statement) -> Statement:
    _resources(st)[0]["algorithm"] = "blake2b"
    return st


def _predicate(st: Statement) -> Statement:
    st["predicateType"] = "https://slsa.dev/provenance/v1"
    return st


#: name -> (mutation, the rule we report, model_signing 1.x's verdict). Where the
#: reference says "ok" we are stricter on purpose: a resource listed twice is malformed.
CASES: dict[str, tuple[Callable[[Statement], Statement], str, str]] = {
    "path traversal": (_rename("sub/b.bin", "../m/sub/b.bin"), "MLW-SIG-006", "refused"),
    "absolute path": (_rename("sub/b.bin", "/etc/passwd"), "MLW-SIG-006", "refused"),
    "backslash path": (_rename("sub/b.bin", "sub\\b.bin"), "MLW-SIG-006", "refused"),
    "case collision": (_rename("a.bin", "A.bin"), "MLW-SIG-002", "refused"),
    "unicode-normalised name": (_rename("sub/b.bin", "su\u0062\u0301/b.bin"), "MLW-SIG-002", "refused"),
    "duplicate resource": (_duplicate, "MLW-SIG-005", "ok"),
    "two subjects": (_two_subjects, "MLW-SIG-005", "refused"),
    "root digest of other resources": (_wrong_root, "MLW-SIG-005", "refused"),
    "algorithm not the serialization's": (_algorithm, "MLW-SIG-005", "refused"),
    "another predicate type": (_predicate, "MLW-SIG-005", "refused"),
}  # fmt: skip


def _bundle(key_path: Path, st: Statement, sig: Path, payload_type: str = PAYLOAD_TYPE) -> None:
    payload = json.dumps(st, indent=2).encode()
    key = load_signing_key(key_path)
    signature = sign_bytes(key, pae(payload_type, payload))
    doc = {
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {"publicKey": {"hint": key_hint(key.public_key())}, "tlogEntries": []},
        "dsseEnvelope": {"payload": base64.b64encode(payload).decode(), "payloadType": payload_type,
                         "signatures": [{"sig": base64.b64encode(signature).decode(), "keyid": ""}]},
    }  # fmt: skip
    sig.write_text(json.dumps(doc))


def _ms_verdict(model: Path, sig: Path, pub: Path) -> str:
    try:
        model_signing.verifying.Config().use_elliptic_key_verifier(public_key=pub).verify(
            model, sig
        )
    except Exception:  # the reference reports every refusal as an exception
        return "refused"
    return "ok"


@pytest.fixture
def signed_parts(tmp_path: Path) -> tuple[Path, Path, Path, Statement]:
    root = tmp_path / "m"
    (root / "sub").mkdir(parents=True)
    (root / "a.bin").write_bytes(b"\x01" * 100)
    (root / "sub" / "b.bin").write_bytes(b"\x02" * 100)
    resources = {
        n: hashlib.sha256((root / n).read_bytes()).hexdigest() for n in ("a.bin", "sub/b.bin")
    }
    priv, pub = generate_keypair(tmp_path / "k" / "ec", "ecdsa-p256")
    return root, priv, pub, make_statement("m", resources, Serialization())


def test_the_unmodified_statement_verifies_with_both(
    signed_parts: tuple[Path, Path, Path, Statement], tmp_path: Path
) -> None:
    root, priv, pub, st = signed_parts
    _bundle(priv, st, tmp_path / "model.sig")
    assert _ms_verdict(root, tmp_path / "model.sig", pub) == "ok"
    assert verify_signature_report(root, tmp_path / "model.sig", trust=[pub]).findings == []


@pytest.mark.parametrize("case", list(CASES))
def test_crafted_statement_is_refused_wherever_model_signing_refuses_it(
    signed_parts: tuple[Path, Path, Path, Statement], tmp_path: Path, case: str
) -> None:
    root, priv, pub, st = signed_parts
    mutate, rule, reference = CASES[case]
    sig = tmp_path / "model.sig"
    _bundle(priv, mutate(st), sig)
    assert _ms_verdict(root, sig, pub) == reference
    report = verify_signature_report(root, sig, trust=[pub])
    assert rule in {f.rule for f in report.findings}
    assert max(f.severity for f in report.findings) >= Severity.HIGH


def test_wrong_payload_type_is_refused_by_both(
    signed_parts: tuple[Path, Path, Path, Statement], tmp_path: Path
) -> None:
    root, priv, pub, st = signed_parts
    sig = tmp_path / "model.sig"
    _bundle(priv, st, sig, payload_type="application/json")
    assert _ms_verdict(root, sig, pub) == "refused"
    assert [f.rule for f in verify_signature_report(root, sig, trust=[pub]).findings] == [
        "MLW-SIG-005"
    ]
