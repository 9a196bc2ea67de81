"""Which imported names a model file may use: the fail-closed allow-list policy.

Every name a pickle imports (``GLOBAL``, ``STACK_GLOBAL``, ``INST``) is classified:

* on the allow-list (the names the real libraries' own files need: PyTorch tensor and
  storage rebuilders, NumPy array reconstruction and dtypes, collections, scikit-learn
  estimator classes, ...) -> ``safe``;
* a known code-running, file, network or loader callable (``os.system``,
  ``builtins.eval``, ``runpy``, ``pickle.loads``, ``torch.load``, ...) -> ``unsafe``;
* anything else -> ``suspicious``: a deny-list can never be complete, so an unknown
  name is never passed as safe.

Names are normalised the way :mod:`pickle` does for protocols 0-2 (``__builtin__`` ->
``builtins``, ``copy_reg`` -> ``copyreg``), so Python 2 spellings cannot dodge the
lists. A dotted name (protocol 4 resolves ``Path.write_text`` by walking attributes) is
allowed only when listed exactly, and any ``__dunder__`` step is unsafe, because it
reaches interpreter internals (``__globals__``, ``__subclasses__``, ``__builtins__``).

Users extend the allow-list with ``--allow module.name`` (or ``module.*``) or a
policy file (YAML or JSON: ``{"allow": [...], "deny": [...]}``).

Example::

    policy = Policy(allow=["mypkg.MyModel"])
    policy.classify("os", "system").verdict        # Verdict.UNSAFE
    policy.classify("collections", "OrderedDict")  # safe
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from mlwarden.core.errors import InputFileError


class Verdict(enum.StrEnum):
    """Verdict on one imported name, or on a whole file (``error``: could not be scanned;
    ``unknown``: a format mlwarden does not know, so nothing was checked)."""

    SAFE = "safe"
    SUSPICIOUS = "suspicious"
    UNSAFE = "unsafe"
    ERROR = "error"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Classification:
    verdict: Verdict
    reason: str
    full: str  #: the normalised ``module.name``


def _words(text: str) -> list[str]:
    return text.split()


# --- allow-list ------------------------------------------------------------------------

_TORCH_DTYPES = [
    "float",
    "float32",
    "float64",
    "double",
    "float16",
    "half",
    "bfloat16",
    "int8",
    "int16",
    "short",
    "int32",
    "int",
    "int64",
    "long",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "bool",
    "complex32",
    "chalf",
    "complex64",
    "cfloat",
    "complex128",
    "cdouble",
    "qint8",
    "quint8",
    "qint32",
    "quint4x2",
    "quint2x4",
    "float8_e4m3fn",
    "float8_e5m2",
    "float8_e4m3fnuz",
    "float8_e5m2fnuz",
    "float8_e8m0fnu",
    "strided",
    "sparse_coo",
    "sparse_csr",
    "sparse_csc",
    "sparse_bsr",
    "sparse_bsc",
    "_mkldnn",
    "contiguous_format",
    "channels_last",
    "channels_last_3d",
    "preserve_format",
    "per_tensor_affine",
    "per_channel_affine",
    "per_tensor_symmetric",
    "per_channel_symmetric",
    "per_channel_affine_float_qparams",
    "Size",
    "device",
    "dtype",
    "layout",
    "memory_format",
    "qscheme",
    "UntypedStorage",
    "TypedStorage",
]

_NUMPY_SCALARS = [
    "bool_",
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "intc",
    "uintc",
    "intp",
    "uintp",
    "float16",
    "float32",
    "float64",
    "longdouble",
    "half",
    "single",
    "double",
    "complex64",
    "complex128",
    "clongdouble",
    "str_",
    "bytes_",
    "void",
    "object_",
    "datetime64",
    "timedelta64",
    "longlong",
    "ulonglong",
    "short",
    "ushort",
    "byte",
    "ubyte",
]

#: NumPy ufuncs: element-wise arithmetic, nothing else. scikit-learn pickles name them
#: (``FunctionTransformer(np.log1p)``); never ``numpy._core._ufunc_reconstruct``, which
#: imports any module and takes any attribute of it.
_NUMPY_UFUNCS = _words(
    """abs absolute acos acosh add arccos arccosh arcsin arcsinh arctan arctan2 arctanh asin
    asinh atan atan2 atanh bitwise_and bitwise_count bitwise_invert bitwise_left_shift
    bitwise_not bitwise_or bitwise_right_shift bitwise_xor cbrt ceil conj conjugate copysign
    cos cosh deg2rad degrees divide divmod equal exp exp2 expm1 fabs float_power floor
    floor_divide fmax fmin fmod frexp gcd greater greater_equal heaviside hypot invert
    isfinite isinf isnan isnat lcm ldexp left_shift less less_equal log log10 log1p log2
    logaddexp logaddexp2 logical_and logical_not logical_or logical_xor matmul maximum
    minimum mod modf multiply negative nextafter not_equal positive pow power rad2deg radians
    reciprocal remainder right_shift rint sign signbit sin sinh spacing sqrt square subtract
    tan tanh true_divide trunc"""
)

#: pathlib's path classes. Unpickling one parses strings into a path (``PosixPath.__reduce__``
#: is ``(cls, parts)``) and touches no file; every method that does (``read_text``,
#: ``write_bytes``, ``unlink``, ...) is a dotted name and stays on the deny-list through the
#: ``pathlib`` module entry. Python 3.13 moved the classes to ``pathlib._local``.
_PATHLIB = [
    f"{mod}.{cls}"
    for mod in ("pathlib", "pathlib._local")
    for cls in ("PurePath", "PurePosixPath", "PureWindowsPath", "Path", "PosixPath", "WindowsPath")
]

#: scikit-learn's metric functions, by name (a ``make_scorer(f1_score)`` scorer pickles
#: one): arithmetic on the arrays they are given. Listed, not matched by a pattern: the
#: same modules also hold imported helpers such as ``functools.partial``.
_SKLEARN_METRICS = {
    "_classification": _words(
        """accuracy_score balanced_accuracy_score brier_score_loss class_likelihood_ratios
        classification_report cohen_kappa_score confusion_matrix d2_brier_score d2_log_loss_score
        f1_score fbeta_score hamming_loss hinge_loss jaccard_score log_loss matthews_corrcoef
        multilabel_confusion_matrix precision_recall_fscore_support precision_score recall_score
        zero_one_loss"""
    ),
    "_regression": _words(
        """d2_absolute_error_score d2_pinball_score d2_tweedie_score explained_variance_score
        max_error mean_absolute_error mean_absolute_percentage_error mean_gamma_deviance
        mean_pinball_loss mean_poisson_deviance mean_squared_error mean_squared_log_error
        mean_tweedie_deviance median_absolute_error r2_score root_mean_squared_error
        root_mean_squared_log_error"""
    ),
    "_ranking": _words(
        """auc average_precision_score coverage_error dcg_score det_curve
        label_ranking_average_precision_score label_ranking_loss ndcg_score
        precision_recall_curve roc_auc_score roc_curve top_k_accuracy_score"""
    ),
}

SAFE_GLOBALS: frozenset[str] = frozenset(
    [
        # containers and plain values
        "collections.OrderedDict",
        "collections.defaultdict",
        "collections.deque",
        "collections.Counter",
        "builtins.set",
        "builtins.frozenset",
        "builtins.slice",
        "builtins.complex",
        "builtins.bytearray",
        "builtins.bytes",
        "builtins.object",
        "builtins.int",
        "builtins.float",
        "builtins.str",
        "builtins.list",
        "builtins.dict",
        "builtins.tuple",
        "builtins.bool",
        "builtins.range",
        "copyreg._reconstructor",
        "copyreg.__newobj__",
        "copyreg.__newobj_ex__",
        "_codecs.encode",
        "codecs.encode",
        "datetime.datetime",
        "datetime.date",
        "datetime.time",
        "datetime.timedelta",
        "datetime.timezone",
        "decimal.Decimal",
        "fractions.Fraction",
        "uuid.UUID",
        # NumPy array and dtype reconstruction
        "numpy.core.multiarray._reconstruct",
        "numpy._core.multiarray._reconstruct",
        "numpy.core.multiarray.scalar",
        "numpy._core.multiarray.scalar",
        "numpy.core.numeric._frombuffer",
        "numpy._core.numeric._frombuffer",
        "numpy.ndarray",
        "numpy.dtype",
        "numpy.ma.core._mareconstruct",
        "numpy.ma.core.MaskedArray",
        "numpy.random._pickle.__randomstate_ctor",
        "numpy.random._pickle.__generator_ctor",
        "numpy.random._pickle.__bit_generator_ctor",
        "numpy.random.mtrand.RandomState",
        "numpy.random._generator.Generator",
        "numpy.random.bit_generator.SeedSequence",
        "numpy.random.bit_generator.__pyx_unpickle_SeedSequence",
        "numpy.random._mt19937.MT19937",
        "numpy.random._pcg64.PCG64",
        "numpy.random._pcg64.PCG64DXSM",
        "numpy.random._philox.Philox",
        "numpy.random._sfc64.SFC64",
        # the public names skops resolves a Generator's bit generator by
        "numpy.random.MT19937",
        "numpy.random.PCG64",
        "numpy.random.PCG64DXSM",
        "numpy.random.Philox",
        "numpy.random.SFC64",
        # PyTorch tensors, storages, parameters
        "torch._utils._rebuild_tensor",
        "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_tensor_v3",
        "torch._utils._rebuild_parameter",
        "torch._utils._rebuild_parameter_with_state",
        "torch._utils._rebuild_sparse_tensor",
        "torch._utils._rebuild_nested_tensor",
        "torch._utils._rebuild_device_tensor_from_numpy",
        "torch._utils._rebuild_meta_tensor_no_storage",
        "torch._utils._rebuild_wrapper_subclass",
        "torch._utils._rebuild_qtensor",
        "torch._tensor._rebuild_from_type",
        "torch._tensor._rebuild_from_type_v2",
        "torch.nn.parameter.Parameter",
        "torch.nn.parameter.Buffer",
        "torch.storage.UntypedStorage",
        "torch.storage.TypedStorage",
        "torch.serialization._get_layout",
        "torch.jit._pickle.build_intlist",
        "torch.jit._pickle.build_doublelist",
        "torch.jit._pickle.build_boollist",
        "torch.jit._pickle.build_tensorlist",
        "torch.jit._pickle.build_tensor_from_id",
        "torch.jit._pickle.restore_type_tag",
        # joblib's inline array placeholder (its bytes follow in the stream)
        "joblib.numpy_pickle.NumpyArrayWrapper",
        # NumPy array subclasses (masked arrays: scikit-learn's cv_results_ in every
        # GridSearchCV/RandomizedSearchCV; matrices, record arrays): their constructors
        # and __setstate__ only build arrays (np.matrix parses strings with literal_eval)
        "numpy.ma.MaskedArray",
        "numpy.ma.core.MaskedConstant",
        "numpy.ma.core.mvoid",
        "numpy.matrix",
        "numpy.matrixlib.defmatrix.matrix",
        "numpy.recarray",
        "numpy.record",
        "numpy.rec.recarray",
        "numpy.rec.record",
        "numpy.core.records.recarray",
        "numpy.core.records.record",
        "numpy._core.records.recarray",
        "numpy._core.records.record",
        # plain attribute containers and RNG state in training checkpoints
        # (``torch.save({"args": parser.parse_args(), ...})``, ``random.Random``): they
        # set attributes or a C-level generator state, nothing else
        "argparse.Namespace",
        # named time zones (pandas 3 datetimes): ZoneInfo pickles as
        # getattr(ZoneInfo, "_unpickle")(key, flags); the key names a file in the system tz
        # database (ZoneInfo rejects absolute and climbing keys), read as TZif data only
        "zoneinfo.ZoneInfo",
        "zoneinfo.ZoneInfo._unpickle",
        "types.SimpleNamespace",
        "random.Random",
        # scikit-learn's ColumnTransformer selector: a lower-case class that only stores
        # its pattern and dtypes (the class pattern below needs a capital)
        "sklearn.compose._column_transformer.make_column_selector",
        # pandas (DataFrame/Series pickles, pandas.to_pickle): containers, indexes,
        # extension arrays and dtypes, and the reconstruction helpers pandas' own
        # __reduce__ methods name. They build arrays; pandas.io (read_*) and
        # pandas.core.computation (eval/query) are never reachable from them. One residue:
        # a time-zone *name* given to a datetime dtype is looked up in the system tz
        # database (zoneinfo/pytz/dateutil), which reads that TZif file and fails on
        # anything else; nothing is executed, written, or sent anywhere.
        "pandas.DataFrame",
        "pandas.Series",
        "pandas.Index",
        "pandas.RangeIndex",
        "pandas.MultiIndex",
        "pandas.CategoricalIndex",
        "pandas.DatetimeIndex",
        "pandas.TimedeltaIndex",
        "pandas.PeriodIndex",
        "pandas.IntervalIndex",
        "pandas.Categorical",
        "pandas.CategoricalDtype",
        "pandas.DatetimeTZDtype",
        "pandas.PeriodDtype",
        "pandas.IntervalDtype",
        "pandas.SparseDtype",
        "pandas.StringDtype",
        "pandas.BooleanDtype",
        "pandas.Int8Dtype",
        "pandas.Int16Dtype",
        "pandas.Int32Dtype",
        "pandas.Int64Dtype",
        "pandas.UInt8Dtype",
        "pandas.UInt16Dtype",
        "pandas.UInt32Dtype",
        "pandas.UInt64Dtype",
        "pandas.Float32Dtype",
        "pandas.Float64Dtype",
        "pandas.NA",
        "pandas.NaT",
        "pandas.Timestamp",
        "pandas.Timedelta",
        "pandas.Period",
        "pandas.Interval",
        "pandas._libs.missing.NA",
        "pandas._libs.internals._unpickle_block",
        "pandas._libs.internals.BlockPlacement",
        "pandas._libs.arrays.__pyx_unpickle_NDArrayBacked",
        "pandas._libs.interval.__pyx_unpickle_IntervalMixin",
        "pandas._libs.interval.Interval",
        "pandas._libs.sparse.IntIndex",
        "pandas._libs.sparse.BlockIndex",
        "pandas._libs.tslibs.timestamps._unpickle_timestamp",
        "pandas._libs.tslibs.timedeltas._timedelta_unpickle",
        "pandas._libs.tslibs.nattype._nat_unpickle",
        "pandas._libs.tslibs.nattype.__nat_unpickle",
        "pandas._libs.tslibs.period.Period",
        "pandas.core.indexes.base._new_Index",
        "pandas.core.indexes.period._new_PeriodIndex",
        "pandas.core.indexes.datetimes._new_DatetimeIndex",
        "pandas.core.indexes.timedeltas._new_TimedeltaIndex",
        "pandas.core.indexes.interval._new_IntervalIndex",
        # pyarrow-backed pandas columns (pandas 3's default string dtype when pyarrow is
        # installed pickles through pyarrow's own __reduce__): an alias such as "string"
        # to a DataType, bytes wrapped as a Buffer, and an Array rebuilt from a type,
        # lengths and those buffers. No I/O, import or call of anything named by the data.
        # Residue: _restore_array does not validate the buffers against the lengths, so a
        # crafted pickle can make an array whose reads go past its buffer (a crash or a
        # read of the loading process's memory when the column is used), not run code.
        "pyarrow.lib.type_for_alias",
        "pyarrow.lib.py_buffer",
        "pyarrow.lib._restore_array",
        # XGBoost and LightGBM scikit-learn wrappers and their boosters. The wrappers'
        # constructors only store parameters (scikit-learn convention); a Booster is rebuilt
        # by __setstate__ from the model bytes in the pickle, parsed by the library's C++
        # model reader. Residue: the Booster constructor also accepts a model *path*
        # (XGBoost: local files only, "Only local file is supported"; LightGBM: local
        # files), which it parses as a model and rejects otherwise: nothing runs.
        "xgboost.core.Booster",
        "xgboost.sklearn.XGBModel",
        "xgboost.sklearn.XGBClassifier",
        "xgboost.sklearn.XGBRegressor",
        "xgboost.sklearn.XGBRanker",
        "xgboost.sklearn.XGBRFClassifier",
        "xgboost.sklearn.XGBRFRegressor",
        # training callbacks a wrapper keeps in its ``callbacks`` parameter: they store
        # their settings (and the monitor a print function) until training runs
        "xgboost.callback.EarlyStopping",
        "xgboost.callback.EvaluationMonitor",
        "xgboost.collective.communicator_print",
        "lightgbm.basic.Booster",
        "lightgbm.sklearn.LGBMModel",
        "lightgbm.sklearn.LGBMClassifier",
        "lightgbm.sklearn.LGBMRegressor",
        "lightgbm.sklearn.LGBMRanker",
    ]
    + [f"torch.{n}" for n in _TORCH_DTYPES]
    + [f"numpy.{n}" for n in _NUMPY_SCALARS]
    + [f"numpy.{n}" for n in _NUMPY_UFUNCS]
    + _PATHLIB
    + [f"sklearn.metrics.{mod}.{n}" for mod, names in _SKLEARN_METRICS.items() for n in names]
)

#: Patterns for families of classes (a class-like final name, no dotted attribute walk).
_CLASS = r"(?:_?[A-Z][A-Za-z0-9_]*|__pyx_unpickle_[A-Za-z0-9_]+)"
_MOD = r"(?:[A-Za-z_][A-Za-z0-9_]*\.)*"
SAFE_PATTERNS: tuple[re.Pattern[str], ...] = tuple(
    re.compile(p)
    for p in (
        # scikit-learn estimators and their helper classes; never datasets (network),
        # testing helpers (run subprocesses), externals, or the modules whose capitalised
        # names are imports from elsewhere: callback (multiprocessing.connection.Client and
        # Listener: sockets; threading.Thread), conftest and estimator checks (pytest,
        # unittest), _available_if (types.MethodType), discovery and _repr_html (pathlib, io)
        r"sklearn\.(?!(?:[A-Za-z0-9_]+\.)*(?:tests?|conftest)\b)"
        r"(?!datasets\b|utils\._testing\b|externals\b|_build_utils\b|"
        r"utils\._show_versions\b|experimental\b|callback\b|tree\._export\b|"
        r"utils\.(?:estimator_checks|_test_common|discovery|_available_if|_repr_html)\b)"
        + _MOD
        + r"[A-Za-z0-9_]+\."
        + _CLASS,
        # Cython helpers sklearn's trees and distance metrics pickle through: obj.__new__(obj)
        r"sklearn\.(?:neighbors|metrics)\." + _MOD + r"newObj",
        r"scipy\.sparse\." + _MOD + r"(?:csr|csc|coo|lil|dok|bsr|dia)_(?:matrix|array)",
        r"numpy\.dtypes\.[A-Z][A-Za-z0-9]*DType",
        r"torch\.[A-Za-z0-9]*Storage",
        r"torch\.nn\.modules\.[a-z_]+\.[A-Z][A-Za-z0-9_]*",
        # pandas classes under the module paths older pandas versions pickled them with
        # (pandas.core.frame.DataFrame, pandas.core.arrays.categorical.Categorical, ...),
        # the public pandas.arrays aliases and the date offsets (MonthEnd, Day, ...); never
        # pandas.io, pandas.core.computation or other modules
        r"pandas\.core\.(?:frame|series|indexes\.[a-z_]+|arrays\.[a-z_]+(?:\.[a-z_]+)?|"
        r"dtypes\.dtypes|internals\.(?:managers|blocks)|sparse\.[a-z_]+)\.[A-Z][A-Za-z0-9]*",
        r"pandas\.arrays\.[A-Z][A-Za-z0-9]*",
        r"pandas\.(?:_libs\.tslibs\.offsets|tseries\.offsets)\.[A-Z][A-Za-z0-9]*",
    )
)

#: Names that only TorchScript's own unpickler resolves (script classes, not imports).
TORCHSCRIPT_PATTERN = re.compile(r"__torch__\.[A-Za-z0-9_.]+")

# --- deny-list ---------------------------------------------------------------------------

#: Whole modules whose callables run code, touch files or the network, or load pickles.
UNSAFE_MODULES: dict[str, str] = {
    **dict.fromkeys(
        [
            "os",
            "posix",
            "nt",
            "posixpath",
            "ntpath",
            "subprocess",
            "_posixsubprocess",
            "pty",
            "pipes",
            "shutil",
            "sys",
            "ctypes",
            "_ctypes",
            "cffi",
            "signal",
            "resource",
            "multiprocessing",
            "concurrent",
            "threading",
            "_thread",
            "asyncio",
            "platform",
            "_winapi",
            "msvcrt",
            "winreg",
        ],
        "runs commands or touches the operating system",
    ),
    **dict.fromkeys(
        [
            "code",
            "codeop",
            "runpy",
            "pdb",
            "bdb",
            "profile",
            "cProfile",
            "trace",
            "timeit",
            "doctest",
            "pydoc",
            "idlelib",
            "unittest",
            "test",
            "compileall",
            "py_compile",
            "zipapp",
            "venv",
            "ensurepip",
            "distutils",
            "setuptools",
            "pip",
            "imp",
            "importlib",
            "pkgutil",
            "zipimport",
            "modulefinder",
            "site",
            "sysconfig",
            "types",
            "inspect",
            "gc",
            "builtins.__import__",
            "marshal",
            "operator",
            "_operator",
            "functools.reduce",
            "_functools.reduce",
            "logging.config",
            "torch.utils.cpp_extension",
            "torch._inductor",
            "torch.package",
            "torch.hub",
            "torch._dynamo",
            "numpy.f2py",
            "numpy.distutils",
            "numpy.testing",
            "numpy.ctypeslib",
            "sklearn.utils._testing",
        ],
        "runs or compiles Python code, imports modules or reaches attributes",
    ),
    **dict.fromkeys(
        [
            "socket",
            "_socket",
            "ssl",
            "select",
            "selectors",
            "http",
            "httplib",
            "urllib",
            "urllib2",
            "urllib3",
            "requests",
            "httpx",
            "aiohttp",
            "ftplib",
            "smtplib",
            "smtpd",
            "telnetlib",
            "poplib",
            "imaplib",
            "nntplib",
            "xmlrpc",
            "socketserver",
            "wsgiref",
            "webbrowser",
            "mailcap",
            "paramiko",
        ],
        "opens network connections (exfiltration or download)",
    ),
    **dict.fromkeys(
        [
            "io",
            "_io",
            "codecs",
            "tempfile",
            "fileinput",
            "pathlib",
            "glob",
            "zipfile",
            "tarfile",
            "shelve",
            "dbm",
            "sqlite3",
            "mmap",
            "numpy.memmap",
        ],
        "reads or writes files",
    ),
    **dict.fromkeys(
        [
            "pickle",
            "_pickle",
            "cPickle",
            "pickletools",
            "copy_reg",
            "dill",
            "cloudpickle",
            "joblib",
            "jsonpickle",
            "yaml",
            "torch.serialization",
            "torch.load",
            "torch.jit.load",
            "torch.jit._serialization",
            "torch.storage._load_from_bytes",
            "numpy.load",
            "numpy.lib.npyio",
            "numpy.lib.format",
            "numpy.lib._npyio_impl",
            "numpy.fromfile",
            "numpy.loadtxt",
            "numpy.genfromtxt",
            "pandas.io",
            "pandas.read_pickle",
            "sklearn.datasets",
            "keras.models.load_model",
            "keras.saving",
            "tensorflow.io",
        ],
        "loads another file or pickle (a nested loader runs whatever that holds)",
    ),
    # scipy.stats distributions (rv_continuous/rv_discrete subclasses, their frozen
    # forms): rv_generic.__setstate__ exec()s ``_parse_arg_template``, a string taken from
    # the pickled state. Real RandomizedSearchCV pickles hold them; loading one runs code
    # from the file, so it is flagged however benign the template looks.
    **dict.fromkeys(
        [
            "scipy.stats._distn_infrastructure",
            "scipy.stats._continuous_distns",
            "scipy.stats._discrete_distns",
            "scipy.stats._levy_stable",
            "scipy.stats.distributions",
        ],
        "its __setstate__ exec()s a code template stored in the pickle",
    ),
}

#: Single names in otherwise harmless modules.
UNSAFE_NAMES: dict[str, str] = {
    **dict.fromkeys(
        [
            "builtins.eval",
            "builtins.exec",
            "builtins.compile",
            "builtins.__import__",
            "builtins.breakpoint",
            "builtins.input",
            "builtins.help",
            "builtins.exit",
            "builtins.quit",
        ],
        "runs Python code",
    ),
    **dict.fromkeys(
        [
            "builtins.getattr",
            "builtins.setattr",
            "builtins.delattr",
            "builtins.globals",
            "builtins.locals",
            "builtins.vars",
            "builtins.type",
            "builtins.super",
            "builtins.classmethod",
            "builtins.staticmethod",
            "builtins.property",
            "builtins.memoryview",
        ],
        "reaches arbitrary attributes or builds new types (attribute chains)",
    ),
    "builtins.open": "reads or writes files",
    **dict.fromkeys(
        [
            "numpy.save",
            "numpy.savez",
            "numpy.savez_compressed",
            "numpy.savetxt",
            "torch.save",
            "pandas.read_csv",
            "pandas.read_json",
            "pandas.read_html",
        ],
        "reads or writes files",
    ),
}


@dataclass
class Policy:
    """The allow-list policy. ``allow``/``deny`` add ``module.name`` or ``module.*`` entries."""

    allow: list[str] = field(default_factory=list)
    deny: list[str] = field(default_factory=list)
    _cache: dict[tuple[str, str, bool], Classification] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        for entry in [*self.allow, *self.deny]:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*(\.\*)?", entry):
                raise InputFileError(
                    "policy",
                    f"bad entry {entry!r}; expected a dotted name such as 'mypkg.MyModel' "
                    "or a module wildcard such as 'mypkg.*'",
                )

    @classmethod
    def from_file(cls, path: str | Path, extra_allow: Iterable[str] = ()) -> Policy:
        """Read a YAML or JSON policy file ``{"allow": [...], "deny": [...]}``."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InputFileError(path, f"cannot read the policy file ({exc.strerror})") from None
        except UnicodeDecodeError:
            raise InputFileError(path, "the policy file is not UTF-8 text (YAML or JSON)") from None
        try:
            import yaml

            data = yaml.safe_load(text) if path.suffix.lower() in (".yaml", ".yml") else None
            if data is None:
                data = json.loads(text) if text.strip() else {}
        except (ValueError, yaml.YAMLError) as exc:
            reason = " ".join(str(exc).split())
            raise InputFileError(path, f"not valid YAML/JSON ({reason})") from None
        if not isinstance(data, dict) or set(data) - {"allow", "deny"}:
            raise InputFileError(
                path, "expected a mapping with the keys 'allow' and/or 'deny' (lists of names)"
            )
        allow, deny = data.get("allow") or [], data.get("deny") or []
        if (
            not isinstance(allow, list)
            or not isinstance(deny, list)
            or not all(isinstance(x, str) for x in [*allow, *deny])
        ):
            raise InputFileError(path, "'allow' and 'deny' must be lists of dotted names")
        return cls(allow=[*allow, *extra_allow], deny=list(deny))

    def classify(self, module: str, name: str, *, torchscript: bool = False) -> Classification:
        """Classify one imported name (``module``, ``name`` as the pickle spells them)."""
        key = (module, name, torchscript)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._classify(module, name, torchscript)
            # bounded: at most 100,000 entries of short names (a hostile pickle's
            # thousands of distinct 4 KB names must not grow memory without limit)
            if len(self._cache) < 100_000 and len(module) + len(name) <= 256:
                self._cache[key] = hit
        return hit

    def _classify(self, module: str, name: str, torchscript: bool) -> Classification:
        module, name = normalise(module, name)
        full = f"{module}.{name}"
        if _listed(full, self.deny):
            return Classification(Verdict.UNSAFE, "denied by the scan policy", full)
        if full in SAFE_GLOBALS or _listed(full, self.allow):
            return Classification(Verdict.SAFE, "on the allow-list", full)
        if torchscript and TORCHSCRIPT_PATTERN.fullmatch(full):
            return Classification(Verdict.SAFE, "a TorchScript class", full)
        parts = name.split(".")
        if any(p.startswith("__") and p.endswith("__") and len(p) > 4 for p in parts):
            return Classification(
                Verdict.UNSAFE, "walks a __dunder__ attribute into interpreter internals", full
            )
        if full in UNSAFE_NAMES:
            return Classification(Verdict.UNSAFE, UNSAFE_NAMES[full], full)
        for prefix in _prefixes(full):
            if prefix in UNSAFE_MODULES:
                return Classification(Verdict.UNSAFE, UNSAFE_MODULES[prefix], full)
        if "." not in name and any(p.fullmatch(full) for p in SAFE_PATTERNS):
            return Classification(Verdict.SAFE, "a class of an allowed library", full)
        return Classification(
            Verdict.SUSPICIOUS, "not on the allow-list of names real model files use", full
        )

    def is_safe(self, module: str, name: str, *, torchscript: bool = False) -> bool:
        return self.classify(module, name, torchscript=torchscript).verdict is Verdict.SAFE


DEFAULT_POLICY = Policy()


def normalise(module: str, name: str) -> tuple[str, str]:
    """Map Python 2 names to Python 3 the way ``pickle`` does for protocols 0-2."""
    import _compat_pickle

    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    if module == "__builtin__":
        module = "builtins"
    return module, name


def _prefixes(full: str) -> list[str]:
    parts = full.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _listed(full: str, entries: Iterable[str]) -> bool:
    for entry in entries:
        if entry.endswith(".*"):
            if full.startswith(entry[:-1]):
                return True
        elif full == entry:
            return True
    return False
