"""Target files (``*.target.yaml``) against a real uvicorn/FastAPI server on 127.0.0.1.

The server has the shape of issue 16: ``{"instances": [...]}`` in,
``{"outputs": {"probabilities": [...]}}`` out, a bearer token, at most 32 items per
request (400 above), and a labels-only route that answers class names one item at a time.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI, Header, HTTPException, Request
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from mlwarden.cli.main import main
from mlwarden.core.data import Dataset, save_npz
from mlwarden.core.errors import InputFileError, UserError
from mlwarden.core.target import TargetError
from mlwarden.core.target_file import get_path, load_target_file
from mlwarden.supplychain import load_target

TOKEN = "s3cr3t+token/5f1e=9a7c"  # noqa: S105 - a test token, asserted never to leak
LIMIT = 32
NAMES = [f"digit-{i}" for i in range(10)]


def _fit() -> tuple[LogisticRegression, np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    model = LogisticRegression(max_iter=500).fit(x[:1200], y[:1200])
    return model, x[1200:], y[1200:]


def _app(model: LogisticRegression, seen: dict[str, Any]) -> FastAPI:
    app = FastAPI()

    def check(auth: str, rows: list[Any]) -> np.ndarray:
        if auth != f"Bearer {TOKEN}":
            raise HTTPException(status_code=401, detail="bad token")
        if len(rows) > LIMIT:
            raise HTTPException(status_code=400, detail=f"at most {LIMIT} instances")
        seen["max_batch"] = max(seen.get("max_batch", 0), len(rows))
        return np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)

    @app.post("/v1/classify")
    async def classify(request: Request, authorization: str = Header(default="")) -> Any:
        x = check(authorization, (await request.json())["instances"])
        return {"outputs": {"probabilities": model.predict_proba(x).tolist()}}

    @app.post("/v1/label")
    async def label(request: Request, authorization: str = Header(default="")) -> Any:
        x = check(authorization, [(await request.json())["instance"]])
        return {"predictions": [{"label": NAMES[int(model.predict(x)[0])]}]}

    @app.post("/v1/names")
    async def names(request: Request, authorization: str = Header(default="")) -> Any:
        x = check(authorization, (await request.json())["instances"])
        return {"classes": [NAMES[int(k)] for k in model.predict(x)]}

    @app.post("/v1/busy")
    async def busy(request: Request, authorization: str = Header(default="")) -> Any:
        seen["busy"] = seen.get("busy", 0) + 1
        if seen["busy"] == 1:
            raise HTTPException(status_code=429, detail="slow down", headers={"Retry-After": "1"})
        x = check(authorization, (await request.json())["instances"])
        return {"outputs": {"probabilities": model.predict_proba(x).tolist()}}

    @app.post("/v1/echo")
    async def echo(request: Request, authorization: str = Header(default="")) -> Any:
        raise HTTPException(status_code=400, detail=f"{authorization} {request.url}")

    return app


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, dict[str, Any], np.ndarray, np.ndarray]]:
    import uvicorn

    model, x, y = _fit()
    seen: dict[str, Any] = {}
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(_app(model, seen), log_level="error", lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", seen, x, y
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture()
def token(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DIGITS_API_TOKEN", TOKEN)
    return TOKEN


def _write(path: Path, endpoint: str, /, **keys: Any) -> Path:
    """A target file as a user writes it (YAML, the header naming the env var)."""
    doc = {
        "url": endpoint,
        "request": {"instances": "$inputs"},
        "response": "outputs.probabilities",
        "output": "scores",
        "headers": {"Authorization": "Bearer ${DIGITS_API_TOKEN}"},
        "batch_size": LIMIT,
        "input_shape": [64],
        "timeout": 10,
    }
    doc.update(keys)
    import yaml

    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _guide_example(path: Path, url: str) -> Path:
    """The guide's worked example, pointed at the local server."""
    guide = (Path(__file__).parents[2] / "docs" / "guide.md").read_text(encoding="utf-8")
    block = guide.split("<!-- target-file-example -->\n```yaml\n", 1)[1].split("```", 1)[0]
    path.write_text(block.replace("https://api.example.com", url))
    return path


def test_scores_match_the_model_and_requests_never_exceed_batch_size(
    served, token, tmp_path
) -> None:
    url, seen, x, _ = served
    target = load_target(str(_guide_example(tmp_path / "digits.target.yaml", url)))
    model, _, _ = _fit()
    got = target.predict(x[:100])  # 100 inputs: 4 requests, none over the 32-item limit
    np.testing.assert_allclose(got, model.predict_proba(x[:100]), rtol=1e-5, atol=1e-6)
    assert target.access == "score" and target.queries == 100
    assert seen["max_batch"] == LIMIT
    assert TOKEN not in json.dumps(target.describe())


def test_one_item_requests_with_label_names(served, token, tmp_path) -> None:
    url, _, x, _ = served
    path = _write(
        tmp_path / "label.target.yml",
        f"{url}/v1/label",
        request={"instance": "$input"},
        response="predictions[0].label",
        output="labels",
        labels={n: i for i, n in enumerate(NAMES)},
        batch_size=8,
    )
    target = load_target(str(path))
    model, _, _ = _fit()
    assert target.access == "label" and target.batch_size == 1
    np.testing.assert_array_equal(target.predict(x[:5]), model.predict(x[:5]))
    with pytest.raises(UserError, match="declares output: labels; access 'score'"):
        load_target(str(path), access="score")


def test_429_is_retried_after_retry_after_and_rate_is_kept(served, token, tmp_path) -> None:
    url, _, x, _ = served
    target = load_target(
        str(_write(tmp_path / "b.target.yaml", f"{url}/v1/busy", batch_size=4, rate=20))
    )
    start = time.monotonic()
    assert target.predict(x[:12]).shape == (12, 10)  # a 429 then 3 requests at 20/s
    assert time.monotonic() - start >= 1.0  # Retry-After: 1 was honoured


def test_errors_show_what_was_sent_and_received_with_the_token_masked(
    served, token, tmp_path
) -> None:
    url, _, x, _ = served
    # The API's limit is 32; a file that claims 64 gets the server's 400, shown in full.
    target = load_target(
        str(_write(tmp_path / "big.target.yaml", f"{url}/v1/classify", batch_size=64))
    )
    with pytest.raises(TargetError) as err:
        target.predict(x[:40])
    text = str(err.value)
    assert "HTTP 400" in text and "at most 32 instances" in text and '{"instances":[[' in text
    assert "characters)" in text  # the request was truncated
    wrong = _write(tmp_path / "w.target.yaml", f"{url}/v1/classify", response="outputs.scores")
    with pytest.raises(TargetError, match="no 'outputs.scores' in the answer") as err:
        load_target(str(wrong)).predict(x[:2])
    # A server that echoes the token (header and query string) back: the error masks it.
    echo = _write(tmp_path / "e.target.yaml", f"{url}/v1/echo?k=${{DIGITS_API_TOKEN}}")
    with pytest.raises(TargetError) as err:
        load_target(str(echo)).predict(x[:1])
    assert TOKEN not in str(err.value) and "Bearer ***" in str(err.value)
    assert "k=***" in str(err.value)  # httpx percent-encodes it in the URL; masked too


@pytest.mark.parametrize(
    ("keys", "words"),
    [
        ({"url": "ftp://x"}, "key 'url': must start with http"),
        ({"request": {"instances": "inputs"}}, "key 'request'"),
        ({"output": "probs"}, "key 'output'"),
        ({"batch_size": 0}, "key 'batch_size'"),
        ({"respones": "a.b"}, "key 'respones'"),
        ({"response": "a..b"}, "key 'response': must be a dotted path"),
        ({"labels": {"cat": 0, "dog": 0}}, "key 'labels': must map each name to a distinct"),
    ],
)
def test_a_bad_file_is_one_clear_line(tmp_path, keys, words) -> None:
    path = _write(tmp_path / "bad.target.yaml", "http://127.0.0.1:9/x", **keys)
    with pytest.raises(InputFileError, match=words) as err:
        load_target_file(path)
    assert "\n" not in str(err.value)


def test_an_unset_env_var_is_named(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("DIGITS_API_TOKEN", raising=False)
    with pytest.raises(UserError, match=r"uses \$\{DIGITS_API_TOKEN\}, which is not set"):
        load_target(str(_write(tmp_path / "a.target.yaml", "http://127.0.0.1:9/x")))


def test_retry_after_forms() -> None:
    from email.utils import formatdate

    from mlwarden.core.target_file import _wait_after

    assert _wait_after("7") == 7.0 and _wait_after("3600") == 60.0 and _wait_after(None) == 1.0
    assert 8.0 <= _wait_after(formatdate(time.time() + 10, usegmt=True)) <= 10.0
    assert _wait_after("nan") == 1.0 and _wait_after("soon") == 1.0


def test_get_path() -> None:
    doc = {"predictions": [{"label": "cat"}], "outputs": {"probabilities": [[0.1, 0.9]]}}
    assert get_path(doc, "predictions[0].label") == "cat"
    assert get_path(doc, "outputs.probabilities.0") == [0.1, 0.9]
    with pytest.raises(KeyError):
        get_path(doc, "outputs.logits")


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


@pytest.mark.parametrize("access", ["score", "label"])
def test_evasion_through_one_target_file_never_leaks_the_token(
    served, token, tmp_path, capsys, access
) -> None:
    url, seen, x, y = served
    api = _guide_example(tmp_path / "digits.target.yaml", url)
    data = tmp_path / "test.npz"
    save_npz(Dataset(x=x[:10], y=y[:10], name="digits", modality="tabular"), data)
    outs = {k: tmp_path / f"r.{k}" for k in ("json", "html", "sarif", "junit")}
    argv = ["evasion", str(api), str(data), "--eps", "0.3", "--budget", "quick", "--access", access]
    argv += [a for k, p in outs.items() for a in (f"--{k}", str(p))]
    code, out, err = _cli(argv, capsys)
    assert code == 0, err
    report = json.loads(outs["json"].read_text())
    assert report["metrics"]["clean_accuracy"] >= 0.8
    assert report["metrics"]["robust_accuracy"] < report["metrics"]["clean_accuracy"]
    assert seen["max_batch"] <= LIMIT
    for text in [out, err] + [p.read_text() for p in outs.values()]:
        assert TOKEN not in text


def test_extract_through_one_target_file(served, token, tmp_path, capsys) -> None:
    url, seen, x, y = served
    api = _write(tmp_path / "api.target.yaml", f"{url}/v1/classify")
    pool = tmp_path / "pool.npz"
    save_npz(Dataset(x=x[:300], y=y[:300], name="pool", modality="tabular"), pool)
    out = tmp_path / "extract.json"
    argv = ["extract", str(api), "--pool", str(pool), "--budget", "200", "-q", "--json", str(out)]
    code, stdout, err = _cli(argv, capsys)
    assert code == 0, err
    text = out.read_text()
    fidelity = json.loads(text)["metrics"]["fidelity"]
    assert fidelity["200"] >= 0.7  # a copy from 200 answers agrees with the API on most inputs
    assert seen["max_batch"] <= LIMIT and TOKEN not in text + stdout + err


def test_privacy_through_one_target_file(served, token, tmp_path, capsys) -> None:
    url, seen, x_hold, y_hold = served
    x, y = load_digits(return_X_y=True)
    members, holdout = tmp_path / "train.npz", tmp_path / "holdout.npz"
    save_npz(Dataset(x=(x[:150] / 16.0).astype(np.float32), y=y[:150], modality="tabular"), members)
    save_npz(Dataset(x=x_hold[:150], y=y_hold[:150], modality="tabular"), holdout)
    api = _write(tmp_path / "api.target.yaml", f"{url}/v1/classify")
    out = tmp_path / "privacy.json"
    argv = ["privacy", str(api), "--train", str(members), "--holdout", str(holdout)]
    code, stdout, err = _cli(argv + ["--attack", "loss", "-q", "--json", str(out)], capsys)
    assert code == 0, err
    text = out.read_text()
    assert 0.5 < json.loads(text)["metrics"]["auc"] <= 1.0  # members are fitted better
    assert seen["max_batch"] <= LIMIT and TOKEN not in text + stdout + err


def test_evasion_of_a_labels_only_api_is_label_only(served, token, tmp_path, capsys) -> None:
    url, seen, x, y = served
    names = {n: i for i, n in enumerate(NAMES)}
    api = _write(
        tmp_path / "n.target.yaml",
        f"{url}/v1/names",
        response="classes",
        output="labels",
        labels=names,
    )
    data = tmp_path / "test.npz"
    save_npz(Dataset(x=x[:8], y=y[:8], name="digits", modality="tabular"), data)
    out = tmp_path / "r.json"
    argv = ["evasion", str(api), str(data), "--eps", "0.3", "--budget", "quick", "--json", str(out)]
    code, stdout, err = _cli(argv, capsys)
    assert code == 0, err
    report = json.loads(out.read_text())
    assert report["metrics"]["clean_accuracy"] >= 0.8
    assert report["metrics"]["robust_accuracy"] < report["metrics"]["clean_accuracy"]
    dumped = json.dumps(report)
    assert '"access": "label"' in dumped and "hopskipjump" in dumped  # label-only attacks
    assert seen["max_batch"] <= LIMIT and TOKEN not in out.read_text() + stdout + err
