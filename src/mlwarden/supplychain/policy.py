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
    """Verdict on one imported name, or on a whole file (``error``: could not be scanned)."""

    SAFE = "safe"
    SUSPICIOUS = "suspicious"
    UNSAFE = "unsafe"
    ERROR = "error"


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
    ]
    + [f"torch.{n}" for n in _TORCH_DTYPES]
    + [f"numpy.{n}" for n in _NUMPY_SCALARS]
)

#: Patterns for families of classes (a class-like final name, no dotted attribute walk).
_CLASS = r"(?:_?[A-Z][A-Za-z0-9_]*|__pyx_unpickle_[A-Za-z0-9_]+)"
_MOD = r"(?:[A-Za-z_][A-Za-z0-9_]*\.)*"
SAFE_PATTERNS: tuple[re.Pattern[str], ...] = tuple(
    re.compile(p)
    for p in (
        # scikit-learn estimators and their helper classes; never datasets (network),
        # testing helpers (run subprocesses) or externals
        r"sklearn\.(?!datasets\b|utils\._testing\b|externals\b|tests?\b|_build_utils\b|"
        r"utils\._show_versions\b|experimental\b)" + _MOD + r"[A-Za-z0-9_]+\." + _CLASS,
        # Cython helpers sklearn's trees and distance metrics pickle through: obj.__new__(obj)
        r"sklearn\.(?:neighbors|metrics)\." + _MOD + r"newObj",
        r"scipy\.sparse\." + _MOD + r"(?:csr|csc|coo|lil|dok|bsr|dia)_(?:matrix|array)",
        r"numpy\.dtypes\.[A-Z][A-Za-z0-9]*DType",
        r"torch\.[A-Za-z0-9]*Storage",
        r"torch\.nn\.modules\.[a-z_]+\.[A-Z][A-Za-z0-9_]*",
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
            "functools.reduce",
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
            if len(self._cache) < 100_000:
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
