"""The gateway serving an audio model: WAV uploads, bounded decoding, the restoration chain."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
import uvicorn

from mlwarden.core.audio import wav_bytes
from mlwarden.core.data import load_dataset
from mlwarden.core.target import TorchTarget
from mlwarden.serve.app import KERNELS_WAIT_S, create_app
from mlwarden.serve.auth import hash_key, new_key
from mlwarden.serve.config import GatewayConfig
from mlwarden.serve.server import server_config

# 8192 samples: the gateway monitor's similarity detector fails on 8000 (its reduced
# vector comes out 127 long for a 128-slot ring; reported to the gateway owner)
RATE, SAMPLES = 16000, 8192


@pytest.fixture(scope="module")
def gateway(
    vad: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    key = new_key()
    tmp = tmp_path_factory.mktemp("gw")
    config = GatewayConfig.model_validate(
        {
            "input": {
                "modality": "audio",
                "shape": [SAMPLES],
                "range": [-1.0, 1.0],
                "sample_rate": RATE,
                "max_batch": 1,
                "max_body_bytes": 200_000,
            },
            "restoration": [{"type": "mp3", "kbps": 32}],
            "limits": {"rate": 1000.0, "burst": 1000, "budget": 100000},
            "keys": {"user": {"hash": hash_key(key), "role": "scores"}},
            "audit": {"path": str(tmp / "audit.db")},
        }
    )
    app = create_app(TorchTarget(vad), config, base_dir=tmp, model_version="vad")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(server_config(app))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    # The gateway listens only once its detector kernels are compiled (at most
    # KERNELS_WAIT_S; a cold numba cache on a loaded CI box can take tens of seconds).
    deadline = time.monotonic() + KERNELS_WAIT_S + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "the gateway did not start"
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1/predict", key
    server.should_exit = True
    thread.join(timeout=20)
    sock.close()


def _post(gateway: tuple[str, str], body: bytes) -> httpx.Response:
    url, key = gateway
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "audio/wav"}
    return httpx.post(url, content=body, headers=headers, timeout=30)


def test_a_wav_upload_is_restored_and_scored(gateway: tuple[str, str], vad_dir: Path) -> None:
    ds = load_dataset(vad_dir, sample_rate=RATE, clip_seconds=SAMPLES / RATE)
    speech = ds.x[ds.y == ds.class_names.index("speech")][0]
    r = _post(gateway, wav_bytes(speech, RATE, "PCM_16"))
    assert r.status_code == 200, r.text
    scores = np.asarray(r.json()["predictions"])
    assert scores.shape == (1, 2)


def test_a_shorter_clip_is_padded_and_accepted(gateway: tuple[str, str]) -> None:
    r = _post(gateway, wav_bytes(np.zeros(SAMPLES // 2, np.float32), RATE))
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("clip", "rate", "cut", "message"),
    [
        (np.zeros(SAMPLES, np.float32), 8000, None, "sampled at 8000 Hz; this model takes 16000"),
        (np.zeros(SAMPLES * 2, np.float32), RATE, None, "at most 8192"),
        (np.zeros(SAMPLES, np.float32), RATE, 1000, "truncated"),
    ],
    ids=["wrong-rate", "too-long", "truncated"],
)
def test_bad_uploads_are_422_with_one_clear_line(
    gateway: tuple[str, str], clip: np.ndarray, rate: int, cut: int | None, message: str
) -> None:
    body = wav_bytes(clip, rate)
    r = _post(gateway, body[:cut] if cut else body)
    assert r.status_code == 422 and message in r.text


def test_junk_and_oversized_bodies_are_refused(gateway: tuple[str, str]) -> None:
    assert _post(gateway, b"RIFF\x00\x00\x00\x00WAVEjunk").status_code == 422
    assert _post(gateway, b"\x00" * 300_000).status_code == 413
