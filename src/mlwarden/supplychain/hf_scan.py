"""Hugging Face configs: find custom code a model folder asks ``transformers`` to run.

``config.json``, ``tokenizer_config.json``, ``preprocessor_config.json`` and the like
may carry an ``auto_map`` (``{"AutoModel": "modeling_x.XModel"}``, or
``"other/repo--modeling_x.XModel"`` for code from another repository) or
``custom_pipelines`` (``{"task": {"impl": "pipeline_x.XPipeline"}}``). With
``trust_remote_code=True`` transformers downloads and imports those Python modules: the
model folder then runs code. The rest of such a config (sizes, vocabularies, special
tokens) is data.
"""

from __future__ import annotations

from typing import Any

from mlwarden.core.severity import Severity
from mlwarden.supplychain.results import Sink

KEYS = ("auto_map", "custom_pipelines")


def looks_like_hf_config(doc: Any) -> bool:
    return isinstance(doc, dict) and any(k in doc for k in KEYS)


def check_hf_config(doc: Any, sink: Sink) -> None:
    """Report every custom-code reference in ``auto_map``/``custom_pipelines``, at any depth."""
    stack: list[Any] = [doc]
    seen = 0
    while stack and seen < 100_000:
        node = stack.pop()
        seen += 1
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        for key in KEYS:
            if key in node:
                for where, ref in _refs(node[key], key)[:1000]:
                    _report(where, ref, sink)
        stack.extend(v for k, v in node.items() if k not in KEYS and isinstance(v, dict | list))


def _refs(value: Any, key: str) -> list[tuple[str, str]]:
    """(place, reference) for each code reference: every string of an ``auto_map``
    (a list holds a slow and a fast tokenizer class, or null), the ``impl`` of each
    ``custom_pipelines`` task (its ``pt``/``tf``/``default`` name transformers classes
    and checkpoints, not code)."""
    out: list[tuple[str, str]] = []
    if not isinstance(value, dict):
        return out
    for name, entry in value.items():
        place = f"{key}.{name}"
        if key == "custom_pipelines":
            entry = entry.get("impl") if isinstance(entry, dict) else None
        items = entry if isinstance(entry, list) else [entry]
        out.extend((place, x) for x in items[:16] if isinstance(x, str) and x)
    return out


def _report(where: str, ref: str, sink: Sink) -> None:
    repo, sep, local = ref.rpartition("--")
    origin = f"repository {repo!r}" if sep else "the model folder"
    sink.add(
        "MLW-SCN-012",
        Severity.HIGH,
        f"{where} names custom code {local!r} that transformers imports from {origin} "
        "when loaded with trust_remote_code=True",
        global_=ref,
    )
