"""Export / import: round trip, and hostile bundles rejected without extraction."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from mlwarden.core.errors import UserError
from mlwarden.integrity.bundle import RECORD, export_bundle, import_bundle
from mlwarden.integrity.registry import Registry


@pytest.fixture(params=["ed25519", "ecdsa-p256", "ecdsa-p521"])
def key_type(request: pytest.FixtureRequest) -> str:
    """Every attack below runs against a registry signed with Ed25519 and with ECDSA."""
    return str(request.param)


@pytest.fixture
def bundle(reg, make_folder, scanner, keys, tmp_path) -> Path:
    rec = reg.add(
        make_folder({"w.bin": b"weights", "sub/cfg.json": b"{}"}),
        name="m",
        scanner=scanner,
        sign_key=keys[0],
        source="t",
    )
    return export_bundle(reg, rec, tmp_path / "m-1.tar.gz")


def test_round_trip_imports_and_verifies(bundle, keys, tmp_path):
    report = import_bundle(bundle, registry=tmp_path / "other", trust=[keys[1]])
    assert report.findings == [] and report.metrics["imported"] is True
    with Registry.open(tmp_path / "other") as other:
        assert other.resolve("m@1").manifest.files["w.bin"].size == 7
    again = import_bundle(bundle, registry=tmp_path / "other", trust=[keys[1]])
    assert again.metrics["imported"] is False


def test_import_with_untrusted_key_is_refused(bundle, other_keys, tmp_path):
    with pytest.raises(UserError, match="trusted"):
        import_bundle(bundle, registry=tmp_path / "other", trust=[other_keys[1]])
    with Registry.open(tmp_path / "other") as other:
        assert other.names() == []


def _rewrite(src: Path, dest: Path, edit) -> Path:
    with tarfile.open(src) as tin, tarfile.open(dest, "w") as tout:
        for m in tin:
            data = tin.extractfile(m).read() if m.isreg() else b""
            for m2, d2 in edit(m, data):
                tout.addfile(m2, io.BytesIO(d2) if m2.isreg() else None)
    return dest


def _add(name: str, data: bytes, kind=tarfile.REGTYPE, link: str = ""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.linkname = link
    return info, data


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda d: bytes([d[0] ^ 1]) + d[1:], "changed|SHA-256"),  # same size, other bytes
        (lambda d: d + b"!", "manifest says"),  # other size: refused before reading it
    ],
)
def test_tampered_object_is_rejected(bundle, tmp_path, tamper, message):
    def edit(m, data):
        if "/objects/" in m.name:
            data = tamper(data)
            m.size = len(data)
        yield m, data

    bad = _rewrite(bundle, tmp_path / "bad.tar", edit)
    with pytest.raises(UserError, match=message):
        import_bundle(bad, registry=tmp_path / "other")


@pytest.mark.parametrize(
    "extra",
    [
        _add("../../evil.sh", b"echo pwned"),
        _add("/tmp/evil.sh", b"x"),
        _add("mlwarden-bundle/objects/" + "a" * 64, b"", tarfile.SYMTYPE, "/etc/passwd"),
        _add("mlwarden-bundle/objects/" + "b" * 64, b"unlisted"),
    ],
)
def test_hostile_members_are_rejected_and_nothing_is_written(bundle, tmp_path, extra):
    def edit(m, data):
        yield m, data
        if m.name == RECORD:
            yield extra

    bad = _rewrite(bundle, tmp_path / "bad.tar", edit)
    with pytest.raises(UserError):
        import_bundle(bad, registry=tmp_path / "other")
    assert not (tmp_path / "evil.sh").exists()
    with Registry.open(tmp_path / "other") as other:
        assert other.names() == []


def test_record_with_traversal_manifest_is_rejected(bundle, tmp_path):
    def edit(m, data):
        if m.name == RECORD:
            doc = json.loads(data)
            doc["manifest"] = {"../x": next(iter(doc["manifest"].values()))}
            data = json.dumps(doc).encode()
            m.size = len(data)
        yield m, data

    with pytest.raises(UserError, match="manifest rejected"):
        import_bundle(_rewrite(bundle, tmp_path / "bad.tar", edit), registry=tmp_path / "o")


def test_not_a_tar_is_a_clean_error(tmp_path):
    (tmp_path / "x.tar").write_bytes(b"garbage" * 100)
    with pytest.raises(UserError, match="tar"):
        import_bundle(tmp_path / "x.tar", registry=tmp_path / "o")
