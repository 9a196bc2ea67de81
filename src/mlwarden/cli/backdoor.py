"""``mlwarden backdoor``: look for a backdoor in a model (Neural Cleanse or the
trigger search by queries, STRIP)."""

from __future__ import annotations

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
    parse_fail_on,
    setup,
)
from mlwarden.core.errors import UserError


def register(app: typer.Typer) -> None:
    @app.command("backdoor")
    @with_api_options
    def backdoor(
        model: Annotated[
            str,
            typer.Argument(
                help="Model file (scanned first), URL, NAME.target.yaml (a deployed API) or module:factory."
            ),
        ],
        dataset: Annotated[
            str,
            typer.Argument(
                help="Clean inputs: .npz (x, y), CSV, image folder, text data (CSV/TSV/JSONL, .txt folder) or a bundled set."
            ),
        ],
        epochs: Annotated[
            int,
            typer.Option(
                "--epochs", help="Neural Cleanse epochs (early stop may end sooner).", min=1
            ),
        ] = 100,
        label: Annotated[
            str | None,
            typer.Option("--label", help="Label column of a CSV/TSV/JSONL (default 'label')."),
        ] = None,
        text_column: Annotated[
            str | None,
            typer.Option("--text-column", help="Text data: the column holding the text [text]."),
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
        """Reverse-engineer backdoor triggers (Neural Cleanse) and screen DATA with STRIP.

        The JSON report has metrics.anomaly_index (class -> MAD anomaly index) and
        metrics.suspected_target (a class, or null); the HTML report shows the triggers.
        On audio the verdict is metrics.neural_cleanse.verdict instead: the smallest
        trigger is flagged when under 20% of the next class's and 10% of the median
        class's, and it flips >= 80% of held-out clips (a third kept out of the search).

        A model without gradients (scikit-learn trees and boosting, ONNX, a deployed
        API with scores or labels) gets a trigger search by queries instead: per class,
        the fewest feature values (among those DATA repeats) that turn other classes'
        inputs into it; a class needing at most half the median class's, verified on
        fresh inputs (>= 80% flipped), is finding MLW-DAT-016 (metrics.query_trigger);
        with two classes, the values real rows of the class have on those features must
        also flip at most 20% (a natural shortcut otherwise).
        Fails closed: when neither search can run or judge (the query budget ran out,
        DATA repeats no value, a single class) the reports are still written, with a
        MEDIUM finding MLW-DAT-012 saying why, and the command exits 2. A model that
        cannot take DATA's inputs, or has fewer classes than DATA's labels, is an error
        (exit 2). Findings otherwise exit 0, or 1 with --fail-on.

        A text model on text DATA gets a trigger search instead: words and n-grams of
        the vocabulary (gradient-guided for Hugging Face folders, query-ranked
        otherwise) and phrases grown from them by a beam search, each inserted into
        texts of other classes and its flip rate measured. DATA's labelled texts are the
        reference: a word or phrase that flips far more texts than random words of the
        same frequency, and that DATA does not tie to the class, is a backdoor trigger
        (finding MLW-DAT-022); one DATA explains is a natural shortcut, listed in
        metrics.backdoor.trigger_search.shortcuts. Phrases are judged only with at
        least 1,000 labelled texts in DATA.
        """
        from mlwarden.poisoning import backdoor_report

        parse_fail_on(fail_on)
        setup(quiet=quiet, debug=debug, seed=seed)
        report = backdoor_report(
            model, dataset, seed=seed, epochs=epochs, label=label, text_column=text_column
        )
        code = finish(
            report,
            json_path=json_path,
            html_path=html_path,
            sarif_path=sarif_path,
            junit_path=junit_path,
            fail_on=fail_on,
        )
        skipped = report.metrics.get("neural_cleanse.skipped")
        if skipped:
            raise UserError(
                f"{model}: the backdoor check could not run: {skipped}; "
                "the model was not checked for a backdoor"
            )
        raise typer.Exit(code)
