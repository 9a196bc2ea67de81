"""Whole-corpus behaviour: every malicious file flagged, no benign file flagged."""

from __future__ import annotations

from pathlib import Path

import pytest
from corpus import Case

from mlwarden.core.errors import UnsafeArtifactError
from mlwarden.supplychain import safe_load, scan_file, scan_paths


def test_malicious_corpus_is_large_and_varied(malicious: list[Case]) -> None:
    assert len(malicious) >= 60
    cats = {c.category for c in malicious}
    assert {
        "exec-builtins",
        "os-subprocess",
        "stdlib-code",
        "attr-chain",
        "nested-loader",
        "network",
        "file-write",
        "opcode-trick",
        "container",
        "keras",
        "onnx",
    } <= cats


def test_every_malicious_file_is_flagged(malicious: list[Case]) -> None:
    missed = []
    for case in malicious:
        verdict = scan_file(case.path).verdict.value
        wanted = ("unsafe",) if case.expect == "unsafe" else ("unsafe", "suspicious")
        if verdict not in wanted:
            missed.append((case.path.name, case.expect, verdict))
    assert missed == []


def test_benign_corpus_written_by_real_libraries_is_safe(benign: list[Path]) -> None:
    assert len(benign) >= 30
    flagged = []
    for path in benign:
        r = scan_file(path)
        if r.verdict.value != "safe":
            flagged.append((path.name, r.verdict.value, [i.message for i in r.findings]))
    assert flagged == []


def test_benign_formats_are_identified_by_content(benign: list[Path]) -> None:
    formats = {scan_file(p).format.split("+")[0] for p in benign}
    assert {
        "pytorch-zip",
        "pytorch-legacy",
        "torchscript",
        "torch-export",
        "pickle",
        "joblib",
        "npy",
        "npz",
        "safetensors",
        "onnx",
    } <= formats


def test_directory_scan_covers_every_file(malicious: list[Case]) -> None:
    root = malicious[0].path.parent
    result = scan_paths([root])
    assert len(result.files) == len(list(root.iterdir()))
    assert result.exit_code() == 1


def test_process_executor_gives_the_same_verdicts(
    malicious: list[Case], benign: list[Path]
) -> None:
    paths = [malicious[0].path, benign[0], malicious[-1].path]
    local = scan_paths(paths)
    pooled = scan_paths(paths, executor="process=2")
    assert [(f.path, f.verdict) for f in pooled.files] == [(f.path, f.verdict) for f in local.files]


def test_safe_load_refuses_every_malicious_file(malicious: list[Case], canary: Path) -> None:
    for case in malicious:
        with pytest.raises(UnsafeArtifactError):
            safe_load(case.path)
    assert not canary.exists()


@pytest.mark.parametrize(
    "suffix", [".pkl", ".joblib", "_state.pt", "_legacy.pt", ".npy", ".safetensors"]
)
def test_safe_load_loads_benign_files(benign: list[Path], suffix: str) -> None:
    paths = [p for p in benign if p.name.endswith(suffix)]
    assert paths
    for path in paths:
        assert safe_load(path) is not None
