"""Regenerate ``src/mlwarden/report/rules.json`` from the finding catalogue.

SARIF describes each rule once per run (name, short and full description, help);
those texts must not change with the figures of one run, so they come from
``docs/findings.md``, the catalogue a test keeps complete. Usage::

    python docs/gen_rules.py          # rewrite rules.json
    python docs/gen_rules.py --check  # exit 1 when rules.json is stale
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CATALOGUE = ROOT / "docs" / "findings.md"
OUT = ROOT / "src" / "mlwarden" / "report" / "rules.json"
ROW = re.compile(r"^\|\s*(MLW-[A-Z]{2,5}-\d{3})\s*\|(.*)\|\s*$")


def _plain(text: str) -> str:
    text = re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", text)
    return text.replace("`", "").replace("**", "").strip()


def parse(markdown: str) -> dict[str, dict[str, str]]:
    rules: dict[str, dict[str, str]] = {}
    header: list[str] = []
    for line in markdown.splitlines():
        if line.startswith("| rule |"):
            header = [c.strip() for c in line.strip().strip("|").split("|")]
            continue
        m = ROW.match(line)
        if not m or not header:
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        row = dict(zip(header, cells, strict=False))
        meaning = _plain(row.get("what it means", ""))
        first = re.split(r"(?<=[.!?])\s", meaning, maxsplit=1)[0]
        rules[m.group(1)] = {
            "short": first,
            "full": meaning,
            "help": _plain(row.get("what to do", "")),
        }
    return rules


def render() -> str:
    return json.dumps(parse(CATALOGUE.read_text(encoding="utf-8")), indent=1, sort_keys=True) + "\n"


def main() -> int:
    text = render()
    if "--check" in sys.argv[1:]:
        current = OUT.read_text(encoding="utf-8") if OUT.exists() else ""
        if current != text:
            print(f"{OUT} is stale; run python docs/gen_rules.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
