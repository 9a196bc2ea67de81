"""A killed ``registry add`` leaves nothing behind after gc; gc never races an add.

A child process registers a folder and is killed with SIGKILL at chosen points of
the add (after staging, between installs, before the commit, at random times); the
registry must then verify, fsck must name the leftovers, and gc must leave exactly
the committed versions' objects.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mlwarden.core.errors import UserError
from mlwarden.integrity.gc import collect, find_garbage, referenced_digests
from mlwarden.integrity.registry import Registry

#: The child: registers MODEL into REG; os.replace/os.rename (install) can be made to
#: SIGKILL the process at call KILL_AT, or to wait for a release file (PAUSE_AT).
CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    from mlwarden.integrity.registry import Registry

    reg_dir, model, kill_at, pause_at, release = sys.argv[1:6]
    kill_at, pause_at, calls = int(kill_at), int(pause_at), [0]
    real = {"replace": os.replace, "rename": os.rename}

    def hook(name):
        def call(*a, **k):
            calls[0] += 1
            if calls[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            if calls[0] == pause_at:
                print("paused", flush=True)
                while not os.path.exists(release):
                    time.sleep(0.02)
            return real[name](*a, **k)
        return call

    os.replace, os.rename = hook("replace"), hook("rename")
    with Registry.open(Path(reg_dir)) as reg:
        rec = reg.add(Path(model), name="m", scanner=lambda ps: {str(p): ("safe", "") for p in ps})
    print("done", rec.ref, flush=True)
    """
)


@pytest.fixture
def big_model(make_folder) -> Path:  # type: ignore[no-untyped-def]
    return make_folder({f"w/{i:03d}.bin": os.urandom(64 * 1024) + bytes([i]) for i in range(40)})


def _child(reg: Path, model: Path, kill_at: int = 0, pause_at: int = 0, release: str = "-"):  # type: ignore[no-untyped-def]
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(reg), str(model), str(kill_at), str(pause_at), release],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _state(reg_dir: Path):  # type: ignore[no-untyped-def]
    with Registry.open(reg_dir) as reg:
        return find_garbage(reg.store.root, referenced_digests(reg)), reg.fsck()


@pytest.mark.parametrize("kill_at", [1, 20, 40])
def test_add_killed_at_install_leaves_nothing_after_gc(
    tmp_path: Path,
    big_model: Path,
    make_folder,
    kill_at: int,  # type: ignore[no-untyped-def]
) -> None:
    reg_dir = tmp_path / "reg"
    first = make_folder({"keep.bin": b"committed"})
    with Registry.open(reg_dir) as reg:
        reg.add(first, name="keep", scanner=lambda ps: {str(p): ("safe", "") for p in ps})
    proc = _child(reg_dir, big_model, kill_at=kill_at)
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
    garbage, problems = _state(reg_dir)
    assert garbage.staging or garbage.unreferenced  # the kill left something to clean
    assert problems == garbage.problems()  # fsck names exactly the leftovers
    with Registry.open(reg_dir) as reg:
        removed = collect(reg.store.root, lambda: referenced_digests(reg))
        assert removed.staging == garbage.staging
        assert removed.unreferenced == garbage.unreferenced
    garbage, problems = _state(reg_dir)
    assert (garbage.staging, garbage.unreferenced, problems) == ([], [], [])
    assert not any((reg_dir / "tmp").iterdir())
    with Registry.open(reg_dir) as reg:
        assert [r.ref for r in reg.versions("keep")] == ["keep@1"]
        assert (
            reg.store.check(next(iter(reg.get("keep", 1).manifest.files.values())).digest) == "ok"
        )


def test_next_add_sweeps_the_staging_of_a_killed_add(
    tmp_path: Path, big_model: Path, make_folder
) -> None:  # type: ignore[no-untyped-def]
    reg_dir = tmp_path / "reg"
    proc = _child(reg_dir, big_model, kill_at=1)
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert any((reg_dir / "tmp").iterdir())
    with Registry.open(reg_dir) as reg:
        reg.add(
            make_folder({"a.bin": b"a"}),
            name="next",
            scanner=lambda ps: {str(p): ("safe", "") for p in ps},
        )
    assert not any((reg_dir / "tmp").iterdir())


def test_gc_waits_for_an_add_in_flight_and_never_removes_its_files(
    tmp_path: Path, big_model: Path
) -> None:
    reg_dir = tmp_path / "reg"
    release = tmp_path / "release"
    proc = _child(reg_dir, big_model, pause_at=10, release=str(release))
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "paused"  # 9 objects installed, the rest staged
    staged_before = sorted(os.listdir(reg_dir / "tmp"))
    assert staged_before
    with Registry.open(reg_dir) as reg, pytest.raises(UserError, match="still running"):
        collect(reg.store.root, lambda: referenced_digests(reg), wait=0.3)
    assert sorted(os.listdir(reg_dir / "tmp")) == staged_before
    release.touch()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "done m@1" in out
    with Registry.open(reg_dir) as reg:
        garbage = collect(reg.store.root, lambda: referenced_digests(reg))
        assert (garbage.staging, garbage.unreferenced) == ([], [])
        assert reg.fsck() == []


def test_killed_at_random_times_every_state_recovers(tmp_path: Path, big_model: Path) -> None:
    """SIGKILL from outside at spread-out times: after gc the registry is always clean."""
    for i, delay in enumerate((0.05, 0.2, 0.4, 0.8)):
        reg_dir = tmp_path / f"reg{i}"
        proc = _child(reg_dir, big_model)
        time.sleep(delay)
        proc.kill()
        proc.wait(timeout=120)
        if not (reg_dir / "registry.db").exists() and not reg_dir.exists():
            continue  # killed before the registry was created
        with Registry.open(reg_dir) as reg:
            collect(reg.store.root, lambda reg=reg: referenced_digests(reg))  # type: ignore[misc]
            assert reg.fsck() == []
            tmp = reg.store.root / "tmp"
            assert not tmp.exists() or not any(tmp.iterdir())


def test_cli_fsck_names_leftovers_and_gc_removes_them(
    tmp_path: Path, big_model: Path, run_cli
) -> None:  # type: ignore[no-untyped-def]
    reg_dir = tmp_path / "reg"
    proc = _child(reg_dir, big_model, kill_at=5)
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    where = ("--registry", str(reg_dir))
    rc, fsck_out, _ = run_cli("registry", "fsck", *where)
    assert rc == 1
    assert "leftover staging tmp/" in fsck_out and "unreferenced object" in fsck_out
    rc, dry_out, dry_err = run_cli("registry", "gc", "--dry-run", *where)
    assert rc == 0 and "would remove" in dry_err
    assert dry_out == fsck_out  # a dry run lists the same items and removes nothing
    assert run_cli("registry", "gc", *where)[0] == 0
    rc, out, _ = run_cli("registry", "fsck", *where)
    assert rc == 0, out


def test_import_failing_after_its_objects_are_stored_leaves_none_behind(
    tmp_path: Path,
    make_folder,
    keys,
    monkeypatch,  # type: ignore[no-untyped-def]
) -> None:
    from mlwarden.integrity.bundle import export_bundle, import_bundle

    with Registry.open(tmp_path / "src-reg") as reg:
        folder = make_folder({"a.bin": b"a" * 100, "b.bin": b"b" * 100})
        rec = reg.add(
            folder,
            name="m",
            sign_key=keys[0],
            scanner=lambda ps: {str(p): ("safe", "") for p in ps},
        )
        tar = export_bundle(reg, rec, tmp_path / "m.tar")

    def disk_full(*a, **k):  # type: ignore[no-untyped-def]
        raise OSError("disk full")

    monkeypatch.setattr(Registry, "import_version", disk_full)  # after the objects are in
    dst = tmp_path / "dst-reg"
    with pytest.raises(OSError, match="disk full"):
        import_bundle(tar, registry=dst, trust=[keys[1]])
    garbage, problems = _state(dst)
    assert (garbage.staging, garbage.unreferenced, problems) == ([], [], [])
