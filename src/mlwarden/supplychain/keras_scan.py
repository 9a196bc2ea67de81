"""Keras files: find Python code in the model configuration without loading the model.

A Keras ``Lambda`` layer stores its function as marshalled bytecode (Keras 2: a list
``[base64 code, defaults, closure]`` with ``function_type: "lambda"``; Keras 3: a
``{"class_name": "__lambda__", "config": {"code": ...}}`` object) that runs when the
model is loaded with ``safe_mode`` off, and a config can name classes and functions from
any module (Keras 3 ``"module"``/``"registered_name"`` keys; older Keras 3 releases
imported any module named there). A registered custom object (``"mypkg>Scale"`` as a
class name, registered name, function name or loss/metric name) is resolved from user
code. A ``TorchModuleWrapper`` carries a pickled torch module (base64 ``torch.save``
bytes, loaded with ``torch.load(weights_only=False)``): it is scanned as a file of its
own. Keras' own non-modeling API (``keras.utils.get_file``,
``keras.config.enable_unsafe_deserialization``, ``keras.models.load_model``, ...) named
in a config downloads or loads files or turns safe mode off; Keras refuses these since
3.11, older releases do not. HDF5 (``.h5``) files keep the config in the root attributes
``model_config`` and ``training_config`` (optimizer, loss and metrics, deserialized by
``compile``); ``.keras`` zips keep both in ``config.json``.
"""

from __future__ import annotations

import base64
import io
import json
import re
from typing import IO, Any

from mlwarden.core.severity import Severity
from mlwarden.supplychain.policy import DEFAULT_POLICY, Verdict
from mlwarden.supplychain.results import Sink
from mlwarden.supplychain.stream import Truncated

#: Module prefixes spelling Keras itself (Keras 2 in TensorFlow, tf_keras, Keras 3).
KERAS_MODULES = ("keras", "tf_keras", "tensorflow.keras", "tensorflow.python.keras", "keras_core")
#: Keras-family packages Keras 3 itself imports by name when deserializing (only their
#: KerasSaveable classes); treated as Keras.
KERAS_FAMILY = ("keras_hub", "keras_nlp", "keras_cv")

#: Keras API that is not a modeling object (Keras 3.11+ ``NON_MODELING_APIS``, plus the
#: same functions under their ``keras.src`` paths): it downloads, reads or writes files,
#: (de)serializes other models, or switches ``safe_mode`` off.
KERAS_NON_MODELING = frozenset(
    {
        "keras.backend.clear_session",
        "keras.config.enable_unsafe_deserialization",
        "keras.models.load_model",
        "keras.models.model_from_json",
        "keras.models.save_model",
        "keras.preprocessing.image_dataset_from_directory",
        "keras.preprocessing.image.load_img",
        "keras.preprocessing.image.save_img",
        "keras.preprocessing.text_dataset_from_directory",
        "keras.saving.deserialize_keras_object",
        "keras.saving.load_model",
        "keras.saving.load_weights",
        "keras.saving.register_keras_serializable",
        "keras.saving.save_model",
        "keras.saving.save_weights",
        "keras.saving.serialize_keras_object",
        "keras.utils.audio_dataset_from_directory",
        "keras.utils.clear_session",
        "keras.utils.deserialize_keras_object",
        "keras.utils.get_file",
        "keras.utils.image_dataset_from_directory",
        "keras.utils.load_img",
        "keras.utils.register_keras_serializable",
        "keras.utils.save_img",
        "keras.utils.serialize_keras_object",
        "keras.utils.text_dataset_from_directory",
    }
)
#: Namespaces holding no modeling functions: any lower-case (function) name under them is
#: treated like :data:`KERAS_NON_MODELING` (classes there, e.g. ``keras.utils.FeatureSpace``,
#: are left alone).
_NON_MODELING_NS = re.compile(
    r"keras\.(?:src\.)?(?:utils|saving|config|backend\.config|datasets|callbacks|export|"
    r"preprocessing|legacy\.saving|backend\.common\.global_state)(?:\.|$)"
    r"|keras\.(?:src\.)?models(?:\.(?:model|cloning))?$"
)
#: A registered custom object's name: ``package>name``.
_REGISTERED = re.compile(r"[A-Za-z0-9_.\-]+>[A-Za-z0-9_.\-]+")


def looks_like_keras(doc: Any) -> bool:
    """A Keras model/layer config: ``{"class_name": ..., "config": {...}}``."""
    return isinstance(doc, dict) and "class_name" in doc and isinstance(doc.get("config"), dict)


def looks_like_training_config(doc: Any) -> bool:
    """A Keras ``training_config``/``compile_config``: optimizer, loss and metrics."""
    return (
        isinstance(doc, dict)
        and ("optimizer_config" in doc or "optimizer" in doc)
        and ("loss" in doc or "metrics" in doc)
    )


def check_keras_config(doc: Any, sink: Sink, *, training: bool = False) -> None:
    """Walk a Keras config and report Lambda code, foreign modules and custom objects.

    ``training``: the document is a ``training_config`` (as is any ``compile_config``
    inside it), where a loss or metric is also named by a bare string
    (``"loss": "mypkg>my_loss"``).
    """
    stack: list[tuple[Any, str, bool]] = [(doc, "", training)]
    seen = 0
    while stack:
        node, where, training = stack.pop()
        seen += 1
        if seen > 1_000_000:
            sink.add("MLW-SCN-010", Severity.HIGH, "Keras config too large to walk")
            return
        if isinstance(node, list):
            stack.extend((v, where, training) for v in node)
            continue
        if training and isinstance(node, str) and _REGISTERED.fullmatch(node):
            _custom(node, sink)
            continue
        if not isinstance(node, dict):
            continue
        cls = node.get("class_name")
        raw_cfg = node.get("config")
        cfg: dict[str, Any] = raw_cfg if isinstance(raw_cfg, dict) else {}
        name = cfg.get("name", where)
        if cls == "Lambda":
            _lambda(cfg, str(name), sink)
        elif cls == "TorchModuleWrapper":
            _torch_module(cfg, str(name), sink)
        elif cls == "__lambda__":
            sink.add(
                "MLW-SCN-005",
                Severity.CRITICAL,
                f"{where or 'config'} holds a serialized Python lambda (marshalled bytecode)",
            )
        # what Keras resolves: a class by its class_name, a function by its config string
        target = raw_cfg if cls == "function" and isinstance(raw_cfg, str) else cls
        mod = node.get("module")
        if isinstance(mod, str) and isinstance(target, str) and cls != "__lambda__":
            what = f"function {target!r}" if cls == "function" else f"{cls} {name!r}"
            _reference(mod, target, what, sink)
        for key in (cls, node.get("registered_name"), target):
            if isinstance(key, str) and ">" in key:
                _custom(key, sink)
        stack.extend(
            (v, str(name), training or k == "compile_config")
            for k, v in node.items()
            if isinstance(v, dict | list) or (training and isinstance(v, str))
        )


def _custom(key: str, sink: Sink) -> None:
    sink.add(
        "MLW-SCN-006",
        Severity.HIGH,
        f"custom object {key!r} is resolved from user code when the model loads",
    )


def _lambda(cfg: dict[str, Any], name: str, sink: Sink) -> None:
    fn = cfg.get("function")
    ftype = cfg.get("function_type")
    if _keras_builtin_function(fn):
        # Keras 3 ``Lambda(keras.ops.relu)``: Keras resolves the plain name among its own
        # activations, losses, ... (or objects the user registers); the walk still checks
        # the reference (non-modeling API, unsafe builtins such as exec or exit)
        return
    if (
        ftype == "lambda"
        or isinstance(fn, list)
        or (isinstance(fn, dict) and fn.get("class_name") == "__lambda__")
    ):
        sink.add(
            "MLW-SCN-005",
            Severity.CRITICAL,
            f"Lambda layer {name!r} stores marshalled Python bytecode that runs when loaded",
        )
    else:
        module = cfg.get("module") or (fn.get("module") if isinstance(fn, dict) else None)
        sink.add(
            "MLW-SCN-005",
            Severity.CRITICAL,
            f"Lambda layer {name!r} calls Python function {fn!r:.80} "
            f"from module {module!r} when the model runs",
        )


def _keras_builtin_function(fn: Any) -> bool:
    """A Keras 3 function reference to Keras' own namespace or a plain built-in name."""
    if not (isinstance(fn, dict) and fn.get("class_name") == "function"):
        return False
    module, target = fn.get("module"), fn.get("config")
    return (
        isinstance(module, str)
        and isinstance(target, str)
        and ">" not in target
        and (module == "builtins" or _keras_path(module) is not None)
    )


def _torch_module(cfg: dict[str, Any], name: str, sink: Sink) -> None:
    """A TorchModuleWrapper keeps its module as ``torch.save`` bytes, base64 in the config,
    that Keras gives to ``torch.load(weights_only=False)``: scanned as a file of its own."""
    raw = cfg.get("module")
    if not isinstance(raw, str):
        return  # not a serialized module (Keras rebuilds nothing from the config)
    try:
        data = base64.b64decode(raw.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        sink.add(
            "MLW-SCN-004",
            Severity.HIGH,
            f"TorchModuleWrapper {name!r}: its pickled module is not valid base64",
        )
        return
    if sink.on_nested is None:
        sink.add(
            "MLW-SCN-001",
            Severity.CRITICAL,
            f"TorchModuleWrapper {name!r} holds a pickled torch module (torch.load with "
            "weights_only=False) that could not be scanned",
        )
        return
    from mlwarden.supplychain.stream import Source

    outer = sink.member
    sink.member = f"{outer + '!' if outer else ''}{name}"
    try:
        sink.on_nested(Source(io.BytesIO(data), len(data)), len(data), 0)
    finally:
        sink.member = outer


def _keras_path(module: str) -> str | None:
    """``module`` as a ``keras.*`` path when it spells Keras, else None."""
    for prefix in KERAS_MODULES:
        if module == prefix or module.startswith(prefix + "."):
            return "keras" + module[len(prefix) :]
    return None


def _reference(module: str, target: str, what: str, sink: Sink) -> None:
    """A class or function the config names by module: Keras' own, builtins, or foreign."""
    keras_path = _keras_path(module)
    if keras_path is not None:
        api = f"{keras_path}.{target}"
        if api in KERAS_NON_MODELING or (
            target[:1].islower() and _NON_MODELING_NS.match(keras_path)
        ):
            sink.add(
                "MLW-SCN-001",
                Severity.CRITICAL,
                f"{what} names Keras API {api}, which is not a modeling object (it reads, "
                "downloads or writes files, loads other models or turns safe_mode off); "
                "Keras before 3.11 calls it while loading",
                global_=api,
            )
        return
    if any(module == m or module.startswith(m + ".") for m in KERAS_FAMILY):
        return
    c = DEFAULT_POLICY.classify(module, target)
    if c.verdict is Verdict.UNSAFE:
        sink.add(
            "MLW-SCN-001",
            Severity.CRITICAL,
            f"{what} names {c.full}: {c.reason}",
            global_=c.full,
        )
    elif module != "builtins":
        # builtins: Keras resolves plain function names among its own activations,
        # losses and metrics (or registered objects), never Python's builtins
        sink.add(
            "MLW-SCN-006",
            Severity.HIGH,
            f"{what} comes from module {module!r}, outside Keras; loading imports it",
            global_=module,
        )


def scan_h5(f: IO[bytes], sink: Sink) -> str:
    """Keras HDF5: read the root ``model_config`` and ``training_config`` (no layers built)."""
    import h5py

    try:
        h5 = h5py.File(f, "r")
    except (OSError, ValueError) as exc:
        raise Truncated(f"HDF5 file unreadable ({exc})") from None
    with h5:
        found = False
        for attr in ("model_config", "training_config"):
            raw = h5.attrs.get(attr)
            if raw is None:
                continue
            found = True
            if isinstance(raw, bytes):
                raw = raw.decode("utf-8", "replace")
            try:
                doc = json.loads(str(raw))
            except (ValueError, RecursionError):
                sink.add(
                    "MLW-SCN-006",
                    Severity.HIGH,
                    f"{attr} attribute is not valid JSON (or nested too deeply to read)",
                )
                continue
            check_keras_config(doc, sink, training=attr == "training_config")
    return "keras-h5" if found else "hdf5"
