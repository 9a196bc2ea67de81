"""The benchmark pages record the settings their scripts really run (issue 22).

The evasion benchmark's docs once described an adversarial-training recipe (PGD-5, step
eps/3, 20 epochs) the code did not run; the recipe now lives in module constants, and
this test reads them (without importing the script or its peers) and looks for the
same recipe in the script's docstring and in docs/benchmarks/evasion.md.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _constants(path: Path) -> tuple[dict[str, object], str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    values = {
        t.id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
        for t in node.targets
        if isinstance(t, ast.Name)
    }
    return values, ast.get_docstring(tree) or ""


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def test_the_adversarial_training_recipe_in_docs_is_the_one_the_code_runs() -> None:
    c, doc = _constants(ROOT / "benchmarks" / "evasion_vs_peers.py")
    recipe = (
        f"PGD-{c['ADV_STEPS']} (step eps/{c['ADV_STEP_DIVISOR']}) adversarial training, "
        f"{c['ADV_EPOCHS']} epochs of which {c['ADV_WARMUP']} clean warm-up"
    )
    page = _flat((ROOT / "docs" / "benchmarks" / "evasion.md").read_text(encoding="utf-8"))
    assert recipe in _flat(doc)
    assert recipe in page
    assert f"Linf eps = {c['EPS']}" in _flat(doc) and f"Linf eps = {c['EPS']}" in page
    assert "PGD-5, step eps/3, 20 epochs" not in page  # the recipe the code never ran


def test_the_evasion_page_compares_ensembles_with_the_peers_ensembles() -> None:
    page = _flat((ROOT / "docs" / "benchmarks" / "evasion.md").read_text(encoding="utf-8"))
    for name in ('AutoAttack(version="standard")', "ART's `AutoAttack`", "per-sample union"):
        assert name in page, name
    _, doc = _constants(ROOT / "benchmarks" / "evasion_vs_peers.py")
    for name in ('AutoAttack(version="standard")', "ART's ``AutoAttack``", "per-sample union"):
        assert name in _flat(doc), name
