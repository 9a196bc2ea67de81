"""Poisoning detectors: mlwarden against IBM ART on BadNets-poisoned digits and MNIST-5k.

For each dataset, poison rate and repeat: a stratified 75/25 split, BadNets all-to-one
(3x3 checkerboard patch, bottom-right; target class varies with the repeat) on the
training part, a SmallCNN trained on it, then every detector flags training samples.
Figures are TPR, FPR and F1 of the flagged set against the true poison indices, as
medians over repeats; "NC target" says whether Neural Cleanse named the true target.

Same settings for both tools: 10 dimensions and 2-means for activation clustering;
eps = the poison rate and 1.5 x eps removal for spectral signatures; 20 overlays and a
1% false-rejection/acceptance rate for STRIP, with the clean test split as STRIP's
clean reference. ART's defences read the activations of the classifier's last layer
(the logits); they are also run on the penultimate layer that mlwarden uses ("ART
... (penult.)"). ART's NeuralCleanse supports Keras classifiers only, so it cannot run
on these PyTorch models (noted in the output).

``--datasets flatdigits`` (digits as 64 flat features) and ``table`` (a 40-feature
synthetic table) train an MLP instead and poison the last 3 features (a patch over
features). Our rows also include the data-only feature-trigger detector, STRIP over the
training data by queries, and the whole ``suspicious`` list of ``data_report``.

``--matrix OUT.jsonl`` runs the issue-18 matrix instead (inputs x triggers x rates, one
JSON line per cell, resumable; ``--render OUT.jsonl`` prints it as markdown)::

    nice -n 10 .venv/bin/python benchmarks/poisoning_vs_peers.py --matrix m.jsonl \
        --inputs table,digits,flatdigits,tweets --rates 0.01,0.05,0.10,0.25 --repeats 1 --nc-epochs 30

``--seeds 0,1`` runs those seeds (instead of ``--repeats``); ``--session N`` and
``--code COMMIT`` tag each line; ``--render OUT.jsonl --summary`` prints one row per
cell with medians and ranges over the seeds (each seed's newest line).

``--save DIR`` keeps each cell's poisoned data and trained model
(``DIR/<input>-<trigger>-<rate>-s<seed>/``: ``data.npz``, ``model.pt`` (a state dict) or
``model.joblib``, ``meta.json``); ``--reuse DIR`` reads a saved cell back (every file
through mlwarden's scanner, ``supplychain.loader.safe_load``) instead of poisoning and
training again, so a detector change is re-measured on the same data and model (same
figures as the saving run, ART's included: its k-means is seeded)::

    nice -n 10 .venv/bin/python benchmarks/poisoning_vs_peers.py --matrix before.jsonl \
        --inputs mnist5k --triggers blended --rates 0.05 --seeds 0 --nc-epochs 30 --save cells
    # ... change a detector, then
    nice -n 10 .venv/bin/python benchmarks/poisoning_vs_peers.py --matrix after.jsonl \
        --inputs mnist5k --triggers blended --rates 0.05 --seeds 0 --nc-epochs 30 --reuse cells

ART's activation clustering crashes on a class with fewer than 2 rows (a whole class
relabelled empties it): it is run on the classes that have 2 or more (the cell's
``art_guard`` says which were left out); any other ART crash scores F1 0 with its error
in the cell (the render counts them). Our own detectors are not guarded: an exception
in ``data_report`` stops the run.

Run (about 15 minutes on 2 cores)::

    timeout 2400 .venv/bin/python benchmarks/poisoning_vs_peers.py --repeats 3
    timeout 1500 nice -n 10 .venv/bin/python benchmarks/poisoning_vs_peers.py \
        --datasets table,flatdigits --rates 0.01,0.05,0.10,0.25 --repeats 1 --nc-epochs 30
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

import audio_matrix
from mlwarden.core.data import Dataset, load_dataset
from mlwarden.core.errors import UserError
from mlwarden.core.models import MLP, SmallCNN, fit
from mlwarden.poisoning import detect_data as dd
from mlwarden.poisoning import detect_model as dm
from mlwarden.poisoning.activations import penultimate
from mlwarden.poisoning.simulate import badnets, evaluate

os.environ.setdefault("TQDM_DISABLE", "1")  # ART's progress bars, before ART is imported
TARGETS = (0, 3, 7, 5, 9)


class _Embed(nn.Module):
    """The penultimate layer as a module, so ART's 'last layer' is the one we use."""

    def __init__(self, model: SmallCNN | MLP) -> None:
        super().__init__()
        # the layers themselves, not the model: ART walks the module tree by name
        self.layers = (
            nn.Sequential(model.features, model.penultimate)
            if isinstance(model, SmallCNN)
            else model.body
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _load(name: str) -> Dataset:
    """Image sets by name; ``flatdigits``: digits as 64 flat features (for an MLP);
    ``table``: a 40-feature, 10-class synthetic table scaled to [0, 1]; ``audio``:
    harmonic sounds (``audio_matrix.py``)."""
    if name == "audio":
        return audio_matrix.load()
    if name == "tweets":
        # 8,000 of the 38k tweets (stratified): the text checks' cost grows with the set
        ds = load_dataset("tweets")
        keep, _ = ds.split(test_size=1 - 8000 / len(ds), seed=11)
        return keep
    if name == "flatdigits":
        ds = load_dataset("digits")
        return Dataset(x=ds.x.reshape(len(ds), -1), y=ds.y, name=name)
    if name == "table":
        from sklearn.datasets import make_classification

        x, y = make_classification(
            n_samples=3000,
            n_features=40,
            n_informative=24,
            n_redundant=6,
            n_classes=10,
            n_clusters_per_class=1,
            class_sep=2.0,
            random_state=3,
        )
        x = (x - x.min(0)) / (x.max(0) - x.min(0))
        return Dataset(x=x.astype(np.float32), y=y.astype(np.int64), name=name)
    return load_dataset(name)


def _art_classifier(model: nn.Module, shape: tuple[int, ...], k: int, softmax: bool = False):
    from art.estimators.classification import PyTorchClassifier

    net = nn.Sequential(model, nn.Softmax(dim=1)) if softmax else model
    return PyTorchClassifier(
        model=net,
        loss=nn.CrossEntropyLoss(),
        input_shape=shape,
        nb_classes=k,
        clip_values=(0.0, 1.0),
    )


def _art_flags(defence: Any, **kw: Any) -> np.ndarray:
    _, is_clean = defence.detect_poison(**kw)
    return np.asarray(is_clean) == 0


def run_case(
    name: str, rate: float, seed: int, nc_epochs: int, nc_steps: int = 4, nc_batch: int = 64
) -> tuple[dict[str, dict], dict]:
    """One poisoned training run; returns per-detector metrics and case info."""
    from art.defences.transformer.poisoning import STRIP

    from mlwarden.poisoning.assess import data_report
    from mlwarden.poisoning.feature_triggers import feature_triggers

    ds = _load(name)
    train, test = ds.split(test_size=0.25, seed=seed)
    target = TARGETS[seed % len(TARGETS)]
    p = badnets(train, rate, target=target, seed=seed)
    side = ds.input_shape[-1]
    torch.manual_seed(seed)
    model: SmallCNN | MLP
    if ds.x.ndim == 2:
        model = MLP(ds.x.shape[1], 10, hidden=(128, 64))
        fit(model, p.dataset.x, p.dataset.y, epochs=30, seed=seed)
    else:
        model = SmallCNN(1, 10, side)
        fit(model, p.dataset.x, p.dataset.y, epochs=15 if side == 8 else 6, seed=seed)
    ev = evaluate(model, p, test)
    x, y, truth = p.dataset.x, p.dataset.y, p.is_poison
    results: dict[str, dict] = {}

    def timed(label: str, fn: Callable[[], np.ndarray]) -> None:
        t0 = time.perf_counter()
        try:
            flags = fn()
        except Exception as exc:  # a peer that crashes scores nothing, and we say why
            print(f"#   {label} failed: {type(exc).__name__}: {str(exc)[:120]}", flush=True)
            flags = np.zeros(len(truth), dtype=bool)
        m = dd.flag_metrics(flags, truth)
        m["seconds"] = round(time.perf_counter() - t0, 2)
        results[label] = m

    acts = penultimate(model, x)
    timed("ours AC", lambda: dd.activation_clustering(acts, y, seed=seed).flagged)
    timed("ours spectral", lambda: dd.spectral_signatures(acts, y, eps=rate).flagged)
    np.random.seed(seed)
    timed("ours STRIP", lambda: dm.strip(model, x, test.x, n=20, frr=0.01, seed=seed)[1])
    nc_holder: dict[str, Any] = {}

    def nc_occlusion() -> np.ndarray:
        nc = dm.neural_cleanse(
            model,
            test.x,
            num_classes=10,
            epochs=nc_epochs,
            steps_per_epoch=nc_steps,
            batch_size=nc_batch,
            seed=seed,
        )
        nc_holder["nc"] = nc
        return dm.trigger_occlusion(model, x, y, nc).flagged

    timed("ours NC+occlusion", nc_occlusion)
    nc = nc_holder["nc"]
    timed("ours feature-trigger (data only)", lambda: feature_triggers(x, y, seed=seed).flagged)
    timed("ours STRIP (data, queries)", lambda: dm.strip_in_data(model, x, y, seed=seed).flagged)

    def whole_audit() -> np.ndarray:
        report = data_report(p.dataset, model=model, neural_cleanse_epochs=nc_epochs, seed=seed)
        flags = np.zeros(len(truth), dtype=bool)
        flags[[e["index"] for e in report.suspicious]] = True
        return flags

    timed("ours data --model: whole suspicious list", whole_audit)

    _art_matrix(model, x, y, rate, timed)

    def art_strip() -> np.ndarray:
        np.random.seed(seed)
        defended = STRIP(_art_classifier(model, tuple(x.shape[1:]), 10, softmax=True))(
            num_samples=20, false_acceptance_rate=0.01
        )
        defended.mitigate(test.x)
        return defended.predict(x).sum(axis=1) == 0  # abstained = flagged

    timed("ART STRIP", art_strip)
    info = {
        "target": target,
        "nc_target": nc.suspected_target,
        "nc_anomaly": round(float(nc.anomaly_index[target]), 2),
        "clean_acc": round(ev["clean_accuracy"], 4),
        "asr": round(ev["asr"], 4),
        "poison": int(truth.sum()),
        "share_of_target": round(float(truth[y == target].mean()), 3),
        "nc_epochs": nc.epochs,
    }
    return results, info


#: the data-issue lists (``artifacts.data_issues``) that hold label flips, and the key
#: of their union in a cell's ``ours``
FLIP_LISTS = ("label-issues", "relabelled-class")
FLIPS = "label-flips"
MATRIX_INPUTS = ("digits", "flatdigits", "mnist5k", "table", "tweets", "audio")
MATRIX_TRIGGERS = ("badnets", "blended", "clean-label", "feature", "label-flip")
#: why a (input, trigger) cell does not apply; other cells run
NOT_APPLICABLE = {
    ("digits", "feature"): "on images the feature trigger is the BadNets patch (row badnets)",
    ("mnist5k", "feature"): "on images the feature trigger is the BadNets patch (row badnets)",
    (
        "flatdigits",
        "feature",
    ): "the BadNets patch on flat inputs is a 3-feature trigger (row badnets)",
    ("table", "badnets"): "a patch on a table is the feature trigger (row feature)",
    ("tweets", "blended"): "no blend of two texts; the text trigger is BadNL (row badnets)",
    ("tweets", "clean-label"): "needs input gradients (PGD) to make texts hard",
    (
        "tweets",
        "feature",
    ): "a text has no numeric features; the text trigger is BadNL (row badnets)",
    **{("audio", t): why for t, why in audio_matrix.NOT_APPLICABLE.items()},
}


def _matrix_net(name: str, x: np.ndarray) -> nn.Module:
    """The untrained network of a torch input (audio, images, flat digits)."""
    if name == "audio":
        return audio_matrix.MelClassifier(audio_matrix.CLASSES)
    if x.ndim == 2:
        return MLP(x.shape[1], 10, hidden=(128, 64))
    return SmallCNN(1, 10, x.shape[-1])


def _matrix_model(name: str, x: np.ndarray, y: np.ndarray, seed: int) -> Any:
    """The model each input is benchmarked with: a SmallCNN on images, an MLP on flat
    digits, scikit-learn HistGradientBoosting on the table, TF-IDF + LR on text."""
    torch.manual_seed(seed)
    if name == "audio":
        return audio_matrix.model(x, y, seed)
    if name == "tweets":
        from mlwarden.core.textmodels import tfidf_pipeline

        return tfidf_pipeline(x, y)
    if name == "table":
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(max_iter=40, random_state=seed).fit(x, y)
    model = _matrix_net(name, x)
    fit(model, x, y, epochs=30 if x.ndim == 2 else 15 if x.shape[-1] == 8 else 6, seed=seed)
    return model


def cell_dir(root: str, name: str, trigger: str, rate: float, seed: int) -> str:
    """Where ``--save`` keeps one cell's poisoned data and model (``--reuse`` reads it)."""
    return os.path.join(root, f"{name}-{trigger}-{rate:g}-s{seed}")


def save_cell(path: str, data: Dataset, truth: np.ndarray, model: Any, meta: dict) -> None:
    """Write a cell's poisoned training set (``data.npz``: x, y, is_poison), its model
    (``model.pt``, a torch state dict, or ``model.joblib``) and ``meta.json`` (target,
    attack success, clean accuracy), so detectors can be re-measured without retraining."""
    os.makedirs(path, exist_ok=True)
    x = data.x.astype(str) if data.x.dtype == object else data.x  # texts: no pickles
    np.savez_compressed(os.path.join(path, "data.npz"), x=x, y=data.y, is_poison=truth)
    if isinstance(model, nn.Module):
        torch.save(model.state_dict(), os.path.join(path, "model.pt"))
    else:
        import joblib

        joblib.dump(model, os.path.join(path, "model.joblib"))
    with open(os.path.join(path, "meta.json"), "w") as fh:
        json.dump({**meta, "x_dtype": str(data.x.dtype)}, fh)


def load_cell(path: str, name: str, train: Dataset) -> tuple[Dataset, np.ndarray, Any, dict]:
    """Read what :func:`save_cell` wrote, every file through mlwarden's scanner
    (``supplychain.loader.safe_load``: refused unless the scan is clean); ``train`` is the
    cell's clean split, whose metadata (modality, bounds, sample rate) the data keeps."""
    from dataclasses import replace

    from mlwarden.supplychain.loader import safe_load

    with open(os.path.join(path, "meta.json")) as fh:
        meta = json.load(fh)
    arrays = safe_load(os.path.join(path, "data.npz"))
    x = arrays["x"].astype(meta["x_dtype"])
    data = replace(train, x=x, y=arrays["y"], sources=[])
    truth = arrays["is_poison"].astype(bool)
    if os.path.exists(os.path.join(path, "model.pt")):
        model = _matrix_net(name, x)
        model.load_state_dict(safe_load(os.path.join(path, "model.pt")))
        model.eval()
    else:
        model = safe_load(os.path.join(path, "model.joblib"))
    return data, truth, model, meta


def _poison(name: str, trigger: str, train: Dataset, rate: float, target: int, seed: int):
    """The poisoned training set of one cell (UserError when the rate cannot be met)."""
    from mlwarden.poisoning.simulate import blended, clean_label, flip_labels

    if trigger == "label-flip":
        # targeted: one source class relabelled to the target ("ASR" = share of the
        # source class's clean test rows the model puts in the target)
        src = (target + 1) % 10 if name != "tweets" else (target + 1) % train.num_classes
        return flip_labels(train, rate, mode="targeted", source=src, target=target, seed=seed)
    if name == "audio":
        return audio_matrix.poison(trigger, train, rate, target, seed)
    if name == "tweets":
        from mlwarden.poisoning.text_simulate import badnl

        return badnl(train, rate, target=target, seed=seed)
    if trigger == "blended":
        return blended(train, rate, target=target, seed=seed)
    if trigger == "clean-label":
        return clean_label(train, rate, target=target, seed=seed)
    return badnets(train, rate, target=target, seed=seed)


class _Recorder:
    """Keeps the detections ``data_report`` combines (:func:`ranking.combine`), to score
    each detector alone, and the whole calibrated list (the report keeps 1,000 rows)."""

    def __init__(self) -> None:
        from mlwarden.poisoning import ranking

        self.detections: list[Any] = []
        self.ranked: list[dict] = []
        self.calls = 0
        self._module = ranking
        self._combine = ranking.combine

    def __enter__(self) -> _Recorder:
        def combine(detections: list[Any], *a: Any, **kw: Any) -> Any:
            self.calls += 1
            self.detections = list(detections)
            out = self._combine(detections, *a, **kw)
            self.ranked = out.suspicious
            return out

        self._module.combine = combine  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: Any) -> None:
        self._module.combine = self._combine  # type: ignore[assignment]


def _art_matrix(
    model: Any, x: np.ndarray, y: np.ndarray, rate: float, timed: Callable, seed: int = 0
) -> str | None:
    """ART's poison detectors (AC FastICA/PCA, spectral signatures) on the logits and the
    penultimate layer; only torch models have the activations they read. Returns what
    activation clustering was not told of (classes with fewer than 2 rows), or None."""
    from art.defences.detector.poison import ActivationDefence, SpectralSignatureDefense

    y1h = np.eye(10)[y]
    shape = tuple(x.shape[1:])
    embed = audio_matrix.Embed(model) if hasattr(model, "n_fft") else _Embed(model)
    # ART clusters every class it is told of and crashes on one with fewer rows than
    # clusters (IndexError on an emptied class, ValueError on one row): a whole-class
    # flip leaves such a class. It is told only of the classes with 2+ rows (their
    # activations unchanged, the other rows never flagged), so it runs where it can.
    counts = np.bincount(y, minlength=10)
    present = np.flatnonzero(counts >= 2)
    keep = np.isin(y, present)
    y_ac = np.eye(len(present))[np.searchsorted(present, y[keep])]

    def art_ac(clf: Any, reduce: str) -> np.ndarray:
        # ART's k-means draws from numpy's global generator: seeded, so a cell read
        # back with --reuse scores ART exactly as the run that saved it
        np.random.seed(seed)
        flags = np.zeros(len(y), dtype=bool)
        flags[keep] = _art_flags(
            ActivationDefence(clf, x[keep], y_ac), nb_clusters=2, nb_dims=10, reduce=reduce
        )
        return flags

    for tag, net in (("", model), (" (penult.)", embed)):
        clf = _art_classifier(net, shape, 10)
        clf_ac = clf if len(present) == 10 else _art_classifier(net, shape, len(present))
        for reduce in ("FastICA", "PCA"):
            timed(
                f"ART AC {reduce}{tag}",
                lambda clf=clf_ac, reduce=reduce: art_ac(clf, reduce),
            )
        timed(
            f"ART spectral{tag}",
            lambda clf=clf: _art_flags(
                SpectralSignatureDefense(
                    clf, x, y1h, batch_size=128, eps_multiplier=1.5, expected_pp_poison=rate
                )
            ),
        )
    left_out = sorted(set(range(10)) - set(present.tolist()))
    return (
        f"ART AC ran on {len(present)} classes: class(es) {left_out} hold fewer than 2 rows "
        "(ART crashes on them)"
        if left_out
        else None
    )


def _build_cell(
    name: str, trigger: str, rate: float, seed: int, train: Dataset, test: Dataset, target: int
) -> tuple[Dataset, np.ndarray, Any, dict]:
    """Poison the clean split and train the cell's model; returns the poisoned data, the
    truth, the model and its attack success and clean accuracy (raises UserError when
    the attack cannot meet the rate)."""
    from mlwarden.poisoning.simulate import evaluate
    from mlwarden.poisoning.text_simulate import text_asr, text_clean_accuracy

    p = _poison(name, trigger, train, rate, target, seed)
    model = _matrix_model(name, p.dataset.x, p.dataset.y, seed)
    if name == "tweets":
        ev = {"clean_accuracy": text_clean_accuracy(model, test)}
        if p.trigger is not None:
            ev["asr"] = text_asr(model, p, test)
        else:
            src = test.y == p.info["source"]
            ev["asr"] = float(np.mean(model.predict(list(test.x[src])) == target))
    else:
        ev = evaluate(model, p, test)
    meta = {
        "target": target,
        "asr": round(float(ev.get("asr", float("nan"))), 4),
        "clean_acc": round(float(ev["clean_accuracy"]), 4),
    }
    return p.dataset, p.is_poison, model, meta


def matrix_cell(
    name: str,
    trigger: str,
    rate: float,
    seed: int,
    nc_epochs: int,
    save: str | None = None,
    reuse: str | None = None,
) -> dict:
    """One cell of the matrix: poison, train, audit with ``data_report`` (every detector
    scored alone and the combined ``suspicious`` list), then ART's detectors. With
    ``save``, the poisoned data and model are written under it; with ``reuse``, a cell
    saved there is read back instead of poisoned and trained again."""
    from mlwarden.poisoning.assess import data_report

    cell: dict[str, Any] = {"input": name, "trigger": trigger, "rate": rate, "seed": seed}
    if (name, trigger) in NOT_APPLICABLE:
        return {**cell, "status": "n/a", "why": NOT_APPLICABLE[(name, trigger)]}
    t_start = time.perf_counter()
    ds = _load(name)
    train, test = ds.split(test_size=0.25, seed=seed)
    target = TARGETS[seed % len(TARGETS)] % ds.num_classes
    saved = reuse and cell_dir(reuse, name, trigger, rate, seed)
    if saved and os.path.exists(os.path.join(saved, "meta.json")):
        data, truth, model, meta = load_cell(saved, name, train)
        cell["reused"] = saved
    else:
        try:
            data, truth, model, meta = _build_cell(name, trigger, rate, seed, train, test, target)
        except UserError as exc:
            return {**cell, "status": "n/a", "why": str(exc)}
        if save:
            save_cell(cell_dir(save, name, trigger, rate, seed), data, truth, model, meta)
    x, y = data.x, data.y
    ours: dict[str, dict] = {}
    art: dict[str, dict] = {}

    def timed(label: str, fn: Callable[[], np.ndarray], into: dict = art) -> None:
        t0 = time.perf_counter()
        try:
            flags = fn()
        except Exception as exc:  # a detector that crashes scores nothing, and we say why
            into[label] = {"error": f"{type(exc).__name__}: {str(exc)[:160]}", "f1": 0.0}
            return
        into[label] = {
            **dd.flag_metrics(flags, truth),
            "seconds": round(time.perf_counter() - t0, 2),
        }

    t0 = time.perf_counter()
    with _Recorder() as rec:
        # text: the data checks (no --model on text yet); others: data --model
        report = data_report(
            data,
            model=None if name == "tweets" else model,
            neural_cleanse_epochs=nc_epochs,
            seed=seed,
        )
    if rec.calls != 1:  # else every figure below would be a silent 0
        raise RuntimeError(
            f"data_report called ranking.combine {rec.calls} times (expected once): "
            "the benchmark cannot read the ranked list; update _Recorder"
        )
    # the whole ranked list (the report keeps its first 1,000 rows)
    flags = np.zeros(len(truth), dtype=bool)
    flags[[e["index"] for e in rec.ranked if e["index"] < len(truth)]] = True
    ours["suspicious"] = {
        **dd.flag_metrics(flags, truth),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    flips = np.zeros(len(truth), dtype=bool)
    for det in rec.detections:
        if len(det.flagged) == len(truth):
            ours[det.name] = dd.flag_metrics(det.flagged, truth)
            if det.name in FLIP_LISTS:
                flips |= det.flagged
    # a label flip is judged on the data-issue lists its rows land in, together
    ours[FLIPS] = dd.flag_metrics(flips, truth)
    art_guard = (
        _art_matrix(model, x, y, rate, timed, seed) if isinstance(model, nn.Module) else None
    )
    why_no_art = (
        None
        if isinstance(model, nn.Module)
        else "ART's poison detectors read a neural network's activations (none here)"
    )
    return {
        **cell,
        "status": "ok",
        "target": target,
        "poison": int(truth.sum()),
        "share_of_target": round(float(truth[y == target].mean()), 3),
        "asr": meta["asr"],
        "clean_acc": meta["clean_acc"],
        "ours": ours,
        "art": art,
        "art_not_run": why_no_art,
        **({"art_guard": art_guard} if art_guard else {}),
        "findings": sorted({f.rule for f in report.findings}),
        "seconds": round(time.perf_counter() - t_start, 1),
    }


def run_matrix(
    out: str,
    inputs: list[str],
    triggers: list[str],
    rates: list[float],
    seeds: list[int],
    nc_epochs: int,
    *,
    save: str | None = None,
    reuse: str | None = None,
    tags: dict[str, Any] | None = None,
) -> None:
    """Run every missing cell and append one JSON line per cell to ``out`` (resumable);
    ``tags`` (e.g. the session and the commit the code is from) go into every line."""
    done = set()
    if os.path.exists(out):
        with open(out) as fh:
            for line in fh:
                c = json.loads(line)
                done.add((c["input"], c["trigger"], c["rate"], c["seed"]))
    for name in inputs:
        for trigger in triggers:
            for rate in rates:
                for seed in seeds:
                    if (name, trigger, rate, seed) in done:
                        continue
                    cell = matrix_cell(name, trigger, rate, seed, nc_epochs, save, reuse)
                    cell.update(tags or {})
                    with open(out, "a") as fh:
                        fh.write(json.dumps(cell) + "\n")
                    print(
                        json.dumps(
                            {
                                k: cell.get(k)
                                for k in ("input", "trigger", "rate", "seed", "status", "asr")
                            }
                            | {"list_f1": cell.get("ours", {}).get("suspicious", {}).get("f1")}
                            | {"seconds": cell.get("seconds")}
                        ),
                        flush=True,
                    )


def cell_scores(c: dict) -> dict[str, Any]:
    """One run cell's figures: our list F1 (a label flip: its flip lists), our best single
    detector, the best ART detector (and how many ART detectors crashed), the verdict."""
    ours = {k: v for k, v in c["ours"].items() if k not in ("suspicious", FLIPS)}
    best = max(ours, key=lambda k: ours[k]["f1"]) if ours else None
    art = {k: v for k, v in c["art"].items() if "error" not in v}
    best_art = max(art, key=lambda k: art[k]["f1"]) if art else None
    # a label flip is a data-quality issue: its rows are in the label-issue and
    # relabelled-class lists (report artifacts.data_issues), not the poisoning list
    # (cells run before the relabelled-class list judged the label-issue list alone)
    flip_key = FLIPS if FLIPS in c["ours"] else "label-issues"
    key = flip_key if c["trigger"] == "label-flip" else "suspicious"
    f1 = c["ours"].get(key, {"f1": 0.0})["f1"]
    art_f1 = art[best_art]["f1"] if best_art else 0.0
    if c["asr"] < 0.9:
        verdict = "attack did not take"
    else:
        verdict = "met" if f1 >= 0.8 and f1 >= art_f1 else "missed"
    return {
        "f1": f1,
        "best": best,
        "best_f1": ours[best]["f1"] if best else 0.0,
        "best_art": best_art,
        "art_f1": art_f1,
        "art_crashed": sorted(k for k, v in c["art"].items() if "error" in v),
        "art_ran": bool(c["art"]),
        "verdict": verdict,
    }


def _art_text(s: dict[str, Any]) -> str:
    if not s["art_ran"]:
        return "n/a (no activations)"
    text = f"{s['best_art']} ({s['art_f1']:.3f})" if s["best_art"] else "none ran"
    if s["art_crashed"]:  # a crashed peer scores 0; say which
        text += f"; {len(s['art_crashed'])} crashed, scored 0"
    return text


def render_matrix(path: str) -> str:
    """The matrix file as a markdown table (one row per cell, n/a cells with why)."""
    with open(path) as fh:
        cells = [json.loads(line) for line in fh]
    out = [
        "| input | trigger | seed | poison (of data / of target) | ASR | clean acc | ours: the list F1 | "
        "best single detector of ours (F1) | best ART (F1) | target (ASR >= 0.9) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        head = f"| {c['input']} | {c['trigger']} | {c['seed']} | {c['rate']:.0%}"
        if c["status"] != "ok":
            out.append(f"{head} | n/a | | | | | {c['why']} |")
            continue
        s = cell_scores(c)
        out.append(
            f"{head} / {c['share_of_target']:.0%} | {c['asr']:.2f} | {c['clean_acc']:.2f} | "
            f"{s['f1']:.3f} | {s['best']} ({s['best_f1']:.3f}) | {_art_text(s)} | {s['verdict']} |"
        )
    return "\n".join(out)


def _span(values: list[float]) -> str:
    """Median, and the range when there are several values."""
    med = f"{float(np.median(values)):.3f}"
    return med if len(values) == 1 else f"{med} ({min(values):.3f}-{max(values):.3f})"


def render_summary(path: str, sessions: set[int | None] | None = None) -> str:
    """The matrix as one row per (input, trigger, rate): each seed's newest run (a later
    line replaces an earlier one; only ``sessions`` when given), medians and ranges over
    the seeds, how many seeds met the target, and the session the figures are from."""
    newest: dict[tuple, dict] = {}
    with open(path) as fh:
        for line in fh:
            c = json.loads(line)
            if sessions is None or c.get("session") in sessions:
                newest[(c["input"], c["trigger"], c["rate"], c["seed"])] = c
    rows: dict[tuple, list[dict]] = defaultdict(list)
    for (name, trig, rate, _), c in newest.items():
        rows[(name, trig, rate)].append(c)
    out = [
        "| input | trigger | poison | seeds | ASR | ours: list F1 | best ART F1 | "
        "target (ASR >= 0.9): seeds met | session |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    skipped: dict[str, str] = {}
    trig_order = list(dict.fromkeys(t for _, t, _ in rows))
    keys = sorted(
        rows,
        key=lambda k: (
            MATRIX_INPUTS.index(k[0]) if k[0] in MATRIX_INPUTS else len(MATRIX_INPUTS),
            trig_order.index(k[1]),
            k[2],
        ),
    )
    for name, trig, rate in keys:
        cs = rows[(name, trig, rate)]
        ok = [c for c in cs if c["status"] == "ok"]
        head = f"| {name} | {trig} | {rate:.0%} | {','.join(str(c['seed']) for c in cs)}"
        if (name, trig) in NOT_APPLICABLE:  # the same at every rate: said once, below
            skipped[f"{name} x {trig}"] = NOT_APPLICABLE[(name, trig)]
            continue
        if not ok:
            out.append(f"{head} | n/a | | | {cs[0]['why']} | {cs[0].get('session', '1-3')} |")
            continue
        sc = [cell_scores(c) for c in ok]
        verdicts = defaultdict(int)
        for s in sc:
            verdicts[s["verdict"]] += 1
        art = "n/a" if not any(s["art_ran"] for s in sc) else _span([s["art_f1"] for s in sc])
        crashed = sum(bool(s["art_crashed"]) for s in sc)
        sessions_of = sorted(
            {str(c.get("session", "1-3")) + (f" @{c['code']}" if "code" in c else "") for c in ok}
        )
        out.append(
            f"{head} | {_span([c['asr'] for c in ok])} | {_span([s['f1'] for s in sc])} | "
            + art
            + (f" ({crashed} with crashed ART detectors)" if crashed else "")
            + " | "
            + ", ".join(f"{v} {k}" for k, v in sorted(verdicts.items()))
            + f" | {', '.join(sessions_of)} |"
        )
    if skipped:
        out.append(
            "\nNot applicable at any rate: " + "; ".join(f"{k} ({v})" for k, v in skipped.items())
        )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--matrix", metavar="OUT.jsonl", help="run the issue-18 matrix into this file (resumable)"
    )
    ap.add_argument("--render", metavar="OUT.jsonl", help="print a matrix file as markdown")
    ap.add_argument(
        "--summary",
        action="store_true",
        help="with --render: one row per cell, medians and ranges over seeds (newest runs)",
    )
    ap.add_argument("--inputs", default=",".join(MATRIX_INPUTS))
    ap.add_argument("--triggers", default=",".join(MATRIX_TRIGGERS))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seeds", help="matrix: these seeds (comma-separated) instead of 0..repeats-1")
    ap.add_argument(
        "--save",
        metavar="DIR",
        help="matrix: keep each cell's poisoned data and trained model under DIR",
    )
    ap.add_argument(
        "--reuse",
        metavar="DIR",
        help="matrix: read cells saved under DIR (by --save) instead of poisoning and "
        "training again, to re-measure changed detectors on the same data and model",
    )
    ap.add_argument("--session", type=int, help="matrix: tag every cell with this session")
    ap.add_argument("--code", help="matrix: tag every cell with the commit the code is from")
    ap.add_argument("--datasets", default="digits,mnist5k")
    ap.add_argument("--rates", default="0.05,0.10")
    ap.add_argument("--nc-epochs", type=int, default=100)
    ap.add_argument("--nc-steps", type=int, default=4, help="Neural Cleanse steps per epoch")
    ap.add_argument("--nc-batch", type=int, default=64, help="Neural Cleanse batch size")
    args = ap.parse_args()
    if args.render:
        print(render_summary(args.render) if args.summary else render_matrix(args.render))
        return
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)  # small matrices; threaded BLAS only thrashes on a shared box
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    if args.matrix:
        rates = [float(r) for r in args.rates.split(",")]
        seeds = [int(v) for v in args.seeds.split(",")] if args.seeds else list(range(args.repeats))
        tags = {"session": args.session, "code": args.code}
        run_matrix(
            args.matrix,
            args.inputs.split(","),
            args.triggers.split(","),
            rates,
            seeds,
            args.nc_epochs,
            save=args.save,
            reuse=args.reuse,
            tags={k: v for k, v in tags.items() if v is not None},
        )
        return
    for name in args.datasets.split(","):
        for rate in (float(r) for r in args.rates.split(",")):
            per: dict[str, list[dict]] = defaultdict(list)
            infos = []
            for rep in range(args.repeats):
                res, info = run_case(name, rate, rep, args.nc_epochs, args.nc_steps, args.nc_batch)
                infos.append(info)
                for k, v in res.items():
                    per[k].append(v)
                print(f"# {name} rate={rate} seed={rep}: {info}", flush=True)
            trigger = "a 3-feature patch" if name in ("flatdigits", "table") else "3x3 patch"
            share = float(np.median([i["share_of_target"] for i in infos]))
            print(
                f"\n### {name}, BadNets all-to-one ({trigger}), {rate:.0%} of the data poisoned "
                f"({share:.0%} of the target class; {args.repeats} repeats, medians)\n"
            )
            print("| detector | TPR | FPR | F1 | seconds |")
            print("|---|---|---|---|---|")
            best_ours = 0.0
            best_art = 0.0
            for k, runs in per.items():
                med = {
                    m: float(np.median([r[m] for r in runs]))
                    for m in ("tpr", "fpr", "f1", "seconds")
                }
                print(
                    f"| {k} | {med['tpr']:.3f} | {med['fpr']:.3f} | {med['f1']:.3f} | {med['seconds']:.1f} |"
                )
                if k.startswith("ours"):
                    best_ours = max(best_ours, med["f1"])
                else:
                    best_art = max(best_art, med["f1"])
            print("| ART NeuralCleanse | n/a | n/a | n/a | Keras classifiers only |")
            named = sum(i["nc_target"] == i["target"] for i in infos)
            print(
                f"\nbest F1: ours {best_ours:.3f} vs ART {best_art:.3f} "
                f"(ratio {best_ours / max(best_art, 1e-9):.2f}); Neural Cleanse named the "
                f"true target in {named}/{len(infos)} runs; clean acc / ASR per run: "
                + ", ".join(f"{i['clean_acc']:.3f}/{i['asr']:.3f}" for i in infos)
                + "\n",
                flush=True,
            )


if __name__ == "__main__":
    main()
