"""Dataset loaders: good files load; every bad file is an InputFileError naming it."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mlwarden.core.data import (
    BUNDLED,
    Dataset,
    bundled,
    load_csv,
    load_dataset,
    load_image_folder,
    load_npz,
    save_npz,
)
from mlwarden.core.errors import InputFileError, UserError


# -- good files -----------------------------------------------------------------------
def test_npz_round_trip_keeps_arrays_bounds_and_class_names(tmp_path: Path) -> None:
    ds = Dataset(
        x=np.random.default_rng(0).random((6, 1, 4, 4)).astype(np.float32),
        y=np.array([0, 1, 2, 0, 1, 2]),
        name="t",
        modality="image",
        bounds=(0.0, 1.0),
        class_names=["a", "b", "c"],
    )
    save_npz(ds, tmp_path / "d.npz")

    got = load_dataset(tmp_path / "d.npz")
    np.testing.assert_array_equal(got.x, ds.x)
    np.testing.assert_array_equal(got.y, ds.y)
    assert got.modality == "image" and got.class_names == ["a", "b", "c"]
    assert got.x.dtype == np.float32 and got.y.dtype == np.int64


def test_npz_one_hot_labels_become_indices(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 2)), y=np.eye(3))

    np.testing.assert_array_equal(load_npz(tmp_path / "d.npz").y, [0, 1, 2])


def test_csv_with_label_column_and_string_classes(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("a,b,label\n1,2,cat\n3,4,dog\n5,6,cat\n", encoding="utf-8")

    ds = load_dataset(path)
    np.testing.assert_array_equal(ds.x, [[1, 2], [3, 4], [5, 6]])
    assert ds.class_names == ["cat", "dog"] and list(ds.y) == [0, 1, 0]
    assert ds.feature_names == ["a", "b"] and ds.modality == "tabular"


def test_csv_named_label_column_semicolons_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("\ufeffy;f1;f2\n1;0.5;0.25\n0;1.5;2.5\n", encoding="utf-8")

    ds = load_csv(path, label="y")
    assert list(ds.y) == [1, 0] and ds.x.shape == (2, 2)


def test_image_folder_one_subfolder_per_class(tmp_path: Path) -> None:
    for ci, cls in enumerate(["cat", "dog"]):
        (tmp_path / cls).mkdir()
        for i in range(2):
            Image.fromarray(np.full((5, 7), 40 * (ci + i), np.uint8)).save(
                tmp_path / cls / f"{i}.png"
            )
    (tmp_path / "cat" / "notes.txt").write_text("ignored")

    ds = load_image_folder(tmp_path)
    assert ds.x.shape == (4, 1, 5, 7) and ds.class_names == ["cat", "dog"]
    assert list(ds.y) == [0, 0, 1, 1] and ds.x.max() <= 1.0


@pytest.mark.parametrize(
    ("name", "shape", "classes"),
    [("digits", (1, 8, 8), 10), ("breast-cancer", (30,), 2), ("mnist5k", (1, 28, 28), 10)],
)
def test_bundled_sets_load_without_network(name: str, shape: tuple[int, ...], classes: int) -> None:
    ds = load_dataset(name)

    assert name in BUNDLED and ds.input_shape == shape and ds.num_classes == classes
    assert ds.x.dtype == np.float32 and ds.x.min() >= 0.0 and ds.x.max() <= 1.0


def test_unknown_bundled_name_is_a_user_error() -> None:
    with pytest.raises(UserError, match="no such file or folder"):
        load_dataset("cifar10")
    with pytest.raises(UserError, match="unknown bundled dataset"):
        bundled("cifar10")


def test_split_is_stratified_and_seeded() -> None:
    ds = bundled("digits")
    tr1, te1 = ds.split(0.25, seed=0)
    tr2, te2 = ds.split(0.25, seed=0)

    np.testing.assert_array_equal(te1.y, te2.y)
    assert len(tr1) + len(te1) == len(ds)
    assert np.bincount(te1.y).min() > 0


# -- bad files ------------------------------------------------------------------------
def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def _bad_files(tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, words the message must contain)."""
    good = _npz_bytes(x=np.zeros((4, 3)), y=np.arange(4))
    cases: dict[str, tuple[bytes | str, str, str]] = {
        "npz missing y": (_npz_bytes(x=np.zeros((2, 2))), "d.npz", "no array 'y'"),
        "npz truncated": (good[: len(good) // 2], "d.npz", "npz"),
        "npz object array": (
            _npz_bytes(x=np.array([{"a": 1}, None], dtype=object), y=np.arange(2)),
            "d.npz",
            "unpickling",
        ),
        "npz NaN": (_npz_bytes(x=np.array([[np.nan, 1.0]]), y=np.arange(1)), "d.npz", "NaN"),
        "npz string x": (_npz_bytes(x=np.array([["a", "b"]]), y=np.arange(1)), "d.npz", "dtype"),
        "npz length mismatch": (_npz_bytes(x=np.zeros((3, 2)), y=np.arange(2)), "d.npz", "samples"),
        "npz negative label": (
            _npz_bytes(x=np.zeros((2, 2)), y=np.array([0, -1])),
            "d.npz",
            "non-negative",
        ),
        "npz fractional label": (
            _npz_bytes(x=np.zeros((2, 2)), y=np.array([0.5, 1.0])),
            "d.npz",
            "whole",
        ),
        "npz empty": (
            _npz_bytes(x=np.zeros((0, 2)), y=np.zeros(0, np.int64)),
            "d.npz",
            "no samples",
        ),
        "npz 1-d x": (_npz_bytes(x=np.zeros(3), y=np.arange(3)), "d.npz", "shape"),
        "npz bad bounds": (
            _npz_bytes(x=np.zeros((2, 2)), y=np.arange(2), bounds=np.array([1.0, 0.0])),
            "d.npz",
            "bounds",
        ),
        "csv wrong label column": ("a,b,target\n1,2,0\n", "d.csv", "no label column 'label'"),
        "csv non-number cell": ("a,b,label\n1,x,0\n", "d.csv", "'x' is not a number"),
        "csv ragged row": ("a,b,label\n1,2,0\n1,2\n", "d.csv", "line 3 has 2 fields"),
        "csv empty": ("", "d.csv", "empty"),
        "csv header only": ("a,b,label\n", "d.csv", "no data rows"),
        "csv NaN feature": ("a,b,label\n1,nan,0\n", "d.csv", "NaN"),
        "csv only a label": ("label\n0\n1\n", "d.csv", "no feature columns"),
        "csv not utf-8": (b"a,b,label\n\xff\xfe,1,0\n", "d.csv", "UTF-8"),
        "not a dataset": (b"\x00\x01\x02\x03binary", "d.bin", "not a dataset"),
    }
    out: dict[str, tuple[Path, str]] = {}
    for i, (name, (content, filename, words)) in enumerate(cases.items()):
        folder = tmp / f"case{i}"
        folder.mkdir()
        path = folder / filename
        if isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_bytes(content)
        out[name] = (path, words)
    return out


BAD_NAMES = [
    "npz missing y",
    "npz truncated",
    "npz object array",
    "npz NaN",
    "npz string x",
    "npz length mismatch",
    "npz negative label",
    "npz fractional label",
    "npz empty",
    "npz 1-d x",
    "npz bad bounds",
    "csv wrong label column",
    "csv non-number cell",
    "csv ragged row",
    "csv empty",
    "csv header only",
    "csv NaN feature",
    "csv only a label",
    "csv not utf-8",
    "not a dataset",
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_file_is_an_input_file_error_naming_the_file(name: str, tmp_path: Path) -> None:
    path, words = _bad_files(tmp_path)[name]

    with pytest.raises(InputFileError) as info:
        load_dataset(path)
    assert info.value.path == str(path)
    assert str(path) in str(info.value) and words in str(info.value)
    assert "\n" not in str(info.value)


def test_npz_header_claiming_more_data_than_stored_is_refused(tmp_path: Path) -> None:
    """A memory bomb: the header says 10^12 floats, the member holds a few bytes."""
    path = tmp_path / "bomb.npz"
    header = np.lib.format.header_data_from_array_1_0(np.zeros((2, 2)))
    header["shape"] = (10**6, 10**6)
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x.npy", buf.getvalue() + b"\0" * 32)
        zf.writestr("y.npy", _npy(np.arange(2)))

    with pytest.raises(InputFileError, match="claims shape"):
        load_npz(path)


def test_npz_member_that_is_not_npy_is_not_an_array(tmp_path: Path) -> None:
    path = tmp_path / "odd.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x.txt", "hello")
        zf.writestr("y.npy", _npy(np.arange(2)))

    with pytest.raises(InputFileError, match="no array 'x'"):
        load_npz(path)


def test_npz_with_corrupt_compressed_data_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.npz"
    np.savez_compressed(path, x=np.arange(4000.0).reshape(1000, 4), y=np.zeros(1000, np.int64))
    data = bytearray(path.read_bytes())
    mid = len(data) // 3
    data[mid : mid + 64] = bytes(64)
    path.write_bytes(bytes(data))

    with pytest.raises(InputFileError, match="c.npz"):
        load_npz(path)


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def test_images_of_differing_size_name_the_odd_file(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    Image.new("L", (8, 8)).save(tmp_path / "a" / "0.png")
    Image.new("L", (9, 8)).save(tmp_path / "a" / "1.png")

    with pytest.raises(InputFileError) as info:
        load_dataset(tmp_path)
    assert info.value.path.endswith("1.png") and "9x8" in str(info.value)


def test_file_that_is_not_an_image_is_named(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    Image.new("L", (8, 8)).save(tmp_path / "a" / "0.png")
    (tmp_path / "a" / "1.png").write_bytes(b"this is not a png")

    with pytest.raises(InputFileError) as info:
        load_dataset(tmp_path)
    assert info.value.path.endswith("1.png") and "not a readable image" in str(info.value)


def test_truncated_image_is_named(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32), np.uint8)).save(buf, "PNG")
    (tmp_path / "a" / "0.png").write_bytes(buf.getvalue()[:60])

    with pytest.raises(InputFileError, match="0.png"):
        load_dataset(tmp_path)


def test_folder_without_class_subfolders(tmp_path: Path) -> None:
    Image.new("L", (8, 8)).save(tmp_path / "0.png")

    with pytest.raises(InputFileError, match="no class sub-folders"):
        load_dataset(tmp_path)


def test_class_folders_without_images(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "readme.txt").write_text("x")

    with pytest.raises(InputFileError, match="hold no image files"):
        load_dataset(tmp_path)


# -- property: random bytes never crash the loader ------------------------------------
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    content=st.one_of(
        st.binary(max_size=2048),
        st.binary(max_size=512).map(lambda b: b"PK\x03\x04" + b),
        st.text(max_size=400).map(lambda t: t.encode("utf-8")),
        st.text(alphabet="0123456789,.;-e\\n\\tnaNlbe ", max_size=300).map(
            lambda t: ("a,b,label\n" + t).encode("utf-8")
        ),
        st.binary(max_size=300).map(
            lambda b: (lambda g: g[: len(g) // 2] + b)(
                _npz_bytes(x=np.arange(6.0).reshape(3, 2), y=np.arange(3))
            )
        ),
    ),
    suffix=st.sampled_from([".npz", ".csv", ".bin", ""]),
)
def test_random_bytes_only_ever_raise_user_errors(
    tmp_path: Path, content: bytes, suffix: str
) -> None:
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(content)
    try:
        ds = load_dataset(path)
    except UserError as exc:  # InputFileError is a UserError
        assert str(path) in str(exc) or isinstance(exc, UserError)
        return
    assert len(ds) > 0 and np.all(np.isfinite(ds.x))
    assert ds.y.dtype == np.int64 and ds.y.min() >= 0


def _image_bytes(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (12, 12, 3), np.uint8)).save(buf, fmt)
    return buf.getvalue()


_VALID_IMAGES = {fmt: _image_bytes(fmt) for fmt in ("PNG", "GIF", "BMP", "TIFF", "JPEG")}


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    fmt=st.sampled_from(sorted(_VALID_IMAGES)),
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8),
    cut=st.one_of(st.none(), st.integers(0, 10**6)),
)
def test_corrupted_images_only_ever_raise_input_file_errors(
    tmp_path: Path, fmt: str, flips: list[tuple[int, int]], cut: int | None
) -> None:
    data = bytearray(_VALID_IMAGES[fmt])
    for pos, value in flips:
        data[pos % len(data)] = value
    if cut is not None:
        data = data[: cut % len(data)]
    (tmp_path / "a").mkdir(exist_ok=True)
    (tmp_path / "a" / "x.img.png").write_bytes(bytes(data))

    try:
        ds = load_image_folder(tmp_path)
    except InputFileError as exc:
        assert "x.img.png" in str(exc)
        return
    assert ds.x.shape[0] == 1 and np.all(np.isfinite(ds.x))


def test_image_claiming_a_huge_size_is_refused_before_decoding(tmp_path: Path) -> None:
    """A PNG whose header claims 20000x20000 pixels (a decompression bomb)."""
    import struct
    import zlib

    png = bytearray(_image_bytes("PNG"))
    ihdr = 8 + 8  # signature, then chunk length + type
    png[ihdr : ihdr + 8] = struct.pack(">II", 20000, 20000)
    crc = zlib.crc32(bytes(png[12 : ihdr + 13]))
    png[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "bomb.png").write_bytes(bytes(png))

    with pytest.raises(InputFileError, match="bomb.png: is too large"):
        load_image_folder(tmp_path)
