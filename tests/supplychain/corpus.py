"""Malicious and benign model-file corpora, generated on the spot.

Malicious files carry harmless canary payloads only: each, if ever executed, would
create the file ``canary`` (or at worst try a closed localhost port); tests assert
the canary never appears. Benign files are written by the real libraries (PyTorch,
scikit-learn, joblib, NumPy, safetensors, ONNX exporter).

Used by the tests and by ``benchmarks/scan_vs_peers.py``.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import os
import pickle
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Case:
    path: Path
    category: str
    expect: str  #: "unsafe" (known dangerous) or "flagged" (unsafe or suspicious)


# --- raw pickle building blocks ------------------------------------------------------------


def g(module: str, name: str) -> bytes:
    """GLOBAL opcode (protocols 0-3)."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def u(text: str) -> bytes:
    """BINUNICODE string."""
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def su(text: str) -> bytes:
    """SHORT_BINUNICODE string (protocol 4)."""
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


def s0(text: str) -> bytes:
    """Protocol 0 STRING."""
    return b"S" + repr(text).encode() + b"\n"


def arg(v: Any) -> bytes:
    if isinstance(v, str):
        return u(v)
    if isinstance(v, bytes):
        return b"B" + struct.pack("<I", len(v)) + v
    if isinstance(v, int):
        return b"J" + struct.pack("<i", v)
    if isinstance(v, tuple):
        return b"(" + b"".join(arg(x) for x in v) + b"t"
    raise TypeError(v)


def call2(module: str, name: str, *args: Any) -> bytes:
    """Protocol 2 pickle calling ``module.name(*args)``."""
    return b"\x80\x02" + g(module, name) + b"(" + b"".join(arg(a) for a in args) + b"tR."


def call4(module: str, name: str, *args: Any) -> bytes:
    """Protocol 4 pickle calling ``module.name(*args)`` through STACK_GLOBAL."""
    body = su(module) + su(name) + b"\x93" + b"(" + b"".join(arg(a) for a in args) + b"tR."
    return b"\x80\x04" + body


def expr(module: str, name: str, *args: Any) -> bytes:
    """The call as an expression (no PROTO/STOP), to nest inside other calls."""
    return g(module, name) + b"(" + b"".join(arg(a) for a in args) + b"tR"


class Reducer:
    """An object that pickles as ``func(*args)``: lets the real pickler write payloads."""

    def __init__(self, func: Any, args: tuple[Any, ...]) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args


# --- malicious corpus -----------------------------------------------------------------------


def build_malicious(root: Path, canary: Path) -> list[Case]:
    """Write the malicious corpus under ``root``; payloads would create ``canary``."""
    root.mkdir(parents=True, exist_ok=True)
    c = str(canary)
    sh = f"touch {c}"
    py = f"open({c!r}, 'w').close()"
    cases: list[Case] = []

    def add(name: str, data: bytes, category: str, expect: str = "unsafe") -> None:
        p = root / name
        p.write_bytes(data)
        cases.append(Case(p, category, expect))

    # exec-capable builtins
    add("eval.pkl", call2("builtins", "eval", py), "exec-builtins")
    add("exec.pkl", call4("builtins", "exec", py), "exec-builtins")
    add(
        "compile_exec.pkl",
        b"\x80\x02"
        + g("builtins", "exec")
        + b"("
        + expr("builtins", "compile", py, "x", "exec")
        + b"tR.",
        "exec-builtins",
    )
    add("py2_builtin_eval.pkl", g("__builtin__", "eval") + b"(" + s0(py) + b"tR.", "exec-builtins")
    add("import_dunder.pkl", call2("builtins", "__import__", "os"), "exec-builtins")
    add("breakpoint.pkl", call2("builtins", "breakpoint"), "exec-builtins")
    # os, subprocess and similar
    add("os_system.pkl", call2("os", "system", sh), "os-subprocess")
    add("posix_system.pkl", pickle.dumps(Reducer(os.system, (sh,)), protocol=2), "os-subprocess")
    add("nt_system.pkl", call2("nt", "system", sh), "os-subprocess")
    add("os_popen.pkl", call4("os", "popen", sh), "os-subprocess")
    add("os_execl.pkl", call2("os", "execlp", "touch", "touch", c), "os-subprocess")
    add(
        "subprocess_popen.pkl",
        b"\x80\x02" + g("subprocess", "Popen") + b"(" + arg(("touch", c)) + b"tR.",
        "os-subprocess",
    )
    add("subprocess_run.pkl", call4("subprocess", "run", sh), "os-subprocess")
    add("subprocess_getoutput.pkl", call2("subprocess", "getoutput", sh), "os-subprocess")
    add("commands_py2.pkl", g("commands", "getoutput") + b"(" + s0(sh) + b"tR.", "os-subprocess")
    add("pty_spawn.pkl", call2("pty", "spawn", sh), "os-subprocess")
    add("ctypes_cdll.pkl", call2("ctypes", "CDLL", "libc.so.6"), "os-subprocess")
    add(
        "multiprocessing.pkl",
        call4("multiprocessing.util", "spawnv_passfds", "/usr/bin/touch", (c,), ()),
        "os-subprocess",
    )
    # standard-library callables that run code or shell commands
    add("timeit.pkl", call2("timeit", "timeit", py), "stdlib-code")
    add("cprofile_run.pkl", call2("cProfile", "run", py), "stdlib-code")
    add("profile_run.pkl", call4("profile", "run", py), "stdlib-code")
    add("pdb_run.pkl", call2("pdb", "run", py), "stdlib-code")
    add("bdb.pkl", call2("bdb", "Bdb"), "stdlib-code")
    add("doctest_debug.pkl", call2("doctest", "debug_script", py), "stdlib-code")
    add("code_interp.pkl", call4("code", "InteractiveInterpreter"), "stdlib-code")
    add("pydoc_pipepager.pkl", call2("pydoc", "pipepager", "x", sh), "stdlib-code")
    add("runpy_run_path.pkl", call2("runpy", "run_path", c), "stdlib-code")
    add("trace.pkl", call4("trace", "Trace"), "stdlib-code")
    add("idlelib.pkl", call2("idlelib.pyshell", "main"), "stdlib-code")
    # attribute chains through getattr, operator and importlib
    chain = (
        b"\x80\x02"
        + g("builtins", "getattr")
        + b"("
        + expr("builtins", "__import__", "os")
        + u("system")
        + b"tR("
        + u(sh)
        + b"tR."
    )
    add("getattr_chain.pkl", chain, "attr-chain")
    add("operator_attrgetter.pkl", call2("operator", "attrgetter", "system"), "attr-chain")
    add("operator_methodcaller.pkl", call4("operator", "methodcaller", "system", sh), "attr-chain")
    add("importlib.pkl", call2("importlib", "import_module", "os"), "attr-chain")
    add(
        "dunder_globals.pkl",
        b"\x80\x04" + su("torch._utils") + su("_rebuild_tensor_v2.__globals__") + b"\x93.",
        "attr-chain",
    )
    add("types_function.pkl", call2("types", "FunctionType", b"x", ()), "attr-chain")
    # nested loaders
    inner = call2("os", "system", sh)
    add("pickle_loads.pkl", call2("pickle", "loads", inner), "nested-loader")
    add("cpickle_loads.pkl", call4("_pickle", "loads", inner), "nested-loader")
    add("torch_load.pkl", call2("torch", "load", c), "nested-loader")
    add("torch_serialization_load.pkl", call2("torch.serialization", "load", c), "nested-loader")
    add("joblib_load.pkl", call4("joblib", "load", c), "nested-loader")
    add("numpy_load.pkl", call2("numpy", "load", c), "nested-loader")
    add("pandas_read_pickle.pkl", call2("pandas", "read_pickle", c), "nested-loader")
    add("marshal_loads.pkl", call2("marshal", "loads", b"\xe3"), "nested-loader")
    add("dill_loads.pkl", call4("dill", "loads", inner), "nested-loader")
    add(
        "yaml_unsafe.pkl",
        call2("yaml", "unsafe_load", "!!python/object/apply:os.system ['true']"),
        "nested-loader",
    )
    _add_dill_cloudpickle(add, c)
    # network and exfiltration
    add("urlopen.pkl", call2("urllib.request", "urlopen", "http://127.0.0.1:9/x"), "network")
    add(
        "socket.pkl",
        b"\x80\x02" + g("socket", "create_connection") + b"(" + arg(("127.0.0.1", 9)) + b"tR.",
        "network",
    )
    add("http_client.pkl", call4("http.client", "HTTPConnection", "127.0.0.1", 9), "network")
    add("requests.pkl", call2("requests", "get", "http://127.0.0.1:9/"), "network")
    add("webbrowser.pkl", call2("webbrowser", "open", "http://127.0.0.1:9/"), "network")
    add("smtplib.pkl", call4("smtplib", "SMTP", "127.0.0.1", 9), "network")
    # file writes
    add("open_write.pkl", call2("builtins", "open", c, "w"), "file-write")
    add("io_open.pkl", call4("io", "open", c, "w"), "file-write")
    add("codecs_open.pkl", call2("codecs", "open", c, "w"), "file-write")
    add("shutil_copy.pkl", call2("shutil", "copyfile", "/etc/hostname", c), "file-write")
    path_touch = (
        b"\x80\x04"
        + su("pathlib")
        + su("Path.touch")
        + b"\x93"
        + su("pathlib")
        + su("Path")
        + b"\x93"
        + u(c)
        + b"\x85R\x85R."
    )
    add("pathlib_touch.pkl", path_touch, "file-write")
    add("numpy_save.pkl", call2("numpy", "save", c, 1), "file-write")
    # memo and opcode tricks
    memo = (
        b"\x80\x04"
        + su("os")
        + b"\x94"
        + su("system")
        + b"\x94"
        + b"0"
        + b"0"
        + b"h\x00h\x01\x93"
        + u(sh)
        + b"\x85R."
    )
    add("memo_stack_global.pkl", memo, "opcode-trick")
    dup = b"\x80\x04" + su("posix") + b"2" + b"0" + su("system") + b"\x93" + u(sh) + b"\x85R."
    add("dup_stack_global.pkl", dup, "opcode-trick")
    add(
        "proto_midstream.pkl", b"\x80\x02N0\x80\x02" + call2("os", "system", sh)[2:], "opcode-trick"
    )
    framed = b"\x80\x04\x95" + struct.pack("<Q", 3) + call4("os", "system", sh)[2:]
    add("frame_mismatch.pkl", framed, "opcode-trick")
    add("unknown_opcode_after.pkl", call2("os", "system", sh)[:-1] + b"\xff", "opcode-trick")
    add("truncated_after_reduce.pkl", call2("os", "system", sh)[:-1], "opcode-trick")
    add(
        "second_pickle.pkl",
        pickle.dumps({"w": [1.0, 2.0]}, protocol=4) + call4("os", "system", sh),
        "opcode-trick",
    )
    add("inst.pkl", b"(" + u(sh) + b"ios\nsystem\n.", "opcode-trick")
    add("obj.pkl", b"\x80\x02(" + g("os", "system") + u(sh) + b"o.", "opcode-trick")
    add(
        "newobj.pkl", b"\x80\x02" + g("subprocess", "Popen") + arg((sh,)) + b"\x81.", "opcode-trick"
    )
    add(
        "newobj_ex.pkl",
        b"\x80\x04" + su("subprocess") + su("Popen") + b"\x93" + arg((sh,)) + b"}\x92.",
        "opcode-trick",
    )
    patch = (
        b"\x80\x02"
        + g("collections", "OrderedDict")
        + b"}"
        + u("__reduce__")
        + g("builtins", "len")
        + b"sb."
    )
    add("build_patches_class.pkl", patch, "opcode-trick")
    add("ext_code.pkl", b"\x80\x02\x82\x01)R.", "opcode-trick", "flagged")
    add(
        "huge_memo_index.pkl",
        b"\x80\x02" + g("os", "system") + b"r\xff\xff\xff\x7f" + b"(" + u(sh) + b"tR.",
        "opcode-trick",
    )
    legacy = io.BytesIO()
    import torch

    torch.save(Reducer(os.system, (sh,)), legacy, _use_new_zipfile_serialization=False)
    nested = (
        b"\x80\x02" + g("torch.storage", "_load_from_bytes") + arg(legacy.getvalue()) + b"\x85R."
    )
    add("tensor_bytes_nested_evil.pkl", nested, "nested-loader")
    unscanned = b"\x80\x02" + g("torch.storage", "_load_from_bytes") + b"(K\x01tR."
    add("tensor_bytes_unscanned.pkl", unscanned, "nested-loader")
    for proto in range(6):
        add(
            f"reducer_p{proto}.pkl",
            pickle.dumps(Reducer(os.system, (sh,)), protocol=proto),
            "real-pickler",
        )
    # container tricks
    _container_tricks(add, root, c, sh)
    # Keras and ONNX
    _keras(add, root)
    _onnx(add, root)
    # GGUF chat template that escapes Jinja into Python (CVE-2024-34359's shape)
    if _has_gguf():
        ssti = (
            "{% for x in ().__class__.__base__.__subclasses__() %}{% if 'warning' in "
            "x.__name__ %}{{ x()._module.__builtins__['__import__']('os').popen("
            + repr(sh)
            + ").read() }}{% endif %}{% endfor %}"
        )
        add("chat_template.gguf", _gguf_file(root / "tmp.gguf", ssti), "template")
    return cases


def _has_gguf() -> bool:
    try:
        import gguf  # noqa: F401
    except ImportError:
        return False
    return True


def _gguf_file(path: Path, template: str | None) -> bytes:
    """A small llama-style GGUF written by the ``gguf`` library (llama.cpp's writer)."""
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(64)
    w.add_tokenizer_model("llama")
    w.add_token_list([f"t{i}" for i in range(64)])
    if template is not None:
        w.add_chat_template(template)
    w.add_tensor("token_embd.weight", np.ones((8, 64), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    data = path.read_bytes()
    path.unlink()
    return data


def _add_dill_cloudpickle(add: Any, c: str) -> None:
    import cloudpickle
    import dill

    def payload() -> None:
        open(c, "w").close()

    add("cloudpickle_fn.pkl", cloudpickle.dumps(payload), "nested-loader")
    add("dill_fn.pkl", dill.dumps(payload, recurse=True), "nested-loader")


def _torch_zip(data_pkl: bytes, *, prefix: str = "archive", pkl_name: str = "data.pkl") -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save({"w": torch.zeros(3)}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for info in src.infolist():
            name = info.filename.split("/", 1)[1]
            data = data_pkl if name == "data.pkl" else src.read(info)
            if name == "data.pkl":
                name = pkl_name
            z.writestr(f"{prefix}/{name}", data)
    return out.getvalue()


def _container_tricks(add: Any, root: Path, c: str, sh: str) -> None:
    import joblib
    import torch

    evil = call2("os", "system", sh)
    evil_obj = Reducer(os.system, (sh,))
    add("torch_zip_evil.pt", _torch_zip(evil), "container")
    add("torch_zip_renamed_dir.pt", _torch_zip(evil, prefix="totally_weights"), "container")
    add("torch_zip_renamed_member.pt", _torch_zip(evil, pkl_name="weights.bin"), "container")
    bad_crc = bytearray(_torch_zip(evil))
    for sig in (b"PK\x03\x04", b"PK\x01\x02"):
        start = 0
        while (i := bad_crc.find(sig, start)) >= 0:
            off = 14 if sig == b"PK\x03\x04" else 16
            bad_crc[i + off : i + off + 4] = b"\xde\xad\xbe\xef"
            start = i + 4
    add("torch_zip_bad_crc.pt", bytes(bad_crc), "container")
    flagged = bytearray(_torch_zip(evil))
    for sig, off in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = 0
        while (i := flagged.find(sig, start)) >= 0:
            flagged[i + off] |= 0x01  # "encrypted"
            start = i + 4
    add("torch_zip_encrypted_flag.pt", bytes(flagged), "container")
    no_cd = _torch_zip(evil)
    add("torch_zip_no_central_dir.pt", no_cd[: no_cd.find(b"PK\x01\x02")], "container")
    buf = io.BytesIO()
    torch.save(evil_obj, buf)
    add("torch_save_evil.pt", buf.getvalue(), "container")
    buf = io.BytesIO()
    torch.save(evil_obj, buf, _use_new_zipfile_serialization=False)
    add("torch_legacy_evil.pt", buf.getvalue(), "container")
    add("model", evil, "container")  # no extension
    add("weights.safetensors", evil, "container")  # wrong extension
    add("pickle.gz", gzip.compress(evil), "container")
    for comp in ("zlib", "gzip", "bz2", "xz", "lzma"):
        p = root / f"joblib_{comp}.joblib"
        joblib.dump({"model": evil_obj}, p, compress=(comp, 3))
        add(p.name, p.read_bytes(), "container")
    p = root / "joblib_plain.joblib"
    joblib.dump({"arr": np.arange(5.0), "model": evil_obj}, p)
    add(p.name, p.read_bytes(), "container")
    p = root / "joblib_object_array.joblib"
    joblib.dump({"arr": np.arange(5.0), "objs": np.array([1, evil_obj], dtype=object)}, p)
    add(p.name, p.read_bytes(), "container")
    p = root / "object_array.npy"
    np.save(p, np.array([evil_obj], dtype=object), allow_pickle=True)
    add(p.name, p.read_bytes(), "container")
    out = io.BytesIO()
    np.savez(out, ok=np.arange(3), bad=np.array([evil_obj], dtype=object))
    add("object_array.npz", out.getvalue(), "container")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("inner/model.pt", _torch_zip(evil))
        z.writestr("README.txt", "a model")
    add("nested.zip", out.getvalue(), "container")
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as tf:
        for name, data in (
            ("sys_info", pickle.dumps({"little_endian": True}, protocol=2)),
            ("pickle", evil),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    add("torch_legacy_tar.pt", tar.getvalue(), "container")
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", evil)
    raw = bytearray(zipped.getvalue())
    i = raw.find(b"PK\x01\x02")
    name_at = i + 46
    raw[name_at : name_at + 7] = b"archivf"  # central name differs from the local one
    add("zip_name_mismatch.zip", bytes(raw), "container")
    add("zlib_raw.bin", zlib.compress(evil), "container")
    add("bz2_raw.bin", bz2.compress(evil), "container")


def _keras(add: Any, root: Path) -> None:
    import base64
    import marshal

    import h5py

    code = base64.b64encode(marshal.dumps((lambda x: x).__code__)).decode()
    k2 = {
        "class_name": "Sequential",
        "config": {
            "name": "seq",
            "layers": [
                {
                    "class_name": "InputLayer",
                    "config": {"name": "in", "batch_input_shape": [None, 4]},
                },
                {
                    "class_name": "Lambda",
                    "config": {
                        "name": "lam",
                        "function": [code, None, None],
                        "function_type": "lambda",
                    },
                },
            ],
        },
    }
    k3 = {
        "module": "keras",
        "class_name": "Sequential",
        "config": {
            "name": "seq",
            "layers": [
                {
                    "module": "keras.layers",
                    "class_name": "Lambda",
                    "config": {
                        "name": "lam",
                        "function": {"class_name": "__lambda__", "config": {"code": code}},
                    },
                    "registered_name": None,
                }
            ],
        },
        "registered_name": None,
    }
    foreign = {
        "module": "keras",
        "class_name": "Sequential",
        "config": {
            "name": "seq",
            "layers": [
                {
                    "module": "evilpkg.layers",
                    "class_name": "Backdoor",
                    "config": {"name": "b"},
                    "registered_name": "evilpkg>Backdoor",
                }
            ],
        },
    }
    for name, cfg in (("lambda_k2.h5", k2), ("lambda_k3.h5", k3)):
        p = root / name
        with h5py.File(p, "w") as f:
            f.attrs["model_config"] = json.dumps(cfg)
            f.attrs["keras_version"] = "2.15.0"
            f.create_group("model_weights")
        add(name, p.read_bytes(), "keras")
    for name, cfg, expect in (
        ("lambda.keras", k3, "unsafe"),
        ("foreign_module.keras", foreign, "flagged"),
    ):
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as z:
            z.writestr("metadata.json", json.dumps({"keras_version": "3.4.1"}))
            z.writestr("config.json", json.dumps(cfg))
            z.writestr("model.weights.h5", b"")
        add(name, out.getvalue(), "keras", expect)


def _onnx_model(location: str | None = None, domain: str = "") -> bytes:
    from onnx import TensorProto, helper

    w = helper.make_tensor("w", TensorProto.FLOAT, [4], [1.0, 2.0, 3.0, 4.0])
    if location is not None:
        w.ClearField("float_data")
        w.data_location = TensorProto.EXTERNAL
        for k, v in (("location", location), ("offset", "0"), ("length", "16")):
            e = w.external_data.add()
            e.key, e.value = k, v
    node = helper.make_node("Add" if not domain else "Backdoor", ["x", "w"], ["y"], domain=domain)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        initializer=[w],
    )
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(graph, opset_imports=opsets)
    return bytes(model.SerializeToString())


def _onnx(add: Any, root: Path) -> None:
    add("onnx_traversal.onnx", _onnx_model("../../../../etc/passwd"), "onnx")
    add("onnx_absolute.onnx", _onnx_model("/etc/passwd"), "onnx")
    add("onnx_custom_op.onnx", _onnx_model(domain="com.evil.ops"), "onnx", "flagged")


# --- benign corpus ---------------------------------------------------------------------------


def build_benign(root: Path) -> list[Path]:
    """Write model files with the real libraries; every one must scan safe."""
    import warnings

    import joblib
    import torch
    from sklearn.cluster import KMeans
    from sklearn.compose import ColumnTransformer
    from sklearn.decomposition import PCA
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB, MultinomialNB
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeClassifier

    from mlwarden.core.models import MLP, SmallCNN

    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    paths: list[Path] = []

    def p(name: str) -> Path:
        out = root / name
        paths.append(out)
        return out

    cnn = SmallCNN(in_channels=1, num_classes=10, image_size=8)
    mlp = MLP(in_features=16, num_classes=3)
    bn = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
    torch.save(cnn.state_dict(), p("cnn_state.pt"))
    torch.save(cnn.state_dict(), p("cnn_state_legacy.pt"), _use_new_zipfile_serialization=False)
    torch.save(mlp.state_dict(), p("mlp_state.pth"))
    torch.save(bn.state_dict(), p("bn_state.pt"))
    torch.save(bn.state_dict(), p("bn_state_legacy.pt"), _use_new_zipfile_serialization=False)
    opt = torch.optim.Adam(mlp.parameters())
    mlp(torch.randn(4, 16)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.StepLR(opt, 5)
    ckpt = {
        "model": mlp.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "epoch": 3,
        "loss": 0.25,
    }
    torch.save(ckpt, p("checkpoint_adam.pt"))
    torch.save(ckpt, p("checkpoint_adam_legacy.pt"), _use_new_zipfile_serialization=False)
    sgd = torch.optim.SGD(cnn.parameters(), lr=0.1, momentum=0.9)
    cnn(torch.randn(2, 1, 8, 8)).sum().backward()
    sgd.step()
    torch.save(
        {"model": cnn.state_dict(), "optimizer": sgd.state_dict()},
        p("checkpoint_sgd.pt"),
        pickle_protocol=4,
    )
    dtypes = {
        n: torch.ones(3, dtype=getattr(torch, n))
        for n in ("float16", "bfloat16", "int8", "int64", "bool", "complex64", "uint8")
    }
    torch.save(dtypes, p("dtypes.pt"))
    torch.save([torch.randn(2, 2), torch.arange(4)], p("tensor_list.pt"))
    with p("tensors_plain_pickle.pkl").open("wb") as f:
        pickle.dump({"w": torch.randn(3, 3), "b": torch.zeros(3)}, f, protocol=4)
    torch.jit.script(cnn).save(str(p("cnn_script.pt")))
    torch.jit.trace(mlp, torch.randn(1, 16)).save(str(p("mlp_traced.pt")))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.export.save(torch.export.export(mlp, (torch.randn(2, 16),)), str(p("mlp_export.pt2")))
        torch.onnx.export(mlp, (torch.randn(1, 16),), str(p("mlp.onnx")), dynamo=False)
        torch.onnx.export(cnn, (torch.randn(1, 1, 8, 8),), str(p("cnn.onnx")), dynamo=False)

    x = rng.normal(size=(120, 6))
    y = (x[:, 0] + x[:, 1] > 0).astype(int) + (x[:, 2] > 1).astype(int)
    fits = {
        "logreg": LogisticRegression(max_iter=300).fit(x, y),
        "pipeline": make_pipeline(StandardScaler(), LogisticRegression(max_iter=300)).fit(x, y),
        "forest": RandomForestClassifier(5, random_state=np.random.RandomState(0)).fit(x, y),
        "hgb": HistGradientBoostingClassifier(max_iter=5).fit(x, y),
        "knn": KNeighborsClassifier().fit(x, y),
        "svc": SVC(probability=True, random_state=0).fit(x, y),
        "tree": DecisionTreeClassifier().fit(x, y),
        "mlp": MLPClassifier((8,), max_iter=50).fit(x, y),
        "gnb": GaussianNB().fit(x, y),
        "kmeans": KMeans(3, n_init=2, random_state=0).fit(x),
        "pca": PCA(3).fit(x),
    }
    cats = np.array([["a", 1.0], ["b", 2.0], ["a", 3.0], ["c", 0.5]] * 10, dtype=object)
    fits["columns"] = make_pipeline(
        ColumnTransformer(
            [("cat", OneHotEncoder(handle_unknown="ignore"), [0]), ("num", StandardScaler(), [1])]
        ),
        LogisticRegression(),
    ).fit(cats, [0, 1, 0, 1] * 10)
    docs = ["the cat sat", "the dog ran", "a cat ran", "dogs and cats"] * 5
    fits["text"] = make_pipeline(TfidfVectorizer(), MultinomialNB()).fit(docs, [0, 1, 0, 1] * 5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, (name, est) in enumerate(fits.items()):
            with p(f"sk_{name}.pkl").open("wb") as f:
                pickle.dump(est, f, protocol=(2, 4, 5)[i % 3])
        compress = [0, 3, ("gzip", 3), ("bz2", 3), ("xz", 3), ("lzma", 3)]
        for i, (name, est) in enumerate(fits.items()):
            joblib.dump(est, p(f"sk_{name}.joblib"), compress=compress[i % len(compress)])

    np.save(p("floats.npy"), rng.normal(size=(10, 4)).astype(np.float32))
    np.save(p("ints.npy"), np.arange(100, dtype=np.int64).reshape(10, 10))
    np.save(p("structured.npy"), np.zeros(4, dtype=[("a", "<f4"), ("b", "<i8")]))
    np.savez(p("arrays.npz"), x=rng.normal(size=(5, 3)), y=np.arange(5))
    np.savez_compressed(p("arrays_compressed.npz"), x=rng.normal(size=(50, 3)), y=np.arange(50))

    from safetensors.numpy import save_file as np_save_file
    from safetensors.torch import save_file as torch_save_file

    torch_save_file(cnn.state_dict(), str(p("cnn.safetensors")))
    np_save_file(
        {"a": np.ones((3, 3), np.float32), "b": np.arange(4, dtype=np.int64)},
        str(p("arrays.safetensors")),
    )
    if _has_gguf():
        template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        p("llama.gguf").write_bytes(_gguf_file(root / "tmp.gguf", template))
    return paths
