"""Targets: what an attack or an audit sees of a model.

Every adapter implements the :class:`Target` protocol:

* ``access`` — ``"white"`` (gradients through :meth:`Target.torch_forward`),
  ``"score"`` (scores per class) or ``"label"`` (only the predicted class);
* ``predict(x)`` — a batch of inputs (numpy or torch) to a float32 array of shape
  ``(N, C)`` of scores, or an int64 array ``(N,)`` of labels for label access;
* ``queries`` — how many inputs have been sent so far; ``max_queries`` makes the
  target refuse to go over a budget (:class:`QueryBudgetExceeded`);
* ``output`` — what the scores are: ``"logits"``, ``"probabilities"`` or ``"labels"``.

Adapters: :class:`TorchTarget` (``nn.Module``), :class:`TorchScriptTarget`,
:class:`ExportedProgramTarget` (``torch.export`` ``.pt2``), :class:`SklearnTarget`,
:class:`OnnxTarget`, :class:`HttpTarget` and :class:`CallableTarget`.

Adapters that read a file do not scan it: load model files through
:func:`mlwarden.supplychain.load_target`, which scans first.

Example::

    target = TorchTarget(model)            # white-box, logits
    scores = target.predict(x)             # (N, C) float32
    target.queries                         # N
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch

from mlwarden.core.errors import InputFileError, UserError

Access = Literal["white", "score", "label"]
Output = Literal["logits", "probabilities", "labels"]
ACCESS_LEVELS: tuple[str, ...] = ("white", "score", "label")


class QueryBudgetExceeded(RuntimeError):
    """Raised when a target's ``max_queries`` would be exceeded."""


class TargetError(UserError):
    """A model that failed to answer (bad shape, server error, wrong output)."""


@runtime_checkable
class Target(Protocol):
    access: Access
    output: Output
    name: str
    queries: int
    max_queries: int | None

    def predict(self, x: np.ndarray | torch.Tensor) -> np.ndarray: ...

    def predict_labels(self, x: np.ndarray | torch.Tensor) -> np.ndarray: ...


class BaseTarget:
    """Shared batching, query counting and budget checks; subclasses implement ``_predict``."""

    access: Access = "score"
    output: Output = "probabilities"

    def __init__(
        self,
        *,
        access: Access | None = None,
        output: Output | None = None,
        batch_size: int = 256,
        max_queries: int | None = None,
        name: str = "model",
        num_classes: int | None = None,
        input_shape: Sequence[int] | None = None,
    ) -> None:
        if access is not None:
            if access not in ACCESS_LEVELS:
                raise UserError(f"access must be one of {', '.join(ACCESS_LEVELS)}; got {access!r}")
            self.access = access
        if output is not None:
            self.output = output
        if self.access == "label":
            self.output = "labels"
        if batch_size < 1:
            raise UserError(f"batch_size must be >= 1; got {batch_size}")
        self.batch_size = batch_size
        self.max_queries = max_queries
        self.queries = 0
        self.name = name
        self.num_classes = num_classes
        self.input_shape = tuple(input_shape) if input_shape is not None else None

    # -- public API ---------------------------------------------------------------
    def predict(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """Scores ``(N, C)`` float32, or labels ``(N,)`` int64 for label access."""
        arr = _as_numpy(x)
        if arr.ndim == 0:
            raise TargetError("predict() needs a batch of inputs, got a scalar")
        self._check_input_shape(arr)
        n = len(arr)
        self._spend(n)
        if n == 0:
            if self.access == "label":
                return np.zeros((0,), np.int64)
            return np.zeros((0, self.num_classes or 0), np.float32)
        outs = []
        for i in range(0, n, self.batch_size):
            batch = arr[i : i + self.batch_size]
            out_b = np.asarray(self._predict(batch))
            if out_b.ndim == 0 or len(out_b) != len(batch):
                rows = "a scalar" if out_b.ndim == 0 else f"{len(out_b)} rows"
                raise TargetError(f"{self.name} returned {rows} for a batch of {len(batch)} inputs")
            outs.append(out_b)
        out = np.concatenate(outs, axis=0)
        if self.access == "label":
            if out.ndim == 2:
                out = out.argmax(axis=1)
            return out.astype(np.int64)
        out = out.astype(np.float32, copy=False)
        if out.ndim == 1:
            raise TargetError(
                f"{self.name} returned labels but was declared with {self.access} access"
            )
        if self.num_classes is None:
            self.num_classes = out.shape[1]
        return out

    def predict_labels(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """Predicted class indices ``(N,)`` int64 (costs the same queries as :meth:`predict`)."""
        out = self.predict(x)
        return out.astype(np.int64) if out.ndim == 1 else out.argmax(axis=1).astype(np.int64)

    def _spend(self, n: int) -> None:
        """Count ``n`` queries, refusing to go over ``max_queries``."""
        if self.max_queries is not None and self.queries + n > self.max_queries:
            raise QueryBudgetExceeded(
                f"{self.name}: {n} more queries would exceed the budget of {self.max_queries} "
                f"({self.queries} used)"
            )
        self.queries += n

    def _check_input_shape(self, arr: np.ndarray) -> None:
        """A clear error (before any query is spent) when inputs do not fit a known shape."""
        if self.input_shape is None or arr.ndim < 1:
            return
        want = math.prod(self.input_shape)
        if arr.ndim < 2 or math.prod(arr.shape[1:]) != want:
            raise TargetError(
                f"{self.name} expects inputs of shape (N, {', '.join(map(str, self.input_shape))}); "
                f"got {tuple(arr.shape)}"
            )

    def reset_queries(self) -> None:
        self.queries = 0

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "adapter": type(self).__name__,
            "access": self.access,
            "output": self.output,
            "num_classes": self.num_classes,
        }

    # -- to implement ---------------------------------------------------------------
    def _predict(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class TorchTarget(BaseTarget):
    """A ``torch.nn.Module`` returning logits (or probabilities, with ``output=``).

    With ``access="white"`` (the default) attacks use :meth:`torch_forward`, which is
    differentiable and does not leave torch.
    """

    access: Access = "white"
    output: Output = "logits"

    def __init__(
        self, module: torch.nn.Module, *, device: str | torch.device = "cpu", **kw: Any
    ) -> None:
        kw.setdefault("name", type(module).__name__)
        super().__init__(**kw)
        self.device = torch.device(device)
        self.module = module.to(self.device)
        self._dtype_of: tuple[torch.nn.Module, torch.Tensor | None] | None = None
        # torch.export modules refuse .eval(); they were traced in eval mode already.
        with contextlib.suppress(NotImplementedError):
            self.module.eval()

    def torch_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable forward pass (counts queries and honours ``max_queries`` like
        :meth:`predict`)."""
        if self.access != "white":
            raise TargetError(f"{self.name} has {self.access} access; gradients are not available")
        self._spend(len(x))
        return self.module(x.to(self.device, self._dtype()))

    def _dtype(self) -> torch.dtype:
        """The dtype of the module's first floating-point parameter (float32 without one).

        The parameter is looked up once per module object (walking a TorchScript
        module's parameters cost ~5 us a predict; 4.6% of the served gateway's CPU samples in session 8) and
        its dtype read on every call: ``.double()``, ``.half()`` and ``.to(dtype)``
        convert parameters in place, so they are followed. A module whose parameters
        were swapped for new ones is not re-walked; a stale dtype then makes its
        layers refuse the input (a :class:`TargetError`), never a wrong answer.
        """
        module, found = self.module, self._dtype_of
        if found is None or found[0] is not module:
            first = next((p for p in module.parameters() if p.is_floating_point()), None)
            found = self._dtype_of = (module, first)
        return found[1].dtype if found[1] is not None else torch.float32

    def _forward_numpy(self, x: np.ndarray) -> Any:
        """The module on a numpy batch, with shape errors turned into a :class:`TargetError`."""
        batch = torch.from_numpy(np.ascontiguousarray(x)).to(self.device, self._dtype())
        try:
            with torch.no_grad():
                return self.module(batch)
        except (RuntimeError, ValueError, TypeError, IndexError, AssertionError) as exc:
            raise TargetError(
                f"{self.name} failed on inputs of shape {tuple(x.shape)}: {_first_line(exc)}"
            ) from None

    def _predict(self, x: np.ndarray) -> np.ndarray:
        out = self._forward_numpy(x)
        if not isinstance(out, torch.Tensor):
            raise TargetError(
                f"{self.name} returned {type(out).__name__}; expected a tensor of scores"
            )
        return out.detach().cpu().float().numpy()


class TorchScriptTarget(TorchTarget):
    """A TorchScript archive (``torch.jit.save``). Scan it first; see module docs."""

    def __init__(self, path: str | Path, **kw: Any) -> None:
        path = Path(path)
        try:
            if _utf8_path(path):
                module = torch.jit.load(str(path), map_location="cpu")
            else:  # torch's C++ loader takes only UTF-8 names: hand it the bytes
                with open(path, "rb") as fh:
                    module = torch.jit.load(fh, map_location="cpu")
        except Exception as exc:  # torch raises RuntimeError, ValueError, zip errors...
            raise InputFileError(
                path, f"not a loadable TorchScript archive ({_first_line(exc)})"
            ) from None
        kw.setdefault("name", path.name)
        super().__init__(module, **kw)
        self.path = path


class ExportedProgramTarget(TorchTarget):
    """A ``torch.export`` program saved as ``.pt2``. Scan it first; see module docs."""

    def __init__(self, path: str | Path, **kw: Any) -> None:
        path = Path(path)
        try:
            program = torch.export.load(str(path))
            module = program.module()
        except Exception as exc:
            raise InputFileError(
                path, f"not a loadable torch.export program ({_first_line(exc)})"
            ) from None
        kw.setdefault("name", path.name)
        example = _exported_input_shape(program)
        if (
            example is not None
            and "input_shape" not in kw
            and all(isinstance(d, int) for d in example[1:])
        ):
            kw["input_shape"] = example[1:]
        super().__init__(module, **kw)  # type: ignore[arg-type]
        self.path = path
        #: The batch size the program was exported with, when it is not dynamic.
        self.static_batch = (
            example[0] if example is not None and isinstance(example[0], int) else None
        )

    def _predict(self, x: np.ndarray) -> np.ndarray:
        if self.static_batch is None:
            return super()._predict(x)
        return _in_static_batches(super()._predict, x, self.static_batch)

    def torch_forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.static_batch is None or len(x) == self.static_batch:
            return super().torch_forward(x)
        if self.access != "white":
            raise TargetError(f"{self.name} has {self.access} access; gradients are not available")
        self._spend(len(x))  # padding rows are not queries
        dtype = self._dtype()
        parts = [
            self.module(chunk.to(self.device, dtype))
            for chunk in _padded_chunks_torch(x, self.static_batch)
        ]
        return torch.cat(parts)[: len(x)]


def _exported_input_shape(program: Any) -> tuple[Any, ...] | None:
    """Shape of the program's single user input (ints, or symbols for dynamic dims)."""
    try:
        names = list(program.graph_signature.user_inputs)
        if len(names) != 1:
            return None
        for node in program.graph.nodes:
            if node.op == "placeholder" and node.name == names[0]:
                val = node.meta.get("val")
                if val is None:
                    return None
                return tuple(int(d) if isinstance(d, int) else d for d in val.shape)
    except (AttributeError, TypeError):
        return None
    return None


def _in_static_batches(
    fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, size: int
) -> np.ndarray:
    """Run ``fn`` on chunks of exactly ``size`` rows (the last padded by repeating its
    final row) and drop the padding's outputs: models exported with a fixed batch."""
    outs = []
    for i in range(0, len(x), size):
        chunk = x[i : i + size]
        real = len(chunk)
        if real < size:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], size - real, axis=0)])
        outs.append(np.asarray(fn(chunk))[:real])
    return np.concatenate(outs, axis=0)


def _padded_chunks_torch(x: torch.Tensor, size: int) -> list[torch.Tensor]:
    chunks = []
    for i in range(0, len(x), size):
        chunk = x[i : i + size]
        if len(chunk) < size:
            chunk = torch.cat([chunk, chunk[-1:].expand(size - len(chunk), *chunk.shape[1:])])
        chunks.append(chunk)
    return chunks


class SklearnTarget(BaseTarget):
    """A fitted scikit-learn estimator: ``predict_proba`` if it has one, else labels.

    Inputs of any shape are flattened to ``(N, features)``.
    """

    output: Output = "probabilities"

    def __init__(self, estimator: Any, **kw: Any) -> None:
        has_proba = hasattr(estimator, "predict_proba")
        if not has_proba:
            kw["access"] = "label"
        elif kw.get("access") == "white":
            raise UserError(
                "a scikit-learn estimator has no gradients; use access 'score' or 'label'"
            )
        kw.setdefault("name", type(estimator).__name__)
        classes = getattr(estimator, "classes_", None)
        if classes is not None:
            kw.setdefault("num_classes", len(classes))
        super().__init__(**kw)
        self.estimator = estimator
        self._has_proba = has_proba
        self._classes = None if classes is None else np.asarray(classes)

    def _predict(self, x: np.ndarray) -> np.ndarray:
        flat = x.reshape(len(x), -1)
        try:
            if self.access == "label" or not self._has_proba:
                return self._label_indices(np.asarray(self.estimator.predict(flat)))
            return np.asarray(self.estimator.predict_proba(flat), dtype=np.float32)
        except (ValueError, TypeError, IndexError) as exc:
            raise TargetError(
                f"{self.name} rejected inputs of shape {x.shape}: {_first_line(exc)}"
            ) from None

    def _label_indices(self, labels: np.ndarray) -> np.ndarray:
        """Class labels as indices into ``classes_``, matching ``predict_proba``'s columns."""
        classes = self._classes
        if classes is None or np.array_equal(classes, np.arange(len(classes))):
            return labels.astype(np.int64)
        order = np.argsort(classes)
        pos = np.searchsorted(classes, labels, sorter=order)
        return order[np.clip(pos, 0, len(classes) - 1)].astype(np.int64)


class OnnxTarget(BaseTarget):
    """An ONNX model run by onnxruntime on the CPU. Scan it first; see module docs.

    The first output is taken as the scores; a model that outputs labels first and
    probabilities second (skl2onnx classifiers) is handled: a 1-D integer output is
    skipped when a later output holds scores. The scores are read as probabilities when
    the graph says so (a ZipMap over them, a label output before them, a final Softmax)
    and as logits otherwise; ``output=`` overrides.
    """

    output: Output = "logits"

    def __init__(self, path: str | Path, **kw: Any) -> None:
        import onnxruntime as ort

        path = Path(path)
        try:
            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            self.session = ort.InferenceSession(
                str(path) if _utf8_path(path) else path.read_bytes(),
                sess_options=opts,
                providers=["CPUExecutionProvider"],
            )
        except Exception as exc:
            raise InputFileError(path, f"not a loadable ONNX model ({_first_line(exc)})") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise InputFileError(
                path, f"has {len(inputs)} inputs; only single-input models are supported"
            )
        self.input_name = inputs[0].name
        shape = inputs[0].shape
        #: The batch size the graph was exported with, when it is not dynamic.
        self.static_batch = shape[0] if shape and isinstance(shape[0], int) else None
        self._input_dims = [d if isinstance(d, int) else None for d in shape[1:]]
        kw.setdefault("name", path.name)
        if kw.get("output") is None:
            kw["output"] = _onnx_scores_kind(self.session, path)
        if all(d is not None for d in self._input_dims):
            kw.setdefault("input_shape", self._input_dims)
        super().__init__(**kw)
        self.path = path

    def _predict(self, x: np.ndarray) -> np.ndarray:
        if self.static_batch is not None and len(x) != self.static_batch:
            return _in_static_batches(self._predict, x, self.static_batch)
        if self._input_dims and all(d is not None for d in self._input_dims):
            want = int(np.prod(self._input_dims))  # type: ignore[arg-type]
            if int(np.prod(x.shape[1:])) != want:
                raise TargetError(
                    f"{self.name} expects inputs of shape {self._input_dims}, got {list(x.shape[1:])}"
                )
            x = x.reshape(len(x), *self._input_dims)  # type: ignore[arg-type]
        try:
            outs = self.session.run(
                None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)}
            )
        except Exception as exc:
            raise TargetError(
                f"{self.name} failed on inputs of shape {list(x.shape)}: {_first_line(exc)}"
            ) from None
        for out in outs:
            if isinstance(out, list) and out and isinstance(out[0], dict):  # ZipMap
                keys = sorted(out[0])
                return np.asarray([[row[k] for k in keys] for row in out], dtype=np.float32)
            arr = np.asarray(out)
            if arr.ndim == 2:
                return arr.astype(np.float32)
        arr = np.asarray(outs[0])
        if arr.ndim == 1:
            return arr.astype(np.int64)
        return arr.reshape(len(x), -1).astype(np.float32)


_LABEL_TYPES = ("tensor(int64)", "tensor(int32)", "tensor(string)")


def _onnx_scores_kind(session: Any, path: Path) -> Output:
    """Whether an ONNX model's scores are already probabilities: a ZipMap over them, a
    label output before them (skl2onnx's classifiers: label, then class probabilities),
    or a final Softmax over the class axis (a torch export with its softmax). Otherwise
    logits, the adapter's default. Read from the graph, without running it; external
    data is not loaded (only the graph's structure is read).
    """
    outs = session.get_outputs()
    if any(o.type.startswith("seq(map") for o in outs):
        return "probabilities"
    first = outs[0]
    if len(outs) > 1 and first.type in _LABEL_TYPES and len(first.shape or ()) == 1:
        return "probabilities"
    import onnx

    from mlwarden.core.onnx_graph import ends_in_softmax

    try:
        if _utf8_path(path):
            model = onnx.load(str(path), load_external_data=False)
        else:
            model = onnx.load_model_from_string(path.read_bytes())
    except Exception:  # onnxruntime read it; a graph onnx cannot parse keeps the default
        return "logits"
    return "probabilities" if ends_in_softmax(model.graph) else "logits"


class CallableTarget(BaseTarget):
    """A plain Python callable mapping a numpy batch to scores ``(N, C)`` or labels ``(N,)``."""

    def __init__(self, fn: Callable[[np.ndarray], Any], **kw: Any) -> None:
        kw.setdefault("name", getattr(fn, "__name__", "callable"))
        super().__init__(**kw)
        if self.access == "white":
            raise UserError("a plain callable has no gradients; use access 'score' or 'label'")
        self.fn = fn

    def _predict(self, x: np.ndarray) -> np.ndarray:
        try:
            out = np.asarray(self.fn(x))
        except (ValueError, TypeError, IndexError, RuntimeError) as exc:
            raise TargetError(
                f"{self.name} failed on inputs of shape {tuple(x.shape)}: {_first_line(exc)}"
            ) from None
        if out.dtype.kind not in "biuf":
            raise TargetError(f"{self.name} returned {out.dtype} values; expected numbers")
        return out


class HttpTarget(BaseTarget):
    """A model behind an HTTP endpoint that takes and returns JSON.

    The request body is ``{input_field: [inputs as nested lists]}`` merged into
    ``extra_body``; the scores (or labels) are read from ``output_field`` of the
    response. Both fields accept dotted paths (``"data.inputs"``). Send an API key
    with ``headers={"Authorization": "Bearer ..."}``.
    """

    def __init__(
        self,
        url: str,
        *,
        input_field: str = "inputs",
        output_field: str = "predictions",
        headers: dict[str, str] | None = None,
        extra_body: dict[str, Any] | None = None,
        timeout: float = 30.0,
        retries: int = 2,
        **kw: Any,
    ) -> None:
        import httpx

        if not url.startswith(("http://", "https://")):
            raise UserError(f"not an http(s) URL: {url!r}")
        kw.setdefault("name", url)
        kw.setdefault("batch_size", 64)
        super().__init__(**kw)
        if self.access == "white":
            raise UserError("an HTTP endpoint has no gradients; use access 'score' or 'label'")
        self.url = url
        self.input_field = input_field
        self.output_field = output_field
        self.extra_body = extra_body or {}
        self.retries = retries
        self.client = httpx.Client(timeout=timeout, headers=headers or {})

    def _predict(self, x: np.ndarray) -> np.ndarray:
        import httpx

        body: dict[str, Any] = dict(self.extra_body)
        _set_path(body, self.input_field, x.tolist())
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            try:
                resp = self.client.post(self.url, json=body)
            except httpx.HTTPError as exc:
                last = exc
                continue
            if resp.status_code == 429 or resp.status_code >= 500:
                last = TargetError(f"{self.url} answered HTTP {resp.status_code}")
                if attempt < self.retries:
                    import time

                    time.sleep(_retry_after(resp.headers.get("Retry-After")))
                continue
            if resp.status_code >= 400:
                raise TargetError(f"{self.url} answered HTTP {resp.status_code}: {resp.text[:200]}")
            try:
                payload = resp.json()
                out = np.asarray(_get_path(payload, self.output_field))
            except (ValueError, KeyError, TypeError) as exc:
                raise TargetError(
                    f"{self.url}: response has no usable {self.output_field!r} ({exc})"
                ) from None
            if out.dtype.kind not in "biuf" or len(out) != len(x):
                raise TargetError(
                    f"{self.url}: {self.output_field!r} is not {len(x)} rows of numbers"
                )
            return out
        raise TargetError(f"{self.url} did not answer: {last}")

    def close(self) -> None:
        self.client.close()


def _retry_after(value: str | None) -> float:
    """Seconds to wait from a ``Retry-After`` header (seconds form), capped at 5 s."""
    try:
        seconds = float(value) if value else 0.5
    except ValueError:  # the HTTP-date form: wait a little rather than parse dates
        seconds = 1.0
    return min(max(seconds, 0.0), 5.0)


def _set_path(body: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    cur = body
    for k in keys[:-1]:
        cur = cur.setdefault(k, {})
    cur[keys[-1]] = value


def _get_path(payload: Any, dotted: str) -> Any:
    cur = payload
    for k in dotted.split("."):
        cur = cur[int(k)] if isinstance(cur, list) else cur[k]
    return cur


def _as_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().float().numpy()
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise TargetError(f"inputs must be numbers; got dtype {arr.dtype}")
    return arr.astype(np.float32, copy=False)


def _utf8_path(path: Path) -> bool:
    """Whether ``path`` is valid UTF-8 (C++ loaders cannot open other byte names)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _first_line(exc: BaseException) -> str:
    text = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    if text and "TorchScript interpreter" in text[0]:
        return text[-1][:300]  # the interpreter puts the reason on the last line
    return text[0][:300] if text else type(exc).__name__


def as_target(model: Any, **kw: Any) -> BaseTarget:
    """Wrap an in-memory model: a Target passes through, a module, estimator or callable is adapted."""
    if isinstance(model, BaseTarget):
        return model
    if isinstance(model, torch.nn.Module):
        return TorchTarget(model, **kw)
    if hasattr(model, "predict") and hasattr(model, "fit"):
        return SklearnTarget(model, **kw)
    if callable(model):
        return CallableTarget(model, **kw)
    raise UserError(
        f"cannot use a {type(model).__name__} as a model; expected a torch module, a scikit-learn estimator or a callable"
    )


def softmax(scores: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64, stable for large logits."""
    z = scores.astype(np.float64) - scores.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def probabilities(target: Target, x: np.ndarray) -> np.ndarray:
    """Scores as probabilities whatever the target's output kind (labels become one-hot).

    Scores declared as probabilities that are not (an endpoint or callable that really
    returns logits: the default declaration of those adapters) are not passed on as
    if they were: non-negative rows are normalised to sum to 1, other rows softmaxed.
    """
    out = target.predict(x)
    if out.ndim == 1:
        n = max(getattr(target, "num_classes", None) or 0, int(out.max(initial=-1)) + 1)
        onehot = np.zeros((len(out), n), np.float64)
        onehot[np.arange(len(out)), out] = 1.0
        return onehot
    if target.output == "probabilities":
        if not len(out) or is_close_to_probabilities(out):
            return out.astype(np.float64)
        sums = out.sum(axis=1, keepdims=True, dtype=np.float64)
        if np.all(out >= 0) and np.all(sums > 0):
            return out.astype(np.float64) / sums
    return softmax(out)


def is_close_to_probabilities(scores: np.ndarray, tol: float = 1e-3) -> bool:
    """True when every row is non-negative and sums to 1 (a model emitting probabilities)."""
    return (
        bool(scores.size)
        and bool(np.all(scores >= -tol))
        and bool(np.allclose(scores.sum(axis=1), 1.0, atol=tol))
        and not math.isnan(float(scores.sum()))
    )
