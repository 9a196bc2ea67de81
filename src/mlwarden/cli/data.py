"""``mlwarden data``: audit a training set (labels, duplicates, outliers, sensitive data, poisoning)."""

from __future__ import annotations

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
    parse_fail_on,
    setup,
)
from mlwarden.core.errors import UserError


def register(app: typer.Typer) -> None:
    @app.command("data")
    def data(
        dataset: Annotated[
            str,
            typer.Argument(
                help="Training data: .npz (x, y), CSV, text data (CSV/TSV/JSONL, .txt folder), image folder, or digits | breast-cancer | mnist5k | tweets."
            ),
        ],
        model: Annotated[
            str | None,
            typer.Option(
                "--model",
                help="A model trained on DATA (scanned first): enables poisoning detectors.",
            ),
        ] = None,
        trainer: Annotated[
            str | None,
            typer.Option(
                "--trainer",
                help="Your training recipe as module:function, train(x, y) -> model: trains, detects, drops flagged samples and retrains.",
            ),
        ] = None,
        label: Annotated[
            str | None,
            typer.Option("--label", help="Label column of a CSV/TSV/JSONL (default 'label')."),
        ] = None,
        reference: Annotated[
            str | None,
            typer.Option(
                "--reference",
                help="Trusted labelled rows of the same inputs (a held-out set, an earlier release): name the relabelled rows when a whole class was flipped with none of it left.",
            ),
        ] = None,
        text_column: Annotated[
            str | None,
            typer.Option("--text-column", help="Text data: the column holding the text [text]."),
        ] = None,
        pii_config: Annotated[
            str | None,
            typer.Option(
                "--pii-config",
                help="YAML/JSON file for the sensitive-data scan: disable (types), phone_regions, patterns (your own: kind, category, regex, context).",
            ),
        ] = None,
        pii_disable: Annotated[
            list[str] | None,
            typer.Option(
                "--pii-disable",
                help="Switch a sensitive-data type off (repeatable), e.g. person_name or ip_address.",
            ),
        ] = None,
        nc_epochs: Annotated[
            int, typer.Option("--nc-epochs", help="Neural Cleanse epochs (0 skips it).", min=0)
        ] = 100,
        json_path: JsonOpt = None,
        html_path: HtmlOpt = None,
        sarif_path: SarifOpt = None,
        junit_path: JunitOpt = None,
        fail_on: FailOnOpt = None,
        seed: SeedOpt = 0,
        quiet: QuietOpt = False,
        debug: DebugOpt = False,
    ) -> None:
        """Audit training data: label issues, duplicates, outliers, personal data and secrets,
        and backdoor poisoning when a model or trainer is given.

        Text data (CSV/TSV/JSONL with a text column, a folder of .txt files per class,
        or tweets) is checked for trigger words and phrases tied to one label
        (BadNL-style backdoors), exact and near-duplicate texts (conflicting labels
        called out) and label issues, besides personal data and secrets. With --model
        (a text model trained on DATA) or --trainer (train(texts, labels) -> model, e.g.
        mlwarden.core.textmodels:tfidf_pipeline) the model is also searched for the
        data's candidate n-grams as triggers (MLW-DAT-022) and screened with STRIP on
        text; a trainer is retrained without the flagged texts (MLW-DAT-009: clean
        accuracy and the trigger's attack success rate before and after).

        The JSON report lists suspicious samples at the top-level key "suspicious" as
        {"index", "score", "p_value", "detectors", "reasons"}, most suspicious first:
        rows a poisoning detector flagged, each detector's score calibrated to a p-value
        on the data's own clean classes, combined by weighted Bonferroni and kept by
        Benjamini-Hochberg at 0.05 (score = 1 - p). Rows holding personal data or
        secrets are listed there too with the type and the column (values are masked in
        every output). Label issues, duplicates and outliers are listed apart, under
        "artifacts" -> "data_issues".

        Fails closed (exit 2, one line): a CSV that is empty, header-only, ragged or
        non-numeric (unless the sensitive-data scan found something to report), fewer
        than 20 samples, --label with a non-CSV input, a --model that cannot take DATA's
        inputs or has fewer classes than its labels, and a --trainer that raises.
        """
        from mlwarden.poisoning import data_report
        from mlwarden.poisoning.pii import load_config

        parse_fail_on(fail_on)
        config = load_config(pii_config, pii_disable) if pii_config or pii_disable else None
        if model is not None and trainer is not None:
            raise UserError("give --model or --trainer, not both")
        setup(quiet=quiet, debug=debug, seed=seed)
        report = data_report(
            dataset,
            model=model,
            trainer=trainer,
            label=label,
            seed=seed,
            neural_cleanse_epochs=nc_epochs,
            pii_config=config,
            text_column=text_column,
            reference=reference,
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
