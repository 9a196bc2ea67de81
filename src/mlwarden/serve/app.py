"""The guarded inference gateway: a FastAPI app in front of one model.

Routes:

* ``POST /v1/predict`` — ``{"inputs": [...]}`` -> ``{"predictions": [...],
  "model_version": ...}``. Order of checks, cheapest first: on the request head
  alone, one ``Authorization`` header and not both ``Content-Length`` and
  ``Transfer-Encoding`` (400), the API key (401 missing/invalid; audit
  rows of these are sampled), role or blocked key (403), room for one more query in
  the key's bucket and budget (429 with ``Retry-After``), the declared body size
  (413) — a request refused there is answered with ``Connection: close`` and its body
  is never read; then the body (413 while streaming, 408 too slow), the input schema
  (422; a body refused from 408 on spends one token of the key's rate), rate and budget for the whole batch (429), input restoration, the model (an
  exception is a 422), stateful attack detection (alert; log, throttle or block; a
  key's queries are analysed ``detection.batch`` at a time, so an alert can come up to
  ``batch - 1`` queries late),
  output hardening for the key's role, then the audit record is committed and only
  then the answer sent.
* ``GET /metrics`` — Prometheus text; needs a key whose role has ``metrics``.
* ``GET /healthz`` — liveness and the model version; no key, not audited.

ATLAS: guards AML.T0040 (AI Model Inference API Access) and AML.T0024 (Exfiltration
via AI Inference API) with mitigations AML.M0019 (access control), AML.M0004 (query
limits), AML.M0010 (input restoration), AML.M0002 (output obfuscation), AML.M0015
(adversarial input detection) and AML.M0024 (telemetry logging).

Example::

    app = create_app(TorchTarget(model, access="score"), load_config(Path("gateway.yaml")))
    uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import orjson
import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from mlwarden.core.errors import InputFileError, UserError
from mlwarden.core.target import Target, probabilities
from mlwarden.defenses.output import harden_output, round_scores
from mlwarden.serve.auth import KeyStore, bearer_token
from mlwarden.serve.config import GatewayConfig, OutputPolicy, Role, load_config
from mlwarden.serve.conn import ConnectionGuard
from mlwarden.serve.crosskey import STATE_KEY, STATE_KIND
from mlwarden.serve.limits import KeyLimiter
from mlwarden.serve.log import (
    AuditLog,
    AuditLogError,
    AuditRecord,
    Sampler,
    read_state,
    write_state,
)
from mlwarden.serve.metrics import Metrics
from mlwarden.serve.monitor import Monitor, compile_kernels
from mlwarden.serve.sketch import STATE_KEY as SECRET_KEY
from mlwarden.serve.sketch import STATE_KIND as SECRET_KIND
from mlwarden.serve.sketch import new_secret
from mlwarden.serve.validate import INPUT_PARSERS, RequestError, check_length, read_body
from mlwarden.serve.workers import WorkerPool

ANONYMOUS = "anonymous"
KERNELS_WAIT_S = 60.0  # at most this long at start-up for the detectors' kernels


class Incoming(Protocol):
    """A predict request as the gateway reads it: Starlette's ``Request``, or the
    connection's fast path (:class:`mlwarden.serve.conn.FastRequest`)."""

    @property
    def scope(self) -> Mapping[str, Any]: ...  # "headers": raw (lower-case name, value) pairs

    def stream(self) -> AsyncIterator[bytes]: ...


@dataclass
class _Caller:
    name: str
    role: Role


@dataclass
class Answer:
    """A predict answer before it is sent: status, JSON body bytes, extra headers."""

    status: int
    body: bytes
    headers: dict[str, str]

    def asgi_headers(self) -> list[tuple[bytes, bytes]]:
        out = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(self.body))]
        out += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()]
        return out

    def response(self) -> Response:
        return Response(self.body, self.status, self.headers, media_type="application/json")


class _Head:
    """The request head fields the predict checks read, in one pass over the raw headers
    (Starlette's ``Headers`` is built and scanned once per lookup: 7.9 against 1.2 us).

    Names arrive lower-cased (h11 and the ASGI spec); values are decoded as Latin-1,
    as Starlette does. ``length`` is the first ``Content-Length`` (h11 refuses
    conflicting ones), ``auth`` every ``Authorization`` value.
    """

    __slots__ = ("auth", "length", "chunked")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self.auth: list[str] = []
        self.length: str | None = None
        self.chunked = False
        for name, value in raw:
            if name == b"authorization":
                self.auth.append(value.decode("latin-1"))
            elif name == b"content-length":
                if self.length is None:
                    self.length = value.decode("latin-1")
            elif name == b"transfer-encoding":
                self.chunked = True


class _RequestIds:
    """Request ids: 32 random hex digits (128 bits from ``os.urandom``, like ``uuid4().hex``).

    ``os.urandom`` releases the GIL for its system call, and on the event loop under
    load every release hands the GIL to a waiting worker thread: the loop then waits
    for it back (168 us a call in-process, cProfile wall time, at 8 concurrent
    requests). The random bytes are drawn 4 KB at a time instead (one release per 256
    ids) and never reused; a forked child starts with fresh ones.
    """

    _CHUNK = 4096

    def __init__(self) -> None:
        self._buf = b""
        self._at = 0
        self._lock = threading.Lock()  # servers in several threads may share it
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._buf, self._at = b"", 0

    def __call__(self) -> str:
        with self._lock:
            at = self._at
            if at + 16 > len(self._buf):
                self._buf, at = os.urandom(self._CHUNK), 0
            self._at = at + 16
            return self._buf[at : at + 16].hex()


_request_id = _RequestIds()


class Gateway:
    """State shared by the routes: keys, limiters, monitor, audit log, metrics, model."""

    def __init__(
        self,
        target: Target,
        config: GatewayConfig,
        *,
        base_dir: Path | None = None,
        model_version: str | None = None,
        config_path: Path | None = None,
    ) -> None:
        self.target = target
        self.config = config
        self.config_path = config_path
        self._checked = time.monotonic()
        self._mtime = _mtime(config_path)
        self.model_version = config.model_version or model_version or target.name
        self.roles = config.all_roles()
        self.keys = KeyStore({n: k.hash for n, k in config.keys.items()})
        self.limiters: dict[str, KeyLimiter] = {}
        for name, key in config.keys.items():
            self.limiters[name] = self._limiter(key.rate, key.burst, key.budget, key.window_s)
        if config.anonymous is not None:
            a = config.anonymous
            self.limiters[ANONYMOUS] = self._limiter(a.rate, a.burst, a.budget, a.window_s)
        self.blocked: set[str] = set()
        parser = INPUT_PARSERS.get(config.input.modality)
        if parser is None:
            raise UserError(
                f"input.modality {config.input.modality!r} is not known; expected one of "
                f"{', '.join(sorted(INPUT_PARSERS))}"
            )
        self.parse = parser
        self.guard: ConnectionGuard | None = None  # set by serve.server.server_config
        self.unauthenticated = Sampler(rate=1.0, burst=20)
        lo, hi = config.input.range or (0.0, 1.0)
        self.monitor = Monitor(
            config.detection, config.input.shape, scale=hi - lo, modality=config.input.modality
        )
        self.monitor.allowances = _allowances(config)
        self.monitor.profiles = _profiles(config)
        self.metrics = Metrics()
        # Model calls and detectors run here, off the event loop: a queue and one
        # call_soon_threadsafe a call (anyio's run_in_threadpool cost ~15 us more CPU a
        # call than run_in_executor, which costs ~12 us more than this; serve/workers.py).
        self.pool = WorkerPool(config.server.threads or _workers(), "mlwarden-infer")
        self.chain = None
        # text: the normalisation chain restores, and the detectors see MinHash bits
        self.text_chain: Callable[[np.ndarray], np.ndarray] | None = None
        self.text = config.input.modality == "text"
        if config.restoration and self.text:
            from mlwarden.serve.text import text_restoration

            self.text_chain = text_restoration(config.restoration, target)
        elif config.restoration:
            from mlwarden.defenses.transforms import build_chain

            bounds = config.input.range or (0.0, 1.0)
            spec = config.restoration
            if config.input.sample_rate is not None:  # audio steps work at the upload rate
                from mlwarden.defenses.audio import with_sample_rate

                spec = with_sample_rate(spec, config.input.sample_rate)
            self.chain = build_chain(spec, bounds=bounds)
        self.audit: AuditLog | None = None
        if config.audit.enabled:
            path = Path(config.audit.path)
            if not path.is_absolute() and base_dir is not None:
                path = base_dir / path
            try:
                self.audit = AuditLog(path, synchronous=config.audit.synchronous)
                self.restore(self._secret(path, read_state(path)))
            except (AuditLogError, sqlite3.Error) as exc:
                raise UserError(f"{exc}; set 'audit: {{path: ...}}' to a writable file") from None

    def _secret(
        self, path: Path, state: dict[tuple[str, str], bytes]
    ) -> dict[tuple[str, str], bytes]:
        """Hand the monitor the gateway's sketch secret (:mod:`mlwarden.serve.sketch`): the
        stored one, or one made now and stored (the database is 0600); returns ``state``.
        Never logged: a key's blob holds a digest of it, nothing else does."""
        secret = state.get((SECRET_KEY, SECRET_KIND))
        if secret is None or len(secret) < 16:
            secret = new_secret()
            write_state(path, [(SECRET_KEY, SECRET_KIND, secret)])
        self.monitor.use_secret(secret)
        return state

    def restore(self, state: dict[tuple[str, str], bytes]) -> None:
        """Blocks, budgets and detector histories stored in the audit database.

        They are written in the same transaction as the audit row of the request that
        changed them (the similarity history and the repeat filter every ``_SAVE_EVERY``
        distinct queries and at shutdown), so a restart, even after kill -9, resets
        none of them (a kill -9 loses at most the last ``_SAVE_EVERY`` queries' history).
        """
        for (key, kind), value in state.items():
            if kind == "blocked":
                self.blocked.add(key)
            elif kind == "limits" and key in self.limiters:
                self.limiters[key].restore(value)
            elif kind == "detector":
                self.monitor.load(key, value)
            elif kind == STATE_KIND and key == STATE_KEY and self.monitor.crosskey is not None:
                self.monitor.crosskey.load(value)  # every key's recent queries (crosskey.py)

    def _limiter(
        self, rate: float | None, burst: int | None, budget: int | None, window_s: float | None
    ) -> KeyLimiter:
        d = self.config.limits
        return KeyLimiter(
            rate=rate if rate is not None else d.rate,
            burst=burst if burst is not None else d.burst,
            budget=budget if budget is not None else d.budget,
            window_s=window_s if window_s is not None else d.window_s,
        )

    def close(self) -> None:
        self.pool.shutdown()  # requests still running get their audit rows
        for key in self.limiters:  # queries still queued for the detectors
            late = self.monitor.flush(key)
            if late:
                logging.getLogger("mlwarden.serve").warning(
                    "alerts on key %r's last queries at shutdown: %s", key, ", ".join(sorted(late))
                )
                for kind in late:
                    self.metrics.alert(key, kind)
        if self.audit is not None:
            self.audit.close()
            states = [(k, "detector", self.monitor.dump(k)) for k in self.limiters]
            if self.monitor.crosskey is not None:
                states.append((STATE_KEY, STATE_KIND, self.monitor.crosskey.dump()))
            write_state(self.audit.path, [(k, kind, v) for k, kind, v in states if v is not None])

    # -- steps ----------------------------------------------------------------------
    def reload_keys(self) -> None:
        """Take up keys added, removed or re-roled in the config file (stat once a second).

        Only ``keys`` and ``roles`` are re-read; a new key gets its limiter; changed
        limits of existing keys, and every other section, need a restart. A file that no
        longer parses is ignored (the keys in use stay) and reported once.
        """
        now = time.monotonic()
        if self.config_path is None or now - self._checked < 1.0:
            return
        self._checked = now
        try:
            mtime = self.config_path.stat().st_mtime_ns
        except OSError:
            return
        if mtime == self._mtime:
            return
        self._mtime = mtime
        try:
            fresh = load_config(self.config_path)
        except InputFileError as exc:
            logging.getLogger("mlwarden.serve").warning("config not reloaded: %s", exc)
            return
        self.config.keys, self.config.roles = fresh.keys, fresh.roles
        self.roles = self.config.all_roles()
        self.keys = KeyStore({n: k.hash for n, k in fresh.keys.items()})
        self.monitor.allowances = _allowances(self.config)
        self.monitor.profiles = _profiles(self.config)
        for name, key in fresh.keys.items():
            if name not in self.limiters:
                self.limiters[name] = self._limiter(key.rate, key.burst, key.budget, key.window_s)

    def authenticate(self, header: str | None) -> _Caller:
        self.reload_keys()
        token = bearer_token(header)
        if token is None:
            if self.config.anonymous is not None:
                return _Caller(ANONYMOUS, self.roles[self.config.anonymous.role])
            raise RequestError(
                401,
                "missing API key: send 'Authorization: Bearer <key>'",
                {"WWW-Authenticate": "Bearer"},
            )
        name = self.keys.identify(token)
        key = self.config.keys.get(name) if name is not None else None
        if name is None or key is None or key.role not in self.roles:
            raise RequestError(401, "invalid API key", {"WWW-Authenticate": "Bearer"})
        return _Caller(name, self.roles[key.role])

    def infer(self, caller: _Caller, x: np.ndarray) -> tuple[list[Any], dict[str, list[int]]]:
        """Restoration, model, detection and output hardening (runs in a worker thread)."""
        t0 = time.thread_time()
        xin = x
        if self.text_chain is not None:
            xin = self.text_chain(x)
        elif self.chain is not None:
            with torch.no_grad():
                xin = self.chain(torch.from_numpy(np.ascontiguousarray(x))).numpy()
        try:
            probs = probabilities(self.target, xin)
        except Exception as exc:  # a model that fails on an input is the input's problem
            raise RequestError(
                422, f"the model could not process this input ({type(exc).__name__})"
            ) from None
        if probs.ndim != 2 or len(probs) != len(x) or not np.isfinite(probs).all():
            raise RequestError(422, "the model returned no usable scores for this input")
        t1 = time.thread_time()
        self.metrics.add_cpu("model", t1 - t0)
        seen = x
        if self.text and self.monitor.enabled:
            from mlwarden.serve.text import text_features

            sim = self.config.detection.similarity
            seen = text_features(x, sim.max_dims, sim.radius, sim.near)
        flagged = (
            self.monitor.submit(
                caller.name, seen, probs.argmax(axis=1), probs, x if self.text else None
            )
            if self.monitor.enabled
            else {}
        )
        self.metrics.add_cpu("detectors", time.thread_time() - t1)
        return _release(probs, caller.role.output), flagged

    def _dump(self, key: str) -> bytes | None:
        """The key's detector histories to save (in a worker thread; CPU counted)."""
        t0 = time.thread_time()
        blob = self.monitor.dump(key)
        self.metrics.add_cpu("detectors", time.thread_time() - t0)
        return blob

    def admit(self, head: _Head, rec: AuditRecord) -> _Caller:
        """Checks on the request head only, before a byte of the body is read.

        Duplicate ``Authorization`` headers (400), the key (401), its role and block
        (403), whether its bucket and budget have room for one more query (429) and
        the declared body size (413): a caller refused here costs no body read.
        """
        if len(head.auth) > 1:
            raise RequestError(400, "send exactly one Authorization header")
        if head.chunked and head.length is not None:
            # RFC 9112 6.3: a request smuggling attempt through a proxy that reads the other
            raise RequestError(400, "send Content-Length or Transfer-Encoding, not both")
        caller = self.authenticate(head.auth[0] if head.auth else None)
        rec.key = caller.name
        if not caller.role.predict:
            raise RequestError(
                403, f"key {caller.name!r} may not call predict (role without predict)"
            )
        if caller.name in self.blocked:
            raise RequestError(
                403, "this key is blocked after an attack was detected; contact the operator"
            )
        limiter = self.limiters[caller.name]
        _raise_if_limited(limiter.check(), rec, limiter)
        check_length(head.length, self.config.input.max_body_bytes)
        return caller

    async def read(self, request: Incoming, length: str | None) -> bytes:
        schema = self.config.input
        try:
            async with asyncio.timeout(schema.read_timeout_s):  # no extra task, unlike wait_for
                return await read_body(length, request.stream(), schema.max_body_bytes)
        except TimeoutError:
            raise RequestError(
                408, f"request body not received within {schema.read_timeout_s} s"
            ) from None

    async def answer(self, request: Incoming) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """``POST /v1/predict`` as status, header fields and body: for the ASGI route and
        the connection's fast path (:class:`mlwarden.serve.conn.FastRequest`) alike."""
        try:
            answer = await self.predict(request)
        except Exception:  # predict audits its own errors; this is a last resort
            logging.getLogger("mlwarden.serve").exception("predict failed")
            answer = Answer(500, b'{"detail":"internal error"}', {})
        return answer.status, answer.asgi_headers(), answer.body

    async def predict(self, request: Incoming) -> Answer:
        start = time.perf_counter()
        rec = AuditRecord(
            request_id=_request_id(), key=None, path="/v1/predict", status=200, decision="allow"
        )
        payload: dict[str, Any] = {}
        headers: dict[str, str] = {}
        body_read = False
        caller: _Caller | None = None
        spent = False
        try:
            head = _Head(request.scope["headers"])
            caller = self.admit(head, rec)
            body = await self.read(request, head.length)
            body_read = True
            rec.input_digest = hashlib.sha256(body).hexdigest()
            x = self.parse(body, self.config.input)
            rec.n_inputs = len(x)
            limiter = self.limiters[caller.name]
            _raise_if_limited(limiter.take(len(x)), rec, limiter)
            spent = True
            if limiter.budget is not None or limiter.factor < 1.0:
                rec.state.append((caller.name, "limits", limiter.snapshot()))
            predictions, flagged = await self.pool.run(self.infer, caller, x)
            if self.monitor.unsaved(caller.name) >= _SAVE_EVERY:
                blob = await self.pool.run(self._dump, caller.name)
                if blob is not None:
                    rec.state.append((caller.name, "detector", blob))
            ring = self.monitor.crosskey
            if ring is not None and ring.unsaved >= _SAVE_EVERY:
                blob = await self.pool.run(ring.dump)
                if blob is not None:
                    rec.state.append((STATE_KEY, STATE_KIND, blob))
            if flagged:
                self._act(caller, flagged, rec)
            self.metrics.add_queries(caller.name, len(x))
            payload = {"predictions": predictions, "model_version": self.model_version}
        except RequestError as exc:
            rec.status = exc.status
            if rec.decision == "allow":
                rec.decision = _DECISIONS.get(exc.status, "rejected")
            rec.detail = f"{exc.message}; {rec.detail}" if rec.detail else exc.message
            payload = {"detail": exc.message}
            headers = exc.headers
            if caller is not None and not spent and exc.status in (408, 413, 422):
                self.limiters[caller.name].refused()  # its body was read (or begun) for nothing
            if not body_read:
                # The unread body would still have to be received and parsed to keep the
                # connection: close it instead, so a refused caller costs nothing more.
                headers["Connection"] = "close"
        except Exception as exc:  # a gateway bug: still audited, and no traceback to the caller
            rec.status, rec.decision = 500, "error"
            rec.detail = f"internal error: {type(exc).__name__}"
            payload = {"detail": "internal error"}
        headers["X-Request-Id"] = rec.request_id
        answer = Answer(rec.status, orjson.dumps(payload), headers)
        status = await self._record(rec, start)
        if status != rec.status:
            answer = Answer(status, _UNAVAILABLE, {"Retry-After": "1"})
        self.metrics.observe(rec.path, status, time.perf_counter() - start)
        return answer

    def _act(self, caller: _Caller, flagged: dict[str, list[int]], rec: AuditRecord) -> None:
        """Record the alerts of a request and apply the configured action."""
        kinds = sorted(flagged)
        # "kind@first:count": the first flagged input of the batch and how many were; the
        # detectors analyse a key's queries in batches (Monitor.submit), so first < 0 is
        # an earlier query of the key (-1: the one just before this request's first).
        rec.alerts = ",".join(f"{k}@{flagged[k][0]}:{len(flagged[k])}" for k in kinds)
        for kind in kinds:
            self.metrics.alert(caller.name, kind)
        if "crosskey" in flagged and self.monitor.crosskey is not None:  # who took part
            rec.detail = "crosskey keys: " + ",".join(
                self.monitor.crosskey.parties.get(caller.name, ())
            )
        action = self.config.detection.action
        if action == "block":
            self.blocked.add(caller.name)
            rec.decision = "blocked"
            rec.state.append((caller.name, "blocked", f"{rec.request_id} {rec.alerts}".encode()))
            raise RequestError(
                403, f"query stream flagged as an attack ({', '.join(kinds)}); key blocked"
            )
        if action == "throttle":
            limiter = self.limiters[caller.name]
            limiter.throttle(self.config.detection.throttle_factor)
            rec.decision = "allow_throttled"
            rec.state.append((caller.name, "limits", limiter.snapshot()))

    async def metrics_text(self, request: Request) -> Response:
        start = time.perf_counter()
        rec = AuditRecord(
            request_id=_request_id(), key=None, path="/metrics", status=200, decision="allow"
        )
        try:
            auth = request.headers.getlist("authorization")
            if len(auth) > 1:
                raise RequestError(400, "send exactly one Authorization header")
            caller = self.authenticate(auth[0] if auth else None)
            rec.key = caller.name
            if not caller.role.metrics:
                raise RequestError(403, f"key {caller.name!r} may not read metrics")
            extra = self.guard.metrics_lines() if self.guard is not None else []
            resp: Response = PlainTextResponse(
                self.metrics.render(extra), media_type="text/plain; version=0.0.4"
            )
        except RequestError as exc:
            rec.status = exc.status
            rec.decision = _DECISIONS.get(exc.status, "rejected")
            rec.detail = exc.message
            resp = JSONResponse(
                {"detail": exc.message}, status_code=exc.status, headers=exc.headers
            )
        resp.headers["X-Request-Id"] = rec.request_id
        return await self._finish(rec, start, resp)

    async def _finish(self, rec: AuditRecord, start: float, resp: Response) -> Response:
        if await self._record(rec, start) == 503:
            resp = JSONResponse(
                {"detail": "audit log unavailable"}, status_code=503, headers={"Retry-After": "1"}
            )
        self.metrics.observe(rec.path, resp.status_code, time.perf_counter() - start)
        return resp

    async def _record(self, rec: AuditRecord, start: float) -> int:
        """Commit the audit row of a request: the status to answer (503: not stored)."""
        rec.latency_ms = (time.perf_counter() - start) * 1000.0
        logged = True
        if rec.status == 401:
            # A flood without a key must not grow the log by a row per request: rows are
            # sampled, each saying how many were skipped; /metrics counts them all.
            skipped = self.unauthenticated.admit()
            logged = skipped is not None
            if skipped:
                rec.detail += f" ({skipped} earlier unauthenticated requests not logged)"
        if self.audit is not None and logged:
            try:
                await self.audit.record(rec)
            except AuditLogError:
                return 503  # fail closed: an answer that cannot be audited is not given
        return rec.status


_UNAVAILABLE = orjson.dumps({"detail": "audit log unavailable"})

# Detector histories are written with a request's audit row after this many new
# distinct queries of its key (a kill -9 loses at most that many), and at shutdown.
_SAVE_EVERY = 1024


def _raise_if_limited(
    verdict: tuple[float, str], rec: AuditRecord, limiter: KeyLimiter | None = None
) -> None:
    """429 with ``Retry-After`` when a limiter says wait (``verdict`` from take/check).

    The wait is whole seconds, rounded up and at least 1, in both the header (RFC 9110
    ``delay-seconds``) and the message, so a client is never told to retry after 0 s.
    A key slowed down by the attack monitor (``throttle``) is told that, not that it
    exceeded its rate: its operator must know it was flagged to get it lifted.
    """
    wait, reason = verdict
    if wait <= 0:
        return
    seconds = max(1, math.ceil(wait))
    if reason == "budget":
        rec.decision = "budget_exceeded"
        what = "query budget exhausted"
    elif reason == "throttled":
        rec.decision = "throttled"
        rate = limiter.effective_rate if limiter is not None else None
        what = "throttled for suspected probing: this key's queries were flagged as a " + (
            "possible extraction or evasion search, so its rate is cut"
            + (f" to {rate:.3g} queries/s" if rate is not None else "")
            + "; contact the operator if this is wrong"
        )
    else:
        rec.decision = "rate_limited"
        what = "rate limit exceeded"
    raise RequestError(429, f"{what}; retry after {seconds} s", {"Retry-After": str(seconds)})


_DECISIONS = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    408: "timeout",
    413: "too_large",
    422: "invalid_input",
    429: "rate_limited",
}


def _release(probs: np.ndarray, policy: OutputPolicy) -> list[Any]:
    """``harden_output(probs, policy)`` as lists for the JSON answer; ``probs`` as
    :meth:`Gateway.infer` checked them ((N, C), finite).

    ``round`` (the ``scores`` role) skips ``harden_output``'s second check of the same
    array (2.5 of 6.7 us a request): its float32 values, each rounded again in float64
    so that the JSON shows the kept decimals (0.33, not 0.3300000131130219).
    """
    if policy.mode == "round":
        kept = round_scores(probs, policy.decimals)
        return kept.astype(np.float64).round(policy.decimals).tolist()  # type: ignore[no-any-return]
    out = harden_output(probs, policy.mode, k=policy.k, decimals=policy.decimals)
    return out.tolist()  # type: ignore[no-any-return]


def _workers() -> int:
    """Threads for model calls and detectors unless ``server.threads`` sets them.

    Python's default, ``cores + 4`` (at most 32): enough calls in flight for a model
    behind HTTP, which mostly waits. For a local model more threads than cores only
    take turns; ``cores + 1`` (3 on 2 cores) cost 3-17% less CPU a request at 8
    concurrent young keys in three runs, but 6% more in one with full histories, on a
    loaded machine (``docs/benchmarks/gateway.md``): not the default until a quiet
    run decides. ``benchmarks/gateway_load.py --threads N`` measures it.
    """
    cores = getattr(os, "process_cpu_count", os.cpu_count)() or 1
    return min(32, cores + 4)


def _allowances(config: GatewayConfig) -> dict[str, int]:
    """Per-key near-duplicate allowances (``keys.NAME.near_duplicates``)."""
    return {
        name: key.near_duplicates
        for name, key in config.keys.items()
        if key.near_duplicates is not None
    }


def _profiles(config: GatewayConfig) -> dict[str, str]:
    """Per-key declared workloads (``keys.NAME.profile``: :mod:`mlwarden.serve.profiles`)."""
    return {name: key.profile for name, key in config.keys.items() if key.profile is not None}


def _mtime(path: Path | None) -> int | None:
    try:
        return None if path is None else path.stat().st_mtime_ns
    except OSError:
        return None


class _GatewayApp(FastAPI):
    """The FastAPI app, with ``POST /v1/predict`` answered before its middleware stack.

    The predict route does its own error handling (every exception becomes an audited
    answer) and needs no routing, dependency injection or exception middleware: taking
    it straight from the ASGI entry point saves about a tenth of a millisecond of CPU
    per request (``benchmarks/gateway_load.py``, attribution). Every other path, method
    and the lifespan go through FastAPI as usual (a GET on the predict path is a 405).
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/v1/predict" and scope["method"] == "POST":
            gateway: Gateway = self.state.gateway
            status, headers, body = await gateway.answer(Request(scope, receive))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await super().__call__(scope, receive, send)


def create_app(
    target: Target,
    config: GatewayConfig,
    *,
    base_dir: Path | None = None,
    model_version: str | None = None,
    config_path: Path | None = None,
) -> FastAPI:
    """Build the gateway app for an already loaded ``target``.

    Args:
        target: the model (load files with :func:`mlwarden.supplychain.load_target` or
            registry names with :func:`mlwarden.integrity.load_verified`; never directly).
        config: the gateway configuration.
        base_dir: directory that a relative audit-log path is taken from (the config's).
        model_version: reported in every answer unless the config sets one.
        config_path: the file ``config`` came from; keys added to it (``gateway
            add-key``) are taken up while serving, within a second.
    """
    gateway = Gateway(
        target, config, base_dir=base_dir, model_version=model_version, config_path=config_path
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        # The detectors' kernels before the first request (the server listens only once
        # this returns); past the bound numpy answers meanwhile, with the same alerts.
        try:
            await asyncio.wait_for(asyncio.to_thread(compile_kernels), KERNELS_WAIT_S)
        except TimeoutError:
            logging.getLogger("mlwarden.serve").warning(
                "detector kernels still compiling after %.0f s; numpy runs meanwhile",
                KERNELS_WAIT_S,
            )
        yield
        gateway.close()

    app = _GatewayApp(
        title="mlwarden gateway",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        # A trailing-slash redirect would build its Location from the Host header.
        redirect_slashes=False,
    )
    app.state.gateway = gateway

    # Answered by _GatewayApp before routing; the route makes other methods a 405.
    @app.post("/v1/predict")
    async def predict(request: Request) -> Response:
        return (await gateway.predict(request)).response()

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        return await gateway.metrics_text(request)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "model_version": gateway.model_version}

    return app
