"""``mlwarden gateway add-key``, ``mlwarden gateway check`` and ``mlwarden serve``."""

from __future__ import annotations

import json
import os
import pickle
import stat
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
import torch
import yaml

from mlwarden.cli.main import main
from mlwarden.serve.auth import hash_key


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def test_add_key_creates_a_private_config_with_only_the_hash(tmp_path, capsys) -> None:
    cfg = tmp_path / "gw.yaml"
    code, out, _ = _run(
        ["gateway", "add-key", "alice", "--config", str(cfg), "--role", "scores", "--rate", "5"],
        capsys,
    )
    assert code == 0
    key = out.strip()
    assert key.startswith("mlw_") and len(key) > 40
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
    text = cfg.read_text()
    assert key not in text
    entry = yaml.safe_load(text)["keys"]["alice"]
    assert entry["hash"] == hash_key(key) and entry["role"] == "scores" and entry["rate"] == 5.0


def test_add_key_keeps_existing_keys_and_refuses_duplicates(tmp_path, capsys) -> None:
    cfg = tmp_path / "gw.yaml"
    _run(["gateway", "add-key", "alice", "--config", str(cfg)], capsys)
    code, out, _ = _run(
        ["gateway", "add-key", "bob", "--config", str(cfg), "--role", "admin"], capsys
    )
    assert code == 0 and set(yaml.safe_load(cfg.read_text())["keys"]) == {"alice", "bob"}
    code, _, err = _run(["gateway", "add-key", "bob", "--config", str(cfg)], capsys)
    assert code == 2 and "exists" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--role", "root"], "unknown role"), (["--rate", "-1"], "--rate must be > 0")],
)
def test_add_key_rejects_bad_options_in_one_line(tmp_path, capsys, extra, message) -> None:
    code, _, err = _run(
        ["gateway", "add-key", "x", "--config", str(tmp_path / "g.yaml"), *extra], capsys
    )
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_gateway_check_writes_findings_and_fails_on_threshold(tmp_path, capsys) -> None:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text("anonymous: {role: admin}\n")
    report = tmp_path / "r.json"
    code, _, _ = _run(
        ["gateway", "check", str(cfg), "--json", str(report), "--fail-on", "high"], capsys
    )
    assert code == 1
    rules = {f["rule"] for f in json.loads(report.read_text())["findings"]}
    assert {"MLW-GW-001", "MLW-GW-002", "MLW-GW-003", "MLW-GW-004", "MLW-GW-007"} <= rules


def test_gateway_check_of_a_broken_config_is_an_error_not_a_clean_report(tmp_path, capsys) -> None:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text("keys: {alice: {hash: 'hunter2'}}\n")
    code, _, err = _run(["gateway", "check", str(cfg)], capsys)
    assert code == 2 and "sha256:<64 hex digits>" in err


def test_serve_refuses_a_malicious_pickle_and_never_runs_it(tmp_path, capsys) -> None:
    canary = tmp_path / "canary"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {canary}",))

    model = tmp_path / "model.pkl"
    model.write_bytes(pickle.dumps(Evil()))
    cfg = tmp_path / "gw.yaml"
    _run(["gateway", "add-key", "a", "--config", str(cfg)], capsys)
    code, _, err = _run(["serve", str(model), "--config", str(cfg), "--port", "0"], capsys)
    assert code != 0 and "Traceback" not in err
    assert not canary.exists()


def test_serve_a_registry_reference_without_trust_is_refused(tmp_path, capsys) -> None:
    cfg = tmp_path / "gw.yaml"
    _run(["gateway", "add-key", "a", "--config", str(cfg)], capsys)
    code, _, err = _run(
        [
            "serve",
            "digits-cnn@production",
            "--config",
            str(cfg),
            "--registry",
            str(tmp_path / "reg"),
        ],
        capsys,
    )
    assert code == 2 and "Traceback" not in err


def test_serve_without_any_key_says_how_to_make_one(tmp_path, capsys) -> None:
    code, _, err = _run(["serve", str(tmp_path / "m.pt"), "--port", "0"], capsys)
    assert code == 2 and "gateway add-key" in err


def test_serve_cli_loads_a_torchscript_file_and_answers(tmp_path, capsys) -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    torch.jit.save(torch.jit.script(net), str(tmp_path / "model.ts"))
    cfg = tmp_path / "gw.yaml"
    _, out, _ = _run(
        ["gateway", "add-key", "alice", "--config", str(cfg), "--role", "labels"], capsys
    )
    key = out.strip()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlwarden", "serve", str(tmp_path / "model.ts"), "--config", str(cfg),
         "--port", "0", "--input-shape", "1,8,8", "--input-range", "0,1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if "ready at " in line:
                url = line.split("ready at ")[1].split()[0]
            elif not line and proc.poll() is not None:
                break
        assert url is not None, "mlwarden serve did not print its URL"
        x = np.random.default_rng(0).uniform(0, 1, (3, 1, 8, 8)).astype(np.float32)
        r = httpx.post(
            f"{url}/v1/predict",
            json={"inputs": x.tolist()},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert r.status_code == 200
        assert r.json()["predictions"] == net(torch.from_numpy(x)).argmax(1).tolist()
        assert r.json()["model_version"].startswith("sha256:")
        bad = httpx.post(
            f"{url}/v1/predict",
            json={"inputs": [[2.0] * 64]},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert bad.status_code == 422
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert (tmp_path / "gateway-audit.db").exists()


def test_add_key_loads_no_model_stack(tmp_path) -> None:
    """`gateway add-key` must answer in well under a second: it may not import torch,
    scipy, FastAPI or scikit-learn (they cost it seconds; hashing a key is microseconds)."""
    import subprocess
    import sys

    cfg = tmp_path / "gw.yaml"
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from mlwarden.cli.main import app\n"
        f"r = CliRunner().invoke(app, ['gateway', 'add-key', 'ci', '--config', {str(cfg)!r}])\n"
        "assert r.exit_code == 0, r.output\n"
        "print(sorted(m for m in ('torch', 'scipy', 'fastapi', 'sklearn', 'uvicorn')"
        " if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout
    assert "ci:" in cfg.read_text()
