"""What an ONNX graph's score output is, read from the graph without running it.

Shared by the onnxruntime adapter (:class:`mlwarden.core.target.OnnxTarget`, which must
know whether its scores are probabilities or logits) and the torch conversion
(:mod:`mlwarden.core.onnx_torch`, which strips a final softmax to get logits). Both read
the same output: the first rank-2 one (a ZipMap's probabilities taken before the
ZipMap), else the first.

Example::

    graph = onnx.load("model.onnx", load_external_data=False).graph
    name, producers = score_output(graph)
    ends_in_softmax(graph)          # True for a torch export with a final Softmax
"""

from __future__ import annotations

from typing import Any


def score_output(graph: Any) -> tuple[str, dict[str, Any]]:
    """The name of the output read as scores, and each tensor's producing node."""
    producers = {o: n for n in graph.node for o in n.output}
    for out in graph.output:
        node = producers.get(out.name)
        if node is not None and node.op_type == "ZipMap":
            return node.input[0], producers
        dims = out.type.tensor_type.shape.dim
        if out.type.HasField("tensor_type") and len(dims) == 2:
            return out.name, producers
    return graph.output[0].name, producers


def is_last_axis(node: Any) -> bool:
    """Softmax over the class axis of a (N, C) output (either default axis: -1 or 1)."""
    axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
    return axis in (-1, 1)


def ends_in_softmax(graph: Any) -> bool:
    """Whether the score output is produced by a Softmax over the class axis (or is the
    input of a ZipMap, which skl2onnx puts only over class probabilities)."""
    name, producers = score_output(graph)
    if any(n.op_type == "ZipMap" and n.input[0] == name for n in graph.node):
        return True
    node = producers.get(name)
    return node is not None and node.op_type == "Softmax" and is_last_axis(node)
