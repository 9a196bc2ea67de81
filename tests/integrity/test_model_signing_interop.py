"""Interop with OpenSSF model-signing 1.x (the reference tool), both directions.

Signatures are made by the real ``model_signing`` library (and once by its CLI) and
verified by ``mlwarden verify``, and the reverse; tampering is named file by file.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import model_signing
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mlwarden.core.findings import Report
from mlwarden.integrity.keys import generate_keypair, load_signing_key
from mlwarden.integrity.signature_check import sign_model, verify_signature_report
from mlwarden.integrity.sigstore_bundle import make_bundle

EC_TYPES = ["ecdsa-p256", "ecdsa-p384", "ecdsa-p521"]


def rules(report: Report) -> dict[str, list[str]]:
    return {f.rule: f.evidence.get("files", []) for f in report.findings}


@pytest.fixture
def model(make_folder: Callable[..., Path]) -> Path:
    return make_folder(
        {
            "config.json": b'{"layers": 2}',
            "weights/part-0.bin": bytes(range(256)) * 40,  # 10,240 bytes: 3 shards of 4096
            "weights/part-1.bin": b"\x01" * 5000,
            "tokenizer/vocab.txt": b"a\nb\nc\n",
        }
    )


def ms_sign_key(model: Path, key: Path, sig: Path, shard: int | None = None, ignore=()) -> None:
    """Sign with model_signing's key method (its Python API)."""
    hashing = model_signing.hashing.Config().set_ignored_paths(paths=[*ignore, sig.name])
    if shard:
        hashing.use_shard_serialization(shard_size=shard)
    cfg = model_signing.signing.Config().use_elliptic_key_signer(private_key=key)
    cfg.set_hashing_config(hashing).sign(model, sig)


def ms_verify_key(model: Path, pub: Path, sig: Path) -> None:
    cfg = model_signing.verifying.Config().use_elliptic_key_verifier(public_key=pub)
    cfg.verify(model, sig)


@pytest.mark.parametrize("key_type", EC_TYPES)
def test_model_signing_signature_verifies_and_one_byte_tamper_is_named(
    model: Path, tmp_path: Path, key_type: str
) -> None:
    priv, pub = generate_keypair(tmp_path / "k" / "key", key_type)
    sig = model / "model.sig"
    ms_sign_key(model, priv, sig)
    assert verify_signature_report(model, sig, trust=[pub]).findings == []
    data = bytearray((model / "weights/part-0.bin").read_bytes())
    data[5000] ^= 1
    (model / "weights/part-0.bin").write_bytes(bytes(data))
    assert rules(verify_signature_report(model, sig, trust=[pub])) == {
        "MLW-SIG-001": ["weights/part-0.bin"]
    }


def test_missing_extra_and_symlinked_files_are_each_named(model: Path, tmp_path: Path) -> None:
    priv, pub = generate_keypair(tmp_path / "k" / "key", "ecdsa-p256")
    sig = tmp_path / "model.sig"
    ms_sign_key(model, priv, sig)
    (model / "tokenizer/vocab.txt").unlink()
    (model / "weights/evil.py").write_bytes(b"import os\n")
    (model / "config.json").unlink()
    (model / "config.json").symlink_to(tmp_path / "model.sig")
    assert rules(verify_signature_report(model, sig, trust=[pub])) == {
        "MLW-SIG-002": ["tokenizer/vocab.txt"],
        "MLW-SIG-003": ["weights/evil.py"],
        "MLW-SIG-004": ["config.json"],
    }


def test_sharded_signature_names_the_file_of_a_changed_shard(model: Path, tmp_path: Path) -> None:
    priv, pub = generate_keypair(tmp_path / "k" / "key", "ecdsa-p384")
    sig = tmp_path / "model.sig"
    ms_sign_key(model, priv, sig, shard=4096)
    assert verify_signature_report(model, sig, trust=[pub]).findings == []
    with open(model / "weights/part-0.bin", "r+b") as f:  # a byte in the last shard
        f.seek(9000)
        f.write(b"\xff")
    report = verify_signature_report(model, sig, trust=[pub])
    (finding,) = report.findings
    assert finding.rule == "MLW-SIG-001"
    assert finding.evidence["files"] == ["weights/part-0.bin"]
    assert finding.evidence["details"]["weights/part-0.bin"] == ["weights/part-0.bin:8192:10240"]


def test_signature_ignore_paths_are_honoured(model: Path, tmp_path: Path) -> None:
    priv, pub = generate_keypair(tmp_path / "k" / "key", "ecdsa-p256")
    sig = tmp_path / "model.sig"
    ms_sign_key(model, priv, sig, ignore=["tokenizer"])
    (model / "tokenizer/vocab.txt").write_bytes(b"changed")
    (model / "tokenizer/new.txt").write_bytes(b"new")
    (model / ".git").mkdir()
    (model / ".git/HEAD").write_bytes(b"ref")
    assert verify_signature_report(model, sig, trust=[pub]).findings == []
    (model / "notes.txt").write_bytes(b"x")
    assert rules(verify_signature_report(model, sig, trust=[pub])) == {"MLW-SIG-003": ["notes.txt"]}


@pytest.mark.parametrize("key_type", EC_TYPES)
@pytest.mark.parametrize("shard", [None, 4096])
def test_mlwarden_signature_verifies_with_model_signing(
    model: Path, tmp_path: Path, key_type: str, shard: int | None
) -> None:
    priv, pub = generate_keypair(tmp_path / "k" / "key", key_type)
    sig = model / "model.sig"
    sign_model(model, priv, sig, method="shards" if shard else "files", shard_size=shard or 10**9)
    ms_verify_key(model, pub, sig)
    (model / "weights/part-1.bin").write_bytes(b"\x01" * 4999 + b"\x02")
    with pytest.raises(ValueError, match="part-1.bin"):
        ms_verify_key(model, pub, sig)


def test_single_file_model_both_directions(tmp_path: Path) -> None:
    priv, pub = generate_keypair(tmp_path / "k" / "key", "ecdsa-p256")
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"\x00" * 3000)
    ms_sign_key(weights, priv, tmp_path / "a.sig")
    assert verify_signature_report(weights, tmp_path / "a.sig", trust=[pub]).findings == []
    sign_model(weights, priv, tmp_path / "b.sig")
    ms_verify_key(weights, pub, tmp_path / "b.sig")
    weights.write_bytes(b"\x00" * 2999 + b"\x01")
    assert rules(verify_signature_report(weights, tmp_path / "a.sig", trust=[pub])) == {
        "MLW-SIG-001": ["."]
    }


def test_model_signing_key_method_rejects_ed25519_and_mlwarden_accepts_it(
    model: Path, tmp_path: Path
) -> None:
    priv, pub = generate_keypair(tmp_path / "k" / "key")  # ed25519, the default
    with pytest.raises(AttributeError, match="curve"):
        ms_sign_key(model, priv, tmp_path / "ms.sig")
    sign_model(model, priv, tmp_path / "ours.sig")
    with pytest.raises((AttributeError, ValueError)):
        ms_verify_key(model, pub, tmp_path / "ours.sig")
    assert verify_signature_report(model, tmp_path / "ours.sig", trust=[pub]).findings == []


def test_other_key_and_altered_payload_are_not_valid(model: Path, tmp_path: Path) -> None:
    priv, pub = generate_keypair(tmp_path / "k" / "key", "ecdsa-p256")
    _, stranger = generate_keypair(tmp_path / "k" / "other", "ecdsa-p256")
    sig = tmp_path / "model.sig"
    ms_sign_key(model, priv, sig)
    assert set(rules(verify_signature_report(model, sig, trust=[stranger]))) == {"MLW-SIG-005"}
    bundle = json.loads(sig.read_text())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    statement["predicate"]["resources"] = statement["predicate"]["resources"][1:]
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    sig.write_text(json.dumps(bundle))
    report = verify_signature_report(model, sig, trust=[pub])
    assert set(rules(report)) == {"MLW-SIG-005"}
    assert "diff" not in report.artifacts.get("signature", {})


@pytest.mark.parametrize("name", ["../outside.bin", "/etc/hostname", "a/../../x", "a\\..\\x"])
def test_signed_path_escaping_the_folder_is_refused_unread(
    model: Path, tmp_path: Path, name: str
) -> None:
    """A trusted but hostile signer cannot make verify read outside the folder."""
    priv, pub = generate_keypair(tmp_path / "k" / "key", "ecdsa-p256")
    key = load_signing_key(priv)
    digest = "00" * 32
    import hashlib

    root = hashlib.sha256(bytes.fromhex(digest)).hexdigest()
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "m", "digest": {"sha256": root}}],
        "predicateType": "https://model_signing/signature/v1.0",
        "predicate": {
            "serialization": {"method": "files", "hash_type": "sha256", "allow_symlinks": False},
            "resources": [{"name": name, "algorithm": "sha256", "digest": digest}],
        },
    }
    sig = tmp_path / "evil.sig"
    sig.write_text(json.dumps(make_bundle(statement, key)))
    report = verify_signature_report(model, sig, trust=[pub])
    assert set(rules(report)) == {"MLW-SIG-006"}
    assert "diff" not in report.artifacts.get("signature", {})


def test_registry_envelope_is_accepted(model: Path, tmp_path: Path, reg, keys, scanner) -> None:
    priv, pub = keys
    rec = reg.add(model, name="m", sign_key=priv, scanner=scanner)
    env = tmp_path / "m.dsse.json"
    env.write_text(rec.envelope or "")
    assert verify_signature_report(model, env, trust=[pub]).findings == []
    (model / "config.json").write_bytes(b"{}")
    assert rules(verify_signature_report(model, env, trust=[pub])) == {
        "MLW-SIG-001": ["config.json"]
    }


def test_cli_sign_then_reference_cli_verify_then_ours(
    model: Path, tmp_path: Path, run_cli: Callable[..., tuple[int, str, str]]
) -> None:
    key, pub = str(tmp_path / "k"), str(tmp_path / "k.pub")
    assert run_cli("keys", "generate", key, "--type", "ecdsa-p256")[0] == 0
    sig = str(model / "model.sig")
    assert run_cli("sign", str(model), "--key", key, "--signature", sig)[0] == 0
    ref = subprocess.run(
        [sys.executable, "-m", "model_signing", "verify", "key", str(model),
         "--signature", sig, "--public_key", pub],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert ref.returncode == 0, ref.stderr
    assert run_cli("verify", str(model), "--signature", sig, "--trust", pub)[0] == 0
    (model / "config.json").write_bytes(b'{"layers": 3}')
    rc, _, err = run_cli("verify", str(model), "--signature", sig, "--trust", pub)
    assert rc == 1
    assert "modified  config.json" in err
    rc, _, err = run_cli("verify", str(model), "--signature", sig)
    assert rc == 2
    assert "--trust" in err


def test_openssl_written_ed25519_key_is_accepted(model: Path, tmp_path: Path) -> None:
    """Keys from other tools (PKCS#8 PEM) load as well as our own."""
    key = Ed25519PrivateKey.generate()
    (tmp_path / "ed.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (tmp_path / "ed.pub").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    sign_model(model, tmp_path / "ed.pem", tmp_path / "s.sig")
    report = verify_signature_report(model, tmp_path / "s.sig", trust=[tmp_path / "ed.pub"])
    assert report.findings == []


KEYLESS = Path(__file__).parent / "data" / "model_signing_v1.1.0_sigstore"
KEYLESS_ID = {"identity": "stefanb@us.ibm.com", "issuer": "https://sigstore.verify.ibm.com/oauth2"}


@pytest.fixture
def keyless_model(tmp_path: Path) -> Path:
    import shutil

    return Path(
        shutil.copytree(
            KEYLESS, tmp_path / "v1.1.0-sigstore", ignore=shutil.ignore_patterns("*.md")
        )
    )


def test_keyless_signature_verifies_offline_with_identity(keyless_model: Path) -> None:
    """A real model-signing keyless bundle (Fulcio + Rekor), checked with no network."""
    report = verify_signature_report(keyless_model, keyless_model / "model.sig", **KEYLESS_ID)
    assert report.findings == []
    assert report.artifacts["signature"]["signer"]["method"] == "keyless"
    (keyless_model / "signme-2").write_bytes(b"signme-3")
    report = verify_signature_report(keyless_model, keyless_model / "model.sig", **KEYLESS_ID)
    assert rules(report) == {"MLW-SIG-001": ["signme-2"]}


@pytest.mark.parametrize(
    "policy",
    [
        {"identity": "attacker@example.com", "issuer": KEYLESS_ID["issuer"]},
        {"identity": KEYLESS_ID["identity"], "issuer": "https://accounts.google.com"},
    ],
)
def test_keyless_signature_from_another_identity_is_not_valid(
    keyless_model: Path, policy: dict[str, str]
) -> None:
    report = verify_signature_report(keyless_model, keyless_model / "model.sig", **policy)
    assert set(rules(report)) == {"MLW-SIG-005"}


def test_keyless_signature_with_altered_payload_is_not_valid(keyless_model: Path) -> None:
    sig = keyless_model / "model.sig"
    bundle = json.loads(sig.read_text())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    statement["predicate"]["serialization"]["ignore_paths"].append("signme-2")
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    sig.write_text(json.dumps(bundle))
    assert set(rules(verify_signature_report(keyless_model, sig, **KEYLESS_ID))) == {"MLW-SIG-005"}


def test_keyless_signature_without_identity_policy_exits_2(
    keyless_model: Path, run_cli: Callable[..., tuple[int, str, str]]
) -> None:
    rc, _, err = run_cli(
        "verify", str(keyless_model), "--signature", str(keyless_model / "model.sig")
    )
    assert rc == 2
    assert "--identity" in err and "--issuer" in err


def test_link_out_of_the_folder_is_high_and_never_trusted_even_when_links_are_allowed(
    model: Path, tmp_path: Path
) -> None:
    """A signer that allows links signed one pointing outside; verify still refuses it."""
    priv, pub = generate_keypair(tmp_path / "k" / "key", "ecdsa-p256")
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"host file")
    (model / "weights/linked.bin").symlink_to(outside)
    sig = tmp_path / "model.sig"
    hashing = model_signing.hashing.Config().set_allow_symlinks(True)
    cfg = model_signing.signing.Config().use_elliptic_key_signer(private_key=priv)
    cfg.set_hashing_config(hashing).sign(model, sig)
    report = verify_signature_report(model, sig, trust=[pub])
    (finding,) = report.findings
    assert (finding.rule, finding.severity.value) == ("MLW-SIG-004", "high")
    assert finding.evidence["files"] == ["weights/linked.bin"]


def test_inside_link_allowed_by_the_signature_is_hashed_and_a_medium_note(
    model: Path, tmp_path: Path
) -> None:
    priv, pub = generate_keypair(tmp_path / "k" / "key", "ecdsa-p256")
    (model / "alias.json").symlink_to("config.json")
    sig = tmp_path / "model.sig"
    hashing = model_signing.hashing.Config().set_allow_symlinks(True)
    cfg = model_signing.signing.Config().use_elliptic_key_signer(private_key=priv)
    cfg.set_hashing_config(hashing).sign(model, sig)
    report = verify_signature_report(model, sig, trust=[pub])
    assert [(f.rule, f.severity.value) for f in report.findings] == [("MLW-SIG-004", "medium")]
    (model / "config.json").write_bytes(b'{"layers": 9}')
    got = rules(verify_signature_report(model, sig, trust=[pub]))
    assert got["MLW-SIG-001"] == ["alias.json", "config.json"]


def test_fifo_planted_in_the_folder_is_named_and_never_opened(model: Path, tmp_path: Path) -> None:
    """Opening a FIFO would block forever; verify lists it without reading it."""
    import os

    priv, pub = generate_keypair(tmp_path / "k" / "key", "ecdsa-p256")
    sig = tmp_path / "model.sig"
    ms_sign_key(model, priv, sig)
    os.mkfifo(model / "weights/pipe.bin")
    assert rules(verify_signature_report(model, sig, trust=[pub])) == {
        "MLW-SIG-003": ["weights/pipe.bin"]
    }


def test_truncated_or_foreign_signature_file_is_one_critical_finding(
    model: Path, tmp_path: Path
) -> None:
    _, pub = generate_keypair(tmp_path / "k" / "key", "ecdsa-p256")
    for content in (b"", b"{", b'{"mediaType": "application/x-other"}', b"\x89PNG\r\n"):
        sig = tmp_path / "bad.sig"
        sig.write_bytes(content)
        assert set(rules(verify_signature_report(model, sig, trust=[pub]))) == {"MLW-SIG-005"}


def test_registry_export_tar_is_accepted_as_a_signature(
    model: Path, tmp_path: Path, reg, keys, scanner
) -> None:
    from mlwarden.integrity.bundle import export_bundle

    priv, pub = keys
    rec = reg.add(model, name="m", sign_key=priv, scanner=scanner)
    tar = export_bundle(reg, rec, tmp_path / "m-1.tar.gz")
    assert verify_signature_report(model, tar, trust=[pub]).findings == []
    (model / "weights/part-1.bin").unlink()
    assert rules(verify_signature_report(model, tar, trust=[pub])) == {
        "MLW-SIG-002": ["weights/part-1.bin"]
    }
