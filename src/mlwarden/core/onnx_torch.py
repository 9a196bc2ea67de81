"""ONNX graphs as differentiable torch modules, checked against onnxruntime.

White-box attacks need gradients; an ONNX file only runs forward in onnxruntime. This
module interprets the graph's nodes with torch operations (:class:`OnnxModule`), so
gradients flow from the scores back to the input, and :func:`white_box_onnx` accepts the
conversion only when it answers like onnxruntime on the user's own inputs: the largest
absolute difference of the class probabilities at most ``atol`` and the same predicted
class on at least ``agreement`` of the inputs. Otherwise the caller keeps the black-box
(onnxruntime) target, and the evaluation is an upper bound on robustness.

The op table covers what ``torch.onnx.export`` writes for MLPs and CNNs and what
skl2onnx writes for scalers, MLPs and linear layers (``Scaler`` of ``ai.onnx.ml``);
tree ensembles (``TreeEnsembleClassifier``), control flow and other domains are not
converted and say which op stopped the conversion. Only the nodes the score output
depends on are converted: a label output (``ArgMax``, ``ZipMap``) beside it does not
matter.

We do not use onnx2torch: it requires torchvision, which would replace the CPU torch
build this project pins.

Example::

    onnx_target = load_target("model.onnx")            # scanned, onnxruntime
    white, check = white_box_onnx(onnx_target, x)      # check["converted"] is True/False
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mlwarden.core.onnx_graph import is_last_axis, score_output
from mlwarden.core.target import (
    OnnxTarget,
    TorchTarget,
    _padded_chunks_torch,
    is_close_to_probabilities,
)

Op = Callable[[list[Any], dict[str, Any]], Any]


class ConversionError(Exception):
    """The graph cannot be converted (the message says which op or feature)."""


#: The largest absolute difference of class probabilities accepted between the
#: converted module and onnxruntime, and the share of inputs whose class must agree.
ATOL = 1e-3
AGREEMENT = 0.999


def white_box_onnx(
    target: OnnxTarget, x: np.ndarray, *, atol: float = ATOL, agreement: float = AGREEMENT
) -> tuple[OnnxTorchTarget | None, dict[str, Any]]:
    """Convert ``target``'s graph to torch and check it on ``x`` against onnxruntime.

    Returns the white-box target (``None`` when the graph did not convert or the check
    failed) and what was checked: ``converted``, ``reason``, ``max_abs_diff`` (class
    probabilities), ``argmax_agreement`` (fraction of ``x``), ``inputs`` and the
    thresholds. The check does not count as queries.
    """
    info: dict[str, Any] = {"converted": False, "atol": atol, "min_agreement": agreement}
    try:
        module = OnnxModule.from_file(target.path, static_batch=target.static_batch)
    except ConversionError as exc:
        info["reason"] = str(exc)
        return None, info
    except Exception as exc:  # a malformed graph must fall back, never crash the run
        info["reason"] = (
            f"the graph could not be read for conversion ({type(exc).__name__}: {exc})"[:300]
        )
        return None, info
    sample = np.asarray(x, np.float32)[:2000]
    reference = target._predict(sample)
    try:
        with torch.no_grad():
            mine = module(torch.from_numpy(np.ascontiguousarray(sample))).float().numpy()
    except Exception as exc:  # an op we map but whose inputs the graph uses unusually
        info["reason"] = f"the converted graph failed on the data: {exc}"[:300]
        return None, info
    if reference.ndim != 2 or mine.shape != reference.shape:
        info["reason"] = (
            f"the converted graph gives shape {mine.shape}, onnxruntime {reference.shape}"
        )
        return None, info
    p_ref = _probs(reference)
    p_mine = _softmax(mine) if module.stripped_softmax else _probs(mine)
    diff = float(np.abs(p_ref - p_mine).max()) if len(sample) else 0.0
    agree = float((p_ref.argmax(1) == p_mine.argmax(1)).mean()) if len(sample) else 1.0
    info.update(max_abs_diff=diff, argmax_agreement=agree, inputs=len(sample))
    if not (diff <= atol and agree >= agreement):
        info["reason"] = (
            f"the converted graph disagrees with onnxruntime (largest probability "
            f"difference {diff:.2g} > {atol:g} or class agreement {agree:.2%} < {agreement:.1%})"
        )
        return None, info
    info["converted"] = True
    info["gradients_through"] = "logits before the final Softmax" if module.stripped_softmax else (
        "the graph's score output"
    )  # fmt: skip
    return OnnxTorchTarget(module, target), info


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z.astype(np.float64) - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _probs(scores: np.ndarray) -> np.ndarray:
    return scores.astype(np.float64) if is_close_to_probabilities(scores) else _softmax(scores)


class OnnxTorchTarget(TorchTarget):
    """White-box target of an ONNX model: gradients from the converted graph, every
    answer without gradients (``predict``, the re-check of each success) from
    onnxruntime, the model as deployed."""

    def __init__(self, module: OnnxModule, onnx_target: OnnxTarget) -> None:
        super().__init__(
            module,
            name=onnx_target.name,
            max_queries=onnx_target.max_queries,
            num_classes=onnx_target.num_classes,
            input_shape=onnx_target.input_shape,
            output="logits" if module.stripped_softmax else onnx_target.output,
        )
        self.onnx = onnx_target
        self.path = onnx_target.path
        #: ModelAccess.scores asks onnxruntime, not the converted module
        self.answers_through_predict = True

    def _predict(self, x: np.ndarray) -> np.ndarray:
        return self.onnx._predict(x)

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"converted_from": "onnx", "adapter": "OnnxTorchTarget"}


class OnnxModule(torch.nn.Module):
    """An ONNX graph evaluated node by node with torch ops (differentiable)."""

    def __init__(self, graph: Any, opset: int, static_batch: int | None = None) -> None:
        from onnx import numpy_helper

        super().__init__()
        inits = {t.name for t in graph.initializer}
        inputs = [i.name for i in graph.input if i.name not in inits]
        if len(inputs) != 1:
            raise ConversionError(f"the graph has {len(inputs)} inputs; one is supported")
        self.input_name = inputs[0]
        self.opset = opset
        self.static_batch = static_batch
        output, producers = score_output(graph)
        self.stripped_softmax = False
        node = producers.get(output)
        if node is not None and node.op_type == "Softmax" and is_last_axis(node):
            output, self.stripped_softmax = node.input[0], True
        self.output_name = output
        self.nodes = _needed_nodes(graph, output, producers)
        for n in self.nodes:
            if n.domain not in ("", "ai.onnx") and (n.domain, n.op_type) != (
                "ai.onnx.ml",
                "Scaler",
            ):
                raise ConversionError(f"op {n.domain}.{n.op_type} is not supported")
            if n.domain in ("", "ai.onnx") and n.op_type not in OPS:
                raise ConversionError(f"op {n.op_type} is not supported")
        self._names: dict[str, str] = {}
        needed = {i for n in self.nodes for i in n.input}
        for k, t in enumerate(graph.initializer):
            if t.name in needed:
                self.register_buffer(f"w{k}", torch.from_numpy(numpy_helper.to_array(t).copy()))
                self._names[t.name] = f"w{k}"

    @classmethod
    def from_file(cls, path: str | Path, static_batch: int | None = None) -> OnnxModule:
        """Read ``path`` (already scanned) and build the module, or :class:`ConversionError`."""
        import onnx

        try:
            model = onnx.load(str(path))
        except Exception as exc:
            raise ConversionError(f"onnx could not read the file ({exc})"[:300]) from None
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
        return cls(model.graph, opset, static_batch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.static_batch is None or len(x) == self.static_batch:
            return self._run(x)
        return torch.cat([self._run(c) for c in _padded_chunks_torch(x, self.static_batch)])[
            : len(x)
        ]

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        env: dict[str, Any] = {self.input_name: x.float()}
        for name, buf in self._names.items():
            env[name] = getattr(self, buf)
        for n in self.nodes:
            args = [env[i] if i else None for i in n.input]
            attrs = _attrs(n)
            attrs["_opset"] = self.opset
            fn = _scaler if n.op_type == "Scaler" else OPS[n.op_type]
            out = fn(args, attrs)
            outs = out if isinstance(out, tuple) else (out,)
            for name, value in zip(n.output, outs, strict=False):
                if name:
                    env[name] = value
        out = env[self.output_name]
        return out.reshape(len(out), -1) if out.ndim != 2 else out


def _needed_nodes(graph: Any, output: str, producers: dict[str, Any]) -> list[Any]:
    """The nodes ``output`` depends on, in graph order (ONNX nodes are topologically sorted)."""
    need, stack = set(), [output]
    while stack:
        name = stack.pop()
        node = producers.get(name)
        if node is None or id(node) in need:
            continue
        need.add(id(node))
        stack.extend(i for i in node.input if i)
    for n in graph.node:
        if id(n) in need and any(a.type in (5, 10) for a in n.attribute):  # GRAPH(S)
            raise ConversionError(f"op {n.op_type} holds a subgraph (control flow)")
    return [n for n in graph.node if id(n) in need]


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


# -- the op table ------------------------------------------------------------------------


def _t(v: Any) -> torch.Tensor:
    return v if isinstance(v, torch.Tensor) else torch.as_tensor(v)


def _ints(v: Any) -> list[int]:
    return [int(i) for i in _t(v).reshape(-1).tolist()]


def _gemm(a: list[Any], at: dict[str, Any]) -> torch.Tensor:
    x, w = a[0], a[1]
    if at.get("transA", 0):
        x = x.t()
    if at.get("transB", 0):
        w = w.t()
    y = at.get("alpha", 1.0) * (x @ w)
    if len(a) > 2 and a[2] is not None:
        y = y + at.get("beta", 1.0) * a[2]
    return y


def _scaler(a: list[Any], at: dict[str, Any]) -> torch.Tensor:
    offset = torch.tensor(at.get("offset", [0.0]), dtype=torch.float32)
    scale = torch.tensor(at.get("scale", [1.0]), dtype=torch.float32)
    return (a[0].float() - offset) * scale


def _cast(a: list[Any], at: dict[str, Any]) -> torch.Tensor:
    to = int(at["to"])
    if to in (1, 10, 11, 16):  # float, float16, double, bfloat16: compute in float32
        return _t(a[0]).float()
    if to in (6, 7, 2, 3, 4, 5, 12, 13):
        return _t(a[0]).long()
    if to == 9:
        return _t(a[0]).bool()
    raise ConversionError(f"Cast to ONNX type {to} is not supported")


def _pads(at: dict[str, Any], rank: int) -> tuple[list[int], bool]:
    if at.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise ConversionError(f"auto_pad={at['auto_pad']} is not supported")
    pads = list(at.get("pads", [0] * (2 * rank)))
    return pads, pads[:rank] == pads[rank:]


def _torch_pad(pads: list[int], rank: int) -> list[int]:
    """ONNX ``[b1, b2, e1, e2]`` to torch's last-dim-first ``[b2, e2, b1, e1]``."""
    out = []
    for i in reversed(range(rank)):
        out += [pads[i], pads[i + rank]]
    return out


def _conv(a: list[Any], at: dict[str, Any]) -> torch.Tensor:
    x, w = a[0], a[1]
    b = a[2] if len(a) > 2 else None
    rank = w.ndim - 2
    pads, sym = _pads(at, rank)
    if not sym:
        x = F.pad(x, _torch_pad(pads, rank))
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[rank]
    return conv(
        x, w, b, stride=at.get("strides", 1), padding=pads[:rank] if sym else 0,
        dilation=at.get("dilations", 1), groups=at.get("group", 1),
    )  # fmt: skip


def _pool(kind: str) -> Op:
    def op(a: list[Any], at: dict[str, Any]) -> torch.Tensor:
        x, k = a[0], at["kernel_shape"]
        rank = len(k)
        pads, sym = _pads(at, rank)
        if not sym:
            if kind == "avg":
                raise ConversionError("AveragePool with asymmetric pads is not supported")
            x = F.pad(x, _torch_pad(pads, rank), value=-float("inf"))
            pads = [0] * (2 * rank)
        stride, ceil = at.get("strides", [1] * rank), bool(at.get("ceil_mode", 0))
        fn: Any
        if kind == "max":
            fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[rank]
            return fn(x, k, stride, pads[:rank], at.get("dilations", 1), ceil_mode=ceil)  # type: ignore[no-any-return]
        if at.get("dilations", [1] * rank) != [1] * rank:
            raise ConversionError("AveragePool with dilations is not supported")
        fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[rank]
        include = bool(at.get("count_include_pad", 0))  # ONNX's default excludes the pads
        return fn(x, k, stride, pads[:rank], ceil_mode=ceil, count_include_pad=include)  # type: ignore[no-any-return]

    return op


def _reshape(a: list[Any], at: dict[str, Any]) -> torch.Tensor:
    x, shape = a[0], _ints(a[1])
    if not at.get("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


def _axes(a: list[Any], at: dict[str, Any]) -> list[int] | None:
    if len(a) > 1 and a[1] is not None:
        return _ints(a[1])
    return list(at["axes"]) if "axes" in at else None


def _unsqueeze(a: list[Any], at: dict[str, Any]) -> torch.Tensor:
    x, axes = a[0], _axes(a, at) or []
    rank = x.ndim + len(axes)
    for ax in sorted(ax % rank for ax in axes):
        x = x.unsqueeze(ax)
    return x


def _squeeze(a: list[Any], at: dict[str, Any]) -> torch.Tensor:
    x, axes = a[0], _axes(a, at)
    if axes is None:
        return x.squeeze()
    for ax in sorted((ax % x.ndim for ax in axes), reverse=True):
        x = x.squeeze(ax)
    return x


def _reduce(fn: str) -> Op:
    def op(a: list[Any], at: dict[str, Any]) -> torch.Tensor:
        axes = _axes(a, at)
        keep = bool(at.get("keepdims", 1))
        x = a[0]
        if not axes:
            if at.get("noop_with_empty_axes", 0):
                return x
            axes = list(range(x.ndim))
        if fn == "max":
            for ax in sorted((ax % x.ndim for ax in axes), reverse=True):
                x = x.amax(ax, keepdim=keep)
            return x
        return getattr(x, fn)(dim=axes, keepdim=keep)  # type: ignore[no-any-return]

    return op


def _softmax_op(log: bool) -> Op:
    def op(a: list[Any], at: dict[str, Any]) -> torch.Tensor:
        x = a[0]
        default = -1 if at["_opset"] >= 13 else 1
        axis = at.get("axis", default)
        if at["_opset"] < 13 and axis % x.ndim != x.ndim - 1:  # old semantics: flatten at axis
            shape = x.shape
            flat = x.reshape(*shape[:axis], -1)
            out = F.log_softmax(flat, -1) if log else F.softmax(flat, -1)
            return out.reshape(shape)
        return F.log_softmax(x, axis) if log else F.softmax(x, axis)

    return op


def _slice(a: list[Any], at: dict[str, Any]) -> torch.Tensor:
    x = a[0]
    if len(a) > 1:
        starts, ends = _ints(a[1]), _ints(a[2])
        axes = _ints(a[3]) if len(a) > 3 and a[3] is not None else list(range(len(starts)))
        steps = _ints(a[4]) if len(a) > 4 and a[4] is not None else [1] * len(starts)
    else:
        starts, ends = list(at["starts"]), list(at["ends"])
        axes, steps = list(at.get("axes", range(len(starts)))), [1] * len(starts)
    idx: list[Any] = [slice(None)] * x.ndim
    for s, e, ax, st in zip(starts, ends, axes, steps, strict=True):
        if st < 1:
            raise ConversionError("Slice with a negative step is not supported")
        n = x.shape[ax]
        idx[ax] = slice(max(min(s, n), -n), max(min(e, n), -n - 1) if e < 0 else min(e, n), st)
    return x[tuple(idx)]


def _clip(a: list[Any], at: dict[str, Any]) -> torch.Tensor:
    lo = a[1] if len(a) > 1 and a[1] is not None else at.get("min")
    hi = a[2] if len(a) > 2 and a[2] is not None else at.get("max")
    x = a[0]
    if lo is not None:
        x = torch.maximum(x, _t(lo).to(x.dtype))
    if hi is not None:
        x = torch.minimum(x, _t(hi).to(x.dtype))
    return x


def _batchnorm(a: list[Any], at: dict[str, Any]) -> torch.Tensor:
    x, scale, bias, mean, var = a[:5]
    shape = [1, -1] + [1] * (x.ndim - 2)
    eps = at.get("epsilon", 1e-5)
    return (x - mean.reshape(shape)) / torch.sqrt(var.reshape(shape) + eps) * scale.reshape(
        shape
    ) + bias.reshape(shape)


def _layernorm(a: list[Any], at: dict[str, Any]) -> torch.Tensor:
    x = a[0]
    axis = at.get("axis", -1) % x.ndim
    shape = list(x.shape[axis:])
    bias = a[2] if len(a) > 2 else None
    return F.layer_norm(x, shape, a[1], bias, at.get("epsilon", 1e-5))


def _pad(a: list[Any], at: dict[str, Any]) -> torch.Tensor:
    mode = at.get("mode", "constant")
    if mode != "constant":
        raise ConversionError(f"Pad mode {mode} is not supported")
    pads = _ints(a[1]) if len(a) > 1 else list(at["pads"])
    value = float(_t(a[2]).item()) if len(a) > 2 and a[2] is not None else at.get("value", 0.0)
    rank = a[0].ndim
    return F.pad(a[0], _torch_pad(pads, rank), value=value)


def _variadic(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Op:
    def op(a: list[Any], at: dict[str, Any]) -> torch.Tensor:
        out = a[0]
        for v in a[1:]:
            out = fn(out, v)
        return out  # type: ignore[no-any-return]

    return op


def _constant(a: list[Any], at: dict[str, Any]) -> torch.Tensor:
    for key in ("value", "value_float", "value_int", "value_floats", "value_ints"):
        if key in at:
            v = at[key]
            if key == "value":
                from onnx import numpy_helper

                return torch.from_numpy(numpy_helper.to_array(v).copy())
            return torch.as_tensor(v)
    raise ConversionError("a Constant without a numeric value is not supported")


def _gather(a: list[Any], at: dict[str, Any]) -> torch.Tensor:
    x, idx = _t(a[0]), _t(a[1]).long()
    axis = at.get("axis", 0) % x.ndim
    idx = torch.where(idx < 0, idx + x.shape[axis], idx)
    out = x.index_select(axis, idx.reshape(-1))
    return out.reshape(*x.shape[:axis], *idx.shape, *x.shape[axis + 1 :])


OPS: dict[str, Op] = {
    "Identity": lambda a, at: a[0],
    "Dropout": lambda a, at: a[0],
    "Constant": _constant,
    "Cast": _cast,
    "Gemm": _gemm,
    "MatMul": lambda a, at: a[0] @ a[1],
    "Add": lambda a, at: a[0] + a[1],
    "Sub": lambda a, at: a[0] - a[1],
    "Mul": lambda a, at: a[0] * a[1],
    "Div": lambda a, at: a[0] / a[1],
    "Pow": lambda a, at: a[0] ** a[1],
    "Neg": lambda a, at: -a[0],
    "Abs": lambda a, at: a[0].abs(),
    "Sqrt": lambda a, at: a[0].sqrt(),
    "Exp": lambda a, at: a[0].exp(),
    "Log": lambda a, at: a[0].log(),
    "Reciprocal": lambda a, at: 1.0 / a[0],
    "Erf": lambda a, at: torch.erf(a[0]),
    "Relu": lambda a, at: F.relu(a[0]),
    "LeakyRelu": lambda a, at: F.leaky_relu(a[0], at.get("alpha", 0.01)),
    "Elu": lambda a, at: F.elu(a[0], at.get("alpha", 1.0)),
    "Selu": lambda a, at: F.selu(a[0]),
    "Sigmoid": lambda a, at: torch.sigmoid(a[0]),
    "HardSigmoid": lambda a, at: (at.get("alpha", 0.2) * a[0] + at.get("beta", 0.5)).clamp(0, 1),
    "Tanh": lambda a, at: torch.tanh(a[0]),
    "Softplus": lambda a, at: F.softplus(a[0]),
    "Gelu": lambda a, at: F.gelu(a[0], approximate=at.get("approximate", "none")),
    "Softmax": _softmax_op(log=False),
    "LogSoftmax": _softmax_op(log=True),
    "Clip": _clip,
    "Max": _variadic(torch.maximum),
    "Min": _variadic(torch.minimum),
    "Sum": _variadic(torch.add),
    "Flatten": lambda a, at: a[0].reshape(int(np.prod(a[0].shape[: at.get("axis", 1)])), -1),
    "Reshape": _reshape,
    "Transpose": lambda a, at: a[0].permute(*at.get("perm", range(a[0].ndim)[::-1])),
    "Concat": lambda a, at: torch.cat([_t(v) for v in a], dim=at["axis"]),
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Shape": lambda a, at: torch.tensor(a[0].shape[at.get("start", 0) : at.get("end")]),
    "Gather": _gather,
    "Slice": _slice,
    "Conv": _conv,
    "MaxPool": _pool("max"),
    "AveragePool": _pool("avg"),
    "GlobalAveragePool": lambda a, at: a[0].mean(dim=tuple(range(2, a[0].ndim)), keepdim=True),
    "GlobalMaxPool": lambda a, at: a[0].amax(dim=tuple(range(2, a[0].ndim)), keepdim=True),
    "BatchNormalization": _batchnorm,
    "LayerNormalization": _layernorm,
    "Pad": _pad,
    "ReduceMean": _reduce("mean"),
    "ReduceSum": _reduce("sum"),
    "ReduceMax": _reduce("max"),
}
