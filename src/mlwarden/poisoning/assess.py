"""The dataset audit (``mlwarden data``) and the model backdoor scan (``mlwarden backdoor``).

:func:`data_report` checks a training set for label issues, duplicates, outliers and
sensitive data, for feature triggers planted in the data (no model needed,
:mod:`~mlwarden.poisoning.feature_triggers`) and, given a model or a training recipe,
for backdoor poisoning
(activation clustering, spectral signatures, Neural Cleanse trigger occlusion); with a
recipe it also drops the flagged samples, retrains and reports the defence
effectiveness rate. :func:`backdoor_report` reverse-engineers triggers with Neural
Cleanse and runs STRIP on the given data.

Every poisoning detector is listed in ``metrics["poisoning.detectors"]`` (ran or not,
why not, how many samples it flagged) and in ``report.checks``; one that applies to
the input but could not run is finding MLW-DAT-013, never a silent all-clear.

The ranked list of suspicious samples is ``report.suspicious`` (top-level ``suspicious`` in JSON): a list of
``{"index": int, "score": float, "reasons": [str, ...]}``, most suspicious first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mlwarden.core.data import Dataset, load_dataset
from mlwarden.core.errors import InputFileError, UserError
from mlwarden.core.findings import Finding, Report, Severity
from mlwarden.poisoning import detect_data as dd
from mlwarden.poisoning import detect_model as dm
from mlwarden.poisoning.activations import penultimate
from mlwarden.poisoning.label_flips import relabelled_classes
from mlwarden.poisoning.pii import LABELS, SECRET_KINDS, PiiConfig, PiiScan, scan_file, scan_records

POISON_ATLAS = ["AML.T0020", "AML.T0019", "AML.T0043.004"]
DATA_MITIGATIONS = ["AML.M0007", "AML.M0025"]
TEXT_SUFFIXES = {".csv", ".tsv", ".txt", ".text", ".jsonl", ".json", ".log", ".md"}
#: Most suspicious samples listed in the report.
MAX_SUSPICIOUS = 1000
#: Samples Neural Cleanse optimises on (a random subset of the data).
NC_SAMPLES = 1000
#: Fewest samples an audit accepts: below this no statistic means anything.
MIN_SAMPLES = 20
TABLE_SUFFIXES = {".csv", ".tsv"}

#: Rows listed per sensitive-data finding (evidence and SARIF locations).
PII_ROWS_LISTED = 50


def _load_model(spec: Any) -> Any:
    if not isinstance(spec, str | Path):
        return spec
    from mlwarden.supplychain import load_target

    return load_target(str(spec))


def _no_gradients_reason(target: Any) -> str:
    """Why Neural Cleanse cannot run on this target, in the user's terms."""
    from mlwarden.core.target import HttpTarget

    if isinstance(target, HttpTarget):
        return (
            f"{getattr(target, 'name', 'the model')} is a deployed API (a URL or target file) "
            f"with {target.access} access: Neural Cleanse optimises a trigger through the "
            "model's gradients, which only its weights give; run mlwarden backdoor on the "
            "model file itself"
        )
    return "the model gives no gradients (not a torch model)"


def _torch_module(model: Any) -> Any:
    import torch

    if isinstance(model, torch.nn.Module):
        return model
    module = getattr(model, "module", None)
    return module if isinstance(module, torch.nn.Module) else None


def _name(data: Any) -> str:
    return data.name if isinstance(data, Dataset) else str(data)


def _check_label_option(data: Any, label: str | None) -> None:
    """``--label`` names a CSV column: refuse it for any other kind of input."""
    if label is None:
        return
    if isinstance(data, str | Path) and Path(data).is_file():
        path = Path(data)
        if path.suffix.lower() in TABLE_SUFFIXES | {".txt"} or _is_text(path):
            return
    raise UserError(
        f"--label {label!r} names a CSV column, but {_name(data)} is not a CSV file; "
        "leave --label out (an .npz holds its labels in y)"
    )


def _check_size(ds: Dataset) -> None:
    if len(ds) < MIN_SAMPLES:
        raise UserError(
            f"{ds.name}: {len(ds)} sample(s) is too little data to audit; "
            f"give at least {MIN_SAMPLES} labelled samples"
        )


def _last_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[-1] if lines else type(exc).__name__
    return text[:300]


def _error_text(exc: BaseException) -> str:
    text = _last_line(exc)
    name = type(exc).__name__
    return text if text.startswith(name) else f"{name}: {text}"


def _expected_input(module: Any) -> str | None:
    """What the first weighted layer of a torch module takes, in words (best effort)."""
    try:
        for sub in module.modules():
            weight = getattr(sub, "weight", None)
            shape = tuple(getattr(weight, "shape", ()))
            if len(shape) == 2:
                return f"{shape[1]} input features"
            if len(shape) in (3, 4, 5):
                return f"{shape[1]} input channels"
    except Exception:  # noqa: BLE001 - a description only; the forward pass decides
        return None
    return None


def _check_model_fits(model: Any, ds: Dataset, name: str) -> int | None:
    """One forward pass on two samples of ``ds``: fail early, in one line, when the
    model cannot take the data's inputs or has no class for some label.

    Returns the model's number of classes (``None`` when its output is not scores).
    """
    probe = ds.x[:2]
    shape = "x".join(str(d) for d in ds.x.shape[1:])
    module = _torch_module(model)
    try:
        if module is not None:
            import torch

            with torch.no_grad():
                out: Any = module(torch.as_tensor(probe, dtype=torch.float32))
            out = out.detach().cpu().numpy() if isinstance(out, torch.Tensor) else None
        else:
            from mlwarden.core.target import as_target

            out = np.asarray(as_target(model).predict(probe))
    except UserError as exc:
        raise UserError(f"model {name} cannot run on {ds.name}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any failure of the user's model is reported
        wants = _expected_input(module) if module is not None else None
        raise UserError(
            f"model {name} does not accept {ds.name}: its samples have shape {shape}"
            + (
                f" ({int(np.prod(ds.x.shape[1:]))} values) but the model takes {wants}"
                if wants
                else ""
            )
            + f" ({_error_text(exc)})"
        ) from None
    if module is None or out is None or out.ndim != 2 or len(out) != len(probe):
        # scikit-learn and remote models map their own class labels
        return None
    classes = int(out.shape[1])
    top = int(ds.y.max()) if len(ds.y) else -1
    if top >= classes:
        raise UserError(
            f"model {name} has {classes} output classes but {ds.name} has label {top}; "
            f"labels must be class indices 0..{classes - 1} of this model"
        )
    return classes


def data_report(
    data: str | Path | Dataset,
    model: Any = None,
    trainer: Any = None,
    *,
    label: str | None = None,
    seed: int = 0,
    neural_cleanse_epochs: int = 100,
    holdout: float = 0.2,
    pii_config: PiiConfig | None = None,
    text_column: str | None = None,
    reference: str | Path | Dataset | None = None,
) -> Report:
    """Audit a training set; see the module docstring.

    ``data``: a dataset spec for :func:`~mlwarden.core.data.load_dataset` (or a
    :class:`Dataset`); CSV, JSONL and text files and folders of ``.txt`` files are also
    scanned for sensitive data (``pii_config``: types switched off, phone regions, the
    user's own patterns; see :func:`mlwarden.poisoning.pii.load_config`). A CSV whose
    text columns hold the personal data still gets the other checks on its numeric
    columns.
    ``model``: a MODEL spec (loaded through the supply-chain scanner) or an in-memory
    model. ``trainer``: ``"module:function"``, a callable ``train(x, y)`` or a
    scikit-learn estimator; the model is trained on the data (minus a ``holdout``
    fraction used to measure accuracy before and after removing flagged samples).
    ``neural_cleanse_epochs``: 0 skips Neural Cleanse. Text data (``text_column``,
    default ``text``) gets the checks of :mod:`mlwarden.poisoning.text_assess`.
    ``reference``: trusted labelled rows of the same inputs (a held-out set, an earlier
    release; a dataset spec or a :class:`Dataset`): where a label has no row left, they
    say which rows of a merged class were relabelled (MLW-DAT-018).
    """
    from threadpoolctl import threadpool_limits

    # per-class matrices are small: threaded BLAS only adds contention
    with threadpool_limits(1):
        return _data_report(
            data,
            model,
            trainer,
            label=label,
            seed=seed,
            neural_cleanse_epochs=neural_cleanse_epochs,
            holdout=holdout,
            pii_config=pii_config,
            text_column=text_column,
            reference=reference,
        )


def _data_report(
    data: str | Path | Dataset,
    model: Any = None,
    trainer: Any = None,
    *,
    label: str | None = None,
    seed: int = 0,
    neural_cleanse_epochs: int = 100,
    holdout: float = 0.2,
    pii_config: PiiConfig | None = None,
    text_column: str | None = None,
    reference: str | Path | Dataset | None = None,
) -> Report:
    """:func:`data_report` without the thread limit."""
    if model is not None and trainer is not None:
        raise UserError("give either a model or a trainer, not both")
    report = Report.new(command="data", seed=seed)
    report.config = {
        "data": _name(data),
        "model": None
        if model is None
        else str(model)
        if isinstance(model, str | Path)
        else type(model).__name__,
        "trainer": None
        if trainer is None
        else str(trainer)
        if isinstance(trainer, str)
        else type(trainer).__name__,
        "label": label,
    }
    _check_label_option(data, label)
    pii = _sensitive_data(report, data, pii_config)
    from mlwarden.poisoning.text_assess import is_text_data

    if is_text_data(data, text_column):
        done = _text_report(report, data, pii, model, trainer, label, text_column, seed)
        if done is not None:
            return done
    try:
        ds = _load_for_audit(report, data, label, pii)
    except InputFileError as exc:
        table = Path(str(data)).suffix.lower() in TABLE_SUFFIXES or (
            pii is not None and pii.format == "csv"
        )
        # fail closed: a table that is not data is an error unless the sensitive-data
        # scan read records and found something to report
        if pii is None or pii.records == 0 or (table and not report.findings):
            raise
        report.data = {"name": _name(data), "format": pii.format, "records": pii.records}
        report.add(
            Finding(
                rule="MLW-DAT-010",
                title="Only the sensitive-data scan ran: the file is not a numeric dataset",
                severity=Severity.INFO,
                description=f"Label, duplicate, outlier and poisoning checks need numeric features and a label column: {exc.problem}",
                recommendation="Give a numeric CSV with a label column (--label), an .npz with x and y, or an image folder to run the other checks.",
                artifact=_name(data),
                check="data",
            )
        )
        report.suspicious = _merge_pii_rows([], pii)[:MAX_SUSPICIOUS]
        return report
    _check_size(ds)
    report.data = ds.describe()
    ref = _reference(reference, ds, label)
    detections: list[dd.Detection] = []
    feats = _compare_features(ds)
    with report.timed("label-issues"):
        try:
            detections.append(dd.label_issues(feats, ds.y, seed=seed))
        except UserError as exc:
            report.metrics["label_issues.skipped"] = str(exc)
            report.add(
                Finding(
                    rule="MLW-DAT-010",
                    title="Label-issue check could not run",
                    severity=Severity.LOW,
                    atlas=["AML.T0059"],
                    mitigations=["AML.M0007"],
                    description=f"Confident learning was skipped: {exc}. Mislabelled or label-flipped samples were not looked for.",
                    recommendation="Give at least two samples of each of at least two classes, or check the labels another way.",
                    artifact=_name(data),
                    check="label-issues",
                )
            )
    with report.timed("duplicates"):
        detections.append(dd.duplicates(ds.x, ds.y))
    with report.timed("outliers"):
        detections.append(dd.outliers(feats, seed=seed))
    trig = _feature_trigger(report, ds, seed)
    cross = _cross_class(report, ds, seed, detections)
    detections.extend([trig, cross])
    poison_dets: list[dd.Detection] = []
    trained = None
    classes: int | None = None
    if trainer is not None:
        from mlwarden.poisoning.mitigate import resolve_trainer

        fit = resolve_trainer(trainer)
        train_ds, test_ds = ds.split(test_size=holdout, seed=seed)
        with report.timed("train"):
            try:
                trained = fit(train_ds.x, train_ds.y)
            except UserError:
                raise
            except Exception as exc:  # noqa: BLE001 - the user's recipe failed: say so in one line
                raise UserError(
                    f"trainer {report.config['trainer']} failed: {_error_text(exc)}"
                ) from None
        if trained is None:
            raise UserError(
                f"trainer {report.config['trainer']} returned None; it must return the trained model"
            )
        classes = _check_model_fits(trained, train_ds, f"from trainer {report.config['trainer']}")
        poison_dets, nc = _poison_detectors(report, trained, train_ds, seed, neural_cleanse_epochs)
        # detections index the training part; map back to the full dataset
        full_index = _split_index(ds, holdout, seed)
        in_train = [
            dd.Detection(d.name, d.scores[full_index], d.flagged[full_index]) for d in (trig, cross)
        ]
        _mitigation(
            report, fit, trained, train_ds, test_ds, [*poison_dets, *in_train], nc, trig.details
        )
        poison_dets = [_remap(d, full_index, len(ds)) for d in poison_dets]
    elif model is not None:
        with report.timed("load-model"):
            trained = _load_model(model)
        classes = _check_model_fits(trained, ds, str(report.config["model"]))
        poison_dets, _ = _poison_detectors(report, trained, ds, seed, neural_cleanse_epochs)
    with report.timed("relabelled-class"):
        detections.append(_relabelled(ds, feats, trained, classes, ref, seed))
    detections.extend(poison_dets)
    _hygiene_findings(report, detections, _name(data))
    _rank(report, detections, ds.y, pii)
    return report


def _text_report(
    report: Report,
    data: Any,
    pii: PiiScan | None,
    model: Any,
    trainer: Any,
    label: str | None,
    text_column: str | None,
    seed: int,
) -> Report | None:
    """The text checks (:mod:`mlwarden.poisoning.text_assess`) on a labelled text set;
    ``None`` when the text holds no labelled set (at least :data:`MIN_SAMPLES` texts, two
    classes of two) and a sensitive-data scan ran (its report then stands alone, as for any text file)."""
    from mlwarden.poisoning.text_assess import text_data_checks

    try:
        ds = (
            data
            if isinstance(data, Dataset)
            else load_dataset(data, label=label, text_column=text_column)
        )
    except InputFileError:
        if pii is None:
            raise
        return None
    counts = np.bincount(ds.y)
    labelled = int(np.sum(counts >= 2)) >= 2  # the label and trigger checks compare classes
    if (len(ds) < MIN_SAMPLES or not labelled) and pii is not None:
        return None
    _check_size(ds)
    report.data = ds.describe()
    target = None
    if model is not None:
        with report.timed("load-model"):
            target = _load_model(model)
    detections = text_data_checks(report, ds, seed=seed, target=target, trainer=trainer)
    _hygiene_findings(report, detections, _name(data))
    _rank(report, detections, ds.y, pii)
    return report


def _text_backdoor(
    report: Report, model: Any, data: Any, label: str | None, text_column: str | None, seed: int
) -> Report:
    """``backdoor`` on a text model: the trigger search of :mod:`mlwarden.poisoning.text_assess`."""
    from mlwarden.core.text_target import as_text_target
    from mlwarden.poisoning.text_assess import text_backdoor_checks

    ds = (
        data
        if isinstance(data, Dataset)
        else load_dataset(data, label=label, text_column=text_column)
    )
    _check_size(ds)
    report.data = ds.describe()
    model_name = str(model) if isinstance(model, str | Path) else type(model).__name__
    report.config = {"model": model_name, "data": _name(data), "text_column": text_column}
    with report.timed("load-model"):
        target = _load_model(model)
    if getattr(target, "modality", None) != "text":
        target = as_text_target(target)
    text_backdoor_checks(report, target, ds, seed=seed)
    return report


def _reference(spec: str | Path | Dataset | None, ds: Dataset, label: str | None) -> Dataset | None:
    """The trusted reference rows, checked against the audited data (fails closed)."""
    if spec is None:
        return None
    ref = spec if isinstance(spec, Dataset) else load_dataset(spec, label=label)
    if (ref.x.shape[1:], ref.modality, ref.sample_rate) != (
        ds.x.shape[1:],
        ds.modality,
        ds.sample_rate,
    ):
        raise UserError(
            f"reference {ref.name} has {ref.modality} inputs of shape {list(ref.x.shape[1:])}; "
            f"{ds.name} has {ds.modality} inputs of shape {list(ds.x.shape[1:])}: they must match"
        )
    return ref


def _relabelled(
    ds: Dataset,
    feats: np.ndarray,
    model: Any,
    classes: int | None,
    reference: Dataset | None,
    seed: int,
) -> dd.Detection:
    """MLW-DAT-018's detection: the label set is the data's class list or the model's
    outputs, whichever is larger (a label with no row left is the trace of a whole
    flipped class); the model and trusted reference rows are the outside evidence that
    names the relabelled half (:func:`mlwarden.poisoning.label_flips.relabelled_classes`)."""
    predict = None
    if model is not None:
        from mlwarden.poisoning.simulate import _predictor

        run = _predictor(model)

        def predict(idx: np.ndarray) -> np.ndarray:
            return np.asarray(run(ds.x[idx]))

    ref = None
    if reference is not None:
        ref = (_compare_features(reference), reference.y)
    num = max(ds.num_classes, classes or 0, reference.num_classes if reference else 0)
    return relabelled_classes(
        feats, ds.y, num_classes=num, predict=predict, reference=ref, seed=seed
    )


def _compare_features(ds: Dataset) -> np.ndarray:
    """What label issues and outliers compare: the inputs, or for audio clips their band
    energies (:func:`mlwarden.core.audio.band_features`), since waveform samples of the
    same sound differ with its phase."""
    if ds.modality == "audio" and ds.sample_rate:
        from mlwarden.core.audio import band_features

        return band_features(ds.x, ds.sample_rate)
    return ds.x


def _sensitive_data(report: Report, data: Any, config: PiiConfig | None) -> PiiScan | None:
    """The sensitive-data scan of a text file (CSV, JSONL, text), a folder of .txt files,
    or text data already loaded or bundled (``tweets``): one record per text."""
    from mlwarden.core.modality import detect_data

    if isinstance(data, Dataset) or (
        isinstance(data, str) and not Path(data).exists() and detect_data(data).name == "text"
    ):
        ds = data if isinstance(data, Dataset) else load_dataset(data)
        if ds.modality != "text":
            return None
        with report.timed("sensitive-data"):
            pii = scan_records(
                ((i, {"text": str(t)}, None) for i, t in enumerate(ds.x)),
                path=ds.name,
                format="text",
                config=config,
            )
        _pii_findings(report, pii)
        return pii
    if not isinstance(data, str | Path):
        return None
    path = Path(data)
    textual = path.is_file() and (path.suffix.lower() in TEXT_SUFFIXES or _is_text(path))
    folder = path.is_dir() and any(path.rglob("*.txt"))
    if not (textual or folder):
        return None
    with report.timed("sensitive-data"):
        pii = scan_file(path, config=config)
    _pii_findings(report, pii)
    return pii


def _load_for_audit(report: Report, data: Any, label: str | None, pii: PiiScan | None) -> Dataset:
    """The dataset; a CSV whose text columns are not numbers is audited on its numeric
    columns (the text columns went through the sensitive-data scan), with a note."""
    if isinstance(data, Dataset):
        if data.modality == "text":  # the checks below need numeric features
            raise InputFileError(data.name, "holds text, not numeric features")
        return data
    try:
        ds = load_dataset(data, label=label)
        if ds.modality == "text":  # the checks below need numeric features
            raise InputFileError(data, "holds text, not numeric features")
        return ds
    except InputFileError:
        if pii is None or pii.format != "csv":
            raise
        from mlwarden.core.data import load_csv_numeric

        ds, dropped = load_csv_numeric(data, label=label)
        if len(ds) < MIN_SAMPLES:
            raise InputFileError(
                data, f"has {len(ds)} rows, too few for the checks on its numeric columns"
            ) from None
    report.add(
        Finding(
            rule="MLW-DAT-010",
            title=f"{len(dropped)} non-numeric column(s) left out of the label, duplicate and outlier checks",
            severity=Severity.INFO,
            description=f"Columns {', '.join(dropped)} hold text; they were scanned for sensitive data only. The other checks ran on the {len(ds.feature_names)} numeric column(s).",
            recommendation="Encode text columns as numbers (or drop them) if they should count in the duplicate and outlier checks.",
            evidence={"text_columns": dropped},
            artifact=_name(data),
            check="data",
        )
    )
    return ds


def _is_text(path: Path) -> bool:
    with path.open("rb") as fh:
        head = fh.read(4096)
    if head.startswith(b"PK") or b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _split_index(ds: Dataset, holdout: float, seed: int) -> np.ndarray:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(ds))
    stratify = ds.y if np.min(np.bincount(ds.y)) >= 2 else None
    tr, _ = train_test_split(idx, test_size=holdout, random_state=seed, stratify=stratify)
    return np.sort(tr)


def _remap(det: dd.Detection, index: np.ndarray, n: int) -> dd.Detection:
    scores = np.zeros(n)
    flagged = np.zeros(n, dtype=bool)
    scores[index] = det.scores
    flagged[index] = det.flagged
    reasons = {int(index[i]): r for i, r in det.reasons.items()}
    return dd.Detection(det.name, scores, flagged, reasons, det.details)


def _poison_detectors(
    report: Report, model: Any, ds: Dataset, seed: int, nc_epochs: int
) -> tuple[list[dd.Detection], dm.NeuralCleanseResult | None]:
    """AC, spectral signatures and (torch models) Neural Cleanse trigger occlusion."""
    ac, spec = _clustering_detectors(report, model, ds, seed)
    # the trigger search needs gradients, not activations: it runs without them
    nc, occl = _run_neural_cleanse(report, model, ds, seed, nc_epochs)
    # no gradients: the trigger search runs by queries instead
    qt = _run_query_trigger(report, model, ds, seed) if nc_epochs > 0 and nc is None else None
    strip_det = _run_strip(report, model, ds, seed)
    if ac is None and occl is None and qt is None:
        # fail closed: the detectors that could not run are a finding even when only
        # STRIP (queries) screened the data
        _missed_detectors(report, ds.name)
        return ([] if strip_det is None else [strip_det]), None
    band_ac, band_spec = _band_detectors(report, ds, seed)
    suspect_classes = (
        set() if ac is None else {int(c) for c, s in ac.details.items() if s.get("flagged")}
    )
    if nc is not None and nc.suspected_target is not None:
        suspect_classes.add(nc.suspected_target)
    if qt is not None:
        suspect_classes |= set(qt.details["triggers"])
    keep = np.isin(ds.y, sorted(suspect_classes))
    # spectral signatures always remove 1.5 eps of every class; keep its flags only in
    # classes a detector reading the model suspects, so clean classes are not listed
    # wholesale. The band-energy detectors are held to the same: on clean sound sets
    # band clusters split natural sub-sounds as often as penultimate-layer clusters
    # do, so alone they would double the false alarms (docs/benchmarks/audio.md, g)
    for det in (spec, band_ac, band_spec):
        if det is not None:
            det.flagged &= keep
            det.reasons = {i: r for i, r in det.reasons.items() if keep[i]}
    if band_ac is not None:
        # a cluster not counted scores as unclustered, or it would sit in the ranking's
        # null as if clean rows scored that high
        band_ac.scores = np.where(keep, band_ac.scores, 0.0)
    for det in (ac, spec, band_ac, band_spec, occl, strip_det, qt):
        if det is not None:
            report.metrics[f"{det.name}.flagged"] = int(det.flagged.sum())
            _detector(report, det.name, flagged=int(det.flagged.sum()))
    out = [d for d in _with_bands(ds.y, (ac, band_ac), (spec, band_spec)) if d is not None]
    out += [d for d in (occl, strip_det, qt) if d is not None]
    _missed_detectors(report, ds.name)
    clustered = np.zeros(len(ds), dtype=bool)
    for split in (ac, band_ac):
        if split is not None:
            clustered |= split.flagged
    confirmed = occl.flagged.copy() if occl is not None else np.zeros(len(ds), dtype=bool)
    if nc is not None and nc.suspected_target is not None:
        # activation clusters in the class Neural Cleanse names agree with it
        confirmed |= clustered & (ds.y == nc.suspected_target)
        if strip_det is not None:
            confirmed |= strip_det.flagged & (ds.y == nc.suspected_target)
    unconfirmed = clustered & ~confirmed
    if confirmed.any():
        classes = sorted({int(c) for c in np.unique(ds.y[confirmed])})
        report.add(
            Finding(
                rule="MLW-DAT-001",
                title=f"Training data looks backdoored: {int(confirmed.sum())} samples in class(es) {', '.join(map(str, classes))}",
                severity=Severity.HIGH,
                atlas=POISON_ATLAS,
                mitigations=DATA_MITIGATIONS,
                description=(
                    "Neural Cleanse (Wang et al. 2019) found a small trigger that turns inputs "
                    "into this class, and these samples of the class stop being recognised "
                    "once the trigger region is blanked out (or fall in a separate "
                    "activation cluster of that class, Chen et al. 2018)."
                ),
                recommendation=(
                    "Inspect the samples listed in 'suspicious', trace where they came "
                    "from, remove the poisoned ones and retrain; keep provenance records "
                    "for every data source."
                ),
                evidence={
                    "flagged": int(confirmed.sum()),
                    "classes": classes,
                    "suspected_target": None if nc is None else nc.suspected_target,
                    "by_detector": {d.name: int(d.flagged.sum()) for d in out},
                },
                artifact=ds.name,
                check="poisoning",
                owasp=["ML02"],
            )
        )
    if unconfirmed.any():
        classes = sorted({int(c) for c in np.unique(ds.y[unconfirmed])})
        report.add(
            Finding(
                rule="MLW-DAT-011",
                title=f"Activation clustering splits class(es) {', '.join(map(str, classes))} ({int(unconfirmed.sum())} samples in small clusters)",
                severity=Severity.LOW,
                atlas=POISON_ATLAS,
                mitigations=DATA_MITIGATIONS,
                description=(
                    "A small, separate cluster of penultimate-layer activations (for audio, "
                    "also of the clips' band energies) inside a class is what poisoned "
                    "samples look like (Chen et al. 2018), but natural "
                    "sub-styles of a class look the same; no reversed trigger confirms it."
                ),
                recommendation=(
                    "Look at a few of the clustered samples listed in 'suspicious'; run "
                    "'mlwarden backdoor MODEL DATA' to check the model for a trigger."
                ),
                evidence={"flagged": int(unconfirmed.sum()), "classes": classes},
                artifact=ds.name,
                check="activation-clustering",
                owasp=["ML02"],
            )
        )
    return out, nc


def _feature_trigger(report: Report, ds: Dataset, seed: int) -> dd.Detection:
    """The data-only trigger detector (no model needed); MLW-DAT-014 per trigger found."""
    from mlwarden.poisoning.feature_triggers import feature_triggers

    with report.timed("feature-trigger"):
        det = feature_triggers(ds.x, ds.y, seed=seed)
    _detector(report, "feature-trigger", flagged=int(det.flagged.sum()))
    report.metrics["feature_trigger.triggers"] = det.details["triggers"]
    for trig in det.details["triggers"]:
        values = ", ".join(f"feature {f} = {v:g}" for f, v in list(trig["values"].items())[:8])
        report.add(
            Finding(
                rule="MLW-DAT-014",
                title=(
                    f"Feature trigger in the data: {trig['rows']} rows labelled "
                    f"{trig['target']} share {values}"
                ),
                severity=Severity.HIGH,
                atlas=POISON_ATLAS,
                mitigations=DATA_MITIGATIONS,
                description=(
                    f"These feature values alone predict label {trig['target']} (binomial "
                    f"p = {trig['p_value']:.1e}, Bonferroni-corrected), and nothing else in "
                    f"the rows does: a classifier that never sees features "
                    f"{', '.join(map(str, trig['features'] + trig['companion_features']))} "
                    f"puts {trig['reclassified_away']:.0%} of them in other classes (vs "
                    f"{trig['class_baseline']:.0%} of the class's other rows). That is what "
                    "an all-to-one backdoor planted in the data looks like; found without a model."
                ),
                recommendation=(
                    "Trace where the rows listed in 'suspicious' (reason 'feature trigger') "
                    "came from, remove them and retrain; check whether a deployed model "
                    f"answers {trig['target']} to inputs carrying these values."
                ),
                evidence=trig,
                artifact=ds.name,
                check="feature-trigger",
                owasp=["ML02"],
            )
        )
    return det


def _cross_class(
    report: Report, ds: Dataset, seed: int, hygiene: list[dd.Detection]
) -> dd.Detection:
    """The data-only heavy-poison detector (:mod:`mlwarden.poisoning.cross_class`);
    MLW-DAT-017 per flagged class, or the ran/why-not table says why it did not run.
    Rows confident learning already calls mislabelled stay in the label-issue list.
    Audio clips are read as their band energies
    (:func:`~mlwarden.poisoning.audio_features.band_embedding`)."""
    from mlwarden.poisoning.cross_class import cross_class_modes

    with report.timed("cross-class"):
        det = cross_class_modes(_cross_class_input(report, ds), ds.y, seed=seed)
    for other in hygiene:
        if other.name == "label-issues":
            # a flipped label is another class's row under this label too, but it is a
            # data-quality row (data_issues), not part of a poisoned component
            det.flagged &= ~other.flagged
            det.reasons = {i: r for i, r in det.reasons.items() if det.flagged[i]}
    report.metrics["cross_class.classes"] = det.details["classes"]
    if "skipped" in det.details:
        # a two-class task has no "other classes" to recognise rows as: not a gap
        _detector(report, "cross-class", why=det.details["skipped"], applies=False)
        return det
    _detector(report, "cross-class", flagged=int(det.flagged.sum()))
    for c, st in det.details["classes"].items():
        if not st["flagged"]:
            continue
        rows = int(np.sum(det.flagged & (ds.y == int(c))))
        report.add(
            Finding(
                rule="MLW-DAT-017",
                title=(
                    f"Class {c} is a mixture: {rows} of its {sum(st['sizes'])} rows are "
                    "other classes' rows with a shared offset (heavy or blended poison)"
                ),
                severity=Severity.HIGH,
                atlas=POISON_ATLAS,
                mitigations=DATA_MITIGATIONS,
                description=(
                    f"Split along its top principal direction, class {c} falls into two "
                    f"components. {_cross_class_test(st)} "
                    "That is what an all-to-one backdoor with a dense (blended) trigger "
                    "looks like at any poison share, also above half of the class, where "
                    "activation clustering and spectral signatures stop working; found "
                    "without a model."
                ),
                recommendation=(
                    "Trace where the rows listed in 'suspicious' (reason 'cross-class') came "
                    "from, look at a few of them, remove the poisoned ones and retrain."
                ),
                evidence={"class": int(c), "rows": rows, **st},
                artifact=ds.name,
                check="cross-class",
                owasp=["ML02"],
            )
        )
    return det


def _cross_class_test(st: dict[str, Any]) -> str:
    """What the cross-class test that fired measured, for the finding's description."""
    if st["test"] == "reader":
        return (
            "With each component's own mean removed, a classifier of the other classes "
            f"reads the rows of one of them as other classes (median confidence "
            f"{max(st['medians']):.2f}) and the rest of the class as none "
            f"({min(st['medians']):.2f}); that gap ({st['gap']:.2f}) is {st['z']:.1f} "
            "robust standard deviations above the other classes'."
        )
    return (
        "With each component's own mean removed and its spread matched, the rows of one "
        "of them cannot be told from the other classes' rows by their nearest neighbours "
        f"(share of same-side neighbours {min(st['mix']):.2f}; two samples of one "
        f"distribution give 0.5) while the rest of the class can ({max(st['mix']):.2f}, "
        f"a gap of {st['mix_gap']:.2f})."
    )


def _cross_class_input(report: Report, ds: Dataset) -> np.ndarray:
    """The rows the cross-class detector splits: the inputs, or for audio the clips'
    band energies. A short trigger barely moves a waveform's leading principal
    directions, which the clips' own sounds fill: on the raw samples of poisoned
    sound sets the detector flagged classes with F1 0.00-0.02 where on band energies it
    found tone, chirp and noise-burst poison at 25-50% with F1 0.74-1.00
    (docs/benchmarks/audio.md, g)."""
    if ds.modality != "audio" or not ds.sample_rate:
        return ds.x
    from mlwarden.poisoning.audio_features import band_embedding

    report.metrics["cross_class.input"] = "band energies"
    return band_embedding(ds.x, ds.sample_rate)


def _clustering_detectors(
    report: Report, model: Any, ds: Dataset, seed: int
) -> tuple[dd.Detection | None, dd.Detection | None]:
    """Activation clustering and spectral signatures, or MLW-DAT-010 saying why not."""
    try:
        with report.timed("activations"):
            acts = penultimate(model, ds.x)
    except UserError as exc:
        # fail closed: say the activation detectors did not run rather than nothing
        report.add(
            Finding(
                rule="MLW-DAT-010",
                title="Poisoning detectors could not run on this model",
                severity=Severity.MEDIUM,
                atlas=["AML.T0020"],
                mitigations=DATA_MITIGATIONS,
                description=(
                    f"{exc} Activation clustering and spectral signatures did not run; "
                    "see the report's poisoning.detectors metric for the others."
                ),
                recommendation=(
                    "Give a torch model (TorchScript, module:factory) or a scikit-learn "
                    "MLPClassifier trained on this data, or a --trainer that returns one."
                ),
                check="poisoning",
            )
        )
        for name in ("activation-clustering", "spectral-signatures"):
            _detector(report, name, why=f"no activations: {_last_line(exc)}", applies=False)
        return None, None
    return _run_clustering(report, acts, ds.y, seed)


def _run_clustering(
    report: Report, rep: np.ndarray, y: np.ndarray, seed: int, tag: str = ""
) -> tuple[dd.Detection, dd.Detection]:
    """Activation clustering and spectral signatures on one representation of the data
    (``tag``: "" for the model's activations, ``":bands"`` for audio band energies)."""
    with report.timed("activation-clustering" + tag):
        ac = dd.activation_clustering(rep, y, seed=seed)
    with report.timed("spectral-signatures" + tag):
        spec = dd.spectral_signatures(rep, y, eps=0.05)
    report.metrics["activation_clustering" + tag.replace(":", ".") + ".classes"] = ac.details
    return ac, spec


def _with_bands(
    y: np.ndarray, *pairs: tuple[dd.Detection | None, dd.Detection | None]
) -> list[dd.Detection | None]:
    """Each (model, band-energy) pair of one detector as one detection for the ranking
    (:func:`~mlwarden.poisoning.audio_features.merged`), or the one that ran."""
    from mlwarden.poisoning.audio_features import merged

    return [
        merged(a, b, y) if a is not None and b is not None else a if a is not None else b
        for a, b in pairs
    ]


def _band_detectors(
    report: Report, ds: Dataset, seed: int
) -> tuple[dd.Detection | None, dd.Detection | None]:
    """On audio, the clustering detectors once more on the clips' band energies
    (:mod:`~mlwarden.poisoning.audio_features`: no model needed, and a short trigger
    shows there more plainly than in a small model's penultimate layer)."""
    if ds.modality != "audio" or not ds.sample_rate:
        return None, None
    from mlwarden.poisoning.audio_features import TAG, band_embedding, tagged

    with report.timed("band-embedding"):
        emb = band_embedding(ds.x, ds.sample_rate)
    ac, spec = _run_clustering(report, emb, ds.y, seed, TAG)
    return tagged(ac), tagged(spec)


def _run_neural_cleanse(
    report: Report, model: Any, ds: Dataset, seed: int, nc_epochs: int
) -> tuple[dm.NeuralCleanseResult | None, dd.Detection | None]:
    """Neural Cleanse and trigger occlusion over any input shape, or why they did not run."""
    module = _torch_module(model)
    why = ""
    if nc_epochs <= 0:
        why = "turned off (neural_cleanse_epochs=0)"
    elif module is None:
        why = (
            f"the model ({type(model).__name__}) gives no gradients; the trigger search "
            "by queries runs instead"
        )
    if why:
        # switched off by the user, or replaced by the search by queries: listed, not a
        # finding (that search reports when it cannot run)
        _detector(report, "neural-cleanse", why=why, applies=False)
        _detector(report, "trigger-occlusion", why="needs Neural Cleanse's trigger", applies=False)
        return None, None
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(ds), size=min(NC_SAMPLES, len(ds)), replace=False)
    try:
        with report.timed("neural-cleanse"):
            nc = _cleanse(
                module, ds, ds.x[pick], ds.num_classes, epochs=nc_epochs, seed=seed,
                feature_bounds=ds.feature_bounds,
            )  # fmt: skip
    except (UserError, RuntimeError, ValueError) as exc:
        # fail closed: the search broke on this model; say so instead of a clean result
        _detector(report, "neural-cleanse", why=_last_line(exc), record=False)
        _detector(report, "trigger-occlusion", why="needs Neural Cleanse's trigger", applies=False)
        return None, None
    _nc_metrics(report, nc)
    _detector(report, "neural-cleanse", flagged=len(nc.flagged))
    with report.timed("trigger-occlusion"):
        occl = dm.trigger_occlusion(module, ds.x, ds.y, nc)
    return nc, occl


def _run_query_trigger(report: Report, model: Any, ds: Dataset, seed: int) -> dd.Detection | None:
    """The trigger search by queries (:mod:`~mlwarden.poisoning.query_trigger`) for a
    model without gradients; MLW-DAT-016 per trigger found; not run or cut short by the
    query budget: listed as a detector that applies but did not run (MLW-DAT-013)."""
    from mlwarden.core.target import HttpTarget, as_target
    from mlwarden.poisoning import query_trigger as qt

    target = as_target(model) if not hasattr(model, "predict_labels") else model
    # a deployed API pays for every query
    budget = qt.HTTP_BUDGET if isinstance(target, HttpTarget) else qt.LOCAL_BUDGET
    try:
        with report.timed("query-trigger"):
            res = qt.query_trigger_search(
                target, ds.x, ds.y, num_classes=ds.num_classes, budget=budget, seed=seed
            )
            det = qt.trigger_carriers(target, ds.x, ds.y, res)
    except (UserError, RuntimeError, ValueError) as exc:
        _detector(report, "query-trigger", why=_last_line(exc), record=False)
        return None
    report.metrics["query_trigger"] = {
        "sizes": {str(c): s for c, s in res.sizes.items()},
        "queries": res.queries,
        "budget": res.budget,
        "complete": res.complete,
    }
    for c in res.suspected:
        rows = int(det.flagged[ds.y == c].sum())
        report.add(qt.trigger_finding(res, c, ds.name, rows=rows))
    why = _query_search_gap(res) if not res.suspected else ""
    if why:
        _detector(report, "query-trigger", why=why)
        return None
    _detector(report, "query-trigger", flagged=int(det.flagged.sum()))
    return det


def _query_search_gap(res: Any) -> str:
    """Why a finished trigger search by queries cannot vouch for the model ("" when it
    can): no candidate values, the budget cut it short, or under 2 classes to compare."""
    if res.details.get("features_searched", 1) == 0:
        return (
            "no feature of DATA repeats a value in 1% of its rows, so the search has "
            "no candidate trigger values (continuous inputs such as images or audio)"
        )
    if not res.complete:
        return f"the query budget ({res.budget} rows) ran out before every class was searched"
    if len(res.sizes) < 2:
        return (
            f"only {len(res.sizes)} class could be searched; a trigger is judged "
            "against the other classes' sizes, which needs 2 or more"
        )
    return ""


def _run_strip(report: Report, model: Any, ds: Dataset, seed: int) -> dd.Detection | None:
    """STRIP over the training data by queries only (any model, gradients or not);
    MLW-DAT-008 when one class holds far more low-entropy samples than its rate."""
    from mlwarden.core.target import HttpTarget, as_target

    target = as_target(model) if not hasattr(model, "predict_labels") else model
    # a deployed API pays for every query: screen a sample of the data there
    cap = 300 if isinstance(target, HttpTarget) else 5000
    try:
        with report.timed("strip"):
            bounds = ds.bounds if ds.feature_bounds is None else tuple(ds.feature_bounds)
            det = dm.strip_in_data(target, ds.x, ds.y, max_samples=cap, bounds=bounds, seed=seed)
    except (UserError, RuntimeError, ValueError) as exc:
        _detector(report, "strip", why=_last_line(exc), record=False)
        return None
    report.metrics["strip.data"] = det.details
    _detector(report, "strip", flagged=int(det.flagged.sum()))
    hot = [int(c) for c, v in det.details["classes"].items() if v["flagged"]]
    if hot:
        report.add(
            Finding(
                rule="MLW-DAT-008",
                title=(
                    f"STRIP: {int(det.flagged.sum())} training samples of class(es) "
                    f"{', '.join(map(str, hot))} keep their prediction under superimposition"
                ),
                severity=Severity.MEDIUM,
                atlas=["AML.T0043.004", "AML.T0020"],
                mitigations=["AML.M0007", "AML.M0015"],
                description=(
                    "Superimposed on other samples of the data, these samples keep their "
                    "prediction (low entropy), far more often in these classes than the "
                    "threshold's false-rejection rate allows elsewhere; inputs carrying a "
                    "backdoor trigger behave like this (STRIP, Gao et al. 2019). Works by "
                    "queries, so it also screens models without gradients."
                ),
                recommendation=(
                    "Inspect the samples listed in 'suspicious' (reason 'STRIP'); if they "
                    "share a pattern, remove them and retrain."
                ),
                evidence=det.details,
                artifact=ds.name,
                check="strip",
                owasp=["ML10"],
            )
        )
    return det


def _detector(
    report: Report,
    name: str,
    *,
    flagged: int | None = None,
    why: str = "",
    applies: bool = True,
    record: bool = True,
) -> None:
    """Record one poisoning detector in ``metrics["poisoning.detectors"]`` and the checks.

    ``applies``: the detector fits this input and model, so its not running leaves a
    gap the report must name (:func:`_missed_detectors`). ``record``: add a skipped
    check (False when :meth:`Report.timed` already recorded the error).
    """
    from mlwarden.core.findings import CheckRecord

    table = report.metrics.setdefault("poisoning.detectors", {})
    if flagged is not None:
        table[name] = {"ran": True, "flagged": flagged}
        return
    table[name] = {"ran": False, "why": why, "applies": applies}
    if record:
        report.checks.append(CheckRecord(name=name, status="skipped", message=why))


def _missed_detectors(report: Report, artifact: str) -> None:
    """MLW-DAT-013 when a detector that applies to this input did not run (fail closed)."""
    table = report.metrics.get("poisoning.detectors", {})
    missed = {n: d["why"] for n, d in table.items() if not d["ran"] and d.get("applies")}
    if not missed:
        return
    ran = sorted(n for n, d in table.items() if d["ran"])
    report.add(
        Finding(
            rule="MLW-DAT-013",
            title=f"Poisoning detector(s) {', '.join(missed)} could not run; the audit is incomplete",
            severity=Severity.MEDIUM,
            atlas=["AML.T0020"],
            mitigations=DATA_MITIGATIONS,
            description=(
                "; ".join(f"{n}: {w}" for n, w in missed.items())
                + f". Only {', '.join(ran) or 'no detector'} screened the data, so a clean "
                "result does not rule out a backdoor (large or feature-space triggers "
                "escape the clustering detectors)."
            ),
            recommendation=(
                "Give the torch version of the model (TorchScript, .pt2 or module:factory) "
                "or a --trainer that returns one, so the trigger search can run."
            ),
            evidence={"not_run": missed, "ran": ran},
            artifact=artifact,
            check="poisoning",
        )
    )


def _cleanse(
    module: Any, ds: Dataset, x: np.ndarray, classes: int, epochs: int, seed: int, **kw: Any
) -> dm.NeuralCleanseResult:
    """Neural Cleanse as the modality needs it: on audio, in the time-frequency plane and
    over samples, each judged by the verified norm verdict (trigger norms there span
    orders of magnitude); elsewhere the paper's search and MAD index."""
    if ds.modality == "audio":
        from mlwarden.poisoning.audio_trigger import audio_cleanse

        return audio_cleanse(
            module, x, sample_rate=ds.sample_rate, bounds=ds.bounds, num_classes=classes,
            epochs=epochs, seed=seed,
        )  # fmt: skip
    return dm.neural_cleanse(
        module, x, num_classes=classes, bounds=ds.bounds, epochs=epochs, seed=seed, **kw
    )


def _nc_metrics(report: Report, nc: dm.NeuralCleanseResult) -> None:
    report.metrics["anomaly_index"] = {
        str(c): round(float(v), 3) for c, v in enumerate(nc.anomaly_index)
    }
    report.metrics["suspected_target"] = nc.suspected_target
    report.metrics["neural_cleanse.l1"] = {str(c): round(float(v), 3) for c, v in enumerate(nc.l1)}
    report.metrics["neural_cleanse.epochs"] = nc.epochs
    if nc.verdict is not None:
        report.metrics["neural_cleanse.verdict"] = nc.verdict.as_dict()
    if nc.domain_verdicts:
        report.metrics["neural_cleanse.domain"] = nc.domain
        report.metrics["neural_cleanse.domains"] = {
            d: v.as_dict() for d, v in nc.domain_verdicts.items()
        }
    report.images["neural_cleanse_triggers"] = dm.trigger_image(nc)


def _mitigation(
    report: Report,
    fit: Any,
    model: Any,
    train: Dataset,
    test: Dataset,
    dets: list[dd.Detection],
    nc: dm.NeuralCleanseResult | None,
    found: dict[str, Any] | None = None,
) -> None:
    from mlwarden.poisoning.mitigate import retrain_without

    flagged = np.zeros(len(train), dtype=bool)
    for d in dets:
        # spectral signatures remove a fixed share of a class, poisoned or not
        if not d.name.startswith("spectral-signatures"):
            flagged |= d.flagged
    if not flagged.any():
        return
    asr = None
    triggers = (found or {}).get("triggers") or []
    if (nc is None or nc.suspected_target is None) and triggers:
        asr = _feature_trigger_asr(triggers[0], test)
        test = test.subset(np.flatnonzero(~_carries(triggers[0], test.x)))
    elif nc is not None and nc.suspected_target is not None:
        target = nc.suspected_target
        # held-out samples that carry the trigger have poisoned labels: leave them out
        # of the clean accuracy, or removing the backdoor would look like a loss
        module = _torch_module(model)
        carriers = dm.trigger_occlusion(module, test.x, test.y, nc).flagged
        report.metrics["mitigation.holdout_trigger_carriers"] = int(carriers.sum())
        test = test.subset(np.flatnonzero(~carriers))
        others = test.x[test.y != target]

        def asr(m: Any) -> float:
            from mlwarden.poisoning.simulate import _predictor

            return float(np.mean(_predictor(m)(nc.apply(target, others)) == target))

    with report.timed("retrain"):
        result = retrain_without(fit, train, flagged, test, model_before=model, asr=asr)
    report.metrics["mitigation"] = result.metrics()
    der = result.der
    report.add(
        Finding(
            rule="MLW-DAT-009",
            title=(
                f"Removing {result.removed} flagged samples: clean accuracy "
                f"{result.acc_before:.3f} -> {result.acc_after:.3f}"
                + (
                    f", reversed-trigger ASR {result.asr_before:.3f} -> {result.asr_after:.3f} (DER {der:.2f})"
                    if der is not None
                    else ""
                )
            ),
            severity=Severity.INFO,
            atlas=["AML.T0020"],
            mitigations=["AML.M0007"],
            description=(
                "The model was retrained with your recipe without the flagged samples and "
                "measured on a held-out split. ASR uses the trigger Neural Cleanse "
                "reconstructed, or else the feature trigger found in the data; DER is BackdoorBench's defence effectiveness rate "
                "(0.5 = no change, 1 = attack removed at no accuracy cost)."
            ),
            recommendation="Keep the samples out of training if accuracy held and ASR fell.",
            evidence=result.metrics(),
            check="poisoning",
        )
    )


def _carries(trig: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """Rows carrying at least half of a feature trigger's values."""
    xf = x.reshape(len(x), -1)
    hits = sum((xf[:, int(f)] == v).astype(int) for f, v in trig["values"].items())
    return np.asarray(hits) >= 0.5 * len(trig["values"])


def _feature_trigger_asr(trig: dict[str, Any], test: Dataset) -> Any:
    """Attack success of a found feature trigger: stamp its values on held-out rows of
    the other classes and count the target predictions."""
    from mlwarden.poisoning.simulate import _predictor

    target = int(trig["target"])
    others = test.x[(test.y != target) & ~_carries(trig, test.x)]
    stamped = others.reshape(len(others), -1).copy()
    for f, v in trig["values"].items():
        stamped[:, int(f)] = v
    stamped = stamped.reshape(others.shape).astype(np.float32)

    def asr(model: Any) -> float:
        return float(np.mean(_predictor(model)(stamped) == target))

    return asr


def _hygiene_findings(report: Report, dets: list[dd.Detection], artifact: str) -> None:
    by = {d.name: d for d in dets}
    li = by.get("label-issues")
    if li is not None:
        report.metrics["label_issues.flagged"] = int(li.flagged.sum())
        report.metrics["label_issues.noise_estimate"] = li.details.get("noise_estimate")
        if li.flagged.any():
            frac = li.flagged.mean()
            report.add(
                Finding(
                    rule="MLW-DAT-002",
                    title=f"{int(li.flagged.sum())} samples ({frac:.1%}) look mislabelled",
                    severity=Severity.MEDIUM if frac >= 0.01 else Severity.LOW,
                    atlas=["AML.T0059", "AML.T0020"],
                    mitigations=["AML.M0007"],
                    description="Confident learning (Northcutt et al. 2021) on cross-validated predictions finds samples whose label disagrees with what the rest of the data says; label flipping poisons look like this.",
                    recommendation="Review the flagged labels (listed in the report's artifacts.data_issues.label_issues) and fix or drop them.",
                    evidence={
                        "flagged": int(li.flagged.sum()),
                        "thresholds": li.details.get("thresholds"),
                    },
                    artifact=artifact,
                    check="label-issues",
                    owasp=["ML02"],
                )
            )
    _relabelled_findings(report, by.get("relabelled-class"), artifact)
    dup = by.get("duplicates")
    if dup is not None:
        report.metrics["duplicates"] = dup.details
        if dup.flagged.any():
            conflicts = dup.details.get("label_conflicts", 0)
            report.add(
                Finding(
                    rule="MLW-DAT-003",
                    title=f"{dup.details['exact']} exact and {dup.details['near']} near duplicates ({conflicts} with conflicting labels)",
                    severity=Severity.MEDIUM if conflicts else Severity.LOW,
                    atlas=["AML.T0059"],
                    mitigations=DATA_MITIGATIONS,
                    description="Duplicated samples overweight part of the data and leak between train and test splits; copies with different labels are label noise or poisoning.",
                    recommendation="Deduplicate before splitting; resolve conflicting labels.",
                    evidence=dup.details,
                    artifact=artifact,
                    check="duplicates",
                )
            )
    out = by.get("outliers")
    if out is not None:
        report.metrics["outliers.flagged"] = int(out.flagged.sum())
        if out.flagged.any():
            report.add(
                Finding(
                    rule="MLW-DAT-004",
                    title=f"{int(out.flagged.sum())} outlying samples",
                    severity=Severity.LOW,
                    atlas=["AML.T0059"],
                    mitigations=["AML.M0007"],
                    description="Isolation forest and k-nearest-neighbour distance agree that these samples lie far from the rest of the data (corrupted records or injected data).",
                    recommendation="Check the outliers listed in the report's artifacts.data_issues.outliers; drop corrupt ones.",
                    evidence={"flagged": int(out.flagged.sum())},
                    artifact=artifact,
                    check="outliers",
                )
            )


def _relabelled_findings(report: Report, det: dd.Detection | None, artifact: str) -> None:
    """MLW-DAT-018 per class that holds another class's rows (a whole-class flip)."""
    if det is None:
        return
    report.metrics["relabelled_class"] = det.details
    for c in det.details.get("classes", []):
        left = c["counts"][1]
        ambiguous = bool(c.get("ambiguous"))
        title = (
            f"Class {c['class']} looks like two classes: class {c['source']} has no row left, "
            f"and nothing says which half of class {c['class']}'s {c['rows']} rows was relabelled"
            if ambiguous
            else f"Class {c['class']} looks relabelled: {c['rows']} of its rows look like class {c['source']} ("
            + (f"{left} rows left)" if left else f"none left; named by the {c['evidence']})")
        )
        report.add(
            Finding(
                rule="MLW-DAT-018",
                title=title,
                severity=Severity.MEDIUM if ambiguous else Severity.HIGH,
                atlas=["AML.T0020", "AML.T0059"],
                mitigations=["AML.M0007"],
                description=(
                    f"Class {c['class']} has {c['counts'][0]} rows and class {c['source']} {left} "
                    f"(the median class {c['median_count']:g}); "
                    + _relabelled_evidence(c)
                    + "A targeted label flip of a whole class looks like this; confident learning cannot see it, because every model learns the flip."
                ),
                recommendation=(
                    f"Review class {c['class']} (every row is listed in artifacts.data_issues.relabelled_class, ranked below decided rows): "
                    "pass trusted labelled rows (data_report(reference=...)) or a model trained elsewhere to name the relabelled half; do not drop the class."
                    if ambiguous
                    else "Check the provenance of the rows listed in artifacts.data_issues.relabelled_class; "
                    f"restore their label ({c['source']}) if they are class {c['source']}, then retrain."
                ),
                evidence=dict(c),
                artifact=artifact,
                check="relabelled-class",
                owasp=["ML02"],
            )
        )


def _relabelled_evidence(c: dict[str, Any]) -> str:
    """What decided an MLW-DAT-018 finding, in one or two sentences."""
    if "auc" in c:
        return (
            f"class {c['class']} splits into two groups, and moving one of them back would make both counts typical. "
            f"That group is indistinguishable from class {c['source']}'s own rows (two-sample AUC {c['auc']}). "
        )
    if c["counts"][1]:
        return (
            f"class {c['class']} splits into two groups, and moving one of them back would make both counts typical. "
            f"The split is as distinct as two real classes of this data are (separation {c['separation']} against {c.get('pair_quartile')}). "
        )
    split = (
        "it splits more distinctly than a typical class does"
        if c.get("split_distinct")
        else "it splits no more distinctly than a real class does (look-alike classes)"
    )
    counts = f"class {c['class']} holds two classes' worth of rows while label {c['source']} has none and the other classes are balanced; {split}. "
    if c.get("ambiguous"):
        return (
            counts
            + "A model trained on these data learns both halves as one class, so nothing here says which half was relabelled. "
        )
    return (
        counts
        + f"The {c['evidence']} puts {c['share_predicted']:.0%} of its rows in class {c['source']}; those are listed. "
    )


def _pii_findings(report: Report, scan: PiiScan) -> None:
    """One finding per sensitive-data type, each naming its rows and columns; the rows
    join ``report.suspicious`` (merged by :func:`_merge_pii_rows`)."""
    report.metrics["sensitive_data"] = {k: scan.total(k) for k in sorted(scan.counts)}
    report.metrics["sensitive_data.rows"] = scan.rows_with_hits
    report.artifacts["sensitive_data"] = {
        "format": scan.format,
        "records": scan.records,
        "counts": scan.counts,
        "examples": scan.examples,
        "rows_with_hits": scan.rows_with_hits,
        "partial": scan.partial,
    }
    for kind in sorted(scan.counts, key=lambda k: (k not in SECRET_KINDS, k)):
        report.add(_pii_finding(scan, kind))
    if scan.partial:
        report.add(
            Finding(
                rule="MLW-DAT-010",
                title="Sensitive-data scan covered only the start of a very large file",
                severity=Severity.LOW,
                description=f"The scan stopped at its byte limit after {scan.records} records; the rest was not checked.",
                recommendation="Scan the whole file (no byte limit), or split it and scan each part.",
                artifact=scan.path,
                check="sensitive-data",
            )
        )


def _pii_finding(scan: PiiScan, kind: str) -> Finding:
    secret = kind in SECRET_KINDS
    per_column = scan.counts[kind]
    total = sum(per_column.values())
    rows = scan.rows_of([kind])
    n_rows = len(rows)  # records kept one by one: all of them below MAX_ROWS
    label = LABELS.get(kind, kind.replace("_", " "))
    columns = ", ".join(f"{c} ({n})" for c, n in sorted(per_column.items(), key=lambda kv: -kv[1]))
    where = "record" if scan.format in ("text", "folder") else "row"
    locations = []
    for i in rows[:PII_ROWS_LISTED]:
        file, line = scan.lines[i]
        cols = sorted({c for k, c in scan.rows[i] if k == kind})
        locations.append({"uri": file, "line": line, "row": i, "columns": cols})
    return Finding(
        rule="MLW-DAT-006" if secret else "MLW-DAT-005",
        title=(
            f"Training data holds {'secrets' if secret else 'personal data'}: {label} in "
            f"{n_rows} {where}{'' if n_rows == 1 else 's'} ({', '.join(sorted(per_column))})"
        ),
        severity=Severity.CRITICAL
        if secret
        else Severity.MEDIUM
        if kind == "ip_address"
        else Severity.HIGH,
        atlas=["AML.T0024.000", "AML.T0024.001"],
        mitigations=["AML.M0007", "AML.M0012"],
        description=(
            f"{label} found in column(s) {columns}. A model can leak what it was trained on "
            f"through membership inference or model inversion. The {where}s are listed in "
            "'suspicious' (0-based, header excluded) and in this finding's evidence."
        ),
        recommendation=(
            "Remove these values before training, then revoke and rotate every exposed secret."
            if secret
            else "Remove or anonymise these values before training (drop the column, mask, "
            "tokenise or generalise them)."
        ),
        evidence={
            "type": kind,
            "count": total,
            "columns": per_column,
            "rows": rows[:PII_ROWS_LISTED],
            "rows_total": len(rows),
            "examples": scan.examples.get(kind, []),
            "locations": locations,
        },
        artifact=scan.path,
        check="sensitive-data",
    )


def _rank(report: Report, dets: list[dd.Detection], y: np.ndarray, pii: PiiScan | None) -> None:
    """``report.suspicious``: the calibrated poisoning list
    (:func:`mlwarden.poisoning.ranking.combine`) plus the rows holding sensitive data;
    label issues, duplicates and outliers go to ``report.artifacts["data_issues"]``."""
    from mlwarden.poisoning.ranking import combine

    ranked = combine(dets, y)
    suspicious = _merge_pii_rows(ranked.suspicious, pii)
    report.metrics["suspicious"] = len(suspicious)
    report.metrics["suspicious.calibration"] = {
        "rule": (
            "conformal p-value per detector, weighted Bonferroni; broad detectors' rows "
            "only where a specific detector confirms them; Benjamini-Hochberg at 0.05"
        ),
        "detectors": ranked.calibration,
        "flagged_not_significant": ranked.dropped,
        "set_aside": len(ranked.set_aside),
    }
    # every detector's own flags stay visible: the ran/why-not table says how many of
    # them the list took and how many it set aside (artifacts.set_aside says why)
    table = report.metrics.get("poisoning.detectors", {})
    for name, cal in ranked.calibration.items():
        if name in table and table[name].get("ran"):
            table[name].update(listed=cal["listed"], set_aside=cal["set_aside"])
    report.suspicious = suspicious[:MAX_SUSPICIOUS]
    report.artifacts["data_issues"] = {k: v[:MAX_SUSPICIOUS] for k, v in ranked.issues.items()}
    if ranked.set_aside:
        report.artifacts["set_aside"] = ranked.set_aside[:MAX_SUSPICIOUS]


def _merge_pii_rows(suspicious: list[dict[str, Any]], scan: PiiScan | None) -> list[dict[str, Any]]:
    """Add the records with sensitive data to the ranked list: an existing entry gains the
    reasons, a new one scores its heaviest type (secrets 1.0, identifiers 0.9, ...)."""
    if scan is None or not scan.rows:
        return suspicious
    by_index = {int(e["index"]): e for e in suspicious}
    for i, hits in scan.rows.items():
        reasons = [f"{LABELS.get(k, k)} in column {c!r}" for k, c in hits]
        entry = by_index.get(i)
        if entry is None:
            by_index[i] = {
                "index": i,
                "score": round(scan.weights.get(i, 0.7) + 0.05 * (len(hits) - 1), 4),
                "reasons": reasons,
            }
        else:
            entry["reasons"] = [*entry["reasons"], *reasons]
            entry["score"] = round(float(entry["score"]) + scan.weights.get(i, 0.7), 4)
    return sorted(by_index.values(), key=lambda e: (-e["score"], e["index"]))


def backdoor_report(
    model: Any,
    data: str | Path | Dataset,
    *,
    seed: int = 0,
    epochs: int = 100,
    strip_samples: int = 50,
    frr: float = 0.01,
    label: str | None = None,
    text_column: str | None = None,
) -> Report:
    """Scan a model for a backdoor with Neural Cleanse and STRIP.

    ``model``: MODEL spec or in-memory model (Neural Cleanse needs a torch model;
    others get STRIP only). ``data``: clean inputs the model should handle (labels
    are not used by Neural Cleanse). Metrics: ``anomaly_index`` (class -> index),
    ``suspected_target`` (class or None); the reversed triggers are in
    ``report.images["neural_cleanse_triggers"]``. Text models on text data
    (``text_column``) get the vocabulary trigger search of
    :mod:`mlwarden.poisoning.text_backdoor` instead (metrics ``backdoor.trigger_search``).
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return _backdoor_report(
            model,
            data,
            seed=seed,
            epochs=epochs,
            strip_samples=strip_samples,
            frr=frr,
            label=label,
            text_column=text_column,
        )


def _backdoor_by_queries(
    report: Report, target: Any, ds: Dataset, num_classes: int, seed: int, artifact: str | None
) -> None:
    """A model without gradients: the trigger search by queries
    (:mod:`~mlwarden.poisoning.query_trigger`) in place of Neural Cleanse; MLW-DAT-016
    per trigger found. MLW-DAT-012 (and ``metrics["neural_cleanse.skipped"]``, exit 2)
    only when that search cannot run or cannot judge: it broke, the budget cut it short,
    DATA repeats no value (no candidate trigger values), or under 2 classes to compare."""
    from mlwarden.core.target import HttpTarget
    from mlwarden.poisoning import query_trigger as qt

    report.metrics["neural_cleanse.not_applicable"] = _no_gradients_reason(target)
    budget = qt.HTTP_BUDGET if isinstance(target, HttpTarget) else qt.LOCAL_BUDGET
    why = ""
    try:
        with report.timed("query-trigger"):
            res = qt.query_trigger_search(
                target, ds.x, ds.y, num_classes=num_classes, budget=budget, seed=seed
            )
            if not res.suspected and res.complete:
                # DATA is clean inputs: a planted value repeats there no more than it
                # does naturally, so a second pass tries more values per feature and
                # each feature's extremes, on what budget is left
                res = qt.query_trigger_search(
                    target, ds.x, ds.y, num_classes=num_classes, seed=seed, wide=True,
                    budget=max(budget - res.queries, 1),
                )  # fmt: skip
                res.queries, res.budget = budget - res.budget + res.queries, budget
    except (UserError, RuntimeError, ValueError) as exc:
        why = _last_line(exc)
    else:
        report.metrics["query_trigger"] = {
            "ran": True,
            "sizes": {str(c): s for c, s in res.sizes.items()},
            "anomaly": {str(c): a for c, a in res.anomaly.items()},
            "queries": res.queries,
            "budget": res.budget,
            "complete": res.complete,
            "suspected": res.suspected,
            **res.details,
        }
        for c in res.suspected:
            report.add(qt.trigger_finding(res, c, artifact))
        if res.suspected:
            return
        why = _query_search_gap(res)
        if not why:
            report.metrics["query_trigger"]["verdict"] = (
                f"no trigger found by the query search (budget {res.budget} queries, "
                f"{res.queries} used)"
            )
            return
    _cannot_search(report, target, f"the trigger search by queries could not run: {why}", artifact)


def _cannot_search(report: Report, target: Any, why_queries: str, artifact: str | None) -> None:
    """MLW-DAT-012: neither Neural Cleanse nor the search by queries checked the model."""
    why = f"{_no_gradients_reason(target)}; {why_queries}"
    report.metrics["neural_cleanse.skipped"] = why
    labels_only = getattr(target, "access", None) == "label"
    report.add(
        Finding(
            rule="MLW-DAT-012",
            title="Backdoor trigger search (Neural Cleanse, or by queries) could not run on this model",
            severity=Severity.MEDIUM,
            atlas=["AML.T0018.000", "AML.T0020"],
            mitigations=["AML.M0007", "AML.M0025"],
            description=(
                f"Neural Cleanse was skipped: {why}. "
                + (
                    "STRIP was skipped too: it measures the entropy of the model's scores "
                    "and this model returns labels only. Nothing checked the model for a "
                    "backdoor."
                    if labels_only
                    else "Only STRIP screened the data, and STRIP sees a backdoor only in "
                    "inputs that already carry the trigger, so the model was not checked "
                    "for a backdoor."
                )
            ),
            recommendation=(
                "Scan the torch version of the model (TorchScript, .pt2 or "
                "module:factory), or audit its training data with 'mlwarden data DATA "
                "--trainer module:function'."
            ),
            artifact=artifact,
            check="neural-cleanse",
            owasp=["ML10"],
        )
    )


def _backdoor_report(
    model: Any,
    data: str | Path | Dataset,
    *,
    seed: int = 0,
    epochs: int = 100,
    strip_samples: int = 50,
    frr: float = 0.01,
    label: str | None = None,
    text_column: str | None = None,
) -> Report:
    """:func:`backdoor_report` without the thread limit."""
    report = Report.new(command="backdoor", seed=seed)
    _check_label_option(data, label)
    from mlwarden.poisoning.text_assess import is_text_data

    if is_text_data(data, text_column):
        return _text_backdoor(report, model, data, label, text_column, seed)
    ds = data if isinstance(data, Dataset) else load_dataset(data, label=label)
    _check_size(ds)
    report.data = ds.describe()
    with report.timed("load-model"):
        target = _load_model(model)
    model_name = str(model) if isinstance(model, str | Path) else type(model).__name__
    report.config = {"model": model_name, "data": _name(data), "epochs": epochs}
    classes = _check_model_fits(target, ds, model_name)
    rng = np.random.default_rng(seed)
    module = _torch_module(target)
    nc = None
    report.metrics["anomaly_index"] = {}
    report.metrics["suspected_target"] = None
    if module is not None:
        pick = rng.choice(len(ds), size=min(NC_SAMPLES, len(ds)), replace=False)
        with report.timed("neural-cleanse"):
            nc = _cleanse(module, ds, ds.x[pick], classes or ds.num_classes, epochs, seed)
        _nc_metrics(report, nc)
        report.metrics["neural_cleanse.success"] = {
            str(c): round(float(v), 3) for c, v in enumerate(nc.success)
        }
        if nc.suspected_target is not None:
            t = nc.suspected_target
            report.add(
                Finding(
                    rule="MLW-DAT-007",
                    title=f"Model likely has a backdoor targeting class {t} ("
                    + (
                        f"anomaly index {nc.anomaly_index[t]:.1f})"
                        if nc.verdict is None
                        else f"trigger {nc.verdict.ratio:.1%} of the median class's)"
                    ),
                    severity=Severity.HIGH,
                    atlas=["AML.T0018.000", "AML.T0043.004", "AML.T0020"],
                    mitigations=["AML.M0008", "AML.M0007", "AML.M0025"],
                    description=(
                        f"Neural Cleanse (Wang et al. 2019) found a trigger of L1 size "
                        f"{nc.l1[t]:.1f} that turns {nc.success[t]:.0%} of inputs into class {t}; "
                        f"the median class needs {np.median(nc.l1):.1f}. {dm.verdict_text(nc)} "
                        "The reversed triggers are shown in the report."
                    ),
                    recommendation=(
                        "Do not deploy this model. Audit its training data with "
                        "'mlwarden data DATA --model MODEL', remove the poisoned samples and "
                        "retrain, or obtain the model from a trusted, signed source."
                    ),
                    evidence={
                        "suspected_target": t,
                        "anomaly_index": round(float(nc.anomaly_index[t]), 3),
                        "l1": round(float(nc.l1[t]), 3),
                        "median_l1": round(float(np.median(nc.l1)), 3),
                        "domain": nc.domain,
                    },
                    artifact=str(model) if isinstance(model, str | Path) else None,
                    check="neural-cleanse",
                    owasp=["ML10"],
                )
            )
    else:
        artifact = str(model) if isinstance(model, str | Path) else None
        _backdoor_by_queries(report, target, ds, classes or ds.num_classes, seed, artifact)
    if getattr(target, "access", None) == "label":
        # Every copy's entropy would be 0: a silent "nothing flagged", not a screen.
        report.metrics["strip.skipped"] = "the model returns labels only; STRIP needs scores"
        return report
    # STRIP: half the data calibrates the clean entropy, the rest is screened
    perm = rng.permutation(len(ds))
    half = len(ds) // 2
    clean, screen = ds.x[perm[:half]], ds.x[perm[half:]][:1000]
    with report.timed("strip"):
        h, flagged, thr = dm.strip(target, screen, clean, n=strip_samples, frr=frr, seed=seed)
    report.metrics["strip.threshold"] = round(thr, 4)
    report.metrics["strip.flagged_fraction"] = round(float(flagged.mean()), 4)
    if nc is not None and nc.suspected_target is not None:
        t = nc.suspected_target
        stamped = nc.apply(t, screen[:200])
        hs = dm.strip_entropy(target, stamped, clean, n=strip_samples, seed=seed + 2)
        report.metrics["strip.detects_reversed_trigger"] = round(float(np.mean(hs < thr)), 4)
    excess = float(flagged.mean()) - 2 * frr
    if excess > 0 and flagged.sum() >= 5:
        report.add(
            Finding(
                rule="MLW-DAT-008",
                title=f"STRIP flags {flagged.mean():.1%} of the data as trojaned (expected about {frr:.0%})",
                severity=Severity.MEDIUM,
                atlas=["AML.T0043.004"],
                mitigations=["AML.M0007", "AML.M0015"],
                description="Superimposed on other inputs, these inputs keep their prediction far more than clean inputs do (low entropy), as inputs carrying a trigger do (STRIP, Gao et al. 2019).",
                recommendation="Inspect the low-entropy inputs; if they share a pattern, treat the model and data as backdoored.",
                evidence={
                    "threshold": round(thr, 4),
                    "flagged": int(flagged.sum()),
                    "screened": len(screen),
                },
                check="strip",
                owasp=["ML10"],
            )
        )
    return report
