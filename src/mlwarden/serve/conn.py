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
* **a fast path for predict**: a ``POST /v1/predict HTTP/1.1`` whose whole head arrives
  in one read and is plainly valid (:func:`parse_fast_head`: what h11 accepts and reads
  the same way, without chunked bodies, ``Expect`` or ``Upgrade``) is handed to the
  gateway (``ConnectionGuard.handler``) and answered in one write without h11 and
  uvicorn's ASGI cycle, which cost the event loop ~0.1-0.2 ms a request; h11 stays idle,
  and every other request is h11's as before;
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
import re
import socket
import sys
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import h11
from starlette.requests import ClientDisconnect
from uvicorn.protocols.http.h11_impl import STATUS_PHRASES, H11Protocol

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

# The fast path (GuardedProtocol._fast_take): a whole request head that starts with this
# line, arrives in one read and passes parse_fast_head is answered without h11.
FAST_LINE = b"POST /v1/predict HTTP/1.1\r\n"
FAST_MAX_BODY = 256 * 1024  # larger declared bodies go through h11
# h11's field-name (RFC 9110 token) and a value of visible ASCII, spaces and tabs: the
# values h11 accepts less obs-text (bytes 0x80-0xff), which goes to h11.
_FIELD = re.compile(rb"([-!#$%&'*+.^_`|~0-9a-zA-Z]+):([\t\x20-\x7e]*)")
# Fields whose meaning the fast path does not implement: such requests go to h11.
_SLOW_FIELDS = frozenset({b"transfer-encoding", b"expect", b"upgrade"})
Handler = Callable[["FastRequest"], Awaitable[tuple[int, list[tuple[bytes, bytes]], bytes]]]


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
        # POST /v1/predict without h11 (GuardedProtocol._fast_take): the gateway's answer
        # to a FastRequest as (status, header fields, body); None: every request via h11.
        self.handler: Handler | None = None
        self.fast = 0  # requests answered on the fast path

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
        out += [
            "# HELP mlwarden_requests_fast_path_total Predict requests read without h11 "
            "(a plain head whole in one read).",
            "# TYPE mlwarden_requests_fast_path_total counter",
            f"mlwarden_requests_fast_path_total {self.fast}",
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


def parse_fast_head(fields: bytes) -> tuple[list[tuple[bytes, bytes]], int, bool] | None:
    """The header fields, ``Content-Length`` and ``Connection: close`` of a request head
    (``fields``: the bytes between the request line and the blank line) that h11 would
    accept and read the same way; ``None``: h11 decides (accepts, refuses or implements).

    Taken here: at most :data:`MAX_HEAD_FIELDS` lines of ``token ":" value``, values of
    visible ASCII, spaces and tabs (stripped at both ends, names lower-cased, as h11 and
    uvicorn give them to the app), exactly one ``Host``, exactly one ``Content-Length`` of
    digits up to :data:`FAST_MAX_BODY`, ``Connection`` absent, ``keep-alive`` or
    ``close``, and none of ``Transfer-Encoding``, ``Expect``, ``Upgrade``. Anything else
    (folded lines, obs-text, a chunked body, a duplicate length) is h11's.
    """
    lines = fields.split(b"\r\n")
    if len(lines) > MAX_HEAD_FIELDS:
        return None
    out: list[tuple[bytes, bytes]] = []
    length, hosts, close = -1, 0, False
    for line in lines:
        m = _FIELD.fullmatch(line)
        if m is None:
            return None
        name, value = m[1].lower(), m[2].strip(b" \t")
        if name == b"content-length":
            if length >= 0 or not value.isdigit() or len(value) > 12:
                return None
            length = int(value)
        elif name == b"host":
            hosts += 1
        elif name == b"connection":
            token = value.lower()
            if token == b"close":
                close = True
            elif token != b"keep-alive":
                return None
        elif name in _SLOW_FIELDS:
            return None
        out.append((name, value))
    if hosts != 1 or not 0 <= length <= FAST_MAX_BODY:
        return None
    return out, length, close


class FastRequest:
    """A request taken on the fast path, as the gateway reads it: ``scope["headers"]``
    (lower-cased names, as uvicorn gives them) and :meth:`stream`, its body as it
    arrives (at most ``length`` bytes; the bytes after it are the next request's)."""

    __slots__ = ("scope", "length", "close", "received", "lost", "_chunks", "_waiter", "_loop")

    def __init__(
        self,
        headers: list[tuple[bytes, bytes]],
        length: int,
        close: bool,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.scope: dict[str, Any] = {"headers": headers}
        self.length = length
        self.close = close
        self.received = 0
        self.lost = False  # the client went away
        self._chunks: list[bytes] = []
        self._waiter: asyncio.Future[None] | None = None
        self._loop = loop

    def feed(self, data: bytes) -> bytes:
        """Take the body's share of ``data``; return the rest (the next request's bytes)."""
        need = self.length - self.received
        if need <= 0 or not data:
            return data
        part, rest = (data, b"") if len(data) <= need else (data[:need], data[need:])
        self._chunks.append(part)
        self.received += len(part)
        self._wake()
        return rest

    def disconnected(self) -> None:
        self.lost = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def stream(self) -> AsyncIterator[bytes]:
        """The body's chunks; raises Starlette's ``ClientDisconnect`` if the client left
        before sending all of it (what ``Request.stream`` raises on the h11 path)."""
        while True:
            if self._chunks:
                chunks, self._chunks = self._chunks, []
                yield chunks[0] if len(chunks) == 1 else b"".join(chunks)
            if self.received >= self.length:
                return
            if self.lost:
                raise ClientDisconnect()
            self._waiter = self._loop.create_future()
            await self._waiter
            self._waiter = None


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
        self._fast: FastRequest | None = None  # the fast-path request in progress
        self._held = b""  # bytes after it (a pipelined request), taken once it is answered
        self._closing = False  # close once the fast-path answer is sent (shutdown)
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
        if self._fast is not None:  # the body of the request in progress, then held
            self._hold(self._fast.feed(data))
            return
        if not self._in_request:
            self._arm()  # the deadline runs from the first byte of a kept-alive request
            if self.guard.handler is not None and self._fast_ready():
                self._unset_keepalive_if_required()
                data = self._fast_take(data)
                if not data:
                    return
        super().data_received(data)

    # -- the fast path ------------------------------------------------------------------
    # uvicorn's h11 protocol spends ~0.1-0.15 ms of the event loop's CPU a request (h11's
    # parsing and state machine, the ASGI cycle, h11 again for the answer): as much as
    # the gateway's own checks and audit row together. A predict request whose whole
    # head arrives in one read and is plainly valid (parse_fast_head) is answered here
    # instead: its fields handed to the gateway (guard.handler) as h11 and uvicorn would
    # hand them, its answer written as uvicorn would write it, in one write. h11 never
    # sees those bytes and stays idle, so the next request may take either path; every
    # other request, and any head the fast path does not take whole, is h11's as before.

    def _fast_ready(self) -> bool:
        """No request in progress, h11 idle with nothing buffered, no concurrency cap."""
        c = self.conn
        return (
            c.our_state is h11.IDLE
            and c.their_state is h11.IDLE
            and not c.trailing_data[0]
            and self.limit_concurrency is None
        )

    def _fast_take(self, data: bytes) -> bytes:
        """Start a fast-path request from ``data``; return what h11 must read instead."""
        if not data.startswith(FAST_LINE):
            return data
        end = data.find(b"\r\n\r\n", len(FAST_LINE) - 2, MAX_HEAD_BYTES + 4)
        if end < 0:
            return data  # head not whole in this read (or over the cap): h11's
        parsed = parse_fast_head(data[len(FAST_LINE) : end])
        if parsed is None:
            return data
        headers, length, close = parsed
        self._in_request = True
        self._disarm()
        self.guard.busy(self)
        self.guard.fast += 1
        req = self._fast = FastRequest(headers, length, close, self.loop)
        self._hold(req.feed(data[end + 4 :]))
        task = self.loop.create_task(self._fast_run(req))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)
        return b""

    def _hold(self, data: bytes) -> None:
        """Keep bytes that came after the fast-path request (read once it is answered)
        and stop reading until then, as uvicorn does for a pipelined request: a client
        cannot make the connection buffer more than one read beyond its request."""
        if data:
            self._held += data
            self.flow.pause_reading()

    async def _fast_run(self, req: FastRequest) -> None:
        handler = self.guard.handler
        assert handler is not None
        try:
            status, headers, body = await handler(req)
        except Exception:  # the gateway audits its own errors; this is a last resort
            self.logger.error("Exception in ASGI application", exc_info=True)
            status, headers = 500, [(b"content-type", b"text/plain; charset=utf-8")]
            body = b"Internal Server Error"
        self._fast_answer(req, status, headers, body)

    def _fast_answer(
        self, req: FastRequest, status: int, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> None:
        """Write the answer as uvicorn would (its default fields first, ``connection:
        close`` when either side closes), then take the next request or close."""
        self.server_state.total_requests += 1
        self._fast = None
        # an answer before the whole body arrived cannot keep the connection in step
        close = req.close or self._closing or req.received < req.length
        said = False  # the gateway's own fields say close (a refusal on the head)
        out = [b"HTTP/1.1 %d %s\r\n" % (status, STATUS_PHRASES[status])]
        for name, value in (*self.server_state.default_headers, *headers):
            said = said or (name == b"connection" and value.lower() == b"close")
            out += (name, b": ", value, b"\r\n")
        if close and not said:
            out.append(b"connection: close\r\n")
        close = close or said
        out += (b"\r\n", body)
        transport = self.transport
        if not transport.is_closing():
            transport.write(b"".join(out))
        if close or transport.is_closing():
            transport.close()
            return
        self._in_request = False
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )
        self.guard.waiting(self)
        self.flow.resume_reading()
        held, self._held = self._held, b""
        if held:
            self.data_received(held)

    def shutdown(self) -> None:
        if self._fast is not None:  # answered first, then closed
            self._closing = True
            return
        super().shutdown()

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
        if self._fast is not None:
            self._fast.disconnected()
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
