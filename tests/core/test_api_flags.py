"""``--api-*`` flags: a target file's keys on the command line, against the real server of
``test_target_file`` (``{"instances"}`` in, ``{"outputs": {"probabilities"}}`` out, a bearer
token, at most 32 items per request)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tests.core.test_target_file import LIMIT, NAMES, TOKEN, _cli, _write, served, token

from mlwarden.core import api_flags
from mlwarden.core.data import Dataset, save_npz
from mlwarden.core.errors import UserError
from mlwarden.core.target import TargetError
from mlwarden.supplychain import load_target

__all__ = ["served", "token"]  # fixtures shared with test_target_file

SHAPE = ["--api-request", '{"instances": "$inputs"}', "--api-batch-size", str(LIMIT)]


def test_extract_through_flags_with_a_typed_token_never_leaks_it(served, tmp_path, capsys) -> None:
    url, seen, x, y = served
    pool = tmp_path / "pool.npz"
    save_npz(Dataset(x=x[:300], y=y[:300], name="pool", modality="tabular"), pool)
    out = tmp_path / "extract.json"
    argv = ["extract", f"{url}/v1/classify", "--pool", str(pool), "--budget", "200", "-q"]
    argv += [*SHAPE, "--api-response", "outputs.probabilities"]
    argv += ["--api-header", f"Authorization: Bearer {TOKEN}", "--json", str(out)]
    code, stdout, err = _cli(argv, capsys)
    assert code == 0, err
    text = out.read_text()
    assert json.loads(text)["metrics"]["fidelity"]["200"] >= 0.7
    assert seen["max_batch"] <= LIMIT and TOKEN not in text + stdout + err


def test_evasion_of_a_names_api_through_flags_is_label_only(
    served, token, tmp_path, capsys
) -> None:
    url, seen, x, y = served
    data = tmp_path / "test.npz"
    save_npz(Dataset(x=x[:8], y=y[:8], name="digits", modality="tabular"), data)
    out = tmp_path / "r.json"
    labels = ",".join(f"{n}={i}" for i, n in enumerate(NAMES))
    argv = ["evasion", f"{url}/v1/names", str(data), "--eps", "0.3", "--budget", "quick"]
    argv += [*SHAPE, "--api-response", "classes", "--api-output", "labels"]
    argv += ["--api-labels", labels, "--api-header", "Authorization: Bearer ${DIGITS_API_TOKEN}"]
    code, stdout, err = _cli([*argv, "--json", str(out)], capsys)
    assert code == 0, err
    report = json.loads(out.read_text())
    assert report["metrics"]["robust_accuracy"] < report["metrics"]["clean_accuracy"]
    assert '"access": "label"' in json.dumps(report)
    assert TOKEN not in out.read_text() + stdout + err


def test_flags_override_a_target_files_keys(served, token, tmp_path) -> None:
    url, _, x, _ = served
    api = _write(tmp_path / "api.target.yaml", f"{url}/v1/classify", response="wrong.path")
    with api_flags.active({}), pytest.raises(TargetError, match="wrong.path"):
        load_target(str(api)).predict(x[:2])
    with api_flags.active({"response": "outputs.probabilities", "batch_size": 4}):
        target = load_target(str(api))
    assert target.predict(x[:9]).shape == (9, 10) and target.batch_size == 4


def test_an_error_masks_a_token_typed_on_the_command_line(served) -> None:
    url, _, x, _ = served
    flags = api_flags.parse({"header": [f"Authorization: Bearer {TOKEN}"]})
    with api_flags.active(flags):
        target = load_target(f"{url}/v1/echo")  # answers 400 quoting the header it got
    with pytest.raises(TargetError) as exc:
        target.predict(x[:1])
    assert TOKEN not in str(exc.value) and "***" in str(exc.value)


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ({"request": "{instances: $inputs"}, "--api-request is not valid JSON"),
        ({"request": '{"instances": "x"}'}, "$inputs"),
        ({"header": ["Authorization Bearer x"]}, "expected 'Name: value'"),
        ({"labels": "cat:0"}, "NAME=INDEX"),
        ({"input-shape": "1,a"}, "positive sizes"),
        ({"output": "probabilities"}, "--api-output"),
        ({"batch-size": 0}, "--api-batch-size"),
        ({"num-classes": 1}, "--api-num-classes (num_classes)"),
        ({"labels": "cat=0,dog=0"}, "--api-labels (labels)"),
    ],
)
def test_a_bad_flag_is_one_clear_line(raw, words) -> None:
    with pytest.raises(UserError) as exc, api_flags.active(api_flags.parse(raw)):
        load_target("http://127.0.0.1:9/v1/classify")
    assert words in str(exc.value) and "\n" not in str(exc.value)


def test_flags_with_a_model_file_are_refused(tmp_path) -> None:
    model = tmp_path / "m.npz"
    np.savez(model, x=np.zeros(2))
    with pytest.raises(UserError, match="not an http"), api_flags.active({"rate": 1.0}):
        load_target(str(model))
