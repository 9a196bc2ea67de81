"""``mlwarden sign`` and ``mlwarden verify``: model signatures without a registry.

Signature files are Sigstore bundles, the format of OpenSSF model-signing
(``model_signing sign key`` / ``verify key``), so either tool checks the other's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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

SignatureOpt = Annotated[
    Path, typer.Option("--signature", help="Signature file (Sigstore bundle), e.g. model.sig.")
]


def register(app: typer.Typer) -> None:
    @app.command("sign")
    def sign(
        model_path: Annotated[Path, typer.Argument(help="Model file or folder.")],
        key: Annotated[
            Path, typer.Option("--key", help="Private key (PEM): ECDSA P-256/384/521 or Ed25519.")
        ],
        signature: SignatureOpt = Path("model.sig"),
        shard_size: Annotated[
            int | None,
            typer.Option("--shard-size", help="Hash files in shards of this many bytes."),
        ] = None,
        hash_type: Annotated[
            str, typer.Option("--hash", help="sha256 | blake2b (model-signing verifies sha256).")
        ] = "sha256",
        ignore_paths: Annotated[
            list[str] | None,
            typer.Option("--ignore-paths", help="Path (relative to the model) to leave out."),
        ] = None,
        ignore_git: Annotated[
            bool,
            typer.Option("--ignore-git-paths/--no-ignore-git-paths", help="Leave out .git etc."),
        ] = True,
        quiet: QuietOpt = False,
        debug: DebugOpt = False,
    ) -> None:
        """Sign MODEL_PATH into a Sigstore bundle that 'model_signing verify key' accepts (EC keys)."""
        from mlwarden.integrity.keys import key_type, load_signing_key
        from mlwarden.integrity.signature_check import sign_model

        setup(quiet=quiet, debug=debug)
        if hash_type not in ("sha256", "blake2b"):
            raise UserError(f"--hash {hash_type!r}: expected sha256 or blake2b")
        kind = key_type(load_signing_key(key).public_key())
        statement = sign_model(
            model_path,
            key,
            signature,
            method="files" if shard_size is None else "shards",
            hash_type=hash_type,
            shard_size=shard_size or 1_000_000_000,
            ignore_paths=ignore_paths or [],
            ignore_git=ignore_git,
        )
        if kind == "ed25519":
            err.print(
                "note: signed with Ed25519; 'model_signing verify key' accepts only ECDSA "
                "P-256/P-384/P-521 keys (use 'mlwarden keys generate --type ecdsa-p256')"
            )
        n = len(statement["predicate"]["resources"])
        info(f"signed {model_path} ({n} resources, {kind}) -> {signature}")

    @app.command("verify")
    def verify(
        model_path: Annotated[Path, typer.Argument(help="Model file or folder.")],
        signature: SignatureOpt = Path("model.sig"),
        trust: Annotated[
            list[Path] | None,
            typer.Option("--trust", help="Trusted public key (PEM: ECDSA or Ed25519); repeatable."),
        ] = None,
        trust_chain: Annotated[
            list[Path] | None,
            typer.Option("--trust-chain", help="Trusted CA certificate(s) (PEM); repeatable."),
        ] = None,
        identity: Annotated[
            str | None,
            typer.Option(
                "--identity",
                help="Required signer: certificate SAN / common name, keyless identity.",
            ),
        ] = None,
        issuer: Annotated[
            str | None,
            typer.Option(
                "--issuer",
                help="Required issuer: CA name, or the OIDC issuer of a keyless signature.",
            ),
        ] = None,
        trusted_root: Annotated[
            Path | None,
            typer.Option(
                "--trusted-root",
                help="Sigstore trusted_root.json for keyless signatures "
                "(default: the one inside the sigstore package, offline).",
                dir_okay=False,
            ),
        ] = None,
        json_path: JsonOpt = None,
        html_path: HtmlOpt = None,
        sarif_path: SarifOpt = None,
        junit_path: JunitOpt = None,
        fail_on: FailOnOpt = "medium",
        seed: SeedOpt = 0,
        quiet: QuietOpt = False,
        debug: DebugOpt = False,
    ) -> None:
        """Check MODEL_PATH against a signature; exit 1 naming every changed, missing or extra file."""
        from mlwarden.integrity.signature_check import verify_signature_report

        setup(quiet=quiet, debug=debug)
        report = verify_signature_report(
            model_path,
            signature,
            trust=trust or [],
            trust_chain=trust_chain or [],
            identity=identity,
            issuer=issuer,
            trusted_root=trusted_root,
            seed=seed,
        )
        if not settings.quiet:
            diff = report.artifacts.get("signature", {}).get("diff", {})
            for label in ("modified", "missing", "extra", "symlinks"):
                for name in diff.get(label, []):
                    err.print(f"  {label:9s} {name}")
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
