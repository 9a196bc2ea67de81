"""Registry and model-signing: third-party signatures as provenance, bundles out of the registry."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import model_signing
import pytest

from mlwarden.core.errors import UserError
from mlwarden.integrity.keys import generate_keypair
from mlwarden.integrity.registry import Registry
from mlwarden.integrity.registry_signatures import (
    third_party_check,
    version_signature_path,
    write_version_signature,
)
from mlwarden.integrity.signature_check import verify_signature_report


@pytest.fixture
def model(make_folder: Callable[..., Path]) -> Path:
    return make_folder({"weights.bin": b"\x07" * 5000, "cfg/config.json": b"{}"})


@pytest.fixture
def ec(tmp_path: Path) -> tuple[Path, Path]:
    return generate_keypair(tmp_path / "k" / "ec", "ecdsa-p256")


def ms_sign(model: Path, key: Path, sig: Path) -> None:
    cfg = model_signing.signing.Config().use_elliptic_key_signer(private_key=key)
    cfg.set_hashing_config(model_signing.hashing.Config().set_ignored_paths(paths=[sig.name]))
    cfg.sign(model, sig)


def test_publisher_signature_is_verified_and_recorded(reg, model, ec, scanner) -> None:  # type: ignore[no-untyped-def]
    sig = model / "model.sig"  # inside the folder, as model_signing's CLI writes it
    ms_sign(model, ec[0], sig)
    rec = reg.add(
        model, name="m", scanner=scanner, signature=third_party_check(model, sig, [ec[1]])
    )
    got = rec.record["provenance"]["signature"]
    assert got["signer"]["key_type"] == "ecdsa-p256"
    payload = base64.b64decode(json.loads(sig.read_text())["dsseEnvelope"]["payload"])
    assert got["root_digest"] == json.loads(payload)["subject"][0]["digest"]["sha256"]


@pytest.mark.parametrize("change", ["modify", "add", "other-key"])
def test_publisher_signature_that_does_not_cover_the_files_refuses_the_add(
    reg,
    model,
    ec,
    scanner,
    tmp_path,
    change,  # type: ignore[no-untyped-def]
) -> None:
    sig = tmp_path / "model.sig"
    ms_sign(model, ec[0], sig)
    trust = [ec[1]]
    if change == "modify":
        (model / "weights.bin").write_bytes(b"\x07" * 4999 + b"\x08")
    elif change == "add":
        (model / "cfg/extra.py").write_bytes(b"import os")
    else:
        trust = [generate_keypair(tmp_path / "k" / "other", "ecdsa-p256")[1]]
    with pytest.raises(UserError, match="not registered"):
        reg.add(model, name="m", scanner=scanner, signature=third_party_check(model, sig, trust))
    assert reg.names() == []


def test_file_swapped_after_the_signature_check_is_caught_on_the_hashed_manifest(
    reg,
    model,
    ec,
    scanner,
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    """The check authenticates first; the files compared are those the add hashes."""
    sig = tmp_path / "model.sig"
    ms_sign(model, ec[0], sig)
    check = third_party_check(model, sig, [ec[1]])  # signature fine at this moment
    (model / "weights.bin").write_bytes(b"swapped")
    with pytest.raises(UserError, match="modified: weights.bin"):
        reg.add(model, name="m", scanner=scanner, signature=check)
    assert reg.names() == []


def test_version_signature_verifies_a_restored_copy_with_model_signing(
    reg,
    model,
    ec,
    scanner,
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    rec = reg.add(model, name="m", scanner=scanner)
    sig = write_version_signature(reg.store.root, rec, ec[0])
    assert sig == version_signature_path(reg.store.root, "m", 1)
    restored = reg.restore(rec.manifest, tmp_path / "restored")
    model_signing.verifying.Config().use_elliptic_key_verifier(public_key=ec[1]).verify(
        restored, sig
    )
    assert verify_signature_report(restored, sig, trust=[ec[1]]).findings == []
    (restored / "cfg/config.json").write_bytes(b'{"evil": 1}')
    report = verify_signature_report(restored, sig, trust=[ec[1]])
    assert [(f.rule, f.evidence["files"]) for f in report.findings] == [
        ("MLW-SIG-001", ["cfg/config.json"])
    ]


def test_cli_add_with_signature_then_export_with_ec_signature(
    model,
    ec,
    tmp_path,
    run_cli,  # type: ignore[no-untyped-def]
) -> None:
    reg_dir = tmp_path / "reg"
    sig = tmp_path / "publisher.sig"
    ms_sign(model, ec[0], sig)
    where = ("--registry", str(reg_dir))
    # the scanner's verdict on these plain bytes is not under test: --force with a reason
    rc, _, err = run_cli("registry", "add", str(model), "--name", "m", "--signature", str(sig),
                         "--trust", str(ec[1]), "--force", "--reason", "test bytes", *where)  # fmt: skip
    assert rc == 0, err
    assert version_signature_path(reg_dir, "m", 1).read_bytes() == sig.read_bytes()
    out = tmp_path / "m-1.tar"
    rc, _, err = run_cli("registry", "export", "m@1", str(out), "--sign", str(ec[0]), *where)
    assert rc == 0, err
    with Registry.open(reg_dir) as reg:
        restored = reg.restore(reg.get("m", 1).manifest, tmp_path / "r")
    ref = subprocess.run(
        [sys.executable, "-m", "model_signing", "verify", "key", str(restored),
         "--signature", str(out) + ".sig", "--public_key", str(ec[1])],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert ref.returncode == 0, ref.stderr


def ms_verify(model: Path, sig: Path, pub: Path) -> str:
    """model_signing's own verdict: "ok" or the reason it refused."""
    try:
        model_signing.verifying.Config().use_elliptic_key_verifier(public_key=pub).verify(
            model, sig
        )
    except Exception as exc:  # the reference reports every refusal as an exception
        return f"refused: {exc}"
    return "ok"


@pytest.mark.parametrize("key_type", ["ecdsa-p256", "ecdsa-p384", "ecdsa-p521"])
def test_cli_add_signed_with_an_ec_key_is_verified_by_model_signing_and_by_the_registry(
    model: Path, tmp_path: Path, run_cli: Callable[..., tuple[int, str, str]], key_type: str
) -> None:
    priv, pub = generate_keypair(tmp_path / "k" / key_type, key_type)
    reg_dir = tmp_path / "reg"
    where = ("--registry", str(reg_dir))
    rc, _, err = run_cli("registry", "add", str(model), "--name", "m", "--sign", str(priv),
                         "--force", "--reason", "test bytes", *where)  # fmt: skip
    assert rc == 0, err
    sig = version_signature_path(reg_dir, "m", 1)
    assert ms_verify(model, sig, pub) == "ok"
    assert run_cli("registry", "verify", "m@1", "--trust", str(pub), *where)[0] == 0
    (model / "weights.bin").write_bytes(b"\x07" * 4999 + b"\x08")  # one byte
    assert "weights.bin" in ms_verify(model, sig, pub)


def test_single_file_version_signed_with_ec_verifies_with_model_signing_on_the_file(
    reg: Registry, tmp_path: Path, scanner: Any
) -> None:
    priv, pub = generate_keypair(tmp_path / "k" / "ec", "ecdsa-p384")
    (tmp_path / "model.bin").write_bytes(b"\x01" * 3000)
    rec = reg.add(tmp_path / "model.bin", name="one", scanner=scanner, sign_key=priv)
    sig = write_version_signature(reg.store.root, rec, priv)
    restored = reg.restore(rec.manifest, tmp_path / "restored")
    assert ms_verify(tmp_path / "model.bin", sig, pub) == "ok"
    assert ms_verify(restored / "model.bin", sig, pub) == "ok"
    assert verify_signature_report(restored / "model.bin", sig, trust=[pub]).findings == []
    (restored / "model.bin").write_bytes(b"\x01" * 2999 + b"\x02")
    assert ms_verify(restored / "model.bin", sig, pub).startswith("refused")
    assert [
        f.rule for f in verify_signature_report(restored / "model.bin", sig, trust=[pub]).findings
    ] == ["MLW-SIG-001"]


def test_ec_signed_version_exports_imports_and_its_stored_signature_travels(
    model: Path, tmp_path: Path, run_cli: Callable[..., tuple[int, str, str]]
) -> None:
    priv, pub = generate_keypair(tmp_path / "k" / "ec", "ecdsa-p256")
    _, stranger = generate_keypair(tmp_path / "k" / "stranger", "ecdsa-p256")
    src, dst = ("--registry", str(tmp_path / "src")), ("--registry", str(tmp_path / "dst"))
    run_cli("registry", "add", str(model), "--name", "m", "--sign", str(priv),
            "--force", "--reason", "test bytes", *src)  # fmt: skip
    out = tmp_path / "m-1.tar"
    assert run_cli("registry", "export", "m@1", str(out), *src)[0] == 0
    assert run_cli("registry", "import", str(out), "--trust", str(stranger), *dst)[0] != 0
    assert run_cli("registry", "import", str(out), "--trust", str(pub), *dst)[0] == 0
    with Registry.open(tmp_path / "dst") as reg:
        restored = reg.restore(reg.get("m", 1).manifest, tmp_path / "r")
    ref = subprocess.run(
        [sys.executable, "-m", "model_signing", "verify", "key", str(restored),
         "--signature", str(out) + ".sig", "--public_key", str(pub)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert ref.returncode == 0, ref.stderr


def test_ec_envelope_from_another_version_or_a_stranger_is_refused_on_load(
    reg: Registry, make_folder: Callable[..., Path], tmp_path: Path, scanner: Any
) -> None:
    """An attacker pastes a valid EC envelope of another version, or re-signs with their key."""
    from mlwarden.integrity.dsse import sign_statement, unverified_statement
    from mlwarden.integrity.keys import load_signing_key
    from mlwarden.integrity.verify import IntegrityError, load_verified, verify_report

    priv, pub = generate_keypair(tmp_path / "k" / "ec", "ecdsa-p521")
    evil_priv, _ = generate_keypair(tmp_path / "k" / "evil", "ecdsa-p521")
    reg.add(make_folder({"w": b"good"}), name="m", scanner=scanner, sign_key=priv)
    other = reg.add(make_folder({"w": b"evil"}), name="other", scanner=scanner, sign_key=priv)
    good = reg.get("m", 1)
    reg.conn.execute(
        "UPDATE versions SET manifest=?, manifest_digest=?, envelope=? WHERE name='m'",
        (json.dumps(other.manifest.to_json()), other.manifest_digest, other.envelope),
    )
    report = verify_report("m@1", registry=reg.root, trust=[pub])
    assert any(f.severity.value == "critical" for f in report.findings)
    with pytest.raises(IntegrityError):
        load_verified("m@1", registry=reg.root, trust=[pub])
    forged = sign_statement(unverified_statement(good.envelope), load_signing_key(evil_priv))
    reg.conn.execute(
        "UPDATE versions SET manifest=?, manifest_digest=?, envelope=? WHERE name='m'",
        (json.dumps(good.manifest.to_json()), good.manifest_digest, json.dumps(forged)),
    )
    assert any(
        f.rule == "MLW-INT-005"
        for f in verify_report("m@1", registry=reg.root, trust=[pub]).findings
    )
    with pytest.raises(IntegrityError):
        load_verified("m@1", registry=reg.root, trust=[pub])
