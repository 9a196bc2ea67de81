"""The guarded serving gateway: auth, limits, validation, defences, detection, audit log.

Public API: :func:`create_app` (a FastAPI app for a loaded target),
:func:`gateway_config_report` (MLW-GW-* findings for a config file),
:class:`GatewayConfig` / :func:`load_config`. The ``mlwarden serve`` and
``mlwarden gateway`` commands are thin wrappers (``mlwarden.cli.serve``).
"""

from __future__ import annotations

from mlwarden.serve.app import create_app
from mlwarden.serve.config import GatewayConfig, load_config
from mlwarden.serve.findings import gateway_config_report

__all__ = ["GatewayConfig", "create_app", "gateway_config_report", "load_config"]
