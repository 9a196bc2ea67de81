"""``mlwarden registry ...`` (signed, versioned models and datasets) and ``mlwarden keys ...``.

Thin layer over :mod:`mlwarden.integrity`: parse, call one function, print.
Registry location: ``--registry DIR``, else ``$MLWARDEN_REGISTRY``, else ``./.mlwarden``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from mlwarden.cli.common import (
    DebugOpt,
    FailOnOpt,
    HtmlOpt,
    JsonOpt,
    JunitOpt,
    QuietOpt,
    SarifOpt,
    SeedOpt,
    finish,
    setup,
)
from mlwarden.core.console import err, info, settings
from mlwarden.core.errors import UserError

RegistryOpt = Annotated[
    Path | None,
    typer.Option(
        "--registry",
        help="Registry folder (default: $MLWARDEN_REGISTRY, else ./.mlwarden).",
        file_okay=False,
    ),
]
TrustOpt = Annotated[
    list[Path] | None,
    typer.Option("--trust", help="Trusted public key (KEYFILE.pub: Ed25519 or ECDSA); repeatable."),
]


def _version_ref(ref: str, what: str) -> tuple[str, int]:
    name, _, tag = ref.partition("@")
    if not tag.isdigit() or int(tag) < 1:
        raise UserError(f"{what} {ref!r}: expected NAME@VERSION with a version number from 1")
    return name, int(tag)


def _params(items: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--param {item!r}: expected KEY=VALUE (e.g. --param lr=0.01)")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def _print_folder(report: Any) -> None:
    folder = report.artifacts.get("integrity", {})
    # "store": the registry's own copy; "deployed": the copy given with --path (file or folder)
    for where, part in (("store", folder.get("store", {})), ("deployed", folder.get("folder", {}))):
        for label in ("modified", "missing", "extra", "symlinks", "hardlinks", "linked"):
            for name in (part or {}).get(label, []):
                err.print(f"  {label:9s} {name}  ({where})")


def register(app: typer.Typer) -> None:
    registry = typer.Typer(
        help="Signed, versioned registry of models and datasets (verify, roll back, diff).",
        no_args_is_help=True,
    )
    keys = typer.Typer(
        help="Signing keys (Ed25519, ECDSA P-256/P-384/P-521).", no_args_is_help=True
    )
    app.add_typer(registry, name="registry")
    app.add_typer(keys, name="keys")

    @keys.command("generate")
    def keys_generate(
        keyfile: Annotated[Path, typer.Argument(help="Private key file to create (mode 0600).")],
        key_type: Annotated[
            str,
            typer.Option(
                "--type",
                help="ed25519 (registry default) | ecdsa-p256 | ecdsa-p384 | ecdsa-p521 "
                "(EC for OpenSSF model-signing, which rejects Ed25519).",
            ),
        ] = "ed25519",
        quiet: QuietOpt = False,
        debug: DebugOpt = False,
    ) -> None:
        """Write a new private key to KEYFILE and its public key to KEYFILE.pub; print its id."""
        from mlwarden.integrity.keys import generate_keypair, key_hint, key_id, load_verifying_key

        setup(quiet=quiet, debug=debug)
        priv, pub = generate_keypair(keyfile, key_type)
        info(f"private key: {priv} (keep it secret)\npublic key:  {pub}")
        public = load_verifying_key(pub)
        if key_type != "ed25519":  # the registry names signers by key id, model-signing by hint
            info(f"registry key id: {key_id(public)}")
        print(key_id(public) if key_type == "ed25519" else key_hint(public))

    @registry.command("add")
    def add(
        path: Annotated[Path, typer.Argument(help="Model or dataset file or folder.")],
        name: Annotated[str, typer.Option("--name", help="Artefact name.")],
        kind: Annotated[str, typer.Option("--kind", help="model | dataset | other.")] = "model",
        parents: Annotated[
            list[str] | None,
            typer.Option("--from", help="NAME@VERSION this was derived from; repeatable."),
        ] = None,
        source: Annotated[str | None, typer.Option("--source", help="Where it came from.")] = None,
        publisher: Annotated[str | None, typer.Option("--publisher")] = None,
        licence: Annotated[str | None, typer.Option("--licence", "--license")] = None,
        notes: Annotated[str | None, typer.Option("--notes")] = None,
        param: Annotated[
            list[str] | None, typer.Option("--param", help="Training parameter KEY=VALUE.")
        ] = None,
        code_rev: Annotated[
            str | None, typer.Option("--code-rev", help="Code revision (default: git HEAD).")
        ] = None,
        sign: Annotated[
            Path | None,
            typer.Option(
                "--sign",
                help="Sign with this private key (Ed25519, or ECDSA P-256/384/521: then "
                "model_signing can also verify the signature file written next to the version).",
            ),
        ] = None,
        force: Annotated[
            bool, typer.Option("--force", help="Accept files the scanner refused.")
        ] = False,
        reason: Annotated[
            str | None, typer.Option("--reason", help="Why --force (recorded, signed).")
        ] = None,
        trust: TrustOpt = None,
        signature: Annotated[
            Path | None,
            typer.Option(
                "--signature",
                help="A publisher's model signature (Sigstore bundle) over PATH: verified with "
                "--trust (ECDSA or Ed25519) before the add, recorded as provenance.",
                dir_okay=False,
            ),
        ] = None,
        registry_dir: RegistryOpt = None,
        quiet: QuietOpt = False,
        debug: DebugOpt = False,
    ) -> None:
        """Scan, hash and register PATH as the next version of NAME (signed with --sign)."""
        from mlwarden.integrity.registry import Registry, code_revision
        from mlwarden.integrity.registry_signatures import (
            store_third_party,
            third_party_check,
            write_version_signature,
        )

        setup(quiet=quiet, debug=debug)
        check = third_party_check(path, signature, trust or []) if signature else None
        with Registry.open(registry_dir) as reg:
            rec = reg.add(
                path,
                name=name,
                kind=kind,
                parents=parents or [],
                source=source,
                publisher=publisher,
                licence=licence,
                notes=notes,
                params=_params(param),
                code_rev=code_rev or code_revision(),
                sign_key=sign,
                force=force,
                reason=reason,
                trust=trust or [],
                signature=check,
            )
            if signature is not None:
                store_third_party(reg.store.root, rec.name, rec.version, signature)
            elif sign is not None:  # the same signature in model-signing's format
                write_version_signature(reg.store.root, rec, sign)
        signed = f", signed by {rec.signer[:16]}" if rec.signer else ", unsigned"
        info(
            f"registered {rec.ref} ({len(rec.manifest.files)} files, "
            f"{rec.manifest.total_size} bytes{signed})"
        )
        print(rec.ref)

    @registry.command("verify")
    def verify(
        ref: Annotated[str, typer.Argument(help="NAME, NAME@VERSION or NAME@ALIAS.")],
        trust: TrustOpt = None,
        path: Annotated[
            Path | None,
            typer.Option("--path", help="Also re-hash this deployed copy (file or folder)."),
        ] = None,
        registry_dir: RegistryOpt = None,
        json_path: JsonOpt = None,
        html_path: HtmlOpt = None,
        sarif_path: SarifOpt = None,
        junit_path: JunitOpt = None,
        fail_on: FailOnOpt = "high",
        seed: SeedOpt = 0,
        quiet: QuietOpt = False,
        debug: DebugOpt = False,
    ) -> None:
        """Check signature and every digest; exit 1 on any mismatch (findings >= --fail-on)."""
        from mlwarden.integrity.verify import verify_report

        setup(quiet=quiet, debug=debug)
        report = verify_report(ref, registry=registry_dir, trust=trust or [], path=path, seed=seed)
        if not settings.quiet:
            _print_folder(report)
        raise typer.Exit(
            finish(
                report,
                json_path=json_path,
                html_path=html_path,
                sarif_path=sarif_path,
                junit_path=junit_path,
                fail_on=fail_on,
            )
        )

    @registry.command("log")
    def log(
        name: Annotated[str, typer.Argument(help="Artefact name.")],
        fmt: Annotated[str, typer.Option("--format", help="text | json")] = "text",
        registry_dir: RegistryOpt = None,
        quiet: QuietOpt = False,
        debug: DebugOpt = False,
    ) -> None:
        """Versions (who, when, signer, lineage, provenance), aliases and the event history."""
        from mlwarden.integrity.registry import Registry

        setup(quiet=quiet, debug=debug)
        with Registry.open(registry_dir, create=False) as reg:
            versions = reg.versions(name)
            if not versions:
                raise UserError(f"no artefact named {name!r} in the registry at {reg.root}")
            events = reg.events(name)
            aliases = reg.aliases(name)
        if fmt == "json":
            doc = {
                "name": name,
                "aliases": aliases,
                "versions": [
                    {**v.record, "signer": v.signer, "aliases": v.aliases} for v in versions
                ],
                "events": events,
            }
            print(json.dumps(doc, indent=2, sort_keys=True))
            return
        if fmt != "text":
            raise UserError(f"--format {fmt!r}: expected text or json")
        for v in versions:
            r = v.record
            prov = r.get("provenance") or {}
            lin = r.get("lineage") or {}
            tags = f" [{', '.join(v.aliases)}]" if v.aliases else ""
            print(f"{v.ref}{tags}  {v.kind}  {v.created}  by {v.who}")
            print(
                f"    {r.get('file_count')} files, {r.get('total_size')} bytes, "
                f"manifest {v.manifest_digest[:16]}, "
                + (f"signed by {v.signer[:16]}" if v.signer else "UNSIGNED")
            )
            if any(prov.values()):
                print("    provenance: " + ", ".join(f"{k}={x}" for k, x in prov.items() if x))
            if lin.get("parents"):
                print(
                    "    from: " + ", ".join(f"{p['name']}@{p['version']}" for p in lin["parents"])
                )
            if lin.get("code_revision"):
                print(f"    code: {lin['code_revision']}")
            if lin.get("params"):
                print(f"    params: {json.dumps(lin['params'], sort_keys=True)}")
            if r.get("forced"):
                print(f"    FORCED past the scanner: {r['forced'].get('reason')}")
        print("events:")
        for e in events:
            target = f"@{e['version']}" if e["version"] is not None else ""
            alias = f" {e['alias']}" if e["alias"] else ""
            prev = e["detail"].get("previous")
            prev_s = f" (was @{prev})" if prev is not None else ""
            print(f"    {e['ts']}  {e['who']}  {e['action']}{alias} -> {name}{target}{prev_s}")

    @registry.command("alias")
    def alias(
        ref: Annotated[str, typer.Argument(help="NAME@VERSION")],
        alias_name: Annotated[str, typer.Argument(metavar="ALIAS", help="e.g. production")],
        sign: Annotated[
            Path | None, typer.Option("--sign", help="Sign the move with this private key.")
        ] = None,
        trust: TrustOpt = None,
        registry_dir: RegistryOpt = None,
        quiet: QuietOpt = False,
        debug: DebugOpt = False,
    ) -> None:
        """Point ALIAS at NAME@VERSION (a signed move needs a version whose signature holds)."""
        from mlwarden.integrity.registry import Registry

        setup(quiet=quiet, debug=debug)
        name, version = _version_ref(ref, "alias")
        with Registry.open(registry_dir, create=False) as reg:
            before = reg.set_alias(name, version, alias_name, sign_key=sign, trust=trust or [])
        was = f" (was @{before})" if before is not None else ""
        info(f"{name}@{alias_name} -> {name}@{version}{was}")

    @registry.command("rollback")
    def rollback(
        name: Annotated[str, typer.Argument(help="Artefact name.")],
        alias_name: Annotated[str, typer.Argument(metavar="ALIAS", help="Alias to move back.")],
        to: Annotated[int, typer.Option("--to", help="Version to point the alias at.")],
        restore: Annotated[
            Path | None,
            typer.Option("--restore", help="Also write that version's exact bytes here."),
        ] = None,
        sign: Annotated[
            Path | None, typer.Option("--sign", help="Sign the move with this private key.")
        ] = None,
        trust: TrustOpt = None,
        registry_dir: RegistryOpt = None,
        quiet: QuietOpt = False,
        debug: DebugOpt = False,
    ) -> None:
        """Point ALIAS back at an earlier version; optionally restore its files.

        With --trust or --sign the version's signature must verify and --restore
        writes exactly the files and digests of its signed statement.
        """
        from mlwarden.integrity.registry import Registry

        setup(quiet=quiet, debug=debug)
        with Registry.open(registry_dir, create=False) as reg:
            before, rec = reg.rollback(
                name, alias_name, to, restore=restore, sign_key=sign, trust=trust or []
            )
        info(f"{name}@{alias_name} -> {rec.ref} (was @{before})")
        if restore is not None:
            how = (
                "signature verified, every byte re-hashed"
                if (trust or sign)
                else "bytes re-hashed; signature NOT checked: pass --trust"
            )
            info(f"restored {len(rec.manifest.files)} files of {rec.ref} into {restore} ({how})")

    @registry.command("diff")
    def diff(
        old: Annotated[str, typer.Argument(help="NAME@A")],
        new: Annotated[str, typer.Argument(help="NAME@B")],
        fmt: Annotated[str, typer.Option("--format", help="text | json")] = "text",
        registry_dir: RegistryOpt = None,
        quiet: QuietOpt = False,
        debug: DebugOpt = False,
    ) -> None:
        """Files added, removed and changed (sizes); changed tensors for safetensors/npz/torch."""
        from mlwarden.integrity.compare import diff_versions
        from mlwarden.integrity.registry import Registry

        setup(quiet=quiet, debug=debug)
        if fmt not in ("text", "json"):
            raise UserError(f"--format {fmt!r}: expected text or json")
        with Registry.open(registry_dir, create=False) as reg:
            result = diff_versions(reg, reg.resolve(old), reg.resolve(new))
        if fmt == "json":
            print(json.dumps(result, indent=2, sort_keys=True))
            return
        print(f"{result['old']} -> {result['new']}: {result['unchanged']} files unchanged")
        for f in result["added"]:
            print(f"  added    {f['file']}  ({f['size']} bytes)")
        for f in result["removed"]:
            print(f"  removed  {f['file']}  ({f['size']} bytes)")
        for f in result["changed"]:
            print(
                f"  changed  {f['file']}  ({f['old_size']} -> {f['new_size']} bytes, "
                f"{f['size_change']:+d})"
            )
            if "tensor_error" in f:
                print(f"      tensors not compared: {f['tensor_error']}")
            for t in f.get("tensors", []):
                if t["status"] == "changed" and "max_abs_diff" in t:
                    print(
                        f"      {t['tensor']}: {t['changed_fraction']:.1%} of elements changed, "
                        f"max |diff| {t['max_abs_diff']:.4g}, relative L2 {t['relative_l2']:.4g}"
                    )
                else:
                    print(f"      {t['tensor']}: {t['status']} {t.get('shape')}")
            if "tensors" in f:
                print(f"      ({f['tensors_unchanged']} tensors unchanged)")

    @registry.command("export")
    def export(
        ref: Annotated[str, typer.Argument(help="NAME@VERSION")],
        bundle: Annotated[Path, typer.Argument(help="Bundle to write (.tar, .tar.gz, .tgz).")],
        sign: Annotated[
            Path | None,
            typer.Option(
                "--sign",
                help="Also write BUNDLE.sig, a model-signing signature of the version "
                "made with this key (ECDSA for model_signing; Ed25519 for mlwarden).",
            ),
        ] = None,
        registry_dir: RegistryOpt = None,
        quiet: QuietOpt = False,
        debug: DebugOpt = False,
    ) -> None:
        """Write a signed version (record, envelope, objects) to a tar bundle (and BUNDLE.sig)."""
        import shutil

        from mlwarden.integrity.bundle import export_bundle
        from mlwarden.integrity.registry import Registry
        from mlwarden.integrity.registry_signatures import (
            version_signature_path,
            write_version_signature,
        )

        setup(quiet=quiet, debug=debug)
        name, version = _version_ref(ref, "export")
        sig = bundle.with_name(bundle.name + ".sig")
        with Registry.open(registry_dir, create=False) as reg:
            rec = reg.get(name, version)
            export_bundle(reg, rec, bundle)
            stored = version_signature_path(reg.store.root, name, version)
            if sign is not None:
                write_version_signature(reg.store.root, rec, sign, dest=sig)
            elif stored.is_file() and not stored.is_symlink():
                shutil.copyfile(stored, sig)
            else:
                sig = None  # type: ignore[assignment]
        info(f"exported {rec.ref} to {bundle}" + (f" (signature {sig})" if sig else ""))

    @registry.command("import")
    def import_(
        bundle: Annotated[Path, typer.Argument(help="Bundle written by 'registry export'.")],
        trust: TrustOpt = None,
        registry_dir: RegistryOpt = None,
        json_path: JsonOpt = None,
        html_path: HtmlOpt = None,
        sarif_path: SarifOpt = None,
        junit_path: JunitOpt = None,
        fail_on: FailOnOpt = "high",
        seed: SeedOpt = 0,
        quiet: QuietOpt = False,
        debug: DebugOpt = False,
    ) -> None:
        """Import a bundle: every object re-hashed, signature checked, then verified."""
        from mlwarden.integrity.bundle import import_bundle

        setup(quiet=quiet, debug=debug)
        report = import_bundle(bundle, registry=registry_dir, trust=trust or [], seed=seed)
        ref = report.target.get("ref")
        info(f"{'imported' if report.metrics.get('imported') else 'already present:'} {ref}")
        raise typer.Exit(
            finish(
                report,
                json_path=json_path,
                html_path=html_path,
                sarif_path=sarif_path,
                junit_path=junit_path,
                fail_on=fail_on,
            )
        )

    @registry.command("fsck")
    def fsck(
        trust: TrustOpt = None,
        registry_dir: RegistryOpt = None,
        quiet: QuietOpt = False,
        debug: DebugOpt = False,
    ) -> None:
        """Check the whole registry: SQLite, records, objects, and the signed head.

        Reports deleted signed versions, replayed alias moves, a head put back, and
        (from this user's remembered state) a database rolled back; with --trust the
        head's and statements' signatures must verify.
        """
        from mlwarden.integrity.freshness import RememberedState
        from mlwarden.integrity.registry import Registry

        setup(quiet=quiet, debug=debug)
        with Registry.open(registry_dir, create=False) as reg:
            memory = RememberedState(reg.root)
            try:
                remembered = memory.load()
            except ValueError as exc:  # losing the memory must not pass as a first visit
                remembered = None
                unreadable = [f"remembered registry state unreadable: {exc}"]
            else:
                unreadable = []
            problems = unreadable + reg.fsck(trust=trust or [], remembered=remembered)
        for p in problems:
            print(p)
        info(f"{len(problems)} problem(s)")
        raise typer.Exit(1 if problems else 0)

    @registry.command("gc")
    def gc(
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Only list what would be removed.")
        ] = False,
        wait: Annotated[
            float, typer.Option("--wait", help="Seconds to wait for running adds to finish.")
        ] = 30.0,
        registry_dir: RegistryOpt = None,
        quiet: QuietOpt = False,
        debug: DebugOpt = False,
    ) -> None:
        """Remove staging left by interrupted adds and objects no version references."""
        from mlwarden.integrity.gc import collect, referenced_digests
        from mlwarden.integrity.registry import Registry

        setup(quiet=quiet, debug=debug)
        with Registry.open(registry_dir, create=False) as reg:
            garbage = collect(reg.store.root, lambda: referenced_digests(reg), dry_run, wait)
        for line in garbage.problems():
            print(line)
        verb = "would remove" if dry_run else "removed"
        n = len(garbage.staging) + len(garbage.orphaned) + len(garbage.unreferenced)
        info(f"{verb} {n} item(s), {garbage.bytes} bytes")
