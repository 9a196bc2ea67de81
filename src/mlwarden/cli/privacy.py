"""``mlwarden privacy`` (membership inference) and ``mlwarden extract`` (model stealing)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlwarden.cli.api_options import with_api_options
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

ATTACK_NAMES = ("auto", "lira", "rmia", "loss", "shadow", "label-only")
ACCESS_NAMES = ("white", "score", "label")


def _access(value: str | None) -> str | None:
    if value is not None and value not in ACCESS_NAMES:
        raise UserError(f"--access must be white, score or label; got {value!r}")
    return value


def _access_option(who: str) -> object:
    return typer.Option(
        "--access",
        help=f"What the {who} gets: score | label (lower than the model allows, never higher). "
        "Default: all the model allows.",
    )


def parse_budgets(text: str) -> list[int]:
    """``"100,1000,5000"`` -> ``[100, 1000, 5000]``; a clear error for anything else."""
    out = []
    for part in text.split(","):
        part = part.strip().replace("_", "")
        if not part:
            continue
        try:
            value = int(part)
        except ValueError:
            raise UserError(
                f"--budget: {part!r} is not a whole number of queries; expected e.g. 100,1000,5000"
            ) from None
        if value < 1:
            raise UserError(f"--budget: budgets must be at least 1 query; got {value}")
        out.append(value)
    if not out:
        raise UserError("--budget: give at least one query budget, e.g. 100,1000,5000")
    return sorted(set(out))


def register(app: typer.Typer) -> None:
    @app.command("privacy")
    @with_api_options
    def privacy(
        model: Annotated[
            str,
            typer.Argument(
                help="Model file (scanned first), URL, NAME.target.yaml (a deployed API) or module:factory."
            ),
        ],
        train: Annotated[
            Path, typer.Option("--train", help="The model's training records (.npz with x, y).")
        ],
        holdout: Annotated[
            Path, typer.Option("--holdout", help="Records the model never saw (.npz with x, y).")
        ],
        attack: Annotated[
            str,
            typer.Option(
                "--attack",
                help="auto | lira | rmia | loss | shadow | label-only. auto: lira when the "
                "model returns scores, label-only when it returns labels only.",
            ),
        ] = "auto",
        access: Annotated[str | None, _access_option("attacker")] = None,
        shadows: Annotated[
            int, typer.Option("--shadows", help="Shadow/reference models to train.")
        ] = 16,
        trainer: Annotated[
            str | None,
            typer.Option(
                "--trainer", help="Your training recipe as module:function, train(x, y) -> model."
            ),
        ] = None,
        executor: Annotated[
            str, typer.Option("--executor", help="local | process[=N] | ray[=ADDRESS].")
        ] = "local",
        augment: Annotated[
            int, typer.Option("--augment", help="Query views per record (images: shifts).")
        ] = 1,
        offline: Annotated[
            bool, typer.Option("--offline", help="LiRA/RMIA offline (out-models only).")
        ] = False,
        defend: Annotated[
            bool,
            typer.Option(
                "--defend", help="Re-measure with output hardening, DP-SGD, regularisation."
            ),
        ] = False,
        dp_epsilon: Annotated[
            float, typer.Option("--dp-epsilon", help="Target epsilon for --defend DP-SGD.")
        ] = 8.0,
        json_path: JsonOpt = None,
        html_path: HtmlOpt = None,
        sarif_path: SarifOpt = None,
        junit_path: JunitOpt = None,
        fail_on: FailOnOpt = None,
        seed: SeedOpt = 0,
        quiet: QuietOpt = False,
        debug: DebugOpt = False,
    ) -> None:
        """Membership inference: can an attacker tell your training records from others?"""
        from mlwarden.privacy import privacy_report

        setup(quiet=quiet, debug=debug, seed=seed)
        if attack not in ATTACK_NAMES:
            raise UserError(
                f"--attack {attack!r} is not known; choose one of: {', '.join(ATTACK_NAMES)}"
            )
        if shadows < 2 and attack in ("lira", "rmia", "shadow"):
            raise UserError(f"--shadows must be at least 2 for --attack {attack}; got {shadows}")
        if augment < 1:
            raise UserError(f"--augment must be at least 1 (the record itself); got {augment}")
        report = privacy_report(
            model,
            str(train),
            str(holdout),
            attack=attack,
            shadows=shadows,
            trainer=trainer,
            access=_access(access),
            executor=executor,
            views=augment,
            online=not offline,
            defend=defend,
            dp_epsilon=dp_epsilon,
            seed=seed,
        )
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

    @app.command("extract")
    @with_api_options
    def extract(
        model: Annotated[
            str,
            typer.Argument(
                help="Model file (scanned first), URL, NAME.target.yaml (a deployed API) or module:factory."
            ),
        ],
        pool: Annotated[
            Path, typer.Option("--pool", help="Natural inputs the attacker holds (.npz with x, y).")
        ],
        budget: Annotated[
            str, typer.Option("--budget", help="Query budgets, comma-separated.")
        ] = "100,1000,5000",
        strategy: Annotated[
            str,
            typer.Option(
                "--strategy", help="Query selection: pool, random, adaptive (comma-separated)."
            ),
        ] = "pool",
        labels_only: Annotated[
            bool,
            typer.Option("--labels-only", help="The attacker sees labels only (= --access label)."),
        ] = False,
        access: Annotated[str | None, _access_option("attacker")] = None,
        test: Annotated[
            Path | None,
            typer.Option("--test", help="Held-out data for fidelity (default: 30% of the pool)."),
        ] = None,
        defend: Annotated[
            bool, typer.Option("--defend", help="Re-measure behind output hardening.")
        ] = False,
        json_path: JsonOpt = None,
        html_path: HtmlOpt = None,
        sarif_path: SarifOpt = None,
        junit_path: JunitOpt = None,
        fail_on: FailOnOpt = None,
        seed: SeedOpt = 0,
        quiet: QuietOpt = False,
        debug: DebugOpt = False,
    ) -> None:
        """Model extraction: how well can a copy be trained from your model's answers?"""
        from mlwarden.privacy import extract_report
        from mlwarden.privacy.extraction import STRATEGIES

        setup(quiet=quiet, debug=debug, seed=seed)
        budgets = parse_budgets(budget)
        strategies = [s.strip() for s in strategy.split(",") if s.strip()]
        bad = [s for s in strategies if s not in STRATEGIES]
        if bad or not strategies:
            raise UserError(f"--strategy {strategy!r}: choose from {', '.join(STRATEGIES)}")
        report = extract_report(
            model,
            str(pool),
            budgets,
            strategies=strategies,
            labels_only=labels_only,
            access=_access(access),
            test=str(test) if test is not None else None,
            defend=defend,
            seed=seed,
        )
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
