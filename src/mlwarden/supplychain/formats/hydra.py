"""Hydra / OmegaConf configs that instantiate callables (MLW-SCN-021): NeMo checkpoints
(``.nemo``: a tar whose ``model_config.yaml`` is passed to ``hydra.utils.instantiate``
when the model is restored), and any YAML holding ``_target_``.

Hydra imports the dotted name of every ``_target_`` and calls it with the sibling keys
(``_args_`` positionally, ``_partial_: true`` wraps it in ``functools.partial`` to be
called later), so ``_target_: os.system`` with ``_args_: ["curl ... | sh"]`` runs a
command when the model loads. Each target is classified with the scan policy, like a
pickle's imports: a code-running, file or network callable is critical; a name of the
libraries NeMo configs are built from (``nemo``, ``torch``, ``lightning``...) is fine;
anything else is high. The YAML is parsed with ``yaml.safe_load`` (no tags, no objects),
and walked with a visited set (aliases cannot blow the walk up).
"""

from __future__ import annotations

from typing import Any

from mlwarden.core.severity import Severity
from mlwarden.supplychain.policy import Verdict
from mlwarden.supplychain.results import Sink

RULE = "MLW-SCN-021"
KEYS = (b"_target_", b"_partial_", b"_args_")
#: libraries whose classes NeMo and Lightning configs instantiate by design
KNOWN = (
    "nemo.",
    "torch.",
    "pytorch_lightning.",
    "lightning.",
    "lightning_fabric.",
    "megatron.core.",
    "transformers.",
    "omegaconf.DictConfig",
    "omegaconf.ListConfig",
)
#: names that resolve or load further names or files from strings: as bad as exec
RESOLVERS = (
    "hydra.utils.",
    "hydra._internal.",
    "omegaconf.OmegaConf.load",
    "importlib.",
    "nemo.core.classes.common.Serialization.from_config_dict",
)
MAX_NODES = 1_000_000


def check_yaml(data: bytes, sink: Sink) -> str | None:
    """Check a YAML text that mentions Hydra's keys; ``hydra-config`` if it held a target.

    Example::

        check_yaml(b"m:\\n  _target_: os.system\\n  _args_: [id]\\n", sink)  # critical
    """
    if not any(k in data for k in KEYS):
        return None
    import yaml

    try:
        docs = list(yaml.safe_load_all(data.decode("utf-8", "replace")))
    except (yaml.YAMLError, RecursionError, ValueError):
        return None  # not YAML (a Python file naming _target_, say): plain text
    targets = 0
    for doc in docs[:64]:
        for where, node in _mappings(doc):
            if "_target_" in node:
                targets += 1
                _check_target(where, node, sink)
    return "hydra-config" if targets else None


def _mappings(doc: Any) -> Any:
    """Every mapping in ``doc`` with its dotted path, each object once."""
    seen: set[int] = set()
    todo: list[tuple[str, Any]] = [("", doc)]
    while todo and len(seen) < MAX_NODES:
        where, node = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, dict):
            yield where or "<root>", node
            todo.extend((f"{where}.{k}" if where else str(k), v) for k, v in node.items())
        elif isinstance(node, list):
            todo.extend((f"{where}[{i}]", v) for i, v in enumerate(node))


def _check_target(where: str, node: dict[Any, Any], sink: Sink) -> None:
    target = node["_target_"]
    if not isinstance(target, str) or not target.strip():
        sink.add(RULE, Severity.HIGH, f"_target_ at {where} is not a dotted name ({target!r:.80})")
        return
    target = target.strip()
    args = node.get("_args_")
    called = f" with _args_ {args!r:.120}" if args is not None else ""
    partial = " (as a functools.partial, called later)" if node.get("_partial_") else ""
    if target.startswith(RESOLVERS):
        severity, why = Severity.CRITICAL, "resolves or loads further names or files from strings"
    else:
        module, _, name = target.rpartition(".")
        verdict = sink.policy.classify(module, name)
        if verdict.verdict is Verdict.UNSAFE:
            severity, why = Severity.CRITICAL, verdict.reason
        elif verdict.verdict is Verdict.SAFE or target.startswith(KNOWN):
            return
        else:
            severity, why = Severity.HIGH, "not a class of the libraries these configs use"
    sink.add(
        RULE,
        severity,
        f"Hydra config at {where} instantiates {target}{called}{partial}: {why}; "
        "hydra.utils.instantiate (NeMo restore_from, Lightning CLI) imports and calls it",
        global_=target,
    )
