"""The threat model of the bundled demo system (a step of ``mlwarden demo``)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

from mlwarden.core.demo_context import DemoContext
from mlwarden.core.findings import Report
from mlwarden.threats.engine import threats_report
from mlwarden.threats.schema import SystemDescription, parse_system


def demo_system_text() -> str:
    """The demo system description as YAML (``mlwarden demo`` writes it to DIR/system.yaml)."""
    return (
        resources.files("mlwarden.threats").joinpath("demo_system.yaml").read_text(encoding="utf-8")
    )


def demo_system() -> SystemDescription:
    return parse_system(yaml.safe_load(demo_system_text()), "demo_system.yaml")


def write_demo_system(out_dir: Path) -> Path:
    path = out_dir / "system.yaml"
    path.write_text(demo_system_text(), encoding="utf-8")
    return path


def run(ctx: DemoContext) -> Report:
    """Threat findings (MLW-THR-NNN) for the demo system."""
    return threats_report(demo_system(), seed=ctx.seed)
