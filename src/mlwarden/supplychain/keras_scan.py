"""Keras files: find Python code in the model configuration without loading the model.

A Keras ``Lambda`` layer stores its function as marshalled bytecode (Keras 2: a list
``[base64 code, defaults, closure]`` with ``function_type: "lambda"``; Keras 3: a
``{"class_name": "__lambda__", "config": {"code": ...}}`` object) that runs when the
model is loaded with ``safe_mode`` off, and a config can name classes from any module
(Keras 3 ``"module"``/``"registered_name"`` keys) that Keras then imports. HDF5
(``.h5``) files keep the config in the root attribute ``model_config``; ``.keras``
zips keep it in ``config.json``.
"""

from __future__ import annotations

import json
from typing import IO, Any

from mlwarden.core.findings import Severity
from mlwarden.supplychain.results import Sink

KERAS_MODULES = ("keras", "tf_keras", "tensorflow.keras", "tensorflow.python.keras", "keras_core")


def looks_like_keras(doc: Any) -> bool:
    """A Keras model/layer config: ``{"class_name": ..., "config": {...}}``."""
    return isinstance(doc, dict) and "class_name" in doc and isinstance(doc.get("config"), dict)


def check_keras_config(doc: Any, sink: Sink) -> None:
    """Walk a Keras config and report Lambda code and foreign modules."""
    stack: list[tuple[Any, str]] = [(doc, "")]
    seen = 0
    while stack:
        node, where = stack.pop()
        seen += 1
        if seen > 1_000_000:
            sink.add("MLW-SCN-010", Severity.HIGH, "Keras config too large to walk")
            return
        if isinstance(node, list):
            stack.extend((v, where) for v in node)
            continue
        if not isinstance(node, dict):
            continue
        cls = node.get("class_name")
        raw_cfg = node.get("config")
        cfg: dict[str, Any] = raw_cfg if isinstance(raw_cfg, dict) else {}
        name = cfg.get("name", where) if isinstance(cfg, dict) else where
        if cls == "Lambda":
            _lambda(cfg, str(name), sink)
        elif cls == "__lambda__":
            sink.add(
                "MLW-SCN-005",
                Severity.CRITICAL,
                f"{where or 'config'} holds a serialized Python lambda (marshalled bytecode)",
            )
        if cls == "function" and isinstance(cfg, dict):
            _foreign(node.get("module"), f"function {cfg!r:.80}", sink)
        mod = node.get("module")
        if isinstance(mod, str) and cls not in ("__lambda__",):
            _foreign(mod, f"{cls} {name!r}", sink)
        reg = node.get("registered_name")
        if isinstance(reg, str) and ">" in reg:
            sink.add(
                "MLW-SCN-006",
                Severity.HIGH,
                f"custom object {reg!r} is resolved from user code when the model loads",
            )
        stack.extend((v, str(name)) for v in node.values() if isinstance(v, dict | list))


def _lambda(cfg: dict[str, Any], name: str, sink: Sink) -> None:
    fn = cfg.get("function")
    ftype = cfg.get("function_type")
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


def _foreign(module: Any, what: str, sink: Sink) -> None:
    if not isinstance(module, str):
        return
    if module == "builtins" or any(
        module == m or module.startswith(m + ".") for m in KERAS_MODULES
    ):
        return
    sink.add(
        "MLW-SCN-006",
        Severity.HIGH,
        f"{what} comes from module {module!r}, outside Keras; loading imports it",
        global_=module,
    )


def scan_h5(f: IO[bytes], sink: Sink) -> str:
    """Keras HDF5: read ``model_config`` from the root attributes (no layers are built)."""
    import h5py

    try:
        h5 = h5py.File(f, "r")
    except (OSError, ValueError) as exc:
        raise ValueError(f"HDF5 file unreadable ({exc})") from None
    with h5:
        raw = h5.attrs.get("model_config")
        if raw is None:
            return "hdf5"
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8", "replace")
        try:
            doc = json.loads(str(raw))
        except ValueError:
            sink.add("MLW-SCN-006", Severity.HIGH, "model_config attribute is not valid JSON")
            return "keras-h5"
        check_keras_config(doc, sink)
    return "keras-h5"
