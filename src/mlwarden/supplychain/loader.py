"""The one way mlwarden loads a model file: scan first, refuse unless safe, then load.

:func:`safe_load` scans the file; anything but a ``safe`` verdict raises
:class:`~mlwarden.core.errors.UnsafeArtifactError` and nothing is unpickled. A safe
file is then loaded by an unpickler that enforces the same allow-list again (a
second line of defence should the scanner and the unpickler ever disagree):

* raw pickle -> :class:`RestrictedUnpickler`;
* joblib (plain or compressed) -> joblib's own ``NumpyUnpickler`` with the same
  ``find_class`` restriction (joblib routes nested object arrays through it too);
* PyTorch zip / legacy -> ``torch.load(weights_only=True)``, PyTorch's own
  restricted unpickler;
* ``.npy``/``.npz`` -> ``numpy.load(allow_pickle=False)``; object arrays through
  :class:`RestrictedUnpickler`; safetensors -> ``safetensors.numpy.load_file``.

:func:`load_target` resolves a model spec (TorchScript, ``.pt2``, ONNX,
scikit-learn pickle/joblib, http(s) URL, or ``module:factory``) to a Target.

Example::

    clf = safe_load("model.joblib")            # UnsafeArtifactError if not safe
    target = load_target("model.onnx", access="score")
"""

from __future__ import annotations

import io
import pickle
import re
import sys
from pathlib import Path
from typing import IO, Any

from mlwarden.core.errors import InputFileError, UnsafeArtifactError, UserError
from mlwarden.supplychain.policy import DEFAULT_POLICY, Policy
from mlwarden.supplychain.results import FileResult
from mlwarden.supplychain.scanner import scan_file
from mlwarden.supplychain.stream import Decompressed

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_FACTORY = re.compile(r"^([A-Za-z_][\w.]*|[^:]+\.py):([A-Za-z_]\w*)$")


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that imports only names the policy marks safe."""

    def __init__(self, file: IO[bytes], policy: Policy | None = None, **kw: Any) -> None:
        super().__init__(file, **kw)
        self.policy = policy or DEFAULT_POLICY
        self._imported: dict[int, tuple[Any, str, str]] = {}  # id -> (object, module, name)

    def find_class(self, module: str, name: str) -> Any:
        c = self.policy.classify(module, name)
        if c.full == "torch.storage._load_from_bytes":
            return _load_tensor_bytes
        if c.full == "builtins.getattr":
            return self._getattr  # only names the policy allows, as the scanner resolves them
        if c.verdict.value != "safe":
            raise UnsafeArtifactError(f"refused to import {c.full} while loading ({c.reason})")
        obj = super().find_class(module, name)
        self._imported[id(obj)] = (obj, module, name)
        return obj

    def _getattr(self, obj: Any, attr: Any) -> Any:
        """``getattr`` restricted to ``<imported allowed name>.<attr>`` that is allowed too."""
        known = self._imported.get(id(obj))
        if known is None or known[0] is not obj or not isinstance(attr, str):
            raise UnsafeArtifactError("refused getattr on a value that is not an allowed import")
        _, module, name = known
        c = self.policy.classify(module, f"{name}.{attr}")
        if c.verdict.value != "safe":
            raise UnsafeArtifactError(f"refused getattr of {c.full} while loading ({c.reason})")
        value = getattr(obj, attr)
        self._imported[id(value)] = (value, module, f"{name}.{attr}")
        return value

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeArtifactError("refused a persistent id (the file is not a plain pickle)")


def _load_tensor_bytes(data: bytes) -> Any:
    """Stand-in for ``torch.storage._load_from_bytes`` (which trusts its bytes)."""
    import torch

    return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


def check_safe(path: str | Path, policy: Policy | None = None) -> FileResult:
    """Scan ``path`` and raise UnsafeArtifactError unless its verdict is safe."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(path, "no such file")
    result = scan_file(path, policy)  # a pipe, device or folder comes back as an error
    if result.verdict.value != "safe":
        worst = sorted(result.findings, key=lambda i: -i.severity.rank)
        why = worst[0].message if worst else (result.error or "not safe")
        why = _CONTROL.sub(lambda m: repr(m.group())[1:-1], why)  # names from the file: one line
        raise UnsafeArtifactError(
            f"{path}: refused to load: scan verdict {result.verdict.value} ({why}); "
            f"run 'mlwarden scan {path}' for details"
        )
    return result


def safe_load(path: str | Path, policy: Policy | None = None) -> Any:
    """Scan, refuse unless safe, then load with a restricted loader. See module docs."""
    path = Path(path)
    result = check_safe(path, policy)
    fmt = result.format
    try:
        if fmt.startswith("joblib"):
            return _load_joblib(path, policy)
        if fmt in ("pytorch-zip", "pytorch-legacy", "pytorch-legacy-tar"):
            import torch

            return torch.load(path, weights_only=True, map_location="cpu")
        if fmt.startswith("pickle"):
            with _open_maybe_compressed(path, fmt) as f:
                return RestrictedUnpickler(f, policy).load()
        if fmt in ("npy", "npz"):
            import numpy as np

            return np.load(path, allow_pickle=False)
        if fmt == "npy-object":
            return _load_object_npy(path, policy)
        if fmt == "safetensors":
            from safetensors.numpy import load_file

            return load_file(str(path))
        if fmt == "onnx":
            import onnx

            return onnx.load(str(path), load_external_data=False)
    except (UnsafeArtifactError, InputFileError):
        raise
    except Exception as exc:
        raise InputFileError(path, f"passed the scan but failed to load as {fmt} ({exc})") from None
    raise InputFileError(
        path,
        f"format {fmt!r} cannot be loaded as an object; use load_target() for TorchScript, "
        ".pt2 and ONNX models",
    )


def _open_maybe_compressed(path: Path, fmt: str) -> IO[bytes]:
    kind = fmt.partition("+")[2]
    f = path.open("rb")
    if not kind:
        return f
    return io.BufferedReader(Decompressed(f, kind, 1 << 40))  # type: ignore[arg-type]


def _load_joblib(path: Path, policy: Policy | None) -> Any:
    from joblib.numpy_pickle import NumpyUnpickler
    from joblib.numpy_pickle_utils import _validate_fileobject_and_memmap

    pol = policy or DEFAULT_POLICY

    class _Restricted(NumpyUnpickler):  # type: ignore[misc]
        def find_class(self, module: str, name: str) -> Any:
            c = pol.classify(module, name)
            if c.verdict.value != "safe":
                raise UnsafeArtifactError(f"refused to import {c.full} while loading ({c.reason})")
            return super().find_class(module, name)

        def persistent_load(self, pid: Any) -> Any:
            raise UnsafeArtifactError("refused a persistent id in a joblib file")

    with open(path, "rb") as f, _validate_fileobject_and_memmap(f, str(path), None) as (fobj, _):
        if isinstance(fobj, str):
            raise InputFileError(path, "joblib file from joblib < 0.10 is not supported")
        return _Restricted(str(path), fobj, True).load()


def _load_object_npy(path: Path, policy: Policy | None) -> Any:
    import numpy.lib.format as npf

    with open(path, "rb") as f:
        version = npf.read_magic(f)
        if version == (1, 0):
            npf.read_array_header_1_0(f)
        else:
            npf.read_array_header_2_0(f)
        return RestrictedUnpickler(f, policy).load()


def load_target(spec: str, access: str | None = None, **kw: Any) -> Any:
    """Resolve a MODEL spec to a :class:`~mlwarden.core.target.BaseTarget`.

    ``spec`` is a TorchScript archive, a ``torch.export`` ``.pt2`` program, an ONNX
    file, a scikit-learn pickle/joblib file (each scanned first and refused unless
    safe), an ``http(s)://`` URL, a ``*.target.yaml`` file describing
    a deployed API (:mod:`mlwarden.core.target_file`), or ``module:factory`` / ``path/to/file.py:factory``
    naming a function that returns a torch module, estimator, callable or Target.
    ``access`` is ``white``, ``score`` or ``label``; other keywords go to the adapter.
    """
    from mlwarden.core import target as tg

    if access is not None:
        kw["access"] = access
    from mlwarden.core import api_flags
    from mlwarden.core.target_file import is_target_file, load_api_url, load_target_file

    if spec.startswith(("http://", "https://")):
        if api_flags.current():  # --api-* flags describe this API's shape
            return load_api_url(spec, **kw)
        return tg.HttpTarget(spec, **kw)

    if is_target_file(spec):  # a deployed API described once; see core.target_file
        return load_target_file(spec, **kw)
    if api_flags.current():
        raise UserError(
            f"the --api-* flags describe a deployed API; model {spec!r} is not an http(s) "
            "URL or a NAME.target.yaml file"
        )
    path = Path(spec)
    if path.is_dir():
        if (path / "config.json").is_file():
            return _hf_folder(path, kw)
        raise InputFileError(
            path, "is a folder; give the model file itself (or a Hugging Face folder)"
        )
    if path.exists():  # a pipe or device too: the scan refuses it with its reason
        result = check_safe(path)
        fmt = result.format
        if fmt == "torchscript":
            return tg.TorchScriptTarget(path, **kw)
        if fmt == "torch-export":
            return tg.ExportedProgramTarget(path, **kw)
        if fmt == "onnx":
            return tg.OnnxTarget(path, **kw)
        if fmt.startswith(("joblib", "pickle")) or fmt == "skops":
            obj = _load_skops(path) if fmt == "skops" else safe_load(path)
            kw.setdefault("name", path.name)
            return _wrap(obj, kw)
        if fmt.startswith("pytorch"):
            raise InputFileError(
                path,
                "is a PyTorch checkpoint (weights only, no architecture); give the model "
                "as TorchScript, a torch.export .pt2 file, ONNX, or 'module:factory' that "
                "builds the module and loads these weights",
            )
        raise InputFileError(path, f"format {fmt!r} is not a model this tool can run")
    m = _FACTORY.match(spec)
    if m:
        return _from_factory(m.group(1), m.group(2), kw)
    raise UserError(
        f"model {spec!r} not found; expected a model file (TorchScript, .pt2, ONNX, "
        "scikit-learn pickle/joblib), an http(s) URL, or 'module:factory'"
    )


def _wrap(obj: Any, kw: dict[str, Any]) -> Any:
    """A loaded model as a Target of the modality it takes (text pipelines take strings)."""
    from mlwarden.core import target as tg
    from mlwarden.core.modality import detect_model

    spec = detect_model(obj)
    if spec is not None and spec.name == "text":
        from mlwarden.core.text_target import as_text_target

        return as_text_target(obj, **kw)
    return tg.as_target(obj, **kw)


def _load_skops(path: Path) -> Any:
    """A ``.skops`` file the scanner passed, loaded trusting only the types our policy
    marks safe (skops refuses anything else)."""
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:
        raise InputFileError(
            path, f"passed the scan but is not a readable skops file ({exc})"
        ) from None
    for full in untrusted:
        module, _, name = full.rpartition(".")
        c = DEFAULT_POLICY.classify(module, name)
        if c.verdict.value != "safe":
            raise UnsafeArtifactError(f"{path}: refused to load: skops type {full} ({c.reason})")
    try:
        return sio.load(path, trusted=untrusted)
    except Exception as exc:
        raise InputFileError(path, f"passed the scan but failed to load as skops ({exc})") from None


def _hf_folder(path: Path, kw: dict[str, Any]) -> Any:
    """A Hugging Face text classifier folder: every file scanned first and safe, weights as
    safetensors, no custom code; then loaded offline (:class:`HFTextTarget`)."""
    from mlwarden.supplychain.scanner import scan_paths

    result = scan_paths([path])
    bad = [f for f in result.files if f.verdict.value != "safe"]
    if bad:
        worst = bad[0]
        why = worst.findings[0].message if worst.findings else (worst.error or "not safe")
        why = _CONTROL.sub(lambda m: repr(m.group())[1:-1], why)
        raise UnsafeArtifactError(
            f"{path}: refused to load: {worst.path} scanned {worst.verdict.value} ({why}); "
            f"run 'mlwarden scan {path}' for details"
        )
    if not any(path.glob("*.safetensors")):
        raise InputFileError(
            path, "has no .safetensors weights; only safetensors are loaded from a folder"
        )
    from mlwarden.core.text_target import HFTextTarget

    return HFTextTarget(path, **kw)


def _from_factory(module_name: str, attr: str, kw: dict[str, Any]) -> Any:
    import importlib
    import importlib.util

    from mlwarden.core import target as tg

    try:
        if module_name.endswith(".py"):
            file = Path(module_name)
            if not file.is_file():
                raise UserError(f"{module_name}: no such file for 'file.py:factory'")
            spec = importlib.util.spec_from_file_location(file.stem, file)
            if spec is None or spec.loader is None:
                raise UserError(f"{module_name}: cannot import this file")
            module = importlib.util.module_from_spec(spec)
            sys.modules.setdefault(file.stem, module)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"cannot import module {module_name!r} ({exc})") from None
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise UserError(f"{module_name} has no callable {attr!r}")
    try:
        obj = factory()
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise UserError(f"{module_name}:{attr}() failed: {type(exc).__name__}: {first}") from exc
    kw.setdefault("name", f"{module_name}:{attr}")
    if isinstance(obj, tg.BaseTarget):
        if "access" in kw and kw["access"] != obj.access:
            raise UserError(
                f"{module_name}:{attr} returned a target with {obj.access} access; "
                f"asked for {kw['access']}"
            )
        return obj
    return _wrap(obj, kw)
