"""An ML-BOM of a scan: CycloneDX 1.6 JSON written with ``cyclonedx-python-lib``.

One component per file scanned: ``machine-learning-model`` for model formats, ``data``
for the rest (configs, tokenizers, text, images, arrays), each with its SHA-256 and
SHA-512, its size, and the scanner's format and verdict as ``mlwarden:*`` properties.
Every finding is a CycloneDX vulnerability (id = rule, rated with the finding's
severity, source mlwarden) that affects its file's component, so BOM tools show them
beside the inventory. Files are hashed as they are read (1 MiB at a time).

Example::

    result = scan_paths(["model_dir"])
    write_sbom(result, Path("model.cdx.json"))
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from mlwarden.supplychain.results import RULES, FileResult, ScanResult, printable

#: formats that are data (inputs, configs, tokenizers, media), not a model's weights/graph
DATA_FORMATS = frozenset(
    [
        "text",
        "json",
        "empty",
        "data",
        "unknown",
        "xml",
        "hydra-config",
        "torchserve-manifest",
        "keras-config",
        "skops-schema",
        "sentencepiece",
        "xgboost-ubj",
        "npy",
        "npz",
        "png",
        "jpeg",
        "gif",
        "tiff",
        "webp",
        "wav",
        "pdf",
        "parquet",
        "arrow",
        "flac",
        "ogg",
        "bmp",
    ]  # noqa: SIM905 (a word list)
)


def _hashes(path: str) -> tuple[str, str, int] | None:
    sha256, sha512, size = hashlib.sha256(), hashlib.sha512(), 0
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                sha256.update(chunk)
                sha512.update(chunk)
                size += len(chunk)
    except OSError:
        return None
    return sha256.hexdigest(), sha512.hexdigest(), size


def _component(f: FileResult, ref: str):  # type: ignore[no-untyped-def]
    from cyclonedx.model import HashAlgorithm, HashType, Property
    from cyclonedx.model.component import Component, ComponentType

    data = f.format.split("+")[0] in DATA_FORMATS
    props = [
        Property(name="mlwarden:format", value=f.format),
        Property(name="mlwarden:verdict", value=f.verdict.value),
    ]
    hashes = []
    digest = _hashes(f.path)
    if digest is not None:
        hashes = [
            HashType(alg=HashAlgorithm.SHA_256, content=digest[0]),
            HashType(alg=HashAlgorithm.SHA_512, content=digest[1]),
        ]
        props.append(Property(name="mlwarden:size", value=str(digest[2])))
    if f.error:
        props.append(Property(name="mlwarden:error", value=printable(f.error)))
    return Component(
        name=printable(f.path),
        type=ComponentType.DATA if data else ComponentType.MACHINE_LEARNING_MODEL,
        bom_ref=ref,
        hashes=hashes,
        properties=props,
    )


def build_bom(result: ScanResult):  # type: ignore[no-untyped-def]
    """The :class:`cyclonedx.model.bom.Bom` of a scan (components and findings)."""
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.vulnerability import (
        BomTarget,
        Vulnerability,
        VulnerabilityRating,
        VulnerabilitySeverity,
        VulnerabilitySource,
    )

    bom = Bom()
    source = VulnerabilitySource(name="mlwarden")
    for k, f in enumerate(result.files):
        ref = f"file-{k}"
        bom.components.add(_component(f, ref))
        for j, issue in enumerate(f.findings):
            shown = issue.to_dict()
            where = f" (member {shown['member']})" if shown["member"] else ""
            bom.vulnerabilities.add(
                Vulnerability(
                    bom_ref=f"{ref}-finding-{j}",
                    id=issue.rule,
                    source=source,
                    description=f"{RULES[issue.rule][0]}: {shown['message']}{where}",
                    recommendation=RULES[issue.rule][1],
                    ratings=[
                        VulnerabilityRating(
                            source=source, severity=VulnerabilitySeverity(issue.severity.value)
                        )
                    ],
                    affects=[BomTarget(ref=ref)],
                )
            )
    return bom


def write_sbom(result: ScanResult, path: Path) -> None:
    """Write the scan's CycloneDX 1.6 JSON BOM to ``path`` (validated before writing)."""
    from cyclonedx.output.json import JsonV1Dot6
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    text = JsonV1Dot6(build_bom(result)).output_as_string(indent=2)
    problem = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    if problem is not None:  # a bug of ours: never write an invalid BOM
        raise ValueError(f"the BOM does not validate against CycloneDX 1.6: {problem}")
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        out.write(text + "\n")
    os.replace(tmp, path)
