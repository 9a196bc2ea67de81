"""The connection's fast path for ``POST /v1/predict`` (``serve/conn.py``), on a real server.

A predict request whose whole head arrives in one read and is plainly valid is answered
without h11 (``GuardedProtocol._fast_take``); everything else goes through h11 as
before. These tests check that the fast path reads a head exactly as h11 does (or
leaves it to h11), answers as the h11 path answers, waits for a body sent after its
head, and leaves every other request to h11.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import time

import h11
import numpy as np
import pytest

from mlwarden.serve.conn import FAST_LINE, FAST_MAX_BODY, MAX_HEAD_FIELDS, parse_fast_head
from mlwarden.serve.log import read_records


@pytest.fixture
def live(gw_config, serve, sklearn_target):
    return serve(sklearn_target, gw_config())


def _addr(live) -> tuple[str, int]:
    host, port = live.url.removeprefix("http://").split(":")
    return host, int(port)


def _head(key: str, length: int, extra: bytes = b"", line: bytes = FAST_LINE) -> bytes:
    return (
        line
        + b"Host: gw\r\nContent-Type: application/json\r\n"
        + b"Authorization: Bearer %s\r\nContent-Length: %d\r\n" % (key.encode(), length)
        + extra
        + b"\r\n"
    )


def _exchange(live, *parts: bytes, pause: float = 0.0) -> tuple[int, dict[bytes, bytes], bytes]:
    """Send ``parts`` (``pause`` s apart) on a new connection; the answer's status,
    fields (lower-case names) and body."""
    with socket.create_connection(_addr(live), timeout=5) as s:
        for i, part in enumerate(parts):
            if i and pause:
                time.sleep(pause)
            s.sendall(part)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        fields[name.strip().lower()] = value.strip()
    return int(lines[0].split(b" ")[1]), fields, body


def _length(data: bytes) -> int:
    head = data.split(b"\r\n\r\n", 1)[0].lower()
    if b"content-length:" not in head:
        return 0
    return int(head.split(b"content-length:")[1].split(b"\r\n")[0])


def test_a_plain_request_takes_the_fast_path_and_answers_as_h11_does(live, keys, digits) -> None:
    body = json.dumps({"inputs": digits[2][:2].tolist()}).encode()
    guard = live.gateway.guard
    before = guard.fast
    fast = _exchange(live, _head(keys["scores"], len(body)) + body)
    assert guard.fast == before + 1
    # obs-text in a field h11 accepts and the gateway ignores: the same request via h11
    slow = _exchange(live, _head(keys["scores"], len(body), b"X-Note: caf\xe9\r\n") + body)
    assert guard.fast == before + 1
    assert fast[0] == slow[0] == 200
    assert set(fast[1]) == set(slow[1]) == {
        b"date", b"server", b"content-type", b"content-length", b"x-request-id"
    }  # fmt: skip
    assert fast[1][b"content-type"] == slow[1][b"content-type"] == b"application/json"
    assert json.loads(fast[2])["predictions"] == json.loads(slow[2])["predictions"]
    assert f"mlwarden_requests_fast_path_total {before + 1}" in guard.metrics_lines()
    rows = {r["request_id"]: r for r in read_records(live.gateway.audit.path)}
    for answer in (fast, slow):
        row = rows[answer[1][b"x-request-id"].decode()]
        assert (row["status"], row["n_inputs"], row["key"]) == (200, 2, "scores")


def test_a_body_sent_after_its_head_is_awaited(live, keys, digits) -> None:
    body = json.dumps({"inputs": digits[2][:1].tolist()}).encode()
    before = live.gateway.guard.fast
    status, _, answer = _exchange(
        live, _head(keys["scores"], len(body)), body[:10], body[10:], pause=0.15
    )
    assert status == 200 and json.loads(answer)["predictions"]
    assert live.gateway.guard.fast == before + 1


def test_a_refused_key_is_answered_on_its_head_and_the_connection_closed(live, keys) -> None:
    before = live.gateway.guard.fast
    status, fields, answer = _exchange(live, _head("mlw_not_a_key", 4000))
    assert status == 401 and b"invalid API key" in answer
    assert fields[b"connection"] == b"close"
    assert live.gateway.guard.fast == before + 1


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        # a chunked body, and both framings at once (the gateway's own 400)
        (b"Transfer-Encoding: chunked\r\n", 200),
        (b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", 400),
        (b"Host: other\r\n", 400),  # two Host fields: h11 refuses
        (b"Connection: upgrade\r\nUpgrade: h2c\r\n", 200),
        (b" folded\r\n", 400),  # obs-fold: h11 refuses
        (b"X-Ctl: a\x7fb\r\n", 200),  # DEL: h11 takes it (as obs-text), the fast path not
    ],
)
def test_heads_the_fast_path_leaves_to_h11_are_answered_by_h11(
    live, keys, digits, request_bytes: bytes, status: int
) -> None:
    body = json.dumps({"inputs": digits[2][:1].tolist()}).encode()
    if b"chunked" in request_bytes:
        head = (
            FAST_LINE
            + b"Host: gw\r\nAuthorization: Bearer %s\r\n" % keys["scores"].encode()
            + request_bytes
            + b"\r\n"
        )
        data = head + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    else:
        data = _head(keys["scores"], len(body), request_bytes) + body
    before = live.gateway.guard.fast
    assert _exchange(live, data)[0] == status
    assert live.gateway.guard.fast == before


@pytest.mark.parametrize(
    "line", [b"POST /v1/predict?x=1 HTTP/1.1\r\n", b"POST /v1/predict HTTP/1.0\r\n"]
)
def test_other_request_lines_to_predict_still_answer(live, keys, digits, line: bytes) -> None:
    body = json.dumps({"inputs": digits[2][:1].tolist()}).encode()
    before = live.gateway.guard.fast
    status, _, answer = _exchange(live, _head(keys["scores"], len(body), line=line) + body)
    assert status == 200 and json.loads(answer)["predictions"]
    assert live.gateway.guard.fast == before


def test_a_client_gone_before_its_body_is_audited_and_the_server_goes_on(
    live, keys, digits
) -> None:
    body = json.dumps({"inputs": digits[2][:1].tolist()}).encode()
    with socket.create_connection(_addr(live), timeout=5) as s:
        s.sendall(_head(keys["scores"], len(body)) + body[:5])
    deadline = time.monotonic() + 5
    while len(read_records(live.gateway.audit.path)) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [r["n_inputs"] for r in read_records(live.gateway.audit.path)] == [0]
    status, _, _ = _exchange(live, _head(keys["scores"], len(body)) + body)
    assert status == 200


# -- the head parser against h11 ----------------------------------------------------------
_NAMES = [b"Host", b"host", b"Content-Length", b"content-length", b"Connection", b"X-A",
          b"Authorization", b"Expect", b"Transfer-Encoding", b"Upgrade", b"X y", b"X:y", b""]  # fmt: skip
_VALUES = [b"gw", b"5", b"05", b"+5", b"5 ", b" 5", b"-1", b"close", b"Keep-Alive", b"upgrade",
           b"a\tb", b"a  b", b"caf\xe9", b"a\x00b", b"a\x7fb", b"a\x0bb", b"", b"  ",
           b"100-continue", b"chunked", b"%d" % (FAST_MAX_BODY + 1)]  # fmt: skip


def _h11_reads(fields: bytes) -> tuple[list[tuple[bytes, bytes]], int] | None:
    """What h11 makes of a request head (fields as uvicorn hands them, and the length)."""
    c = h11.Connection(h11.SERVER)
    c.receive_data(FAST_LINE + fields + b"\r\n\r\n")
    try:
        event = c.next_event()
    except h11.RemoteProtocolError:
        return None
    assert isinstance(event, h11.Request)
    got = [(k.lower(), v) for k, v in event.headers]
    lengths = [int(v) for k, v in got if k == b"content-length"]
    return got, lengths[0] if lengths else -1


def test_the_fast_path_reads_a_head_exactly_as_h11_or_leaves_it() -> None:
    rng = np.random.default_rng(0)
    taken = left = 0
    for _ in range(6000):
        n = int(rng.integers(0, 5))
        lines = [b"Host: gw", b"Content-Length: 5"][: int(rng.choice(3, p=[0.1, 0.1, 0.8]))]
        for _ in range(n):
            sep = [b": ", b":", b" : ", b":\t"][int(rng.integers(0, 4))]
            lines.append(
                _NAMES[rng.integers(len(_NAMES))] + sep + _VALUES[rng.integers(len(_VALUES))]
            )
        rng.shuffle(lines)
        fields = b"\r\n".join(lines)
        ours = parse_fast_head(fields)
        if ours is None:
            left += 1
            continue
        taken += 1
        theirs = _h11_reads(fields)
        assert theirs is not None, fields  # never a head h11 refuses
        assert (ours[0], ours[1]) == theirs, fields
        assert ours[2] == any(k == b"connection" and v.lower() == b"close" for k, v in ours[0])
    assert taken > 500 and left > 500  # both branches were exercised


def test_the_fast_path_leaves_long_heads_and_large_bodies_to_h11() -> None:
    many = b"\r\n".join([b"Host: gw", b"Content-Length: 5"] + [b"X-A: 1"] * MAX_HEAD_FIELDS)
    assert parse_fast_head(many) is None
    assert parse_fast_head(b"Host: gw\r\nContent-Length: %d" % FAST_MAX_BODY) is not None
    assert parse_fast_head(b"Host: gw\r\nContent-Length: %d" % (FAST_MAX_BODY + 1)) is None
    assert parse_fast_head(b"Host: gw") is None  # no length: h11 reads an empty body


def test_many_pipelined_requests_are_answered_in_order_on_the_fast_path(live, keys, digits) -> None:
    xs = digits[2][:20]
    bodies = [json.dumps({"inputs": [x.tolist()]}).encode() for x in xs]
    before = live.gateway.guard.fast
    with socket.create_connection(_addr(live), timeout=10) as s:
        s.sendall(b"".join(_head(keys["scores"], len(b)) + b for b in bodies))
        data = b""
        while data.count(b"HTTP/1.1 ") < 20 or len(data.rsplit(b"\r\n\r\n", 1)[1]) < _length(
            data.rsplit(b"HTTP/1.1 ", 1)[1]
        ):
            chunk = s.recv(65536)
            assert chunk, "connection closed early"
            data += chunk
    answers = data.split(b"HTTP/1.1 ")[1:]
    assert [a[:3] for a in answers] == [b"200"] * 20
    ids = [a.lower().split(b"x-request-id: ")[1][:32].decode() for a in answers]
    digests = {r["request_id"]: r["input_digest"] for r in read_records(live.gateway.audit.path)}
    assert [digests[i] for i in ids] == [hashlib.sha256(b).hexdigest() for b in bodies]
    assert live.gateway.guard.fast == before + 20  # each taken once the one before was answered


def test_a_request_in_flight_at_shutdown_is_answered_then_closed(live, keys, digits) -> None:
    guard = live.gateway.guard
    answer = guard.handler

    async def slow(req):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.5)
        return await answer(req)

    guard.handler = slow
    body = json.dumps({"inputs": digits[2][:1].tolist()}).encode()
    before = guard.fast
    with socket.create_connection(_addr(live), timeout=5) as s:
        s.sendall(_head(keys["scores"], len(body)) + body)
        deadline = time.monotonic() + 5
        while guard.fast == before and time.monotonic() < deadline:  # the request in flight
            time.sleep(0.01)
        assert guard.fast == before + 1
        live.server.should_exit = True  # uvicorn's graceful shutdown, as on SIGTERM
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 ") and b"connection: close" in data.lower()
    assert json.loads(data.split(b"\r\n\r\n", 1)[1])["predictions"]
