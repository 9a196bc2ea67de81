"""Regressions found by the outside red team (``benchmarks/gateway_redteam.py``).

Each test is the probe that failed on the code before its fix: a request carrying both
``Transfer-Encoding`` and ``Content-Length`` (request smuggling through a proxy that
reads the other one), and ``gateway check`` on settings under which an enabled
detector can never flag or a full batch of texts never fits the body limit.
"""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

from mlwarden.serve.auth import hash_key
from mlwarden.serve.config import Detection, parse_config
from mlwarden.serve.findings import gateway_config_report, silent_detectors
from mlwarden.serve.monitor import Monitor


def _head_answer(url: str, data: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(data)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out  # the server closed the connection after answering
            out += chunk


def test_transfer_encoding_with_content_length_is_400_and_closes(
    gw_config, keys, serve, sklearn_target, digits
) -> None:
    live = serve(sklearn_target, gw_config())
    body = b'{"inputs": [%s]}' % str(digits[2][0].reshape(-1).tolist()).encode()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    head = (
        b"POST /v1/predict HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\n"
        b"Content-Type: application/json\r\n" % keys["labels"].encode()
    )
    # both orders; a proxy in front honouring Content-Length would see another request
    for extra in (
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"Transfer-Encoding: chunked\r\nContent-Length: %d\r\n\r\n" % len(chunked),
    ):
        answer = _head_answer(live.url, head + extra + chunked)
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
        assert b"not both" in answer
        assert b"connection: close" in answer.lower()
    # the same body chunked alone is answered
    answer = _head_answer(
        live.url, head + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunked
    )
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]


def _check(tmp_path: Path, text: str) -> dict[str, list[str]]:
    path = tmp_path / "gw.yaml"
    path.write_text(text + f"keys: {{a: {{hash: '{hash_key('k')}'}}}}\n")
    path.chmod(0o600)
    out: dict[str, list[str]] = {}
    for f in gateway_config_report(path).findings:
        out[f.rule] = list(f.evidence.get("problems", []))
    return out


def test_blacklight_on_a_short_table_row_can_never_flag() -> None:
    """The claim the check makes, on the monitor itself: 30 values at the defaults."""
    rng = np.random.default_rng(0)
    only = Detection(similarity={"enabled": False}, prada={"enabled": False})
    for n, expect in ((30, False), (64, True)):  # 64 values (8x8 digits): 45 windows
        x = rng.uniform(0, 1, n) + rng.normal(0, 1e-4, (300, n))
        flagged = Monitor(only, [n]).inspect("k", x.astype(np.float32), np.zeros(300, int))
        assert bool(flagged.get("blacklight")) is expect, (n, flagged)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("input: {shape: [30]}\n", "has 11 windows of 20 values"),
        ("detection: {blacklight: {top: 10, threshold: 20}}\n", "blacklight.top 10"),
        ("detection: {similarity: {window: 10, min_neighbours: 20}}\n", "min_neighbours 20 >"),
        ("detection: {similarity: {history: 15}}\n", "the 15 queries"),
        ("detection: {dilution: {enabled: true}, similarity: {enabled: false}}\n", "disabled"),
        (
            "detection: {dilution: {enabled: true, min_neighbours: 50}, similarity: {history: 40, "
            "long_neighbours: 30}}\n",
            "dilution.min_neighbours 50",
        ),  # fmt: skip
        ("detection: {prada: {history: 20, min_queries: 30}}\n", "never runs"),
    ],
)
def test_detectors_that_can_never_flag_are_reported(tmp_path: Path, text: str, needle: str) -> None:
    problems = _check(tmp_path, text).get("MLW-GW-014", [])
    assert any(needle in p for p in problems), problems


def test_default_detectors_on_images_and_digits_are_not_reported(tmp_path: Path) -> None:
    for shape in ("[1, 8, 8]", "[3, 32, 32]", "[39]"):
        assert "MLW-GW-014" not in _check(tmp_path, f"input: {{shape: {shape}}}\n")
    # the whole-history bar keeps similarity alive with a short window
    text = "detection: {similarity: {window: 10, min_neighbours: 20, long_neighbours: 30}}\n"
    assert "MLW-GW-014" not in _check(tmp_path, text)
    assert silent_detectors(parse_config("input: {shape: [38]}")) != []


def test_a_full_batch_of_long_texts_over_the_body_limit_is_reported(tmp_path: Path) -> None:
    text = "input: {modality: text, max_batch: 64, max_chars: 5000, max_body_bytes: 65536}\n"
    problems = _check(tmp_path, text).get("MLW-GW-011", [])
    assert any("64 texts of input.max_chars 5000" in p for p in problems), problems
    audio = (
        "input: {modality: audio, sample_rate: 16000, shape: [1, 160000], range: [-1, 1], "
        "max_body_bytes: 65536}\n"
    )
    problems = _check(tmp_path, audio).get("MLW-GW-011", [])
    assert any("16-bit WAV of 160000 frames" in p for p in problems), problems
    fits = "input: {modality: text, max_batch: 8, max_chars: 500, max_body_bytes: 65536}\n"
    assert not any("texts" in p for p in _check(tmp_path, fits).get("MLW-GW-011", []))


def test_bad_bodies_spend_the_rate_so_a_slow_key_gets_429_not_422(
    gw_config, keys, serve, sklearn_target, digits
) -> None:
    """A 1 query/s key sending bodies that fail validation: one is read, the rest are 429
    on their head (before: every one was read and parsed, all 422, none 429)."""
    live = serve(sklearn_target, gw_config(limits={"rate": 1.0, "burst": 1, "budget": 1000}))
    bad = b'{"inputs": [' + b"0.5," * 5000 + b"0.5]}"  # valid JSON, the wrong shape
    statuses = []
    for _ in range(4):
        head = (
            b"POST /v1/predict HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (keys["labels"].encode(), len(bad))
        )
        answer = _head_answer(live.url, head + bad)
        statuses.append(int(answer.split()[1]))
    assert statuses[0] == 422 and statuses[1:] == [429, 429, 429], statuses
    limiter = live.gateway.limiters["labels"]
    assert limiter.remaining_budget() == 1000  # no query reached the model: budget untouched
    good = b'{"inputs": [%s]}' % str(digits[2][0].reshape(-1).tolist()).encode()
    head = (
        b"POST /v1/predict HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (keys["admin"].encode(), len(good))
    )
    assert _head_answer(live.url, head + good).startswith(b"HTTP/1.1 200 ")  # others unaffected


def test_refused_bodies_run_a_bounded_debt() -> None:
    from mlwarden.serve.limits import KeyLimiter

    now = [0.0]
    lim = KeyLimiter(rate=2.0, burst=4, budget=None, window_s=60, clock=lambda: now[0])
    for _ in range(20):  # 20 concurrent bad bodies that all passed the head check
        lim.refused()
    wait, reason = lim.check()
    assert reason == "rate" and wait == pytest.approx((1 + 4) / 2.0)  # debt of one bucket
    now[0] += 2.5
    assert lim.check() == (0.0, "")
    unlimited = KeyLimiter(rate=None, burst=None, budget=10, window_s=60)
    unlimited.refused()
    assert unlimited.remaining_budget() == 10


def test_state_written_at_shutdown_after_a_rotation_is_private(tmp_path: Path) -> None:
    """The audit files moved away (logrotate) while serving: the state rows written at
    shutdown must not create a world-readable database (umask 000 here)."""
    import os
    import stat

    from mlwarden.serve.log import AuditLog, write_state

    db = tmp_path / "audit.db"
    AuditLog(db).close()
    for p in tmp_path.glob("audit.db*"):
        p.rename(tmp_path / p.name.replace("audit", "rotated"))
    old = os.umask(0)
    try:
        write_state(db, [("k", "limits", b"{}")])
    finally:
        os.umask(old)
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


def _responses(url: str, data: bytes) -> list[int]:
    """Statuses of every answer on one connection until the server closes it."""
    import re

    return [int(m) for m in re.findall(rb"HTTP/1\.1 (\d{3}) ", _head_answer(url, data))]


def test_request_heads_over_100_fields_or_16_kb_are_431_before_parsing(
    gw_config, keys, serve, sklearn_target, digits
) -> None:
    """10,000 one-byte headers cost h11 ~15 ms to parse (45 times a plain 401, with no key
    needed); refused on the raw bytes, also when pipelined behind a good request."""
    live = serve(sklearn_target, gw_config())
    body = b'{"inputs": [%s]}' % str(digits[2][0].reshape(-1).tolist()).encode()

    def req(fields: int, close: bool = False) -> bytes:
        head = [b"POST /v1/predict HTTP/1.1", b"Host: gw", b"Authorization: Bearer %s"
                % keys["labels"].encode(), b"Content-Length: %d" % len(body)]  # fmt: skip
        head += [b"X-%d: 1" % i for i in range(fields - 3 - close)]
        head += [b"Connection: close"] if close else []
        return b"\r\n".join(head) + b"\r\n\r\n" + body

    assert _responses(live.url, req(100, close=True)) == [200]  # at the cap: served
    assert _responses(live.url, req(101)) == [431]
    assert _responses(live.url, req(10000)) == [431]
    big = req(5, close=True).replace(b"X-0: 1", b"X-0: " + b"a" * 17000)
    assert _responses(live.url, big) == [431]
    assert _responses(live.url, req(5) + req(10000)) == [200, 431]  # pipelined
    assert live.gateway.guard.dropped["head_too_large"] == 4


def test_the_gateway_runs_on_uvloop_where_it_is_installed(gw_config, serve, sklearn_target) -> None:
    """asyncio's own loop accepts a connection flood 2-3x slower (a task and eight handles a
    connection): /healthz behind 5,000 idle connections took 560-840 ms on it, 240-310 on
    uvloop (benchmarks/gateway_redteam.py, probe idle)."""
    import importlib.util
    import sys

    if sys.platform == "win32":
        pytest.skip("uvloop does not build on Windows")
    assert importlib.util.find_spec("uvloop") is not None  # a declared dependency
    live = serve(sklearn_target, gw_config())
    loop = live.server.servers[0].get_loop()
    assert type(loop).__module__.startswith("uvloop"), type(loop)
