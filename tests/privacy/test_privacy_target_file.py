"""A labels-only API described once in a target file: privacy, extract and backdoor
pick what that access allows (label-only attacks) or say why not, against the real
uvicorn server of the target-file tests (class names out, a bearer token, 32 per request)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tests.core.test_target_file import LIMIT, NAMES, TOKEN, _write, served, token

from mlwarden.cli.main import main
from mlwarden.core.data import Dataset, save_npz

__all__ = ["served", "token"]  # fixtures used by name below


def _cli(argv: list[str], capsys) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out + out.err


def _names_api(tmp_path, url):  # type: ignore[no-untyped-def]
    return _write(
        tmp_path / "names.target.yaml",
        f"{url}/v1/names",
        response="classes",
        output="labels",
        labels={n: i for i, n in enumerate(NAMES)},
    )


def test_labels_only_api_gets_label_only_privacy_extract_and_a_clear_backdoor_refusal(
    served, token, tmp_path, capsys
) -> None:  # type: ignore[no-untyped-def]
    from sklearn.datasets import load_digits

    url, seen, x_hold, y_hold = served
    api = _names_api(tmp_path, url)
    x, y = load_digits(return_X_y=True)
    members, holdout = tmp_path / "train.npz", tmp_path / "holdout.npz"
    save_npz(Dataset(x=(x[:60] / 16.0).astype(np.float32), y=y[:60]), members)
    save_npz(Dataset(x=x_hold[:60], y=y_hold[:60]), holdout)

    out = tmp_path / "p.json"
    argv = ["privacy", str(api), "--train", str(members), "--holdout", str(holdout)]
    code, text = _cli(argv + ["-q", "--json", str(out)], capsys)
    assert code == 0, text
    report = json.loads(out.read_text())
    assert report["metrics"]["attack"] == "label-only" and report["metrics"]["access"] == "label"

    out = tmp_path / "e.json"
    argv = ["extract", str(api), "--pool", str(holdout), "--budget", "50", "-q", "--json", str(out)]
    code, text = _cli(argv, capsys)
    assert code == 0, text
    m = json.loads(out.read_text())["metrics"]
    assert m["access"] == "label" and m["queries"] == {"50": 50}

    out = tmp_path / "b.json"
    code, text = _cli(["backdoor", str(api), str(holdout), "-q", "--json", str(out)], capsys)
    report = json.loads(out.read_text())
    skipped = next(f for f in report["findings"] if f["rule"] == "MLW-DAT-012")
    assert "deployed API" in skipped["description"] and "labels only" in skipped["description"]
    assert "strip.threshold" not in report["metrics"]  # no silent 'nothing flagged'
    everything = "".join(p.read_text() for p in tmp_path.glob("*.json")) + text
    assert seen["max_batch"] <= LIMIT and TOKEN not in everything
