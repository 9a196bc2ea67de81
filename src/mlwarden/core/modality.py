"""The modality table: what each kind of input (image, tabular, text, ...) means to a check.

A modality is defined once, here, as one :class:`ModalitySpec` row:

* ``loader`` — ``"module:function"`` that loads a data path into a
  :class:`~mlwarden.core.data.Dataset` (imported lazily: no cycles, no heavy imports);
* ``target_input`` — what a Target's ``predict`` takes (``"array"``: a numeric batch;
  ``"texts"``: a list of strings; ``"waveform"``: a batch of samples);
* ``budget`` / ``budget_option`` — what a perturbation budget means and the CLI option
  that sets it (an eps-ball in input units; a fraction of words changed);
* ``example`` — how a report shows an adversarial example;
* ``restoration`` — the input-restoration steps that apply (names understood by
  ``mlwarden.defenses``);
* ``claims_data`` / ``claims_model`` — detectors: does this data path (or this loaded
  model) belong to the modality? Rows are tried in table order; the first that claims
  a path wins, so specific rows (text, audio) come before the generic ones.

Attacks and detectors declare the modalities they support
(``modalities = ("text",)``); commands pick from the table with :func:`detect`.

Adding a modality = one row in :data:`MODALITIES` (with :func:`register`) plus its
own loader and attack modules; no other check changes.

Example::

    spec = detect(model=None, data="reviews.csv")      # the "text" row
    spec.budget_option                                  # "--max-change"
    detect(model=pipeline, data="digits").name          # error: model takes text, data is not
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlwarden.core.errors import UserError

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
)
TEXT_SUFFIXES = frozenset({".txt"})
#: Bundled data sets per modality (names ``load_dataset`` understands).
BUNDLED_TEXT = ("tweets",)


@dataclass(frozen=True)
class ModalitySpec:
    """One row of the modality table (see the module docs for each field)."""

    name: str
    loader: str
    target_input: str
    budget: str
    budget_option: str
    example: str
    restoration: tuple[str, ...] = ()
    claims_data: Callable[[Path, dict[str, Any]], bool] | None = field(default=None, repr=False)
    claims_model: Callable[[Any], bool] | None = field(default=None, repr=False)

    def load(self, path: str | Path, **options: Any) -> Any:
        """Load ``path`` with this modality's loader (``options``: e.g. ``text_column``)."""
        import importlib

        module, _, func = self.loader.partition(":")
        return getattr(importlib.import_module(module), func)(path, **options)


# -- detectors ------------------------------------------------------------------------
def _first_line(path: Path, limit: int = 65536) -> str:
    with path.open("rb") as fh:
        head = fh.read(limit)
    return head.decode("utf-8-sig", "replace").splitlines()[0] if head else ""


def _text_data(path: Path, opts: dict[str, Any]) -> bool:
    """JSONL, a CSV/TSV whose header names the text column, or a folder of ``.txt`` files."""
    if str(path) in BUNDLED_TEXT:
        return True
    if path.is_dir():  # at least two classes of .txt files (a lone readme.txt is not data)
        return (
            sum(
                any(f.suffix.lower() in TEXT_SUFFIXES for f in sub.iterdir())
                for sub in path.iterdir()
                if sub.is_dir()
            )
            >= 2
        )
    suffix = path.suffix.lower()
    if suffix in {".jsonl", ".ndjson"}:
        return True
    if suffix not in {".csv", ".tsv"} or not path.is_file():
        return False
    column = opts.get("text_column") or "text"
    try:
        header = _first_line(path)
        delim = "\t" if suffix == ".tsv" or header.count("\t") > header.count(",") else ","
        names = [h.strip() for h in next(csv.reader([header], delimiter=delim), [])]
    except (OSError, csv.Error):
        return False
    return column in names


def _image_data(path: Path, opts: dict[str, Any]) -> bool:
    if not path.is_dir():
        return False
    return any(
        f.suffix.lower() in IMAGE_SUFFIXES
        for sub in path.iterdir()
        if sub.is_dir()
        for f in sub.iterdir()
    )


def _text_model(model: Any) -> bool:
    """A Target declared as taking texts, or a scikit-learn estimator whose first step
    turns raw strings into features (a vectorizer: it has ``build_analyzer``)."""
    if getattr(model, "modality", None) == "text":
        return True
    first = model
    steps = getattr(model, "steps", None)
    if isinstance(steps, list) and steps:
        first = steps[0][1]
    return hasattr(first, "build_analyzer") or type(first).__name__ in {
        "HashingVectorizer",
        "TfidfVectorizer",
        "CountVectorizer",
    }


# -- the table ------------------------------------------------------------------------
MODALITIES: dict[str, ModalitySpec] = {}


def register(spec: ModalitySpec) -> ModalitySpec:
    """Add (or replace) a row; rows are tried in insertion order."""
    MODALITIES[spec.name] = spec
    return spec


register(
    ModalitySpec(
        name="text",
        loader="mlwarden.core.textdata:load_text_dataset",
        target_input="texts",
        budget="words changed: at most max(int(r * n), 1) of n words, each a WordNet "
        "synonym or a character edit of at most 2",
        budget_option="--max-change",
        example="original and adversarial text, changed words highlighted",
        restoration=("nfkc", "strip_invisible", "fold_homoglyphs", "spelling"),
        claims_data=_text_data,
        claims_model=_text_model,
    )
)


def _audio_data(path: Path, opts: dict[str, Any]) -> bool:
    from mlwarden.core.audio import is_audio_dataset

    return is_audio_dataset(path)


register(
    ModalitySpec(
        name="audio",
        loader="mlwarden.core.audio:load_audio",
        target_input="waveform",
        budget="SNR ball: each clip keeps at least D dB of signal over perturbation "
        "(L2 energy), i.e. an L2 radius of ||x|| / 10^(D/20) per clip",
        budget_option="--snr-db",
        example="original and adversarial audio players with waveform and spectrogram",
        restoration=("resample", "lowpass", "quantize", "mp3", "opus", "noise", "random_chain"),
        claims_data=_audio_data,
    )
)
register(
    ModalitySpec(
        name="image",
        loader="mlwarden.core.data:load_dataset",
        target_input="array",
        budget="Lp eps-ball in input units",
        budget_option="--eps",
        example="clean and adversarial image side by side",
        restoration=("jpeg", "bit_depth", "median", "downup", "random_resize_pad"),
        claims_data=_image_data,
    )
)
register(
    ModalitySpec(
        name="tabular",
        loader="mlwarden.core.data:load_dataset",
        target_input="array",
        budget="Lp eps-ball in input units (per-feature bounds kept)",
        budget_option="--eps",
        example="feature values before and after",
    )
)


def get(name: str) -> ModalitySpec:
    """The row for ``name``; a clear error listing the known ones otherwise."""
    try:
        return MODALITIES[name]
    except KeyError:
        raise UserError(f"unknown modality {name!r}; known: {', '.join(MODALITIES)}") from None


def detect_data(data: Any, **options: Any) -> ModalitySpec:
    """The modality of a data spec (path, bundled name) or a loaded Dataset.

    Numeric files (``.npz``, numeric CSV) are ``tabular`` here; the array loader
    refines them to ``image`` from their shape.
    """
    declared = getattr(data, "modality", None)
    if isinstance(declared, str):
        return get(declared)
    path = Path(str(data))
    for spec in MODALITIES.values():
        if spec.claims_data is not None:
            try:
                if spec.claims_data(path, options):
                    return spec
            except OSError:
                continue
    return MODALITIES["tabular"]


def detect_model(model: Any) -> ModalitySpec | None:
    """The modality a loaded model (or Target) takes, or ``None`` when it does not say."""
    for spec in MODALITIES.values():
        if spec.claims_model is not None and spec.claims_model(model):
            return spec
    return None


def detect(model: Any = None, data: Any = None, **options: Any) -> ModalitySpec:
    """One modality from the model and the data; a one-line error when they disagree."""
    from_data = detect_data(data, **options) if data is not None else None
    from_model = detect_model(model) if model is not None else None
    if from_model is not None and from_data is not None:
        numeric = {"image", "tabular"}
        if from_model.name != from_data.name and not {from_model.name, from_data.name} <= numeric:
            raise UserError(
                f"the model takes {from_model.name} ({from_model.target_input}) but the data "
                f"is {from_data.name}; give data of the model's modality"
            )
        return from_model
    spec = from_model or from_data
    if spec is None:
        raise UserError("cannot tell the modality: give a model or data")
    return spec
