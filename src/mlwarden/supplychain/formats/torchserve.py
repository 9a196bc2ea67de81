"""TorchServe model archives (``.mar``: a zip or tar with ``MAR-INF/MANIFEST.json``),
recognised by their manifest (MLW-SCN-025).

TorchServe imports the archive's handler module inside the server process when the
model is registered, and with ``install_py_dep_per_model`` it pip-installs the
archive's ``requirements.txt``: both run code from the archive. A handler of
TorchServe's own (``image_classifier``, ``text_classifier``...) is fine; a handler file
shipped in the archive, or requirements, is reported (high), naming the file.
"""

from __future__ import annotations

from typing import Any

from mlwarden.core.severity import Severity
from mlwarden.supplychain.results import Sink

RULE = "MLW-SCN-025"
BUILTIN = frozenset(
    [
        "image_classifier",
        "image_segmenter",
        "object_detector",
        "text_classifier",
        "text_classification",
        "dense_text_classifier",
    ]
)


def looks_like_manifest(doc: Any) -> bool:
    """A TorchServe ``MANIFEST.json``: ``model.handler`` beside ``runtime`` or ``archiverVersion``."""
    return (
        isinstance(doc, dict)
        and isinstance(doc.get("model"), dict)
        and "handler" in doc["model"]
        and ("archiverVersion" in doc or "runtime" in doc)
    )


def check_manifest(doc: dict[str, Any], sink: Sink) -> str:
    """Report the code a TorchServe archive runs when the server registers it.

    Example::

        check_manifest({"runtime": "python", "model": {"handler": "h.py"}}, sink)  # high
    """
    model = doc["model"]
    handler = str(model.get("handler") or "")
    module = handler.split(":", 1)[0]
    if module and module not in BUILTIN and not module.startswith("ts.torch_handler."):
        sink.add(
            RULE,
            Severity.HIGH,
            f"TorchServe runs the archive's handler {handler!r} (Python code shipped in the "
            "archive) inside the server when the model is registered",
        )
    for key in ("requirementsFile", "modelFile", "extensions"):
        value = model.get(key)
        if value:
            what = {
                "requirementsFile": "pip-installs the packages of",
                "modelFile": "imports the model definition",
                "extensions": "imports the extra module",
            }[key]
            sink.add(
                RULE,
                Severity.HIGH,
                f"TorchServe {what} {value!r} from the archive when the model is registered",
            )
    return "torchserve-manifest"
