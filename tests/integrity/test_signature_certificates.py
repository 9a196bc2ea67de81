"""Certificate-method signatures: our own CA (built with cryptography), signed by model_signing.

Each test builds a root CA, an intermediate and a signing certificate, signs a model
with ``model_signing``'s certificate method and checks ``mlwarden verify`` with
``--trust-chain`` and identity / issuer requirements.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import model_signing
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mlwarden.core.errors import UserError
from mlwarden.integrity.signature_check import verify_signature_report

NOW = dt.datetime.now(dt.UTC)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool,
    email: str | None = None,
    digital_signature: bool = True,
    eku: bool = False,
    days: tuple[int, int] = (-1, 30),
) -> x509.Certificate:
    issuer_name, issuer_key = issuer or (subject, key)
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW + dt.timedelta(days=days[0]))
        .not_valid_after(NOW + dt.timedelta(days=days[1]))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=digital_signature or not ca,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            )
            if ca or digital_signature
            else x509.KeyUsage(False, True, False, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if email:
        b = b.add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False)
    if eku:
        b = b.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False
        )
    return b.sign(issuer_key, hashes.SHA256())


@dataclass
class Pki:
    folder: Path
    root: Path
    inter: Path

    def leaf(self, name: str = "leaf", **kw: object) -> tuple[Path, Path]:
        """A signing key and certificate issued by the intermediate."""
        key = ec.generate_private_key(ec.SECP256R1())
        inter_key = serialization.load_pem_private_key(
            (self.folder / "inter.key").read_bytes(), None
        )
        assert isinstance(inter_key, ec.EllipticCurvePrivateKey)
        cert = _cert(name, key, ("Model Release Intermediate", inter_key), ca=False, **kw)  # type: ignore[arg-type]
        kpath, cpath = self.folder / f"{name}.key", self.folder / f"{name}.pem"
        kpath.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        cpath.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return kpath, cpath


def _pki(folder: Path, root_cn: str = "Model Release Root") -> Pki:
    folder.mkdir(parents=True, exist_ok=True)
    root_key = ec.generate_private_key(ec.SECP384R1())
    root = _cert(root_cn, root_key, None, ca=True)
    inter_key = ec.generate_private_key(ec.SECP256R1())
    inter = _cert("Model Release Intermediate", inter_key, (root_cn, root_key), ca=True)
    (folder / "inter.key").write_bytes(
        inter_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (folder / "root.pem").write_bytes(root.public_bytes(serialization.Encoding.PEM))
    (folder / "inter.pem").write_bytes(inter.public_bytes(serialization.Encoding.PEM))
    return Pki(folder, folder / "root.pem", folder / "inter.pem")


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return _pki(tmp_path / "pki")


@pytest.fixture
def model(make_folder: Callable[..., Path]) -> Path:
    return make_folder({"model.safetensors": b"\x00" * 2048, "config.json": b"{}"})


def ms_sign_cert(model: Path, key: Path, cert: Path, chain: list[Path], sig: Path) -> None:
    cfg = model_signing.signing.Config().use_certificate_signer(
        private_key=key, signing_certificate=cert, certificate_chain=chain
    )
    cfg.sign(model, sig)


def _rules(report) -> set[str]:  # type: ignore[no-untyped-def]
    return {f.rule for f in report.findings}


def test_certificate_signature_verifies_against_the_root_with_identity(
    pki: Pki, model: Path, tmp_path: Path
) -> None:
    key, cert = pki.leaf(email="ml-release@example.com")
    sig = tmp_path / "model.sig"
    ms_sign_cert(model, key, cert, [pki.inter], sig)
    # the reference verifies it too (sanity check of the fixture)
    model_signing.verifying.Config().use_certificate_verifier(certificate_chain=[pki.root]).verify(
        model, sig
    )
    report = verify_signature_report(
        model,
        sig,
        trust_chain=[pki.root],
        identity="ml-release@example.com",
        issuer="Model Release Intermediate",
    )
    assert report.findings == []
    assert report.artifacts["signature"]["signer"]["names"] == ["leaf", "ml-release@example.com"]
    (model / "config.json").write_bytes(b'{"x": 1}')
    report = verify_signature_report(model, sig, trust_chain=[pki.root])
    assert [(f.rule, f.evidence["files"]) for f in report.findings] == [
        ("MLW-SIG-001", ["config.json"])
    ]


def test_wrong_identity_or_issuer_is_not_valid(pki: Pki, model: Path, tmp_path: Path) -> None:
    key, cert = pki.leaf(email="intern@example.com")
    sig = tmp_path / "model.sig"
    ms_sign_cert(model, key, cert, [pki.inter], sig)
    for kw in ({"identity": "ml-release@example.com"}, {"issuer": "Some Other CA"}):
        report = verify_signature_report(model, sig, trust_chain=[pki.root], **kw)  # type: ignore[arg-type]
        assert _rules(report) == {"MLW-SIG-005"}, kw


def test_chain_from_another_ca_is_not_valid(pki: Pki, model: Path, tmp_path: Path) -> None:
    """A look-alike CA with the same names but other keys does not pass."""
    key, cert = pki.leaf()
    sig = tmp_path / "model.sig"
    ms_sign_cert(model, key, cert, [pki.inter], sig)
    other = _pki(tmp_path / "other")
    report = verify_signature_report(model, sig, trust_chain=[other.root])
    assert _rules(report) == {"MLW-SIG-005"}
    assert "trusted CA" in report.findings[0].title


def test_certificate_not_allowed_to_sign_is_not_valid(
    pki: Pki, model: Path, tmp_path: Path
) -> None:
    key, cert = pki.leaf(digital_signature=False)
    sig = tmp_path / "model.sig"
    ms_sign_cert(model, key, cert, [pki.inter], sig)
    report = verify_signature_report(model, sig, trust_chain=[pki.root])
    assert _rules(report) == {"MLW-SIG-005"}
    assert "signing" in report.findings[0].title


def test_code_signing_eku_is_enough_to_sign(pki: Pki, model: Path, tmp_path: Path) -> None:
    key, cert = pki.leaf(digital_signature=False, eku=True)
    sig = tmp_path / "model.sig"
    ms_sign_cert(model, key, cert, [pki.inter], sig)
    assert verify_signature_report(model, sig, trust_chain=[pki.root]).findings == []


def test_expired_signing_certificate_is_not_valid(pki: Pki, model: Path, tmp_path: Path) -> None:
    key, cert = pki.leaf(days=(-30, -1))
    sig = tmp_path / "model.sig"
    ms_sign_cert(model, key, cert, [pki.inter], sig)
    assert _rules(verify_signature_report(model, sig, trust_chain=[pki.root])) == {"MLW-SIG-005"}


def test_leaf_acting_as_ca_is_not_valid(pki: Pki, model: Path, tmp_path: Path) -> None:
    """A signing certificate (CA:false) cannot issue another one."""
    key, cert = pki.leaf(name="leaf1")
    leaf1_key = serialization.load_pem_private_key(key.read_bytes(), None)
    assert isinstance(leaf1_key, ec.EllipticCurvePrivateKey)
    key2 = ec.generate_private_key(ec.SECP256R1())
    cert2 = _cert("forged", key2, ("leaf1", leaf1_key), ca=False)
    (tmp_path / "k2").write_bytes(
        key2.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (tmp_path / "c2").write_bytes(cert2.public_bytes(serialization.Encoding.PEM))
    sig = tmp_path / "model.sig"
    ms_sign_cert(model, tmp_path / "k2", tmp_path / "c2", [cert, pki.inter], sig)
    assert _rules(verify_signature_report(model, sig, trust_chain=[pki.root])) == {"MLW-SIG-005"}


def test_certificate_signature_needs_a_trust_chain(pki: Pki, model: Path, tmp_path: Path) -> None:
    key, cert = pki.leaf()
    sig = tmp_path / "model.sig"
    ms_sign_cert(model, key, cert, [pki.inter], sig)
    with pytest.raises(UserError, match="--trust-chain"):
        verify_signature_report(model, sig)
