"""Connection hygiene for the gateway: header deadline, connection caps, TCP_NODELAY.

uvicorn alone lets any client hold a connection open forever before it finishes a
request's headers (its keep-alive timeout only starts after a response), accepts
connections until the process runs out of file descriptors and then logs a traceback
for every failed ``accept()``. :func:`guarded_protocol` builds a uvicorn HTTP
protocol class (h11) that adds, per server:

* a **header deadline**: a connection that has not sent a complete request head
  within ``header_timeout_s`` seconds of connecting (or of the first byte of its next
  request on a kept-alive connection) is closed;
* a **total cap** (``max_connections``) and a **per-client cap**
  (``max_connections_per_client``, by peer IP address). A new connection over a cap
  evicts the connection of that scope that has waited longest *without a request in
  progress* (idle or still sending headers); only when every connection of the scope
  is busy with a request is the new one refused. Eviction rather than refusal means
  that a client holding thousands of idle connections cannot lock out the next
  client, even one behind the same address;
* ``TCP_NODELAY`` on every accepted socket (asyncio sets it only on sockets created
  with ``IPPROTO_TCP``; without it Nagle's algorithm and delayed ACKs add ~40 ms to
  every answer after the first on a kept-alive connection) and TCP keep-alive probes
  (after 60 s idle, every 10 s, 3 tries) so that the kernel drops half-open
  connections whose peer vanished;
* a **head cap**: a request head of more than 100 header fields or 16 KB is answered
  431 and the connection closed before h11 parses it;
* **one write per answer**: uvicorn writes a response's head and its body in two
  ``send`` calls, so with ``TCP_NODELAY`` every answer leaves as two segments that wake
  the client twice. A request's writes are gathered (:class:`_Gathering`) and sent in
  one call when the response is complete (or, for a response still streaming, at the
  end of the event-loop step that wrote them);
* counters instead of log lines: :class:`ConnectionGuard` counts opened, evicted,
  refused, timed-out and oversized-head connections (``/metrics`` exports them), and
  :func:`quiet_connection_logs` limits asyncio's and uvicorn's per-connection
  warnings to one line per message and minute, without tracebacks.

Example::

    guard = ConnectionGuard(header_timeout_s=5, max_connections=4096, max_per_client=256)
    config = uvicorn.Config(app, http=guarded_protocol(guard), timeout_keep_alive=5)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
import threading
import time
from collections import Counter, OrderedDict
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

REASONS = ("header_timeout", "evicted", "refused", "head_too_large")
# A request head of more fields or bytes is refused with 431 before h11 parses it: h11
# takes ~1.5 us a field, so one unauthenticated request of 10,000 one-byte headers cost
# 18 ms of server CPU (45 times a plain 401). The limits are gunicorn's field count
# and the 16 KB uvicorn is given for an incomplete head (h11_max_incomplete_event_size).
MAX_HEAD_FIELDS = 100
MAX_HEAD_BYTES = 16 * 1024
_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
)
_KEEPALIVE = [
    (getattr(socket, name), value)
    for name, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3))
    if hasattr(socket, name)
]


class ConnectionGuard:
    """Shared bookkeeping of one server's connections (event-loop thread only).

    Args:
        header_timeout_s: seconds a connection may take to send a request head.
        max_connections: most connections open at once.
        max_per_client: most connections open at once from one peer address.
    """

    def __init__(
        self, *, header_timeout_s: float, max_connections: int, max_per_client: int
    ) -> None:
        self.header_timeout_s = header_timeout_s
        self.max_connections = max_connections
        self.max_per_client = max_per_client
        self.open = 0
        self.opened = 0
        # True when the listening socket carries the TCP options (see tune_listener):
        # accepted sockets inherit them on Linux, saving five system calls a connection.
        self.inherited_options = False
        self.dropped: Counter[str] = Counter(dict.fromkeys(REASONS, 0))
        self._per_client: Counter[str] = Counter()
        # Connections without a request in progress, oldest first: eviction candidates.
        self._waiting: OrderedDict[GuardedProtocol, None] = OrderedDict()
        self._waiting_by_client: dict[str, OrderedDict[GuardedProtocol, None]] = {}

    def admit(self, conn: GuardedProtocol) -> bool:
        """Register a new connection; evict idle ones over a cap; ``False``: refuse it."""
        client = conn.peer
        if self._per_client[client] >= self.max_per_client and not self._evict(
            self._waiting_by_client.get(client)
        ):
            self.dropped["refused"] += 1
            return False
        if self.open >= self.max_connections and not self._evict(self._waiting):
            self.dropped["refused"] += 1
            return False
        self.open += 1
        self.opened += 1
        self._per_client[client] += 1
        self.waiting(conn)
        return True

    def _evict(self, queue: OrderedDict[GuardedProtocol, None] | None) -> bool:
        if not queue:
            return False
        victim = next(iter(queue))
        self.dropped["evicted"] += 1
        victim.drop()
        return True

    def waiting(self, conn: GuardedProtocol) -> None:
        """``conn`` has no request in progress (new, or its last answer was sent)."""
        self._waiting[conn] = None
        self._waiting.move_to_end(conn)
        queue = self._waiting_by_client.setdefault(conn.peer, OrderedDict())
        queue[conn] = None
        queue.move_to_end(conn)

    def busy(self, conn: GuardedProtocol) -> None:
        """``conn`` sent a complete request head; it is no longer an eviction candidate."""
        self._waiting.pop(conn, None)
        queue = self._waiting_by_client.get(conn.peer)
        if queue is not None:
            queue.pop(conn, None)

    def release(self, conn: GuardedProtocol) -> None:
        """``conn`` is closed (it must have been admitted)."""
        self.busy(conn)
        queue = self._waiting_by_client.get(conn.peer)
        if queue is not None and not queue:
            del self._waiting_by_client[conn.peer]
        self.open -= 1
        self._per_client[conn.peer] -= 1
        if self._per_client[conn.peer] <= 0:
            del self._per_client[conn.peer]

    def metrics_lines(self) -> list[str]:
        """Prometheus text for the connection counters."""
        out = [
            "# HELP mlwarden_connections_open Client connections open now.",
            "# TYPE mlwarden_connections_open gauge",
            f"mlwarden_connections_open {self.open}",
            "# HELP mlwarden_connections_total Client connections accepted.",
            "# TYPE mlwarden_connections_total counter",
            f"mlwarden_connections_total {self.opened}",
            "# HELP mlwarden_connections_dropped_total Connections closed by the gateway, "
            "by reason.",
            "# TYPE mlwarden_connections_dropped_total counter",
        ]
        out += [
            f'mlwarden_connections_dropped_total{{reason="{r}"}} {self.dropped[r]}' for r in REASONS
        ]
        return out


class _Gathering:
    """A connection's transport as one request's response cycle sees it: writes are
    gathered and sent in one ``write`` at the end of the response.

    Loopback sends cost a system call each, plus a wake-up of the client per segment
    (``TCP_NODELAY`` sends each at once); a response head and body written apart cost
    two of each. :meth:`flush` runs when the response is complete
    (:meth:`GuardedProtocol.on_response_complete`), before the transport is closed, and
    at the end of the event-loop step of the first gathered write at the latest, so a
    streamed response is never held back longer than that step. Everything else
    (``is_closing``, ``get_extra_info``, ...) is the transport's own.
    """

    __slots__ = ("_transport", "_loop", "_parts")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not data:
            return
        if not self._parts:
            self._loop.call_soon(self.flush)
        self._parts.append(data)

    def flush(self) -> None:
        """Send what was gathered (one ``write``); nothing if the transport is closing."""
        if not self._parts:
            return
        data = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
        self._parts = []
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GuardedProtocol(H11Protocol):
    """uvicorn's h11 protocol with the guard's deadline and caps (see module docstring)."""

    guard: ConnectionGuard

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.peer = self.client[0] if self.client else "?"
        self._deadline: asyncio.TimerHandle | None = None
        self._gathering: _Gathering | None = None
        self._admitted = False
        self._in_request = False
        if not self.guard.inherited_options:
            sock = transport.get_extra_info("socket")
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                with contextlib.suppress(OSError):  # the peer may already be gone
                    _tcp_options(sock)
        if not self.guard.admit(self):
            transport.abort()
            return
        self._admitted = True
        self._arm()

    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.guard.header_timeout_s, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if not self._in_request and not self.transport.is_closing():
            self.guard.dropped["header_timeout"] += 1
            self.transport.abort()

    def drop(self) -> None:
        """Close this connection now (evicted); it has no request in progress."""
        self.guard.busy(self)  # never picked twice
        self._disarm()
        self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if not self._admitted:
            return
        if not self._in_request:
            self._arm()  # the deadline runs from the first byte of a kept-alive request
        super().data_received(data)

    def on_response_complete(self) -> None:
        self._in_request = False
        if self._gathering is not None:
            self._gathering.flush()  # the answer leaves in one write, before the next cycle
        super().on_response_complete()
        if self._in_request:  # a pipelined request started right away
            return
        if not self.transport.is_closing():
            self.guard.waiting(self)

    def handle_events(self) -> None:
        if not self._in_request and self._admitted and self._head_too_large():
            return
        before = self.cycle
        super().handle_events()
        if self.cycle is not before and self.cycle is not None and self._admitted:
            self._in_request = True
            self._disarm()
            self.guard.busy(self)
            if self._gathering is None:
                self._gathering = _Gathering(self.transport, self.loop)
            self.cycle.transport = self._gathering  # type: ignore[assignment]

    def _head_too_large(self) -> bool:
        """Refuse (431, close) a buffered next request head over the field or byte cap.

        Runs before h11 parses a head, for the first request of a connection and for
        pipelined ones alike (both reach :meth:`handle_events` with the head buffered).
        """
        buf = self.conn.trailing_data[0]
        end = buf.find(b"\r\n\r\n", 0, MAX_HEAD_BYTES + 4)
        head = buf[: MAX_HEAD_BYTES + 4] if end < 0 else buf[:end]
        if len(head) <= MAX_HEAD_BYTES and head.count(b"\n") <= MAX_HEAD_FIELDS:
            return False
        self.guard.dropped["head_too_large"] += 1
        detail = b'{"detail":"request head over %d header fields or %d bytes"}' % (
            MAX_HEAD_FIELDS,
            MAX_HEAD_BYTES,
        )
        self.transport.write(_TOO_LARGE % (len(detail), detail))
        self.transport.close()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._admitted:
            self._admitted = False
            self.guard.release(self)
        super().connection_lost(exc)


def _tcp_options(sock: Any) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for opt, value in _KEEPALIVE:  # probe after 60 s idle, give up after 90 s
        sock.setsockopt(socket.IPPROTO_TCP, opt, value)


def tune_listener(sock: socket.socket, guard: ConnectionGuard) -> None:
    """Set TCP_NODELAY and keep-alive probes on the *listening* socket.

    Linux copies them to every accepted socket, so the guard's protocol need not set
    them one connection at a time (under a flood of thousands of connections that is
    work the event loop does before it reaches the next request). Elsewhere the
    protocol keeps setting them itself.
    """
    if sys.platform != "linux" or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    try:
        _tcp_options(sock)
    except OSError:
        return
    guard.inherited_options = True


def guarded_protocol(guard: ConnectionGuard) -> type[GuardedProtocol]:
    """A protocol class bound to ``guard``, for ``uvicorn.Config(http=...)``."""
    return type("GuardedH11Protocol", (GuardedProtocol,), {"guard": guard})


class _OncePerMinute(logging.Filter):
    """Pass each distinct message at most once per ``period`` seconds, without traceback."""

    def __init__(self, period: float = 60.0) -> None:
        super().__init__()
        self.period = period
        self._last: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.CRITICAL:
            return True
        msg = str(record.msg)[:200]
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(msg, -self.period) < self.period:
                self._suppressed[msg] += 1
                return False
            self._last[msg] = now
            skipped = self._suppressed.pop(msg, 0)
            if len(self._last) > 1000:  # bound the memory of distinct messages
                self._last.clear()
        record.exc_info = None
        record.exc_text = None
        if skipped:
            record.msg = f"{record.msg} ({skipped} more like this not logged)"
        return True


_FILTER = _OncePerMinute()


def quiet_connection_logs() -> None:
    """Rate-limit asyncio's and uvicorn's per-connection warnings (idempotent).

    Under a connection flood asyncio logs ``socket.accept() out of system resource``
    with a traceback on every retry and uvicorn logs every malformed request; both are
    limited to one line per distinct message and minute.
    """
    for name in ("asyncio", "uvicorn.error"):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def raise_fd_limit() -> int:
    """Raise the soft open-file limit to the hard limit; return the soft limit now."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return 1 << 16
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        want = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError):
            pass
    return int(soft)


def uvicorn_options(guard: ConnectionGuard, keep_alive_s: float) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.Config`` that install ``guard``."""
    return {
        "http": guarded_protocol(guard),
        "timeout_keep_alive": keep_alive_s,
        "h11_max_incomplete_event_size": 16 * 1024,
    }
