"""Threat modelling: a system description -> the ATLAS threats that apply -> the checks.

Public functions::

    threats_report(system, rules=None, seed=0) -> Report   # one finding per threat
    assess(system) -> list[Threat]
    load_system(path) -> SystemDescription
    write_plan(system, threats, system_path, plan_path) -> Path
"""

from mlwarden.threats.engine import Threat, assess, threats_report
from mlwarden.threats.plan import write_plan
from mlwarden.threats.rules import load_rules
from mlwarden.threats.schema import SystemDescription, load_system, parse_system

__all__ = [
    "SystemDescription",
    "Threat",
    "assess",
    "load_rules",
    "load_system",
    "parse_system",
    "threats_report",
    "write_plan",
]
