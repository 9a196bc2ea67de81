"""Run the gateway under uvicorn and load its model only through the safe loaders.

:func:`load_model` resolves the ``MODEL`` argument of ``mlwarden serve``: a file,
URL or ``module:factory`` goes through :func:`mlwarden.supplychain.load_target`
(scanned first, refused unless safe); anything else is a registry reference and goes
through :func:`mlwarden.integrity.load_verified` (signature and digest checked); ``--registry`` forces the latter.
:func:`run_gateway` binds the socket, prints the URL once the app has started and
serves until interrupted.
"""

from __future__ import annotations

import hashlib
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn

from mlwarden.core.errors import UserError
from mlwarden.core.target import BaseTarget, Target, as_target
from mlwarden.serve.app import create_app
from mlwarden.serve.config import GatewayConfig


def _file_version(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return f"sha256:{h.hexdigest()[:16]}"


def load_model(
    spec: str, *, registry: Path | None = None, trust: list[Path] | None = None
) -> tuple[Target, str]:
    """The model named by ``spec`` and a version string for answers.

    Files, URLs and ``module:factory`` specs load through the scanner's
    ``load_target``; other names are registry references loaded with
    ``integrity.load_verified``. Nothing is ever unpickled here.
    """
    path = Path(spec)
    if registry is None and (path.exists() or "://" in spec or _is_factory(spec)):
        try:
            from mlwarden.supplychain import load_target  # type: ignore[attr-defined]
        except ImportError:
            raise UserError(
                "loading a model file needs mlwarden.supplychain.load_target, which this build lacks"
            ) from None
        target = load_target(spec, access="score")
        version = _file_version(path) if path.is_file() else spec
        return target, version
    try:
        from mlwarden.integrity import load_verified  # type: ignore[attr-defined]
    except ImportError:
        raise UserError(
            f"{spec!r} is not a file, and registry references need mlwarden.integrity.load_verified, "
            "which this build lacks"
        ) from None
    loaded: Any = load_verified(spec, registry=registry, trust=tuple(trust or ()))
    target = loaded if isinstance(loaded, BaseTarget) else as_target(loaded)
    return target, spec


def _is_factory(spec: str) -> bool:
    """``package.module:factory`` (dotted identifiers, a colon, an identifier)."""
    module, sep, attr = spec.partition(":")
    return bool(sep) and attr.isidentifier() and all(p.isidentifier() for p in module.split("."))


class _Server(uvicorn.Server):
    """uvicorn server that announces its URL once the app is up."""

    def __init__(self, config: uvicorn.Config, announce: Callable[[], None]) -> None:
        super().__init__(config)
        self._announce = announce

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._announce()


def run_gateway(
    target: Target,
    config: GatewayConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    base_dir: Path | None = None,
    model_version: str | None = None,
) -> None:
    """Serve ``target`` behind the gateway on ``host:port`` (port 0 picks a free one)."""
    app = create_app(target, config, base_dir=base_dir, model_version=model_version)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror})") from None
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    url = f"http://{shown}:{bound}"

    def announce() -> None:
        print(f"mlwarden gateway ready at {url} (POST {url}/v1/predict)", flush=True)
        sys.stdout.flush()

    server = _Server(
        uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"), announce
    )
    server.run(sockets=[sock])
