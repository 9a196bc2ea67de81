"""MLflow's ``MLmodel`` file (MLW-SCN-028): the YAML that tells ``mlflow.pyfunc.load_model``
and each flavour's ``load_model`` what to import and run.

MLflow loads a model by importing the module named in ``flavors.python_function.
loader_module`` (its flavours are ``mlflow.<flavour>``; any other name is code the
model chose), after putting the model's ``code`` folder (``code_paths=`` when logged)
on ``sys.path``. A custom ``PythonModel`` travels as ``python_model.pkl``, written with
cloudpickle (its class and functions by value), and a "model from code" is a Python
file (``model_code_path``) that MLflow executes. Each is reported (high) with the file
it names; the pickles themselves are scanned on their own by the pickle machine. A
flavour that keeps its model as a pickle or cloudpickle (``serialization_format``,
``pickle_module_name``) is noted (medium: the pickle's own scan decides the verdict).
The YAML is parsed with ``yaml.safe_load``; nothing is imported.

Example::

    check_mlmodel(b"flavors:\\n  python_function:\\n    loader_module: evil\\n", sink)  # high
"""

from __future__ import annotations

from typing import Any

from mlwarden.core.severity import Severity
from mlwarden.supplychain.results import Sink

RULE = "MLW-SCN-028"
#: MLflow's own loader modules (every flavour lives under ``mlflow.``)
OWN = "mlflow."
#: pickle modules MLflow's pytorch flavour writes with by default
OWN_PICKLE_MODULES = ("mlflow.pytorch.pickle_module", "cloudpickle", "pickle")


def looks_like_mlmodel(data: bytes) -> bool:
    """Cheap pre-check before parsing: an ``MLmodel`` names ``flavors`` at its top level."""
    return data.startswith(b"flavors:") or b"\nflavors:" in data


def check_mlmodel(data: bytes, sink: Sink) -> str | None:
    """Report the code an MLflow model runs when loaded; ``mlflow-mlmodel`` if it is one."""
    if not looks_like_mlmodel(data):
        return None
    import yaml

    try:
        doc = yaml.safe_load(data.decode("utf-8", "replace"))
    except (yaml.YAMLError, RecursionError, ValueError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("flavors"), dict):
        return None
    for flavour, conf in list(doc["flavors"].items())[:64]:
        if isinstance(conf, dict):
            _check_flavour(str(flavour), conf, sink)
    return "mlflow-mlmodel"


def _check_flavour(flavour: str, conf: dict[str, Any], sink: Sink) -> None:
    where = f"MLmodel flavour {flavour!r}"
    code = conf.get("code")
    if code:
        _high(
            sink,
            f"{where} puts the model's own Python folder {code!r} on sys.path before "
            "loading (code_paths): its modules run when the loader imports them",
            str(code),
        )
    if flavour == "python_function":
        _check_pyfunc(where, conf, sink)
    fmt = conf.get("serialization_format")
    if isinstance(fmt, str) and fmt.lower() in ("pickle", "cloudpickle"):
        target = conf.get("pickled_model") or conf.get("model_path") or "its model file"
        sink.add(
            RULE,
            Severity.MEDIUM,
            f"{where} loads {target!r} with {fmt} (what it imports "
            "is in that file's own scan); skops or ONNX cannot run code",
            global_=fmt,
        )
    module = conf.get("pickle_module_name")
    if isinstance(module, str) and module not in OWN_PICKLE_MODULES:
        _high(
            sink,
            f"{where} unpickles its model with the module {module!r}, which MLflow "
            "imports by name (not one of MLflow's or the standard pickle modules)",
            module,
        )


def _check_pyfunc(where: str, conf: dict[str, Any], sink: Sink) -> None:
    loader = conf.get("loader_module")
    if isinstance(loader, str) and not loader.startswith(OWN):
        _high(
            sink,
            f"{where} names the loader module {loader!r}: mlflow.pyfunc.load_model "
            "imports it and calls its _load_pyfunc (not one of MLflow's flavours)",
            loader,
        )
    elif loader is not None and not isinstance(loader, str):
        _high(sink, f"{where} has a loader_module that is not a module name ({loader!r:.80})")
    script = conf.get("model_code_path")
    if script:
        name = str(script).replace("\\", "/").rsplit("/", 1)[-1]
        _high(
            sink,
            f"{where} is a model from code: MLflow executes the shipped Python file "
            f"{name!r} when the model is loaded",
            name,
        )
    pickled = conf.get("python_model")
    if pickled:
        _high(
            sink,
            f"{where} unpickles the custom PythonModel {str(pickled)!r} with cloudpickle "
            "(its class and functions travel in the pickle by value)",
            str(pickled),
        )


def _high(sink: Sink, message: str, name: str | None = None) -> None:
    sink.add(RULE, Severity.HIGH, message, global_=name)
