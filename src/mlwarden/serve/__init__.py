"""The guarded serving gateway: auth, limits, validation, defences, detection, audit log.

Public API: :func:`create_app` (a FastAPI app for a loaded target),
:func:`gateway_config_report` (MLW-GW-* findings for a config file),
:class:`GatewayConfig` / :func:`load_config`. The ``mlwarden serve`` and
``mlwarden gateway`` commands are thin wrappers (``mlwarden.cli.serve``).

The names are imported on first use (PEP 562): ``mlwarden gateway add-key`` needs
only :mod:`mlwarden.serve.auth` and :mod:`mlwarden.serve.config`, and importing the
app (torch, scipy, FastAPI) would cost it seconds.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlwarden.serve.app import create_app
    from mlwarden.serve.config import GatewayConfig, load_config
    from mlwarden.serve.findings import gateway_config_report

__all__ = ["GatewayConfig", "create_app", "gateway_config_report", "load_config"]

_WHERE = {
    "create_app": "mlwarden.serve.app",
    "GatewayConfig": "mlwarden.serve.config",
    "load_config": "mlwarden.serve.config",
    "gateway_config_report": "mlwarden.serve.findings",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'mlwarden.serve' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
