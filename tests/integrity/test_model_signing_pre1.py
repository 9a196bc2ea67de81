"""model-signing signatures from before 1.0 (0.2), checked against model-signing 1.x itself.

model-signing 1.x still verifies 0.2 signatures: their statement lists one subject
per file (predicate ``https://model_signing/Digests/v0.1``) and their signature
covers 0.2's buggy DSSE encoding (with SHA-256 for certificates). ``mlwarden
verify`` does the same, adds a low MLW-SIG-009 note, and is compared with the
reference verifier on the real 0.2.0 test vector and on crafted bundles.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from typing import Any

import model_signing
import pytest

from mlwarden.core.findings import Report
from mlwarden.integrity.dsse import PAYLOAD_TYPE
from mlwarden.integrity.keys import generate_keypair, key_hint, load_signing_key, sign_bytes
from mlwarden.integrity.signature_check import verify_signature_report
from mlwarden.integrity.sigstore_bundle import pae_v02

VECTOR = Path(__file__).parent / "data" / "model_signing_v0.2.0_certificate"
V01 = "https://model_signing/Digests/v0.1"


def rules(report: Report) -> dict[str, list[str]]:
    return {f.rule: f.evidence.get("files", []) for f in report.findings}


def ms_verdict(model: Path, sig: Path, *, ca: Path | None = None, pub: Path | None = None) -> str:
    """model_signing 1.x's own verdict: "ok" or "refused" (its CLI's settings: the signature ignored)."""
    cfg = model_signing.verifying.Config().set_hashing_config(
        model_signing.hashing.Config().set_ignored_paths(paths=[sig])
    )
    if ca is not None:
        cfg = cfg.use_certificate_verifier(certificate_chain=[ca])
    else:
        cfg = cfg.use_elliptic_key_verifier(public_key=pub)
    try:
        cfg.verify(model, sig)
    except Exception:  # the reference reports every refusal as an exception
        return "refused"
    return "ok"


@pytest.fixture
def vector(tmp_path: Path) -> Path:
    return Path(shutil.copytree(VECTOR / "model", tmp_path / "model"))


def test_real_0_2_0_signature_verifies_with_a_low_note_as_model_signing_accepts_it(
    vector: Path, run_cli: Any
) -> None:
    ca = VECTOR / "ca-cert.pem"
    report = verify_signature_report(vector, vector / "model.sig", trust_chain=[ca])
    assert rules(report) == {"MLW-SIG-009": []}
    assert report.artifacts["signature"]["format"] == "v0.2"
    assert ms_verdict(vector, vector / "model.sig", ca=ca) == "ok"
    rc, _, _ = run_cli("verify", str(vector), "--signature", str(vector / "model.sig"),
                       "--trust-chain", str(ca))  # fmt: skip
    assert rc == 0


@pytest.mark.parametrize("attack", ["one byte", "extra file", "missing file"])
def test_real_0_2_0_signature_names_what_changed_and_model_signing_refuses_too(
    vector: Path, attack: str
) -> None:
    ca = VECTOR / "ca-cert.pem"
    if attack == "one byte":
        data = bytearray((vector / "signme-2").read_bytes())
        data[0] ^= 1
        (vector / "signme-2").write_bytes(bytes(data))
    elif attack == "extra file":
        (vector / "evil.py").write_bytes(b"print('canary')")
    else:
        (vector / "signme-1").unlink()
    expected = {"one byte": ("MLW-SIG-001", ["signme-2"]), "extra file": ("MLW-SIG-003", ["evil.py"]),
                "missing file": ("MLW-SIG-002", ["signme-1"])}[attack]  # fmt: skip
    found = rules(verify_signature_report(vector, vector / "model.sig", trust_chain=[ca]))
    assert found.get(expected[0]) == expected[1]
    assert ms_verdict(vector, vector / "model.sig", ca=ca) == "refused"


def test_0_2_0_certificate_signature_with_another_ca_is_not_valid(
    vector: Path, tmp_path: Path
) -> None:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "root-ca")])  # the same name
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA384())
    )  # fmt: skip
    other_ca = tmp_path / "other-ca.pem"
    other_ca.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    report = verify_signature_report(vector, vector / "model.sig", trust_chain=[other_ca])
    assert list(rules(report)) == ["MLW-SIG-005"]
    assert ms_verdict(vector, vector / "model.sig", ca=other_ca) == "refused"


def _v02_bundle(key_path: Path, subjects: list[dict[str, Any]], sig: Path) -> None:
    """A 0.2-style key signature: v0.1 statement signed over 0.2's encoding."""
    statement = {"_type": "https://in-toto.io/Statement/v1", "subject": subjects,
                 "predicateType": V01, "predicate": {"unused": "Unused"}}  # fmt: skip
    payload = json.dumps(statement, indent=2).encode()
    key = load_signing_key(key_path)
    signature = sign_bytes(key, pae_v02(PAYLOAD_TYPE, payload))
    bundle = {
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {"publicKey": {"hint": key_hint(key.public_key())}},
        "dsseEnvelope": {"payload": base64.b64encode(payload).decode(),
                         "payloadType": PAYLOAD_TYPE,
                         "signatures": [{"sig": base64.b64encode(signature).decode()}]},
    }  # fmt: skip
    sig.write_text(json.dumps(bundle))


def _subject(name: str, digest: str) -> dict[str, Any]:
    return {"name": name, "digest": {"sha256": digest},
            "annotations": {"actual_hash_algorithm": "file-sha256"}}  # fmt: skip


def _digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "m"
    (root / "sub").mkdir(parents=True)
    (root / "a.bin").write_bytes(b"\x01" * 100)
    (root / "sub" / "b.bin").write_bytes(b"\x02" * 100)
    return root


@pytest.mark.parametrize("key_type", ["ecdsa-p256", "ecdsa-p384"])
def test_0_2_style_key_signature_is_accepted_by_both_and_a_tamper_by_neither(
    folder: Path, tmp_path: Path, key_type: str
) -> None:
    priv, pub = generate_keypair(tmp_path / "k" / key_type, key_type)
    sig = tmp_path / "model.sig"
    names = ["a.bin", "sub/b.bin"]
    _v02_bundle(priv, [_subject(n, _digest(folder / n)) for n in names], sig)
    assert ms_verdict(folder, sig, pub=pub) == "ok"
    assert rules(verify_signature_report(folder, sig, trust=[pub])) == {"MLW-SIG-009": []}
    (folder / "sub" / "b.bin").write_bytes(b"\x02" * 99 + b"\x03")
    assert ms_verdict(folder, sig, pub=pub) == "refused"
    assert rules(verify_signature_report(folder, sig, trust=[pub]))["MLW-SIG-001"] == ["sub/b.bin"]


#: Crafted 0.2 statements: subjects (from the digests of a.bin and sub/b.bin), the rule we
#: report, and model_signing 1.x's verdict. Where it says "ok" we are stricter on purpose:
#: a statement that lists a file twice, or says a file was hashed in shards while its digest
#: is the whole file's, is malformed, and a malformed signature fails closed.
CRAFTED: dict[str, tuple[Any, str, str]] = {
    "path traversal": (lambda a, b: [_subject("a.bin", a), _subject("../sub/b.bin", b)], "MLW-SIG-006", "refused"),
    "absolute path": (lambda a, b: [_subject("a.bin", a), _subject("/etc/passwd", b)], "MLW-SIG-006", "refused"),
    "duplicate subject, other digest": (
        lambda a, b: [_subject("a.bin", a), _subject("a.bin", b), _subject("sub/b.bin", b)],
        "MLW-SIG-005", "refused",
    ),
    "duplicate subject, same digest": (
        lambda a, b: [_subject("a.bin", a), _subject("a.bin", a), _subject("sub/b.bin", b)],
        "MLW-SIG-005", "ok",
    ),
    "sharded hashing claimed": (
        lambda a, b: [{**_subject("a.bin", a), "annotations": {"actual_hash_algorithm": "shard-sha256"}},
                      _subject("sub/b.bin", b)],
        "MLW-SIG-005", "ok",
    ),
    "no subjects": (lambda a, b: [], "MLW-SIG-005", "refused"),
    "a file left out": (lambda a, b: [_subject("a.bin", a)], "MLW-SIG-003", "refused"),
    "case-colliding name": (lambda a, b: [_subject("A.bin", a), _subject("sub/b.bin", b)], "MLW-SIG-002", "refused"),
    "unicode-normalised name": (
        lambda a, b: [_subject("a.bin", a), _subject("su\u0062\u0301/b.bin", b)],
        "MLW-SIG-002", "refused",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CRAFTED))
def test_crafted_0_2_statements_are_refused_as_model_signing_refuses_them(
    folder: Path, tmp_path: Path, case: str
) -> None:
    """Differential: every crafted statement model_signing 1.x refuses, we refuse (exit 1) too."""
    priv, pub = generate_keypair(tmp_path / "k" / "ec", "ecdsa-p256")
    sig = tmp_path / "model.sig"
    make, rule, reference = CRAFTED[case]
    _v02_bundle(priv, make(_digest(folder / "a.bin"), _digest(folder / "sub/b.bin")), sig)
    assert ms_verdict(folder, sig, pub=pub) == reference
    report = verify_signature_report(folder, sig, trust=[pub])
    assert rule in rules(report)
    assert max(f.severity.rank for f in report.findings) >= 3  # high or critical: exit 1
