"""Foundation overheads: the Target wrapper against raw torch and IBM ART, and report rendering.

1. Prediction throughput on the same SmallCNN (bundled digits, tiled to ``--n`` inputs,
   batches of 256, one CPU thread): raw ``torch.no_grad`` forward, mlwarden's
   ``TorchTarget.predict`` (batching, query counting, budget checks), and ART 1.x's
   ``PyTorchClassifier.predict``. Median of ``--repeats`` interleaved runs.
2. Report rendering: a report with ``--findings`` findings (evidence, ATLAS ids) and
   three inline plots, written as JSON, HTML, SARIF 2.1.0 and JUnit XML; time per
   format (median) and file size, plus JSON Schema validation time.

Run (2 cores)::

    timeout 900 .venv/bin/python benchmarks/foundation_vs_peers.py --n 20000 --findings 500 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_targets(n: int, repeats: int) -> None:
    from art.estimators.classification import PyTorchClassifier

    from mlwarden.core.data import bundled
    from mlwarden.core.models import SmallCNN
    from mlwarden.core.target import TorchTarget

    ds = bundled("digits")
    x = np.resize(ds.x, (n, *ds.x.shape[1:])).astype(np.float32)
    torch.manual_seed(0)
    model = SmallCNN(in_channels=1, num_classes=10, image_size=8).eval()
    target = TorchTarget(model, batch_size=256)
    art = PyTorchClassifier(
        model=model,
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=ds.x.shape[1:],
        nb_classes=10,
        clip_values=(0.0, 1.0),
        device_type="cpu",
    )

    def raw() -> np.ndarray:
        outs = []
        with torch.no_grad():
            for i in range(0, n, 256):
                outs.append(model(torch.from_numpy(x[i : i + 256])).numpy())
        return np.concatenate(outs)

    ours = target.predict(x)
    np.testing.assert_allclose(ours, raw(), atol=1e-5)
    np.testing.assert_allclose(art.predict(x, batch_size=256), ours, atol=1e-5)

    calls: dict[str, Callable[[], object]] = {
        "raw torch": raw,
        "mlwarden TorchTarget": lambda: target.predict(x),
        "ART": lambda: art.predict(x, batch_size=256),
    }
    runs: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for r in range(repeats):  # interleaved, order rotated, so load changes hit all alike
        for name in names[r % 3 :] + names[: r % 3]:
            runs[name].append(_median_seconds(calls[name], 1))
    base = statistics.median(runs["raw torch"])
    print(f"\n## Prediction throughput, SmallCNN on {n} digits inputs, batch 256, 1 thread")
    print("| wrapper | median s | inputs/s | time vs raw torch |")
    print("|---|---|---|---|")
    for name, times in runs.items():
        med = statistics.median(times)
        print(f"| {name} | {med:.3f} | {n / med:,.0f} | {med / base:.2f}x |")
    print(
        f"queries counted by TorchTarget: {target.queries} (= {repeats + 1} x {n}); ART counts none"
    )


def bench_reports(findings: int, repeats: int) -> None:
    from mlwarden.core.findings import Finding, Report, Severity
    from mlwarden.report.html import write_html
    from mlwarden.report.json_report import validate_report_json, write_json
    from mlwarden.report.junit import write_junit
    from mlwarden.report.plots import histogram_plot, line_plot, roc_plot
    from mlwarden.report.sarif import write_sarif

    rng = np.random.default_rng(0)
    report = Report.new("bench", seed=0)
    severities = list(Severity)
    for i in range(findings):
        report.add(
            Finding(
                rule=f"MLW-BEN-{i % 1000:03d}",
                title=f"finding {i}",
                severity=severities[i % len(severities)],
                atlas=["AML.T0043.000", "AML.T0015"],
                mitigations=["AML.M0003"],
                description="A description of what was found and why it matters.",
                recommendation="One concrete thing to do.",
                evidence={"score": float(rng.random()), "values": rng.random(8).tolist()},
                artifact=f"models/model_{i % 7}.pt",
                check=f"check{i % 10}",
            )
        )
        if i % 50 == 0:
            with report.timed(f"check{i % 10}"):
                pass
    t0 = time.perf_counter()
    report.images["curve"] = line_plot({"a": (np.arange(10), rng.random(10))})
    report.images["roc"] = roc_plot({"a": (np.linspace(0, 1, 50), np.linspace(0, 1, 50) ** 0.5)})
    report.images["hist"] = histogram_plot({"a": rng.random(500), "b": rng.random(500)})
    plot_seconds = (time.perf_counter() - t0) / 3

    out = Path(tempfile.mkdtemp())
    writers: dict[str, tuple[Callable[[Report, Path], None], Path]] = {
        "JSON": (write_json, out / "r.json"),
        "HTML": (write_html, out / "r.html"),
        "SARIF 2.1.0": (write_sarif, out / "r.sarif"),
        "JUnit XML": (lambda r, p: write_junit(r, p, fail_on=Severity.HIGH), out / "r.xml"),
    }
    print(f"\n## Report rendering, {findings} findings + 3 inline plots")
    print(f"plot helper: {plot_seconds * 1000:.0f} ms per PNG figure")
    print("| format | median ms | size KiB |")
    print("|---|---|---|")
    for name, (write, path) in writers.items():
        med = _median_seconds(lambda w=write, p=path: w(report, p), repeats)
        print(f"| {name} | {med * 1000:.0f} | {path.stat().st_size / 1024:.0f} |")
    import json

    data = json.loads((out / "r.json").read_text())
    med = _median_seconds(lambda: validate_report_json(data), repeats)
    print(f"| JSON Schema validation | {med * 1000:.0f} | - |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="inputs for the throughput test")
    parser.add_argument("--findings", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    bench_targets(args.n, args.repeats)
    bench_reports(args.findings, args.repeats)


if __name__ == "__main__":
    main()
