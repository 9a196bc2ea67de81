"""Conformance suite for text targets (same contract as tests/core/test_target_conformance.py,
with texts): a scikit-learn pipeline from joblib and from skops (scanned first), a local
Hugging Face folder (white-box), a real uvicorn/FastAPI server, and a callable."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi import FastAPI, Request

from mlwarden.core.errors import UnsafeArtifactError, UserError
from mlwarden.core.target import QueryBudgetExceeded, TargetError
from mlwarden.core.text_target import CallableTextTarget, HttpTextTarget, TextTarget
from mlwarden.supplychain.loader import load_target

TEXTS = [
    "what a lovely day",
    "the service was awful and slow",
    "driverless cars are the future",
    "I will never fly with them again",
    "ok",
    "not sure how I feel about this",
    "best phone I ever had",
]


@pytest.fixture(scope="module")
def http_url(pipeline: Any) -> Iterator[str]:
    import uvicorn

    app = FastAPI()

    @app.post("/predict")
    async def predict(request: Request) -> dict[str, Any]:
        body = await request.json()
        return {"predictions": pipeline.predict_proba(body["inputs"]).tolist()}

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="error", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            pytest.fail("uvicorn did not start")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def skops_file(pipeline: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from skops.io import dump

    path = tmp_path_factory.mktemp("skops") / "pipe.skops"
    dump(pipeline, path)
    return path


CASES = ["joblib", "skops", "hf", "http", "callable"]


@pytest.fixture(params=CASES)
def make(request: pytest.FixtureRequest, pipeline: Any) -> Callable[..., TextTarget]:
    kind = request.param

    def build(**kw: Any) -> TextTarget:
        if kind == "joblib":
            return load_target(str(request.getfixturevalue("pipeline_file")), **kw)  # type: ignore[no-any-return]
        if kind == "skops":
            return load_target(str(request.getfixturevalue("skops_file")), **kw)  # type: ignore[no-any-return]
        if kind == "hf":
            return load_target(str(request.getfixturevalue("bert_folder")), **kw)  # type: ignore[no-any-return]
        if kind == "http":
            return HttpTextTarget(f"{request.getfixturevalue('http_url')}/predict", **kw)
        return CallableTextTarget(lambda t: pipeline.predict_proba(t), **kw)

    build.kind = kind  # type: ignore[attr-defined]
    return build


def test_scores_shape_dtype_and_modality(make: Callable[..., TextTarget]) -> None:
    target = make(batch_size=3)
    out = target.predict(TEXTS)

    assert isinstance(target, TextTarget) and target.modality == "text"
    assert out.shape == (len(TEXTS), 3) and out.dtype == np.float32 and np.isfinite(out).all()
    assert target.describe()["modality"] == "text"


def test_queries_counted_across_batches_and_budget_refused_before_spending(
    make: Callable[..., TextTarget],
) -> None:
    target = make(batch_size=3, max_queries=len(TEXTS) + 2)
    target.predict(TEXTS)
    assert target.queries == len(TEXTS)

    with pytest.raises(QueryBudgetExceeded):
        target.predict(TEXTS[:3])
    assert target.queries == len(TEXTS)
    target.predict_labels(TEXTS[:2])
    assert target.queries == len(TEXTS) + 2


def test_batching_gives_the_same_answers(make: Callable[..., TextTarget]) -> None:
    np.testing.assert_allclose(
        make(batch_size=2).predict(TEXTS), make(batch_size=64).predict(TEXTS), atol=1e-5
    )


def test_label_access_returns_the_argmax(make: Callable[..., TextTarget]) -> None:
    if make.kind == "hf":  # type: ignore[attr-defined]
        scores = make().predict(TEXTS)
        labels = make(access="label").predict(TEXTS)
    else:
        scores = make().predict(TEXTS)
        labels = make(access="label").predict(TEXTS)
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, scores.argmax(axis=1))


@pytest.mark.parametrize("bad", [np.zeros((2, 3), np.float32), "one string", [1, 2]])
def test_non_text_input_is_one_clear_line(make: Callable[..., TextTarget], bad: Any) -> None:
    target = make()

    with pytest.raises(TargetError) as info:
        target.predict(bad)
    assert "\n" not in str(info.value) and target.queries == 0


def test_white_box_gradients_with_respect_to_input_embeddings(
    make: Callable[..., TextTarget],
) -> None:
    target = make()
    if make.kind != "hf":  # type: ignore[attr-defined]
        assert target.access != "white"
        return
    enc = target.encode(TEXTS[:3])  # type: ignore[attr-defined]
    emb = target.embedding_matrix()[enc["input_ids"]].detach().requires_grad_(True)  # type: ignore[attr-defined]
    logits = target.embedding_forward(emb, enc["attention_mask"])  # type: ignore[attr-defined]
    logits[:, 0].sum().backward()

    assert target.access == "white" and logits.shape == (3, 3)
    assert emb.grad is not None and torch.isfinite(emb.grad).all() and emb.grad.abs().sum() > 0
    np.testing.assert_allclose(logits.detach().numpy(), target.predict(TEXTS[:3]), atol=1e-4)
    assert target.queries == 6


def test_hf_folder_with_remote_code_is_refused(bert_folder: Path, tmp_path: Path) -> None:
    import shutil

    bad = tmp_path / "remote"
    shutil.copytree(bert_folder, bad)
    config = json.loads((bad / "config.json").read_text())
    config["auto_map"] = {"AutoModelForSequenceClassification": "modeling_evil.Evil"}
    (bad / "config.json").write_text(json.dumps(config))
    (bad / "modeling_evil.py").write_text("import os\nos.system('touch /tmp/i13-canary')\n")

    with pytest.raises(UnsafeArtifactError, match="refused to load"):
        load_target(str(bad))
    assert not Path("/tmp/i13-canary").exists()


def test_hf_folder_with_pickled_weights_only_is_refused(bert_folder: Path, tmp_path: Path) -> None:
    import shutil

    bad = tmp_path / "pickled"
    shutil.copytree(bert_folder, bad)
    (bad / "model.safetensors").unlink()
    torch.save({"w": torch.zeros(2)}, bad / "pytorch_model.bin")

    with pytest.raises(UserError, match="safetensors"):
        load_target(str(bad))


def test_a_numeric_model_is_not_taken_for_a_text_model(tmp_path: Path) -> None:
    import joblib
    from sklearn.linear_model import LogisticRegression

    path = tmp_path / "num.joblib"
    joblib.dump(LogisticRegression().fit(np.eye(3), [0, 1, 2]), path)

    assert not isinstance(load_target(str(path)), TextTarget)
