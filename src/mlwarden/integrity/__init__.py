"""Integrity and provenance: a signed, versioned registry of models and datasets.

Content-addressed store (:mod:`.store`), manifests (:mod:`.manifest`), Ed25519 and
ECDSA keys (:mod:`.keys`), DSSE-enveloped in-toto statements (:mod:`.dsse`), the SQLite registry
(:mod:`.registry`), verification and verified loading (:mod:`.verify`), version and
tensor diffs (:mod:`.compare`, :mod:`.tensordiff`) and bundles (:mod:`.bundle`).

Example::

    from mlwarden.integrity import Registry, verify_report, load_verified
    report = verify_report("digits@production", trust=[Path("release.key.pub")])
"""

from __future__ import annotations

from mlwarden.integrity.bundle import export_bundle, import_bundle
from mlwarden.integrity.compare import diff_versions
from mlwarden.integrity.keys import generate_keypair, load_private_key, load_public_key
from mlwarden.integrity.manifest import Manifest, build_manifest, compare_folder
from mlwarden.integrity.registry import Registry, VersionRecord, default_location
from mlwarden.integrity.verify import IntegrityError, load_verified, verify_report

__all__ = [
    "IntegrityError",
    "Manifest",
    "Registry",
    "VersionRecord",
    "build_manifest",
    "compare_folder",
    "default_location",
    "diff_versions",
    "export_bundle",
    "generate_keypair",
    "import_bundle",
    "load_private_key",
    "load_public_key",
    "load_verified",
    "verify_report",
]
