"""The Target conformance checks on audio: one waveform model, every way it ships.

The model is a small keyword/sound classifier with its spectral front-end inside (an
STFT as two fixed 1-D convolutions, power, mel-like bands, log), so that the same
graph runs as an ``nn.Module``, a TorchScript file, an ONNX file exported by
``torch.onnx``, a ``module:factory`` spec, and behind a real HTTP server taking WAV
uploads. Inputs are ``(batch, samples)`` clips at 8 kHz; every case must answer as
the module does, count queries exactly, batch transparently, enforce the budget,
refuse image-shaped input in one line and (white-box cases) give finite gradients.
"""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from fastapi import FastAPI, HTTPException, Request
from torch import nn

from mlwarden.core.audio import WavHttpTarget
from mlwarden.core.errors import UserError
from mlwarden.core.target import (
    BaseTarget,
    OnnxTarget,
    QueryBudgetExceeded,
    TorchScriptTarget,
    TorchTarget,
)

RATE, SAMPLES, CLASSES, N = 8000, 2000, 3, 6
FACTORY = "tests.audio.test_audio_conformance:conv_mel_net"


class ConvMelNet(nn.Module):
    """Waveform ``(B, T)`` -> logits; STFT by convolution (exportable to ONNX)."""

    def __init__(self, n_fft: int = 256, bands: int = 16) -> None:
        super().__init__()
        k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)[:, None]
        t = torch.arange(n_fft, dtype=torch.float64)[None]
        win = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
        kernel = torch.cat([torch.cos(2 * torch.pi * k * t / n_fft) * win,
                            -torch.sin(2 * torch.pi * k * t / n_fft) * win])  # fmt: skip
        self.register_buffer("dft", kernel.float()[:, None])
        self.hop, self.bins = n_fft // 2, n_fft // 2 + 1
        fb = torch.zeros(bands, self.bins)
        edges = torch.linspace(0, self.bins, bands + 1).long()
        for b in range(bands):
            fb[b, edges[b] : edges[b + 1]] = 1.0
        self.register_buffer("fb", fb)
        self.conv = nn.Conv1d(bands, 8, 3, padding=1)
        self.head = nn.Linear(8, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spec = nn.functional.conv1d(x[:, None], self.dft, stride=self.hop)
        power = spec[:, : self.bins] ** 2 + spec[:, self.bins :] ** 2
        feats = torch.log(torch.einsum("fk,bkt->bft", self.fb, power) + 1e-6)
        return self.head(torch.relu(self.conv(feats)).mean(2))  # type: ignore[no-any-return]


def conv_mel_net() -> nn.Module:
    """The conformance model (also reached as ``module:factory``)."""
    torch.manual_seed(0)
    return ConvMelNet().eval()


def _clips(n: int = N) -> np.ndarray:
    rng = np.random.default_rng(1)
    t = np.arange(SAMPLES) / RATE
    f = rng.uniform(200, 3000, (n, 1))
    return (0.4 * np.sin(2 * np.pi * f * t) + 0.02 * rng.standard_normal((n, SAMPLES))).astype(
        np.float32
    )


def _reference(x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return conv_mel_net()(torch.from_numpy(x)).numpy()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("audio-targets")
    model, example = conv_mel_net(), torch.from_numpy(_clips(2))
    paths = {"torchscript": root / "m.pt", "onnx": root / "m.onnx"}
    torch.jit.save(torch.jit.script(model), str(paths["torchscript"]))
    torch.onnx.export(
        model, (example,), str(paths["onnx"]), input_names=["x"], output_names=["logits"],
        dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}}, dynamo=False,
    )  # fmt: skip
    return paths


@pytest.fixture(scope="module")
def wav_url() -> Iterator[str]:
    import uvicorn

    app, model = FastAPI(), conv_mel_net()

    @app.post("/score")
    async def score(request: Request) -> dict[str, list[float]]:
        clip, rate = sf.read(io.BytesIO(await request.body()), dtype="float32")
        if rate != RATE or clip.ndim != 1 or len(clip) != SAMPLES:
            raise HTTPException(422, f"expected {SAMPLES} mono samples at {RATE} Hz")
        with torch.no_grad():
            return {"predictions": model(torch.from_numpy(clip)[None])[0].tolist()}

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


def _factory(files: dict[str, Path], url: str, **kw: Any) -> BaseTarget:
    from mlwarden.supplychain import load_target

    return load_target(FACTORY, **kw)  # type: ignore[no-any-return]


Build = Callable[..., BaseTarget]
CASES: dict[str, tuple[str, Callable[..., BaseTarget]]] = {
    "torch": ("white", lambda f, u, **kw: TorchTarget(conv_mel_net(), **kw)),
    "torchscript": ("white", lambda f, u, **kw: TorchScriptTarget(f["torchscript"], **kw)),
    "onnx": ("score", lambda f, u, **kw: OnnxTarget(f["onnx"], **kw)),
    "module-factory": ("white", _factory),
    "http-wav": (
        "score",
        lambda f, u, **kw: WavHttpTarget(u, sample_rate=RATE, output="logits", **kw),
    ),
}


@pytest.fixture(params=list(CASES))
def make(request: pytest.FixtureRequest, files: dict[str, Path]) -> Build:
    access, build = CASES[request.param]
    url = request.getfixturevalue("wav_url") if request.param == "http-wav" else ""

    def made(**kw: Any) -> BaseTarget:
        target = build(files, url, **kw)
        assert target.access == access
        return target

    return made


def test_answers_as_the_module_does_in_any_batching(make: Build) -> None:
    x = _clips()
    small, whole = make(batch_size=4).predict(x), make(batch_size=64).predict(x)
    assert small.shape == (N, CLASSES) and small.dtype == np.float32
    np.testing.assert_allclose(small, _reference(x), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(small, whole, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(make().predict_labels(x), _reference(x).argmax(1))


def test_queries_are_counted_and_the_budget_is_kept(make: Build) -> None:
    x = _clips()
    target = make(batch_size=4, max_queries=N + 2)
    target.predict(x)
    assert target.queries == N
    with pytest.raises(QueryBudgetExceeded):
        target.predict(x[:3])
    target.predict(torch.from_numpy(x[:2]))
    assert target.queries == N + 2


def test_an_image_batch_is_one_clear_error(make: Build) -> None:
    with pytest.raises(UserError) as info:
        make().predict(np.zeros((2, 1, 8, 8), np.float32))
    assert str(info.value).strip() and "\n" not in str(info.value)


def test_white_box_cases_give_finite_gradients(make: Build) -> None:
    target = make()
    if target.access != "white":
        return
    xt = torch.from_numpy(_clips(3)).requires_grad_(True)
    logits = target.torch_forward(xt)  # type: ignore[attr-defined]
    logits[:, 0].sum().backward()
    assert xt.grad is not None and torch.isfinite(xt.grad).all() and xt.grad.abs().sum() > 0
    np.testing.assert_allclose(logits.detach().numpy(), _reference(_clips(3)), atol=1e-4)
