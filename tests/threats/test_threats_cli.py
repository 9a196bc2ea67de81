"""``mlwarden threats`` on the command line: example, JSON findings, plan, init, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from mlwarden.audit.jobs import build_jobs
from mlwarden.audit.plan import load_plan


def subprocess_mlwarden(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlwarden", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_example_json_and_plan(cli, tmp_path: Path) -> None:
    ex = cli("threats", "--example", cwd=tmp_path)
    assert ex.returncode == 0
    (tmp_path / "system.yaml").write_text(ex.stdout)
    res = cli(
        "threats", "system.yaml", "--json", "t.json", "--plan", "audit/plan.yaml", cwd=tmp_path
    )
    assert res.returncode == 0, res.stderr
    assert "AML.T0024.000" in res.stdout  # membership inference, with its ATLAS id
    report = json.loads((tmp_path / "t.json").read_text())
    rules = {f["rule"]: f for f in report["findings"]}
    assert "AML.T0010.003" in rules["MLW-THR-001"]["atlas"]
    assert "AML.TA0004" in rules["MLW-THR-001"]["atlas"]  # tactic from the catalogue
    plan = yaml.safe_load((tmp_path / "audit" / "plan.yaml").read_text())
    kinds = [c["check"] for c in plan["checks"]]
    assert kinds[0] == "threats"
    assert {"scan", "data", "evasion", "privacy", "extract", "backdoor"} <= set(kinds)
    assert plan["checks"][0]["system"] == "../system.yaml"


def test_plan_from_a_system_with_artifacts_runs_as_written(cli, tmp_path: Path) -> None:
    ex = cli("threats", "--example", cwd=tmp_path).stdout
    raw = yaml.safe_load(ex)
    raw["artifacts"] = {"datasets": {"train": "d.npz"}}
    (tmp_path / "d.npz").write_bytes(b"")
    (tmp_path / "system.yaml").write_text(yaml.safe_dump(raw))
    res = cli("threats", "system.yaml", "--plan", "plan.yaml", "-q", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    plan = load_plan(tmp_path / "plan.yaml")
    assert plan.artifacts.datasets["train"] == "d.npz"
    assert plan.artifacts.models["model"].startswith("CHANGE-ME")


def test_generated_plan_loads_and_resolves_when_files_exist(cli, tmp_path: Path) -> None:
    (tmp_path / "system.yaml").write_text(cli("threats", "--example", cwd=tmp_path).stdout)
    cli("threats", "system.yaml", "--plan", "plan.yaml", "-q", cwd=tmp_path)
    plan = load_plan(tmp_path / "plan.yaml")
    threats_only = plan.model_copy(update={"checks": plan.checks[:1]})
    (job,) = build_jobs(threats_only)
    assert job.kwargs["system"] == (tmp_path / "system.yaml").resolve()


def test_fail_on_high_exits_1(cli, tmp_path: Path) -> None:
    (tmp_path / "system.yaml").write_text(cli("threats", "--example", cwd=tmp_path).stdout)
    res = cli("threats", "system.yaml", "--fail-on", "high", "-q", cwd=tmp_path)
    assert res.returncode == 1


def test_malformed_system_is_one_line_exit_2(tmp_path: Path) -> None:
    (tmp_path / "system.yaml").write_text("name: x\nmodality: hologram\n")
    res = subprocess_mlwarden("threats", "system.yaml", cwd=tmp_path)  # the real entry point
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "field" in lines[0] and "Traceback" not in res.stderr


def test_init_asks_and_writes_a_valid_system(cli, tmp_path: Path) -> None:
    answers = [
        "my-api", "a test system", "tabular",  # name, description, modality
        "in-house", "black-box", "", "yes", "n", "onnx",  # model
        "own,user-provided", "yes", "personal", "no",  # data
        "team", "team", "",  # access
        "public-api", "labels", "yes", "yes", "yes", "y",  # deployment
    ]  # fmt: skip
    res = cli("threats", "--init", "sys.yaml", cwd=tmp_path, input="\n".join(answers) + "\n")
    assert res.returncode == 0, res.stderr + res.stdout
    raw = yaml.safe_load((tmp_path / "sys.yaml").read_text())
    assert raw["data"]["sources"] == ["own", "user-provided"]
    assert raw["deployment"]["retraining_on_user_feedback"] is True
    assert raw["deployment"]["outputs"] == "labels"
    assert "MLW-THR-005" in res.stdout  # retraining on feedback


_ANSWERS = [
    "my-api", "a test system", "tabular",  # name, description, modality
    "in-house", "black-box", "", "yes", "n", "onnx",  # model
    "own,user-provided", "yes", "personal", "no",  # data
    "team", "team", "",  # access
    "public-api", "labels", "yes", "yes", "yes", "y",  # deployment
]  # fmt: skip


def test_init_asks_again_on_an_invalid_answer(cli, tmp_path: Path) -> None:
    answers = list(_ANSWERS)
    answers[9:10] = ["", "sideways", "own,user-provided"]  # empty, then not a choice
    answers[2:3] = ["spreadsheet", "tabular"]  # not a modality
    res = cli("threats", "--init", "sys.yaml", cwd=tmp_path, input="\n".join(answers) + "\n")
    assert res.returncode == 0, res.stderr + res.stdout
    assert "please answer again" in res.stdout and "not a choice: sideways" in res.stdout
    raw = yaml.safe_load((tmp_path / "sys.yaml").read_text())
    assert raw["data"]["sources"] == ["own", "user-provided"] and raw["modality"] == "tabular"


def test_init_interrupted_keeps_the_answers_and_resumes(cli, tmp_path: Path) -> None:
    first = cli("threats", "--init", "sys.yaml", cwd=tmp_path, input="\n".join(_ANSWERS[:11]))
    assert first.returncode == 130, first.stderr
    partial = tmp_path / "sys.yaml.partial"
    assert "run --init again to resume" in first.stderr and partial.is_file()
    kept = yaml.safe_load(partial.read_text())
    assert kept["name"] == "my-api" and kept["data"]["sources"] == ["own", "user-provided"]
    assert not (tmp_path / "sys.yaml").exists()
    rest = "\n".join(_ANSWERS[11:]) + "\n"  # only what was not answered is asked
    second = cli("threats", "--init", "sys.yaml", cwd=tmp_path, input=rest)
    assert second.returncode == 0, second.stderr + second.stdout
    assert "resuming from" in second.stderr and not partial.exists()
    raw = yaml.safe_load((tmp_path / "sys.yaml").read_text())
    assert raw["name"] == "my-api" and raw["deployment"]["outputs"] == "labels"


def test_init_without_prompts_from_an_answers_file_and_flags(cli, tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(cli("threats", "--example", cwd=tmp_path).stdout)
    res = cli(
        "threats", "--init", "sys.yaml", "--answers", "a.yaml",
        "--set", "deployment.outputs=labels", "--set", "data.sources=own,scraped", "-q",
        cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    raw = yaml.safe_load((tmp_path / "sys.yaml").read_text())
    assert raw["deployment"]["outputs"] == "labels" and raw["data"]["sources"] == ["own", "scraped"]
    only_flags = cli("threats", "--init", "x.yaml", "--set", "name=x", cwd=tmp_path)
    assert only_flags.returncode == 2 and "needs an answer for: modality" in only_flags.stderr
    bad = cli(
        "threats", "--init", "x.yaml", "--answers", "a.yaml", "--set", "colour=red", cwd=tmp_path
    )
    assert bad.returncode == 2 and "--set colour: not a field" in bad.stderr
    wrong = cli(
        "threats",
        "--init",
        "y.yaml",
        "--answers",
        "a.yaml",
        "--set",
        "modality=smell",
        cwd=tmp_path,
    )
    assert (
        wrong.returncode == 2 and "modality" in wrong.stderr and not (tmp_path / "y.yaml").exists()
    )
