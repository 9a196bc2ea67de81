"""One socket write per answer (``serve/conn.py``, ``_Gathering``), on a real server.

uvicorn writes a response's head and body apart; with TCP_NODELAY each write is a
segment and a wake-up of the client. The gateway gathers them. These tests count the
writes that reach the connection's real transport, and check what gathering must not
break: pipelined answers in order, an interim ``100 Continue`` sent at once, a
response on a connection the app closes, and other routes.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import httpx
import pytest

from mlwarden.serve import conn
from mlwarden.serve.log import read_records


class _Counting:
    """A transport that counts ``write`` calls (and passes everything on)."""

    writes: list[bytes]

    def __init__(self, transport: asyncio.Transport, writes: list[bytes]) -> None:
        self._transport = transport
        self.writes = writes

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


@pytest.fixture
def writes(monkeypatch) -> list[bytes]:
    """Every write to a served connection's transport, recorded from here on."""
    seen: list[bytes] = []
    made = conn.GuardedProtocol.connection_made

    def counting(self, transport):  # type: ignore[no-untyped-def]
        made(self, _Counting(transport, seen))

    monkeypatch.setattr(conn.GuardedProtocol, "connection_made", counting)
    return seen


@pytest.fixture
def live(gw_config, serve, sklearn_target):
    return serve(sklearn_target, gw_config())


def _addr(live) -> tuple[str, int]:
    host, port = live.url.removeprefix("http://").split(":")
    return host, int(port)


def _request(key: str, body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"POST /v1/predict HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        + b"Authorization: Bearer %s\r\nContent-Length: %d\r\n" % (key.encode(), len(body))
        + extra
        + b"\r\n"
        + body
    )


def _read_answers(sock: socket.socket, count: int, seconds: float = 5.0) -> list[bytes]:
    """``count`` whole HTTP answers (head and Content-Length body) read from ``sock``."""
    sock.settimeout(seconds)
    data, out = b"", []
    while len(out) < count:
        end = data.find(b"\r\n\r\n")
        if end >= 0:
            head = data[:end].decode("latin-1").lower()
            length = int(head.split("content-length:")[1].split("\r\n")[0])
            if len(data) >= end + 4 + length:
                out.append(data[: end + 4 + length])
                data = data[end + 4 + length :]
                continue
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {len(out)} answers"
        data += chunk
    return out


def test_each_answer_on_a_kept_alive_connection_is_one_write(live, keys, digits, writes) -> None:
    body = json.dumps({"inputs": digits[2][:1].tolist()}).encode()
    with socket.create_connection(_addr(live)) as s:
        for _ in range(12):
            s.sendall(_request(keys["scores"], body))
            (answer,) = _read_answers(s, 1)
            assert answer.startswith(b"HTTP/1.1 200 ")
            assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["predictions"]
    time.sleep(0.2)  # the loop's last step is over
    answers = [w for w in writes if w.startswith(b"HTTP/1.1 ")]
    assert len(answers) == 12
    # head and body in the same write: uvicorn alone writes them apart
    assert len(writes) == 12, [w[:40] for w in writes]
    assert all(b"predictions" in w for w in answers)


def test_pipelined_requests_are_answered_whole_and_in_order(live, keys, digits, writes) -> None:
    xs = digits[2][:3]
    reqs = [_request(keys["scores"], json.dumps({"inputs": [x.tolist()]}).encode()) for x in xs]
    reqs[1] = _request(keys["scores"], b"{not json")  # a 422 between two answers
    with socket.create_connection(_addr(live)) as s:
        s.sendall(b"".join(reqs))
        answers = _read_answers(s, 3)
    statuses = [a.split(b" ", 2)[1] for a in answers]
    assert statuses == [b"200", b"422", b"200"]
    ids = [a.lower().split(b"x-request-id: ")[1][:32].decode() for a in answers]
    rows = {r["request_id"]: r["status"] for r in read_records(live.gateway.audit.path)}
    assert [rows[i] for i in ids] == [200, 422, 200]  # each audited before it was sent
    assert sum(w.startswith(b"HTTP/1.1 ") for w in writes) == 3


def test_an_interim_100_continue_is_not_held_back(live, keys, digits, writes) -> None:
    body = json.dumps({"inputs": digits[2][:1].tolist()}).encode()
    head = _request(keys["scores"], body, b"Expect: 100-continue\r\n")[: -len(body)]
    with socket.create_connection(_addr(live)) as s:
        s.sendall(head)
        s.settimeout(2.0)
        t0 = time.perf_counter()
        interim = s.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 "), interim
        assert time.perf_counter() - t0 < 1.0
        s.sendall(body)
        (answer,) = _read_answers(s, 1)
    assert answer.startswith(b"HTTP/1.1 200 ")


def test_an_answer_before_closing_is_sent_whole(live, keys) -> None:
    # Refused on its head: the gateway answers 401 with Connection: close, then closes.
    with socket.create_connection(_addr(live)) as s:
        s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: gw\r\nContent-Length: 5000\r\n\r\n")
        s.settimeout(5.0)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 401 ")
    assert data.endswith(b"}") and b"missing API key" in data


def test_other_routes_still_answer_through_the_gathered_transport(live, keys) -> None:
    with httpx.Client(timeout=5) as c:
        assert c.get(f"{live.url}/healthz").json()["status"] == "ok"
        text = c.get(f"{live.url}/metrics", headers={"Authorization": f"Bearer {keys['admin']}"})
        assert text.status_code == 200 and "mlwarden_requests_total" in text.text
        assert c.get(f"{live.url}/v1/predict").status_code == 405
