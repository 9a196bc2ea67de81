"""Text through the gateway: a real uvicorn server in front of a tweet pipeline."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn

from mlwarden.core.data import Dataset
from mlwarden.core.text_target import CallableTextTarget, SklearnTextTarget
from mlwarden.serve.app import KERNELS_WAIT_S, create_app
from mlwarden.serve.auth import hash_key, new_key
from mlwarden.serve.config import GatewayConfig
from mlwarden.serve.server import server_config

KEY = new_key()
AUTH = {"Authorization": f"Bearer {KEY}"}


class _Live:
    def __init__(self, app: Any) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1/predict"
        self.server = uvicorn.Server(server_config(app))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + KERNELS_WAIT_S + 30  # serve compiles its kernels first
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "gateway did not start"
            time.sleep(0.01)

    def post(self, body: Any) -> httpx.Response:
        if isinstance(body, bytes):
            return httpx.post(
                self.url, content=body, headers=AUTH | {"Content-Type": "application/json"}
            )
        return httpx.post(self.url, json=body, headers=AUTH)


@pytest.fixture
def gateway(pipeline: object, tmp_path: Path) -> Iterator[Any]:
    started: list[_Live] = []

    def start(**sections: Any) -> _Live:
        raw: dict[str, Any] = {
            "input": {"modality": "text", "max_batch": 16, "max_chars": 280},
            "limits": {"rate": 10000.0, "burst": 10000, "budget": 1000000},
            "keys": {"scores": {"hash": hash_key(KEY), "role": "scores"}},
            "audit": {"path": str(tmp_path / "audit.db")},
        } | sections
        app = create_app(
            SklearnTextTarget(pipeline), GatewayConfig.model_validate(raw), base_dir=tmp_path
        )
        started.append(_Live(app))
        return started[-1]

    yield start
    for live in started:
        live.server.should_exit = True
        live.thread.join(timeout=20)


def test_text_requests_are_answered_and_bad_ones_refused_in_one_line(gateway: Any) -> None:
    live = gateway()
    ok = live.post({"inputs": ["what a lovely flight", "lost my luggage again"]})
    assert ok.status_code == 200, ok.text
    probs = np.asarray(ok.json()["predictions"])
    assert probs.shape == (2, 3) and np.allclose(probs.sum(axis=1), 1, atol=0.02)  # rounded
    bad = {
        b'{"inputs": ["fine", 3]}': "input 1 is int",
        b'{"inputs": ["fine", null]}': "input 1 is null",
        b'{"inputs": ["  "]}': "input 0 is empty",
        b'{"inputs": ["' + b"a" * 281 + b'"]}': "281 characters, over the limit of 280",
        b'{"inputs": [' + b",".join([b'"t"'] * 17) + b"]}": "17 texts is over the limit of 16",
        b'{"inputs": ["bad \\ud800 half"]}': "unpaired surrogate",
        b'{"inputs": ["nul \\u0000 byte"]}': "control character U+0000",
        b'{"inputs": ["\\uffff"]}': "U+FFFF is a noncharacter",
        b'{"inputs": ["caf\xe9"]}': "not UTF-8",
        b'{"inputs": []}': "non-empty list of texts",
        b'["just", "a", "list"]': '{"inputs": ["text", ...]}',
    }
    for body, message in bad.items():
        res = live.post(body)
        assert res.status_code == 422, (body, res.text)
        assert message in res.json()["detail"], (body, res.json())
    assert live.post({"inputs": ["still serving"]}).status_code == 200


def test_normalisation_chain_restores_homoglyph_and_invisible_variants(
    gateway: Any, pipeline: object
) -> None:
    steps = [{"type": "nfkc"}, {"type": "strip_invisible"}, {"type": "fold_homoglyphs"}]
    live = gateway(restoration=steps)
    plain = "the crew were rude and the flight was awful"
    disguised = "the cr\u0435w were ru\u200bde and the fl\u0456ght was \uff41wful"
    res = live.post({"inputs": [plain, disguised]}).json()["predictions"]
    assert np.allclose(res[0], res[1], atol=1e-6)
    bare = SklearnTextTarget(pipeline).predict([plain, disguised])
    assert not np.allclose(bare[0], bare[1], atol=1e-3)  # the model alone is fooled


def test_a_text_attack_stream_is_flagged_and_distinct_texts_are_not(
    gateway: Any, pipeline: object, tweets: tuple[Dataset, Dataset]
) -> None:
    from mlwarden.evasion.text.attack import attack_texts

    test = tweets[1]
    sent: list[str] = []
    model = SklearnTextTarget(pipeline)

    def recording(texts: list[str]) -> np.ndarray:
        sent.extend(texts)
        return model.predict(texts)

    # the queries a real attack sends: our own word and character search on one tweet
    # (the first long, correctly classified one it needs at least 40 queries for)
    pred = model.predict_labels(list(test.x))
    for i in np.flatnonzero((pred == test.y) & [len(t.split()) >= 12 for t in test.x]):
        sent.clear()
        attack_texts(CallableTextTarget(recording), [test.x[i]], test.y[i : i + 1], max_queries=300)
        if len(sent) >= 40:
            break
    assert len(sent) >= 40
    live = gateway(detection={"action": "block"})
    # tweets as users type them (the corpus also holds mojibake C1 controls, refused)
    benign = [t for t in test.x if t.isprintable()][:200]
    codes = [live.post({"inputs": benign[i : i + 4]}).status_code for i in range(0, 200, 4)]
    assert set(codes) == {200}  # 200 distinct tweets: nobody is blocked
    attacked = gateway(detection={"action": "block"})
    codes = [attacked.post({"inputs": sent[i : i + 4]}).status_code for i in range(0, len(sent), 4)]
    assert 403 in codes, codes
    assert codes.index(403) * 4 <= 60  # flagged within the first 60 queries


def test_a_client_typing_tweets_is_not_blocked(
    gateway: Any, tweets: tuple[Dataset, Dataset]
) -> None:
    """A moderation check as someone types: the growing prefix every 2 characters. The
    gateway hands the monitor the texts (TypingChain): the prefixes of one tweet are one
    text to the similarity count, not a search (blocked within 100 queries before)."""
    texts = [t for t in tweets[1].x if t.isprintable() and len(t) >= 60][:8]
    typed = [t[:k] for t in texts for k in range(4, len(t) + 2, 2)]
    live = gateway(detection={"action": "block", "similarity": {"near": 0.3, "min_neighbours": 20},
                              "prada": {"enabled": False}})  # fmt: skip
    codes = [live.post({"inputs": [t]}).status_code for t in typed[:300]]
    assert len(codes) >= 200 and set(codes) == {200}, codes.index(403) if 403 in codes else codes


def test_gateway_check_gives_text_advice_for_a_text_config() -> None:
    from mlwarden.serve.findings import gateway_config_findings

    cfg = GatewayConfig.model_validate({"input": {"modality": "text", "max_chars": 500}})
    rules = {f.rule: f for f in gateway_config_findings(cfg)}
    assert "MLW-GW-007" not in rules  # no shape or range to declare for texts
    assert "nfkc" in rules["MLW-GW-008"].recommendation
