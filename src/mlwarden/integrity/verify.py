"""Verify a registered version: signature, signed statement, stored bytes, deployed folder.

``verify_report`` re-hashes every file of a version (from the object store and, when
given, from a deployed folder), checks the DSSE signature against trusted Ed25519 or ECDSA
public keys and compares the signed in-toto statement with the registry's record.
When the ref names an alias, the signed alias move is checked too. Every problem
is a Finding (rules MLW-INT-001..012); a clean version has none.

ATLAS: AML.T0010.002/.003 (supply-chain compromise of data / models), AML.T0018
(Manipulate AI Model), AML.T0058 / AML.T0019 (Publish Poisoned Models / Datasets).
Mitigations: AML.M0013 Code Signing, AML.M0014 Verify AI Artifacts, AML.M0023 AI Bill
of Materials, AML.M0025 Maintain AI Dataset Provenance.

Example::

    report = verify_report("digits@production", trust=[Path("release.key.pub")])
    model = load_verified("digits@production", trust=[Path("release.key.pub")])
"""

from __future__ import annotations

import importlib
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlwarden.core.errors import UserError
from mlwarden.core.findings import Finding, Report, Severity
from mlwarden.integrity.dsse import (
    ALIAS_PREDICATE_TYPE,
    EnvelopeError,
    SignatureError,
    parse_envelope,
    statement_manifest,
    unverified_statement,
    verify_envelope,
)
from mlwarden.integrity.freshness import RememberedState
from mlwarden.integrity.keys import VerifyingKey, key_id, trusted_keys
from mlwarden.integrity.manifest import Manifest, UnsafeManifestError, compare_folder
from mlwarden.integrity.registry import (
    KINDS,
    Registry,
    VersionRecord,
    parse_ref,
    record_problems,
)

CHECK = "integrity.verify"


class IntegrityError(UserError):
    """A version failed verification, so it was not loaded."""


def _atlas(kind: str) -> list[str]:
    if kind == "dataset":
        return ["AML.T0010.002", "AML.T0019"]
    if kind == "model":
        return ["AML.T0010.003", "AML.T0018", "AML.T0058"]
    return ["AML.T0010"]


def _provenance_mitigations(kind: str) -> list[str]:
    return ["AML.M0023", "AML.M0025"] if kind == "dataset" else ["AML.M0023"]


def _names(files: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(files[:limit])
    return shown + (f" and {len(files) - limit} more" if len(files) > limit else "")


class _Findings:
    """Builds this module's findings for one version."""

    def __init__(self, rec: VersionRecord, report: Report) -> None:
        self.rec = rec
        self.report = report

    def add(
        self,
        rule: str,
        title: str,
        severity: Severity,
        mitigations: list[str],
        description: str,
        recommendation: str,
        evidence: dict[str, Any] | None = None,
    ) -> None:
        self.report.add(
            Finding(
                rule=rule,
                title=title,
                severity=severity,
                atlas=_atlas(self.rec.kind),
                mitigations=mitigations,
                description=description,
                recommendation=recommendation,
                evidence={"ref": self.rec.ref, **(evidence or {})},
                artifact=self.rec.ref,
                check=CHECK,
                owasp=["ML06"],
            )
        )

    def files(self, modified: list[str], missing: list[str], extra: list[str], where: str) -> None:
        ref = self.rec.ref
        if modified:
            self.add(
                "MLW-INT-001",
                f"{ref}: {len(modified)} file(s) modified in {where}: {_names(modified)}",
                Severity.CRITICAL,
                ["AML.M0014"],
                f"These files no longer hash to the SHA-256 recorded for {ref}: "
                + ", ".join(modified),
                f"Do not use this copy. Restore it with 'mlwarden registry rollback' or "
                f"'--restore', and find out who changed {where}.",
                {"files": modified, "where": where},
            )
        if missing:
            self.add(
                "MLW-INT-002",
                f"{ref}: {len(missing)} file(s) missing from {where}: {_names(missing)}",
                Severity.HIGH,
                ["AML.M0014"],
                f"These files of {ref} are missing: " + ", ".join(missing),
                "Restore the exact version (registry rollback --restore DIR) before use.",
                {"files": missing, "where": where},
            )
        if extra:
            self.add(
                "MLW-INT-003",
                f"{ref}: {len(extra)} unexpected file(s) in {where}: {_names(extra)}",
                Severity.HIGH,
                ["AML.M0014"],
                f"These files are not part of {ref} (a planted file can be loaded by a "
                "framework that picks up everything in a folder): " + ", ".join(extra),
                "Remove the extra files or register them as a new version.",
                {"files": extra, "where": where},
            )

    def links(self, linked: list[str], where: str) -> None:
        self.add(
            "MLW-INT-014",
            f"{self.rec.ref}: {len(linked)} linked file(s) in {where}: {_names(linked)}",
            Severity.HIGH if all("hard-linked" in n for n in linked) else Severity.CRITICAL,
            ["AML.M0014"],
            "A symbolic link can point anywhere, and a hard link is a second name through "
            "which someone else can change the bytes after they were checked: what is "
            "loaded may not be what was verified. Linked: " + ", ".join(linked),
            "Replace the links with real copies (registry rollback --restore DIR writes "
            "fresh files) and find out who made them.",
            {"files": linked, "where": where},
        )


def _load_trust(trust: Sequence[Path | VerifyingKey]) -> list[VerifyingKey]:
    return trusted_keys(trust)


def _check_signature(
    rec: VersionRecord, keys: list[VerifyingKey], out: _Findings
) -> tuple[Manifest | None, dict[str, Any]]:
    """Signature findings; the manifest to trust for content checks (None: unusable)."""
    info: dict[str, Any] = {"signed": rec.envelope is not None, "verified": False}
    ref = rec.ref
    if rec.envelope is None:
        out.add(
            "MLW-INT-004",
            f"{ref} is not signed" + (" but a trusted signature is required" if keys else ""),
            Severity.HIGH if keys else Severity.MEDIUM,
            ["AML.M0013", "AML.M0014"],
            "Nothing proves who published this version or that its record was not rewritten: "
            "anyone with write access to the registry can change an unsigned entry.",
            "Register it again with --sign KEYFILE (mlwarden keys generate KEYFILE) and "
            "verify with --trust KEYFILE.pub.",
        )
        return rec.manifest, info
    try:
        if keys:
            statement, signer = verify_envelope(rec.envelope, keys)
            info.update(verified=True, signer=signer)
        else:
            statement = unverified_statement(rec.envelope)
            _, pairs = parse_envelope(rec.envelope)
            info["keyids"] = [k for k, _ in pairs]
            out.add(
                "MLW-INT-005",
                f"{ref} is signed, but no trusted key was given to check the signature",
                Severity.MEDIUM,
                ["AML.M0013"],
                "Without --trust the signature proves nothing: anyone can sign with their own key.",
                "Pass --trust PUBKEY with the publisher's public key (KEYFILE.pub).",
                {"keyids": info["keyids"]},
            )
    except SignatureError as exc:
        trusted = {key_id(k) for k in keys}
        info["keyids"] = exc.keyids
        if trusted.isdisjoint(exc.keyids):
            out.add(
                "MLW-INT-005",
                f"{ref} is signed by a key that is not trusted",
                Severity.HIGH,
                ["AML.M0013", "AML.M0014"],
                f"Signer key id(s) {', '.join(k[:16] for k in exc.keyids)} are not among the "
                f"{len(keys)} trusted key(s). Anyone can sign; only a trusted signer vouches "
                "for the content.",
                "Find out who published this version; trust its key only if you trust them.",
                {"keyids": exc.keyids, "trusted": sorted(trusted)},
            )
        else:
            out.add(
                "MLW-INT-006",
                f"{ref}: the signature does not verify (forged or altered envelope)",
                Severity.CRITICAL,
                ["AML.M0013", "AML.M0014"],
                "The envelope names a trusted key, but its signature over the DSSE PAE of the "
                "payload is invalid: the signed statement was changed after signing.",
                "Do not use this version; restore the registry from a trusted copy.",
                {"keyids": exc.keyids},
            )
        return None, info
    except EnvelopeError as exc:
        out.add(
            "MLW-INT-006",
            f"{ref}: the signature envelope is malformed",
            Severity.CRITICAL,
            ["AML.M0013", "AML.M0014"],
            f"The DSSE envelope or its in-toto statement cannot be parsed: {exc}",
            "Do not use this version; re-register and sign it.",
        )
        return None, info
    except UnsafeManifestError as exc:
        out.add(
            "MLW-INT-007",
            f"{ref}: the signed manifest names an unsafe path",
            Severity.CRITICAL,
            ["AML.M0014"],
            f"{exc}. Restoring or checking such a manifest could write or read outside "
            "the model folder.",
            "Do not restore or load this version.",
        )
        return None, info
    signed = statement_manifest(statement)
    record = statement["predicate"].get("mlwarden", {})
    info["record"] = record
    problems = []
    if signed.to_json() != rec.manifest.to_json():
        problems.append("file list or digests")
    if record != rec.record:
        changed = sorted(
            k for k in set(record) | set(rec.record) if record.get(k) != rec.record.get(k)
        )
        problems.append("record fields " + ", ".join(changed))
    if record.get("name") != rec.name or record.get("version") != rec.version:
        problems.append(f"signed for {record.get('name')}@{record.get('version')}")
    if record.get("kind") != rec.kind:
        problems.append(f"kind {rec.kind!r} (signed: {record.get('kind')!r})")
    if problems:
        out.add(
            "MLW-INT-008",
            f"{ref}: the registry entry disagrees with its signed statement",
            Severity.CRITICAL,
            ["AML.M0013", "AML.M0014"],
            "The stored entry was changed after it was signed (" + "; ".join(problems) + ").",
            "Trust only the signed statement: restore the registry database from a trusted copy.",
            {"differences": problems},
        )
    return signed, info


def _check_alias(
    reg: Registry,
    rec: VersionRecord,
    alias: str,
    keys: list[VerifyingKey],
    out: _Findings,
) -> dict[str, Any]:
    """Was ``NAME@alias`` moved to this version by a trusted, signed move?"""
    ref = f"{rec.name}@{alias}"
    found = reg.alias_envelope(rec.name, alias)
    envelope = found[1] if found else None
    info: dict[str, Any] = {"alias": alias, "signed": envelope is not None, "verified": False}
    mitigations = ["AML.M0013", "AML.M0014"]
    if envelope is None:
        out.add(
            "MLW-INT-012",
            f"{ref} was moved to version {rec.version} without a signature",
            Severity.HIGH if keys else Severity.LOW,
            mitigations,
            "Anyone with write access to the registry can point this alias at another "
            "(older, vulnerable or poisoned) signed version without being noticed.",
            f"Move aliases with a key: mlwarden registry alias {rec.ref} {alias} --sign KEYFILE.",
        )
        return info
    if not keys:
        return info  # MLW-INT-005 already says nothing was checked against a trusted key
    try:
        statement, signer = verify_envelope(envelope, keys, ALIAS_PREDICATE_TYPE)
    except SignatureError as exc:
        untrusted = {key_id(k) for k in keys}.isdisjoint(exc.keyids)
        out.add(
            "MLW-INT-012",
            f"{ref}: the alias move is "
            + (
                "signed by an untrusted key"
                if untrusted
                else "signed, but the signature is invalid"
            ),
            Severity.HIGH if untrusted else Severity.CRITICAL,
            mitigations,
            "Only a trusted signer may decide which version an alias serves.",
            "Find out who moved the alias; move it again with a trusted key.",
            {"keyids": exc.keyids},
        )
        return info
    except EnvelopeError as exc:
        out.add(
            "MLW-INT-012",
            f"{ref}: the alias signature is malformed",
            Severity.CRITICAL,
            mitigations,
            str(exc),
            "Move the alias again with a trusted key.",
        )
        return info
    p = statement["predicate"]
    claimed = (p.get("name"), p.get("alias"), p.get("version"), p.get("manifest_digest"))
    actual = (rec.name, alias, rec.version, rec.manifest_digest)
    if claimed != actual:
        out.add(
            "MLW-INT-012",
            f"{ref} points at version {rec.version}, but its signed move says version "
            f"{p.get('version')}",
            Severity.CRITICAL,
            mitigations,
            "The alias row was rewritten after the move was signed (or the signature was "
            "copied from another alias).",
            "Do not serve this alias; restore the registry database from a trusted copy.",
            {"signed": dict(p)},
        )
        return info
    info.update(verified=True, signer=signer, signed_at=p.get("when"), signed_by=p.get("who"))
    return info


def _check_record(rec: VersionRecord, out: _Findings) -> None:
    problems = record_problems(rec, envelope=False)  # _check_signature compares the statement
    if problems:
        out.add(
            "MLW-INT-008",
            f"{rec.ref}: the stored entry disagrees with itself ({'; '.join(problems)})",
            Severity.CRITICAL,
            ["AML.M0014"],
            "The registry database was edited outside mlwarden: "
            + "; ".join(problems)
            + ". Only the signed statement decides what this version is.",
            "Restore the registry database from a trusted copy.",
            {"differences": problems},
        )
    forced = rec.record.get("forced")
    if forced:
        out.add(
            "MLW-INT-009",
            f"{rec.ref} was registered although the model-file scanner refused it",
            Severity.HIGH,
            ["AML.M0014"],
            f"Files refused by the scanner: {rec.record.get('scan', {}).get('refused')}. "
            f"Reason given: {forced.get('reason')!r}.",
            "Load it only in a sandbox; replace pickle-based files with safetensors or ONNX.",
            {"forced": forced, "scan": rec.record.get("scan")},
        )


def _check_lineage(
    reg: Registry, rec: VersionRecord, record: dict[str, Any], out: _Findings
) -> None:
    for parent in list((record.get("lineage") or {}).get("parents") or []):
        pref = f"{parent['name']}@{parent['version']}"
        try:
            current = reg.get(parent["name"], int(parent["version"]))
        except UserError:
            current = None
        if current is None or current.manifest_digest != parent["manifest_digest"]:
            out.add(
                "MLW-INT-010",
                f"{rec.ref}: lineage parent {pref} is "
                + (
                    "not in this registry"
                    if current is None
                    else "not the content it was built from"
                ),
                Severity.LOW if current is None else Severity.HIGH,
                ["AML.M0023", "AML.M0025"],
                f"{rec.ref} records that it came from {pref} with manifest digest "
                f"{parent['manifest_digest'][:16]}; the registry "
                + ("has no such version." if current is None else "now holds other content."),
                "Find out what happened to the parent version before trusting this one.",
                {"parent": parent},
            )


def _check_provenance(rec: VersionRecord, record: dict[str, Any], out: _Findings) -> None:
    prov = record.get("provenance") or {}
    if not prov.get("source") and not prov.get("publisher"):
        out.add(
            "MLW-INT-011",
            f"{rec.ref} has no recorded source or publisher",
            Severity.LOW,
            _provenance_mitigations(rec.kind),
            "Nothing records where this artefact came from, so a compromised source cannot "
            "be traced back to the versions it affected.",
            "Register versions with --source (and --publisher, --licence).",
        )


def _check_store(reg: Registry, content: Manifest, out: _Findings) -> dict[str, list[str]]:
    """Re-hash every stored object (no links followed); name modified, missing, linked files."""
    entries = list(content.files.items())
    results = reg.store.inspect_many([e.digest for _, e in entries])
    found: dict[str, list[str]] = {"modified": [], "missing": [], "linked": []}
    for (name, entry), (status, size) in zip(entries, results, strict=True):
        if status == "ok" and size != entry.size:
            status = "corrupt"
        if status != "ok":
            label = {"corrupt": "modified", "missing": "missing"}.get(status, "linked")
            found[label].append(name if label != "linked" else f"{name} ({status})")
    out.files(found["modified"], found["missing"], [], "the registry store")
    if found["linked"]:
        out.links(found["linked"], "the registry store")
    return found


def _check_folder(content: Manifest, path: Path, out: _Findings) -> dict[str, Any]:
    diff = compare_folder(content, path)
    out.files(diff.modified, diff.missing, diff.extra, str(path))
    linked = [f"{n} (a symbolic link)" for n in diff.symlinks]
    linked += [f"{n} (hard-linked)" for n in diff.hardlinks]
    if linked:
        out.links(linked, str(path))
    return {
        "modified": diff.modified,
        "missing": diff.missing,
        "extra": diff.extra,
        "symlinks": diff.symlinks,
        "hardlinks": diff.hardlinks,
        "details": diff.details,
    }


_STALE_SEVERITY = {
    "head": Severity.HIGH,
    "head-old": Severity.CRITICAL,
    "rolled-back": Severity.CRITICAL,
    "replaced": Severity.HIGH,
    "deleted": Severity.HIGH,
    "alias": Severity.HIGH,
}


def _recall(memory: RememberedState | None, rec: VersionRecord, out: _Findings) -> Any:
    """The remembered head of this registry (None: never seen, or no memory)."""
    if memory is None:
        return None
    try:
        return memory.load()
    except ValueError as exc:  # losing the memory must not pass as a first visit
        out.add(
            "MLW-INT-013",
            f"{rec.ref}: the remembered registry state is unreadable",
            Severity.HIGH,
            ["AML.M0014"],
            f"{exc}: a rollback of the whole registry cannot be ruled out.",
            f"Inspect or remove {memory.path}; the next verification re-creates it.",
        )
        return None


def _stale_finding(
    rec: VersionRecord, kind: str, message: str, severity: Severity, out: _Findings, hint: str
) -> None:
    out.add(
        "MLW-INT-013",
        f"{rec.ref}: {message}",
        severity,
        ["AML.M0013", "AML.M0014"],
        f"{message}. Every remaining signature still verifies; only the signed registry "
        "head (serial, signed versions, alias states) shows the state is not current.",
        "Do not load or serve from this registry until you know who changed it; restore "
        "the database from a trusted copy (compare 'registry log' with your records)." + hint,
        {"problem": kind},
    )


def _check_freshness(
    reg: Registry,
    rec: VersionRecord,
    tag: str | None,
    keys: list[VerifyingKey],
    out: _Findings,
    memory: RememberedState | None,
    alias_failed: bool = False,
) -> dict[str, Any]:
    """Is this the current signed state (nothing replayed, deleted or rolled back)?

    ``alias_failed``: MLW-INT-012 already refused the requested alias's move, so it
    is not reported twice. A clean, newer head is remembered in ``memory``.
    """
    remembered = _recall(memory, rec, out)
    problems = reg.stale(keys, [rec.name], remembered)
    kinds = {k for k, _, _ in problems}
    head, _ = reg.read_head(keys) if "head" not in kinds else (None, None)
    info: dict[str, Any] = {"checked": True, "problems": sorted(kinds)}
    foreign = rec.record.get("serial") is not None and rec.record.get("registry") != (
        reg.registry_id()
    )
    if foreign:  # imported: its freshness was the exporting registry's to keep
        info["signed_in_registry"] = rec.record.get("registry")
    if head is None and not problems and not foreign:
        out.add(
            "MLW-INT-013",
            f"{rec.ref}: the registry has no signed head, so replays and downgrades go unnoticed",
            Severity.MEDIUM,
            ["AML.M0013", "AML.M0014"],
            "Registries signed before mlwarden kept a signed head (serial, versions, alias "
            "states) cannot tell a replayed alias move or a deleted newest version apart.",
            "Sign any operation (e.g. move an alias with --sign) to create the head.",
        )
    for kind, where, message in problems:
        alias_hit = tag is not None and where == f"{rec.name}@{tag}"
        if alias_hit and alias_failed:
            continue
        downgrade = kind == "deleted" and tag in (None, "latest")
        severity = Severity.CRITICAL if alias_hit or downgrade else _STALE_SEVERITY[kind]
        hint = ""
        if memory is not None and kind in ("replaced", "rolled-back"):
            hint = f" If you re-created the registry yourself, remove {memory.path}."
        _stale_finding(rec, kind, message, severity, out, hint)
    if head is not None:
        info["head_serial"] = head.serial
        clean = not kinds & {"head-old", "rolled-back", "replaced", "head"}
        if memory is not None and clean and (remembered or {}).get("serial", -1) < head.serial:
            try:
                memory.save(head.registry_id, head.serial)
            except (OSError, UserError) as exc:
                info["remembered"] = f"not saved ({exc})"
    return info


@dataclass
class Verified:
    """What a verification decided: the version, and the content to trust for it."""

    rec: VersionRecord
    manifest: Manifest  # the signed manifest when the signature verified, else the database's
    record: dict[str, Any]  # the signed record when the signature verified, else the database's
    signature: dict[str, Any]

    @property
    def kind(self) -> str:
        kind = self.record.get("kind")
        return kind if kind in KINDS else self.rec.kind


def _verify(
    reg: Registry,
    ref: str,
    keys: list[VerifyingKey],
    report: Report,
    path: Path | None,
    check_store: bool,
    memory: RememberedState | None,
) -> Verified:
    """All checks of one version, from ONE read of the database (caller holds a snapshot)."""
    rec = reg.resolve(ref)
    report.target = {"ref": rec.ref, "kind": rec.kind, "registry": str(reg.root)}
    report.config = {"trusted_keys": [key_id(k) for k in keys], "path": str(path or "")}
    out = _Findings(rec, report)
    with report.timed("integrity.signature"):
        _check_record(rec, out)
        manifest, sig = _check_signature(rec, keys, out)
    content = manifest or rec.manifest
    record = sig.pop("record", None) if sig["verified"] else None
    record = record if isinstance(record, dict) else rec.record
    store: dict[str, list[str]] = {}
    if check_store:
        with report.timed("integrity.store"):
            store = _check_store(reg, content, out)
    folder: dict[str, Any] = {}
    if path is not None:
        with report.timed("integrity.folder"):
            folder = _check_folder(content, path, out)
    _check_lineage(reg, rec, record, out)
    _check_provenance(rec, record, out)
    _, tag = parse_ref(ref)
    alias_info = None
    if tag is not None and not tag.isdigit() and tag != "latest":
        alias_info = _check_alias(reg, rec, tag, keys, out)
    fresh = {"checked": False}
    if sig["verified"]:
        failed = alias_info is not None and not alias_info["verified"]
        fresh = _check_freshness(reg, rec, tag, keys, out, memory, failed)
    report.artifacts["integrity"] = {
        "ref": rec.ref,
        "kind": rec.kind,
        "manifest_digest": rec.manifest_digest,
        "signature": sig,
        "alias": alias_info,
        "freshness": fresh,
        "store": store,
        "folder": folder,
        "record": record,
    }
    return Verified(rec, content, record, sig)


def verify_report(
    ref: str,
    registry: Path | None = None,
    trust: Sequence[Path | VerifyingKey] = (),
    path: Path | None = None,
    seed: int = 0,
    state_dir: Path | None = None,
) -> Report:
    """Verify ``NAME[@VERSION|@ALIAS]``: signature, record, freshness, stored bytes (and ``path``).

    ``trust`` lists trusted Ed25519 or ECDSA public keys (PEM files or key objects);
    ``path`` is an optional deployed copy (file or folder) re-hashed against the
    signed manifest, naming every modified, missing, extra or linked file. All
    database reads come from one snapshot. With a verified signature the signed
    registry head is checked (:mod:`.freshness`) and the highest head serial seen is
    remembered in ``state_dir`` (default :func:`.freshness.state_dir`).
    """
    report = Report.new(command=f"registry verify {ref}", seed=seed)
    keys = _load_trust(trust)
    start = time.perf_counter()
    with Registry.open(registry, create=False) as reg, reg.snapshot():
        memory = RememberedState(reg.root, state_dir)
        v = _verify(reg, ref, keys, report, path, check_store=True, memory=memory)
    report.metrics.update(
        {
            "files": len(v.manifest.files),
            "bytes": v.manifest.total_size,
            "seconds": round(time.perf_counter() - start, 4),
            "signed": v.signature["signed"],
            "signature_verified": v.signature["verified"],
        }
    )
    return report


def load_verified(
    ref: str,
    registry: Path | None = None,
    trust: Sequence[Path | VerifyingKey] = (),
    file: str | None = None,
    require_signature: bool = True,
    state_dir: Path | None = None,
) -> Any:
    """Verify ``ref`` and load exactly the verified bytes through the scanner's safe loader.

    The production way to load a registered model: the signature must verify with
    a ``trust`` key (unless ``require_signature=False``) and any high or critical
    finding raises :class:`IntegrityError`. The database is read once; the signed
    statement alone decides the files, digests and kind; each object is read once
    (no links followed) into a private folder while it is hashed, and only a copy
    whose bytes match the signed digest is loaded. A model loads with
    ``mlwarden.supplychain.load_target`` (a Target), a dataset with
    ``mlwarden.core.data.load_dataset``, anything else with
    ``mlwarden.supplychain.safe_load``. ``file`` picks one file of a multi-file version.
    """
    if require_signature and not trust:
        raise IntegrityError(
            f"load_verified({ref!r}) needs trust=[public key]; pass require_signature=False "
            "only for artefacts you accept unsigned"
        )
    keys = _load_trust(trust)
    report = Report.new(command=f"load_verified {ref}")
    with Registry.open(registry, create=False) as reg:
        with reg.snapshot():
            memory = RememberedState(reg.root, state_dir)
            v = _verify(reg, ref, keys, report, None, check_store=False, memory=memory)
        blocking = report.at_or_above(Severity.HIGH)
        if require_signature and not v.signature["verified"]:
            blocking = blocking or [
                f for f in report.findings if f.rule in ("MLW-INT-004", "MLW-INT-005")
            ]
        if blocking:
            raise IntegrityError(
                f"{ref} failed verification, not loaded: "
                + "; ".join(f.title for f in blocking[:5])
            )
        file = _pick_file(v, file)
        tmp = Path(tempfile.mkdtemp(prefix="mlwarden-verified-"))
        try:
            try:
                reg.restore(v.manifest, tmp, v.rec.ref)
            except UserError as exc:
                raise IntegrityError(f"{ref} failed verification, not loaded: {exc}") from None
            return _load(v.kind, tmp.joinpath(*file.split("/")))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _pick_file(v: Verified, file: str | None) -> str:
    names = list(v.manifest.files)
    if file is None:
        if len(names) != 1:
            raise UserError(
                f"{v.rec.ref} has {len(names)} files; pass file= one of: {', '.join(names[:10])}"
            )
        return names[0]
    if file not in v.manifest.files:
        raise UserError(f"{v.rec.ref} has no file {file!r}")
    return file


def _load(kind: str, target: Path) -> Any:
    """Load a verified private copy with the loader its SIGNED kind names."""
    if kind == "dataset":
        from mlwarden.core.data import load_dataset

        return load_dataset(str(target))
    supplychain = importlib.import_module("mlwarden.supplychain")
    if kind == "model":
        return supplychain.load_target(str(target))
    return supplychain.safe_load(target)
