"""``mlwarden scan``: output formats and exit statuses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from corpus import call2

from mlwarden.cli.main import main


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(["scan", *args])
    return int(exc.value.code or 0), capsys.readouterr().out


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    good = tmp_path / "good.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), good)
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(call2("os", "system", "id"))
    odd = tmp_path / "odd.pkl"
    odd.write_bytes(call2("mypkg", "Net"))
    broken = tmp_path / "broken.pkl"
    broken.write_bytes(b"\x80\x02(K\x01")
    return {"good": good, "bad": bad, "odd": odd, "broken": broken}


def test_json_output_matches_the_documented_schema(files: dict[str, Path], capsys) -> None:
    code, out = run([str(files["bad"]), str(files["good"]), "--format", "json"], capsys)
    doc = json.loads(out)
    assert code == 1
    assert set(doc) == {"schema_version", "files"}
    bad = doc["files"][0]
    assert set(bad) == {"path", "format", "verdict", "findings"}
    assert bad["verdict"] == "unsafe"
    assert set(bad["findings"][0]) == {"rule", "severity", "message", "global", "offset", "member"}
    assert bad["findings"][0]["global"] == "os.system"
    assert doc["files"][1]["verdict"] == "safe"


def test_exit_0_when_every_file_is_safe(files: dict[str, Path], capsys) -> None:
    assert run([str(files["good"])], capsys)[0] == 0


def test_exit_1_when_suspicious(files: dict[str, Path], capsys) -> None:
    assert run([str(files["odd"])], capsys)[0] == 1


def test_allow_flag_clears_a_suspicious_name(files: dict[str, Path], capsys) -> None:
    assert run([str(files["odd"]), "--allow", "mypkg.Net"], capsys)[0] == 0


def test_policy_file_clears_a_suspicious_name(
    files: dict[str, Path], tmp_path: Path, capsys
) -> None:
    pol = tmp_path / "p.json"
    pol.write_text('{"allow": ["mypkg.*"]}')
    assert run([str(files["odd"]), "--policy", str(pol)], capsys)[0] == 0


def test_exit_2_when_a_file_cannot_be_scanned_and_none_unsafe(
    files: dict[str, Path], capsys
) -> None:
    assert run([str(files["broken"]), str(files["odd"])], capsys)[0] == 2


def test_exit_1_when_unsafe_even_with_an_unscannable_file(files: dict[str, Path], capsys) -> None:
    assert run([str(files["broken"]), str(files["bad"])], capsys)[0] == 1


def test_bad_format_option_is_a_usage_error(files: dict[str, Path], capsys) -> None:
    assert run([str(files["good"]), "--format", "xml"], capsys)[0] == 2


def test_text_output_names_the_verdict_and_rule(files: dict[str, Path], capsys) -> None:
    code, out = run([str(files["bad"])], capsys)
    assert "UNSAFE" in out and "MLW-SCN-001" in out and "os.system" in out


def test_sarif_output_is_sarif(files: dict[str, Path], capsys) -> None:
    code, out = run([str(files["bad"]), "--format", "sarif"], capsys)
    doc = json.loads(out)
    assert doc["version"] == "2.1.0"
    assert code == 1


def test_report_options_write_files(files: dict[str, Path], tmp_path: Path, capsys) -> None:
    out_json = tmp_path / "r.json"
    run([str(files["bad"]), "--json", str(out_json), "-q"], capsys)
    rep = json.loads(out_json.read_text())
    f = rep["findings"][0]
    assert f["rule"] == "MLW-SCN-001"
    assert "AML.T0011.000" in f["atlas"] and "AML.M0016" in f["mitigations"]


def test_console_script_runs_without_traceback(files: dict[str, Path]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mlwarden", "scan", str(files["broken"]) + "-missing"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
