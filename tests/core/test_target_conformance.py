"""One conformance suite every Target adapter passes (the ``check_estimator`` idea).

Each case builds a fresh target around the same tiny 6-feature, 3-class model: an
``nn.Module``, a TorchScript file, ``torch.export`` programs (dynamic and fixed
batch), ONNX files (exported from torch, and built by hand with a fixed batch),
scikit-learn estimators, a real uvicorn/FastAPI server on 127.0.0.1 (default and
custom request/response mapping, score and label access) and plain callables.
"""

from __future__ import annotations

import functools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi import FastAPI, Header, HTTPException, Request
from torch import nn

from mlwarden.core.errors import UserError
from mlwarden.core.target import (
    ACCESS_LEVELS,
    BaseTarget,
    CallableTarget,
    ExportedProgramTarget,
    HttpTarget,
    OnnxTarget,
    QueryBudgetExceeded,
    SklearnTarget,
    Target,
    TargetError,
    TorchScriptTarget,
    TorchTarget,
)

FEATURES, CLASSES, N = 6, 3, 10
API_KEY = "test-key"


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(FEATURES, 8), nn.ReLU(), nn.Linear(8, CLASSES)).eval()


def _numpy_forward(model: nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    w1, b1, w2, b2 = (p.detach().numpy().astype(np.float64) for p in model.parameters())

    def forward(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != FEATURES:
            raise ValueError(f"expected (N, {FEATURES}) inputs, got {x.shape}")
        return (np.maximum(x @ w1.T + b1, 0.0) @ w2.T + b2).astype(np.float32)

    return forward


# -- the real HTTP server -----------------------------------------------------------
def _app(forward: Callable[[np.ndarray], np.ndarray]) -> FastAPI:
    app = FastAPI()

    def run(rows: Any) -> np.ndarray:
        try:
            x = np.asarray(rows, dtype=np.float64)
            return forward(x)
        except ValueError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None

    @app.post("/predict")
    async def predict(request: Request) -> dict[str, Any]:
        body = await request.json()
        return {"predictions": run(body["inputs"]).tolist()}

    @app.post("/label")
    async def label(request: Request) -> dict[str, Any]:
        body = await request.json()
        return {"predictions": run(body["inputs"]).argmax(axis=1).tolist()}

    @app.post("/v1/models/m:infer")
    async def mapped(request: Request, authorization: str = Header(default="")) -> dict[str, Any]:
        if authorization != f"Bearer {API_KEY}":
            raise HTTPException(status_code=401, detail="missing API key")
        body = await request.json()
        if body.get("model") != "v1":
            raise HTTPException(status_code=400, detail="extra_body was not sent")
        return {"result": {"scores": run(body["data"]["instances"]).tolist(), "model": "v1"}}

    return app


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        _app(_numpy_forward(_model())), log_level="error", lifespan="off", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


# -- model files ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("targets")
    model = _model()
    example = torch.rand(4, FEATURES)
    paths = {"torchscript": root / "m.pt", "onnx": root / "m.onnx", "onnx_static": root / "s.onnx"}
    torch.jit.save(torch.jit.script(model), str(paths["torchscript"]))
    torch.onnx.export(
        model,
        (example,),
        str(paths["onnx"]),
        input_names=["x"],
        output_names=["logits"],
        dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}},
        dynamo=False,
    )
    _hand_built_onnx(model, paths["onnx_static"], batch=4)
    try:
        dynamic = torch.export.export(
            model, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},)
        )
        torch.export.save(dynamic, str(root / "dynamic.pt2"))
        torch.export.save(torch.export.export(model, (example,)), str(root / "static.pt2"))
        paths["pt2_dynamic"] = root / "dynamic.pt2"
        paths["pt2_static"] = root / "static.pt2"
    except Exception as exc:  # torch.export breaks on some torch builds
        paths["pt2_error"] = Path(f"{type(exc).__name__}: {exc}")
    return paths


def _hand_built_onnx(model: nn.Module, path: Path, batch: int) -> None:
    """The same MLP as an ONNX graph built with onnx.helper, with a fixed batch size."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w1, b1, w2, b2 = (p.detach().numpy() for p in model.parameters())
    inits = [
        numpy_helper.from_array(w1.T.copy(), "w1"),
        numpy_helper.from_array(b1, "b1"),
        numpy_helper.from_array(w2.T.copy(), "w2"),
        numpy_helper.from_array(b2, "b2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "w2"], ["h3"]),
        helper.make_node("Add", ["h3", "b2"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, FEATURES])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, CLASSES])],
        initializer=inits,
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx_model.ir_version = 9
    onnx.checker.check_model(onnx_model)
    onnx.save(onnx_model, str(path))


def _sklearn_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.random((90, FEATURES)).astype(np.float32)
    return x, np.arange(90) % CLASSES


# -- the cases ------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    name: str
    access: str
    build: Callable[..., BaseTarget]  # (files, http_url, **target kwargs) -> target
    #: True when outputs should equal the reference torch model's logits.
    same_as_torch: bool = False


def _exported(kind: str) -> Callable[..., BaseTarget]:
    def build(files: dict[str, Path], url: str, **kw: Any) -> BaseTarget:
        if "pt2_error" in files:
            pytest.xfail(
                f"torch.export is broken on torch {torch.__version__}: {files['pt2_error']}"
            )
        return ExportedProgramTarget(files[kind], **kw)

    return build


@functools.cache
def _fitted(kind: str) -> Any:
    """Fit each estimator once; every test wraps it in a fresh target."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import LinearSVC

    est = LogisticRegression(max_iter=500) if kind == "proba" else LinearSVC()
    return est.fit(*_sklearn_data())


def _sk_proba(files: dict[str, Path], url: str, **kw: Any) -> BaseTarget:
    return SklearnTarget(_fitted("proba"), **kw)


def _sk_label(files: dict[str, Path], url: str, **kw: Any) -> BaseTarget:
    return SklearnTarget(_fitted("label"), **kw)


CASES = [
    Case("torch", "white", lambda f, u, **kw: TorchTarget(_model(), **kw), True),
    Case(
        "torch-label",
        "label",
        lambda f, u, **kw: TorchTarget(_model(), access="label", **kw),
        True,
    ),
    Case(
        "torchscript", "white", lambda f, u, **kw: TorchScriptTarget(f["torchscript"], **kw), True
    ),
    Case("export-dynamic", "white", _exported("pt2_dynamic"), True),
    Case("export-static-batch", "white", _exported("pt2_static"), True),
    Case("onnx", "score", lambda f, u, **kw: OnnxTarget(f["onnx"], **kw), True),
    Case("onnx-static-batch", "score", lambda f, u, **kw: OnnxTarget(f["onnx_static"], **kw), True),
    Case("sklearn-proba", "score", _sk_proba),
    Case("sklearn-label", "label", _sk_label),
    Case(
        "http",
        "score",
        lambda f, u, **kw: HttpTarget(f"{u}/predict", output="logits", **kw),
        True,
    ),
    Case(
        "http-mapped",
        "score",
        lambda f, u, **kw: HttpTarget(
            f"{u}/v1/models/m:infer",
            input_field="data.instances",
            output_field="result.scores",
            headers={"Authorization": f"Bearer {API_KEY}"},
            extra_body={"model": "v1"},
            output="logits",
            **kw,
        ),
        True,
    ),
    Case(
        "http-label",
        "label",
        lambda f, u, **kw: HttpTarget(f"{u}/label", access="label", **kw),
        True,
    ),
    Case(
        "callable",
        "score",
        lambda f, u, **kw: CallableTarget(_numpy_forward(_model()), output="logits", **kw),
        True,
    ),
    Case(
        "callable-label",
        "label",
        lambda f, u, **kw: CallableTarget(
            lambda x: _numpy_forward(_model())(x).argmax(axis=1), access="label", **kw
        ),
        True,
    ),
]


@pytest.fixture(params=CASES, ids=[c.name for c in CASES])
def case(request: pytest.FixtureRequest) -> Case:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def make(
    case: Case, files: dict[str, Path], request: pytest.FixtureRequest
) -> Callable[..., BaseTarget]:
    url = request.getfixturevalue("http_url") if case.name.startswith("http") else ""

    def build(**kw: Any) -> BaseTarget:
        return case.build(files, url, **kw)

    return build


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return np.random.default_rng(1).random((N, FEATURES)).astype(np.float32)


def _reference(x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return _model()(torch.from_numpy(x)).numpy()


# -- the suite ------------------------------------------------------------------------
def test_declares_a_valid_access_level(case: Case, make: Callable[..., BaseTarget]) -> None:
    target = make()

    assert isinstance(target, Target)
    assert target.access in ACCESS_LEVELS and target.access == case.access
    assert target.output in ("logits", "probabilities", "labels")
    assert (target.output == "labels") == (target.access == "label")


def test_predict_shape_and_dtype(
    case: Case, make: Callable[..., BaseTarget], x: np.ndarray
) -> None:
    out = make(batch_size=4).predict(x)

    if case.access == "label":
        assert out.shape == (N,) and out.dtype == np.int64
        assert out.min() >= 0 and out.max() < CLASSES
    else:
        assert out.shape == (N, CLASSES) and out.dtype == np.float32
        assert np.all(np.isfinite(out))


def test_matches_the_reference_model(
    case: Case, make: Callable[..., BaseTarget], x: np.ndarray
) -> None:
    if not case.same_as_torch:
        pytest.skip("a different model (scikit-learn) by design")
    out = make(batch_size=4).predict(x)
    ref = _reference(x)

    if case.access == "label":
        np.testing.assert_array_equal(out, ref.argmax(axis=1))
    else:
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


def test_queries_are_counted_exactly_across_batches(
    make: Callable[..., BaseTarget], x: np.ndarray
) -> None:
    target = make(batch_size=4)  # 10 inputs -> batches of 4, 4, 2

    target.predict(x)
    assert target.queries == N
    target.predict_labels(x[:3])
    assert target.queries == N + 3
    target.predict(x[:0])
    assert target.queries == N + 3


def test_batching_gives_the_same_answers_as_one_batch(
    make: Callable[..., BaseTarget], x: np.ndarray
) -> None:
    small = make(batch_size=3).predict(x)
    whole = make(batch_size=1024).predict(x)

    np.testing.assert_allclose(small, whole, rtol=1e-5, atol=1e-6)


def test_max_queries_is_enforced_before_spending(
    make: Callable[..., BaseTarget], x: np.ndarray
) -> None:
    target = make(batch_size=4, max_queries=N + 2)
    target.predict(x)

    with pytest.raises(QueryBudgetExceeded, match="budget"):
        target.predict(x[:3])
    assert target.queries == N
    target.predict(x[:2])
    assert target.queries == N + 2


def test_predict_labels_agrees_with_predict(make: Callable[..., BaseTarget], x: np.ndarray) -> None:
    target = make()
    out = target.predict(x)
    labels = target.predict_labels(x)

    assert labels.dtype == np.int64 and labels.shape == (N,)
    np.testing.assert_array_equal(labels, out if out.ndim == 1 else out.argmax(axis=1))


def test_torch_tensors_are_accepted(make: Callable[..., BaseTarget], x: np.ndarray) -> None:
    target = make()

    np.testing.assert_allclose(target.predict(torch.from_numpy(x)), target.predict(x), atol=1e-6)


@pytest.mark.parametrize("shape", [(2, FEATURES + 1), (2, 2, 2)])
def test_bad_input_shape_is_a_clear_error(
    make: Callable[..., BaseTarget], shape: tuple[int, ...]
) -> None:
    target = make()

    with pytest.raises(UserError) as info:
        target.predict(np.zeros(shape, np.float32))
    assert isinstance(info.value, TargetError)
    assert str(info.value).strip() and "\n" not in str(info.value)


def test_white_box_exposes_a_differentiable_torch_forward(
    case: Case, make: Callable[..., BaseTarget], x: np.ndarray
) -> None:
    target = make()
    if case.access != "white":
        forward = getattr(target, "torch_forward", None)
        if forward is not None:
            with pytest.raises(TargetError, match="gradients"):
                forward(torch.from_numpy(x))
        return
    xt = torch.from_numpy(x[:5]).requires_grad_(True)

    logits = target.torch_forward(xt)  # type: ignore[attr-defined]
    logits.gather(1, logits.argmax(1, keepdim=True)).sum().backward()

    assert logits.shape == (5, CLASSES)
    np.testing.assert_allclose(logits.detach().numpy(), target.predict(x[:5]), atol=1e-5)
    assert xt.grad is not None and torch.isfinite(xt.grad).all() and xt.grad.abs().sum() > 0
    assert target.queries == 10  # 5 through torch_forward, 5 through predict


def test_torch_forward_honours_the_budget(case: Case, make: Callable[..., BaseTarget]) -> None:
    if case.access != "white":
        pytest.skip("no gradients at this access level")
    target = make(max_queries=3)

    with pytest.raises(QueryBudgetExceeded):
        target.torch_forward(torch.zeros(4, FEATURES))  # type: ignore[attr-defined]
    assert target.queries == 0


# -- adapter-specific behaviour -------------------------------------------------------
def test_http_target_reports_an_unreachable_server() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    target = HttpTarget(f"http://127.0.0.1:{port}/predict", retries=0, timeout=2)

    with pytest.raises(TargetError, match="did not answer"):
        target.predict(np.zeros((1, FEATURES), np.float32))


def test_http_target_reports_a_missing_output_field(http_url: str) -> None:
    target = HttpTarget(f"{http_url}/predict", output_field="scores")

    with pytest.raises(TargetError, match="no usable 'scores'"):
        target.predict(np.zeros((1, FEATURES), np.float32))


def test_http_target_reports_an_auth_failure(http_url: str) -> None:
    target = HttpTarget(
        f"{http_url}/v1/models/m:infer", input_field="data.instances", output_field="result.scores"
    )

    with pytest.raises(TargetError, match="401"):
        target.predict(np.zeros((1, FEATURES), np.float32))


def test_sklearn_label_target_maps_class_values_to_indices() -> None:
    from sklearn.svm import LinearSVC

    xs, ys = _sklearn_data()
    labels = np.array([10, 20, 30])[ys]
    est = LinearSVC().fit(xs, labels)
    target = SklearnTarget(est)

    out = target.predict(xs)
    np.testing.assert_array_equal(np.array([10, 20, 30])[out], est.predict(xs))


@pytest.mark.parametrize("adapter", [TorchScriptTarget, ExportedProgramTarget, OnnxTarget])
def test_unloadable_model_file_is_an_input_file_error(adapter: type, tmp_path: Path) -> None:
    from mlwarden.core.errors import InputFileError

    bad = tmp_path / "broken.bin"
    bad.write_bytes(b"PK\x03\x04 truncated")

    with pytest.raises(InputFileError, match="broken.bin"):
        adapter(bad)


def test_callable_returning_the_wrong_number_of_rows_is_an_error() -> None:
    target = CallableTarget(lambda x: np.zeros((len(x) + 1, CLASSES)))

    with pytest.raises(TargetError, match="rows"):
        target.predict(np.zeros((2, FEATURES), np.float32))


def test_probabilities_helper_gives_distributions(
    make: Callable[..., BaseTarget], x: np.ndarray
) -> None:
    from mlwarden.core.target import probabilities

    target = make()
    probs = probabilities(target, x)

    assert probs.shape[0] == N and probs.shape[1] >= 2
    assert np.all(probs >= 0) and np.allclose(probs.sum(axis=1), 1.0)
    np.testing.assert_array_equal(probs.argmax(axis=1), target.predict_labels(x))


def test_as_target_wraps_in_memory_models() -> None:
    from mlwarden.core.target import as_target

    torch_target = as_target(_model())
    assert isinstance(torch_target, TorchTarget) and torch_target.access == "white"
    assert isinstance(as_target(_fitted("proba")), SklearnTarget)
    assert isinstance(as_target(_numpy_forward(_model())), CallableTarget)
    assert as_target(torch_target) is torch_target
    with pytest.raises(UserError, match="cannot use a int"):
        as_target(3)


def test_probabilities_does_not_trust_a_wrong_declaration() -> None:
    """A callable declared (by default) as returning probabilities that returns logits."""
    from mlwarden.core.target import probabilities, softmax

    xs = np.random.default_rng(2).random((4, FEATURES)).astype(np.float32)
    logits = _numpy_forward(_model())(xs)
    target = CallableTarget(_numpy_forward(_model()))

    assert target.output == "probabilities"
    np.testing.assert_allclose(probabilities(target, xs), softmax(logits), rtol=1e-5)
    counts = CallableTarget(lambda x: np.tile([2.0, 1.0, 1.0], (len(x), 1)))
    np.testing.assert_allclose(probabilities(counts, xs), np.tile([0.5, 0.25, 0.25], (4, 1)))
