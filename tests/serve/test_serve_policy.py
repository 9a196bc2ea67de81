"""Keys, limits, config parsing and the MLW-GW-* config audit."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlwarden.core.errors import InputFileError
from mlwarden.serve import gateway_config_report
from mlwarden.serve.auth import KeyStore, bearer_token, hash_key, new_key
from mlwarden.serve.config import GatewayConfig, load_config, parse_config, save_config
from mlwarden.serve.limits import KeyLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_new_keys_are_distinct_and_carry_32_random_bytes() -> None:
    keys = {new_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(k.startswith("mlw_") and len(k) == 4 + 43 for k in keys)


def test_keystore_identifies_only_exact_keys() -> None:
    a, b = new_key(), new_key()
    store = KeyStore({"alice": hash_key(a), "bob": hash_key(b)})
    assert store.identify(a) == "alice" and store.identify(b) == "bob"
    assert store.identify(a[:-1]) is None and store.identify("") is None
    assert store.identify("x" * 10_000) is None


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        (None, None),
    ],
)
def test_bearer_token_parsing(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


def test_token_bucket_refills_at_its_rate() -> None:
    clock = FakeClock()
    lim = KeyLimiter(rate=2.0, burst=4, budget=None, window_s=60, clock=clock)
    assert lim.take(4) == (0.0, "")
    wait, why = lim.take(1)
    assert why == "rate" and wait == pytest.approx(0.5)
    clock.now = 0.5
    assert lim.take(1) == (0.0, "")


def test_budget_resets_with_the_window_and_reports_the_wait() -> None:
    clock = FakeClock()
    lim = KeyLimiter(rate=None, burst=None, budget=10, window_s=100, clock=clock)
    assert lim.take(10) == (0.0, "")
    clock.now = 40
    wait, why = lim.take(1)
    assert why == "budget" and wait == pytest.approx(60)
    clock.now = 100
    assert lim.take(10) == (0.0, "")


def test_refused_requests_spend_nothing() -> None:
    clock = FakeClock()
    lim = KeyLimiter(rate=1.0, burst=5, budget=6, window_s=100, clock=clock)
    assert lim.take(5)[0] == 0
    assert lim.take(1)[1] == "rate"
    assert lim.take(3)[1] == "budget"
    assert lim.remaining_budget() == 1


def test_throttle_slows_the_refill() -> None:
    clock = FakeClock()
    lim = KeyLimiter(rate=10.0, burst=1, budget=None, window_s=60, clock=clock)
    lim.take(1)
    lim.throttle(0.1)
    assert lim.take(1)[0] == pytest.approx(1.0)


def test_a_throttled_key_is_told_it_was_throttled_not_rate_limited() -> None:
    clock = FakeClock()
    lim = KeyLimiter(rate=10.0, burst=1, budget=None, window_s=60, clock=clock)
    lim.take(1)
    assert lim.take(1)[1] == "rate"  # before the monitor flags it: the plain rate limit
    lim.throttle(0.1)
    assert lim.take(1)[1] == "throttled"
    assert lim.check()[1] == "throttled"
    assert lim.effective_rate == pytest.approx(1.0)


@pytest.mark.parametrize("wait", [1e-9, 0.0004, 0.004, 0.5, 1.0, 1.01, 59.2])
@pytest.mark.parametrize("reason", ["rate", "budget", "throttled"])
def test_retry_after_is_whole_seconds_rounded_up_never_zero(wait: float, reason: str) -> None:
    from mlwarden.serve.app import _raise_if_limited
    from mlwarden.serve.log import AuditRecord
    from mlwarden.serve.validate import RequestError

    rec = AuditRecord(request_id="r", key="k", path="/v1/predict", status=200, decision="allow")
    with pytest.raises(RequestError) as err:
        _raise_if_limited((wait, reason), rec)
    seconds = max(1, math.ceil(wait))
    assert err.value.status == 429
    assert err.value.headers["Retry-After"] == str(seconds)
    assert err.value.message.endswith(f"retry after {seconds} s")
    assert "0.00" not in err.value.message


def test_a_bucket_a_hair_short_of_a_token_still_says_one_second() -> None:
    clock = FakeClock()
    lim = KeyLimiter(rate=1000.0, burst=1, budget=None, window_s=60, clock=clock)
    lim.take(1)
    clock.now += 0.000999  # 1 microsecond of refill short of the next token
    wait, _ = lim.take(1)
    assert 0 < wait < 0.01
    from mlwarden.serve.app import _raise_if_limited
    from mlwarden.serve.log import AuditRecord
    from mlwarden.serve.validate import RequestError

    rec = AuditRecord(request_id="r", key="k", path="/v1/predict", status=200, decision="allow")
    with pytest.raises(RequestError, match="retry after 1 s$"):
        _raise_if_limited((wait, "rate"), rec)


@given(
    rate=st.floats(0.1, 100), burst=st.integers(1, 50),
    steps=st.lists(st.tuples(st.floats(0, 5), st.integers(1, 10)), max_size=40),
)  # fmt: skip
@settings(max_examples=60, deadline=None)
def test_a_token_bucket_never_allows_more_than_burst_plus_rate_times_time(
    rate, burst, steps
) -> None:
    clock = FakeClock()
    lim = KeyLimiter(rate=rate, burst=burst, budget=None, window_s=60, clock=clock)
    allowed = 0
    for dt, n in steps:
        clock.now += dt
        if lim.take(n)[0] == 0:
            allowed += n
    assert allowed <= burst + rate * clock.now + 1e-6


def test_config_round_trips_through_save_with_mode_0600(tmp_path: Path) -> None:
    cfg = GatewayConfig.model_validate({"keys": {"a": {"hash": hash_key("k"), "role": "scores"}}})
    save_config(cfg, tmp_path / "g.yaml")
    assert (tmp_path / "g.yaml").stat().st_mode & 0o777 == 0o600
    assert load_config(tmp_path / "g.yaml") == cfg


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("keys: [1, 2", "not valid YAML"),
        ("- a\n- b\n", "must be a YAML mapping"),
        ("limitz: {}\n", "limitz"),
        ("keys: {a: {hash: 'sha256:" + "0" * 64 + "', role: root}}\n", "unknown role 'root'"),
        ("input: {range: [1, 0]}\n", "low < high"),
        ("limits: {rate: -5}\n", "limits.rate"),
    ],
)
def test_bad_configs_fail_with_a_message_naming_the_problem(text: str, message: str) -> None:
    with pytest.raises(InputFileError, match=message.replace("[", r"\[")):
        parse_config(text, "g.yaml")


def _rules(tmp_path: Path, text: str, mode: int = 0o600) -> set[str]:
    path = tmp_path / "g.yaml"
    path.write_text(text)
    path.chmod(mode)
    return {f.rule for f in gateway_config_report(path).findings}


def test_an_open_gateway_gets_every_finding(tmp_path: Path) -> None:
    rules = _rules(
        tmp_path,
        "anonymous: {role: admin}\ndetection: {blacklight: {enabled: false}, prada: {enabled: false}, "
        "similarity: {enabled: false}}\n"
        "audit: {enabled: false}\n",
        0o666,
    )
    assert rules == {f"MLW-GW-{n:03d}" for n in (1, 2, 3, 4, 5, 7, 8, 9, 10)}


def test_a_locked_down_gateway_gets_no_findings(tmp_path: Path) -> None:
    rules = _rules(
        tmp_path,
        "input: {shape: [1, 8, 8], range: [0, 1], max_batch: 10}\n"
        "restoration: [{type: bit_depth, bits: 4}]\n"
        "limits: {rate: 5, burst: 10, budget: 1000}\n"
        f"keys: {{a: {{hash: '{hash_key('k')}', role: labels}}}}\n"
        # dilution on, as 'gateway calibrate' sets it: off, MLW-GW-018 names it
        "detection: {action: block, dilution: {enabled: true}}\n",
    )
    assert rules == set()


def test_scores_to_a_low_privilege_key_are_medium_to_anonymous_high(tmp_path: Path) -> None:
    text = f"limits: {{rate: 5, budget: 10}}\nroles: {{viewer: {{output: {{mode: none}}}}}}\nkeys: {{a: {{hash: '{hash_key('k')}', role: viewer}}}}\n"
    report = gateway_config_report(_write(tmp_path, text))
    [finding] = [f for f in report.findings if f.rule == "MLW-GW-004"]
    assert finding.severity == "medium" and "AML.M0002" in finding.mitigations
    anon = "limits: {rate: 5, budget: 10}\nanonymous: {role: admin}\n"
    [finding] = [
        f for f in gateway_config_report(_write(tmp_path, anon)).findings if f.rule == "MLW-GW-004"
    ]
    assert finding.severity == "high"


def test_every_finding_cites_the_gateway_atlas_ids(tmp_path: Path) -> None:
    report = gateway_config_report(
        _write(tmp_path, "anonymous: {role: admin}\naudit: {enabled: false}\n")
    )
    mitigations = {m for f in report.findings for m in f.mitigations}
    assert {"AML.M0019", "AML.M0004", "AML.M0002", "AML.M0024"} <= mitigations
    assert all(f.atlas for f in report.findings)
    assert math.isfinite(report.timings["gateway-config"])


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "g.yaml"
    path.write_text(text)
    path.chmod(0o600)
    return path


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("limits: {rate: 10, burst: 20, budget: 1000}\n", "burst 20 < input.max_batch 64"),
        ("limits: {rate: 10}\n", "burst 10 < input.max_batch 64"),
        ("limits: {rate: 100, burst: 100, budget: 30}\n", "budget 30 < input.max_batch 64"),
        (
            "input: {shape: [3, 64, 64], max_body_bytes: 65536}\n"
            "limits: {rate: 100, burst: 100, budget: 1000}\n",
            "needs at least",
        ),
    ],
)
def test_settings_that_cannot_work_are_reported(tmp_path: Path, text: str, needle: str) -> None:
    keys = f"keys: {{a: {{hash: '{hash_key('k')}'}}}}\n"
    report = gateway_config_report(_write(tmp_path, text + keys))
    [finding] = [f for f in report.findings if f.rule == "MLW-GW-011"]
    assert any(needle in p for p in finding.evidence["problems"]), finding.evidence


def test_a_workable_config_has_no_gw011(tmp_path: Path) -> None:
    text = (
        "input: {shape: [1, 8, 8], max_batch: 16}\n"
        f"limits: {{rate: 10, burst: 16, budget: 1000}}\nkeys: {{a: {{hash: '{hash_key('k')}'}}}}\n"
    )
    assert "MLW-GW-011" not in {
        f.rule for f in gateway_config_report(_write(tmp_path, text)).findings
    }


def test_detection_without_the_noise_robust_detector_is_reported(tmp_path: Path) -> None:
    text = "detection: {similarity: {enabled: false}}\n"
    rules = {f.rule for f in gateway_config_report(_write(tmp_path, text)).findings}
    assert "MLW-GW-012" in rules and "MLW-GW-005" not in rules


def test_throttle_on_a_caller_without_a_rate_is_reported(tmp_path: Path) -> None:
    # throttle scales the key's rate down (KeyLimiter.throttle): with no rate there is
    # nothing to scale, and a flagged search keeps its full speed
    keys = f"keys: {{a: {{hash: '{hash_key('k')}'}}, b: {{hash: '{hash_key('j')}', rate: 5}}}}\n"
    text = "limits: {budget: 1000}\ndetection: {action: throttle}\n" + keys
    report = gateway_config_report(_write(tmp_path, text))
    [finding] = [f for f in report.findings if f.rule == "MLW-GW-017"]
    assert finding.evidence["callers"] == ["a"] and finding.severity == "medium"
    slowed = "limits: {rate: 5, burst: 64, budget: 1000}\ndetection: {action: throttle}\n" + keys
    blocked = "limits: {budget: 1000}\ndetection: {action: block}\n" + keys
    for ok in (slowed, blocked):
        assert "MLW-GW-017" not in {
            f.rule for f in gateway_config_report(_write(tmp_path, ok)).findings
        }
