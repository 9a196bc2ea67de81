"""Registry and model-signing: third-party signatures as provenance, bundles out of the registry."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

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
