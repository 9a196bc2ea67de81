"""The gateway over real HTTP: auth, limits, validation, model errors, outputs, metrics."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from mlwarden.core.target import CallableTarget
from mlwarden.serve.log import read_records


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _body(x: np.ndarray) -> dict:
    return {"inputs": x.tolist()}


@pytest.fixture
def live(gw_config, serve, sklearn_target):
    return serve(sklearn_target, gw_config())


def test_healthz_answers_without_a_key(live) -> None:
    r = httpx.get(f"{live.url}/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok", "model_version": "test-1"}


def test_missing_key_is_401_with_a_bearer_challenge(live, digits) -> None:
    r = httpx.post(f"{live.url}/v1/predict", json=_body(digits[2][:1]))
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == "Bearer"


def test_unknown_key_is_401(live, digits) -> None:
    r = httpx.post(f"{live.url}/v1/predict", json=_body(digits[2][:1]), headers=_auth("mlw_nope"))
    assert r.status_code == 401 and "invalid API key" in r.json()["detail"]


def test_role_without_predict_is_403(live, keys, digits) -> None:
    r = httpx.post(
        f"{live.url}/v1/predict", json=_body(digits[2][:1]), headers=_auth(keys["metrics"])
    )
    assert r.status_code == 403


def test_metrics_need_a_metrics_role(live, keys) -> None:
    assert httpx.get(f"{live.url}/metrics", headers=_auth(keys["labels"])).status_code == 403
    assert httpx.get(f"{live.url}/metrics").status_code == 401
    assert httpx.get(f"{live.url}/metrics", headers=_auth(keys["metrics"])).status_code == 200


def test_labels_role_gets_only_labels_matching_the_model(live, keys, digits, digits_model) -> None:
    x = digits[2][:5]
    r = httpx.post(f"{live.url}/v1/predict", json=_body(x), headers=_auth(keys["labels"]))
    assert r.status_code == 200
    body = r.json()
    assert body["model_version"] == "test-1"
    assert body["predictions"] == digits_model.predict(x.reshape(5, -1)).tolist()


def test_scores_role_gets_rounded_probabilities_admin_gets_full(
    live, keys, digits, digits_model
) -> None:
    x = digits[2][:3]
    exact = digits_model.predict_proba(x.reshape(3, -1))
    scores = httpx.post(
        f"{live.url}/v1/predict", json=_body(x), headers=_auth(keys["scores"])
    ).json()
    full = httpx.post(f"{live.url}/v1/predict", json=_body(x), headers=_auth(keys["admin"])).json()
    s = np.array(scores["predictions"])
    assert np.array_equal(s, np.round(s, 2))
    assert np.abs(s - exact).max() <= 0.005 + 1e-6
    np.testing.assert_allclose(np.array(full["predictions"]), exact, atol=1e-6)


def test_flat_inputs_of_the_right_size_are_accepted(live, keys, digits) -> None:
    x = digits[2][:2].reshape(2, 64)
    r = httpx.post(f"{live.url}/v1/predict", json=_body(x), headers=_auth(keys["labels"]))
    assert r.status_code == 200 and len(r.json()["predictions"]) == 2


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"inputs": [[[NaN]]]}', "NaN is not allowed"),
        ('{"inputs": [[1e999]]}', "NaN or infinity"),
        (
            '{"inputs": [' + json.dumps(np.full((1, 8, 8), 2.0).tolist()) + "]}",
            "must lie in [0.0, 1.0]",
        ),
        ('{"inputs": [' + json.dumps(np.zeros((1, 7, 8)).tolist()) + "]}", "shape [1, 8, 8]"),
        ('{"inputs": [[0.1, 0.2], [0.3]]}', "ragged"),
        ('{"inputs": [["a", "b"]]}', "must be numbers"),
        ('{"inputs": [[true, false]]}', "booleans"),
        ('{"inputs": []}', "non-empty list"),
        ('{"x": 1}', '{"inputs"'),
        ("{not json", "not valid JSON"),
        (
            '{"inputs": [' + ",".join([json.dumps(np.zeros((1, 8, 8)).tolist())] * 17) + "]}",
            "over the limit of 16",
        ),
    ],
)
def test_invalid_inputs_are_422_with_a_message(live, keys, body: str, message: str) -> None:
    r = httpx.post(
        f"{live.url}/v1/predict",
        content=body,
        headers={**_auth(keys["labels"]), "Content-Type": "application/json"},
    )
    assert r.status_code == 422
    assert message in r.json()["detail"]


def test_a_declared_body_over_the_limit_is_refused_before_reading(live, keys) -> None:
    big = b"[" + b"0," * 40000 + b"0]"
    r = httpx.post(f"{live.url}/v1/predict", content=big, headers=_auth(keys["labels"]))
    assert r.status_code == 413 and "over the limit of 65536" in r.json()["detail"]


def test_a_streamed_body_over_the_limit_is_cut_off(live, keys) -> None:
    def chunks():
        for _ in range(200):
            yield b" " * 1024  # 200 KiB with no Content-Length (chunked encoding)

    r = httpx.post(f"{live.url}/v1/predict", content=chunks(), headers=_auth(keys["labels"]))
    assert r.status_code == 413 and "over the limit" in r.json()["detail"]


def test_a_model_that_raises_gives_422_not_500(gw_config, keys, serve, digits) -> None:
    def fragile(x: np.ndarray) -> np.ndarray:
        if x.max() > 0.99:
            raise RuntimeError("internal model failure")
        return np.tile([0.5, 0.5], (len(x), 1))

    live = serve(CallableTarget(fragile, access="score", output="probabilities"), gw_config())
    ok = httpx.post(
        f"{live.url}/v1/predict", json=_body(np.zeros((1, 1, 8, 8))), headers=_auth(keys["labels"])
    )
    bad = httpx.post(
        f"{live.url}/v1/predict", json=_body(np.ones((1, 1, 8, 8))), headers=_auth(keys["labels"])
    )
    assert ok.status_code == 200
    assert bad.status_code == 422 and "could not process" in bad.json()["detail"]
    assert "internal model failure" not in bad.text


def test_rate_limit_is_429_with_retry_after(gw_config, keys, serve, sklearn_target, digits) -> None:
    cfg = gw_config(limits={"rate": 0.5, "burst": 2, "budget": 1000})
    live = serve(sklearn_target, cfg)
    x = digits[2][:1]
    codes = [
        httpx.post(f"{live.url}/v1/predict", json=_body(x), headers=_auth(keys["labels"]))
        for _ in range(3)
    ]
    assert [r.status_code for r in codes] == [200, 200, 429]
    assert int(codes[2].headers["Retry-After"]) >= 1
    assert "rate limit" in codes[2].json()["detail"]


def test_query_budget_is_429_and_counts_inputs_not_requests(
    gw_config, keys, serve, sklearn_target, digits
) -> None:
    cfg = gw_config(limits={"rate": 1000.0, "burst": 1000, "budget": 5, "window_s": 3600})
    live = serve(sklearn_target, cfg)
    first = httpx.post(
        f"{live.url}/v1/predict", json=_body(digits[2][:4]), headers=_auth(keys["labels"])
    )
    second = httpx.post(
        f"{live.url}/v1/predict", json=_body(digits[2][:2]), headers=_auth(keys["labels"])
    )
    assert first.status_code == 200 and second.status_code == 429
    assert "budget" in second.json()["detail"]
    assert 3500 <= int(second.headers["Retry-After"]) <= 3600


def test_restoration_chain_runs_before_the_model(gw_config, keys, serve) -> None:
    seen: list[np.ndarray] = []

    def record(x: np.ndarray) -> np.ndarray:
        seen.append(x.copy())
        return np.tile([1.0, 0.0], (len(x), 1))

    cfg = gw_config(restoration=[{"type": "bit_depth", "bits": 1}])
    live = serve(CallableTarget(record, access="score", output="probabilities"), cfg)
    x = np.random.default_rng(0).uniform(0, 1, (1, 1, 8, 8))
    assert (
        httpx.post(
            f"{live.url}/v1/predict", json=_body(x), headers=_auth(keys["labels"])
        ).status_code
        == 200
    )
    assert set(np.unique(seen[0]).tolist()) <= {0.0, 1.0}


def test_metrics_report_requests_latency_and_queries(live, keys, digits) -> None:
    httpx.post(f"{live.url}/v1/predict", json=_body(digits[2][:3]), headers=_auth(keys["labels"]))
    httpx.post(f"{live.url}/v1/predict", json=_body(digits[2][:1]))
    text = httpx.get(f"{live.url}/metrics", headers=_auth(keys["admin"])).text
    assert 'mlwarden_requests_total{path="/v1/predict",status="200"} 1' in text
    assert 'mlwarden_requests_total{path="/v1/predict",status="401"} 1' in text
    assert 'mlwarden_queries_total{key="labels"} 3' in text
    assert "# TYPE mlwarden_request_duration_seconds histogram" in text
    assert 'mlwarden_request_duration_seconds_bucket{le="+Inf"} 2' in text


def test_every_request_is_audited_without_the_key(tmp_path, live, keys, digits) -> None:
    httpx.post(f"{live.url}/v1/predict", json=_body(digits[2][:2]), headers=_auth(keys["labels"]))
    httpx.post(f"{live.url}/v1/predict", json=_body(digits[2][:1]))
    httpx.post(f"{live.url}/v1/predict", json={"inputs": [[1, 2]]}, headers=_auth(keys["scores"]))
    rows = read_records(tmp_path / "audit.db")
    assert [(r["key"], r["status"], r["decision"]) for r in rows] == [
        ("labels", 200, "allow"),
        (None, 401, "unauthenticated"),
        ("scores", 422, "invalid_input"),
    ]
    assert rows[0]["n_inputs"] == 2 and len(rows[0]["input_digest"]) == 64
    assert all(r["latency_ms"] > 0 for r in rows)
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("audit.db*"))
    assert not any(k.encode() in raw for k in keys.values())


def test_a_body_that_trickles_in_too_slowly_is_408(gw_config, keys, serve, sklearn_target) -> None:
    import time

    live = serve(sklearn_target, gw_config(input={"read_timeout_s": 0.3}))

    def slow():
        yield b'{"inputs": '
        time.sleep(1.0)
        yield b"[]}"

    r = httpx.post(f"{live.url}/v1/predict", content=slow(), headers=_auth(keys["labels"]))
    assert r.status_code == 408


def test_an_unwritable_audit_log_is_a_user_error_at_start(
    tmp_path, gw_config, sklearn_target
) -> None:
    from mlwarden.core.errors import UserError
    from mlwarden.serve.app import create_app

    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError, match="audit log"):
        create_app(sklearn_target, gw_config(audit={"path": str(blocker / "audit.db")}))


def test_answers_carry_json_headers_and_a_fresh_request_id(live, keys, digits) -> None:
    seen = set()
    with httpx.Client(headers=_auth(keys["labels"])) as c:
        for body in (_body(digits[2][:1]), {"inputs": []}):
            for _ in range(3):
                r = c.post(f"{live.url}/v1/predict", json=body)
                assert r.headers["content-type"] == "application/json"
                assert int(r.headers["content-length"]) == len(r.content)
                rid = r.headers["X-Request-Id"]
                assert len(rid) == 32 and int(rid, 16) >= 0 and rid not in seen
                seen.add(rid)
                assert r.json()  # a body that parses, on 200 and 422 alike
    stored = {row["request_id"] for row in read_records(live.gateway.audit.path)}
    assert seen <= stored


def test_an_answer_that_cannot_be_audited_is_not_given(live, keys, digits) -> None:
    """Fail closed: with the audit log gone, predictions become 503, never a 200."""
    live.gateway.audit.close()
    r = httpx.post(
        f"{live.url}/v1/predict", json=_body(digits[2][:1]), headers=_auth(keys["labels"])
    )
    assert r.status_code == 503 and r.headers["Retry-After"] == "1"
    assert r.json() == {"detail": "audit log unavailable"} and "predictions" not in r.text
    metrics = httpx.get(f"{live.url}/metrics", headers=_auth(keys["metrics"]))
    assert metrics.status_code == 503  # the metrics route is audited too
