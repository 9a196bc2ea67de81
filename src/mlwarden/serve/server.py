"""Run the gateway under uvicorn and load its model only through the safe loaders.

:func:`load_model` resolves the ``MODEL`` argument of ``mlwarden serve``: a registry
reference (``NAME@VERSION``) goes through :func:`mlwarden.integrity.load_verified`
(signature and digests checked), a file, URL or ``module:factory`` through
:func:`mlwarden.supplychain.load_target` (scanned first, refused unless safe).
:func:`run_gateway` binds the socket, prints the URL once the app has started and
serves until interrupted.
"""

from __future__ import annotations

import gc
import hashlib
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn

from mlwarden.core.errors import UserError
from mlwarden.core.target import BaseTarget, Target
from mlwarden.serve.app import create_app
from mlwarden.serve.config import GatewayConfig
from mlwarden.serve.conn import (
    ConnectionGuard,
    quiet_connection_logs,
    raise_fd_limit,
    tune_listener,
    uvicorn_options,
)


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

    A registry reference (``NAME@VERSION`` or ``NAME@ALIAS``, or any spec when
    ``registry`` is given) loads with ``integrity.load_verified``, which checks the
    signature against ``trust`` and every byte against the signed manifest. Anything
    else (a model file, an ``http(s)://`` URL, ``module:factory``) loads with the
    scanner's ``supplychain.load_target``, which refuses unsafe files. Nothing is ever
    unpickled here.
    """
    path = Path(spec)
    if registry is not None or ("@" in spec and not path.exists() and "://" not in spec):
        from mlwarden.integrity import load_verified

        loaded: Any = load_verified(spec, registry=registry, trust=list(trust or []))
        if not isinstance(loaded, BaseTarget):
            raise UserError(
                f"{spec} is not a model in the registry (it loaded as {type(loaded).__name__})"
            )
        return loaded, spec
    from mlwarden.supplychain import load_target

    target = load_target(spec, access="score")
    version = _file_version(path) if path.is_file() else spec
    return target, version


class _Server(uvicorn.Server):
    """uvicorn server that announces its URL once the app is up."""

    def __init__(self, config: uvicorn.Config, announce: Callable[[], None]) -> None:
        super().__init__(config)
        self._announce = announce

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            # Everything loaded so far (torch, the model, the app) lives as long as the
            # server: moved out of the collector's reach, it is not traversed again by
            # every full collection. Under a connection flood those collections, each
            # walking millions of objects, were most of the time the loop needed per
            # connection; they also stall answers under ordinary load.
            gc.collect()
            gc.freeze()
            self._announce()


def server_config(app: Any, **kwargs: Any) -> uvicorn.Config:
    """The uvicorn config that serves a gateway ``app`` with its connection guard.

    Installs the guarded h11 protocol (header deadline, connection caps,
    TCP_NODELAY; see :mod:`mlwarden.serve.conn`), raises the open-file limit, caps
    ``max_connections`` below it and rate-limits per-connection log lines. Extra
    ``kwargs`` go to ``uvicorn.Config`` (e.g. ``host``, ``port``).
    """
    gateway = app.state.gateway
    srv = gateway.config.server
    fds = raise_fd_limit()
    # Leave room for the audit log, the model's files and the listening socket.
    cap = max(1, min(srv.max_connections, fds - 64))
    guard = ConnectionGuard(
        header_timeout_s=srv.header_timeout_s,
        max_connections=cap,
        max_per_client=min(srv.max_connections_per_client, cap),
    )
    gateway.guard = guard
    guard.handler = gateway.answer  # POST /v1/predict without h11 (conn.GuardedProtocol)
    quiet_connection_logs()
    options: dict[str, Any] = {"log_level": "warning", "access_log": False, "lifespan": "on"}
    options.update(uvicorn_options(guard, srv.keep_alive_s))
    # The kernel queues connections that are not accepted yet up to the listen backlog
    # and drops the SYN of the next one (its client retries after 1 s, then 3 s). A
    # queue that holds a whole cap's worth lets /healthz in during a connection flood;
    # the guard then evicts idle connections over the cap.
    options["backlog"] = listen_backlog(cap)
    # uvloop (a dependency where it builds) accepts and drops connections 2-3x faster than
    # asyncio's loop, which creates a task and eight handles per accepted connection: the
    # first /healthz behind a burst of 5,000 idle connections 560-840 -> 240-310 ms.
    options["loop"] = "auto"
    options.update(kwargs)
    return uvicorn.Config(app, **options)


def listen_backlog(cap: int) -> int:
    """The listen backlog for ``cap`` connections: ``cap + 1024``, at most the kernel's limit.

    Linux silently caps it at ``net.core.somaxconn`` (4096 by default since 5.4); it is
    read so that the value asked for is the value used.
    """
    want = max(2048, cap + 1024)
    try:
        limit = int(Path("/proc/sys/net/core/somaxconn").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return min(want, 65535)
    return max(1, min(want, limit, 65535))


def run_gateway(
    target: Target,
    config: GatewayConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    base_dir: Path | None = None,
    model_version: str | None = None,
    config_path: Path | None = None,
) -> None:
    """Serve ``target`` behind the gateway on ``host:port`` (port 0 picks a free one).

    With ``config_path``, keys added to that file while serving take effect.
    """
    from threadpoolctl import threadpool_limits

    # Requests run concurrently in a thread pool; the detectors' small matrix-vector
    # products gain nothing from BLAS threads and, on a busy machine, lose a lot to
    # their spinning (5 ms instead of 0.3 ms a query measured on 2 loaded cores).
    threadpool_limits(1, user_api="blas")
    app = create_app(
        target, config, base_dir=base_dir, model_version=model_version, config_path=config_path
    )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP: asyncio enables TCP_NODELAY only on sockets created with it.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
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

    uv_config = server_config(app)
    tune_listener(sock, app.state.gateway.guard)
    server = _Server(uv_config, announce)
    server.run(sockets=[sock])
