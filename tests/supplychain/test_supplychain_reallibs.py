"""Files written by real ML libraries beyond the core corpus, and attacks built on them.

Benign files are written here, at test time, by Keras 3 (torch backend), XGBoost,
LightGBM, pandas, SciPy, NumPy, PyTorch, transformers/tokenizers/sentencepiece and skops;
each library is optional (``pytest.importorskip``). Every benign file must scan ``safe``.
Malicious variants start from those real files and change one thing (a config entry, a
pickled state); payloads are harmless canaries and nothing here is ever loaded except
through the scanner.
"""

from __future__ import annotations

import argparse
import collections
import copy
import datetime
import decimal
import fractions
import io
import json
import os
import pathlib
import pickle
import random
import types
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlwarden.supplychain import scan_file, scan_paths
from mlwarden.supplychain.policy import DEFAULT_POLICY


def verdict(path: Path) -> str:
    return scan_file(path).verdict.value


def messages(path: Path) -> list[str]:
    return [f"{i.rule} {i.message}" for i in scan_file(path).findings]


def assert_safe(paths: list[Path]) -> None:
    flagged = []
    for path in paths:
        r = scan_file(path)
        if r.verdict.value != "safe":
            flagged.append((path.name, r.verdict.value, [i.message[:160] for i in r.findings]))
    assert flagged == []


def su(text: str) -> bytes:
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


def stack_global(module: str, name: str) -> bytes:
    return su(module) + su(name) + b"\x93"


# --- Keras 3 (torch backend) ----------------------------------------------------------------


@pytest.fixture(scope="module")
def keras_mod() -> Any:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip("these tests write Keras files with the torch backend")
    return keras


@pytest.fixture(scope="module")
def keras_files(keras_mod: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Sequential and functional models as .keras, legacy .h5 and .weights.h5."""
    keras = keras_mod
    from keras import layers

    root = tmp_path_factory.mktemp("keras")
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    cnn = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            layers.Conv2D(4, 3, activation="relu"),
            layers.BatchNormalization(),
            layers.MaxPooling2D(),
            layers.Dropout(0.2),
            layers.Flatten(),
            layers.Dense(3, activation="softmax"),
        ]
    )
    cnn.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    cnn.fit(rng.random((8, 8, 8, 1)), rng.integers(0, 3, 8), epochs=1, verbose=0)

    tokens = keras.Input((5,), dtype="int32")
    numbers = keras.Input((2,))
    norm = layers.Normalization()
    norm.adapt(rng.random((10, 2)).astype("float32"))
    x = layers.LSTM(3)(layers.Embedding(20, 4)(tokens))
    z = layers.LayerNormalization()(layers.Concatenate()([x, norm(numbers)]))
    func = keras.Model([tokens, numbers], layers.Dense(1)(z))
    func.compile(optimizer=keras.optimizers.SGD(momentum=0.9), loss="mse", metrics=["mae"])
    func.fit(
        [rng.integers(0, 20, (8, 5)), rng.random((8, 2)).astype("float32")],
        rng.random((8, 1)),
        epochs=1,
        verbose=0,
    )
    out: dict[str, Path] = {}
    for name, model in (("cnn", cnn), ("func", func)):
        for suffix in (".keras", ".h5", ".weights.h5"):
            path = root / f"{name}{suffix}"
            if suffix == ".weights.h5":
                model.save_weights(path)
            else:
                model.save(path)
            out[path.name] = path
    return out


def test_keras_models_written_by_keras_are_safe(keras_files: dict[str, Path]) -> None:
    assert_safe(list(keras_files.values()))
    assert scan_file(keras_files["cnn.keras"]).format == "keras"
    assert scan_file(keras_files["func.h5"]).format == "keras-h5"


def test_keras_lambda_layer_saved_by_keras_is_unsafe(keras_mod: Any, tmp_path: Path) -> None:
    keras = keras_mod
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Lambda(lambda t: t * 2), keras.layers.Dense(1)]
    )
    for suffix in (".keras", ".h5"):
        path = tmp_path / f"lambda{suffix}"
        model.save(path)  # Keras writes lambdas; only loading them needs safe_mode=False
        assert verdict(path) == "unsafe", suffix
        assert any("MLW-SCN-005" in m for m in messages(path))


def test_keras_lambda_of_a_keras_function_is_safe(keras_mod: Any, tmp_path: Path) -> None:
    """Lambda(keras.ops.relu) is saved as a reference to Keras' own function, not as code."""
    keras = keras_mod
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Lambda(keras.ops.relu),
            keras.layers.Lambda(keras.activations.gelu),
            keras.layers.Dense(1),
        ]
    )
    paths = [tmp_path / "fn.keras", tmp_path / "fn.h5"]
    for path in paths:
        model.save(path)
    assert_safe(paths)

    def edit(doc: dict[str, Any]) -> None:
        for layer in doc["config"]["layers"]:
            if layer["class_name"] == "Lambda":
                layer["config"]["function"]["config"] = "exit"  # builtins.exit(tensor)

    evil = _edit_keras_zip(paths[0], tmp_path / "evil.keras", edit)
    assert verdict(evil) == "unsafe"

    def foreign(doc: dict[str, Any]) -> None:
        for layer in doc["config"]["layers"]:
            if layer["class_name"] == "Lambda":
                layer["config"]["function"]["module"] = "mypkg.ops"

    assert verdict(_edit_keras_zip(paths[0], tmp_path / "f.keras", foreign)) != "safe"


CUSTOM_LAYERS = """
import keras


@keras.saving.register_keras_serializable(package="mlwcustom")
class Scale(keras.layers.Layer):
    def __init__(self, factor=2.0, **kw):
        super().__init__(**kw)
        self.factor = factor

    def call(self, x):
        return x * self.factor

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package="mlwcustom")
def double_relu(x):
    return keras.ops.relu(x) * 2


@keras.saving.register_keras_serializable(package="mlwcustom")
def my_loss(y, p):
    return keras.ops.mean((y - p) ** 2)
"""


@pytest.fixture(scope="module")
def custom_module(keras_mod: Any, tmp_path_factory: pytest.TempPathFactory) -> types.ModuleType:
    """A module outside Keras that registers a layer and two functions."""
    import importlib.util

    path = tmp_path_factory.mktemp("custom") / "mlw_custom_layers.py"
    path.write_text(CUSTOM_LAYERS)
    spec = importlib.util.spec_from_file_location("mlw_custom_layers", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_keras_registered_custom_layer_from_foreign_module_is_suspicious(
    keras_mod: Any, custom_module: types.ModuleType, tmp_path: Path
) -> None:
    keras = keras_mod
    model = keras.Sequential([keras.Input((3,)), custom_module.Scale(3.0), keras.layers.Dense(2)])
    for suffix in (".keras", ".h5"):
        path = tmp_path / f"custom{suffix}"
        model.save(path)
        assert verdict(path) == "suspicious", suffix
        assert any("mlwcustom>Scale" in m for m in messages(path)), suffix


def test_keras_custom_activation_and_loss_are_suspicious(
    keras_mod: Any, custom_module: types.ModuleType, tmp_path: Path
) -> None:
    """Registered functions (activation, and in .h5 the training_config loss) are flagged."""
    keras = keras_mod
    act = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(2, activation=custom_module.double_relu)]
    )
    loss = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    loss.compile(optimizer="adam", loss=custom_module.my_loss)
    for name, model, needle in (("act", act, "double_relu"), ("loss", loss, "my_loss")):
        for suffix in (".keras", ".h5"):
            path = tmp_path / f"{name}{suffix}"
            model.save(path)
            assert verdict(path) == "suspicious", path.name
            assert any(f"mlwcustom>{needle}" in m for m in messages(path)), path.name


def _edit_zip_json(
    src: Path, dst: Path, member: str, edit: Callable[[dict[str, Any]], None]
) -> Path:
    """Copy the zip ``src`` to ``dst`` with its JSON ``member`` changed by ``edit``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename == member:
                doc = json.loads(data)
                edit(doc)
                data = json.dumps(doc).encode()
            zout.writestr(item, data)
    return dst


def _edit_keras_zip(src: Path, dst: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    return _edit_zip_json(src, dst, "config.json", edit)


def _layers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [layer for layer in doc["config"]["layers"] if layer["class_name"] == "Dense"]


@pytest.mark.parametrize(
    ("module", "function"),
    [
        ("keras.utils", "get_file"),  # downloads a file (Keras < 3.11 resolves it)
        ("keras.config", "enable_unsafe_deserialization"),  # turns safe_mode off
        ("keras.models", "load_model"),
        ("keras.src.utils.file_utils", "get_file"),
        ("tensorflow.keras.utils", "get_file"),
        ("os", "system"),
        ("builtins", "exec"),
        ("subprocess", "check_output"),
    ],
)
def test_keras_config_naming_file_or_code_functions_is_unsafe(
    keras_files: dict[str, Path], tmp_path: Path, module: str, function: str
) -> None:
    ref = {"module": module, "class_name": "function", "config": function, "registered_name": None}

    def edit(doc: dict[str, Any]) -> None:
        _layers(doc)[0]["config"]["activation"] = ref

    path = _edit_keras_zip(keras_files["cnn.keras"], tmp_path / "evil.keras", edit)
    assert verdict(path) == "unsafe"
    assert any("MLW-SCN-001" in m for m in messages(path))


def test_keras_h5_training_config_is_checked(keras_files: dict[str, Path], tmp_path: Path) -> None:
    """Keras compiles a legacy .h5 with the loss its training_config names."""
    import shutil

    import h5py

    path = tmp_path / "evil.h5"
    shutil.copy(keras_files["func.h5"], path)
    with h5py.File(path, "r+") as f:
        cfg = json.loads(f.attrs["training_config"])
        cfg["loss"] = {"module": "os", "class_name": "function", "config": "system"}
        f.attrs["training_config"] = json.dumps(cfg)
    assert verdict(path) == "unsafe"
    with h5py.File(path, "r+") as f:
        cfg["loss"] = "otherpkg>steal"
        f.attrs["training_config"] = json.dumps(cfg)
    assert verdict(path) == "suspicious"


def test_keras_modeling_references_stay_safe(keras_files: dict[str, Path], tmp_path: Path) -> None:
    """Keras' own classes and functions (initializers, activations, ops) are not flagged."""

    def edit(doc: dict[str, Any]) -> None:
        dense = _layers(doc)[0]["config"]
        dense["activation"] = {
            "module": "keras.activations",
            "class_name": "function",
            "config": "gelu",
            "registered_name": None,
        }

    path = _edit_keras_zip(keras_files["cnn.keras"], tmp_path / "ok.keras", edit)
    assert verdict(path) == "safe"


def test_keras_h5_behind_a_user_block_is_scanned(tmp_path: Path) -> None:
    """h5py (and so Keras) opens an HDF5 file whose superblock sits at offset 512."""
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "userblock.h5"
    lam = {"class_name": "Lambda", "config": {"name": "l", "function": ["YWJj", None, None]}}
    with h5py.File(path, "w", userblock_size=512) as f:
        f.attrs["model_config"] = json.dumps({"class_name": "Sequential", "config": lam})
    with open(path, "r+b") as f:
        f.write(b"# model card\n" + b"x" * 498 + b"\n")
    assert verdict(path) == "unsafe"


# --- pickles of what real checkpoints and data files hold ---------------------------------------


def _checkpoint_objects() -> dict[str, Any]:
    rng = np.random.default_rng(0)
    return {
        "numpy_scalars": [
            np.float32(1.5),
            np.int64(3),
            np.bool_(True),
            np.complex64(1j),
            np.float16(2),
            np.datetime64("2024-01-01"),
            np.timedelta64(3, "D"),
            np.str_("x"),
            np.bytes_(b"y"),
            np.longdouble(1.0),
        ],
        "masked": np.ma.masked_array([1, 2, 3], mask=[0, 1, 0]),
        "masked_constant": np.ma.masked,
        "structured": np.zeros(3, dtype=[("a", "<i4"), ("b", "<f8", (2,)), ("c", "S3")]),
        "datetime64": np.array(["2024-01-01", "2024-02-01"], dtype="datetime64[D]"),
        "recarray": np.rec.array([(1, 2.0)], dtype=[("x", "i4"), ("y", "f4")]),
        "matrix": np.matrix([[1, 2], [3, 4]]),
        "dtypes": [np.dtype("float32"), np.dtype([("a", "i4")]), np.dtype("datetime64[ns]")],
        "ufunc": [np.log1p, np.sqrt, np.add],
        "np_get_state": np.random.get_state(),
        "np_default_rng": np.random.default_rng(1),
        "np_bit_generator_state": rng.bit_generator.state,
        "np_random_state": np.random.RandomState(3),
        "np_generators": [
            np.random.Generator(bg(1))
            for bg in (
                np.random.PCG64,
                np.random.PCG64DXSM,
                np.random.MT19937,
                np.random.Philox,
                np.random.SFC64,
            )
        ],
        "py_random_state": random.getstate(),
        "py_random": random.Random(4),
        "namespace": argparse.Namespace(lr=0.1, out=pathlib.Path("/runs/1"), name="run"),
        "simple_namespace": types.SimpleNamespace(a=1),
        "paths": [
            pathlib.Path("/a/b"),
            pathlib.PurePosixPath("c/d"),
            pathlib.PureWindowsPath("c:/x"),
        ],
        "stdlib": [
            datetime.datetime(2024, 1, 2, 3, 4, 5),
            datetime.datetime(2024, 1, 2, tzinfo=datetime.UTC),
            datetime.date(2024, 1, 2),
            datetime.timedelta(3),
            fractions.Fraction(1, 3),
            decimal.Decimal("1.1"),
            uuid.UUID(int=7),
            collections.OrderedDict(a=1),
            collections.Counter("aab"),
            range(3),
            slice(1, 2),
            frozenset({1}),
        ],
    }


def _write_pickles(root: Path, objs: dict[str, Any]) -> list[Path]:
    import joblib

    paths = []
    for name, obj in objs.items():
        for protocol in (2, 5):
            path = root / f"{name}.p{protocol}.pkl"
            path.write_bytes(pickle.dumps(obj, protocol=protocol))
            paths.append(path)
        joblib.dump(obj, root / f"{name}.joblib")
        paths.append(root / f"{name}.joblib")
    return paths


def test_checkpoint_contents_pickled_are_safe(tmp_path: Path) -> None:
    assert_safe(_write_pickles(tmp_path, _checkpoint_objects()))


def test_torch_training_checkpoint_is_safe(tmp_path: Path) -> None:
    """What training loops torch.save: args, RNG states, devices, sizes, dtypes, paths."""
    torch = pytest.importorskip("torch")
    net = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(net.parameters())
    ckpt = {
        "epoch": 3,
        "args": argparse.Namespace(lr=0.1, device="cpu", out_dir=pathlib.Path("/ckpt")),
        "model": net.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": torch.optim.lr_scheduler.StepLR(opt, 3).state_dict(),
        "param": torch.nn.Parameter(torch.ones(2)),
        "device": torch.device("cpu"),
        "size": torch.Size([2, 3]),
        "dtypes": [torch.float32, torch.bfloat16, torch.int64],
        "rng": {
            "torch": torch.get_rng_state(),
            "numpy": np.random.get_state(),
            "numpy_generator": np.random.default_rng(0).bit_generator.state,
            "python": random.getstate(),
        },
        "saved_at": datetime.datetime(2024, 5, 1, 12, 0),
        "path": pathlib.PosixPath("/ckpt/run1"),
        "od": collections.OrderedDict(x=torch.zeros(1)),
    }
    paths = [tmp_path / "ckpt.pt", tmp_path / "ckpt_legacy.pt", tmp_path / "ckpt.pkl"]
    torch.save(ckpt, paths[0])
    torch.save(ckpt, paths[1], _use_new_zipfile_serialization=False)
    paths[2].write_bytes(pickle.dumps(ckpt, protocol=4))  # tensors via _load_from_bytes
    assert_safe(paths)


def test_pandas_pickles_are_safe(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(
        {
            "i": np.arange(5),
            "f": np.linspace(0, 1, 5),
            "s": list("abcde"),
            "cat": pd.Categorical(list("xyxzx")),
            "dt": pd.date_range("2024-01-01", periods=5),
            "dt_utc": pd.date_range("2024-01-01", periods=5, tz="UTC"),
            "td": pd.to_timedelta(np.arange(5), "h"),
            "period": pd.period_range("2024-01", periods=5, freq="M"),
            "interval": pd.interval_range(0, 5),
            "nullable": pd.array([1, None, 3, 4, 5], dtype="Int64"),
            "string": pd.array(list("abcde"), dtype="string"),
            "sparse": pd.arrays.SparseArray([0, 0, 1.0, 0, 2]),
        }
    )
    objs = {
        "df": df,
        "multiindex": df.set_index(["s", "i"]),
        "series_cat": pd.Series(pd.Categorical(["a", "b", "a"], ordered=True)),
        "series_period": pd.Series(pd.period_range("2020Q1", periods=3, freq="Q")),
        "series_interval": pd.Series(pd.IntervalIndex.from_breaks([0, 1, 2.5])),
        "scalars": [
            pd.Timestamp("2024-05-01 12:00", tz="UTC"),
            pd.Timedelta("1 day"),
            pd.Period("2024-01", freq="M"),
            pd.offsets.MonthEnd(2),
            pd.NaT,
            pd.NA,
        ],
        "index": [pd.RangeIndex(10), pd.Index(["a", "b"]), pd.DatetimeIndex(["2024-01-01"])],
    }
    paths = _write_pickles(tmp_path, objs)
    df.to_pickle(tmp_path / "df.pkl.gz")
    paths.append(tmp_path / "df.pkl.gz")
    assert_safe(paths)


@pytest.mark.parametrize(
    "name",
    ["pyarrow.parquet\nread_table", "pyarrow.fs\nLocalFileSystem", "pyarrow\nread_serialized"],
)
def test_pyarrow_names_beyond_array_rebuilding_are_not_safe(tmp_path: Path, name: str) -> None:
    """The allow-list admits pyarrow's array-rebuilding helpers only (pandas' pyarrow-backed
    columns); file readers and file systems from the same package stay flagged."""
    pytest.importorskip("pyarrow")
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"\x80\x02c" + name.encode() + b"\nX\x07\x00\x00\x00/etc/pw\x85R.")
    assert scan_file(bad).verdict.value != "safe"


def test_scipy_sparse_pickles_are_safe(tmp_path: Path) -> None:
    sp = pytest.importorskip("scipy.sparse")
    objs = {
        fmt: sp.random(5, 5, density=0.3, format=fmt, random_state=0)
        for fmt in ("csr", "csc", "coo", "lil", "dok", "bsr", "dia")
    }
    objs["csr_array"] = sp.csr_array(np.eye(3))
    assert_safe(_write_pickles(tmp_path, objs))


@pytest.fixture(scope="module")
def xy() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.random((120, 5))
    return x, (x[:, 0] + x[:, 1] > 1).astype(int)


def test_xgboost_models_are_safe(xy: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    xgb = pytest.importorskip("xgboost")
    pd = pytest.importorskip("pandas")
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = xy
    frame = pd.DataFrame(x, columns=list("abcde"))
    frame["c"] = pd.Categorical(np.where(y == 1, "u", "v"))
    clf = xgb.XGBClassifier(n_estimators=3, max_depth=2).fit(x, y)
    objs = {
        "xgb_clf": clf,
        "xgb_reg": xgb.XGBRegressor(n_estimators=3).fit(x, y.astype(float)),
        "xgb_cat": xgb.XGBClassifier(n_estimators=3, enable_categorical=True).fit(frame, y),
        "xgb_booster": clf.get_booster(),
        "xgb_pipe": make_pipeline(StandardScaler(), xgb.XGBClassifier(n_estimators=2)).fit(x, y),
        "xgb_callbacks": xgb.XGBClassifier(
            n_estimators=3,
            early_stopping_rounds=2,
            callbacks=[xgb.callback.EvaluationMonitor(period=100)],
        ).fit(x, y, eval_set=[(x, y)], verbose=False),
    }
    paths = _write_pickles(tmp_path, objs)
    for suffix in (".json", ".ubj"):
        clf.save_model(tmp_path / f"native{suffix}")
        paths.append(tmp_path / f"native{suffix}")
    assert_safe(paths)
    assert scan_file(tmp_path / "native.ubj").format == "xgboost-ubj"


def test_lightgbm_models_are_safe(xy: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    lgb = pytest.importorskip("lightgbm")
    x, y = xy
    clf = lgb.LGBMClassifier(n_estimators=3, verbose=-1).fit(x, y)
    booster = lgb.train(
        {"objective": "binary", "verbose": -1}, lgb.Dataset(x, y), num_boost_round=2
    )
    objs = {
        "lgb_clf": clf,
        "lgb_reg": lgb.LGBMRegressor(n_estimators=3, verbose=-1).fit(x, y.astype(float)),
        "lgb_booster": booster,
    }
    paths = _write_pickles(tmp_path, objs)
    booster.save_model(tmp_path / "model.txt")
    (tmp_path / "dump.json").write_text(json.dumps(booster.dump_model()))
    assert_safe([*paths, tmp_path / "model.txt", tmp_path / "dump.json"])


def test_sklearn_search_scorer_and_function_transformer_are_safe(
    xy: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    from sklearn.compose import ColumnTransformer, make_column_selector
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score, make_scorer
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    x, y = xy
    objs = {
        # cv_results_ holds numpy masked arrays; the scorer names a metric function
        "grid": GridSearchCV(
            LogisticRegression(), {"C": [0.1, 1]}, cv=2, scoring=make_scorer(f1_score)
        ).fit(x, y),
        "functx": make_pipeline(FunctionTransformer(np.log1p), LogisticRegression()).fit(x, y),
        "selector": ColumnTransformer(
            [("num", StandardScaler(), make_column_selector(dtype_include="number"))]
        ),
    }
    assert_safe(_write_pickles(tmp_path, objs))


# --- attacks next to what the allow-list now admits ---------------------------------------------


def _proto4(body: bytes) -> bytes:
    return b"\x80\x04" + body + b"."


@pytest.mark.parametrize(
    ("module", "name", "expect"),
    [
        ("pathlib", "Path.write_text", "unsafe"),  # a method, reached by attribute walk
        ("pathlib", "Path.read_text", "unsafe"),
        ("pathlib._local", "Path.unlink", "unsafe"),
        ("pandas", "read_pickle", "unsafe"),
        ("pandas.io.pickle", "read_pickle", "unsafe"),
        ("pandas.core.computation.eval", "eval", "suspicious"),
        ("pandas", "HDFStore", "suspicious"),
        ("_operator", "attrgetter", "unsafe"),
        ("types", "FunctionType", "unsafe"),
        ("numpy._core", "_ufunc_reconstruct", "suspicious"),  # imports any module
        ("numpy", "load", "unsafe"),
        ("sklearn.metrics._ranking", "partial", "suspicious"),  # functools.partial, imported
        ("sklearn.callback._transport", "Client", "suspicious"),  # a socket client
        ("sklearn.utils._available_if", "MethodType", "suspicious"),
        ("argparse", "ArgumentParser", "suspicious"),  # fromfile_prefix_chars reads files
        ("xgboost.core", "DMatrix", "suspicious"),  # reads data files by path
        ("lightgbm.basic", "Dataset", "suspicious"),
        ("zoneinfo", "ZoneInfo.from_file", "suspicious"),  # ZoneInfo and _unpickle are allowed
        ("zoneinfo", "ZoneInfo.clear_cache", "suspicious"),
    ],
)
def test_names_next_to_the_new_allow_list_entries_stay_flagged(
    module: str, name: str, expect: str
) -> None:
    assert DEFAULT_POLICY.classify(module, name).verdict.value == expect


def test_scipy_stats_distribution_pickle_is_unsafe(tmp_path: Path, canary: Path) -> None:
    """rv_generic.__setstate__ exec()s _parse_arg_template from the pickled state."""
    stats = pytest.importorskip("scipy.stats")
    path = tmp_path / "dist.pkl"
    path.write_bytes(pickle.dumps(stats.uniform, protocol=4))
    assert verdict(path) == "unsafe"  # even the real one: loading it exec()s file contents
    dist = type(stats.uniform)(a=0.0, b=1.0, name="uniform")
    dist._parse_arg_template = f"open({str(canary)!r}, 'w').close()\n"  # pickled, never run
    path.write_bytes(pickle.dumps(dist, protocol=4))
    assert verdict(path) == "unsafe"
    assert not canary.exists()


def test_sklearn_and_pandas_patterns_admit_only_library_classes() -> None:
    """Every name the class patterns allow in sklearn/pandas is a class of a data library.

    A module's namespace also holds what it imports (``from multiprocessing.connection
    import Client``); a pattern over module paths must not admit those.
    """
    import importlib
    import pkgutil
    import re
    import warnings

    allowed_home = re.compile(
        r"(?:sklearn|numpy|scipy|pandas|numbers|typing|collections|abc|enum|dataclasses|"
        r"decimal|_cyutility|View\.MemoryView)\b"
    )
    # typing aliases of builtins, io.StringIO, inspect.Parameter: nothing a pickle can abuse
    harmless = {
        "StringIO",
        "Parameter",
        "ThreadpoolController",
        "AxisInt",
        "PositionalIndexerTuple",
    }
    bad = []
    for pkg_name in ("sklearn", "pandas"):
        pkg = pytest.importorskip(pkg_name)
        for info in pkgutil.walk_packages(pkg.__path__, pkg_name + "."):
            if DEFAULT_POLICY.classify(info.name, "Zz").reason != "a class of an allowed library":
                continue  # no class name there is admitted: nothing to check (or import)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    mod = importlib.import_module(info.name)
            except Exception:
                continue
            for attr in dir(mod):
                c = DEFAULT_POLICY.classify(info.name, attr)
                if c.reason != "a class of an allowed library":
                    continue
                obj = getattr(mod, attr, None)
                home = getattr(obj, "__module__", None) or type(obj).__module__
                if callable(obj) and not allowed_home.match(home) and attr not in harmless:
                    bad.append(f"{info.name}.{attr} -> {home}")
    assert bad == []


def test_pickle_calling_a_path_method_is_unsafe(tmp_path: Path) -> None:
    body = (
        stack_global("pathlib", "PosixPath")
        + su("/tmp/x")
        + b"\x85R"
        + stack_global("pathlib", "Path.write_text")
    )
    path = tmp_path / "p.pkl"
    path.write_bytes(_proto4(body + b"0"))
    assert verdict(path) == "unsafe"


# --- skops ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def skops_files(
    xy: tuple[np.ndarray, np.ndarray], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    sio = pytest.importorskip("skops.io")
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

    x, y = xy
    root = tmp_path_factory.mktemp("skops")
    objs = {
        "logreg": LogisticRegression().fit(x, y),
        "forest": RandomForestClassifier(n_estimators=2, random_state=0).fit(x, y),
        "pipe": make_pipeline(
            FunctionTransformer(np.log1p), StandardScaler(), LogisticRegression()
        ).fit(x, y),
        "onehot": OneHotEncoder().fit(np.array([["a"], ["b"]], dtype=object)),
        "rng": {"state": np.random.RandomState(0), "gen": np.random.default_rng(0)},
    }
    out = {}
    for name, obj in objs.items():
        out[name] = root / f"{name}.skops"
        sio.dump(obj, out[name])
    return out


def test_skops_files_of_plain_estimators_are_safe(skops_files: dict[str, Path]) -> None:
    assert_safe(list(skops_files.values()))
    assert scan_file(skops_files["forest"]).format == "skops"


def _edit_skops(src: Path, dst: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    return _edit_zip_json(src, dst, "schema.json", edit)


def _param(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return doc["content"]["content"][name]


@pytest.mark.parametrize(
    ("node", "expect"),
    [
        ({"__class__": "eval", "__module__": "builtins", "__loader__": "FunctionNode"}, "unsafe"),
        ({"__class__": "system", "__module__": "os", "__loader__": "TypeNode"}, "unsafe"),
        (
            {
                "__class__": "attrgetter",
                "__module__": "operator",
                "__loader__": "OperatorFuncNode",
                "attrs": {
                    "__class__": "tuple",
                    "__module__": "builtins",
                    "__loader__": "TupleNode",
                    "content": [],
                },
            },
            "unsafe",
        ),
        (
            {"__class__": "Popen", "__module__": "subprocess", "__loader__": "ObjectNode"},
            "unsafe",
        ),
        (
            {"__class__": "Helper", "__module__": "mypkg.evil", "__loader__": "ObjectNode"},
            "suspicious",
        ),
        (
            {"__class__": "partial", "__module__": "functools", "__loader__": "PartialNode"},
            "suspicious",
        ),
        ({"__class__": "dict", "__module__": "builtins", "__loader__": "NoSuchNode"}, "safe"),
    ],
)
def test_skops_schema_naming_code_is_flagged(
    skops_files: dict[str, Path], tmp_path: Path, node: dict[str, Any], expect: str
) -> None:
    def edit(doc: dict[str, Any]) -> None:
        doc["content"]["content"]["C"] = node

    path = _edit_skops(skops_files["logreg"], tmp_path / "evil.skops", edit)
    assert verdict(path) == expect


def test_skops_method_and_bit_generator_names_are_checked(
    skops_files: dict[str, Path], tmp_path: Path
) -> None:
    def method(doc: dict[str, Any]) -> None:
        doc["content"]["content"]["C"] = {
            "__class__": "LogisticRegression",
            "__module__": "sklearn.linear_model._logistic",
            "__loader__": "MethodNode",
            "content": {"func": "__reduce_ex__", "obj": copy.deepcopy(doc)},
        }

    assert verdict(_edit_skops(skops_files["logreg"], tmp_path / "m.skops", method)) == "unsafe"

    def bitgen(doc: dict[str, Any]) -> None:
        def walk(n: Any) -> None:
            if isinstance(n, dict):
                if n.get("__loader__") == "RandomGeneratorNode":
                    inner = n["content"]["bit_generator"]["content"]["bit_generator"]
                    inner["content"] = json.dumps("seed")  # numpy.random.seed() on load
                for v in n.values():
                    walk(v)

        walk(doc)

    path = _edit_skops(skops_files["rng"], tmp_path / "g.skops", bitgen)
    assert verdict(path) == "suspicious"
    assert any("numpy.random.seed" in m for m in messages(path))


# --- a Hugging Face model folder ----------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GPT-2 saved by transformers, with a tokenizer trained by `tokenizers`."""
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    torch = pytest.importorskip("torch")
    from tokenizers import decoders, models, pre_tokenizers, trainers

    root = tmp_path_factory.mktemp("hf") / "tiny-gpt2"
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=96, n_positions=32)
    model = transformers.GPT2LMHeadModel(cfg)
    model.generation_config = transformers.GenerationConfig(max_new_tokens=8, do_sample=True)
    model.save_pretrained(root)
    corpus = ["model files are data", "the quick brown fox", "hello world"] * 10
    tok = tokenizers.Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel()
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        corpus, trainers.BpeTrainer(vocab_size=96, special_tokens=["<unk>", "<|endoftext|>"])
    )
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", unk_token="<unk>"
    )
    fast.save_pretrained(root)
    try:
        import sentencepiece as spm
    except ImportError:
        pass
    else:
        buf = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(corpus * 3),
            model_writer=buf,
            vocab_size=30,
            model_type="unigram",
            minloglevel=2,
            hard_vocab_limit=False,
        )
        (root / "spiece.model").write_bytes(buf.getvalue())
    (root / "README.md").write_text(
        "---\nlicense: mit\nlibrary_name: transformers\n---\n# tiny-gpt2\n\nFor tests.\n"
    )
    (root / ".gitattributes").write_text(
        "*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.model filter=lfs diff=lfs -text\n"
    )
    return root


def test_hugging_face_folder_scans_safe(hf_folder: Path) -> None:
    names = {p.name for p in hf_folder.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json"} <= names
    result = scan_paths([hf_folder])
    assert result.exit_code() == 0, [(f.path, f.verdict.value, f.error) for f in result.files]
    formats = {Path(f.path).name: f.format for f in result.files}
    assert formats["model.safetensors"] == "safetensors"
    if "spiece.model" in formats:
        assert formats["spiece.model"] == "sentencepiece"


def test_hugging_face_auto_map_is_flagged(hf_folder: Path, tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "remote-code"
    shutil.copytree(hf_folder, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["auto_map"] = {
        "AutoConfig": "configuration_evil.EvilConfig",
        "AutoModelForCausalLM": "someone/other-repo--modeling_evil.EvilForCausalLM",
    }
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "modeling_evil.py").write_text(
        "import os\n\nfrom transformers import PreTrainedModel\n\nos.system('true')\n"
    )
    tok = json.loads((folder / "tokenizer_config.json").read_text())
    tok["auto_map"] = {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}
    (folder / "tokenizer_config.json").write_text(json.dumps(tok))
    result = scan_paths([folder])
    by_name = {Path(f.path).name: f for f in result.files}
    assert by_name["config.json"].verdict.value == "suspicious"
    assert by_name["tokenizer_config.json"].verdict.value == "suspicious"
    texts = [i.message for i in by_name["config.json"].findings]
    assert any("other-repo" in t and "modeling_evil.EvilForCausalLM" in t for t in texts)
    assert {i.rule for i in by_name["config.json"].findings} == {"MLW-SCN-012"}
    assert result.exit_code() == 1


def test_unknown_binary_in_a_model_folder_is_unknown(tmp_path: Path) -> None:
    """Fail closed: a binary no rule recognises is never called safe."""
    (tmp_path / "weights.bin2").write_bytes(bytes(range(256)) * 4)
    assert verdict(tmp_path / "weights.bin2") == "unknown"


class _Payload:
    """Pickles as a call of ``func(*args)``; never unpickled here."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args


def test_keras_torch_module_wrapper_pickle_is_scanned(
    keras_mod: Any, tmp_path: Path, canary: Path
) -> None:
    """TorchModuleWrapper stores torch.save bytes that Keras torch.load()s (weights_only=False)."""
    import base64

    torch = pytest.importorskip("torch")
    keras = keras_mod
    inner = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU())
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.TorchModuleWrapper(inner), keras.layers.Dense(1)]
    )
    model(torch.zeros(1, 3))
    benign = tmp_path / "wrapped.keras"
    model.save(benign)
    model.save(tmp_path / "wrapped.h5")
    assert_safe([benign, tmp_path / "wrapped.h5"])

    buf = io.BytesIO()
    torch.save({"m": _Payload(os.system, f"touch {canary}")}, buf)
    evil = base64.b64encode(buf.getvalue()).decode()

    def edit(doc: dict[str, Any]) -> None:
        for layer in doc["config"]["layers"]:
            if layer["class_name"] == "TorchModuleWrapper":
                layer["config"]["module"] = evil

    path = _edit_keras_zip(benign, tmp_path / "evil.keras", edit)
    assert verdict(path) == "unsafe"
    assert any("os.system" in m or "posix.system" in m for m in messages(path))
    assert not canary.exists()


# --- known false flags in lead-owned code (pickle_vm.py); strict, so a fix shows up -------------


def test_pandas_zoneinfo_timezone_is_safe(tmp_path: Path) -> None:
    """pandas 3 keeps named time zones as zoneinfo.ZoneInfo; its pickle is a bound method."""
    pd = pytest.importorskip("pandas")
    series = pd.Series(pd.date_range("2020", periods=3, tz="Europe/Paris"))
    path = tmp_path / "tz.pkl"
    path.write_bytes(pickle.dumps(series, protocol=4))
    assert verdict(path) == "safe"


def test_tensor_pickled_with_protocol_2_is_safe(tmp_path: Path) -> None:
    """pickle.dumps(tensor, protocol=2): _load_from_bytes gets _codecs.encode(text, 'latin1')."""
    torch = pytest.importorskip("torch")
    path = tmp_path / "t.pkl"
    path.write_bytes(pickle.dumps({"w": torch.ones(2)}, protocol=2))
    assert verdict(path) == "safe"
