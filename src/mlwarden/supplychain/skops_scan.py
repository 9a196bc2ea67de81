"""skops files: check every type the ``schema.json`` of a ``.skops`` zip makes skops import.

A ``.skops`` file is a zip of ``schema.json`` (a tree of nodes) plus ``.npy``/``.npz``/
``.bin`` members. Each node names a ``__module__`` and ``__class__`` that
``skops.io.load`` imports and then instantiates (``ObjectNode``: ``cls.__new__`` and
``__setstate__``; ``DictNode``/``ListNode``: ``cls()``), references (``FunctionNode``,
``TypeNode``: any function or type, e.g. ``builtins.eval`` handed to a
``FunctionTransformer``), binds (``MethodNode``: ``getattr(obj, name)``) or calls
(``OperatorFuncNode``: ``operator.attrgetter``...; ``ConstructorFromReduceNode``:
``cls(*args)``). A ``RandomGeneratorNode`` also calls ``numpy.random.<name>`` for the
bit-generator name in its state. skops asks the user to trust unknown types, and users
pass ``trusted=get_untrusted_types(...)``; here every name goes through the same
allow-list policy as a pickle's imports. ``JsonNode`` values are decoded as JSON only.
The arrays are separate zip members, scanned as ``.npy`` files in their own right.
"""

from __future__ import annotations

import json
from typing import Any

from mlwarden.core.severity import Severity
from mlwarden.supplychain.policy import Policy, Verdict
from mlwarden.supplychain.results import Sink


def looks_like_skops(doc: Any) -> bool:
    """The root node of a skops ``schema.json``."""
    return (
        isinstance(doc, dict)
        and isinstance(doc.get("__loader__"), str)
        and "__module__" in doc
        and "__class__" in doc
        and ("_skops_version" in doc or "protocol" in doc)
    )


def check_skops_schema(doc: Any, sink: Sink, policy: Policy) -> None:
    stack: list[Any] = [doc]
    seen = 0
    while stack:
        node = stack.pop()
        seen += 1
        if seen > 1_000_000:
            sink.add("MLW-SCN-010", Severity.HIGH, "skops schema too large to walk")
            return
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        loader = node.get("__loader__")
        if isinstance(loader, str):
            _check_node(node, loader, sink, policy)
        stack.extend(v for v in node.values() if isinstance(v, dict | list))


def _check_node(node: dict[str, Any], loader: str, sink: Sink, policy: Policy) -> None:
    if loader == "JsonNode":
        return  # json.loads of its content; the class name is never imported
    module, cls = node.get("__module__"), node.get("__class__")
    if not isinstance(module, str) or not isinstance(cls, str) or not module or not cls:
        sink.add(
            "MLW-SCN-002",
            Severity.HIGH,
            f"skops {loader} without a module and class name ({module!r}, {cls!r:.60})",
        )
        return
    names = [(module, cls)]
    if loader == "MethodNode":
        content = node.get("content")
        func = content.get("func") if isinstance(content, dict) else None
        names = [(module, f"{cls}.{func}")]  # a bound method: getattr(obj, func)
    elif loader == "OperatorFuncNode":
        names = [("operator", cls)]  # skops calls getattr(operator, cls)(*attrs)
    elif loader == "RandomGeneratorNode":
        names.append(("numpy.random", _bit_generator(node)))
    for mod, name in names:
        c = policy.classify(mod, name)
        if c.verdict is Verdict.UNSAFE:
            sink.add(
                "MLW-SCN-001",
                Severity.CRITICAL,
                f"skops {loader} names {c.full}: {c.reason}",
                global_=c.full,
            )
        elif c.verdict is not Verdict.SAFE:
            sink.add(
                "MLW-SCN-002",
                Severity.HIGH,
                f"skops {loader} names {c.full}: {c.reason}",
                global_=c.full,
            )


def _bit_generator(node: dict[str, Any]) -> str:
    """The bit-generator class name skops reads from a Generator's state (or '?')."""
    try:
        state = node["content"]["bit_generator"]["content"]["bit_generator"]["content"]
        name = json.loads(state)
    except (KeyError, TypeError, ValueError):
        return "?"
    return name if isinstance(name, str) and name else "?"
