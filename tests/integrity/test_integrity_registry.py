"""Registry: versions, aliases, lineage, signatures, tamper detection, rollback, refusal."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mlwarden.core.errors import UnsafeArtifactError, UserError
from mlwarden.core.findings import Severity
from mlwarden.integrity.registry import Registry
from mlwarden.integrity.verify import IntegrityError, load_verified, verify_report


@pytest.fixture(params=["ed25519", "ecdsa-p256", "ecdsa-p521"])
def key_type(request: pytest.FixtureRequest) -> str:
    """Every attack below runs against a registry signed with Ed25519 and with ECDSA."""
    return str(request.param)


def rules(report) -> list[str]:
    return sorted(f.rule for f in report.findings)


def add(reg: Registry, path: Path, scanner, name: str = "m", **kw):
    kw.setdefault("source", "tests")
    return reg.add(path, name=name, scanner=scanner, **kw)


def test_versions_count_from_one_and_identical_content_is_stored_once(reg, make_folder, scanner):
    a = make_folder({"w.bin": b"same", "copy.bin": b"same", "x.bin": b"x"})
    r1 = add(reg, a, scanner)
    r2 = add(reg, a, scanner)
    assert (r1.version, r2.version) == (1, 2)
    objects = [p for p in reg.store.objects.rglob("*") if p.is_file()]
    assert len(objects) == 2


def test_signed_version_verifies_clean_with_trusted_key(reg, make_folder, scanner, keys):
    add(reg, make_folder({"w.bin": b"weights"}), scanner, sign_key=keys[0])
    report = verify_report("m@1", registry=reg.root, trust=[keys[1]])
    assert report.findings == []
    assert report.metrics["signature_verified"] is True


def test_alias_and_latest_resolve(reg, make_folder, scanner):
    add(reg, make_folder({"a": b"1"}), scanner)
    add(reg, make_folder({"a": b"2"}), scanner)
    reg.set_alias("m", 1, "production")
    assert reg.resolve("m@production").version == 1
    assert reg.resolve("m").version == 2
    with pytest.raises(UserError, match="no alias"):
        reg.resolve("m@staging")


def test_lineage_records_parent_digest_and_flags_changed_parent(reg, make_folder, scanner):
    data = add(reg, make_folder({"d.npz": b"data"}), scanner, name="data", kind="dataset")
    model = add(reg, make_folder({"w": b"w"}), scanner, parents=["data@1"], params={"lr": 0.1})
    assert model.parents[0]["manifest_digest"] == data.manifest_digest
    assert model.record["lineage"]["params"] == {"lr": 0.1}
    reg.conn.execute(
        "UPDATE versions SET manifest_digest='f' || substr(manifest_digest, 2) WHERE name='data'"
    )
    assert "MLW-INT-010" in rules(verify_report("m@1", registry=reg.root))


def test_modified_object_in_store_is_critical(reg, make_folder, scanner, keys):
    rec = add(reg, make_folder({"w.bin": b"weights", "c.json": b"{}"}), scanner, sign_key=keys[0])
    obj = reg.store.path(rec.manifest.files["w.bin"].digest)
    os.chmod(obj, 0o644)
    obj.write_bytes(b"weightz")
    report = verify_report("m@1", registry=reg.root, trust=[keys[1]])
    assert rules(report) == ["MLW-INT-001"]
    assert report.findings[0].evidence["files"] == ["w.bin"]
    assert report.findings[0].severity == Severity.CRITICAL


def test_missing_object_is_reported(reg, make_folder, scanner, keys):
    rec = add(reg, make_folder({"w.bin": b"weights"}), scanner, sign_key=keys[0])
    reg.store.path(rec.manifest.files["w.bin"].digest).unlink()
    assert rules(verify_report("m@1", registry=reg.root, trust=[keys[1]])) == ["MLW-INT-002"]


def test_rewritten_database_record_disagrees_with_signature(reg, make_folder, scanner, keys):
    add(reg, make_folder({"w.bin": b"weights"}), scanner, sign_key=keys[0])
    row = reg.conn.execute("SELECT record FROM versions").fetchone()
    record = json.loads(row[0])
    record["provenance"]["source"] = "https://attacker.example"
    reg.conn.execute("UPDATE versions SET record=?", (json.dumps(record),))
    assert "MLW-INT-008" in rules(verify_report("m@1", registry=reg.root, trust=[keys[1]]))


def test_swapped_manifest_and_objects_are_caught_by_signature(reg, make_folder, scanner, keys):
    add(reg, make_folder({"w.bin": b"good"}), scanner, sign_key=keys[0])
    evil = add(reg, make_folder({"w.bin": b"evil"}), scanner, name="x")
    reg.conn.execute(
        "UPDATE versions SET manifest=?, manifest_digest=? WHERE name='m'",
        (json.dumps(evil.manifest.to_json()), evil.manifest_digest),
    )
    report = verify_report("m@1", registry=reg.root, trust=[keys[1]])
    assert "MLW-INT-008" in rules(report)


def test_untrusted_signer_is_a_high_finding(reg, make_folder, scanner, keys, other_keys):
    add(reg, make_folder({"w.bin": b"w"}), scanner, sign_key=other_keys[0])
    report = verify_report("m@1", registry=reg.root, trust=[keys[1]])
    assert rules(report) == ["MLW-INT-005"]
    assert report.findings[0].severity == Severity.HIGH


def test_unsigned_version_is_high_when_signature_required(reg, make_folder, scanner, keys):
    add(reg, make_folder({"w.bin": b"w"}), scanner)
    assert rules(verify_report("m@1", registry=reg.root))[0] == "MLW-INT-004"
    report = verify_report("m@1", registry=reg.root, trust=[keys[1]])
    assert report.findings[0].severity == Severity.HIGH


def test_deployed_folder_differences_are_named(reg, make_folder, scanner, keys):
    src = make_folder({"w.bin": b"w", "cfg.json": b"{}"})
    add(reg, src, scanner, sign_key=keys[0])
    (src / "w.bin").write_bytes(b"W")
    (src / "evil.py").write_bytes(b"x")
    report = verify_report("m@1", registry=reg.root, trust=[keys[1]], path=src)
    assert rules(report) == ["MLW-INT-001", "MLW-INT-003"]


def test_rollback_moves_alias_and_restores_exact_bytes(reg, make_folder, scanner, tmp_path):
    v1 = {"w.bin": b"\xff\xd8\xff\xe0" + os.urandom(5000), "sub/c.json": b'{"a": 1}'}
    add(reg, make_folder(v1), scanner)
    add(reg, make_folder({"w.bin": b"bad", "sub/c.json": b"{}"}), scanner)
    reg.set_alias("m", 2, "production")
    before, rec = reg.rollback("m", "production", 1, restore=tmp_path / "restored")
    assert before == 2 and reg.resolve("m@production").version == 1
    for name, data in v1.items():
        assert (tmp_path / "restored" / name).read_bytes() == data
    assert [e["action"] for e in reg.events("m")][-1] == "rollback"


def test_restore_refuses_non_empty_folder(reg, make_folder, scanner, tmp_path):
    add(reg, make_folder({"w": b"w"}), scanner)
    reg.set_alias("m", 1, "production")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_bytes(b"x")
    with pytest.raises(UserError, match="not an empty folder"):
        reg.rollback("m", "production", 1, restore=tmp_path / "busy")


def _flag(bad: str):
    def scan(paths):
        return {str(p): ("unsafe" if p.name == bad else "safe", "os.system") for p in paths}

    return scan


def test_add_refuses_unsafe_file_unless_forced_with_reason(reg, make_folder):
    folder = make_folder({"model.pkl": b"pickle", "ok.bin": b"ok"})
    with pytest.raises(UnsafeArtifactError, match="model.pkl"):
        reg.add(folder, name="m", scanner=_flag("model.pkl"))
    assert reg.names() == []
    with pytest.raises(UserError, match="--reason"):
        reg.add(folder, name="m", scanner=_flag("model.pkl"), force=True)
    rec = reg.add(folder, name="m", scanner=_flag("model.pkl"), force=True, reason="sandbox only")
    assert rec.record["forced"] == {"reason": "sandbox only"}
    assert "MLW-INT-009" in rules(verify_report("m@1", registry=reg.root))


def test_scanner_failure_fails_closed(reg, make_folder):
    def broken(paths):
        raise RuntimeError("parser crashed")

    with pytest.raises(UnsafeArtifactError, match="scanner failed"):
        reg.add(make_folder({"a": b"a"}), name="m", scanner=broken)


def test_failure_before_commit_leaves_no_version(reg, make_folder, scanner, monkeypatch):
    add(reg, make_folder({"a": b"a"}), scanner)

    def boom(*a, **k):
        raise OSError("disk full")

    key = _key(reg)
    monkeypatch.setattr("mlwarden.integrity.registry.sign_statement", boom)
    with pytest.raises(OSError):  # fails inside the transaction, after objects are stored
        add(reg, make_folder({"a": b"b"}), scanner, sign_key=key)
    assert [r.version for r in reg.versions("m")] == [1]
    assert reg.fsck() == []


def _key(reg: Registry) -> Path:
    from mlwarden.integrity.keys import generate_keypair

    return generate_keypair(reg.root.parent / "k" / "k.key")[0]


def test_load_verified_refuses_tampered_and_unsigned(reg, make_folder, scanner, keys):
    rec = add(
        reg, make_folder({"d.npz": b"x"}), scanner, sign_key=keys[0], kind="dataset", name="d"
    )
    with pytest.raises(IntegrityError, match="trust"):
        load_verified("d@1", registry=reg.root)
    obj = reg.store.path(rec.manifest.files["d.npz"].digest)
    os.chmod(obj, 0o644)
    obj.write_bytes(b"y")
    with pytest.raises(IntegrityError, match="modified"):
        load_verified("d@1", registry=reg.root, trust=[keys[1]])


def test_load_verified_loads_a_signed_dataset(reg, tmp_path, scanner, keys):
    import numpy as np

    from mlwarden.core.data import Dataset, save_npz

    ds = Dataset(x=np.zeros((4, 3), np.float32), y=np.arange(4, dtype=np.int64))
    save_npz(ds, tmp_path / "d.npz")
    reg.add(
        tmp_path / "d.npz", name="d", kind="dataset", scanner=scanner, sign_key=keys[0], source="t"
    )
    loaded = load_verified("d@1", registry=reg.root, trust=[keys[1]])
    assert np.array_equal(loaded.y, ds.y)


def test_fsck_finds_corrupt_object(reg, make_folder, scanner):
    rec = add(reg, make_folder({"a": b"a"}), scanner)
    obj = reg.store.path(rec.manifest.files["a"].digest)
    os.chmod(obj, 0o644)
    obj.write_bytes(b"b")
    assert any("corrupt" in p for p in reg.fsck())


def test_garbage_or_foreign_database_is_a_clean_error(tmp_path):
    from mlwarden.core.errors import InputFileError

    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "registry.db").write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(InputFileError, match="SQLite"):
        verify_report("m", registry=tmp_path / "g")
    import sqlite3

    (tmp_path / "f").mkdir()
    sqlite3.connect(tmp_path / "f" / "registry.db").execute(
        "CREATE TABLE t (x)"
    ).connection.commit()
    with pytest.raises(InputFileError, match="not an mlwarden registry"):
        verify_report("m", registry=tmp_path / "f")


def test_signed_alias_verifies_and_a_repointed_alias_is_critical(reg, make_folder, scanner, keys):
    add(reg, make_folder({"w": b"old"}), scanner, sign_key=keys[0])
    add(reg, make_folder({"w": b"new"}), scanner, sign_key=keys[0])
    reg.set_alias("m", 2, "production", sign_key=keys[0])
    assert verify_report("m@production", registry=reg.root, trust=[keys[1]]).findings == []
    reg.conn.execute("UPDATE aliases SET version=1 WHERE alias='production'")
    report = verify_report("m@production", registry=reg.root, trust=[keys[1]])
    assert rules(report) == ["MLW-INT-012"]
    assert report.findings[0].severity == Severity.CRITICAL


def test_unsigned_alias_move_is_high_when_signatures_are_required(reg, make_folder, scanner, keys):
    add(reg, make_folder({"w": b"w"}), scanner, sign_key=keys[0])
    reg.set_alias("m", 1, "production")
    report = verify_report("m@production", registry=reg.root, trust=[keys[1]])
    assert rules(report) == ["MLW-INT-012"]
    assert report.findings[0].severity == Severity.HIGH
    assert verify_report("m@1", registry=reg.root, trust=[keys[1]]).findings == []


def test_registry_inside_the_registered_folder_is_left_out(make_folder, scanner):
    folder = make_folder({"w.bin": b"w"})
    with Registry.open(folder / ".mlwarden") as inner:
        rec = inner.add(folder, name="m", scanner=scanner)
    assert list(rec.manifest.files) == ["w.bin"]
