"""``mlwarden demo`` step: register, sign and verify the demo model and its dataset.

The dataset (digits ``.npz``) and the TorchScript model are registered in a fresh
registry under ``out_dir/registry`` (the model with the dataset as its lineage
parent), both signed with a demo Ed25519 key written under ``out_dir/registry-keys``,
``production`` is pointed at the model, and both are verified against that key.
A clean run has no findings.
"""

from __future__ import annotations

import shutil

from mlwarden.core.demo_context import DemoContext
from mlwarden.core.findings import Report
from mlwarden.integrity.keys import generate_keypair
from mlwarden.integrity.registry import Registry, code_revision
from mlwarden.integrity.verify import verify_report


def run(ctx: DemoContext) -> Report:
    """Register + sign + verify ctx's dataset and model; returns the merged report."""
    report = Report.new(command="registry demo", seed=ctx.seed)
    root = ctx.out_dir / "registry"
    keydir = ctx.out_dir / "registry-keys"
    # the demo re-creates its registry on every run, so it keeps its own verifier memory
    state = ctx.out_dir / "registry-state"
    for folder in (root, keydir, state):  # the demo's own outputs from an earlier run
        shutil.rmtree(folder, ignore_errors=True)
    priv, pub = generate_keypair(keydir / "demo.key")
    with report.timed("integrity.register"), Registry.open(root) as reg:
        data = reg.add(
            ctx.data_path,
            name="digits-data",
            kind="dataset",
            source="scikit-learn bundled digits (UCI optdigits)",
            publisher="mlwarden demo",
            licence="CC BY 4.0",
            sign_key=priv,
        )
        model = reg.add(
            ctx.torchscript_path,
            name="digits-cnn",
            kind="model",
            parents=[data.ref],
            source="mlwarden demo training run",
            publisher="mlwarden demo",
            params={"architecture": "SmallCNN", "epochs": 15, "seed": ctx.seed},
            code_rev=code_revision(),
            sign_key=priv,
        )
        reg.set_alias(model.name, model.version, "production", sign_key=priv)
    for ref in (data.ref, "digits-cnn@production"):
        part = verify_report(ref, registry=root, trust=[pub], seed=ctx.seed, state_dir=state)
        report.merge(part, prefix=ref.replace("@", "_"))
    report.metrics["registry"] = str(root)
    report.metrics["public_key"] = str(pub)
    return report
