"""CLI: keys, registry commands and their exit codes (0 clean, 1 findings, 2 user error)."""

from __future__ import annotations

import json
import os
import stat

import pytest

from mlwarden.cli.main import main
from mlwarden.integrity.registry import Registry


def run(*args: str) -> int:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    return int(exc.value.code or 0)


@pytest.fixture
def env(tmp_path, monkeypatch, scanner):
    """A registry given by $MLWARDEN_REGISTRY and a signing key made by the CLI."""
    monkeypatch.setenv("MLWARDEN_REGISTRY", str(tmp_path / "reg"))
    monkeypatch.setattr("mlwarden.integrity.scanning.supplychain_scanner", scanner)
    assert run("keys", "generate", str(tmp_path / "k.key"), "-q") == 0
    model = tmp_path / "model"
    model.mkdir()
    (model / "w.bin").write_bytes(b"weights")
    return tmp_path, model


def test_keys_generate_writes_0600_private_and_refuses_overwrite(env):
    tmp, _ = env
    assert stat.S_IMODE(os.stat(tmp / "k.key").st_mode) == 0o600
    assert (tmp / "k.key.pub").read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert run("keys", "generate", str(tmp / "k.key"), "-q") == 2


def test_add_verify_alias_rollback_exit_codes(env, capsys):
    tmp, model = env
    key, pub = str(tmp / "k.key"), str(tmp / "k.key.pub")
    assert run("registry", "add", str(model), "--name", "m", "--sign", key, "--source", "t") == 0
    assert run("registry", "verify", "m@1", "--trust", pub, "-q") == 0
    (model / "w.bin").write_bytes(b"weightz")
    assert run("registry", "add", str(model), "--name", "m", "--sign", key, "--source", "t") == 0
    assert run("registry", "alias", "m@2", "production", "-q") == 0
    json_out = tmp / "v.json"
    code = run(
        "registry",
        "verify",
        "m@1",
        "--trust",
        pub,
        "--path",
        str(model),
        "--json",
        str(json_out),
        "-q",
    )
    assert code == 1
    assert [f["rule"] for f in json.loads(json_out.read_text())["findings"]] == ["MLW-INT-001"]
    assert (
        run(
            "registry",
            "rollback",
            "m",
            "production",
            "--to",
            "1",
            "--restore",
            str(tmp / "r"),
            "-q",
        )
        == 0
    )
    assert (tmp / "r" / "w.bin").read_bytes() == b"weights"
    capsys.readouterr()
    assert run("registry", "log", "m") == 0
    out = capsys.readouterr().out
    assert "m@1 [production]" in out and "rollback production -> m@1 (was @2)" in out


def test_untrusted_key_exits_1(env):
    tmp, model = env
    assert run("registry", "add", str(model), "--name", "m", "--sign", str(tmp / "k.key")) == 0
    assert run("keys", "generate", str(tmp / "o.key"), "-q") == 0
    assert run("registry", "verify", "m", "--trust", str(tmp / "o.key.pub"), "-q") == 1


@pytest.mark.parametrize(
    "args",
    [
        ["registry", "verify", "nosuch@1"],
        ["registry", "alias", "m", "production"],
        ["registry", "add", "/nonexistent/path", "--name", "m"],
        ["registry", "add", ".", "--name", "../bad"],
        ["registry", "add", ".", "--name", "m", "--kind", "weird"],
        ["registry", "import", "/nonexistent.tar"],
        ["registry", "verify", "m", "--trust", "/nonexistent.pub"],
    ],
)
def test_user_mistakes_exit_2_with_one_line(env, capsys, args):
    tmp, model = env
    run("registry", "add", str(model), "--name", "m", "-q")
    capsys.readouterr()
    assert run(*args) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and err


def test_diff_and_export_import(env, capsys):
    tmp, model = env
    assert run("registry", "add", str(model), "--name", "m", "--sign", str(tmp / "k.key")) == 0
    (model / "w.bin").write_bytes(b"weights, longer")
    assert run("registry", "add", str(model), "--name", "m") == 0
    capsys.readouterr()
    assert run("registry", "diff", "m@1", "m@2") == 0
    assert "changed  w.bin  (7 -> 15 bytes, +8)" in capsys.readouterr().out
    assert run("registry", "export", "m@1", str(tmp / "b.tar"), "-q") == 0
    assert (
        run(
            "registry",
            "import",
            str(tmp / "b.tar"),
            "--registry",
            str(tmp / "o"),
            "--trust",
            str(tmp / "k.key.pub"),
            "-q",
        )
        == 0
    )
    with Registry.open(tmp / "o") as other:
        assert other.names() == ["m"]


def test_alias_signing_decides_the_verify_exit_code(env):
    tmp, model = env
    key, pub = str(tmp / "k.key"), str(tmp / "k.key.pub")
    assert run("registry", "add", str(model), "--name", "m", "--sign", key, "--source", "t") == 0
    assert run("registry", "alias", "m@1", "production", "-q") == 0
    assert run("registry", "verify", "m@production", "--trust", pub, "-q") == 1
    assert run("registry", "alias", "m@1", "production", "--sign", key, "-q") == 0
    assert run("registry", "verify", "m@production", "--trust", pub, "-q") == 0
