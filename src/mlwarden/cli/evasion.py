"""``mlwarden evasion``: how easily can inputs be perturbed to flip the model's decisions?"""

from __future__ import annotations

from typing import Annotated, Any

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


def parse_defence(text: str) -> list[dict[str, Any]]:
    """``"jpeg:quality=75,median:size=3"`` -> transform chain spec for ``build_chain``."""
    spec: list[dict[str, Any]] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        kind, _, params = part.partition(":")
        entry: dict[str, Any] = {"type": kind.strip()}
        for item in params.split(";") if params else []:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise UserError(
                    f"--defend: {item!r} is not key=value; expected e.g. jpeg:quality=75,median:size=3"
                )
            try:
                entry[key.strip()] = (
                    int(value) if value.strip().lstrip("-").isdigit() else float(value)
                )
            except ValueError:
                raise UserError(f"--defend: {key}={value!r} is not a number") from None
        spec.append(entry)
    if not spec:
        raise UserError("--defend: give at least one transform, e.g. jpeg:quality=75")
    from mlwarden.defenses.transforms import build_chain

    build_chain(spec)  # validates names and parameters now, with a clear message
    return spec


def _constraints(
    immutable: str | None, integer: str, ranges: str, one_hot: list[str] | None, given: bool
) -> dict[str, Any] | None:
    """The tabular constraint spec of :func:`mlwarden.evasion.tabular.build_space`;
    ``None`` (the defaults) when no tabular flag was given, so other data is not refused."""
    if not given:
        return None
    spec: dict[str, Any] = {"ranges": ranges, "integer": integer}
    if integer == "none":
        spec["integer"] = []
    if immutable:
        spec["immutable"] = immutable
    if one_hot:
        spec["one_hot"] = [group.split(",") for group in one_hot]
    return spec


def register(app: typer.Typer) -> None:
    @app.command("evasion")
    @with_api_options
    def evasion(
        inputs: Annotated[
            list[str],
            typer.Argument(
                help="MODEL... DATA: one or more models (TorchScript, .pt2, ONNX, scikit-learn "
                "file — scanned first —, Hugging Face folder, http(s) URL, NAME.target.yaml describing a "
                "deployed API, module:factory), then "
                "the data (.npz with x and y, CSV, image folder, audio class folder or path,label "
                "CSV of audio files, digits | breast-cancer | mnist5k; text: CSV/TSV/JSONL with a "
                "text column, a folder of .txt files per class, tweets).",
                metavar="MODEL... DATA",
            ),
        ],
        norm: Annotated[str, typer.Option("--norm", help="Perturbation norm: linf | l2.")] = "linf",
        eps: Annotated[
            float, typer.Option("--eps", help="Perturbation budget, in input units.")
        ] = 0.3,
        eps_relative: Annotated[
            float | None,
            typer.Option(
                "--eps-relative",
                help="Tabular: let each feature move by this times its spread on the data "
                "(see --spread), e.g. 0.1; replaces --eps (raw input units).",
            ),
        ] = None,
        spread: Annotated[
            str,
            typer.Option("--spread", help="Tabular: the spread --eps-relative scales: std | iqr."),
        ] = "std",
        immutable: Annotated[
            str | None,
            typer.Option(
                "--immutable",
                help="Tabular: columns (names or indices, comma-separated) an attacker cannot change.",
            ),
        ] = None,
        integer: Annotated[
            str,
            typer.Option(
                "--integer",
                help="Tabular: whole-number columns (comma-separated), or auto (those whose "
                "values are all whole numbers in the data), or none.",
            ),
        ] = "auto",
        feature_ranges: Annotated[
            str,
            typer.Option(
                "--feature-ranges",
                help="Tabular: data (each column stays within its range in the data) | global "
                "(only the dataset's overall bounds).",
            ),
        ] = "data",
        one_hot: Annotated[
            list[str] | None,
            typer.Option(
                "--one-hot",
                help="Tabular: comma-separated columns that one-hot encode one category "
                "(repeatable, one group each).",
            ),
        ] = None,
        snr_db: Annotated[
            float | None,
            typer.Option(
                "--snr-db",
                help="Audio: budget as the minimum signal-to-perturbation ratio per clip, in dB "
                "(L2 energy; replaces --eps and --norm).",
            ),
        ] = None,
        sample_rate: Annotated[
            int | None,
            typer.Option("--sample-rate", help="Audio: resample clips to this rate (Hz) on load."),
        ] = None,
        clip_seconds: Annotated[
            float | None,
            typer.Option(
                "--clip-seconds",
                help="Audio: pad or crop every clip to this length (default: the first file's).",
            ),
        ] = None,
        save_adversarial: Annotated[
            str | None,
            typer.Option(
                "--save-adversarial",
                help="Write the successful adversarial inputs here: text -> JSONL "
                "{index, text, adversarial, label, prediction, queries}; images/tables -> .npz (x_adv, y, "
                "prediction, index); audio -> a folder of 32-bit float WAVs at the inputs' "
                "relative paths.",
            ),
        ] = None,
        access: Annotated[
            str | None,
            typer.Option(
                "--access",
                help="What the attacker gets: white (gradients) | score | label. Default: all the model allows.",
            ),
        ] = None,
        limit: Annotated[
            int,
            typer.Option("--limit", help="Evaluate a seeded random subset of this many inputs."),
        ] = 500,
        budget: Annotated[
            str,
            typer.Option(
                "--budget",
                help="fast (default: APGD-CE + APGD-T + Square, minutes; a lower bound on "
                "attack strength) | standard (the full AutoAttack ensemble with FAB-T, "
                "CLEVER and longer checks) | quick (smoke test, not a claim).",
            ),
        ] = "fast",
        defend: Annotated[
            str | None,
            typer.Option(
                "--defend",
                help="Put an input-restoration chain in front of the model and attack it "
                "adaptively (BPDA/EOT), e.g. jpeg:quality=75,median:size=3.",
            ),
        ] = None,
        max_change: Annotated[
            float,
            typer.Option(
                "--max-change",
                help="Text: fraction r of the words an attack may change (at most "
                "max(int(r*n),1) of n words, each a WordNet synonym or <= 2 character edits).",
            ),
        ] = 0.2,
        text_column: Annotated[
            str | None,
            typer.Option("--text-column", help="Text data: the column holding the text [text]."),
        ] = None,
        label: Annotated[
            str | None,
            typer.Option("--label", help="The label column of a CSV/TSV/JSONL [label]."),
        ] = None,
        recipe: Annotated[
            list[str] | None,
            typer.Option(
                "--recipe",
                help="Text attacks to run (repeatable): combined | pwws | deepwordbug | hotflip | "
                "textfooler (GloVe neighbours; the text-embeddings extra). "
                "Default: hotflip then combined for white-box models, else deepwordbug then "
                "combined (a sample broken by the first costs only its queries).",
            ),
        ] = None,
        normalise: Annotated[
            bool,
            typer.Option(
                "--normalise",
                help="Text: put input normalisation (NFKC, invisible characters, homoglyphs) "
                "in front of the model; reports the non-adaptive and the adaptive figure.",
            ),
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
        """Attack the models within an eps-ball (text: within a word budget) and report the
        accuracy that survives."""
        from mlwarden.evasion import evasion_report

        setup(quiet=quiet, debug=debug, seed=seed)
        if len(inputs) < 2:
            raise UserError(
                "give at least one MODEL and then DATA, e.g. mlwarden evasion model.pt digits"
            )
        if norm not in ("linf", "l2"):
            raise UserError(f"--norm must be linf or l2; got {norm!r}")
        if not eps > 0:
            raise UserError(f"--eps must be a positive number; got {eps}")
        if snr_db is not None and not -60 <= snr_db <= 120:
            raise UserError(f"--snr-db must be between -60 and 120 dB; got {snr_db}")
        if access is not None and access not in ("white", "score", "label"):
            raise UserError(f"--access must be white, score or label; got {access!r}")
        if limit < 1:
            raise UserError(f"--limit must be at least 1; got {limit}")
        if eps_relative is not None and not eps_relative > 0:
            raise UserError(f"--eps-relative must be a positive number; got {eps_relative}")
        if spread not in ("std", "iqr"):
            raise UserError(f"--spread must be std or iqr; got {spread!r}")
        if feature_ranges not in ("data", "global"):
            raise UserError(f"--feature-ranges must be data or global; got {feature_ranges!r}")
        tabular_flags_given = bool(
            eps_relative is not None or immutable or one_hot or integer != "auto"
            or feature_ranges != "data"
        )  # fmt: skip
        if not 0 < max_change <= 1:
            raise UserError(f"--max-change must be in (0, 1]; got {max_change}")
        from mlwarden.core.modality import detect_data

        if detect_data(inputs[-1], text_column=text_column).name == "text":
            from mlwarden.evasion.text.report import text_evasion_report

            report = text_evasion_report(
                inputs[:-1],
                inputs[-1],
                max_change=max_change,
                limit=limit,
                seed=seed,
                recipes=recipe,
                text_column=text_column,
                label=label,
                save_adversarial=save_adversarial,
                normalise=normalise,
                access=access,
            )
        else:
            if budget not in ("fast", "standard", "quick"):
                raise UserError(f"--budget must be fast, standard or quick; got {budget!r}")
            transforms = parse_defence(defend) if defend else None
            report = evasion_report(
                inputs[:-1],
                inputs[-1],
                norm=norm,
                eps=eps,
                access=access,
                seed=seed,
                limit=limit,
                budget=budget,
                transforms=transforms,
                snr_db=snr_db,
                sample_rate=sample_rate,
                clip_seconds=clip_seconds,
                save_adversarial=save_adversarial,
                label=label,
                eps_relative=eps_relative,
                spread=spread,
                constraints=_constraints(
                    immutable, integer, feature_ranges, one_hot, tabular_flags_given
                ),
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
