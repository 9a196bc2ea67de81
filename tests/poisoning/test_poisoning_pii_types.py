"""Sensitive data: every type a privacy reviewer expects, hard negatives, configuration,
rows and lines, JSONL / folders / mixed CSVs, bounded memory, masking in every format."""

from __future__ import annotations

import json
import tracemalloc

import pytest

from mlwarden.core.errors import UserError
from mlwarden.poisoning.pii import find, load_config, scan_file


def kinds(text: str, column: str = "", config=None) -> list[str]:
    return [k for k, _ in find(text, column, config)]


@pytest.mark.parametrize(
    "text, kind",
    [
        ("SSN 123 45 6789 on file", "us_ssn"),
        ("social security no. 123.45.6789", "us_ssn"),
        ("ssn: 123456789", "us_ssn"),
        ("office 020 7946 0958", "phone"),
        ("mobile 07700 900123", "phone"),
        ("ring +44 7700 900123", "phone"),
        ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "aws_secret_key"),
        (
            "hook https://hooks.slack.com/services/T0AB12CDE/B0FG34HIJ/abcdEFGHijklMNOPqrstUVWX",
            "slack_webhook",
        ),
        ("my password is Tr0ub4dor&3 ok", "password"),
        ("your temporary passcode 839201", "password"),
        (
            "auth eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
            "jwt",
        ),
        ("stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc", "stripe_key"),
        ("key AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY", "google_api_key"),
        ("db postgres://admin:s3cr3tP4ss@db.example.com/app", "url_credentials"),
        ("Dear John Smith, thanks", "person_name"),
        ("signed by Dr. Alan Turing", "person_name"),
        ("ship to 1600 Pennsylvania Avenue NW, Washington, DC 20500", "street_address"),
        ("send it to PO Box 1234", "street_address"),
        ("client ip 203.0.113.42 logged in", "ip_address"),
        ("from 2001:db8::8a2e:370:7334", "ip_address"),
        ("DOB: 12/03/1985", "date_of_birth"),
        ("she was born on March 3, 1985", "date_of_birth"),
        ("mastercard 5555 5555 5555 4444", "card_number"),
        # shapes other generators write (Faker's en_US / en_GB providers among them)
        ("reach me at 624-615-8683", "phone"),
        ("reach me at +1-560-930-6202x786", "phone"),
        ("reach me at (585)687-8310x1222", "phone"),
        ("reach me at +44(0)115 4960914", "phone"),
        ("reach me at (0191)4960899", "phone"),
        ("reach me at 2758005628", "phone"),
        ("send to 66907 Griffith Forks Apt. 500, Lake Amberfurt", "street_address"),
        ("send to Studio 51\nAdams Coves, New Lisa", "street_address"),
        ("Jack Williams left a review", "person_name"),
        ("Marilyn McLean-Martin left a review", "person_name"),
        ("Dear Oluwaseun Adeyemi, thanks", "person_name"),
        ("card 180001775486590", "card_number"),
    ],
)
def test_each_type_is_found(text, kind):
    assert kind in kinds(text)


@pytest.mark.parametrize(
    "text",
    [
        "ISBN 978-3-16-148410-0",
        "ISBN 9780306406157",  # Luhn-valid, but no card issuer starts with 9
        "event at 1700000000123 ms",  # epoch milliseconds
        "id 123e4567-e89b-12d3-a456-426614174000",
        "sha1 da39a3ee5e6b4b0d3255bfef95601890afd80709",
        "sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "order ORD-2024-000123 shipped",
        "version 1.2.3.4 released",
        "released v2.10.3 on 2024-01-15T10:30:00Z",
        "Will Power and May Day",
        "we toured the Jordan River and Georgia Tech",
        "the password reset link expired",
        "amount 12.50 13.75 99.99",
        "timestamp 12:30:45",
        "ean 4706049683483",  # EAN-13 with a Luhn-valid digit: 13-digit Visas are not issued
        "tracking 1Z4689571703926899",
        "order 7389836859 shipped",  # a bare run of digits with no phone words
        "we sailed past Hong Kong to Puerto Rico",
        "Will Power and May Day",
        "our PN 320008A wheel deflator",  # a part number, not a NINO
    ],
)
def test_hard_negatives_are_not_reported(text):
    assert find(text) == []


def test_a_bare_number_is_an_ssn_only_with_context():
    assert kinds("ref 123456789") == []
    assert kinds("123456789", column="ssn") == ["us_ssn"]


def test_a_date_is_a_birth_date_only_in_a_birth_column_or_with_birth_words():
    assert kinds("1985-03-12") == []
    assert kinds("1985-03-12", column="date_of_birth") == ["date_of_birth"]


def test_config_switches_types_off_and_adds_patterns(tmp_path):
    cfg = tmp_path / "pii.yaml"
    cfg.write_text(
        "disable: [person_name]\n"
        "patterns:\n"
        "  - kind: employee_id\n"
        "    category: personal\n"
        "    regex: 'EMP-\\d{6}'\n"
    )
    config = load_config(cfg)
    assert kinds("Dear John Smith, EMP-123456", config=config) == ["employee_id"]
    assert kinds("Dear John Smith", config=load_config(None, ["person_name"])) == []


@pytest.mark.parametrize(
    "text, words",
    [
        ("disable: [no_such_type]\n", "unknown sensitive-data type"),
        ("patterns:\n  - kind: x\n    regex: '('\n", "not a valid regex"),
        ("patterns:\n  - kind: x\n", "needs 'kind' and 'regex'"),
        ("- just a list\n", "expected a mapping"),
    ],
)
def test_bad_config_is_one_clear_error(tmp_path, text, words):
    cfg = tmp_path / "pii.yaml"
    cfg.write_text(text)
    with pytest.raises(UserError, match=words):
        load_config(cfg)


def test_csv_rows_and_lines_are_recorded(tmp_path):
    path = tmp_path / "people.csv"
    path.write_text(
        "id,note,label\n"
        '1,"nothing here",0\n'
        '2,"two lines\nDear John Smith",1\n'
        "3,mail jane@example.org,0\n",
        encoding="utf-8",
    )
    scan = scan_file(path)
    assert scan.records == 3
    assert scan.rows == {1: [("person_name", "note")], 2: [("email", "note")]}
    assert scan.lines[1] == (str(path), 3) and scan.lines[2] == (str(path), 5)


def test_jsonl_keys_are_columns(tmp_path):
    path = tmp_path / "chat.jsonl"
    path.write_text(
        json.dumps({"text": "hello", "meta": {"ip": "203.0.113.9"}})
        + "\n\n"
        + json.dumps({"text": "my password is hunter2!"})
        + "\n",
        encoding="utf-8",
    )
    scan = scan_file(path)
    assert scan.format == "jsonl" and scan.records == 2
    assert scan.rows == {0: [("ip_address", "meta.ip")], 1: [("password", "text")]}
    assert scan.lines[1] == (str(path), 3)


def test_bad_jsonl_line_is_named(tmp_path):
    from mlwarden.core.errors import InputFileError

    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a"}\n{not json\n', encoding="utf-8")
    with pytest.raises(InputFileError, match="line 2 is not JSON"):
        scan_file(path)


def test_a_text_folder_is_one_record_per_file(tmp_path):
    for cls, name, body in (("pos", "a.txt", "lovely"), ("neg", "b.txt", "call 020 7946 0958")):
        (tmp_path / cls).mkdir(exist_ok=True)
        (tmp_path / cls / name).write_text(body, encoding="utf-8")
    scan = scan_file(tmp_path)
    assert scan.format == "folder" and scan.records == 2
    # sorted order: neg/b.txt is record 0
    assert scan.rows == {0: [("phone", "text")]}


def _peak_scan(path) -> tuple[int, object]:
    tracemalloc.start()
    try:
        scan = scan_file(path)
        return tracemalloc.get_traced_memory()[1], scan
    finally:
        tracemalloc.stop()


def test_large_csv_streams_in_bounded_memory(tmp_path, monkeypatch):
    from mlwarden.poisoning import pii

    monkeypatch.setattr(pii, "BATCH_CHARS", 16 * 1024)
    line = "17,0.25,ordinary words about a product,1\n"
    peaks = []
    for rows in (10_000, 40_000):
        path = tmp_path / f"big{rows}.csv"
        with path.open("w", encoding="utf-8") as fh:
            fh.write("id,x,comment,label\n")
            for i in range(rows):
                fh.write(line if i % 1000 else f"{i},0.5,contact a{i}@example.com,0\n")
        _peak_scan(path)  # warm: pattern tables and phone metadata load once
        peak, scan = _peak_scan(path)
        assert scan.records == rows and scan.total("email") == rows // 1000
        peaks.append(peak)
    # four times the file, about the same memory
    assert peaks[1] < 1.3 * peaks[0] + 200_000, peaks


def test_mixed_csv_keeps_the_numeric_checks_and_lists_rows(tmp_path):
    from mlwarden.poisoning import data_report

    rows = ["a,b,note,label"]
    for i in range(60):
        note = f"mail user{i}@example.com" if i % 10 == 0 else "fine"
        rows.append(f"{i % 7},{(i * 3) % 11},{note},{i % 2}")
    path = tmp_path / "mixed.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    report = data_report(path)
    assert {"label-issues", "duplicates", "outliers"} <= set(report.timings)
    assert any(f.evidence.get("text_columns") == ["note"] for f in report.findings)
    listed = {
        e["index"] for e in report.suspicious or [] if any("e-mail" in r for r in e["reasons"])
    }
    assert listed == {0, 10, 20, 30, 40, 50}


SECRETS = {
    "card": "4111 1111 1111 1111",
    "ssn": "123-45-6789",
    "email": "jane.roe@example.org",
    "aws": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "pw": "Tr0ub4dor&3",
    "name": "Marianne Whitfield",
}


def test_no_value_is_shown_in_any_output_format_and_sarif_points_at_rows(tmp_path, capsys):
    from mlwarden.cli.main import main

    path = tmp_path / "leak.csv"
    path.write_text(
        "id,note,label\n"
        f"1,card {SECRETS['card']},0\n"
        f"2,ssn {SECRETS['ssn']} mail {SECRETS['email']},1\n"
        f"3,aws_secret_access_key={SECRETS['aws']},0\n"
        f"4,my password is {SECRETS['pw']},1\n"
        f"5,Dear {SECRETS['name']},0\n",
        encoding="utf-8",
    )
    outs = {fmt: tmp_path / f"r.{fmt}" for fmt in ("json", "html", "sarif", "junit")}
    args = ["data", str(path), "-q"]
    for fmt, out in outs.items():
        args += [f"--{fmt}", str(out)]
    with pytest.raises(SystemExit):
        main(args)
    console = capsys.readouterr()
    texts = [o.read_text(encoding="utf-8") for o in outs.values()] + [console.out, console.err]
    for value in SECRETS.values():
        assert all(value not in t for t in texts), value
    sarif = json.loads(outs["sarif"].read_text())
    lines = [
        r["locations"][0]["physicalLocation"]["region"]["startLine"]
        for r in sarif["runs"][0]["results"]
        if r["ruleId"] in ("MLW-DAT-005", "MLW-DAT-006")
    ]
    assert sorted(lines) == [2, 3, 3, 4, 5, 6]


def test_text_data_already_loaded_is_scanned_one_record_per_text():
    import numpy as np

    from mlwarden.core.data import Dataset
    from mlwarden.poisoning import data_report

    texts = ["lovely day"] * 30 + ["mail me at jane.roe@example.org", "call 020 7946 0958"]
    x = np.empty(len(texts), dtype=object)
    x[:] = texts
    ds = Dataset(
        x=x, y=np.zeros(len(texts), dtype=np.int64), name="chat", modality="text", bounds=(0.0, 0.0)
    )
    report = data_report(ds)
    rows = {e["index"]: e["reasons"] for e in report.suspicious or []}
    assert rows == {30: ["e-mail address in column 'text'"], 31: ["phone number in column 'text'"]}
    assert "jane.roe" not in report.model_dump_json()
