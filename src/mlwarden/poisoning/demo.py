"""Demo step: audit the demo training data and look for poisoning through the demo model."""

from __future__ import annotations

from mlwarden.core.demo_context import DemoContext
from mlwarden.core.findings import Report
from mlwarden.poisoning.assess import data_report


def run(ctx: DemoContext) -> Report:
    """Label issues, duplicates, outliers, activation clustering and spectral signatures
    on ``ctx.train`` through ``ctx.model`` (~6 s; Neural Cleanse is left to ``backdoor``)."""
    return data_report(ctx.train, model=ctx.model, seed=ctx.seed, neural_cleanse_epochs=0)
