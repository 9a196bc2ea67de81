"""``mlwarden serve`` (the guarded gateway) and ``mlwarden gateway`` (keys, config audit)."""

from __future__ import annotations

from datetime import UTC, datetime
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
from mlwarden.core.errors import UserError

ConfigOpt = Annotated[
    Path, typer.Option("--config", "-c", help="Gateway config (YAML).", dir_okay=False)
]


def _floats(text: str, what: str, count: int | None = None) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{what}: expected comma-separated numbers, got {text!r}") from None
    if not values or (count is not None and len(values) != count):
        n = f"{count} " if count else ""
        raise UserError(f"{what}: expected {n}comma-separated numbers, got {text!r}")
    return values


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        model: Annotated[
            str,
            typer.Argument(
                help="Model file, URL or module:factory (scanned first), or a registry reference."
            ),
        ],
        config: Annotated[
            Path | None,
            typer.Option("--config", "-c", help="Gateway config (YAML).", dir_okay=False),
        ] = None,
        host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
        port: Annotated[int, typer.Option("--port", help="Port (0 picks a free one).")] = 8000,
        input_shape: Annotated[
            str | None, typer.Option("--input-shape", help="Shape of one input, e.g. 1,8,8.")
        ] = None,
        input_range: Annotated[
            str | None, typer.Option("--input-range", help="Allowed value range, e.g. 0,1.")
        ] = None,
        registry: Annotated[
            Path | None, typer.Option("--registry", help="Registry to load MODEL from (verified).")
        ] = None,
        trust: Annotated[
            list[Path] | None, typer.Option("--trust", help="Trusted public key (repeatable).")
        ] = None,
        seed: SeedOpt = 0,
        quiet: QuietOpt = False,
        debug: DebugOpt = False,
    ) -> None:
        """Serve MODEL behind an authenticated, rate-limited, monitored gateway."""
        from mlwarden.serve.config import GatewayConfig, load_config
        from mlwarden.serve.server import load_model, run_gateway

        setup(quiet=quiet, debug=debug, seed=seed)
        if not 0 <= port <= 65535:
            raise UserError(f"--port must be 0-65535 (0 picks a free one); got {port}")
        cfg = load_config(config) if config is not None else GatewayConfig()
        if input_shape is not None:
            dims = _floats(input_shape, "--input-shape")
            if any(d < 1 or d != int(d) for d in dims):
                raise UserError(
                    f"--input-shape: expected positive whole numbers, got {input_shape!r}"
                )
            cfg.input.shape = [int(d) for d in dims]
        if input_range is not None:
            lo, hi = _floats(input_range, "--input-range", 2)
            if not lo < hi:
                raise UserError(
                    f"--input-range: expected low,high with low < high, got {input_range!r}"
                )
            cfg.input.range = (lo, hi)
        if not cfg.keys and cfg.anonymous is None:
            raise UserError(
                "no API keys: create one with 'mlwarden gateway add-key NAME --config gateway.yaml' "
                "and pass --config"
            )
        target, version = load_model(model, registry=registry, trust=list(trust or []))
        base = config.resolve().parent if config is not None else Path.cwd()
        run_gateway(
            target,
            cfg,
            host=host,
            port=port,
            base_dir=base,
            model_version=version,
            config_path=config.resolve() if config is not None else None,
        )

    gateway = typer.Typer(
        help="Manage the serving gateway: API keys and config audit.", no_args_is_help=True
    )
    app.add_typer(gateway, name="gateway")

    @gateway.command("add-key")
    def add_key(
        name: Annotated[
            str, typer.Argument(help="A name for the key (shown in logs and metrics).")
        ],
        config: ConfigOpt,
        role: Annotated[
            str,
            typer.Option(
                "--role", help="labels | scores | admin | metrics, or a role in the config."
            ),
        ] = "labels",
        rate: Annotated[float | None, typer.Option("--rate", help="Queries per second.")] = None,
        burst: Annotated[int | None, typer.Option("--burst", help="Bucket size, queries.")] = None,
        budget: Annotated[int | None, typer.Option("--budget", help="Queries per window.")] = None,
        window: Annotated[
            float | None, typer.Option("--window", help="Budget window, seconds.")
        ] = None,
        profile: Annotated[
            str | None,
            typer.Option(
                "--profile",
                help="The key's declared workload: camera (a fixed camera whose lighting "
                "drifts; searches along brightness and contrast go unflagged on this key).",
            ),
        ] = None,
        quiet: QuietOpt = False,
        debug: DebugOpt = False,
    ) -> None:
        """Create an API key, store only its hash in the config (mode 0600), print it once."""
        from mlwarden.serve.auth import hash_key, new_key
        from mlwarden.serve.config import GatewayConfig, KeyEntry, Limits, load_config, save_config
        from mlwarden.serve.profiles import PROFILES

        setup(quiet=quiet, debug=debug)
        if not name or not all(c.isalnum() or c in "-_." for c in name) or len(name) > 64:
            raise UserError(f"key name {name!r}: use 1-64 letters, digits, '-', '_' or '.'")
        cfg = (
            load_config(config)
            if config.exists()
            # burst = the default input.max_batch: a smaller bucket refuses big batches forever
            else GatewayConfig(limits=Limits(rate=10.0, burst=64, budget=10000, window_s=86400.0))
        )
        if name in cfg.keys:
            raise UserError(f"{config}: a key named {name!r} exists; pick another name")
        roles = cfg.all_roles()
        if role not in roles:
            raise UserError(
                f"--role {role!r}: unknown role; expected one of {', '.join(sorted(roles))}"
            )
        for opt, value in (
            ("--rate", rate),
            ("--burst", burst),
            ("--budget", budget),
            ("--window", window),
        ):
            if value is not None and not (0 < value < float("inf")):
                raise UserError(f"{opt} must be > 0 and finite; got {value}")
        if profile is not None and profile not in PROFILES:
            raise UserError(
                f"--profile {profile!r}: unknown profile; expected one of {', '.join(PROFILES)}"
            )
        key = new_key()
        cfg.keys[name] = KeyEntry(
            hash=hash_key(key),
            role=role,
            rate=rate,
            burst=burst,
            budget=budget,
            window_s=window,
            profile=profile,  # type: ignore[arg-type]
            created=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        save_config(cfg, config)
        typer.echo(key)
        if not quiet:
            typer.echo(
                f"key {name!r} (role {role}) added to {config}; only its hash is stored, "
                "so copy the key now: it is not shown again",
                err=True,
            )
            if profile is not None:
                typer.echo(f"profile {profile}: {PROFILES[profile][1]}", err=True)

    @gateway.command("unblock")
    def unblock(
        name: Annotated[str, typer.Argument(help="The key name to unblock.")],
        config: ConfigOpt,
        quiet: QuietOpt = False,
        debug: DebugOpt = False,
    ) -> None:
        """Lift the block of a key (blocks are stored in the audit database); restart serve."""
        import sqlite3

        from mlwarden.serve.config import load_config
        from mlwarden.serve.log import delete_state

        setup(quiet=quiet, debug=debug)
        cfg = load_config(config)
        if name not in cfg.keys and name != "anonymous":
            raise UserError(f"{config}: no key named {name!r}")
        db = Path(cfg.audit.path)
        if not db.is_absolute():
            db = config.resolve().parent / db
        if not db.is_file():
            raise UserError(f"{db}: no audit database, so no key is blocked")
        try:
            removed = delete_state(db, name, "blocked")
        except sqlite3.Error as exc:
            raise UserError(f"{db}: not a usable audit database ({exc})") from None
        if not quiet:
            what = "unblocked" if removed else "was not blocked"
            typer.echo(f"key {name!r} {what}; a running gateway takes it up when restarted")

    @gateway.command("check")
    def check(
        config: Annotated[Path, typer.Argument(help="Gateway config (YAML).", dir_okay=False)],
        data: Annotated[
            str | None,
            typer.Option(
                "--data",
                help="Benign inputs of the deployment: warn (MLW-GW-015) when the configured "
                "detectors flag a client sending them.",
            ),
        ] = None,
        json_path: JsonOpt = None,
        html_path: HtmlOpt = None,
        sarif_path: SarifOpt = None,
        junit_path: JunitOpt = None,
        fail_on: FailOnOpt = None,
        seed: SeedOpt = 0,
        quiet: QuietOpt = False,
        debug: DebugOpt = False,
    ) -> None:
        """Audit a gateway config: missing auth, limits, detection, validation, logging."""
        from mlwarden.serve import gateway_config_report

        setup(quiet=quiet, debug=debug, seed=seed)
        report = gateway_config_report(config, seed=seed, data=data)
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

    @gateway.command("calibrate")
    def calibrate_cmd(
        config: Annotated[Path, typer.Argument(help="Gateway config (YAML).", dir_okay=False)],
        data: Annotated[
            str, typer.Argument(help="Benign inputs: a dataset file or folder, or a bundled set.")
        ],
        out: Annotated[
            Path | None,
            typer.Option(
                "--out", help="Write the calibrated config here (default CONFIG.calibrated.yaml)."
            ),
        ] = None,
        sigma: Annotated[
            float,
            typer.Option(
                "--sigma",
                help="Attack noise per query, fraction of the range (text: one typo a query).",
            ),
        ] = 0.05,
        budget: Annotated[
            int, typer.Option("--budget", help="Queries by which a search must be flagged.")
        ] = 300,
        target: Annotated[
            float, typer.Option("--target", help="Benign false alarms allowed per 1,000 queries.")
        ] = 1.0,
        benign: Annotated[
            int, typer.Option("--benign", help="Benign queries per simulated stream.")
        ] = 1000,
        model: Annotated[
            str | None,
            typer.Option(
                "--model",
                help="The served model (scanned first): labels a sample with no labels, or "
                "one label throughout, by its predictions (PRADA groups queries by class).",
            ),
        ] = None,
        json_path: JsonOpt = None,
        html_path: HtmlOpt = None,
        sarif_path: SarifOpt = None,
        junit_path: JunitOpt = None,
        fail_on: FailOnOpt = None,
        seed: SeedOpt = 0,
        quiet: QuietOpt = False,
        debug: DebugOpt = False,
    ) -> None:
        """Choose detector settings from benign DATA: false alarms <= 1/1,000, search caught."""
        from mlwarden.serve.calibrate import run_calibrate

        setup(quiet=quiet, debug=debug, seed=seed)
        report = run_calibrate(
            config, data, out=out, sigma=sigma, budget=budget, target=target, benign=benign,
            seed=seed, quiet=quiet, model=model,
        )  # fmt: skip
        code = finish(
            report, json_path=json_path, html_path=html_path, sarif_path=sarif_path,
            junit_path=junit_path, fail_on=fail_on,
        )  # fmt: skip
        raise typer.Exit(code)
