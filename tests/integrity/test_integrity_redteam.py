"""Red team: the six weaknesses of issue 21, and the lower ones, each attacked and refused.

Attacker model: can write the registry folder (and folders the victim writes into),
does not hold the signing key. Racy attacks swap at the exact moment through a
monkeypatched seam (right after the victim's read of the database, right before it
opens an object), never with sleeps. Each test asserts the failure is safe: a
finding or an error, never success with the attacker's bytes or an older version.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import tarfile
from pathlib import Path

import numpy as np
import pytest

from mlwarden.cli.main import main
from mlwarden.core.data import Dataset, save_npz
from mlwarden.core.errors import UserError
from mlwarden.core.findings import Severity
from mlwarden.integrity.bundle import export_bundle, import_bundle
from mlwarden.integrity.registry import Registry
from mlwarden.integrity.store import ObjectStore
from mlwarden.integrity.verify import IntegrityError, load_verified, verify_report

GOOD_Y = np.arange(6, dtype=np.int64)
EVIL_Y = np.full(6, 7, dtype=np.int64)


@pytest.fixture(params=["ed25519", "ecdsa-p256", "ecdsa-p521"])
def key_type(request: pytest.FixtureRequest) -> str:
    """Every attack below runs against a registry signed with Ed25519 and with ECDSA."""
    return str(request.param)


def rules(report) -> list[str]:
    return sorted(f.rule for f in report.findings)


def run(*args: str) -> int:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    return int(exc.value.code or 0)


def npz(path: Path, y: np.ndarray) -> Path:
    save_npz(Dataset(x=np.zeros((len(y), 2), np.float32), y=y), path)
    return path


@pytest.fixture
def signed(reg, tmp_path, scanner, keys):
    """d@1 (good, signed) and evil@1 (the attacker's bytes, already in the store)."""
    reg.add(
        npz(tmp_path / "good.npz", GOOD_Y),
        name="d",
        kind="dataset",
        scanner=scanner,
        sign_key=keys[0],
        source="t",
    )
    evil = reg.add(
        npz(tmp_path / "evil.npz", EVIL_Y),
        name="evil",
        kind="dataset",
        scanner=scanner,
        source="attacker",
    )
    return evil


def _swap_manifest(root: Path, name: str, evil) -> None:
    with sqlite3.connect(root / "registry.db") as db:
        db.execute(
            "UPDATE versions SET manifest=?, manifest_digest=? WHERE name=?",
            (json.dumps(evil.manifest.to_json()), evil.manifest_digest, name),
        )


def _writable(obj: Path) -> Path:
    os.chmod(obj, 0o644)
    return obj


# -- 1. a second, unverified database read ---------------------------------------------


def test_manifest_row_flipped_right_after_the_victim_reads_it_is_never_loaded(
    reg, signed, keys, monkeypatch
):
    real = Registry.resolve

    def resolve_then_attack(self, ref):
        rec = real(self, ref)
        _swap_manifest(self.root, "d", signed)  # the attacker wins every later read
        return rec

    monkeypatch.setattr(Registry, "resolve", resolve_then_attack)
    try:
        loaded = load_verified("d@1", registry=reg.root, trust=[keys[1]])
    except IntegrityError:
        return  # refusing is safe too
    assert np.array_equal(loaded.y, GOOD_Y)


def test_alias_flipped_between_verification_and_load_then_set_back(
    reg, signed, tmp_path, scanner, keys, monkeypatch
):
    reg.add(
        npz(tmp_path / "v2.npz", EVIL_Y), name="d", kind="dataset", scanner=scanner, source="t"
    )  # d@2: unsigned, carries the attacker's bytes
    reg.set_alias("d", 1, "production", sign_key=keys[0])
    real = Registry.resolve
    calls = []

    def resolve_then_flip(self, ref):
        rec = real(self, ref)
        calls.append(ref)
        with sqlite3.connect(self.root / "registry.db") as db:
            db.execute("UPDATE aliases SET version=2 WHERE alias='production'")
        return rec

    monkeypatch.setattr(Registry, "resolve", resolve_then_flip)
    try:
        loaded = load_verified("d@production", registry=reg.root, trust=[keys[1]])
    except IntegrityError:
        loaded = None
    monkeypatch.setattr(Registry, "resolve", real)
    with sqlite3.connect(reg.root / "registry.db") as db:
        db.execute("UPDATE aliases SET version=1 WHERE alias='production'")
    assert loaded is None or np.array_equal(loaded.y, GOOD_Y)
    assert calls == ["d@production"]  # one read decides
    assert verify_report("d@production", registry=reg.root, trust=[keys[1]]).findings == []


# -- 2. the loaded file is the store object (same inode) ----------------------------------


def test_store_object_rewritten_after_the_check_does_not_reach_the_loader(
    reg, signed, keys, monkeypatch
):
    import mlwarden.core.data as data

    obj = reg.resolve("d@1").manifest.files
    store_obj = reg.store.path(next(iter(obj.values())).digest)
    evil_bytes = (reg.store.path(next(iter(signed.manifest.files.values())).digest)).read_bytes()
    real = data.load_dataset
    seen = []

    def attack_then_load(path, *a, **k):
        seen.append(os.stat(path).st_ino)
        with open(_writable(store_obj), "r+b") as f:  # same inode, rewritten in place
            f.write(evil_bytes)
            f.truncate()
        return real(path, *a, **k)

    monkeypatch.setattr(data, "load_dataset", attack_then_load)
    loaded = load_verified("d@1", registry=reg.root, trust=[keys[1]])
    assert np.array_equal(loaded.y, GOOD_Y)
    assert seen and seen[0] != os.stat(store_obj).st_ino  # a private copy, not a link


def test_object_rewritten_just_before_it_is_copied_is_refused(reg, signed, keys, monkeypatch):
    evil_bytes = reg.store.path(next(iter(signed.manifest.files.values())).digest).read_bytes()
    real = ObjectStore.open_object

    def rewrite_then_open(self, digest):
        _writable(self.path(digest)).write_bytes(evil_bytes)
        return real(self, digest)

    monkeypatch.setattr(ObjectStore, "open_object", rewrite_then_open)
    with pytest.raises(IntegrityError, match="modified"):
        load_verified("d@1", registry=reg.root, trust=[keys[1]])


# -- 3. a replayed signed alias move ------------------------------------------------------


def _three_versions(reg, make_folder, scanner, keys, name="m"):
    for i in (1, 2, 3):
        reg.add(
            make_folder({"w": f"v{i}".encode()}),
            name=name,
            scanner=scanner,
            sign_key=keys[0],
            source="t",
        )


def test_replayed_alias_move_is_critical_in_verify_fsck_and_load(
    reg, make_folder, scanner, keys, tmp_path
):
    _three_versions(reg, make_folder, scanner, keys)
    reg.set_alias("m", 1, "production", sign_key=keys[0])
    saved = reg.conn.execute("SELECT version, envelope FROM aliases").fetchone()
    reg.set_alias("m", 3, "production", sign_key=keys[0])
    reg.conn.execute("UPDATE aliases SET version=?, envelope=?", saved)  # the replay
    report = verify_report("m@production", registry=reg.root, trust=[keys[1]])
    stale = [f for f in report.findings if f.rule == "MLW-INT-013"]
    assert stale and stale[0].severity == Severity.CRITICAL
    assert "replayed" in stale[0].title
    assert any("replayed" in p for p in reg.fsck(trust=[keys[1]]))
    assert any("replayed" in p for p in reg.fsck())  # structural, even without a key
    assert (
        run(
            "registry",
            "verify",
            "m@production",
            "--registry",
            str(reg.root),
            "--trust",
            str(keys[1]),
            "-q",
        )
        == 1
    )


def test_replayed_alias_move_together_with_its_old_head_is_caught_by_a_newer_statement(
    reg, make_folder, scanner, keys
):
    reg.add(make_folder({"w": b"1"}), name="m", scanner=scanner, sign_key=keys[0], source="t")
    reg.set_alias("m", 1, "production", sign_key=keys[0])
    alias = reg.conn.execute("SELECT version, envelope FROM aliases").fetchone()
    head = reg.meta("head")
    reg.add(make_folder({"w": b"2"}), name="m", scanner=scanner, sign_key=keys[0], source="t")
    reg.set_alias("m", 2, "production", sign_key=keys[0])
    reg.conn.execute("UPDATE aliases SET version=?, envelope=?", alias)
    reg.conn.execute("UPDATE meta SET value=? WHERE key='head'", (head,))
    report = verify_report("m@production", registry=reg.root, trust=[keys[1]])
    assert any(f.rule == "MLW-INT-013" and f.severity == Severity.CRITICAL for f in report.findings)
    assert any("old head was put back" in p for p in reg.fsck(trust=[keys[1]]))


# -- 4. deleting the newest signed version -------------------------------------------------


def test_deleted_newest_version_is_a_critical_downgrade_everywhere(reg, make_folder, scanner, keys):
    reg.add(make_folder({"w": b"1"}), name="n", scanner=scanner, sign_key=keys[0], source="t")
    reg.add(make_folder({"w": b"2"}), name="n", scanner=scanner, sign_key=keys[0], source="t")
    reg.conn.execute("DELETE FROM versions WHERE name='n' AND version=2")
    report = verify_report("n", registry=reg.root, trust=[keys[1]])
    assert report.target["ref"] == "n@1"
    stale = [f for f in report.findings if f.rule == "MLW-INT-013"]
    assert stale and stale[0].severity == Severity.CRITICAL and "n@2" in stale[0].title
    assert any("n@2" in p for p in reg.fsck())
    with pytest.raises(IntegrityError, match="n@2"):
        load_verified("n", registry=reg.root, trust=[keys[1]], require_signature=True)
    assert run("registry", "fsck", "--registry", str(reg.root), "-q") == 1


def test_stripping_the_signature_of_the_newest_version_is_caught_too(
    reg, make_folder, scanner, keys
):
    _three_versions(reg, make_folder, scanner, keys, name="n")
    reg.conn.execute("UPDATE versions SET envelope=NULL, signer=NULL WHERE version=3")
    assert "MLW-INT-013" in rules(verify_report("n@2", registry=reg.root, trust=[keys[1]]))


# -- a whole database rolled back, and a deleted head -------------------------------------


def test_database_copied_back_from_an_older_backup_is_caught_by_the_verifier_memory(
    reg, make_folder, scanner, keys, tmp_path
):
    reg.add(make_folder({"w": b"1"}), name="m", scanner=scanner, sign_key=keys[0], source="t")
    reg.set_alias("m", 1, "production", sign_key=keys[0])
    backup = sqlite3.connect(tmp_path / "old.db")
    reg.conn.backup(backup)  # the attacker's copy of a consistent, older signed state
    reg.add(make_folder({"w": b"2"}), name="m", scanner=scanner, sign_key=keys[0], source="t")
    reg.set_alias("m", 2, "production", sign_key=keys[0])
    assert verify_report("m@production", registry=reg.root, trust=[keys[1]]).findings == []
    backup.backup(reg.conn)  # roll the whole database back
    backup.close()
    report = verify_report("m@production", registry=reg.root, trust=[keys[1]])
    stale = [f for f in report.findings if f.rule == "MLW-INT-013"]
    assert stale and stale[0].severity == Severity.CRITICAL and "rolled back" in stale[0].title
    assert run("registry", "fsck", "--registry", str(reg.root), "-q") == 1


def test_deleted_head_is_reported_and_signing_refuses_to_bless_the_state(
    reg, make_folder, scanner, keys
):
    reg.add(make_folder({"w": b"1"}), name="m", scanner=scanner, sign_key=keys[0], source="t")
    reg.conn.execute("DELETE FROM meta WHERE key='head'")
    assert "MLW-INT-013" in rules(verify_report("m@1", registry=reg.root, trust=[keys[1]]))
    with pytest.raises(UserError, match="head is missing"):
        reg.set_alias("m", 1, "production", sign_key=keys[0])


def test_forged_head_is_not_blessed_by_the_next_signer(reg, make_folder, scanner, keys, other_keys):
    from mlwarden.integrity.dsse import sign_statement
    from mlwarden.integrity.freshness import Head
    from mlwarden.integrity.keys import load_signing_key

    reg.add(make_folder({"w": b"1"}), name="m", scanner=scanner, sign_key=keys[0], source="t")
    fake = Head(reg.registry_id(), 99, {})
    env = sign_statement(fake.statement("x", "y"), load_signing_key(other_keys[0]))
    reg.conn.execute("UPDATE meta SET value=? WHERE key='head'", (json.dumps(env),))
    with pytest.raises(UserError, match="not signed by this key"):
        reg.add(make_folder({"w": b"2"}), name="m", scanner=scanner, sign_key=keys[0])
    assert "MLW-INT-013" in rules(verify_report("m@1", registry=reg.root, trust=[keys[1]]))


# -- 5. rollback --restore from the unsigned database manifest -----------------------------


@pytest.mark.parametrize("how", ["trust", "sign"])
def test_rollback_restore_with_a_key_writes_the_signed_bytes_not_the_swapped_row(
    reg, signed, keys, tmp_path, how
):
    reg.set_alias("d", 1, "production")
    _swap_manifest(reg.root, "d", signed)
    kw: dict = {"trust": [keys[1]]} if how == "trust" else {"sign_key": keys[0]}
    dest = tmp_path / "restored"
    reg.rollback("d", "production", 1, restore=dest, **kw)
    assert [p.name for p in dest.iterdir()] == ["good.npz"]
    assert (dest / "good.npz").read_bytes() == (tmp_path / "good.npz").read_bytes()
    if how == "sign":  # the signed move names the signed content, not the swapped row
        env = reg.conn.execute("SELECT envelope FROM aliases").fetchone()[0]
        from mlwarden.integrity.dsse import unverified_statement

        moved = unverified_statement(env, "https://mlwarden.dev/registry/alias/v1")
        assert moved["predicate"]["manifest_digest"] != signed.manifest_digest


def test_rollback_restore_without_a_key_refuses_a_row_that_disagrees_with_its_statement(
    reg, signed, tmp_path
):
    reg.set_alias("d", 1, "production")
    _swap_manifest(reg.root, "d", signed)
    dest = tmp_path / "restored"
    with pytest.raises(UserError, match="disagrees"):
        reg.rollback("d", "production", 1, restore=dest)
    assert not dest.exists() or list(dest.iterdir()) == []
    assert reg.resolve("d@production").version == 1


def test_rollback_restore_with_a_key_refuses_an_unsigned_or_untrusted_version(
    reg, signed, keys, other_keys, tmp_path
):
    reg.set_alias("evil", 1, "production")
    with pytest.raises(UserError, match="not signed"):
        reg.rollback("evil", "production", 1, restore=tmp_path / "a", trust=[keys[1]])
    reg.set_alias("d", 1, "production")
    with pytest.raises(UserError, match="not signed by a trusted key"):
        reg.rollback("d", "production", 1, restore=tmp_path / "b", trust=[other_keys[1]])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_cli_rollback_with_trust_restores_the_signed_bytes(reg, signed, keys, tmp_path):
    reg.set_alias("d", 1, "production")
    dest = tmp_path / "out"
    assert (
        run(
            "registry",
            "rollback",
            "d",
            "production",
            "--to",
            "1",
            "--restore",
            str(dest),
            "--trust",
            str(keys[1]),
            "--registry",
            str(reg.root),
            "-q",
        )
        == 0
    )
    assert (dest / "good.npz").read_bytes() == (tmp_path / "good.npz").read_bytes()


# -- 6. writes through planted links ----------------------------------------------------------


def test_export_never_writes_through_a_planted_partial_or_final_link(reg, signed, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    out = tmp_path / "drop" / "d-1.tar"
    out.parent.mkdir()
    (out.parent / "d-1.tar.partial").symlink_to(victim)
    out.symlink_to(victim)
    export_bundle(reg, reg.resolve("d@1"), out)
    assert victim.read_bytes() == b"precious"
    assert not out.is_symlink() and tarfile.is_tarfile(out)


def test_restore_is_not_redirected_when_its_folder_is_swapped_for_a_link(
    reg, make_folder, scanner, tmp_path, monkeypatch
):
    reg.add(
        make_folder({"a.bin": b"A" * 1000, "sub/b.bin": b"B" * 1000}), name="m", scanner=scanner
    )
    reg.set_alias("m", 1, "production")
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "shared" / "restore"
    real = ObjectStore.open_object
    calls = []

    def swap_then_open(self, digest):
        calls.append(digest)
        if len(calls) == 1:  # after the folder was checked, before anything is written
            dest.rename(tmp_path / "shared" / "moved")
            dest.symlink_to(outside, target_is_directory=True)
        return real(self, digest)

    monkeypatch.setattr(ObjectStore, "open_object", swap_then_open)
    reg.rollback("m", "production", 1, restore=dest)
    assert list(outside.iterdir()) == []
    assert (tmp_path / "shared" / "moved" / "sub" / "b.bin").read_bytes() == b"B" * 1000


def test_restore_refuses_a_sub_folder_swapped_for_a_link(
    reg, make_folder, scanner, tmp_path, monkeypatch
):
    reg.add(make_folder({"sub/a.bin": b"A", "sub/z/b.bin": b"B"}), name="m", scanner=scanner)
    reg.set_alias("m", 1, "production")
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "restore"
    real = ObjectStore.open_object
    calls = []

    def swap_then_open(self, digest):
        calls.append(digest)
        if len(calls) == 2:
            sub = dest / "sub"
            sub.rename(tmp_path / "moved-sub")
            sub.symlink_to(outside, target_is_directory=True)
        return real(self, digest)

    monkeypatch.setattr(ObjectStore, "open_object", swap_then_open)
    with contextlib.suppress(UserError):
        reg.rollback("m", "production", 1, restore=dest)
    assert list(outside.iterdir()) == []


def test_restore_refuses_a_link_planted_at_a_file_name(
    reg, make_folder, scanner, tmp_path, monkeypatch
):
    reg.add(make_folder({"a.bin": b"A", "b.bin": b"B"}), name="m", scanner=scanner)
    reg.set_alias("m", 1, "production")
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    dest = tmp_path / "restore"
    real = ObjectStore.open_object

    def plant_then_open(self, digest):
        if not (dest / "b.bin").is_symlink():
            (dest / "b.bin").symlink_to(victim)
        return real(self, digest)

    monkeypatch.setattr(ObjectStore, "open_object", plant_then_open)
    with pytest.raises(UserError, match="b.bin"):
        reg.rollback("m", "production", 1, restore=dest)
    assert victim.read_bytes() == b"precious"


def test_staging_is_not_redirected_by_a_tmp_folder_swapped_for_a_link(
    reg, make_folder, scanner, tmp_path
):
    outside = tmp_path / "outside"
    outside.mkdir()
    os.rmdir(reg.store.tmp)
    reg.store.tmp.symlink_to(outside, target_is_directory=True)
    with pytest.raises(UserError, match="symbolic link"):
        reg.add(make_folder({"w": b"w"}), name="m", scanner=scanner)
    assert list(outside.iterdir()) == []


# -- lower: kind, linked objects, refused imports, hard links in deployed folders ---------


def test_kind_column_is_checked_against_the_signed_record(reg, signed, keys):
    reg.conn.execute("UPDATE versions SET kind='model' WHERE name='d'")
    report = verify_report("d@1", registry=reg.root, trust=[keys[1]])
    assert "MLW-INT-008" in rules(report)
    with pytest.raises(IntegrityError):
        load_verified("d@1", registry=reg.root, trust=[keys[1]])


def test_symlinked_store_object_is_a_finding_in_verify_and_fsck(reg, signed, keys, tmp_path):
    digest = next(iter(reg.resolve("d@1").manifest.files.values())).digest
    obj = reg.store.path(digest)
    copy = tmp_path / "attacker-owned.npz"
    copy.write_bytes(obj.read_bytes())
    obj.unlink()
    obj.symlink_to(copy)
    report = verify_report("d@1", registry=reg.root, trust=[keys[1]])
    assert rules(report) == ["MLW-INT-014"]
    assert any("symbolic link" in p for p in reg.fsck())
    with pytest.raises(IntegrityError):
        load_verified("d@1", registry=reg.root, trust=[keys[1]])


def test_hard_linked_store_object_is_a_finding_in_verify_and_fsck(reg, signed, keys, tmp_path):
    digest = next(iter(reg.resolve("d@1").manifest.files.values())).digest
    os.link(reg.store.path(digest), tmp_path / "second-name")
    report = verify_report("d@1", registry=reg.root, trust=[keys[1]])
    assert rules(report) == ["MLW-INT-014"]
    assert report.findings[0].severity == Severity.HIGH
    assert any("hard-linked" in p for p in reg.fsck())


def test_refused_import_writes_nothing_into_the_store(reg, signed, keys, other_keys, tmp_path):
    bundle = export_bundle(reg, reg.resolve("d@1"), tmp_path / "d.tar")
    target = tmp_path / "other"
    with pytest.raises(UserError):
        import_bundle(bundle, registry=target, trust=[other_keys[1]])
    assert [p for p in (target / "objects").rglob("*") if p.is_file()] == []
    assert [p for p in (target / "tmp").rglob("*") if p.is_file()] == []


def test_deployed_file_hard_linked_to_an_outside_file_is_a_finding(
    reg, make_folder, scanner, keys, tmp_path
):
    src = make_folder({"w.bin": b"weights"})
    reg.add(src, name="m", scanner=scanner, sign_key=keys[0], source="t")
    os.link(src / "w.bin", tmp_path / "attacker-writable")
    report = verify_report("m@1", registry=reg.root, trust=[keys[1]], path=src)
    assert rules(report) == ["MLW-INT-014"]


def test_edited_lineage_row_is_reported_by_fsck(reg, make_folder, scanner):
    reg.add(make_folder({"d": b"d"}), name="data", kind="dataset", scanner=scanner)
    reg.add(make_folder({"w": b"w"}), name="m", scanner=scanner, parents=["data@1"])
    reg.conn.execute("UPDATE lineage SET parent_digest='0' || substr(parent_digest, 2)")
    assert any("lineage" in p for p in reg.fsck())


def test_unsigned_display_columns_that_disagree_with_the_record_are_reported(reg, signed, keys):
    reg.conn.execute("UPDATE versions SET who='release-bot@ci' WHERE name='d'")
    assert "MLW-INT-008" in rules(verify_report("d@1", registry=reg.root, trust=[keys[1]]))
    assert any("who" in p for p in reg.fsck())


def test_unreadable_remembered_state_fails_fsck_closed(reg, signed, keys, tmp_path, monkeypatch):
    from mlwarden.integrity.freshness import RememberedState

    assert verify_report("d@1", registry=reg.root, trust=[keys[1]]).findings == []
    memory = RememberedState(reg.root)
    assert memory.load() is not None
    memory.path.write_text("{not json")
    assert run("registry", "fsck", "--registry", str(reg.root), "-q") == 1
    report = verify_report("d@1", registry=reg.root, trust=[keys[1]])
    assert "MLW-INT-013" in rules(report)


def test_key_file_swapped_for_a_link_after_writing_does_not_redirect_its_chmod(
    tmp_path, monkeypatch
):
    import stat

    from mlwarden.integrity.keys import generate_keypair

    victim = tmp_path / "victim"
    victim.write_text("x")
    os.chmod(victim, 0o644)
    key = tmp_path / "k" / "release.key"
    real_fsync = os.fsync

    def fsync_then_swap(fd):
        real_fsync(fd)
        if not key.is_symlink():  # right after the private key was written
            key.rename(tmp_path / "k" / "moved.key")
            key.symlink_to(victim)

    monkeypatch.setattr(os, "fsync", fsync_then_swap)
    generate_keypair(key)
    assert stat.S_IMODE(victim.stat().st_mode) == 0o644 and victim.read_text() == "x"
    assert stat.S_IMODE((tmp_path / "k" / "moved.key").stat().st_mode) == 0o600


def test_object_folder_swapped_for_a_link_is_a_finding_in_verify_and_fsck(
    reg, signed, keys, tmp_path
):
    digest = next(iter(reg.resolve("d@1").manifest.files.values())).digest
    folder = reg.store.path(digest).parent
    copy = tmp_path / "attacker-folder"
    folder.rename(copy)
    folder.symlink_to(copy, target_is_directory=True)
    assert rules(verify_report("d@1", registry=reg.root, trust=[keys[1]])) == ["MLW-INT-014"]
    assert any("symbolic link" in p for p in reg.fsck())
    with pytest.raises(IntegrityError):
        load_verified("d@1", registry=reg.root, trust=[keys[1]])


def test_two_signers_publisher_and_release_manager(reg, make_folder, scanner, keys, other_keys):
    """Versions signed by one key, alias moves by another: works with --trust for both."""
    reg.add(make_folder({"w": b"1"}), name="m", scanner=scanner, sign_key=keys[0], source="t")
    with pytest.raises(UserError, match="trust"):  # the head and m@1 are signed by keys[0]
        reg.set_alias("m", 1, "production", sign_key=other_keys[0])
    reg.set_alias("m", 1, "production", sign_key=other_keys[0], trust=[keys[1]])
    both = [keys[1], other_keys[1]]
    assert verify_report("m@production", registry=reg.root, trust=both).findings == []
    only_publisher = verify_report("m@production", registry=reg.root, trust=[keys[1]])
    assert "MLW-INT-013" in rules(only_publisher)  # the head is the release manager's


def test_fsck_with_an_untrusted_key_names_the_head(reg, make_folder, scanner, keys, other_keys):
    reg.add(make_folder({"w": b"1"}), name="m", scanner=scanner, sign_key=keys[0], source="t")
    assert reg.fsck(trust=[keys[1]]) == []
    assert any("not signed by a trusted key" in p for p in reg.fsck(trust=[other_keys[1]]))
    assert (
        run("registry", "fsck", "--registry", str(reg.root), "--trust", str(other_keys[1]), "-q")
        == 1
    )


def test_registry_database_planted_as_a_link_is_refused(tmp_path, make_folder, scanner):
    victim = tmp_path / "other-app.db"
    sqlite3.connect(victim).execute("CREATE TABLE precious (x)").connection.commit()
    before = victim.read_bytes()
    (tmp_path / "reg").mkdir()
    (tmp_path / "reg" / "registry.db").symlink_to(victim)
    with pytest.raises(UserError, match="symbolic link"):
        Registry.open(tmp_path / "reg")
    assert victim.read_bytes() == before
