"""Audio targets: WAV uploads to a real HTTP server, and streaming models wrapped per clip."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from fastapi import FastAPI, Request

from mlwarden.core.audio import WavHttpTarget, snr_db
from mlwarden.core.target import QueryBudgetExceeded
from mlwarden.evasion.attacks.square import Square

RATE = 8000


def _clips(n: int = 4) -> np.ndarray:
    rng = np.random.default_rng(1)
    t = np.arange(RATE // 4) / RATE
    f = rng.uniform(200, 2000, (n, 1))
    return (0.4 * np.sin(2 * np.pi * f * t) + 0.02 * rng.standard_normal((n, len(t)))).astype(
        np.float32
    )


@pytest.fixture(scope="module")
def wav_server(tiny_audio_model: torch.nn.Module) -> Iterator[str]:
    import uvicorn

    app = FastAPI()

    @app.post("/score")
    async def score(request: Request) -> dict[str, list[float]]:
        clip, rate = sf.read(io.BytesIO(await request.body()), dtype="float32")
        assert rate == RATE
        with torch.no_grad():
            return {"predictions": tiny_audio_model(torch.from_numpy(clip)[None])[0].tolist()}

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="error", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/score"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


def test_wav_uploads_score_like_the_model_itself(
    wav_server: str, tiny_audio_model: torch.nn.Module
) -> None:
    x = _clips()
    target = WavHttpTarget(wav_server, sample_rate=RATE, output="logits")
    with torch.no_grad():
        local = tiny_audio_model(torch.from_numpy(x)).numpy()
    assert np.allclose(target.predict(x), local, atol=1e-5)  # float WAV: lossless
    assert target.queries == len(x)


def test_square_attacks_a_wav_endpoint_within_the_snr_and_the_query_budget(
    wav_server: str,
) -> None:
    x = _clips(2)
    target = WavHttpTarget(wav_server, sample_rate=RATE, output="logits", max_queries=60)
    adv = Square(norm="l2", snr_db=20, n_queries=25, bounds=(-1, 1)).generate(target, x)
    assert np.all(snr_db(x, adv) >= 20 - 1e-3)
    assert target.queries <= 60
    with pytest.raises(QueryBudgetExceeded):
        target.predict(np.repeat(x, 40, axis=0))


def test_a_streaming_model_starts_each_clip_from_a_fresh_state(vad: torch.nn.Module) -> None:
    rng = np.random.default_rng(0)
    a = torch.from_numpy((0.3 * rng.standard_normal((1, 4000))).astype(np.float32))
    b = torch.from_numpy((0.05 * rng.standard_normal((1, 4000))).astype(np.float32))
    with torch.no_grad():
        alone = vad(a)
        vad(b)  # a previous call leaves no state behind
        after = vad(a)
        batched = vad(torch.cat([b, a]))[1:]
        stereo = vad(torch.stack([a, a], 1))  # (batch, channels, samples)
    assert torch.allclose(alone, after) and torch.allclose(alone, batched, atol=1e-5)
    assert torch.allclose(alone, stereo, atol=1e-5)


def test_silero_gradients_are_finite_on_zero_padded_clips_and_decisions_keep(
    vad: torch.nn.Module, voice: Path
) -> None:
    """Digital silence gave NaN gradients (Silero's STFT magnitude at exactly 0), which
    raised a false vanishing-gradient finding; the -120 dBFS dither removes it."""
    from mlwarden.core.audio import fit_length, read_audio, resample
    from mlwarden.evasion.attacks.base import ModelAccess, ce_loss
    from mlwarden.evasion.audio.models import StreamingClip

    clips = []
    for f in sorted(voice.glob("*.wav"))[:6]:
        clip, rate = read_audio(f)
        one = fit_length(resample(clip, rate, 16000), 16000)[0]
        clips.append(np.pad(one, (0, 16000)))  # a second of digital silence after it
    x = torch.as_tensor(np.stack(clips))
    assert bool((x[:, -4000:] == 0).all())  # the padding is exact silence
    undithered = StreamingClip(vad.step, frame=512, context=64, state_shape=(2, 128))
    with torch.no_grad():
        assert torch.equal(vad(x).argmax(1), undithered(x).argmax(1))
        assert float((vad(x).exp() - undithered(x).exp()).abs().max()) < 1e-3
    y = vad(x).argmax(1).detach()
    _, grad, _ = ModelAccess(vad).loss_grad(x, ce_loss, y)
    assert bool(torch.isfinite(grad).all()) and bool((grad.flatten(1).norm(dim=1) > 0).all())
    _, raw, _ = ModelAccess(undithered).loss_grad(x, ce_loss, y)
    assert bool(torch.isnan(raw).any())  # the defect the dither fixes is real
